"""Comparing two schemas for the stairway: what a rollback left behind, or what a re-apply changed.

``planner.schema`` snapshots tables, columns, indexes, triggers and views for
the rehearsal, which reports *changes a plan makes*. The stairway asks a
stricter question, "is this exactly the schema we had?", so it adds what the
snapshot keeps only inside a table's SQL: foreign keys (``pragma_foreign_key_list``)
and UNIQUE / PRIMARY KEY constraints (``pragma_index_list``, whose automatic
indexes the snapshot leaves out). Comparing those through the pragmas rather
than the SQL text means a downgrade that rebuilds a table with the same
definition written differently (SQLite quotes a renamed table's name) is not
reported, while a lost constraint is.

A state is only ``sqlite_master``'s SQL (``capture``, one query); the
pragmas are read in ``differences``, on an in-memory copy of just the tables
whose SQL differs. Equal SQL is an equal schema, so a correct stair never
pays for the detailed comparison.

Rows are not compared: seed data and data migrations legitimately change
them, and a downgrade's job is to restore the schema.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Literal, Protocol

from planner.schema import LEDGER_TABLES, SchemaChange, SchemaSnapshot, snapshot

#: One foreign key: (columns, referenced table, referenced columns, ON UPDATE, ON DELETE, MATCH).
ForeignKey = tuple[tuple[str, ...], str, tuple[str | None, ...], str, str, str]
#: One constraint backed by an automatic index: (origin "u" or "pk", columns).
Constraint = tuple[str, tuple[str, ...]]

Direction = Literal["rollback", "re-apply"]


class State(Protocol):
    """A schema as the stairway keeps it, on any engine: compared with another, listed for leftovers.

    ``SchemaState`` here (SQLite) and ``planner.testing.pg_compare.PgSchemaState``:
    each engine reads its own catalog, and both speak the words below
    (``left``, ``dropped``, ``changed``), so the stairway never asks which it has.
    """

    def differences(self, after: State, direction: Direction) -> list[str]:
        """What ``after`` has that this state lacks, and the reverse, one line each."""

    def names(self) -> list[str]:
        """Every user object: ``table orders``, ``index orders_by_date``..."""


_KINDS = ("table", "index", "trigger", "view")
_OBJECTS = """
SELECT type, name, sql FROM sqlite_master
WHERE type IN ('table', 'index', 'trigger', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
  AND tbl_name NOT IN ({ledger})
""".format(ledger=", ".join(f"'{t}'" for t in LEDGER_TABLES))


@dataclass(frozen=True)
class SchemaState:
    """A schema as the stairway keeps it: each user object's SQL, as ``sqlite_master`` holds it.

    The SQL is the whole definition (SQLite rewrites it on every ALTER), so
    equal SQL means an equal schema, and reading it is one query however
    many tables there are. Only when two states differ are the tables
    concerned rebuilt in memory and compared through the pragmas
    (``differences``): the stairway takes four states per migration, and
    reading every table's pragmas each time made the walk quadratic.
    """

    #: (type, name) -> SQL, for every table, index, trigger and view but SQLite's and the ledger's.
    objects: Mapping[tuple[str, str], str]

    def names(self) -> list[str]:
        """``table orders``, ``index orders_by_date``...: every user object, for "what is left" checks."""
        order = {kind: n for n, kind in enumerate(_KINDS)}
        return [f"{kind} {name}" for kind, name in sorted(self.objects, key=lambda k: (order[k[0]], k[1]))]

    def differences(self, after: State, direction: Direction) -> list[str]:
        """``differences(self, after, direction)``: the stairway's engine-free entry point."""
        assert isinstance(after, SchemaState)
        return differences(self, after, direction)


def capture(conn: sqlite3.Connection) -> SchemaState:
    """Read the schema of ``conn``: one query, whatever its size."""
    cursor = conn.cursor()
    cursor.row_factory = None
    return SchemaState({(kind, name): sql or "" for kind, name, sql in cursor.execute(_OBJECTS).fetchall()
                        if not (kind == "index" and sql is None)})


@dataclass(frozen=True)
class _Details:
    """Tables read through the pragmas: columns (via ``planner.schema``), foreign keys, constraints."""

    snapshot: SchemaSnapshot
    foreign_keys: Mapping[str, frozenset[ForeignKey]]
    constraints: Mapping[str, frozenset[Constraint]]


def _details(conn: sqlite3.Connection) -> _Details:
    """Read every table of ``conn`` (without counting rows), with its foreign keys and constraints."""
    shape = snapshot(conn, count_rows=False)
    foreign_keys: dict[str, frozenset[ForeignKey]] = {}
    constraints: dict[str, frozenset[Constraint]] = {}
    cursor = conn.cursor()
    cursor.row_factory = None
    for table in shape.tables:
        keys: dict[int, list[tuple]] = {}
        for row in cursor.execute("SELECT * FROM pragma_foreign_key_list(?)", (table,)).fetchall():
            keys.setdefault(row[0], []).append(row)
        foreign_keys[table] = frozenset(_foreign_key(rows) for rows in keys.values())
        found: set[Constraint] = set()
        for _, index, _, origin, _ in cursor.execute(
            "SELECT seq, name, \"unique\", origin, partial FROM pragma_index_list(?)", (table,)
        ).fetchall():
            if origin in ("u", "pk"):
                columns = tuple(
                    str(row[0]).lower()
                    for row in cursor.execute(
                        "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (index,)
                    ).fetchall()
                )
                found.add((origin, columns))
        constraints[table] = frozenset(found)
    return _Details(shape, foreign_keys, constraints)


def _foreign_key(rows: list[tuple]) -> ForeignKey:
    rows = sorted(rows, key=lambda row: row[1])  # by seq: the key's column order
    first = rows[0]
    return (
        tuple(str(row[3]).lower() for row in rows),
        str(first[2]).lower(),
        tuple(None if row[4] is None else str(row[4]).lower() for row in rows),
        first[5],
        first[6],
        first[7],
    )


def describe_foreign_key(table: str, key: ForeignKey) -> str:
    """``foreign key orders(customer_id) → customers(id) ON DELETE CASCADE``."""
    columns, target, target_columns, on_update, on_delete, _ = key
    referenced = ", ".join(c or "?" for c in target_columns) if any(target_columns) else "primary key"
    actions = "".join(f" ON {what} {action}" for what, action in (("UPDATE", on_update), ("DELETE", on_delete))
                      if action and action != "NO ACTION")
    return f"foreign key {table}({', '.join(columns)}) → {target}({referenced}){actions}"


def _describe_constraint(table: str, constraint: Constraint) -> str:
    origin, columns = constraint
    kind = "primary key" if origin == "pk" else "unique constraint"
    return f"{kind} {table}({', '.join(columns)})"


_AROUND_PUNCTUATION = re.compile(r"\s*([(),])\s*")
_QUOTED = re.compile(r'"((?:[^"]|"")*)"|`([^`]*)`|\[([^\]]*)\]')


def _comparable_sql(sql: str) -> str:
    """Table SQL with whitespace, identifier quoting and case evened out."""
    unquoted = _QUOTED.sub(lambda m: next(g for g in m.groups() if g is not None), sql or "")
    return _AROUND_PUNCTUATION.sub(r"\1", " ".join(unquoted.lower().split()))


def differences(before: SchemaState, after: SchemaState, direction: Direction) -> list[str]:
    """What ``after`` has that ``before`` lacks and the reverse, in the words of the stairway.

    ``direction="rollback"`` compares the schema before an apply with the one
    after its rollback: ``left index orders_by_date``, ``dropped table
    customers``, ``changed column orders.total: INTEGER → TEXT``.
    ``direction="re-apply"`` compares the first apply with the re-apply:
    ``index orders_by_date is missing``, ``table audit is new``.
    """
    if before.objects == after.objects:
        return []
    changed = {key for key in before.objects.keys() | after.objects.keys()
               if before.objects.get(key) != after.objects.get(key)}
    tables = sorted(name for kind, name in changed if kind == "table")
    lines = _table_differences(
        {t: before.objects[("table", t)] for t in tables if ("table", t) in before.objects},
        {t: after.objects[("table", t)] for t in tables if ("table", t) in after.objects},
        direction,
    )
    for kind in ("index", "trigger", "view"):
        for name in sorted(name for k, name in changed if k == kind):
            old, new = before.objects.get((kind, name)), after.objects.get((kind, name))
            if old is None:
                lines.append(gained(f"{kind} {name}", direction))
            elif new is None:
                lines.append(lost(f"{kind} {name}", direction))
            elif _comparable_sql(old) != _comparable_sql(new):
                # A renamed table's indexes and triggers are rewritten with quotes: not a change.
                lines.append(f"changed {kind} {name}" if direction == "rollback" else f"{kind} {name} differs")
    return lines


def _materialize(tables: Mapping[str, str]) -> _Details:
    """The given tables created in an empty in-memory database, read back through the pragmas.

    A table's SQL is its whole definition, so this reads exactly what the
    real database would report, without reading the real database again.
    """
    with closing(sqlite3.connect(":memory:")) as conn:
        for sql in tables.values():
            conn.execute(sql)
        return _details(conn)


def _table_differences(old: Mapping[str, str], new: Mapping[str, str], direction: Direction) -> list[str]:
    from planner.schema import diff

    try:
        before, after = _materialize(old), _materialize(new)
    except sqlite3.Error:
        # A virtual table whose module this SQLite lacks: fall back to comparing the SQL text.
        lines = [lost(f"table {t}", direction) for t in sorted(old.keys() - new.keys())]
        lines += [gained(f"table {t}", direction) for t in sorted(new.keys() - old.keys())]
        lines += [f"changed table {t}" if direction == "rollback" else f"table {t} differs"
                  for t in sorted(old.keys() & new.keys()) if _comparable_sql(old[t]) != _comparable_sql(new[t])]
        return lines
    lines = []
    explained: set[str] = set()  # tables whose difference is already named in detail
    for change in diff(before.snapshot, after.snapshot):
        if change.kind != "table" and change.kind != "column":
            continue
        if change.kind == "table" and change.action == "changed":
            continue  # decided below, once keys and constraints are compared
        if change.kind == "column":
            explained.add(change.table or "")
        lines.append(_describe(change, direction))
    common = sorted(before.snapshot.tables.keys() & after.snapshot.tables.keys())
    for table in common:
        found: list[str] = []
        old_keys, new_keys = before.foreign_keys.get(table, frozenset()), after.foreign_keys.get(table, frozenset())
        found += [lost(describe_foreign_key(table, k), direction) for k in sorted(old_keys - new_keys, key=repr)]
        found += [gained(describe_foreign_key(table, k), direction) for k in sorted(new_keys - old_keys, key=repr)]
        old_rules, new_rules = before.constraints.get(table, frozenset()), after.constraints.get(table, frozenset())
        found += [lost(_describe_constraint(table, c), direction) for c in sorted(old_rules - new_rules)]
        found += [gained(_describe_constraint(table, c), direction) for c in sorted(new_rules - old_rules)]
        if found:
            explained.add(table)
        lines.extend(found)
        if table not in explained and _comparable_sql(old[table]) != _comparable_sql(new[table]):
            was = [c.name for c in before.snapshot.tables[table].columns]
            now = [c.name for c in after.snapshot.tables[table].columns]
            if was != now and sorted(was) == sorted(now):
                lines.append(f"changed the column order of table {table} ({', '.join(was)} -> {', '.join(now)}): "
                             f"SQLite adds a column last, so a downgrade that re-adds a dropped one must rebuild "
                             f"the table (planner.rebuild) to put it back in place")
                continue
            lines.append(
                f"changed table {table} (its SQL differs beyond columns and keys: CHECK or COLLATE clauses?)"
                if direction == "rollback"
                else f"table {table} has different SQL (CHECK or COLLATE clauses?)"
            )
    return lines


def _describe(change: SchemaChange, direction: Direction) -> str:
    what = f"{change.kind} {change.qualified_name}"
    if change.action == "added":
        return gained(what, direction)
    if change.action == "removed":
        return lost(what, direction)
    if change.kind == "column":
        return (f"changed column {change.qualified_name}: {change.before} → {change.after}" if direction == "rollback"
                else f"column {change.qualified_name} is {change.after}, was {change.before}")
    return f"changed {what}" if direction == "rollback" else f"{what} differs"


def gained(what: str, direction: Direction) -> str:
    """How a difference the rollback (or re-apply) added is said: ``left X`` or ``X is new``."""
    # Present after the rollback but not before it: the downgrade forgot it.
    return f"left {what}" if direction == "rollback" else f"{what} is new"


def lost(what: str, direction: Direction) -> str:
    """How a difference the rollback (or re-apply) took is said: ``dropped X`` or ``X is missing``."""
    # Present before the apply but gone after the rollback: the downgrade took what it did not create.
    return f"dropped {what}" if direction == "rollback" else f"{what} is missing"


# The pieces ``planner.schema_drift`` compares a live schema with, under public names: one model, two uses.
materialize = _materialize
describe_constraint = _describe_constraint
comparable_sql = _comparable_sql


def user_objects(conn: sqlite3.Connection) -> list[str]:
    """Every table, index, trigger and view that is not SQLite's or the ledger's."""
    return capture(conn).names()



def broken_objects(conn: sqlite3.Connection) -> dict[str, str]:
    """Each view and trigger that no longer compiles, with SQLite's reason: ``{"view v": "no such table: x"}``.

    SQLite accepts ``CREATE VIEW`` over a table that is not there, and a
    ``DROP TABLE`` or a rebuild leaves the views and triggers that used it in
    place; they fail only when something compiles them, which may be a later
    migration's ``ALTER TABLE``. Preparing ``SELECT * FROM v LIMIT 0`` compiles
    a view; ``EXPLAIN`` of a statement that fires a trigger (nothing runs)
    compiles the trigger. When a statement fires several triggers and fails,
    each is compiled alone, the others dropped inside a savepoint undone at once.
    """
    from planner.engines.sqlite.sql import table_xinfo, tokens
    from planner.sql import quote_identifier

    found: dict[str, str] = {}
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type IN ('view', 'trigger') "
                        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type DESC, name").fetchall()
    for kind, name, _, _ in rows:
        if kind == "view":
            try:
                conn.execute(f"SELECT * FROM main.{quote_identifier(name)} LIMIT 0").fetchall()
            except sqlite3.Error as exc:
                found[f"view {name}"] = str(exc)
    triggers = [(name, table, sql or "") for kind, name, table, sql in rows if kind == "trigger"]
    for name, table, sql in triggers:
        if f"view {table}" in found:
            continue  # its view is broken already: that is the news
        event = next((t.name for t in tokens(sql) if t.name in ("insert", "update", "delete")), None)
        columns = [column for column, *_ in table_xinfo(conn, table)]
        quoted = quote_identifier(table)
        statement = {"insert": f"INSERT INTO main.{quoted} DEFAULT VALUES",
                     "delete": f"DELETE FROM main.{quoted}",
                     "update": f"UPDATE main.{quoted} SET " + ", ".join(
                         f"{quote_identifier(c)} = {quote_identifier(c)}" for c in columns)}.get(event or "")
        if statement is None or (event == "update" and not columns):
            continue
        siblings = [other for other, on, _ in triggers if on.lower() == table.lower() and other != name]
        try:
            conn.execute("EXPLAIN " + statement).fetchall()
            continue
        except sqlite3.Error as exc:
            reason = str(exc)
        if siblings:  # which of the table's triggers is it? compile this one alone
            conn.execute("SAVEPOINT apm_compiles")
            try:
                for other in siblings:
                    conn.execute(f"DROP TRIGGER main.{quote_identifier(other)}")
                conn.execute("EXPLAIN " + statement).fetchall()
                reason = ""
            except sqlite3.Error as exc:
                reason = str(exc)
            finally:
                conn.execute("ROLLBACK TO apm_compiles")
                conn.execute("RELEASE apm_compiles")
        if reason:
            found[f"trigger {name}"] = reason
    return found
