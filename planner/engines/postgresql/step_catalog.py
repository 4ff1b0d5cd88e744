r"""The catalog as a preview step left it, read in what the step changed rather than in the whole database.

Reading every table and column at the end of every step made a long
preview quadratic: 1,000 steps that each create one table spent 80% of
their time reading, and parsing, a catalog that grew by one table a step.
Now a step reads only the relations it created or changed:

- Each step runs in a savepoint of its own (``STEP_SAVEPOINT``), so every
  catalog row it inserts or updates carries a transaction id assigned
  during the step: newer than any assigned before it, in particular than
  the id of the log row the step before wrote last. Each reading notes
  that id (the newest log row's) for the next one. (Not the step's own log
  row's: a migration that leaves a savepoint of its own open has its log
  row written inside it, with an id newer than its earlier writes.)
- The relations whose ``pg_class`` row has a newer id (new, renamed,
  altered, truncated, with a new index or column: each of these writes
  the relation's own row), and, when ``pg_attribute`` had updates (a
  column dropped, renamed or retyped in place), those with such a column,
  are read again. Ids are compared with ``age()``, which counts from the
  transaction's own id and so survives wraparound. Rows a savepoint of
  the step before wrote may be read again: they read as unchanged.
- A deleted row leaves nothing to find. When the transaction's counters
  say ``pg_class`` lost rows (a relation dropped, or a table rewritten
  through a transient copy), the reading lists every relation's oid, and
  those the catalog held before the step that are not listed are gone.
  (``pg_attribute`` loses rows only with their relation.) When
  ``pg_namespace`` had updates (a schema renamed renames its relations
  without touching their rows), the catalog is read whole, as before.
  Counters only grow within a transaction, work undone by a savepoint
  included, so an undone change costs a lookup, never a missed change.
- Steps that only create relations or drop tables they counted need not
  be read one by one (``PgObserver.settle``): one reading covers several
  and tells which step wrote each row by its id (``Reading.writers``,
  ``Reading.steps``).

What another session commits meanwhile is read only where it lands in
these rows; the preview runs under the advisory lock, so no other runner
of this ledger can.

The preview's per-step readings, prepared on the server once per preview under names of our own.

psycopg prepares a statement once it has run five times, and forgets every
statement it prepared (``DEALLOCATE ALL``) when a statement it has not seen
before reports ``DROP`` or ``ALTER``: a dropped or altered object may change
what a prepared plan returns. In a preview every step's statement is new
text, so in a rollback (each step a ``DROP TABLE``) or a run of ``ALTER
TABLE`` steps nothing stayed prepared: the server parsed and planned the
step's catalog reading (``postgresql.step_catalog``, a 5 kB statement) and
the lock reading again at every step, more than half of its time in a
rollback of 500 (docs/performance.md, PostgreSQL).

So the runner turns psycopg's preparing off for the preview
(``prepare_threshold = None``, which also keeps it from ever sending
``DEALLOCATE ALL``), and the readings run as ``EXECUTE`` of a statement
this module ``PREPARE``\ s on first use. The name is new for each preview
(a process counter), so a preview never meets a statement of an earlier one
on the same connection: ``PREPARE`` is not undone by a rollback. A
migration's own ``DEALLOCATE`` (seen by the observer) or code run through
``conn.raw`` makes the set prepare again, under new names, before its next use.

The migration's statements are not prepared during a preview: each runs
once, and a data migration that repeats one thousands of times pays its
parsing (tens of microseconds) each time.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any

from planner.engines.postgresql.snapshot import (
    CATALOG_OF,
)
from planner.engines.postgresql.snapshot import GATES as OBJECT_GATES
from planner.engines.postgresql.snapshot import STEP_COLUMNS as OBJECT_COLUMNS
from planner.engines.postgresql.snapshot import Counters, Relation, Snapshot, read_counters, relations_of, take

_PREVIEWS = itertools.count(1)
_NAMED = re.compile(r"%\((\w+)\)s")


class Statement:
    """A statement with ``%(name)s`` placeholders, as ``PREPARE`` wants it: ``$n`` and their types."""

    def __init__(self, name: str, sql: str, types: dict[str, str] | None = None):
        order: list[str] = []

        def numbered(match: re.Match) -> str:
            if match.group(1) not in order:
                order.append(match.group(1))
            return f"${order.index(match.group(1)) + 1}"

        self.name = name
        # Sent without parameters, so psycopg leaves the text alone: its doubled %% become single again.
        self.text = _NAMED.sub(numbered, sql).replace("%%", "%")
        self.order = tuple(order)
        self.types = tuple((types or {})[key] for key in order)


class PreparedSet:
    """The statements one preview prepared on its connection, run by name."""

    def __init__(self) -> None:
        self._suffix = f"{os.getpid()}_{next(_PREVIEWS)}"
        self._names: dict[str, str] = {}

    def execute(self, conn: Any, statement: Statement, parameters: dict[str, Any] | None = None,
                then: str = "", ahead: str = "") -> Any:
        """A cursor holding ``statement``'s rows; prepared first when this preview has not yet.

        ``then``: statements without parameters sent behind it in the same round trip (one simple query), whose
        results follow (``nextset``): the preview opens the next step's savepoint this way. ``ahead``: statements
        sent before it, whose results the cursor skips (the count before a drop, ``observe.table_rows``).
        """
        # optional dependency: psycopg is installed with an extra
        import psycopg

        name = self._names.get(statement.name)
        if name is None:
            name = f"apm_{statement.name}_{self._suffix}"
            types = f" ({', '.join(statement.types)})" if statement.types else ""
            conn.execute(f"PREPARE {name}{types} AS {statement.text}")
            self._names[statement.name] = name
        # EXECUTE is a utility statement: its arguments cannot be bound parameters, so the client fills them in.
        cursor = psycopg.ClientCursor(conn)
        values = [(parameters or {})[key] for key in statement.order]
        arguments = f"({', '.join(['%s'] * len(values))})" if values else ""
        after = f"; {then.replace('%', '%%')}" if then else ""
        before = f"{ahead.replace('%', '%%')}; " if ahead else ""
        cursor.execute(f"{before}EXECUTE {name}{arguments}{after}", values or None)
        for _ in range(before.count(";")):
            cursor.nextset()
        return cursor

    def forget(self) -> None:
        """The migration may have deallocated them (``DEALLOCATE``, ``conn.raw``): prepare again on next use,
        under new names, since whether the old ones still exist is not known (and asking costs a round trip)."""
        self._names.clear()
        self._suffix = f"{os.getpid()}_{next(_PREVIEWS)}"


STEP_SAVEPOINT = "apm_preview_step"

_CLASS, _ATTRIBUTE, _NAMESPACE = ("'pg_catalog.pg_class'::regclass", "'pg_catalog.pg_attribute'::regclass",
                                  "'pg_catalog.pg_namespace'::regclass")


def _counted(what: str, table: str) -> str:
    return " + ".join(f"pg_stat_get_xact_tuples_{kind}({table})" for kind in what.split())


@dataclass(frozen=True)
class Gates:
    """The transaction's counters of the catalog tables, as far as a step-only reading needs them."""

    #: The id of the newest log row at the reading: what is newer was written after it.
    step: str | None
    class_writes: int  # inserts and updates: relations created or changed
    class_deletes: int  # relations dropped: invisible to a step-only reading, looked up by oid
    attribute_updates: int  # columns dropped, renamed or retyped in place
    namespace_updates: int  # schemas renamed: their relations' names change, their rows do not
    #: constraints, triggers and functions (``postgresql.objects``): each catalog's inserts and updates, all deletes
    trigger_writes: int = -1
    constraint_writes: int = -1
    function_writes: int = -1
    object_deletes: int = -1
    #: Whether an event trigger exists: it may run any statement after a ``CREATE``, so no reading waits.
    event_triggers: bool = True


