"""Rows a step deleted or updated that no statement the observer read accounts for, from the server's counters.

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
"""

from __future__ import annotations

from typing import Any

from planner.engines.postgresql.measure import ancestors
from planner.engines.postgresql.snapshot import Counters
from planner.preview import DataImpact


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
                    impact.append(DataImpact(kind, names[oid], None, count=count))  # type: ignore[arg-type]
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
