"""The engine boundary: what the planner needs from a database, and nothing more.

The catalog, the graph and plans never touch a database. Everything that
does (connecting, locking, the ledger, one transaction per step, the
preview, backups) sits behind ``Engine``, one class per engine in this
folder: ``sqlite`` (with ``planner.engines.sqlite.runner`` running plans) and
``postgresql`` (psycopg 3, with ``postgresql.runner``).

A step, and the loops over steps (step by step, atomic, the preview, the
marks), are written once, in ``planner.session.Session``; an engine's
session (``sqlite.session``, ``postgresql.session``) supplies only its
transaction, its applied-set cache, the connection a migration receives,
the checks after it and how rows are written. A runner (``PlanRunner``)
opens the connection or takes the lock and hands the session the plan.
Adding an engine means an engine, a session and a ledger class here, and one
line in ``planner.engines.engine_for``; nothing above this folder changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from planner.agents import Agent
    from planner.backups import BackupInfo, RestoreResult
    from planner.catalog import Catalog
    from planner.events import Event, RunResult
    from planner.ledger import LedgerEntry, LedgerNote
    from planner.findings import Finding
    from planner.migration import Migration
    from planner.plan import Plan
    from planner.preview import Preview

MakePlan = Callable[[dict[str, "LedgerEntry"]], "Plan"]


class PlanRunner(Protocol):
    """Runs plans against one database: ``planner.engines.sqlite.runner.Executor``'s public face."""

    def applied(self) -> dict[str, LedgerEntry]:
        """The ledger as it is now, read without creating anything."""

    def migrate(self, make_plan: MakePlan, on_event: Callable[[Event], None] | None = None, *,
                atomic: bool = False, plan: Plan | None = None,
                before: Callable[[], object] | None = None, confirm_outside: Any = None) -> RunResult:
        """One transaction per step (or one for all, ``atomic``), each with its ledger row; plans inside the lock.

        ``before()`` (the backup before a rollback) runs inside the lock, once the ledger read there admitted
        the first step that runs: the copy is exactly the state the run starts from (a ``before`` with a
        ``discard()`` is told when the transaction it ran in is rolled back to be tried again). ``RunResult.replans``
        counts each time the run planned again because the ledger had changed. ``confirm_outside`` (a
        ``outside.Confirmation``) checks ``transactional = False`` steps statement by statement; without it they
        run unchecked.
        """

    def preview(self, plan: Plan, *, make_plan: MakePlan | None = None,
                accept: Callable[[Preview], bool] | None = None,
                on_event: Callable[[Event], None] | None = None, capture_sql: bool = False,
                before: Callable[[], object] | None = None) -> Preview:
        """The whole plan in one transaction, watched; committed only if ``accept`` says so.

        ``before()`` runs inside the lock, once the plan was made again there from the ledger.
        """

    def mark_applied(self, migration: Migration) -> None: ...

    def mark_rolled_back(self, migration: Migration) -> None: ...

    def mark_many(self, migrations: list[Migration], action: str) -> None:
        """Record ``migrations`` (dependency order) as applied without running them, in one transaction."""