_UNKNOWN = Gates(None, -1, -1, -1, -1)
_GATES = ", ".join((_counted("inserted updated", _CLASS), _counted("deleted", _CLASS),
                    _counted("updated", _ATTRIBUTE), _counted("updated", _NAMESPACE), OBJECT_GATES,
                    "EXISTS (SELECT FROM pg_event_trigger)"))
_WIDTH = 10  # the gates' columns, the step's id first
# One statement, the same text every step, so the server plans it once (``postgresql.prepared``): the newest
# log row's id, the gates, the oids of the relations written since the last reading's log row (%(step)s),
# the oids of all relations if some were dropped (else NULL), and the written ones in the user schemas as
# ``take`` reads them, one row per column (and one row of NULLs when there are none). A gate (the counter
# as the last reading left it) keeps a catalog table whose counters did not move from being scanned;
# each is a subquery, which PostgreSQL evaluates once. The arrays and the objects' JSON come on the first row
# only (``_first``): repeated on every row, a reading of 1,000 new tables sent its 1,000 oids 1,000 times
# (7 MB; the server's time to write them and the client's to parse them).
_FIRST = "CASE WHEN row_number() OVER () = 1 THEN {} END"
_STEP = f"""
WITH written AS (SELECT ARRAY(
    SELECT c.oid FROM pg_class c
    WHERE (SELECT {_counted("inserted updated", _CLASS)} > %(class_writes)s)
      AND age(c.xmin) < (SELECT age(%(step)s::xid))
    UNION SELECT a.attrelid FROM pg_attribute a
    WHERE (SELECT {_counted("updated", _ATTRIBUTE)} > %(attribute_updates)s)
      AND age(a.xmin) < (SELECT age(%(step)s::xid))
) AS oids)
SELECT (SELECT xmin::text FROM {{log}} ORDER BY id DESC LIMIT 1), {_GATES},
       {_FIRST.format("(SELECT oids::bigint[] FROM written)")},
       {_FIRST.format(f"CASE WHEN {_counted('deleted', _CLASS)} > %(class_deletes)s THEN ARRAY(SELECT oid::bigint "
                      "FROM pg_class) END")},
       {", ".join(_FIRST.format(column) for column in OBJECT_COLUMNS)},
       r.*
FROM (SELECT 1) one LEFT JOIN ({CATALOG_OF.format(only="c.oid = ANY((SELECT oids FROM written)::oid[])")
                                .replace("%", "%%")}) r ON TRUE
"""


