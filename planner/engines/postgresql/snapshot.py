"""A PostgreSQL preview's reading of the database: its tables and columns, and the transaction's row counters.

Two things are read in one round trip. The catalog (``pg_class``,
``pg_attribute``) of the user schemas: by name, to tell the schema changes
a step made (a column by its whole definition, ``postgresql.schema.COLUMN_PARTS``:
a ``SET NOT NULL`` or a new default changes no type, so they read as "no
schema or data change" while only types were read), and by oid, to tell
which tables and columns vanished, however they were dropped (``DROP SCHEMA ... CASCADE``, a ``DO`` block, a trigger).
And the counters behind ``pg_stat_xact_user_tables``: the rows the open transaction has deleted
and updated per table, counted by the server wherever it happened (a
function, a trigger, an ``ON DELETE CASCADE``, ``conn.raw``). Differences
between two readings within one transaction are exact, with two caveats
the observer corrects: a ``TRUNCATE`` resets its table's counters, and work
rolled back to a savepoint stays counted.

The ledger's own tables are left out of both readings.

The constraints, triggers and functions of a PostgreSQL database, as a preview step found and left them.

``pg_class`` holds tables, views and indexes (``postgresql.snapshot``); a ``CHECK``
added to a table, a trigger or a function lives in ``pg_constraint``,
``pg_trigger`` and ``pg_proc``, where a dropped trigger may leave its table's
``pg_class`` row untouched. Without them a step that only adds a constraint,
or drops a trigger and its function, read as "no schema or data change",
while SQLite's preview names the trigger.

Read whole once, then per step only what the step wrote, the way
``postgresql.step_catalog`` reads relations: the rows of a catalog whose insert and
update counters moved, newer than the last reading (``age(xmin)``), and, when
a delete counter moved, the oids still there. The ledger's tables, the
constraints behind a table's creation (its keys are the table's, as on
SQLite) and what an extension installed are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from planner.engines.postgresql.ledger import quote
from planner.engines.postgresql.schema import COLUMN_JOINS, COLUMN_PARTS, OWNED, ROUTINE
from planner.ledger import LOG_TABLE, TABLE
from planner.schema import Column, ObjectKind, SchemaChange


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_ANY_USER_RELATION = (f"n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
                      f"AND n.nspname NOT LIKE 'pg_temp%' "
                      f"AND c.relname NOT IN ({_literal(TABLE)}, {_literal(LOG_TABLE)})")
#: Relations of the schemas the member owns (``schema.own_schemas``): ``pg_get_viewdef`` locks a view and its
#: tables to the end of the transaction, and another tenant's relations are not the run's to lock.
_USER_RELATIONS = f"{_ANY_USER_RELATION} AND {OWNED.format(ns='n')}"
#: The catalog reading, for the relations that also pass ``{only}`` (``TRUE``: all of them). An index that
#: backs a key, a unique or an exclusion constraint is the constraint's, not one the migration created: left
#: out, as SQLite's automatic indexes are, so both engines report the same schema changes.
CATALOG_OF = f"""
SELECT c.oid::bigint, c.relfilenode::bigint, n.nspname, c.relname, c.relkind, a.attnum, a.attname,
       {COLUMN_PARTS}, CASE WHEN c.relkind = 'v' AND a.attnum = 1 THEN pg_get_viewdef(c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v')
{COLUMN_JOINS}
WHERE c.relkind IN ('r', 'p', 'v', 'i') AND {_USER_RELATIONS} AND {{only}}
  AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = c.oid AND k.contype IN ('p', 'u', 'x'))
"""
_CATALOG = CATALOG_OF.format(only="TRUE")
# Only tables with some deletes or updates (the rest would read as zero anyway), in every schema: the counters
# lock nothing and count only what the run's own transaction did, so rows a migration deletes in a schema it
# does not own (a shared one) are still told. The two counters called directly, since the pg_stat_xact_user_tables view computes eight per table and costs 2-3 times as much.
COUNTERS = f"""
SELECT s.oid::bigint, n.nspname, s.relname, s.deleted, s.updated FROM (
  SELECT c.oid, c.relname, c.relnamespace, pg_stat_get_xact_tuples_deleted(c.oid) AS deleted,
         pg_stat_get_xact_tuples_updated(c.oid) AS updated
  FROM pg_class c WHERE c.relkind IN ('r', 'p')) s JOIN pg_namespace n ON n.oid = s.relnamespace
