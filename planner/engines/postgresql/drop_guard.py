"""Statements that may drop tables or columns they do not name: run, compare, and if need be count and run again.

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

from dataclasses import dataclass, field
from typing import Any

from planner.engines.postgresql.measure import dropped_column, table_rows
from planner.engines.postgresql.row_tally import RowTally
from planner.engines.postgresql.snapshot import read_counters, take, vanished_columns
from planner.preview import DataImpact

SAVEPOINT = "apm_preview_watch"


@dataclass
class Accounted:
    """Tables (oids) and columns (table oid, name) whose loss the step's impact already holds, and tables a
    statement the observer read may give a new storage file (``TRUNCATE``, counted; ``ALTER TABLE``, rows kept)."""

    tables: set[int] = field(default_factory=set)
    columns: set[tuple[int, str]] = field(default_factory=set)
    rewritten: set[int] = field(default_factory=set)


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
