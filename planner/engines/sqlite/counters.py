"""Counting, during a SQLite preview, the rows triggers delete and the values an UPDATE changes, as they change.

A statement's ``rowcount`` tells only what it did to its own target. What
it does to each column, and what its triggers delete, is counted by TEMP
triggers (per connection, gone with it, dropped at the end of each step),
per table, column and kind:

* ``overwritten``: a value that existed before the plan and was not NULL,
  whatever it was (a default is a value like any other): loss;
* ``set``: a NULL filled in, or a value the plan wrote (a table it created,
  a column it added, then backfilled; ``effects.PlanWrites``): not loss;
* ``deleted``: a row a trigger deleted.

Why the counts live in Python: a trigger body that writes a TEMP table
costs a write to the TEMP database for every row (a data migration of
50,000 single-row UPDATEs took 1.5x its unwatched run). Here the trigger's
``WHEN`` calls a Python function that adds one to a list and returns NULL,
so the body never runs and nothing is written. SQLite's undo does not reach
a Python list, so the counts follow it by hand, from what the observer sees:

* a statement that fails: SQLite undoes what it did (``ABORT``, the
  default) unless its conflict is resolved by ``FAIL`` (``OR FAIL``, a
  constraint's ``ON CONFLICT FAIL``, a trigger's ``RAISE(FAIL)``), which
  keeps the rows changed before the failure. ``changes()`` tells the two
  apart: SQLite sets it to the rows the failed statement kept, 0 when it
  undid them (``total_changes`` cannot: it keeps what triggers did even
  when the statement is undone). So the counts go back to where the
  statement found them unless it kept rows. An ``executemany`` that fails
  keeps its counts: the statements before the failing one are kept, and
  what the failing one counted before SQLite undid it cannot be told apart,
  so the preview may then report more than is lost, never less;
* ``SAVEPOINT``, ``RELEASE`` and ``ROLLBACK TO``: the counts are kept per
  savepoint, so a rollback to one restores the counts it was made with
  (a savepoint older than the step restores none: nothing of the step is
  left), and triggers made since it, which the rollback removed too, are
  made again when next needed;
* a step that fails: everything is forgotten, as the rollback forgets it.
"""

from __future__ import annotations

import sqlite3

from planner.sql import quote_identifier

#: The SQL function the triggers' ``WHEN`` calls (per connection, like the TEMP triggers).
FUNCTION = "apm_preview_count"
_KINDS = ("set", "overwritten")  # slot offsets 0 and 1 of an UPDATE counter; a DELETE counter uses offset 0