class Engine(ABC):
    """One database, reached through one engine."""

    #: ``"sqlite"`` or ``"postgresql"``: what ``conn.engine`` tells a migration.
    name: str

    @property
    @abstractmethod
    def display(self) -> str:
        """How messages name the database: a path, or a URL with its password masked."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the database is there (a SQLite file may still be created; a server database must exist)."""

    def reading(self) -> AbstractContextManager[None]:
        """Let the reads of one command share what they can (one server connection); nothing for a file."""
        return nullcontext()

    def require(self) -> None:
        """Raise the engine's own ``DatabaseError`` when the database is not there, for commands that need one."""

    @abstractmethod
    def applied(self) -> dict[str, LedgerEntry]:
        """What the ledger records, read without creating the database or its tables."""

    @abstractmethod
    def runner(self, *, catalog: Catalog | None = None, create: bool = False) -> PlanRunner:
        """What runs plans here (``create``: a SQLite file may be made by an apply)."""

    @abstractmethod
    def applied_if_exists(self) -> dict[str, LedgerEntry] | None:
        """The ledger, or ``None`` when the database is not there yet (a lint then checks an empty history)."""

    def notes(self) -> list[LedgerNote]:
        """Ledger rows that are no applied migration (APM's framework wrote some into SQLite ledgers)."""
        return []

    @abstractmethod
    def diagnose(self, catalog_dir: Path) -> list[Finding]:
        """``apm migrate doctor``: everything wrong with the database and its ledger, found without writing."""

    def check_integrity(self) -> None:
        """Raise ``DatabaseDamaged`` when the database's own storage is damaged; before a plan that commits in parts.

        A no-op where the server keeps its pages (PostgreSQL); SQLite runs ``PRAGMA quick_check``.
        """

    @abstractmethod
    def prune_backups(self, keep: int, folder: Path | None = None, spare: Iterable[Path] = ()) -> list[Path]:
        """Delete all but the newest ``keep`` backups of this database (after a run committed); what was deleted.

        ``spare`` is never deleted: a restore spares the backup it restored from.
        """

    @abstractmethod
    def backup(self, folder: Path | None = None) -> Path | None:
        """A copy taken before a rollback; ``None`` when there is nothing to copy yet."""

    # -- backups, restore and APM's agents table (``apm migrate backups|restore``, ``apm agents``) -----

    @property
    @abstractmethod
    def short_name(self) -> str:
        """The database's own name, which its backups' names begin with: the file's name, or the dbname."""

    @property
    @abstractmethod
    def backup_names(self) -> str:
        """Which files are this database's backups, for messages: ``aipm.db.backup.*`` or ``app.*.dump in DIR``."""

    @abstractmethod
    def backup_files(self) -> list[Path]:
        """This database's backups, oldest first; half-written ones (and those of other databases) never."""

    @abstractmethod
    def describe_backup(self, backup: Path) -> BackupInfo:
        """Size, time and ledger of one backup, cheaply (no integrity check); an unreadable one says why."""

    @abstractmethod
    def check_backup(self, backup: Path) -> dict[str, LedgerEntry]:
        """The ledger ``backup`` would restore; ``UnusableBackup`` (nothing changed) if it cannot be restored."""

    @abstractmethod
    def restore(self, backup: Path, *, all_schemas: bool = False) -> RestoreResult:
        """Replace the database's content with ``backup``'s, all or nothing, keeping a safety backup first.

        ``all_schemas`` (``--all-schemas``): everything the backup holds, where a restore could touch less
        (a PostgreSQL tenant's restore replaces its schema alone); one file's restore is all of it anyway."""

    @abstractmethod
    def agents(self, role: str | None = None) -> list[Agent]:
        """APM's ``agents`` rows (or the one with ``role``), by id; ``NoAgentsTable`` when there is none."""

    def left_in_place(self, backup: Path, *, all_schemas: bool = False) -> list[str]:
        """What a restore of ``backup`` keeps that the backup does not hold (nothing, where a restore replaces all)."""
        return []

    def other_ledgers(self, backup: Path, *, all_schemas: bool = False) -> list[str]:
        """Ledger schemas besides this one that a restore of ``backup`` also puts back (none, where a database
        holds one ledger)."""
        return []

    def ledgers_in_backup(self, backup: Path, *, all_schemas: bool = False) -> list[str]:
        """Ledger schemas besides this one that ``backup`` itself holds and a restore would put back: a restore
        that overwrites another project's or tenant's ledger must be asked for (``--all-schemas``)."""
        return []

    def backups(self) -> list[BackupInfo]:
        """Every backup of this database, newest first, described."""
        return [self.describe_backup(path) for path in reversed(self.backup_files())]

    def newest_backup(self) -> Path:
        """The backup a restore uses when none is named; ``NoBackups`` when there is none."""
        from planner.errors import NoBackups

        found = self.backup_files()
        if not found:
            raise NoBackups(self.display, self.backup_names)
        return found[-1]

    def is_own_backup(self, backup: Path) -> bool:
        """Whether ``backup`` is one of this database's backups (by name and folder), not just any file."""
        return backup.resolve() in {path.resolve() for path in self.backup_files()}
