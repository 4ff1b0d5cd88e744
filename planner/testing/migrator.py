"""``Migrator``: a catalog on a test database, moved version by version from a hand-written test.

django-test-migrations' ``migrator`` is the model: a test brings the database
to the version before the one it tests, writes rows, migrates, and asserts on
what the migration did to them. Everything goes through the planner's plans
and the database's engine, so a test sees exactly what ``apm migrate`` would
do, on SQLite or PostgreSQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from planner.testing.runner import MigrationRunner

if TYPE_CHECKING:
    from pathlib import Path

    from planner.catalog import Catalog
    from planner.testing.databases import TestDatabase


class Migrator:
    """Move one test database through a catalog; read and write it through ``connection``."""

    def __init__(self, catalog: Catalog, database: TestDatabase):
        self.catalog = catalog
        self.database = database
        self._runner = MigrationRunner(catalog, database)
        self._connection: Any = None

    @property
    def path(self) -> Path:
        """The database file (SQLite; a ``PostgresDatabase`` has ``url`` and ``name`` instead)."""
        return self.database.path  # type: ignore[attr-defined]  # only SQLite's TestDatabase has one

    @property
    def connection(self) -> Any:
        """A connection to the test database (autocommit, foreign keys on), opened on first use.

        SQLite: a ``sqlite3`` connection. PostgreSQL: the connection migrations
        receive (``execute`` with ``?`` or ``%s`` parameters, ``fetchall``,
        ``fetchval``, ``raw`` for psycopg itself), in autocommit mode. Both
        have ``engine`` (``"sqlite"`` or ``"postgresql"``).

        Before each migration the migrator commits whatever this connection
        left open: the executor needs the write lock, and a test that wrote
        rows means them to be there when the migration runs.
        """
        if self._connection is None:
            self._connection = self.database.connect()
        return self._connection

    @property
    def applied(self) -> frozenset[str]:
        """The versions applied now, as the ledger records them."""
        return self._runner.applied

    def migrate_to(self, version: str | None = None) -> list[str]:
        """Apply ``version`` and what it needs, and roll back its applied dependents; ``None`` applies all.

        Returns the versions applied or rolled back, in the order they ran.
        """
        self._release()
        return self._runner.migrate_to(version)

    def rollback(self, version: str, cascade: bool = False) -> list[str]:
        """Roll ``version`` back, as ``apm migrate --rollback`` would (refused without ``cascade`` if dependents are applied)."""
        self._release()
        return self._runner.rollback(version, cascade=cascade).versions

    def schema(self) -> Any:
        """The schema now. A ``planner.schema.Schema`` on either engine (tables with columns, keys and,
        on SQLite, row counts; indexes, triggers, views)."""
        self._release()
        return self.database.snapshot()

    def close(self) -> None:
        """Close the connection, if one was opened."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _release(self) -> None:
        if self._connection is not None and self._connection.in_transaction:
            self._connection.execute("COMMIT")
