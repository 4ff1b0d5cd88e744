"""What a run reports as it goes: typed events, and the summary of a whole run.

The executor never prints. It hands each event to a callback (or yields it),
and whoever runs it decides what a person sees: a line per step, a progress
bar, JSON. Typed events rather than strings (Django's ``"apply_start"``) let a
caller match on the class and read the fields it needs.

Telling whoever runs the planner that it is waiting for another process's lock.

A runner waits for the database's lock (SQLite's write lock, PostgreSQL's
advisory lock) for up to ``--busy-timeout``, 30 s by default. Silent, that
wait looks like a hang. Each engine's wait loop keeps a ``Wait``; once it
has lasted ``NOTICE_AFTER`` seconds, the listener the command registered is
told, once per wait. The library never prints: without a listener nothing
is said.

What a migration prints, kept for the caller instead of written to stdout.

APM's migrations report progress with ``print()`` (emoji included). Written
straight to stdout, that text would land in the middle of ``--json`` output,
and the library never prints. So the executor runs migration code (and the
loader runs a module's top level) with ``sys.stdout`` redirected to a buffer;
the text travels on the step's event (``StepFinished.output``,
``StepFailed.output``) and the CLI decides where a person sees it
(docs/coming-from-apm.md). Only Python-level writes to ``sys.stdout`` are
caught; a subprocess writing to file descriptor 1 is not.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Union

from planner import deferred_dataclass
from planner.plan import Plan, Step


@dataclass(frozen=True)
class _StepEvent:
    """Something that happened to step ``index`` of ``total`` (1-based)."""

    step: Step
    index: int
    total: int


@dataclass(frozen=True)
class StepStarted(_StepEvent):
    """Step ``index`` of ``total`` (1-based) is about to take the write lock."""


@dataclass(frozen=True)
class StepFinished(_StepEvent):
    """The step ran and was committed (in atomic mode: ran; the commit comes at the end)."""

    duration_ms: float
    #: What the migration printed (``print()``), captured so it never reaches stdout (planner.events).
    output: str = ""


@deferred_dataclass(frozen=True)
class StepSkipped(_StepEvent):
    """Inside the lock the step turned out to be done already (by another process)."""

    reason: str


@deferred_dataclass(frozen=True)
class StepFailed(_StepEvent):
    """The step failed and was rolled back; ``error`` is what ``run`` raises next."""

    error: Exception
    #: What the migration printed before it failed.
    output: str = ""


@deferred_dataclass(frozen=True)
class Replanned:
    """Another process changed the ledger under the plan; the rest was planned again from the ledger as it is.

    ``reason`` is the refusal the old plan met (``LedgerChanged``'s message);
    ``plan`` is the new plan, possibly empty when the other process did the work.
    """

    reason: str
    plan: Plan


Event = Union[StepStarted, StepFinished, StepSkipped, StepFailed, Replanned]


@deferred_dataclass()
class RunResult:
    """What a run did: the steps committed and the steps found already done, in order."""

    plan: Plan
    done: list[Step] = field(default_factory=list)
    skipped: list[Step] = field(default_factory=list)
    #: How many times the run planned again because another process changed the ledger.
    replans: int = 0

    def count(self, event: Event) -> None:
        """Note a step's outcome as its event goes by."""
        if isinstance(event, StepFinished):
            self.done.append(event.step)
        elif isinstance(event, StepSkipped):
            self.skipped.append(event.step)


def emit(on_event: Callable[[Event], None] | None, event: Event) -> None:
    """Tell ``on_event`` about ``event``, when anyone listens."""
    if on_event is not None:
        on_event(event)


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


class StepOutput:
    """The text printed by the migration code run so far, until someone ``take``s it."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Redirect ``sys.stdout`` for the block; what was printed is kept even when the block raises."""
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                yield
        finally:
            self._parts.append(buffer.getvalue())

    def take(self) -> str:
        """Everything captured since the last ``take``, then forget it."""
        text, self._parts = "".join(self._parts), []
        return text

