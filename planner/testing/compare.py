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

Rows are not compared: seed data and data migrations legitimately change
them, and a downgrade's job is to restore the schema.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from planner.schema import SchemaChange, SchemaSnapshot, snapshot

#: One foreign key: (columns, referenced table, referenced columns, ON UPDATE, ON DELETE, MATCH).
ForeignKey = tuple[tuple[str, ...], str, tuple[str | None, ...], str, str, str]
#: One constraint backed by an automatic index: (origin "u" or "pk", columns).
Constraint = tuple[str, tuple[str, ...]]

Direction = Literal["rollback", "re-apply"]


@dataclass(frozen=True)
class SchemaState:
    """A schema as the stairway compares it: the snapshot, plus keys and constraints per table."""

    snapshot: SchemaSnapshot
    foreign_keys: Mapping[str, frozenset[ForeignKey]]
    constraints: Mapping[str, frozenset[Constraint]]

    @property
    def objects(self) -> list[str]:
        """``table orders``, ``index orders_by_date``...: every user object, for "what is left" checks."""
        found = [f"table {name}" for name in sorted(self.snapshot.tables)]
        for kind, names in (("index", self.snapshot.indexes), ("trigger", self.snapshot.triggers),
                            ("view", self.snapshot.views)):
            found.extend(f"{kind} {name}" for name in sorted(names))
        return found


def capture(conn: sqlite3.Connection) -> SchemaState:
    """Read the schema of ``conn`` (without counting rows), with its foreign keys and constraints."""
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
    return SchemaState(shape, foreign_keys, constraints)


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
    from planner.schema import diff

    lines: list[str] = []
    explained: set[str] = set()  # tables whose difference is already named in detail
    for change in diff(before.snapshot, after.snapshot):
        if change.kind == "rows":
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
        found += [_lost(describe_foreign_key(table, k), direction) for k in sorted(old_keys - new_keys, key=repr)]
        found += [_gained(describe_foreign_key(table, k), direction) for k in sorted(new_keys - old_keys, key=repr)]
        old_rules, new_rules = before.constraints.get(table, frozenset()), after.constraints.get(table, frozenset())
        found += [_lost(_describe_constraint(table, c), direction) for c in sorted(old_rules - new_rules)]
        found += [_gained(_describe_constraint(table, c), direction) for c in sorted(new_rules - old_rules)]
        if found:
            explained.add(table)
        lines.extend(found)
        if table not in explained and _comparable_sql(before.snapshot.tables[table].sql) != _comparable_sql(
            after.snapshot.tables[table].sql
        ):
            lines.append(
                f"changed table {table} (its SQL differs beyond columns and keys: CHECK or COLLATE clauses?)"
                if direction == "rollback"
                else f"table {table} has different SQL (CHECK or COLLATE clauses?)"
            )
    return lines


def _describe(change: SchemaChange, direction: Direction) -> str:
    what = f"{change.kind} {change.qualified_name}"
    if change.action == "added":
        return _gained(what, direction)
    if change.action == "removed":
        return _lost(what, direction)
    if change.kind == "column":
        return (f"changed column {change.qualified_name}: {change.before} → {change.after}" if direction == "rollback"
                else f"column {change.qualified_name} is {change.after}, was {change.before}")
    return f"changed {what}" if direction == "rollback" else f"{what} differs"


def _gained(what: str, direction: Direction) -> str:
    # Present after the rollback but not before it: the downgrade forgot it.
    return f"left {what}" if direction == "rollback" else f"{what} is new"


def _lost(what: str, direction: Direction) -> str:
    # Present before the apply but gone after the rollback: the downgrade took what it did not create.
    return f"dropped {what}" if direction == "rollback" else f"{what} is missing"


def user_objects(conn: sqlite3.Connection) -> list[str]:
    """Every table, index, trigger and view that is not SQLite's or the ledger's."""
    return capture(conn).objects