class ValueCounters:
    """The counters of one preview connection, set up lazily: a step that updates nothing pays nothing."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        #: The counts, two slots per counted (table, column); the SQL function adds to it in place. Changed
        #: only in place (the function and the observer hold it): empty while the step counts nothing.
        self.tally: list[int] = []
        self._slots: dict[tuple[str, str], int] = {}  # first slot of each key, for the step
        self._triggers: dict[tuple[str, str], str] = {}  # the live trigger of each key
        self._savepoints: list[tuple[str, list[int]]] = []  # (name, counts when it was made), innermost last
        self._mark: list[int] | None = None  # the counts before this statement
        self._registered = False
        self._serial = 0  # names are never reused within a connection: a rolled-back one may come back

    # -- what to count ---------------------------------------------------------------------

    def deletes(self, table: str) -> None:
        """Count the rows deleted from ``table`` (by a trigger: ``rowcount`` does not see them)."""
        key = (table, "")
        if key not in self._triggers:
            slot = self._slot(key)
            self._create(key, f"AFTER DELETE ON main.{quote_identifier(table)} WHEN {FUNCTION}({slot})")

    def updates(self, table: str, column: str, written_by_plan: bool) -> None:
        """Count the values of ``table.column`` an UPDATE changes; all as ``set`` if the plan wrote the column."""
        key = (table, column)
        if key in self._triggers:
            return
        slot = self._slot(key)
        quoted = quote_identifier(column)
        which = str(slot) if written_by_plan else f"{slot} + (OLD.{quoted} IS NOT NULL)"
        self._create(key, f"AFTER UPDATE OF {quoted} ON main.{quote_identifier(table)} "
                          f"WHEN OLD.{quoted} IS NOT NEW.{quoted} AND {FUNCTION}({which})")

    # -- following SQLite's undo -------------------------------------------------------------

    def statement_starts(self) -> None:
        """A statement of the migration is about to run: remember the counts, to undo them if it fails."""
        self._mark = self.tally.copy() if self.tally else None

    def statement_failed(self, many: bool) -> None:
        """The statement (``many``: the ``executemany``) raised: its counts go unless SQLite kept some of its
        changes (``FAIL``), or the ``executemany`` ran some statements before the failing one."""
        mark, self._mark = self._mark, None
        if mark is None or many or self.tally == mark:
            return
        # No statement ran since the failed one: changes() is still what SQLite set for it.
        if not self.conn.execute("SELECT changes()").fetchone()[0]:
            self._restore(mark)

    def savepoint(self, operation: str, name: str) -> None:
        """The migration's ``SAVEPOINT`` / ``RELEASE`` / ``ROLLBACK TO`` ran (``operation``: SQLite's
        authorizer word, ``BEGIN``, ``RELEASE`` or ``ROLLBACK``)."""
        name = name.lower()  # SQLite compares savepoint names without case
        operation = operation.upper()
        if operation == "BEGIN":
            self._savepoints.append((name, self.tally.copy()))
            return
        where = next((i for i in range(len(self._savepoints) - 1, -1, -1) if self._savepoints[i][0] == name), None)
        if operation == "RELEASE":
            if where is not None:
                del self._savepoints[where:]
            return
        if operation != "ROLLBACK":
            return
        if where is None:  # made before this step: the step's work is undone, its counts with it
            self._savepoints.clear()
            self._restore([])
        else:
            del self._savepoints[where + 1:]  # ROLLBACK TO keeps the savepoint itself
            self._restore(self._savepoints[where][1])
        self._triggers_rolled_back()

    # -- the step's end --------------------------------------------------------------------

    def take(self) -> dict[tuple[str, str, str], int]:
        """What the step's counters counted, per (table, column, kind); the counters are removed."""
        counts: dict[tuple[str, str, str], int] = {}
        tally = self.tally
        for (table, column), slot in self._slots.items():
            kinds = _KINDS if column else ("deleted",)
            for offset, kind in enumerate(kinds):
                if tally[slot + offset]:
                    counts[(table, column, kind)] = tally[slot + offset]
        for name in self._triggers.values():
            self.conn.execute(f"DROP TRIGGER IF EXISTS temp.{quote_identifier(name)}")
        self.forget()
        return counts

    def forget(self) -> None:
        """The step failed (its rollback removed the triggers with everything else), or its counts were taken."""
        self.tally.clear()  # in place: the SQL function holds this list
        self._slots.clear()
        self._triggers.clear()
        self._savepoints.clear()
        self._mark = None

    # -- inside --------------------------------------------------------------------------------

    def _slot(self, key: tuple[str, str]) -> int:
        slot = self._slots.get(key)
        if slot is None:
            if self._mark is None and not self.tally:
                self._mark = []  # the statement about to run is the first counted one: nothing counted before it
            slot = self._slots[key] = len(self.tally)
            self.tally.extend((0, 0))
        return slot

    def _restore(self, counts: list[int]) -> None:
        """Put the counts back as they were (slots made since start again from zero)."""
        self.tally[:] = counts + [0] * (len(self.tally) - len(counts))

    def _triggers_rolled_back(self) -> None:
        """Triggers made since the savepoint are gone with the rest: they are made again when next needed."""
        if self._triggers:
            present = {name for (name,) in self.conn.execute("SELECT name FROM temp.sqlite_master")}
            self._triggers = {key: name for key, name in self._triggers.items() if name in present}

    def _create(self, key: tuple[str, str], when: str) -> None:
        if not self._registered:
            tally = self.tally

            def count(slot: int) -> None:
                tally[slot] += 1  # NULL: the WHEN is false, so the trigger's body never runs

            self.conn.create_function(FUNCTION, 1, count)
            self._registered = True
        name = f"apm_preview_{self._serial}"
        self._serial += 1
        self._triggers[key] = name
        self.conn.execute(f"CREATE TEMP TRIGGER {quote_identifier(name)} {when} BEGIN SELECT NULL; END")