WHERE (s.deleted > 0 OR s.updated > 0) AND {_ANY_USER_RELATION.replace("c.relname", "s.relname")}
"""
_KINDS: dict[str, ObjectKind] = {"r": "table", "p": "table", "v": "view", "i": "index"}


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
    kind: ObjectKind  # table, view or index
    #: the storage file (``relfilenode``): a new one means the table was emptied or rewritten (``TRUNCATE``,
    #: and ``ALTER TABLE``, ``CLUSTER`` rewrites that keep the rows).
    filenode: int
    #: attnum -> (column name, definition as ``Column.definition`` says it: type, NOT NULL, default, identity or
    #: generated clause); an attnum outlives a rename and is never reused. Empty for an index.
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
    def objects(self) -> dict[str, ObjectKind]:
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
    for oid, filenode, schema, name, kind, attnum, column, type_, notnull, default, extra, definition in rows:
        relation = relations.get(oid)
        if relation is None:
            relation = relations[oid] = Relation(shown(schema, name), _KINDS[kind], filenode, {}, definition)
        elif definition is not None:
            relations[oid] = relation = Relation(relation.name, relation.kind, relation.filenode, relation.columns,
                                                 definition)
        if column is not None:
            definition_ = Column(column, type_, notnull == "t", default, 0, 0, extra).definition()
            relation.columns[attnum] = (column, definition_)
    return relations


def vanished_columns(old: Snapshot, new: Snapshot) -> list[tuple[int, str]]:
    """(table oid, name as it was) of each column of ``old`` gone from a table that is still in ``new``."""
    return sorted((key[0], name) for key, name in old.table_columns.items()
                  if key not in new.table_columns and key[0] in new.tables)


def rewritten_tables(old: Snapshot, new: Snapshot) -> list[int]:
    """Tables of ``old`` still in ``new`` with a new storage file: truncated, or rewritten."""
    return sorted(oid for oid, node in old.filenodes.items() if new.filenodes.get(oid, node) != node)


def schema_changes(old: Snapshot, new: Snapshot) -> list[SchemaChange]:
    """Tables, views, indexes and columns added, removed, renamed or changed between two snapshots.

    By name, except renames: a relation keeps its oid and a column its attnum through ``RENAME``, so one with
    a new name under the same oid (attnum) is renamed, as SQLite's preview says it, not dropped and added (a
    column dropped would read as the loss of its values to whoever reads the JSON)."""
    changes: list[SchemaChange] = []
    renamed = [(old.relations[oid], new.relations[oid]) for oid in sorted(old.relations.keys() & new.relations.keys())
               if old.relations[oid].name != new.relations[oid].name]
    gone, came = {old_one.name for old_one, _ in renamed}, {new_one.name for _, new_one in renamed}
    for old_one, new_one in renamed:
        changes.append(SchemaChange(new_one.kind, "renamed", new_one.name, before=old_one.name, after=new_one.name))
    for name, kind in sorted(new.objects.items()):
        if name not in old.objects and name not in came:
            changes.append(SchemaChange(kind, "added", name))
    for name, kind in sorted(old.objects.items()):
        if name not in new.objects and name not in gone:
            changes.append(SchemaChange(kind, "removed", name))
    for name in sorted(old.definitions.keys() & new.definitions.keys()):  # a view made again, with another query
        if old.definitions[name] != new.definitions[name]:
            changes.append(SchemaChange("view", "changed", name, before=old.definitions[name],
                                        after=new.definitions[name]))
    # Columns compared under the tables' names after the step: a table renamed in the step keeps its columns, and
    # one added, dropped or changed with it is told as on any table.
    moved = {old_one.name: new_one.name for old_one, new_one in renamed}
    old_columns = {(moved.get(table, table), column): shape for (table, column), shape in old.columns.items()} \
        if moved else old.columns
    old_objects = {moved.get(name, name): kind for name, kind in old.objects.items()} if moved else old.objects
    columns_gone, columns_came = set(), set()
    for oid, attnum in sorted(old.table_columns.keys() & new.table_columns.keys()):
        was, now = old.table_columns[oid, attnum], new.table_columns[oid, attnum]
        if was != now:
            columns_gone.add((new.tables[oid], was))
            columns_came.add((new.tables[oid], now))
            changes.append(SchemaChange("column", "renamed", now, new.tables[oid], before=was, after=now))
    # A view's columns follow its query: a view is changed as a whole (as SQLite's preview says it).
    for table, column in sorted(new.columns):
        if (table, column) not in old_columns and old_objects.get(table) == "table" == new.objects[table] \
                and (table, column) not in columns_came:
            changes.append(SchemaChange("column", "added", column, table))  # as SQLite's preview says it
    for table, column in sorted(old_columns):
        if (table, column) not in new.columns and new.objects.get(table) == "table" == old_objects[table] \
                and (table, column) not in columns_gone:
            changes.append(SchemaChange("column", "removed", column, table))
    for key in sorted(old_columns.keys() & new.columns.keys()):
        # ALTER COLUMN ... TYPE, SET/DROP NOT NULL, SET/DROP DEFAULT...: SQLite has no such change in place, and
        # the schema model's words (the rehearsal's, drift's) say it.
        if old_columns[key] != new.columns[key]:
            changes.append(SchemaChange("column", "changed", key[1], key[0], old_columns[key], new.columns[key]))
    return changes


_TRIGGER, _CONSTRAINT, _PROC = ("'pg_catalog.pg_trigger'::regclass", "'pg_catalog.pg_constraint'::regclass",
                                "'pg_catalog.pg_proc'::regclass")
_USER = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%' "
         "AND n.nspname NOT LIKE 'pg_temp%%' AND " + OWNED.format(ns="n"))
_LEDGER = f"c.relname NOT IN ('{TABLE}', '{LOG_TABLE}')"

#: (oid, kind, name, schema, table, definition) of every user trigger, constraint and function passing the gates:
#: ``{trigger}``, ``{constraint}``, ``{function}`` are each a condition on that catalog's row alias. The definition
#: (as ``postgresql.schema`` reads it: a function by its attributes and a hash of its body) tells one changed in place
#: (``VALIDATE CONSTRAINT``, ``CREATE OR REPLACE``).
OBJECTS_OF = f"""
SELECT t.oid::bigint AS oid, 'trigger' AS kind, t.tgname::text AS name, n.nspname::text AS schema,
       c.relname::text AS tbl, pg_get_triggerdef(t.oid) AS def
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND {_USER} AND {_LEDGER} AND {{trigger}}
UNION ALL
SELECT k.oid::bigint, 'constraint', k.conname::text, n.nspname::text, c.relname::text, pg_get_constraintdef(k.oid)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype IN ('c', 'f', 'p', 'u', 'x') AND {_USER} AND {_LEDGER} AND {{constraint}}
UNION ALL
SELECT p.oid::bigint, 'function', p.proname::text, n.nspname::text, NULL, {ROUTINE}
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {_USER} AND {{function}}
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = {_PROC} AND d.objid = p.oid AND d.deptype = 'e')
"""
_ALL = OBJECTS_OF.format(trigger="TRUE", constraint="TRUE", function="TRUE").replace("%%", "%")


def _counted(what: str, table: str) -> str:
    return " + ".join(f"pg_stat_get_xact_tuples_{kind}({table})" for kind in what.split())


#: The gates of a step reading: each catalog's inserts and updates, and their deletes together.
GATES = ", ".join((_counted("inserted updated", _TRIGGER), _counted("inserted updated", _CONSTRAINT),
                   _counted("inserted updated", _PROC),
                   f"{_counted('deleted', _TRIGGER)} + {_counted('deleted', _CONSTRAINT)} + "
                   f"{_counted('deleted', _PROC)}"))


def _written(alias: str, catalog: str, gate: str) -> str:
    return (f"(SELECT {_counted('inserted updated', catalog)} > %({gate})s) "
            f"AND age({alias}.xmin) < (SELECT age(%(step)s::xid))")


#: Two columns for ``postgresql.step_catalog``'s statement: the objects written since the last reading, as JSON
#: (NULL when there are none), and, if some were deleted, the oids of all that remain (else NULL).
STEP_COLUMNS = (f"""
(SELECT json_agg(json_build_array(o.oid, o.kind, o.name, o.schema, o.tbl, o.def)) FROM ({OBJECTS_OF.format(
    trigger=_written("t", _TRIGGER, "trigger_writes"), constraint=_written("k", _CONSTRAINT, "constraint_writes"),
    function=_written("p", _PROC, "function_writes"))}) o)""", f"""
