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
from functools import cached_property
from typing import Any

from planner.engines.postgresql.ledger import quote
from planner.ledger import LOG_TABLE, TABLE
from planner.schema import SchemaChange


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_USER_RELATIONS = (f"n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
                   f"AND n.nspname NOT LIKE 'pg_temp%' AND c.relname NOT IN ({_literal(TABLE)}, {_literal(LOG_TABLE)})")
#: The catalog reading, for the relations that also pass ``{only}`` (``TRUE``: all of them). An index that
#: backs a key, a unique or an exclusion constraint is the constraint's, not one the migration created: left
#: out, as SQLite's automatic indexes are, so both engines report the same schema changes.
CATALOG_OF = f"""
SELECT c.oid::bigint, c.relfilenode::bigint, n.nspname, c.relname, c.relkind, a.attnum, a.attname,
       format_type(a.atttypid, a.atttypmod), CASE WHEN c.relkind = 'v' AND a.attnum = 1 THEN pg_get_viewdef(c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v')
WHERE c.relkind IN ('r', 'p', 'v', 'i') AND {_USER_RELATIONS} AND {{only}}
  AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = c.oid AND k.contype IN ('p', 'u', 'x'))
"""
_CATALOG = CATALOG_OF.format(only="TRUE")
# Only tables with some deletes or updates (the rest would read as zero anyway); the two counters called
# directly, since the pg_stat_xact_user_tables view computes eight per table and costs 2-3 times as much.
COUNTERS = f"""
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
class Relation:
    """One table, partitioned table, view or index of a user schema, as the catalog describes it."""

    name: str  # as shown (``shown``)
    kind: str  # table, view or index
    #: the storage file (``relfilenode``): a new one means the table was emptied or rewritten (``TRUNCATE``,
    #: and ``ALTER TABLE``, ``CLUSTER`` rewrites that keep the rows).
    filenode: int
    #: attnum -> (column name, type); an attnum outlives a rename and is never reused. Empty for an index.
    columns: dict[int, tuple[str, str]]
    #: A view's query as the server prints it (``pg_get_viewdef``): a view recreated with another is changed.
    definition: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """The user schemas' tables, views, indexes and columns, by oid, with the row counters.

    The views by name (``objects``, ``columns``) and by oid (``tables``,
    ``table_columns``, ``filenodes``) are derived on first use, so a
    snapshot restricted to a step's few relations (``only``) costs only
    those.
    """

    relations: dict[int, Relation]
    counters: Counters = field(default_factory=Counters)

    @cached_property
    def objects(self) -> dict[str, str]:
        return {relation.name: relation.kind for relation in self.relations.values()}

    @cached_property
    def definitions(self) -> dict[str, str | None]:
        """Views by name: their query."""
        return {relation.name: relation.definition for relation in self.relations.values() if relation.kind == "view"}

    @cached_property
    def columns(self) -> dict[tuple[str, str], str]:
        return {(relation.name, column): type_ for relation in self.relations.values()
                for column, type_ in relation.columns.values()}

    @cached_property
    def tables(self) -> dict[int, str]:
        """Tables (ordinary and partitioned): oid -> shown name."""
        return {oid: relation.name for oid, relation in self.relations.items() if relation.kind == "table"}

    @cached_property
    def table_columns(self) -> dict[tuple[int, int], str]:
        """The tables' columns: (table oid, attnum) -> column name."""
        return {(oid, attnum): column[0] for oid, relation in self.relations.items() if relation.kind == "table"
                for attnum, column in relation.columns.items()}

    @cached_property
    def filenodes(self) -> dict[int, int]:
        return {oid: relation.filenode for oid, relation in self.relations.items() if relation.kind == "table"}

    def only(self, oids: set[int]) -> Snapshot:
        """The part of this snapshot about ``oids`` (those it knows)."""
        return Snapshot({oid: self.relations[oid] for oid in oids if oid in self.relations}, self.counters)

    def changed(self, read: dict[int, Relation], oids: set[int], counters: Counters) -> Snapshot:
        """This snapshot with ``oids`` read again: each as in ``read``, or gone if ``read`` lacks it."""
        relations = dict(self.relations)
        for oid in oids:
            if oid in read:
                relations[oid] = read[oid]
            else:
                relations.pop(oid, None)
        return Snapshot(relations, counters)


def read_counters(cursor: Any) -> Counters:
    """The transaction's counters alone (cheap: only tables with deletes or updates are rows)."""
    cursor.execute(COUNTERS)
    return counters_of(cursor.fetchall())


def counters_of(rows: list[tuple]) -> Counters:
    counters = Counters()
    for oid, schema, name, deleted, updated in rows:
        counters.names[oid] = shown(schema, name)
        counters.deleted[oid] = deleted
        counters.updated[oid] = updated
    return counters


def take(conn: Any, *, counters: bool = True) -> Snapshot:
    """Both readings in one round trip (the catalog alone without ``counters``: they cost a scan of every
    table's statistics, and a step that leaves rows alone needs none)."""
    with conn.cursor() as cursor:
        cursor.execute(_CATALOG + (";" + COUNTERS if counters else ""))
        relations = relations_of(cursor.fetchall())
        read = counters_of(cursor.fetchall()) if counters and cursor.nextset() else Counters()
    return Snapshot(relations, read)


def relations_of(rows: list[tuple]) -> dict[int, Relation]:
    """The relations in rows of ``_CATALOG``'s shape (one per column, or one for a relation without any)."""
    relations: dict[int, Relation] = {}
    for oid, filenode, schema, name, kind, attnum, column, type_, definition in rows:
        relation = relations.get(oid)
        if relation is None:
            relation = relations[oid] = Relation(shown(schema, name), _KINDS[kind], filenode, {}, definition)
        elif definition is not None:
            relations[oid] = relation = Relation(relation.name, relation.kind, relation.filenode, relation.columns,
                                                 definition)
        if column is not None:
            relation.columns[attnum] = (column, type_)
    return relations


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
    for name in sorted(old.definitions.keys() & new.definitions.keys()):  # a view made again, with another query
        if old.definitions[name] != new.definitions[name]:
            changes.append(SchemaChange("view", "changed", name, before=old.definitions[name],
                                        after=new.definitions[name]))
    # A view's columns follow its query: a view is changed as a whole (as SQLite's preview says it).
    for table, column in sorted(new.columns):
        if (table, column) not in old.columns and old.objects.get(table) == "table" == new.objects[table]:
            changes.append(SchemaChange("column", "added", column, table))  # as SQLite's preview says it
    for table, column in sorted(old.columns):
        if (table, column) not in new.columns and new.objects.get(table) == "table" == old.objects[table]:
            changes.append(SchemaChange("column", "removed", column, table))
    for key in sorted(old.columns.keys() & new.columns.keys()):
        if old.columns[key] != new.columns[key]:  # ALTER COLUMN ... TYPE: SQLite has no such change in place
            changes.append(SchemaChange("column", "changed", key[1], key[0], old.columns[key], new.columns[key]))
    return changes
