"""Watching a PostgreSQL preview: what each step destroys, counted before it is gone.

SQLite's preview asks SQLite's authorizer what a statement touches; on
PostgreSQL four readings together cover what a step can destroy:

1. **The statement's text** (``postgresql.sql.classify``), counted just before it
   runs, in the same transaction: rows of a table it drops (with the
   tables inheriting from it) or truncates (with, for ``TRUNCATE ...
   CASCADE``, the tables whose foreign keys point at it), non-default
   values of a column it drops, rows a ``DELETE`` removes (its
   ``rowcount``), values an ``UPDATE ... SET c = e`` changes (the same
   expressions evaluated by a ``SELECT``; with ``FROM``, exact when each
   row joins one source row, else left to 3): a non-NULL value that
   existed before the plan is overwritten, a NULL or a value the plan
   wrote (a table it created, a column it added: told by oid and attnum
   against the catalog as the plan found it) is only set; non-NULL values an
   ``ALTER COLUMN ... TYPE`` changes (cast back and compared,
   ``retyped_values`` below).
2. **Statements that may drop what they do not name** (``DROP ...
   CASCADE``, ``DROP SCHEMA ... CASCADE``, ``DROP OWNED``, ``DROP
   EXTENSION``, ``ALTER ... CASCADE``, ``DO``, ``CALL``, and any data
   statement calling a function of a user schema) run inside a savepoint
   between two catalog readings; what vanished unaccounted is counted after
   rolling back to the savepoint, and the statement runs again
   (``run_watched`` below). Each table is named with its rows, each column
   with its non-default values.
3. **The server's row counters** for the transaction
   (``pg_stat_xact_user_tables``), read before the step's first statement
   that may touch rows (not before ``CREATE TABLE``, ``CREATE INDEX``,
   ``COMMENT``...: a step of only those reads none) and at its end:
   deletes and updates no statement of 1 accounts for (``ON DELETE
   CASCADE``, triggers, functions, ``DO``, rules, ``MERGE``, writable
   ``WITH``, ``ON CONFLICT DO UPDATE``, ``conn.raw``) are reported per
   table: deleted rows exactly, updated rows as ``updates N rows of T``
   (values not compared, counted as loss) (``RowTally`` below).
4. **The catalog** (``pg_class``, ``pg_attribute``) at the start and end of
   each step, by name for the schema changes, by oid as a net: a table or
   column that vanished and none of the above counted (dropped by a
   trigger, inside a function called where 2 does not look, through
   ``conn.raw``), and a table with a new storage file (``relfilenode``)
   that no ``TRUNCATE``, ``ALTER TABLE`` or ``CLUSTER`` the observer read
   explains (a ``TRUNCATE`` inside a ``DO`` block or a function), is
   reported *not counted*, which makes the step unchecked (``--dry-run``
   exits 7; a run asks). Read whole before the first step; after each
   step, only the relations the step wrote (``postgresql.step_catalog``: each step
   runs in a savepoint of its own for that); steps that only create
   relations or drop tables they counted share one reading (``PgObserver.settle``).

The observer's own queries run inside savepoints, so one that fails never
aborts the migration's transaction; what it could not count is left to 3
or 4. Not measured: which values an opaque update changed (only how many
rows it wrote); rows unseen code deletes from a table the same step then
drops (the drop counts what remains); a ``TRUNCATE`` inside a function of
a table created earlier in the same preview (PostgreSQL empties it in
place: no new storage file; its rows were the plan's own); work a
migration rolls back to its own savepoint stays in the counters (counted as
done); work a function does outside the database. 2 runs a statement
twice, so sequences it advances move twice; the Python migration never
runs twice.

The preview's counting queries on PostgreSQL: what a table, a column or an update holds before it is destroyed.

Each runs inside a savepoint of the migration's transaction, so a query
that fails (a table that is not there, an expression that cannot be
evaluated apart from its statement) returns ``None`` and never aborts the
migration: what could not be counted here is then reported from the
server's row counters, or marked as not counted.

Rows a step deleted or updated that no statement the observer read accounts for, from the server's counters.

The observer reads each statement a migration sends and counts what a
``DELETE`` or ``UPDATE`` on the table it names destroys. Rows can also go
where no statement names them: an ``ON DELETE CASCADE`` (or ``SET NULL``)
foreign key, a trigger, a function called by ``SELECT f()`` or ``CALL``, a
``DO`` block, a rule, ``MERGE``, a writable ``WITH``, ``INSERT ... ON CONFLICT
DO UPDATE``, ``conn.raw``. The server counts every row its transaction
deletes or updates, per table (``pg_stat_xact_user_tables``), so a step's
counters minus what its statements accounted for is exactly that rest.

Deleted rows are reported per table, exactly. Updated rows are reported as
``updates N rows of T`` (values not compared: SQLite's preview counts only
values that changed, which no counter tells), and count as loss, so a plan
with them asks for confirmation: a row written by unseen code is treated as
overwritten.

Statements that may drop tables or columns they do not name: run, compare, and if need be count and run again.

``DROP SCHEMA s CASCADE`` names no table; ``DROP TYPE mood CASCADE`` drops
the columns of that type; a ``DO`` block or a function called by
``SELECT f()`` may run any ``DROP``. What they take cannot be read from
their text, and counting it afterwards is too late. So such a statement
runs inside a savepoint between two catalog readings. If no table or
column vanished beyond what the observer already counted, the savepoint is
released: nothing ran twice. Otherwise the statement is rolled back to the
savepoint, what vanished (which exists again) is counted, and the
statement runs again, once, for good.

Running one statement twice this way has no effect outside the database
except on sequences (``nextval`` is never rolled back) and on what a
function does outside the database (``dblink``, files, ``NOTIFY`` is
transactional and so undone). The migration's Python code never runs twice.
A statement that fails inside the savepoint is left failed, as it would be
without the savepoint: the transaction is aborted and the migration sees
the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, cast

from planner.engines.postgresql.ledger import quote
from planner.engines.postgresql.schema import OWNED
from planner.engines.postgresql.snapshot import (
    Counters,
    Objects,
    Snapshot,
    object_changes,
    qualified,
    read_counters,
    rewritten_tables,
    schema_changes,
    shown,
    take,
    vanished_columns,
)
from planner.engines.postgresql.sql import (
    Statement,
    called_names,
    classify,
    first_keywords,
    leaves_rows_alone,
    may_drop_unnamed,
    rewritten_table,
    tokens,
)
from planner.engines.postgresql.step_catalog import STEP_SAVEPOINT, Gates, PreparedSet, begin_step, read_step
from planner.engines.postgresql.step_catalog import Statement as PreparedStatement
from planner.preview import DataImpact, ImpactKind, summed
from planner.schema import SchemaChange

#: Defaults that give a new value on every row: a column holding them differs from its default everywhere.
_VOLATILE = ("nextval", "now(", "random(", "clock_timestamp", "gen_random", "uuid")

#: A table and every table that inherits from it (partitions included): dropping it drops them all.
_FAMILY = """
WITH RECURSIVE family(oid) AS (SELECT %s::regclass::oid
  UNION SELECT i.inhrelid FROM pg_inherits i JOIN family f ON i.inhparent = f.oid)
