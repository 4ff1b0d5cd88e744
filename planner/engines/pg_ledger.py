"""The ledger on PostgreSQL: ``schema_migrations`` and ``schema_migrations_log`` in a chosen schema.

The same tables and the same invariant as SQLite's (``planner.ledger``): a
row in ``schema_migrations`` means the migration is applied, committed in
the same transaction as its change (PostgreSQL's DDL is transactional). The
schema holding them is an option (``--ledger-schema``, default ``public``),
so one database can hold several applications' ledgers. Rows read back as
``planner.ledger.LedgerEntry``, times formatted as SQLite's are, so the
planner and the JSON see no difference between engines.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from planner import versions
from planner.ledger import LOG_TABLE, TABLE, LedgerEntry, LogEntry

if TYPE_CHECKING:
    from planner.migration import Migration

_TIME = "to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS')"
_NOW = "(now() AT TIME ZONE 'UTC')"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory-lock key for one ledger (``apm-migrate:<schema>``)."""
    digest = hashlib.sha256(f"apm-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PgLedger:
    """The record of applied migrations in one PostgreSQL database; never begins or commits."""

    def __init__(self, conn: Any, schema: str = "public"):
        self.conn = conn
        self.schema = schema
        self.table = f"{quote(schema)}.{TABLE}"
        self.log_table = f"{quote(schema)}.{LOG_TABLE}"

    def _rows(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, parameters)
            return cursor.fetchall()

    def exists(self) -> bool:
        return bool(self._rows("SELECT to_regclass(%s) IS NOT NULL", (self.table,))[0][0])

    def ensure_schema(self) -> None:
        """Create the schema and both tables if missing (in the caller's transaction)."""
        if self.exists() and self._rows("SELECT to_regclass(%s) IS NOT NULL", (self.log_table,))[0][0]:
            return
        self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.schema)}")
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (version TEXT PRIMARY KEY, description TEXT, "
            f"applied_at TIMESTAMP, checksum TEXT, execution_ms INTEGER)"
        )
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.log_table} (id BIGSERIAL PRIMARY KEY, version TEXT NOT NULL, "
            f"action TEXT NOT NULL, at TIMESTAMP NOT NULL, checksum TEXT, execution_ms INTEGER, "
            f"outcome TEXT NOT NULL, detail TEXT)"
        )

    def applied_migrations(self) -> dict[str, LedgerEntry]:
        """Applied migrations by version, ordered as ``planner.ledger`` orders them; ``{}`` without a ledger.

        One round trip: the table is read directly and a missing one is the
        "never migrated" answer (outside a transaction only, where a failed
        statement aborts nothing; inside one, it is looked up first).
        """
        import psycopg

        select = f"SELECT version, description, {_TIME}, checksum, execution_ms FROM {self.table}"
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            if not self.exists():
                return {}
            rows = self._rows(select)
        else:
            try:
                rows = self._rows(select)
            except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                return {}
        entries = [LedgerEntry(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows]
        return {e.version: e for e in sorted(entries, key=lambda e: versions.sort_key(e.version))}

    def applied_versions(self) -> list[str]:
        if not self.exists():
            return []
        return [str(r[0]) for r in self._rows(f"SELECT version FROM {self.table}")]

    def record_applied_and_log(self, migration: Migration, execution_ms: int | None, action: str,
                               detail: str | None = None) -> None:
        """The ledger row and its log row in one statement: one round trip per step instead of two."""
        self.conn.execute(
            f"WITH ledger AS (INSERT INTO {self.table} (version, description, applied_at, checksum, execution_ms) "
            f"VALUES (%s, %s, {_NOW}, %s, %s)) "
            f"INSERT INTO {self.log_table} (version, action, at, checksum, execution_ms, outcome, detail) "
            f"VALUES (%s, %s, {_NOW}, %s, %s, 'ok', %s)",
            (migration.version, migration.description, migration.checksum, execution_ms,
             migration.version, action, migration.checksum, execution_ms, detail),
        )

    def record_applied(self, migration: Migration, execution_ms: int | None) -> None:
        self.conn.execute(
            f"INSERT INTO {self.table} (version, description, applied_at, checksum, execution_ms) "
            f"VALUES (%s, %s, {_NOW}, %s, %s)",
            (migration.version, migration.description, migration.checksum, execution_ms),
        )

    def record_unapplied(self, version: str) -> None:
        """Delete ``version``'s row, however it was spelled (``27`` or ``0027``)."""
        cursor = self.conn.execute(f"DELETE FROM {self.table} WHERE version = %s", (version,))
        value = versions.number(version)
        if cursor.rowcount == 0 and value is not None:
            self.conn.execute(
                f"DELETE FROM {self.table} WHERE version ~ '^[0-9]+$' AND version::numeric = %s", (value,)
            )

    def log(self, version: str, action: str, outcome: str, checksum: str | None = None,
            execution_ms: int | None = None, detail: str | None = None) -> None:
        self.conn.execute(
            f"INSERT INTO {self.log_table} (version, action, at, checksum, execution_ms, outcome, detail) "
            f"VALUES (%s, %s, {_NOW}, %s, %s, %s, %s)",
            (version, action, checksum, execution_ms, outcome, detail),
        )

    def history(self, version: str | None = None) -> list[LogEntry]:
        if not self._rows("SELECT to_regclass(%s) IS NOT NULL", (self.log_table,))[0][0]:
            return []
        sql = (f"SELECT id, version, action, to_char(at, 'YYYY-MM-DD HH24:MI:SS'), checksum, execution_ms, "
               f"outcome, detail FROM {self.log_table}")
        rows = self._rows(sql + " ORDER BY id") if version is None else self._rows(
            sql + " WHERE version = %s ORDER BY id", (version,))
        return [LogEntry(*row) for row in rows]
