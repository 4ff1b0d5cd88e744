"""A PostgreSQL preview's reading of the database: its tables and columns, and the transaction's row counters.

Two things are read in one round trip. The catalog (``pg_class``,
``pg_attribute``) of the user schemas: by name, to tell the schema changes
a step made, and by oid, to tell which tables and columns vanished, however
they were dropped (``DROP SCHEMA ... CASCADE``, a ``DO`` block, a trigger).
And the counters behind ``pg_stat_xact_user_tables``: the rows the open transaction has deleted
and updated per table, counted by the server wherever it happened (a
function, a trigger, an ``ON DELETE CASCADE``, ``conn.raw``). Differences
between two readings within one transaction are exact, with two caveats
the observer corrects: a ``TRUNCATE`` resets its table's counters, and work
rolled back to a savepoint stays counted.

The ledger's own tables are left out of both readings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from planner.engines.pg_ledger import quote
from planner.ledger import LOG_TABLE, TABLE
from planner.schema import SchemaChange


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_USER_RELATIONS = (f"n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
                   f"AND n.nspname NOT LIKE 'pg_temp%' AND c.relname NOT IN ({_literal(TABLE)}, {_literal(LOG_TABLE)})")
_CATALOG = f"""
SELECT c.oid::bigint, c.relfilenode::bigint, n.nspname, c.relname, c.relkind, a.attnum, a.attname,
       format_type(a.atttypid, a.atttypmod)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v')
WHERE c.relkind IN ('r', 'p', 'v', 'i') AND {_USER_RELATIONS}
"""
# Only tables with some deletes or updates (the rest would read as zero anyway); the two counters called
# directly, since the pg_stat_xact_user_tables view computes eight per table and costs 2-3 times as much.
_COUNTERS = f"""
SELECT s.oid::bigint, n.nspname, s.relname, s.deleted, s.updated FROM (
  SELECT c.oid, c.relname, c.relnamespace, pg_stat_get_xact_tuples_deleted(c.oid) AS deleted,
         pg_stat_get_xact_tuples_updated(c.oid) AS updated
  FROM pg_class c WHERE c.relkind IN ('r', 'p')) s JOIN pg_namespace n ON n.oid = s.relnamespace
WHERE (s.deleted > 0 OR s.updated > 0) AND {_USER_RELATIONS.replace("c.relname", "s.relname")}
"""
_KINDS = {"r": "table", "p": "table", "v": "view", "i": "index"}


def qualified(name: str) -> str:
    """``schema.table`` as a quoted SQL name."""
    return ".".join(quote(part) for part in name.split("."))


def shown(schema: str, name: str) -> str:
    """How the preview names a relation: bare in ``public``, ``schema.name`` elsewhere."""
    return name if schema == "public" else f"{schema}.{name}"


@dataclass(frozen=True)
class Counters:
    """Rows deleted and updated so far by the open transaction, per table oid."""

    names: dict[int, str] = field(default_factory=dict)
    deleted: dict[int, int] = field(default_factory=dict)
    updated: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """The user schemas' tables, views, indexes and columns, by name and by oid, with the row counters."""

    objects: dict[str, str]
    columns: dict[tuple[str, str], str]
    #: tables (ordinary and partitioned): oid -> shown name.
    tables: dict[int, str]
    #: their columns: (table oid, attnum) -> column name; an attnum outlives a rename and is never reused.
    table_columns: dict[tuple[int, int], str]
    counters: Counters
    #: tables' storage files (``relfilenode``): a new one means the table was emptied or rewritten (``TRUNCATE``,
    #: and ``ALTER TABLE``, ``CLUSTER`` rewrites that keep the rows).
    filenodes: dict[int, int] = field(default_factory=dict)


def read_counters(cursor: Any) -> Counters:
    """The transaction's counters alone (cheap: only tables with deletes or updates are rows)."""
    cursor.execute(_COUNTERS)
    return _counters(cursor.fetchall())


def _counters(rows: list[tuple]) -> Counters:
    counters = Counters()
    for oid, schema, name, deleted, updated in rows:
        counters.names[oid] = shown(schema, name)
        counters.deleted[oid] = deleted
        counters.updated[oid] = updated
    return counters


def take(conn: Any, *, counters: bool = True) -> Snapshot:
    """Both readings in one round trip (the catalog alone without ``counters``: they cost a scan of every
    table's statistics, and a step that leaves rows alone needs none)."""
    objects: dict[str, str] = {}
    columns: dict[tuple[str, str], str] = {}
    tables: dict[int, str] = {}
    table_columns: dict[tuple[int, int], str] = {}
    filenodes: dict[int, int] = {}
    with conn.cursor() as cursor:
        cursor.execute(_CATALOG + (";" + _COUNTERS if counters else ""))
        for oid, filenode, schema, name, kind, attnum, column, type_ in cursor.fetchall():
            table = shown(schema, name)
            objects[table] = _KINDS[kind]
            if kind in ("r", "p"):
                tables[oid] = table
                filenodes[oid] = filenode
            if column is not None:
                columns[(table, column)] = type_
                if kind in ("r", "p"):
                    table_columns[(oid, attnum)] = column
        read = _counters(cursor.fetchall()) if counters and cursor.nextset() else Counters()
    return Snapshot(objects, columns, tables, table_columns, read, filenodes)


def vanished_columns(old: Snapshot, new: Snapshot) -> list[tuple[int, str]]:
    """(table oid, name as it was) of each column of ``old`` gone from a table that is still in ``new``."""
    return sorted((key[0], name) for key, name in old.table_columns.items()
                  if key not in new.table_columns and key[0] in new.tables)


def rewritten_tables(old: Snapshot, new: Snapshot) -> list[int]:
    """Tables of ``old`` still in ``new`` with a new storage file: truncated, or rewritten."""
    return sorted(oid for oid, node in old.filenodes.items() if new.filenodes.get(oid, node) != node)


def schema_changes(old: Snapshot, new: Snapshot) -> list[SchemaChange]:
    """Tables, views, indexes and columns added or removed between two snapshots, by name."""
    changes: list[SchemaChange] = []
    for name, kind in sorted(new.objects.items()):
        if name not in old.objects:
            changes.append(SchemaChange(kind, "added", name))
    for name, kind in sorted(old.objects.items()):
        if name not in new.objects:
            changes.append(SchemaChange(kind, "removed", name))
    for (table, column), type_ in sorted(new.columns.items()):
        if (table, column) not in old.columns and table in old.objects:
            changes.append(SchemaChange("column", "added", column, table, after=type_))
    for (table, column), type_ in sorted(old.columns.items()):
        if (table, column) not in new.columns and table in new.objects:
            changes.append(SchemaChange("column", "removed", column, table, before=type_))
    return changes