def begin_step(after_another: bool) -> str:
    """The statements opening the step's savepoint (``after_another``: the last step's released first), sent in
    one round trip, or ahead of the step's first statement of its own (``PgObserver.open_step``).

    A prepared reading (``read_step(..., prepared=...)``) already opened it, behind the last step's reading.
    """
    return f"RELEASE SAVEPOINT {STEP_SAVEPOINT}; " * after_another + f"SAVEPOINT {STEP_SAVEPOINT}"


_PARAMETER_TYPES = {"step": "text", "class_writes": "bigint", "attribute_updates": "bigint", "class_deletes": "bigint",
                    "trigger_writes": "bigint", "constraint_writes": "bigint", "function_writes": "bigint",
                    "object_deletes": "bigint"}
_PREPARED: dict[str, Statement] = {}


def _prepared_step(log_table: str) -> Statement:
    """``_STEP`` for ``log_table``, as ``postgresql.prepared`` prepares it (one per ledger schema)."""
    if log_table not in _PREPARED:
        _PREPARED[log_table] = Statement("step_reading", _STEP.format(log=log_table), _PARAMETER_TYPES)
    return _PREPARED[log_table]


def _writers(step: str, log_table: str, steps: int) -> str:
    """Which transaction id wrote each catalog row newer than ``step`` (relations ``r``, constraints, triggers and
    functions ``o``), and the ids of the ``steps`` newest log rows (``l``): one per step whose reading waited."""
    newer = f"age(xmin) < age('{int(step)}'::xid)"  # our own reading's id: a number
    objects = " UNION ALL ".join(f"SELECT 'o', oid::bigint, xmin::text FROM {catalog} WHERE {newer}"
                                 for catalog in ("pg_constraint", "pg_trigger", "pg_proc"))
    return (f"SELECT 'r', oid::bigint, xmin::text FROM pg_class WHERE {newer} UNION ALL {objects} UNION ALL "
            f"(SELECT 'l', id, xmin::text FROM {log_table} WHERE {newer} ORDER BY id DESC LIMIT {steps})")


