"""The catalog as a preview step left it, read in what the step changed rather than in the whole database.

Reading every table and column at the end of every step made a long
preview quadratic: 1,000 steps that each create one table spent 80% of
their time reading, and parsing, a catalog that grew by one table a step.
Now a step reads only the relations it created or changed:

- Each step runs in a savepoint of its own (``STEP_SAVEPOINT``), so every
  catalog row it inserts or updates carries that subtransaction's id, or a
  newer one (a savepoint inside the step; PostgreSQL gives a parent its id
  before its children). The step's log row, written in the same
  savepoint, tells the id. Rows of earlier steps carry older ids.
- The relations whose ``pg_class`` row has such an id (new, renamed,
  altered, truncated, with a new index or column: each of these writes
  the relation's own row), and, when ``pg_attribute`` had updates or
  deletes (a column dropped, renamed or retyped in place), those with
  such a column, are read again. Ids are compared with ``age()``, which
  counts from the transaction's own id and so survives wraparound.
- A deleted row leaves nothing to find. When the transaction's counters
  say ``pg_class`` lost rows (a relation dropped, or a table rewritten
  through a transient copy) or ``pg_namespace`` had updates or deletes (a
  schema renamed or dropped renames or drops its relations without
  touching their rows), the catalog is read whole, as before. Counters
  only grow within a transaction, work undone by a savepoint included, so
  an undone change costs a whole reading, never a missed one.

What another session commits meanwhile is read only where it lands in
these rows; the preview runs under the advisory lock, so no other runner
of this ledger can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from planner.engines.pg_snapshot import (
    CATALOG_OF,
    Counters,
    Snapshot,
    read_counters,
    relations_of,
    take,
)

STEP_SAVEPOINT = "apm_preview_step"
_WRITTEN = CATALOG_OF.format(only="c.oid = ANY(%s::oid[])").replace("%'", "%%'")

_CLASS, _ATTRIBUTE, _NAMESPACE = ("'pg_catalog.pg_class'::regclass", "'pg_catalog.pg_attribute'::regclass",
                                  "'pg_catalog.pg_namespace'::regclass")


def _counted(what: str, table: str) -> str:
    return " + ".join(f"pg_stat_get_xact_tuples_{kind}({table})" for kind in what.split())


@dataclass(frozen=True)
class Gates:
    """The transaction's counters of the catalog tables, as far as a step-only reading needs them."""

    class_writes: int  # inserts and updates: relations created or changed
    class_deletes: int  # relations dropped: invisible to a step-only reading
    attribute_changes: int  # updates and deletes: columns dropped, renamed or retyped in place
    namespace_changes: int  # updates and deletes: schemas renamed or dropped, invisible too


_GATES = ", ".join((_counted("inserted updated", _CLASS), _counted("deleted", _CLASS),
                    _counted("updated deleted", _ATTRIBUTE), _counted("updated deleted", _NAMESPACE)))


def _changed(log_table: str, gates: Gates | None) -> str:
    """The step's id, the gates, and the oids of the relations the step wrote (see the module's docstring).

    A catalog table whose counters did not move since the last step is
    not scanned: each gate is a subquery, which PostgreSQL evaluates once.
    """
    def moved(what: str, table: str, since: int | None) -> str:
        return "TRUE" if since is None else f"(SELECT {_counted(what, table)} > {since})"

    classes = moved("inserted updated", _CLASS, None if gates is None else gates.class_writes)
    columns = moved("updated deleted", _ATTRIBUTE, None if gates is None else gates.attribute_changes)
    return f"""
WITH step AS (SELECT xmin AS x FROM {log_table} ORDER BY id DESC LIMIT 1)
SELECT (SELECT x::text FROM step), {_GATES},
       ARRAY(SELECT c.oid::bigint FROM pg_class c WHERE {classes} AND age(c.xmin) <= (SELECT age(x) FROM step)
             UNION SELECT a.attrelid::bigint FROM pg_attribute a
                   WHERE {columns} AND age(a.xmin) <= (SELECT age(x) FROM step))
"""


def read_step(conn: Any, last: Snapshot, gates: Gates | None, log_table: str,
              counters: bool) -> tuple[Snapshot, Gates, set[int] | None]:
    """End the step's savepoint; the catalog now, the gates, and the oids read again (``None``: all of them).

    ``last`` is the catalog as the step found it; ``counters`` reads the
    row counters too, as ``take`` does.
    """
    with conn.cursor() as cursor:
        cursor.execute(f"RELEASE SAVEPOINT {STEP_SAVEPOINT};" + _changed(log_table, gates))
        cursor.nextset()
        step, *counted, oids = cursor.fetchone()
        now = Gates(*counted)
        if (step is None or gates is None or now.class_deletes > gates.class_deletes
                or now.namespace_changes > gates.namespace_changes):
            return take(conn, counters=counters), now, None
        written = set(oids)
        read, found = {}, Counters()
        if written:  # the same text every step: prepared by the server once
            cursor.execute(_WRITTEN, (sorted(written),))
            read = relations_of(cursor.fetchall())
        if counters:
            found = read_counters(cursor)
    return last.changed(read, written, found), now, written
