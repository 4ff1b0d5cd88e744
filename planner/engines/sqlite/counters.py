"""Counting, during a SQLite preview, the rows triggers delete and the values an UPDATE changes, as they change.

A statement's ``rowcount`` tells only what it did to its own target. What
it does to each column, and what its triggers delete, is counted by TEMP
triggers (per connection, gone with it, dropped at the end of each step)
into a TEMP table, per table, column and kind:

* ``overwritten``: a value that existed before the plan and was not NULL,
  whatever it was (a default is a value like any other): loss;
* ``set``: a NULL filled in, or a value the plan wrote (a table it created,
  a column it added, then backfilled; ``effects.PlanWrites``): not loss;
* ``deleted``: a row a trigger deleted.
"""

from __future__ import annotations

import sqlite3

from planner.sql import quote_identifier

_COUNTS = "apm_preview_counts"  # a TEMP table: per-connection, gone when the connection closes


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class ValueCounters:
    """The TEMP counters of one preview connection, set up lazily: a step that updates nothing pays nothing."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._triggers: list[str] = []
        self._keys: list[tuple[str, str]] = []  # what each of ``_triggers`` counts
        self._counted: set[tuple[str, str]] = set()
        self._ready = False
        self._serial = 0  # names are never reused within a connection: a rolled-back one may come back

    def deletes(self, table: str) -> None:
        """Count the rows deleted from ``table`` (by a trigger: ``rowcount`` does not see them)."""
        self._add(table, "", f"AFTER DELETE ON main.{quote_identifier(table)}", "'deleted'")

    def updates(self, table: str, column: str, written_by_plan: bool) -> None:
        """Count the values of ``table.column`` an UPDATE changes; all as ``set`` if the plan wrote the column."""
        quoted = quote_identifier(column)
        kind = "'set'" if written_by_plan else f"CASE WHEN OLD.{quoted} IS NULL THEN 'set' ELSE 'overwritten' END"
        self._add(table, column, f"AFTER UPDATE OF {quoted} ON main.{quote_identifier(table)} "
                                 f"WHEN OLD.{quoted} IS NOT NEW.{quoted}", kind)

    def take(self) -> dict[tuple[str, str, str], int]:
        """What the step's counters counted, per (table, column, kind); the counters are removed."""
        counts: dict[tuple[str, str, str], int] = {}
        if self._ready:
            rows = self.conn.execute(f"SELECT tbl, col, kind, n FROM temp.{_COUNTS}").fetchall()
            self.conn.execute(f"DELETE FROM temp.{_COUNTS}")
            counts = {(table, column, kind): n for table, column, kind, n in rows}
        for name in self._triggers:
            self.conn.execute(f"DROP TRIGGER IF EXISTS temp.{quote_identifier(name)}")
        self._triggers.clear()
        self._keys.clear()
        self._counted.clear()
        return counts

    def forget(self) -> None:
        """The step failed: its rollback removed the counters with everything else."""
        self._triggers.clear()
        self._keys.clear()
        self._counted.clear()
        self._ready = False

    def rolled_back(self) -> None:
        """The migration rolled back to one of its savepoints: what was made since (the TEMP table, triggers) is
        gone with the rest, so it is made again when next needed; what was counted before it stays counted."""
        if not self._triggers and not self._ready:
            return
        present = {name for (name,) in self.conn.execute("SELECT name FROM temp.sqlite_master")}
        kept = [(name, key) for name, key in zip(self._triggers, self._keys) if name in present]
        self._triggers = [name for name, _ in kept]
        self._keys = [key for _, key in kept]
        self._counted = set(self._keys)
        self._ready = self._ready and _COUNTS in present

    def _add(self, table: str, column: str, when: str, kind: str) -> None:
        if (table, column) in self._counted:
            return
        if not self._ready:
            self.conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_COUNTS} (tbl TEXT NOT NULL, col TEXT NOT NULL, "
                              "kind TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (tbl, col, kind))")
            self.conn.execute(f"DELETE FROM temp.{_COUNTS}")
            self._ready = True
        self._counted.add((table, column))
        name = f"apm_preview_{self._serial}"
        self._serial += 1
        self._triggers.append(name)
        self._keys.append((table, column))
        self.conn.execute(
            f"CREATE TEMP TRIGGER {quote_identifier(name)} {when} BEGIN "
            f"INSERT INTO {_COUNTS} VALUES ({_literal(table)}, {_literal(column)}, {kind}, 1) "
            f"ON CONFLICT (tbl, col, kind) DO UPDATE SET n = n + 1; END"
        )
