"""The seed framework's entry points, backed by the planner and the executor.

APM code and the seed guide call ``DatabaseService(path).migrate()`` and
``MigrationManager(db).run_migration(migration)``; those calls keep working
(only the import line changes), but every one now goes through a plan, so
dependencies are respected and each migration gets its own transaction.

Read-only views of APM's own tables, for the seed's verification commands.

The seed checks a migration by running ``apm status`` and ``apm agents list``;
these reads answer them without ever creating or changing the database. The
``agents`` table is APM's, not the engine's: any engine reads its rows
(``Engine.read_rows``) and ``agents_from_rows`` makes the same ``Agent`` of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TYPE_CHECKING

from planner.catalog import Catalog, shipped_catalog_dir
from planner.engines.sqlite.runner import Executor
from planner.errors import DependenciesNotApplied, NoAgentsTable
from planner.loader import load_catalog
from planner.migration import Migration
from planner.plan import apply_plan, rollback_plan

if TYPE_CHECKING:
    from planner.engines.base import Engine


class DatabaseService:
    """A database file and the catalog that migrates it (the seed's ``DatabaseService``)."""

    def __init__(self, path: Path | str, migrations_dir: Path | str | None = None):
        self.path = Path(path)
        self.migrations_dir = Path(migrations_dir) if migrations_dir is not None else shipped_catalog_dir()

    def migrate(self) -> int:
        """Apply every pending migration; return how many this call applied (creates the file if needed)."""
        return MigrationManager(self).migrate()


class MigrationManager:
    """The seed's ``MigrationManager``: discover, list pending, run one, roll back.

    ``db`` is a ``DatabaseService`` or a database path. The catalog is loaded
    once, on first use; the ledger is read afresh by every call, since another
    process may have migrated meanwhile.
    """

    def __init__(self, db: DatabaseService | Path | str, migrations_dir: Path | str | None = None):
        if not isinstance(db, DatabaseService):
            db = DatabaseService(db, migrations_dir)
        elif migrations_dir is not None:
            db = DatabaseService(db.path, migrations_dir)
        self.db = db
        self._catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog(self.db.migrations_dir)
        return self._catalog

    def _executor(self, create: bool) -> Executor:
        return Executor(self.db.path, create=create, catalog=self.catalog)

    def applied_versions(self) -> list[str]:
        """Versions recorded in the ledger, as recorded."""
        return list(self._executor(create=True).applied())

    def discover_migrations(self) -> list[Migration]:
        """Every migration in the catalog, in version order."""
        return list(self.catalog)

    def get_pending_migrations(self) -> list[Migration]:
        """Migrations not yet applied, in the order they would run (dependencies first)."""
        return [step.migration for step in apply_plan(self.catalog, self.applied_versions()).steps]

    def migrate(self) -> int:
        """Apply everything pending; return how many this call applied (others' work is skipped, not counted)."""
        executor = self._executor(create=True)
        plan = apply_plan(self.catalog, executor.applied())
        return len(executor.run(plan).done)

    def run_migration(self, migration: Migration | str) -> bool:
        """Apply one migration whose dependencies are applied; False when it was already applied.

        Running an applied migration again is a harmless no-op, as the seed
        promised; running one before its dependencies is refused with
        ``DependenciesNotApplied``, since that is exactly the seed's 0029-
        before-0027 failure.
        """
        version = migration if isinstance(migration, str) else migration.version
        migration = self.catalog.get(version)
        executor = self._executor(create=True)
        plan = apply_plan(self.catalog, executor.applied(), target=migration.version)
        if not plan:
            return False
        missing = [step.version for step in plan.steps if step.version != migration.version]
        if missing:
            raise DependenciesNotApplied(migration.version, missing)
        return bool(executor.run(plan).done)

    def rollback(self, version: str, cascade: bool = False) -> list[str]:
        """Roll back ``version`` (and, with ``cascade``, its applied dependents first); return what was rolled back."""
        executor = self._executor(create=False)
        plan = rollback_plan(self.catalog, executor.applied(), version, cascade=cascade)
        return [step.version for step in executor.run(plan).done]


@dataclass(frozen=True)
class Agent:
    """One row of ``agents``; ``metadata`` is decoded JSON, or the raw text if it is not JSON."""

    id: int
    role: str | None  # NOT NULL in the schema, but read with .get: None when a row lacks the column
    display_name: str | None
    tier: Any
    is_active: bool
    agent_type: str | None
    description: str | None
    metadata: Any
    columns: dict[str, Any]


def _decode(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_agents(engine: Engine, role: str | None = None) -> list[Agent]:
    """Every agent (or the one with ``role``), ordered by id; ``NoAgentsTable`` when the database has none."""
    rows = engine.read_rows("agents")
    if rows is None:
        raise NoAgentsTable(engine.display)
    # Filtered and ordered here rather than in SQL: the table is small, and the engines spell parameters apart.
    wanted = [row for row in rows if row.get("role") == role] if role else rows
    return agents_from_rows(sorted(wanted, key=lambda row: (row.get("id") is None, row.get("id"))))


def agents_from_rows(rows: Iterable[dict[str, Any]]) -> list[Agent]:
    """``Agent``s from rows as column -> value, whichever engine read them (PostgreSQL's too)."""
    return [
        Agent(id=columns["id"], role=columns.get("role"), display_name=columns.get("display_name"),
              tier=columns.get("tier"), is_active=bool(columns.get("is_active")), agent_type=columns.get("agent_type"),
              description=columns.get("description"), metadata=_decode(columns.get("metadata")), columns=columns)
        for columns in rows
    ]