CASE WHEN {_counted('deleted', _TRIGGER)} + {_counted('deleted', _CONSTRAINT)} + {_counted('deleted', _PROC)}
          > %(object_deletes)s
     THEN ARRAY(SELECT oid::bigint FROM pg_trigger UNION ALL SELECT oid::bigint FROM pg_constraint
                UNION ALL SELECT oid::bigint FROM pg_proc) END
""")


#: One constraint, trigger or function: (kind, name as shown, table as shown or ``None``, definition).
Entry = tuple[ObjectKind, str, "str | None", "str | None"]


@dataclass
class Objects:
    """Constraints, triggers and functions by oid (``Entry``)."""

    known: dict[int, Entry] = field(default_factory=dict)

    @classmethod
    def read(cls, conn: Any) -> Objects:
        with conn.cursor() as cursor:
            cursor.execute(_ALL)
            return cls(dict(_entries(cursor.fetchall())))

    def update(self, written: list | None, present: list[int] | None) -> tuple[dict, dict]:
        """Take a step's reading in; return what it added and what it removed (oid -> entry)."""
        added: dict[int, Entry] = {}
        removed: dict[int, Entry] = {}
        if present is not None:
            remaining = set(present)
            for oid in [oid for oid in self.known if oid not in remaining]:
                removed[oid] = self.known.pop(oid)
        for oid, entry in _entries(written or []):
            before = self.known.get(oid)
            if before != entry:
                if before is not None:
                    removed[oid] = before  # renamed or changed: the old one went, the new one came
                added[oid] = self.known[oid] = entry
        return added, removed


