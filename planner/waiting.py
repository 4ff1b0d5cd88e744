"""Telling whoever runs the planner that it is waiting for another process's lock.

A runner waits for the database's lock (SQLite's write lock, PostgreSQL's
advisory lock) for up to ``--busy-timeout``, 30 s by default. Silent, that
wait looks like a hang. Each engine's wait loop keeps a ``Wait``; once it
has lasted ``NOTICE_AFTER`` seconds, the listener the command registered is
told, once per wait. The library never prints: without a listener nothing
is said.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds of waiting before the listener is told: shorter waits are ordinary and not worth a line.
NOTICE_AFTER = 1.0

#: ``listener(database, limit)``: ``database`` as it may be shown (a path, or a URL without its password).
Listener = Callable[[str, float], None]
_listener: Listener | None = None


def listen(listener: Listener | None) -> None:
    """Register the one listener (``None``: nobody); the CLI prints a line."""
    global _listener
    _listener = listener


class Wait:
    """One wait for a lock; ``tick()`` at each slice of it."""

    def __init__(self, database: str, limit: float):
        self.database, self.limit = database, limit
        self.started = time.monotonic()
        self.told = False

    def tick(self) -> None:
        if not self.told and _listener is not None and time.monotonic() - self.started >= NOTICE_AFTER:
            self.told = True
            _listener(self.database, self.limit)
