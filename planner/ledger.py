"""The ledger: which migrations are applied, and the history of everything done to them.

``schema_migrations`` keeps the seed's columns and meaning (``version``,
``description``, ``applied_at``), so ``SELECT MAX(version) FROM
schema_migrations`` still answers "which schema is this". ``checksum`` and
``execution_ms`` are added, nullable, so rows the old framework wrote stay
valid. ``schema_migrations_log`` is append-only: rolling back deletes a row
from ``schema_migrations``, and the log is where its history survives.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from planner import versions
from planner.database import DEFAULT_BUSY_TIMEOUT, open_read_only
from planner.errors import ForeignLedger

if TYPE_CHECKING:
    from planner.migration import Migration

TABLE = "schema_migrations"
LOG_TABLE = "schema_migrations_log"

#: Log actions and outcomes, as written in ``schema_migrations_log``.
APPLY, ROLLBACK, MARK_APPLIED, MARK_ROLLED_BACK = "apply", "rollback", "mark-applied", "mark-rolled-back"
OK, FAILED, SKIPPED = "ok", "failed", "skipped"

_CREATE_TABLE = f"""
CREATE TABLE {TABLE} (
    version TEXT PRIMARY KEY,
    description TEXT,
    applied_at TIMESTAMP,
    checksum TEXT,
    execution_ms INTEGER
)"""

_ADDED_COLUMNS = (("checksum", "TEXT"), ("execution_ms", "INTEGER"))

#: The seed's three columns: a table with these (and only what this project adds) is upgraded in place.
SEED_COLUMNS = frozenset({"version", "description", "applied_at"})
#: Every column a ledger this project can adopt may have. Anything else means another tool made the
#: table, with its own idea of what a row means, and altering it would corrupt that tool's history.
KNOWN_COLUMNS = SEED_COLUMNS | {name for name, _ in _ADDED_COLUMNS}

_CREATE_LOG = f"""
CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    action TEXT NOT NULL,      -- apply | rollback | mark-applied | mark-rolled-back
    at TIMESTAMP NOT NULL,
    checksum TEXT,
    execution_ms INTEGER,
    outcome TEXT NOT NULL,     -- ok | failed | skipped
    detail TEXT
)"""

# One round trip answers "is the schema current?", which every step asks.
_SCHEMA_STATE = f"""
SELECT (SELECT COUNT(*) FROM pragma_table_info('{TABLE}')),
       (SELECT COUNT(*) FROM pragma_table_info('{TABLE}') WHERE name IN ('checksum', 'execution_ms')),
       (SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{LOG_TABLE}')
"""


@dataclass(frozen=True)
class LedgerEntry:
    """One row of ``schema_migrations``: an applied migration."""

    version: str
    description: str | None
    applied_at: str | None
    #: ``None`` for rows written by the old framework or by a mark without a file.
    checksum: str | None = None
    execution_ms: int | None = None


@dataclass(frozen=True)
class LogEntry:
    """One row of ``schema_migrations_log``: something done to a migration, and how it went."""

    id: int
    version: str
    action: str
    at: str
    checksum: str | None
    execution_ms: int | None
    outcome: str
    detail: str | None


class Ledger:
    """The record of applied migrations in one database.

    Invariant: a row in ``schema_migrations`` means the migration is applied,
    committed in the same transaction as its schema change. The ledger never
    begins or commits; its writes belong to the caller's transaction, which is
    what makes the invariant hold across crashes.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def _rows(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        # A migration may have set row_factory on the shared connection; the ledger reads plain tuples.
        cursor = self.conn.cursor()
        cursor.row_factory = None
        return cursor.execute(sql, parameters).fetchall()

    def exists(self) -> bool:
        """Whether ``schema_migrations`` exists (a database never migrated has none)."""
        return bool(self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)))

    def _columns(self) -> set[str]:
        return {str(row[1]).lower() for row in self._rows(f"PRAGMA table_info({TABLE})")}

    def _require_known_shape(self, columns: set[str]) -> None:
        """Refuse a ``schema_migrations`` that another tool made, before anything reads or alters it."""
        if columns and ("version" not in columns or not columns <= KNOWN_COLUMNS):
            raise ForeignLedger(self._path(), sorted(columns), sorted(KNOWN_COLUMNS))

    def _path(self) -> Path:
        row = self._rows("PRAGMA database_list")[0]
        return Path(row[2] or ":memory:")

    def ensure_schema(self) -> None:
        """Create the ledger tables, or bring a seed-era three-column table up to date in place.

        Only columns are added (``ALTER TABLE ADD COLUMN``), so every existing
        row, and any tool that reads the seed's columns, keeps working. A
        table of any other shape is refused (``ForeignLedger``) untouched.
        """
        columns, added, log = self._rows(_SCHEMA_STATE)[0]
        if columns and added == len(_ADDED_COLUMNS) and log:
            self._require_known_shape(self._columns())
            return
        if not columns:
            self.conn.execute(_CREATE_TABLE)
        else:
            present = self._columns()
            self._require_known_shape(present)
            for name, sql_type in _ADDED_COLUMNS:
                if name not in present:
                    self.conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {sql_type}")
        self.conn.execute(_CREATE_LOG)

    def applied_migrations(self) -> dict[str, LedgerEntry]:
        """Applied migrations by version as recorded; ``{}`` when there is no ledger (nothing is created)."""
        columns = self._columns()
        if not columns:
            return {}
        self._require_known_shape(columns)
        wanted = ["version", "description", "applied_at", "checksum", "execution_ms"]
        select = ", ".join(c if c in columns else "NULL" for c in wanted)
        rows = self._rows(f"SELECT {select} FROM {TABLE}")
        entries = [LedgerEntry(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows]
        return {e.version: e for e in sorted(entries, key=lambda e: versions.sort_key(e.version))}

    def applied_versions(self) -> list[str]:
        """Just the recorded versions: the cheap read the executor repeats inside each step's lock."""
        if not self.exists():
            return []
        return [str(r[0]) for r in self._rows(f"SELECT version FROM {TABLE}")]

    def record_applied(self, migration: Migration, execution_ms: int | None) -> None:
        """Add ``migration``'s row; the caller commits it with the schema change.

        Times are SQLite's ``CURRENT_TIMESTAMP`` (UTC), the format the seed's rows already use.
        """
        self.conn.execute(
            f"INSERT INTO {TABLE} (version, description, applied_at, checksum, execution_ms) "
            f"VALUES (?, ?, CURRENT_TIMESTAMP, ?, ?)",
            (migration.version, migration.description, migration.checksum, execution_ms),
        )

    def record_unapplied(self, version: str) -> None:
        """Delete ``version``'s row, however the old framework spelled it (``27`` or ``0027``)."""
        cursor = self.conn.execute(f"DELETE FROM {TABLE} WHERE version = ?", (version,))
        value = versions.number(version)
        if cursor.rowcount == 0 and value is not None:
            # The same rule as planner.versions, in SQL: ASCII digits only, compared as numbers.
            self.conn.execute(
                f"DELETE FROM {TABLE} WHERE version NOT GLOB '*[^0-9]*' AND version != '' "
                f"AND CAST(version AS INTEGER) = ?",
                (value,),
            )

    def log(
        self,
        version: str,
        action: str,
        outcome: str,
        checksum: str | None = None,
        execution_ms: int | None = None,
        detail: str | None = None,
    ) -> None:
        """Append one row to the history; the caller commits it."""
        self.conn.execute(
            f"INSERT INTO {LOG_TABLE} (version, action, at, checksum, execution_ms, outcome, detail) "
            f"VALUES (?, ?, CURRENT_TIMESTAMP, ?, ?, ?, ?)",
            (version, action, checksum, execution_ms, outcome, detail),
        )

    def history(self, version: str | None = None) -> list[LogEntry]:
        """Everything done so far (to ``version`` only, if given), oldest first."""
        if not self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LOG_TABLE,)):
            return []
        sql = f"SELECT id, version, action, at, checksum, execution_ms, outcome, detail FROM {LOG_TABLE}"
        if version is None:
            rows = self._rows(sql + " ORDER BY id")
        else:
            rows = self._rows(sql + " WHERE version = ? ORDER BY id", (version,))
        return [LogEntry(*row) for row in rows]


def read_ledger(path: Path | str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> dict[str, LedgerEntry]:
    """What ``path``'s ledger records, read without creating the file or any table.

    A missing file or a database that was never migrated reads as ``{}``:
    nothing is applied there yet.
    """
    conn = open_read_only(path, busy_timeout)
    if conn is None:
        return {}
    try:
        return Ledger(conn).applied_migrations()
    finally:
        conn.close()
