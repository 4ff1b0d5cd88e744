"""A PostgreSQL preview's view of the database at one moment: its tables and columns, and the transaction's row counters.

Two things are read in one round trip. The catalog (``pg_class``,
``pg_attribute``) of the user schemas: by name, to tell the schema changes
a step made, and by oid, to tell which tables and columns vanished, however
they were dropped (``DROP SCHEMA ... CASCADE``, a ``DO`` block, a trigger).
And ``pg_stat_xact_user_tables``: the rows the open transaction has deleted
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
SELECT c.oid::bigint, n.nspname, c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v')
WHERE c.relkind IN ('r', 'p', 'v', 'i') AND {_USER_RELATIONS}
"""
# Only tables with some deletes or updates: the rest would read as zero anyway.
_COUNTERS = f"""
SELECT s.relid::bigint, s.schemaname, s.relname, s.n_tup_del, s.n_tup_upd FROM pg_stat_xact_user_tables s
WHERE (s.n_tup_del > 0 OR s.n_tup_upd > 0) AND s.relname NOT IN ({_literal(TABLE)}, {_literal(LOG_TABLE)})
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
    #: their columns: (table oid, column name).
    table_columns: set[tuple[int, str]]
    counters: Counters


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
    table_columns: set[tuple[int, str]] = set()
    with conn.cursor() as cursor:
        cursor.execute(_CATALOG + (";" + _COUNTERS if counters else ""))
        for oid, schema, name, kind, column, type_ in cursor.fetchall():
            table = shown(schema, name)
            objects[table] = _KINDS[kind]
            if kind in ("r", "p"):
                tables[oid] = table
            if column is not None:
                columns[(table, column)] = type_
                if kind in ("r", "p"):
                    table_columns.add((oid, column))
        read = _counters(cursor.fetchall()) if counters and cursor.nextset() else Counters()
    return Snapshot(objects, columns, tables, table_columns, read)


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
