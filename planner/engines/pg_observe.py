"""Watching a PostgreSQL preview: what each statement destroys, measured just before it runs.

SQLite's preview asks SQLite's authorizer what a statement touches; on
PostgreSQL the statement is read instead (``pg_sql.classify``) and the data
it will destroy is counted with a query in the same transaction, right
before it runs: rows of a table it drops or truncates, non-default values
of a column it drops, non-NULL values an ``UPDATE`` will change (the same
``SET`` expressions, evaluated by a ``SELECT``); ``DELETE`` counts are the
statement's own ``rowcount``. Schema changes come from comparing the
catalog (``pg_class``, ``pg_attribute``) before and after each step. The
observer's own queries run inside a savepoint, so one that fails never
aborts the migration's transaction.

Not measured: a ``DROP SCHEMA ... CASCADE`` or a ``DROP ... CASCADE`` that
takes dependent objects with it, an ``UPDATE ... FROM`` beyond its row
count, and statements run inside functions or ``DO`` blocks.
"""

from __future__ import annotations

from typing import Any

from planner.engines.pg_ledger import quote
from planner.engines.pg_sql import classify
from planner.ledger import LOG_TABLE, TABLE
from planner.preview import DataImpact
from planner.schema import SchemaChange

_SNAPSHOT = """
SELECT n.nspname, c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v')
WHERE c.relkind IN ('r', 'p', 'v', 'i') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%' AND c.relname NOT IN (%s, %s)
"""
_KINDS = {"r": "table", "p": "table", "v": "view", "i": "index"}
_VOLATILE = ("nextval", "now(", "random(", "clock_timestamp", "gen_random", "uuid")


def qualified(name: str) -> str:
    return ".".join(quote(part) for part in name.split("."))


def shown(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}.{name}"