SELECT array_agg(oid::bigint) FROM family
"""
#: Tables whose foreign keys point, directly or not, at the given ones: ``TRUNCATE ... CASCADE`` empties them.
_REFERENCING = """
WITH RECURSIVE refs(oid) AS (SELECT unnest(%s::regclass[])::oid
  UNION SELECT c.conrelid FROM pg_constraint c JOIN refs r ON c.confrelid = r.oid WHERE c.contype = 'f')
SELECT r.oid::bigint, n.nspname, k.relname FROM refs r JOIN pg_class k ON k.oid = r.oid
JOIN pg_namespace n ON n.oid = k.relnamespace WHERE r.oid <> ALL(%s::regclass[]::oid[])
"""
# Which names are functions of a user schema, and whether any such function could drop something: a body
# mentioning DROP, ALTER or EXECUTE (dynamic SQL), or a language whose body cannot be read (C, plpython...).
_USER_FUNCTION = r"""
SELECT array(SELECT DISTINCT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.proname = ANY(%s)),
       EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               JOIN pg_language l ON l.oid = p.prolang
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND (l.lanname NOT IN ('sql', 'plpgsql') OR p.prosrc ~* '\m(drop|alter|execute)\M'))
"""
_ANCESTORS = """
WITH RECURSIVE up(child, parent) AS (SELECT o, o FROM unnest(%s::oid[]) AS o
  UNION SELECT up.child, i.inhparent FROM up JOIN pg_inherits i ON i.inhrelid = up.parent)