def _entries(rows: list) -> list[tuple[int, Entry]]:
    return [(oid, (kind, name if table is None and schema == "public" else
                   (f"{schema}.{name}" if table is None else name),
                   None if table is None else shown(schema, table), definition))
            for oid, kind, name, schema, table, definition in rows]


def object_changes(added: dict, removed: dict, tables_added: set[str], tables_removed: set[str]) -> list[SchemaChange]:
    """The lines for what a step added, removed and changed, by name (one removed and added again under its name
    with another definition is changed, as SQLite's preview says a trigger made again): a constraint of a table
    the step created or dropped is part of that table (SQLite's preview has no separate line for it either)."""
    def named(entries: dict[int, Entry]) -> dict[tuple[ObjectKind, str, str | None], str | None]:
        return {entry[:3]: entry[3] for entry in entries.values()}

    new, old = named(added), named(removed)
    changes = []
    for kind, name, table in sorted(old.keys() - new.keys(), key=_order):
        if not (kind == "constraint" and table in tables_removed):
            changes.append(SchemaChange(kind, "removed", name, table))
    for kind, name, table in sorted(new.keys() - old.keys(), key=_order):
        if not (kind == "constraint" and table in tables_added):
            changes.append(SchemaChange(kind, "added", name, table))
    for key in sorted(new.keys() & old.keys(), key=_order):
        if old[key] != new[key]:
            changes.append(SchemaChange(key[0], "changed", key[1], key[2], old[key], new[key]))
    return changes


def _order(entry: tuple[str, str, str | None]) -> tuple[str, str, str]:
    return entry[0], entry[1], entry[2] or ""