class PgObserver:
    """Told about each statement a migration runs during a preview; sums each step up."""

    def __init__(self, conn: Any, capture_sql: bool = False):
        self.conn = conn
        self.capture_sql = capture_sql
        self.running = False
        self._impact: list[DataImpact] = []
        self._inserted: dict[str, int] = {}
        self._sql: list[str] = []
        self._before: tuple[dict, dict] = ({}, {})
        self._pending: int | None = None

    def _query(self, sql: str, parameters: Any = None) -> tuple | None:
        """One row of an observer query, inside a savepoint; ``None`` if it failed."""
        try:
            with self.conn.transaction(), self.conn.cursor() as cursor:
                cursor.execute(sql, parameters)
                return cursor.fetchone()
        except Exception:  # the migration's own statement will meet the real problem, if any
            return None

    def _snapshot(self) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
        objects: dict[str, str] = {}
        columns: dict[tuple[str, str], str] = {}
        with self.conn.cursor() as cursor:
            cursor.execute(_SNAPSHOT, (TABLE, LOG_TABLE))
            for schema, name, kind, column, type_ in cursor.fetchall():
                objects[shown(schema, name)] = _KINDS[kind]
                if column is not None:
                    columns[(shown(schema, name), column)] = type_
        return objects, columns

    def start_step(self) -> None:
        self._impact, self._inserted, self._sql, self._pending = [], {}, [], None
        self._before = self._snapshot()
        self.running = True

    def stop(self) -> None:
        self.running = False

    def before(self, sql: str, query: str, parameters: Any) -> None:
        if not self.running:
            return
        if self.capture_sql:
            self._sql.append(sql if parameters is None else f"{sql}  -- parameters: {parameters!r}")
        statement = classify(query)
        self._pending = None
        if statement.kind == "drop-table":
            for table in statement.tables:
                row = self._query(f"SELECT count(*) FROM {qualified(table)}")
                if row is not None:
                    self._impact.append(DataImpact("dropped-table", table, count=row[0], before=row[0]))
        elif statement.kind == "truncate":
            for table in statement.tables:
                row = self._query(f"SELECT count(*) FROM {qualified(table)}")
                if row is not None:
                    self._impact.append(DataImpact("deleted-rows", table, count=row[0], before=row[0], after=0))
        elif statement.kind == "drop-columns":
            for column in statement.columns:
                self._dropped_column(statement.tables[0], column)
        elif statement.kind in ("delete", "delete-like"):
            row = self._query(f"SELECT count(*) FROM {qualified(statement.tables[0])}")
            self._pending = None if row is None else row[0]
        elif statement.kind == "update":
            self._update(statement, parameters)

    def _dropped_column(self, table: str, column: str) -> None:
        default = self._query(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a LEFT JOIN pg_attrdef d "
            "ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE a.attrelid = to_regclass(%s) AND a.attname = %s",
            (qualified(table), column),
        )
        if default is None:
            return  # no such column (DROP COLUMN IF EXISTS): nothing is lost
        expression = default[0]
        differs = ""
        if expression and not any(word in expression.lower() for word in _VOLATILE):
            differs = f" AND {quote(column)} IS DISTINCT FROM ({expression})"
        row = self._query(f"SELECT count(*) FILTER (WHERE {quote(column)} IS NOT NULL{differs}), "
                          f"count({quote(column)}) FROM {qualified(table)}")
        if row is not None:
            self._impact.append(DataImpact("dropped-column", table, column, count=row[0], non_null=row[1]))

    def _update(self, statement: Any, parameters: Any) -> None:
        """Count, per assigned column, the non-NULL values the ``SET`` expression will change."""
        alias = f" AS {quote(statement.alias)}" if statement.alias else ""
        counts = ", ".join(f"count(*) FILTER (WHERE {quote(c)} IS NOT NULL AND {quote(c)} IS DISTINCT FROM ({e}))"
                           for c, e in statement.assignments)
        where = f" WHERE {statement.where}" if statement.where else ""
        row = self._query(f"SELECT {counts} FROM {qualified(statement.tables[0])}{alias}{where}", parameters)
        if row is None:
            return
        for (column, _), count in zip(statement.assignments, row):
            if count:
                self._impact.append(DataImpact("overwritten-values", statement.tables[0], column, count=count))

    def after(self, sql: str, query: str, parameters: Any, rowcount: int) -> None:
        if not self.running:
            return
        statement = classify(query)
        if statement.kind in ("delete", "delete-like") and rowcount and rowcount > 0:
            before = self._pending
            if statement.kind == "delete":
                self._impact.append(DataImpact("deleted-rows", statement.tables[0], count=rowcount, before=before,
                                               after=None if before is None else before - rowcount))
            else:
                self._impact.append(DataImpact("overwritten-values", statement.tables[0], None, count=rowcount))
        elif statement.kind == "insert" and rowcount and rowcount > 0:
            table = statement.tables[0]
            self._inserted[table] = self._inserted.get(table, 0) + rowcount

    def end_step(self) -> tuple[list[SchemaChange], list[DataImpact], list[str]]:
        self.running = False
        objects, columns = self._snapshot()
        old_objects, old_columns = self._before
        changes: list[SchemaChange] = []
        for name, kind in sorted(objects.items()):
            if name not in old_objects:
                changes.append(SchemaChange(kind, "added", name))
        for name, kind in sorted(old_objects.items()):
            if name not in objects:
                changes.append(SchemaChange(kind, "removed", name))
        for (table, column), type_ in sorted(columns.items()):
            if (table, column) not in old_columns and table in old_objects:
                changes.append(SchemaChange("column", "added", column, table, after=type_))
        for (table, column), type_ in sorted(old_columns.items()):
            if (table, column) not in columns and table in objects:
                changes.append(SchemaChange("column", "removed", column, table, before=type_))
        for table, count in self._inserted.items():
            changes.append(SchemaChange("rows", "added", table, after=count))
        return changes, self._impact, self._sql