SELECT child::bigint, array_agg(parent::bigint) FROM up WHERE child <> parent GROUP BY child
"""


_OWNED_TABLE = (f"SELECT {OWNED.format(ns='n')} FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = %s")

#: The savepoint each counting query runs in (``fetch``).
COUNT_SAVEPOINT = "apm_preview_count"


def fetch(conn: Any, sql: str, parameters: Any = None, *, rows: bool = False, begin: str = "") -> Any:
    """One row (or every row) of a counting query, inside a savepoint; ``None`` if it failed.

    The savepoint, the query and the release go in one round trip (a simple query, its parameters bound here),
    not three: a rollback preview counts the rows of every table it drops. ``begin``: statements sent ahead of
    them in the same round trip (the step's savepoint, ``PgObserver.open_step``).
    """
    # optional dependency: psycopg is installed with an extra
    import psycopg

    try:
        with psycopg.ClientCursor(conn) as cursor:
            ahead = f"{begin.replace('%', '%%')}; " if begin else ""
            cursor.execute(f"{ahead}SAVEPOINT {COUNT_SAVEPOINT}; {sql}; RELEASE SAVEPOINT {COUNT_SAVEPOINT}",
                           parameters)
            for _ in range(ahead.count(";") + 1):
                cursor.nextset()
            return cursor.fetchall() if rows else cursor.fetchone()
    except Exception:  # the migration's own statement will meet the real problem, if any
        _undo_count(conn)
        return None


def _undo_count(conn: Any) -> None:
    """After a counting query failed: its savepoint undone, so the migration's statement runs as it would have."""
    try:
        conn.execute(f"ROLLBACK TO SAVEPOINT {COUNT_SAVEPOINT}; RELEASE SAVEPOINT {COUNT_SAVEPOINT}")
    except Exception:
        pass  # the connection itself failed: the migration's next statement says so


#: What dropping a table removes besides its rows: whether it has (or had) inheriting tables, its oid, and, for
#: a table with no inheritance link and no foreign key, its indexes' oids (else NULL).
_DROPPED = ("SELECT relhassubclass, c.oid::bigint, "
            "CASE WHEN NOT relhassubclass AND NOT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = c.oid) "
            "AND NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = c.oid AND contype = 'f') "
            "THEN ARRAY(SELECT indexrelid::bigint FROM pg_index WHERE indrelid = c.oid) END "
            "FROM pg_class c WHERE c.oid = %(table)s::regclass")
_PREPARED_DROPPED = PreparedStatement("dropped", _DROPPED, {"table": "text"})


def table_rows(conn: Any, table: str, *, only: bool = False, begin: str = "",
               prepared: PreparedSet | None = None) -> tuple[int, list[int], list[int] | None] | None:
    """Rows of ``table`` (its inheriting tables' too unless ``only``), the oids of the table's family, and, for a
    table with no inheritance link and no foreign key, its oid and its indexes': all that dropping it removes
    from the catalog's relations and writes nothing else (``None`` for another table).

    The family is asked for only when the table has (or once had) an inheriting table: planning its recursive
    query cost more than the count of a rollback's empty tables. With ``prepared`` (the runner's preview) the
    catalog part is planned once per preview, the count beside it in the same round trip.
    """
    name = qualified(table)
    count = f"SELECT count(*) FROM {'ONLY ' if only else ''}{name}"
    if prepared is None:
        row = fetch(conn, f"SELECT ({count}), {_DROPPED[len('SELECT '):]}".replace("%(table)s", "%s"), (name,),
                    begin=begin)
    else:
        try:
            cursor = prepared.execute(conn, _PREPARED_DROPPED, {"table": name},
                                      ahead=f"{begin + '; ' if begin else ''}SAVEPOINT {COUNT_SAVEPOINT}",
                                      then=f"{count}; RELEASE SAVEPOINT {COUNT_SAVEPOINT}")
            found = cursor.fetchone()
            cursor.nextset()
            row = None if found is None else (cursor.fetchone()[0], *found)
        except Exception:  # the migration's own statement will meet the real problem, if any
            _undo_count(conn)
            row = None
    if row is None:
        return None
    return row[0], family(conn, table) if row[1] else [row[2]], None if row[3] is None else [row[2], *row[3]]


def family(conn: Any, table: str) -> list[int]:
    """Oids of ``table`` and of every table inheriting from it (none if there is no such table)."""
    row = fetch(conn, _FAMILY, (qualified(table),))
    return [] if row is None else list(row[0] or [])


def dropped_column(conn: Any, table: str, column: str) -> tuple[DataImpact, list[int]] | None:
    """The values a dropped column holds that differ from its default (its inheriting tables' included), and
    the oids of the table's family, whose column of that name goes with it."""
    name = qualified(table)
    found = fetch(conn, "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
                        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                        "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
                  (name, column))
    if found is None:
        return None  # no such column (DROP COLUMN IF EXISTS): nothing is lost
    expression = found[0]
    differs = ""
    if expression and not any(word in expression.lower() for word in _VOLATILE):
        differs = f" AND {quote(column)} IS DISTINCT FROM ({expression})"
    row = fetch(conn, f"SELECT count(*) FILTER (WHERE {quote(column)} IS NOT NULL{differs}), "
                      f"count({quote(column)}), ({_FAMILY}) FROM {name}", (name,))
    if row is None:
        return None
    return DataImpact("dropped-column", table, column, count=row[0], non_null=row[1]), list(row[2] or [])


def retyped_values(conn: Any, table: str, column: str, type_: str, using: str | None) -> DataImpact | None:
    """Non-NULL values of ``column`` that ``ALTER COLUMN ... TYPE`` changes: those that do not come back the
    same when the new value is cast back to the old type (``19.99`` as ``integer`` is ``20``; a ``USING
    left(c, 2)`` keeps two characters). Widening a type changes none. A value that cannot be cast back is
    not counted, and makes the step unchecked. ``None`` when nothing changes, or there is no such column."""
    name = qualified(table)
    found = fetch(conn, "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                        "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
                  (name, column))
    if found is None:
        return None  # no such column: the migration's own statement will say so
    new = f"({using})::{type_}" if using else f"{quote(column)}::{type_}"
    row = fetch(conn, f"SELECT count(*) FILTER (WHERE {quote(column)} IS NOT NULL "
                      f"AND ({new})::{found[0]} IS DISTINCT FROM {quote(column)}) FROM {name}")
    if row is None:
        return DataImpact("overwritten-values", table, column, counted=False)
    return DataImpact("overwritten-values", table, column, count=row[0]) if row[0] else None


def referencing_tables(conn: Any, tables: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """(oid, schema, name) of the tables ``TRUNCATE ... CASCADE`` on ``tables`` also empties."""
    names = [qualified(t) for t in tables]
    return fetch(conn, _REFERENCING, (names, names), rows=True) or []


def user_functions(conn: Any, names: set[str]) -> tuple[set[str], bool]:
    """Which of ``names`` are functions or procedures of a user schema, and whether any function of a user
    schema could drop a table or column (if none could, calling them needs no watching).

    Unknown (the query failed) counts as all of them, able to drop: the statement is then watched, which only
    costs time.
    """
    row = fetch(conn, _USER_FUNCTION, (sorted(names),))
    return (set(names), True) if row is None else (set(row[0]), bool(row[1]))


def ancestors(conn: Any, oids: list[int]) -> dict[int, list[int]]:
    """Each table's parents, grandparents...: a partition's counters belong to the table a statement named."""
    return {child: parents for child, parents in fetch(conn, _ANCESTORS, (oids,), rows=True) or []}


class RowTally:
    """One step's accounting: rows its read statements explained, and corrections to the server's counters."""

    def __init__(self) -> None:
        self.deleted: dict[int, int] = {}
        self.updated: dict[int, int] = {}
        self._offset_deleted: dict[int, int] = {}
        self._offset_updated: dict[int, int] = {}

    def explain(self, oid: int, *, deleted: int = 0, updated: int = 0) -> None:
        """Rows a statement the observer read (and counted) deleted or updated in table ``oid``."""
        self.deleted[oid] = self.deleted.get(oid, 0) + deleted
        self.updated[oid] = self.updated.get(oid, 0) + updated

    def correct(self, before: Counters, after: Counters) -> None:
        """The counters moved between two readings by work that does not last: a ``TRUNCATE`` resets its
        table's counters, and a statement rolled back to a savepoint (to be run again) stays counted."""
        for oid in set(before.names) | set(after.names):
            self._offset_deleted[oid] = (self._offset_deleted.get(oid, 0) + before.deleted.get(oid, 0)
                                         - after.deleted.get(oid, 0))
            self._offset_updated[oid] = (self._offset_updated.get(oid, 0) + before.updated.get(oid, 0)
                                         - after.updated.get(oid, 0))

    def unexplained(self, conn: Any, start: Counters, end: Counters) -> list[DataImpact]:
        """What the step's counters show beyond what its statements explained, as impact lines."""
        names = {**start.names, **end.names}
        impact: list[DataImpact] = []
        for kind, first, last, explained, offset in (
                ("deleted-rows", start.deleted, end.deleted, self.deleted, self._offset_deleted),
                ("overwritten-values", start.updated, end.updated, self.updated, self._offset_updated)):
            # Only tables whose counter moved, or that a statement or a correction names: the rest are even.
            moved = {oid for oid, n in last.items() if first.get(oid, 0) != n}
            excess = {oid: last.get(oid, 0) - first.get(oid, 0) + offset.get(oid, 0) - explained.get(oid, 0)
                      for oid in moved | set(explained) | set(offset)}
            _pool_partitions(conn, excess)
            for oid, count in sorted(excess.items(), key=lambda item: names.get(item[0], "")):
                if count > 0 and oid in names:
                    impact.append(DataImpact(cast(ImpactKind, kind), names[oid], None, count=count))  # a kind above
        return impact


def _pool_partitions(conn: Any, excess: dict[int, int]) -> None:
    """A statement on a partitioned (or inherited) table is counted by the server on the partitions it touched:
    move what the parent explained onto them. Asked of the server only when both sides are there."""
    over = [oid for oid, n in excess.items() if n > 0]
    if not over or not any(n < 0 for n in excess.values()):
        return
    for child, parents in ancestors(conn, over).items():
        for parent in parents:
            if excess.get(parent, 0) < 0 and excess[child] > 0:
                moved = min(excess[child], -excess[parent])
                excess[child] -= moved
                excess[parent] += moved


SAVEPOINT = "apm_preview_watch"


@dataclass
class Accounted:
    """Tables (oids) and columns (table oid, name) whose loss the step's impact already holds, and tables a
    statement the observer read may give a new storage file (``TRUNCATE``, counted; ``ALTER TABLE``, rows kept)."""

    tables: set[int] = field(default_factory=set)
    columns: set[tuple[int, str]] = field(default_factory=set)
    rewritten: set[int] = field(default_factory=set)


@dataclass
class _Waiting:
    """A step whose catalog reading waits (``PgObserver.settle``): its lines, filled in when read, the relations
    its drops remove (``table_rows``), and what its statements counted."""

    changes: list[SchemaChange]
    impact: list[DataImpact]
    claims: set[int]
    accounted: Accounted


def _for_counting(name: str) -> str:
    return name if "." in name else f"public.{name}"  # shown names leave out public; search_path may too


def run_watched(conn: Any, cursor: Any, query: str, parameters: Any, accounted: Accounted,
                tally: RowTally) -> list[DataImpact]:
    """Run ``query`` on ``cursor`` (its results stay there) and return what it dropped that was not accounted for."""
    before = take(conn)
    conn.execute(f"SAVEPOINT {SAVEPOINT}")
    cursor.execute(query, parameters)
    after = take(conn)
    tables = {oid: name for oid, name in before.tables.items()
              if oid not in after.tables and oid not in accounted.tables}
    columns = {key for key in vanished_columns(before, after) if key not in accounted.columns}
    if not tables and not columns:
        conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        return []
    conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
    with conn.cursor() as own:
        tally.correct(before.counters, read_counters(own))  # the undone run stays in the counters
    impact = _count_tables(conn, tables, accounted) + _count_columns(conn, before.tables, columns, accounted)
    cursor.execute(query, parameters)
    conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
    return impact


def _count_tables(conn: Any, tables: dict[int, str], accounted: Accounted) -> list[DataImpact]:
    """Rows of each vanished table; an inheriting table (a partition) is counted with its parent if both went."""
    measured = {oid: table_rows(conn, _for_counting(name)) for oid, name in tables.items()}
    impact = []
    for oid, name in sorted(tables.items(), key=lambda item: item[1]):
        found = measured[oid]
        if any(oid in other[1] for key, other in measured.items() if key != oid and other is not None):
            continue  # a parent that also vanished holds these rows
        accounted.tables.add(oid)
        if found is None:
            impact.append(DataImpact("dropped-table", name, counted=False))
            continue
        accounted.tables.update(found[1])
        impact.append(DataImpact("dropped-table", name, count=found[0], before=found[0]))
    return impact


def _count_columns(conn: Any, names: dict[int, str], columns: set[tuple[int, str]],
                   accounted: Accounted) -> list[DataImpact]:
    """Non-default values of each vanished column of a table that stays."""
    measured = {key: dropped_column(conn, _for_counting(names[key[0]]), key[1]) for key in columns}
    impact = []
    for key in sorted(columns, key=lambda k: (names[k[0]], k[1])):
        found = measured[key]
        if any(other is not None and k[1] == key[1] and k != key and key[0] in other[1]
               for k, other in measured.items()):
            continue  # the parent's column, dropped too, is counted with its inheriting tables
        accounted.columns.add(key)
        if found is None:
            impact.append(DataImpact("dropped-column", names[key[0]], key[1], counted=False))
            continue
        accounted.columns.update((oid, key[1]) for oid in found[1])
        impact.append(DataImpact(found[0].kind, names[key[0]], key[1], count=found[0].count,
                                 non_null=found[0].non_null))
    return impact


#: Words that take a ``CREATE TABLE`` or ``CREATE SEQUENCE`` beyond the catalog rows of what it creates: it writes
#: another relation's rows (a foreign key's parent, a partitioned or inherited parent, a sequence's owning table),
#: copies one (``LIKE``, ``OF``), or runs a query (``AS``), which may call any function.
_REACHES = {"REFERENCES", "PARTITION", "INHERITS", "LIKE", "OF", "AS", "SELECT", "VALUES", "EXECUTE", "OWNED",
            "TRIGGER", "INDEX"}


@lru_cache(maxsize=256)  # a data migration runs one text many times
def creates_only(sql: str) -> bool:
    """Whether ``sql`` is one ``CREATE TABLE`` or ``CREATE SEQUENCE`` that writes only the catalog rows of what it
    creates: it drops, empties and rewrites nothing, runs no code of the database's (when it has no event trigger),
    and no later statement of this kind writes the rows it wrote. So the catalog reading of a step made only of
    these may wait (``PgObserver.settle``) and still tell each step's changes apart."""
    parts = tokens(sql)
    words = [t.upper for t in parts if t.kind == "word"]
    i = 1
    while i < len(words) and words[i] in ("UNLOGGED", "TEMP", "TEMPORARY", "GLOBAL", "LOCAL"):
        i += 1
    return (words[:1] == ["CREATE"] and words[i:i + 1] in (["TABLE"], ["SEQUENCE"]) and not _REACHES.intersection(words)
            and all(t.text != ";" for t in parts[:-1]))  # one statement, not a script


#: First keywords of statements that cannot define a function: the "calls a user function" answers stay valid.
_DATA = {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "MERGE", "TABLE", "SET", "SHOW"}


class PgObserver:
    """Told about each statement a migration runs during a preview; sums each step up.

    One observer watches one preview transaction: the catalog reading that
    ends a step is the one the next step starts from (nothing runs between
    them), and each step runs in a savepoint the next one releases.
    """

    def __init__(self, conn: Any, log_table: str, capture_sql: bool = False, prepared: PreparedSet | None = None):
        self.conn = conn
        #: The per-step readings prepared once for the preview (``postgresql.prepared``); ``None``: as psycopg does.
        self.prepared = prepared
        self.log_table = log_table  # whose newest row tells a step's transaction id (``postgresql.step_catalog``)
        self.capture_sql = capture_sql
        self.running = False
        self._impact: list[DataImpact] = []
        self._inserted: dict[str, int] = {}
        self._sql: list[str] = []
        self._start: Snapshot | None = None
        #: The row counters as the step's first statement that may touch rows found them (None: none yet).
        self._counted_from: Counters | None = None
        self._last: Snapshot | None = None
        #: The catalog as the plan found it: a table or column not in it holds only what the plan wrote.
        self._origin: Snapshot | None = None
        #: Constraints, triggers and functions as the last step left them (``postgresql.objects``).
        self._objects: Objects | None = None
        #: Per step: (table, column) -> values an UPDATE set that held no data from before the plan.
        self._set: dict[tuple[str, str], int] = {}
        self._deleted_own: dict[str, int] = {}
        #: The schema an unqualified name in a statement means (the first on the search path: a tenant's own),
        #: read when a statement's table is first named (``_named``).
        self._home: str | None = None
        self._gates: Gates | None = None
        self._stepping = False  # a step's savepoint is open (``postgresql.step_catalog``)
        self._begin = ""  # the step's savepoint, not yet sent (``open_step``)
        self._eager = False  # the next step's savepoint is sent at its start, not deferred
        self._opened = False  # the next step's savepoint is open already (``read_step`` with ``prepared``)
        self._tally = RowTally()
        self._accounted = Accounted()
        self._statement = Statement("other")
        self._pending: Any = None
        self._truncating: Counters | None = None
        #: Names called like functions: whether each is a function of a user schema (asked once, until DDL).
        self._functions: dict[str, bool] = {}
        #: Whether any function of a user schema could drop something (its body says DROP, ALTER, EXECUTE).
        self._functions_may_drop = True
        #: The step ran only ``creates_only`` statements and plain drops so far (``None``: none at all yet).
        self._quiet: bool | None = None
        #: Relations the step's plain drops remove (``table_rows``): a shared reading tells its drops by them.
        self._claims: set[int] = set()
        #: The steps whose catalog reading waits (``settle``), their lines filled in when it is read.
        self._late: list[_Waiting] = []
        self._owned: dict[int, bool] = {}  # tables not in ``_origin``: whether in a schema the run owns

    def start_step(self) -> None:
        self._impact, self._inserted, self._sql, self._pending = [], {}, [], None
        self._tally, self._accounted, self._counted_from = RowTally(), Accounted(), None
        self._set, self._deleted_own, self._quiet, self._claims = {}, {}, None, set()
        self._start = self._last if self._last is not None else take(self.conn, counters=False)
        if self._origin is None:
            self._origin = self._start
        if self._objects is None:
            self._objects = Objects.read(self.conn)
        if not self._opened:  # a prepared reading opened it already, in its own round trip
            # The step's catalog rows carry its own transaction id. In the runner's preview the savepoint goes
            # ahead of the step's first statement (``open_step``): a rollback's count before each drop carries it.
            self._begin = begin_step(self._stepping)
            if self.prepared is None or self._eager:
                self.open_step()
        self._stepping, self._opened, self._eager = True, False, False
        self.running = True

    def open_step(self, eager: bool = False) -> None:
        """Open the step's savepoint if it is not yet. Whatever runs on the connection during a step runs after
        it: the observer's readings and the migration's statements (``before``, ``unwatched``, ``end_step``), the
        session's checks, lock settings and ledger rows (``PgSession.open_step``). ``eager``: the next step's
        opens at its start (a rehearsed step's savepoint goes inside it, ``Session.rehearse``)."""
        begin, self._begin = self._begin, ""
        if begin:
            self.conn.execute(begin)
        self._eager = self._eager or eager

    def unwatched(self) -> None:
        """The migration reached past the proxy (``conn.raw``): what it runs there is seen by the counters only."""
        if self.running:
            self.open_step()
            self._quiet = False
            self.settle(during_step=True)
            self._count_from_here()
            self._functions.clear()
            if self.prepared is not None:
                self.prepared.forget()  # unseen code may deallocate what this preview prepared

    def _count_from_here(self) -> None:
        if self._counted_from is None:
            with self.conn.cursor() as cursor:
                self._counted_from = read_counters(cursor)

    def stop(self) -> None:
        self._begin = ""  # the step failed before it ran anything: there is nothing of it to undo
        self.settle(failed=True)
        self.running = False
        self._last, self._gates, self._stepping, self._objects = None, None, False, None
        self._opened = False

    # -- per statement: before, execute, after --------------------------------------

    def before(self, sql: str, query: str, parameters: Any) -> None:
        if not self.running:
            return
        if self.capture_sql:
            self._sql.append(sql if parameters is None else self._filled_in(sql, query, parameters))
        if self.prepared is not None and first_keywords(query, 1) == ["DEALLOCATE"]:
            self.prepared.forget()  # it may deallocate the readings prepared for this preview
        statement = self._statement = classify(query)
        self._pending, self._truncating = None, None
        quiet = creates_only(query) or statement.kind == "drop-table" and not may_drop_unnamed(query)
        # The step's savepoint, if not yet open, rides with the count before a drop (one round trip, not two).
        begin = ""
        if statement.kind == "drop-table" and statement.tables and leaves_rows_alone(query):
            begin, self._begin = self._begin, ""
        else:
            self.open_step()
        if not leaves_rows_alone(query):
            self._count_from_here()
        if statement.kind == "drop-table":
            for table in statement.tables:
                found = table_rows(self.conn, table, begin=begin, prepared=self.prepared)
                begin = ""
                # It drops just that, which the step found there (not one a waiting step made: gone unread).
                quiet = (quiet and found is not None and found[2] is not None and self._start is not None
                         and found[2][0] in self._start.relations)
                if found is not None:
                    self._accounted.tables.update(found[1])
                    self._claims.update(found[2] or ())
                    self._impact.append(DataImpact("dropped-table", self._named(table), count=found[0],
                                                   before=found[0]))
        if self._quiet is not False:
            self._quiet = quiet
            if not quiet:
                self.settle(during_step=True)  # before it changes what the waiting steps wrote
        if statement.kind == "truncate":
            self._truncate(statement)
        elif statement.kind == "drop-columns":
            for column in statement.columns:
                dropped = dropped_column(self.conn, statement.tables[0], column)
                if dropped is not None:
                    self._accounted.columns.update((oid, column) for oid in dropped[1])
                    self._impact.append(replace(dropped[0], table=self._named(dropped[0].table)))
        elif statement.kind == "delete":
            name = qualified(statement.tables[0])
            self._pending = fetch(self.conn, f"SELECT count(*), %s::regclass::oid FROM {name}", (name,))
        elif statement.kind == "update":
            self._pending = self._count_update(statement, parameters)
        for column, type_, using in statement.retyped:  # values an ALTER COLUMN ... TYPE changes
            if (changed := retyped_values(self.conn, statement.tables[0], column, type_, using)) is not None:
                self._impact.append(replace(changed, table=self._named(changed.table)))
        if (rewritten := rewritten_table(query)) is not None:
            self._accounted.rewritten.update(family(self.conn, rewritten))  # an ALTER TABLE rewrite keeps the rows

    def _filled_in(self, sql: str, query: str, parameters: Any) -> str:
        """The statement with its parameters as SQL literals, as the server's client-side binding writes them
        (``--sql`` shows what ran, runnable); the parameters beside it if they cannot be written so."""
        # optional dependency: psycopg is installed with an extra
        import psycopg

        try:
            return psycopg.ClientCursor(self.conn).mogrify(query, parameters)
        except Exception:  # a type psycopg cannot quote: show the values as they came
            return f"{sql}  -- parameters: {parameters!r}"

    def execute(self, cursor: Any, query: str, parameters: Any) -> None:
        """Run the statement; one that may drop what it does not name runs watched (``run_watched`` below)."""
        if self.running and self._watch(query):
            self._impact += run_watched(self.conn, cursor, query, parameters, self._accounted, self._tally)
        else:
            cursor.execute(query, parameters)

    def after(self, sql: str, query: str, parameters: Any, rowcount: int) -> None:
        if not self.running:
            return
        statement, pending = self._statement, self._pending
        if statement.kind == "delete" and pending is not None and rowcount and rowcount > 0:
            before, oid = pending
            table = self._named(statement.tables[0])
            if self._written_by_plan(oid):
                self._deleted_own[table] = self._deleted_own.get(table, 0) + rowcount
            else:
                self._impact.append(DataImpact("deleted-rows", table, count=rowcount, before=before,
                                               after=before - rowcount))
            self._tally.explain(oid, deleted=rowcount)
        elif statement.kind == "update" and pending is not None and rowcount and rowcount > 0:
            oid, counts = pending
            table = self._named(statement.tables[0])
            for (column, _), (overwritten, set_, attnum) in zip(statement.assignments, counts):
                if self._written_by_plan(oid, attnum):
                    overwritten, set_ = 0, overwritten + set_
                if overwritten:
                    self._impact.append(DataImpact("overwritten-values", table, column, count=overwritten))
                if set_:
                    self._set[(table, column)] = self._set.get((table, column), 0) + set_
            self._tally.explain(oid, updated=rowcount)
        elif statement.kind == "truncate" and self._truncating is not None:
            with self.conn.cursor() as cursor:
                self._tally.correct(self._truncating, read_counters(cursor))  # TRUNCATE resets the counters
            self._truncating = None
        elif statement.kind == "insert" and rowcount and rowcount > 0:
            table = self._named(statement.tables[0])
            self._inserted[table] = self._inserted.get(table, 0) + rowcount
        words = first_keywords(query, 1)
        if words and words[0] not in _DATA:
            self._functions.clear()  # it may have created, replaced or dropped a function

    def _truncate(self, statement: Statement) -> None:
        """Rows each truncated table holds (its inheriting tables' included; for ``CASCADE``, the referencing
        tables' too), and the counters just before, since ``TRUNCATE`` resets them."""
        for table in statement.tables:
            found = table_rows(self.conn, table)
            if found is not None:
                self._accounted.rewritten.update(found[1])
                self._impact.append(DataImpact("deleted-rows", self._named(table), count=found[0], before=found[0],
                                               after=0))
        if statement.cascade:
            for oid, schema, name in referencing_tables(self.conn, statement.tables):
                self._accounted.rewritten.add(oid)
                found = table_rows(self.conn, f"{schema}.{name}", only=True)
                if found is not None and found[0]:
                    self._impact.append(DataImpact("deleted-rows", shown(schema, name), count=found[0],
                                                   before=found[0], after=0))
        with self.conn.cursor() as cursor:
            self._truncating = read_counters(cursor)

    def _named(self, table: str) -> str:
        """A table as a statement wrote it, named as the catalog readings name it (``snapshot.shown``), so one
        table is one name in every line: ``tasks`` in a tenant's run is ``tenant_a.tasks``, as the readings
        say it, and ``public.tasks`` in a plain database's run is ``tasks``. A tenant's ``public.x`` stays so:
        its readings do not name ``public`` (``schema.own_schemas``), and bare it would read as the tenant's."""
        schema, dot, name = table.rpartition(".")
        if self._home is None:
            found = fetch(self.conn, "SELECT current_schema()")
            self._home = str(found[0]) if found and found[0] else "public"
        if not dot:
            schema = self._home
        return shown(schema, name) if self._home == "public" else f"{schema}.{name}"

    def _written_by_plan(self, oid: int, attnum: int | None = None) -> bool:
        """Whether the table ``oid`` (or its column ``attnum``) is not in the catalog as the plan found it. That
        catalog holds the schemas the run owns (``schema.own_schemas``): a table missing from it in another
        schema (a shared one) is one whose rows the run cannot tell from older ones, so losing them is told."""
        relation = None if self._origin is None else self._origin.relations.get(oid)  # a table, or a view
        if relation is None:
            if oid not in self._owned:
                self._owned[oid] = bool(self.conn.execute(_OWNED_TABLE, (oid,)).fetchone()[0])
            return self._owned[oid]
        return attnum is not None and attnum not in relation.columns

    def _count_update(self, statement: Statement,
                      parameters: Any) -> tuple[int, tuple[tuple[int, int, int | None], ...]] | None:
        """Per assigned column, the values the ``SET`` expression will change (non-NULL ones, NULL ones) and the
        column's attnum, and the table's oid.

        With ``FROM``, a row joining several source rows gets one of them, unspecified: the counts are then
        not exact and ``None`` is returned, leaving the rows to the counters (``updates N rows``).
        """
        table = qualified(statement.tables[0])
        alias = f" AS {quote(statement.alias)}" if statement.alias else ""
        ref = quote(statement.alias or statement.tables[0].split(".")[-1])
        source = f", {statement.source}" if statement.source else ""
        # The table's oid rides along as a literal: the parameters are the statement's own. Each SET expression
        # is written once, in the statement's order (then FROM, then WHERE), so the parameters line up; compared
        # with its column where it stands, so an untyped literal takes the column's type, as in the UPDATE.
        escape = (lambda text: text.replace("%", "%%")) if parameters is not None else (lambda text: text)
        oid = escape("'" + table.replace("'", "''") + "'::regclass::oid")
        kinds, counts = [], []
        for n, (c, e) in enumerate(statement.assignments):
            old = f"{ref}.{quote(c)}"
            kinds.append(f"CASE WHEN {old} IS NOT DISTINCT FROM ({e}) THEN 0 WHEN {old} IS NULL THEN 1 ELSE 2 END "
                         f"AS k{n}")
            rows = "count(DISTINCT (t_, c_))" if statement.source else "count(*)"
            name = escape("'" + c.replace("'", "''") + "'")
            attnum = f"(SELECT attnum FROM pg_attribute WHERE attrelid = {oid} AND attname = {name})"
            counts += [f"{rows} FILTER (WHERE k{n} = 2)", f"{rows} FILTER (WHERE k{n} = 1)", attnum]
        if statement.source:
            counts.insert(0, "count(*) - count(DISTINCT (t_, c_))")
        where = f" WHERE {statement.where}" if statement.where else ""
        rows_of = f"{ref}.tableoid AS t_, {ref}.ctid AS c_, " if statement.source else ""  # (a view has no ctid)
        inner = f"SELECT {rows_of}{', '.join(kinds)} FROM {table}{alias}{source}{where}"
        row = fetch(self.conn, f"SELECT {oid}, {', '.join(counts)} FROM ({inner}) AS changed", parameters)
        if row is None or (statement.source and row[1] != 0):
            return None
        values = row[2:] if statement.source else row[1:]
        return row[0], tuple(tuple(values[i:i + 3]) for i in range(0, len(values), 3))

    def _watch(self, query: str) -> bool:
        """Whether the statement may drop what it does not name (``DROP ... CASCADE``, ``DO``, a user function)."""
        if may_drop_unnamed(query):
            return True
        names = called_names(query)
        unknown = {name for name in names if name not in self._functions}
        if unknown:
            found, self._functions_may_drop = user_functions(self.conn, unknown)
            self._functions.update((name, name in found) for name in unknown)
        return self._functions_may_drop and any(self._functions[name] for name in names)

    # -- per step ----------------------------------------------------------------------

    def _waits(self) -> bool:
        """Whether the step's catalog reading waits to be read with the next steps' (``settle``)."""
        gates = self._gates
        return bool(self._quiet and self.prepared is not None and gates is not None and gates.step is not None
                    and not gates.event_triggers and self._counted_from is None)

    def close_step(self) -> str:
        """The statements to send behind the step's last one (its ledger row, ``PgSession.record``): the next
        step's savepoint, when this step's reading waits, so nothing of this step follows its ledger row. One
        round trip a step fewer; the rows the step wrote carry its savepoint's id, as before."""
        if not self.running or self._begin or not self._waits():
            return ""
        self._opened = True  # the next step finds its savepoint open, as after a reading (``end_step``)
        return begin_step(True)

    def end_step(self) -> tuple[list[SchemaChange], list[DataImpact], list[str]]:
        self.open_step()  # a step that ran nothing: its reading still needs its savepoint
        self.running = False
        if self._waits():
            # New relations, and drops counted, in this step's savepoint: read with the next steps' (``settle``).
            # The next step opens its savepoint itself, unless its ledger row opened it (``close_step``).
            waiting = _Waiting([], list(self._impact), self._claims, self._accounted)
            self._late.append(waiting)
            return waiting.changes, waiting.impact, self._sql
        self.settle(during_step=True)
        start = self._start if self._start is not None else take(self.conn, counters=False)
        reading = read_step(self.conn, start, self._gates, self.log_table,
                            counters=self._counted_from is not None, prepared=self.prepared)
        self._opened = self.prepared is not None
        self._gates, self._last, end = reading.gates, reading.snapshot, reading.snapshot
        changes, uncounted = self._lines(start, end, reading.read, reading.objects, self._accounted)
        for (table, column), count in sorted(self._set.items()):
            changes.append(SchemaChange("values", "changed", column, table=table, after=count))
        for table, count in sorted(self._deleted_own.items()):
            changes.append(SchemaChange("rows", "removed", table, table=table, before=count))
        created = {c.name for c in changes if c.kind == "table" and c.action == "added"}
        for table, count in self._inserted.items():  # rows of a table the step created are part of creating it
            if table not in created:
                changes.append(SchemaChange("rows", "added", table, after=count))
        impact = list(self._impact)
        if self._counted_from is not None:
            impact += self._tally.unexplained(self.conn, self._counted_from, end.counters)
        return changes, summed(impact) + uncounted, self._sql

    def _lines(self, start: Snapshot, end: Snapshot, read: set[int] | None, objects: Any,
               accounted: Accounted) -> tuple[list[SchemaChange], list[DataImpact]]:
        """A step's schema changes, and what vanished or was rewritten with nothing counting it, between two
        catalog readings (``read``: the oids read again, ``None``: all); the known objects move on to ``end``."""
        if read is not None:  # only what the step wrote was read again: the rest is the same on both sides
            start, end = start.only(read), end.only(read)
        changes = schema_changes(start, end)
        created = {c.name for c in changes if c.kind == "table" and c.action == "added"}
        dropped = {c.name for c in changes if c.kind == "table" and c.action == "removed"}
        known = self._objects if self._objects is not None else Objects()
        if objects is None:  # read whole: compare everything
            fresh = Objects.read(self.conn)
            added = {oid: e for oid, e in fresh.known.items() if known.known.get(oid) != e}
            removed = {oid: e for oid, e in known.known.items() if fresh.known.get(oid) != e}
            self._objects = fresh
        else:
            added, removed = known.update(*objects)
            self._objects = known
        return changes + object_changes(added, removed, created, dropped), self._uncounted(start, end, accounted)

    def settle(self, *, during_step: bool = False, failed: bool = False) -> None:
        """Read the catalog for the steps whose reading waited, and fill in their lines.

        Each of those steps ran in a savepoint of its own, only creating
        relations (``creates_only``) and dropping tables it counted that
        write nothing else when dropped (``table_rows``), with its log row
        last: every row it wrote carries the id of its log row, and what it
        removed is what it claimed, so one reading tells the steps apart.
        Called before a statement of another kind runs, at the end of a step
        that reads at once, and before the preview is judged or ends
        (``during_step``: what no waiting step wrote or claimed is the step
        under way's, read again at its end). After a failed statement the
        failed step is undone first (the preview is rolled back anyway); a
        reading that fails then leaves those lines out rather than hide the
        failure.
        """
        if not self._late or self._last is None:
            return
        late, self._late = self._late, []
        try:
            if failed and self.conn.info.transaction_status.name == "INERROR":  # the failed step is undone first
                self.conn.execute(f"ROLLBACK TO SAVEPOINT {STEP_SAVEPOINT}")
            self._settle(late, during_step)
        except Exception:
            if not failed:
                raise

    def _settle(self, late: list[_Waiting], during_step: bool) -> None:
        before = self._last
        assert before is not None  # settle checks it
        reading = read_step(self.conn, before, self._gates, self.log_table, counters=False, prepared=self.prepared,
                            steps=len(late))
        writers, steps = reading.writers, reading.steps
        if reading.read is None or writers is None or steps is None or len(steps) != len(late):
            # Read whole, or a step without its log row (it cannot happen): the last waiting step shows it all.
            changes, uncounted = self._lines(before, reading.snapshot, reading.read, reading.objects, Accounted())
            late[-1].changes.extend(changes)
            late[-1].impact.extend(uncounted)
            self._last = reading.snapshot
        else:
            step_of = {xid: n for n, xid in enumerate(steps)}
            claimed = {oid: n for n, waiting in enumerate(late) for oid in waiting.claims}
            rest = None if during_step else len(late) - 1  # whose is what no waiting step wrote or claimed
            relations: dict[int | None, set[int]] = {}
            for oid in reading.read:  # written ones by the id their row carries, gone ones by the claims
                n = step_of.get(writers.get(("r", oid), ""), rest) if oid in reading.relations else claimed.get(oid, rest)
                relations.setdefault(n, set()).add(oid)
            written, remaining = reading.objects or (None, None)
            objects: dict[int | None, list] = {}
            for entry in written or []:
                objects.setdefault(step_of.get(writers.get(("o", entry[0]), ""), rest), []).append(entry)
            known = self._objects.known if self._objects is not None else {}
            names = {before.relations[oid].name: n for oid, n in claimed.items() if oid in before.relations}
            removed: dict[int | None, set[int]] = {}
            for oid in known.keys() - set(remaining if remaining is not None else known):  # gone with its table
                removed.setdefault(names.get(known[oid][2] or "", rest), set()).add(oid)
            # One catalog moved on step by step: a copy of it per step made a long run of them quadratic.
            catalog = dict(before.relations)
            for n, waiting in enumerate(late):
                oids = relations.get(n, set())
                start = Snapshot({oid: catalog[oid] for oid in oids if oid in catalog})
                end = Snapshot(reading.relations).only(oids)  # each as the reading found it, or gone
                catalog.update(end.relations)
                for oid in oids - end.relations.keys():
                    catalog.pop(oid, None)
                present = [oid for oid in known if oid not in removed[n]] if n in removed else None
                changes, uncounted = self._lines(start, end, oids, (objects.get(n), present), waiting.accounted)
                waiting.changes.extend(changes)
                waiting.impact.extend(uncounted)
            self._last = Snapshot(catalog, Counters())
        if during_step:
            self._start = self._last
            # What the step under way wrote or dropped so far is read again at its end, whatever the counters say.
            self._gates = replace(reading.gates, class_writes=-1, class_deletes=-1, attribute_updates=-1,
                                  trigger_writes=-1, constraint_writes=-1, function_writes=-1, object_deletes=-1)
        else:
            self._gates = reading.gates

    @staticmethod
    def _uncounted(start: Snapshot, end: Snapshot, accounted: Accounted) -> list[DataImpact]:
        """Tables and columns that vanished during the step, and tables emptied or rewritten, with nothing
        counting what they held."""
        impact = [DataImpact("dropped-table", name, counted=False) for oid, name in sorted(start.tables.items())
                  if oid not in end.tables and oid not in accounted.tables]
        for oid, column in vanished_columns(start, end):
            if (oid, column) not in accounted.columns:
                impact.append(DataImpact("dropped-column", end.tables[oid], column, counted=False))
        # A new storage file no statement read explains: a TRUNCATE where the preview could not watch.
        impact += [DataImpact("deleted-rows", end.tables[oid], counted=False) for oid in rewritten_tables(start, end)
                   if oid not in accounted.rewritten]
        return impact