@dataclass
class Reading:
    """One step reading: the catalog now, the gates, the oids read again (``None``: all of them), and the
    constraints, triggers and functions written since the last reading with the oids of all that remain if
    some went (``postgresql.objects``; ``None``: read them whole)."""

    snapshot: Snapshot
    gates: Gates
    read: set[int] | None
    objects: tuple[list | None, list[int] | None] | None
    #: The relations read again that are still there, as they are now.
    relations: dict[int, Relation] = field(default_factory=dict)
    #: With ``read_step(..., steps=N)``: the id each written row carries ((kind, oid) -> id) and the ids of the N
    #: newest log rows, oldest first: which step wrote what (``PgObserver.settle``).
    writers: dict[tuple[str, int], str] | None = None
    steps: list[str] | None = None


def read_step(conn: Any, last: Snapshot, gates: Gates | None, log_table: str, counters: bool,
              prepared: PreparedSet | None = None, steps: int = 0) -> Reading:
    """The catalog as a step left it, read in what changed since ``gates``.

    ``last`` is the catalog as the step found it, ``gates`` the counters
    as the last reading left them (``None``: unknown, so the catalog is
    read whole); ``counters`` reads the row counters too, as ``take`` does.
    ``steps``: the reading covers that many steps whose readings waited, within the step under way: it says
    which step wrote what, and leaves the step's savepoint open.
    """
    since = gates or _UNKNOWN
    parameters = {"step": since.step, "class_writes": since.class_writes,
                  "attribute_updates": since.attribute_updates, "class_deletes": since.class_deletes,
                  "trigger_writes": since.trigger_writes, "constraint_writes": since.constraint_writes,
                  "function_writes": since.function_writes, "object_deletes": since.object_deletes}
    # ``prepared`` (the runner's preview): planned once per preview, whatever the steps drop or alter.
    if prepared is not None:
        # The next step's savepoint goes in the same round trip: the reading only reads, so the step's savepoint
        # can be released and the next one opened right behind it (the observer then does not open it again).
        # Within a step (``steps``) its savepoint stays; which step wrote what can be told only after a reading.
        then = (f"RELEASE SAVEPOINT {STEP_SAVEPOINT}; SAVEPOINT {STEP_SAVEPOINT}" if not steps else
                "" if since.step is None else _writers(since.step, log_table, steps))
        cursor = prepared.execute(conn, _prepared_step(log_table), parameters, then=then)
        rows = cursor.fetchall()
    else:
        cursor = conn.cursor()
        cursor.execute(_STEP.format(log=log_table), parameters)
        rows = cursor.fetchall()
    with cursor:
        now = Gates(*rows[0][:_WIDTH])
        oids, present, written, remaining = rows[0][_WIDTH:_WIDTH + 4]
        if (gates is None or gates.step is None or now.step is None
                or now.namespace_updates > gates.namespace_updates):
            return Reading(take(conn, counters=counters), now, None, None)
        changed = set(oids)
        reading = Reading(last, now, changed, (written, remaining))
        if steps and cursor.nextset():
            writers = cursor.fetchall()
            reading.writers = {(kind, oid): xid for kind, oid, xid in writers if kind != "l"}
            reading.steps = [xid for kind, _, xid in sorted(w for w in writers if w[0] == "l")]
        start = _WIDTH + 4
        reading.relations = relations_of([row[start:] for row in rows if row[start] is not None])
        if present is not None:  # relations were dropped: those no longer listed
            changed.update(last.relations.keys() - set(present))
        found = read_counters(cursor) if counters else Counters()
    reading.snapshot = last.changed(reading.relations, changed, found)
    return reading
