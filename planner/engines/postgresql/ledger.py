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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from planner import versions
from planner.errors import ForeignLedger
from planner.ledger import (
    KNOWN_COLUMNS,
    LOG_TABLE,
    OWN_COLUMNS,
    TABLE,
    LedgerColumn,
    LedgerEntry,
    LogEntry,
    describe_columns,
    unknown_shape,
)

if TYPE_CHECKING:
    from planner.migration import Migration

#: PostgreSQL's names for the types that keep ``'0001'`` as it is written (``format_type``'s spelling).
_TEXT_TYPES = ("text", "character varying", "character", "name")
#: The ledger's columns as ``[name, type, not null, fills itself]`` rows, in one JSON value; ``%s`` is the table.
_SHAPE = ("SELECT json_agg(json_build_array(a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
          "a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') ORDER BY a.attnum) FROM pg_attribute a "
          "WHERE a.attrelid = to_regclass({table}) AND a.attnum > 0 AND NOT a.attisdropped")
_TIME = "to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS')"
_NOW = "(now() AT TIME ZONE 'UTC')"
#: How a step's ledger statement runs: (SQL with ``%(name)s`` placeholders, their values).
Run = Callable[[str, dict[str, Any]], Any]
#: The types of those placeholders, for a statement prepared by name (``PgSession.record``).
PARAMETER_TYPES = {"version": "text", "number": "numeric", "description": "text", "checksum": "text",
                   "ms": "bigint", "action": "text", "detail": "text"}


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
        self._shape_known = False

    def require_known_shape(self) -> None:
        """Refuse (``ForeignLedger``) a ``schema_migrations`` another tool made, before anything reads or writes it.

        PostgreSQL's ledger was always this project's five columns (it never
        adopted an older framework's table in place), so those five are
        required; any other column must be one a known ledger has and must
        fill itself. Read once per ledger object: one round trip per command.
        """
        if not self._shape_known:
            self._check_shape(self._rows(_SHAPE.format(table="%s"), (self.table,))[0][0])

    def _check_shape(self, shape: list | None) -> None:
        """``shape`` (``_SHAPE``'s JSON; ``None`` when there is no table) is a known ledger, or ``ForeignLedger``."""
        if shape:
            columns = [LedgerColumn(str(name).lower(), str(shown), bool(not_null), bool(fills))
                       for name, shown, not_null, fills in shape]
            version_type = next((c.type for c in columns if c.name == "version"), "")
            reason = unknown_shape(columns, required=OWN_COLUMNS, written=OWN_COLUMNS,
                                   text_version=version_type.startswith(_TEXT_TYPES))
            if reason is not None:
                raise ForeignLedger(f"database {self.conn.info.dbname}", [describe_columns([c]) for c in columns],
                                    sorted(KNOWN_COLUMNS), reason, table=f"{self.schema}.{TABLE}")
        self._shape_known = True

    def _rows(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, parameters)
            return cursor.fetchall()

    def exists(self) -> bool:
        return bool(self._rows("SELECT to_regclass(%s) IS NOT NULL", (self.table,))[0][0])

    def ensure_schema(self) -> None:
        """Create the schema and both tables if missing (in the caller's transaction)."""
        self.require_known_shape()
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

        One round trip: the table is read directly, its shape riding along
        (``ForeignLedger`` for another tool's table), and a missing one is the
        "never migrated" answer (outside a transaction only, where a failed
        statement aborts nothing; inside one, it is looked up first).
        """
        # optional dependency: psycopg is installed with an extra
        import psycopg

        select = f"SELECT version, description, {_TIME}, checksum, execution_ms FROM {self.table}"
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            if not self.exists():
                return {}
            self.require_known_shape()
            rows = self._rows(select)
        else:
            # The shape rides along (one row even for an empty table): a read-only command stays one statement.
            literal = "'" + self.table.replace("'", "''") + "'"
            shaped = (f"SELECT version, description, {_TIME}, checksum, execution_ms, shape "
                      f"FROM ({_SHAPE.format(table=literal)}) AS known(shape) LEFT JOIN {self.table} ON true")
            try:
                rows = self._rows(shaped)
            except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                return {}
            except psycopg.errors.UndefinedColumn:
                self.require_known_shape()  # raises ForeignLedger: a column every ledger of ours has is missing
                raise
            self._check_shape(rows[0][5])
            rows = [row[:5] for row in rows if row[0] is not None]
        entries = [LedgerEntry(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows]
        return {e.version: e for e in sorted(entries, key=lambda e: versions.sort_key(e.version))}

    def applied_versions(self) -> list[str]:
        if not self.exists():
            return []
        self.require_known_shape()
        return [str(r[0]) for r in self._rows(f"SELECT version FROM {self.table}")]

    def record_applied_and_log(self, migration: Migration, execution_ms: int | None, action: str,
                               detail: str | None = None, run: Run | None = None) -> None:
        """The ledger row and its log row in one statement: one round trip per step instead of two. ``run``: how
        the statement runs (a preview's, prepared once: ``PgSession.record``); ``conn.execute`` by default."""
        (run or self.conn.execute)(
            f"WITH ledger AS (INSERT INTO {self.table} (version, description, applied_at, checksum, execution_ms) "
            f"VALUES (%(version)s, %(description)s, {_NOW}, %(checksum)s, %(ms)s)) " + self._logged(),
            {"version": migration.version, "description": migration.description, "checksum": migration.checksum,
             "ms": execution_ms, "action": action, "detail": detail},
        )

    def _logged(self) -> str:
        return (f"INSERT INTO {self.log_table} (version, action, at, checksum, execution_ms, outcome, detail) "
                f"VALUES (%(version)s, %(action)s, {_NOW}, %(checksum)s, %(ms)s, 'ok', %(detail)s)")

    def record_applied(self, migration: Migration, execution_ms: int | None) -> None:
        self.conn.execute(
            f"INSERT INTO {self.table} (version, description, applied_at, checksum, execution_ms) "
            f"VALUES (%s, %s, {_NOW}, %s, %s)",
            (migration.version, migration.description, migration.checksum, execution_ms),
        )

    def _unapplied(self, version: str) -> tuple[str, dict[str, Any]]:
        """``WITH`` parts deleting ``version``'s row, however it was spelled (``27`` or ``0027``): the spelled-out
        match is looked for only when the exact one deleted nothing (its scan is skipped otherwise)."""
        return (f"WITH exact AS (DELETE FROM {self.table} WHERE version = %(version)s RETURNING 1), "
                f"spelled AS (DELETE FROM {self.table} WHERE NOT EXISTS (SELECT FROM exact) "
                f"AND version ~ '^[0-9]+$' AND version::numeric = %(number)s RETURNING 1) ",
                {"version": version, "number": versions.number(version)})

    def record_unapplied(self, version: str) -> None:
        """Delete ``version``'s row, however it was spelled (``27`` or ``0027``)."""
        sql, parameters = self._unapplied(version)
        self.conn.execute(sql + "SELECT", parameters)

    def record_unapplied_and_log(self, migration: Migration, execution_ms: int | None, action: str,
                                 detail: str | None = None, run: Run | None = None) -> None:
        """The ledger row deleted and its log row written in one statement: one round trip per rolled back step
        (``run``: as ``record_applied_and_log``'s)."""
        sql, parameters = self._unapplied(migration.version)
        parameters.update(action=action, checksum=migration.checksum, ms=execution_ms, detail=detail)
        (run or self.conn.execute)(sql + self._logged(), parameters)

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
