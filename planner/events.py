"""What a run reports as it goes: typed events, and the summary of a whole run.

The executor never prints. It hands each event to a callback (or yields it),
and whoever runs it decides what a person sees: a line per step, a progress
bar, JSON. Typed events rather than strings (Django's ``"apply_start"``) let a
caller match on the class and read the fields it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Union

from planner.plan import Plan, Step


@dataclass(frozen=True)
class StepStarted:
    """Step ``index`` of ``total`` (1-based) is about to take the write lock."""

    step: Step
    index: int
    total: int


@dataclass(frozen=True)
class StepFinished:
    """The step ran and was committed (in atomic mode: ran; the commit comes at the end)."""

    step: Step
    index: int
    total: int
    duration_ms: float
    #: What the migration printed (``print()``), captured so it never reaches stdout (planner.output_capture).
    output: str = ""


@dataclass(frozen=True)
class StepSkipped:
    """Inside the lock the step turned out to be done already (by another process)."""

    step: Step
    index: int
    total: int
    reason: str


@dataclass(frozen=True)
class StepFailed:
    """The step failed and was rolled back; ``error`` is what ``run`` raises next."""

    step: Step
    index: int
    total: int
    error: Exception
    #: What the migration printed before it failed.
    output: str = ""


@dataclass(frozen=True)
class Replanned:
    """Another process changed the ledger under the plan; the rest was planned again from the ledger as it is.

    ``reason`` is the refusal the old plan met (``LedgerChanged``'s message);
    ``plan`` is the new plan, possibly empty when the other process did the work.
    """

    reason: str
    plan: Plan


Event = Union[StepStarted, StepFinished, StepSkipped, StepFailed, Replanned]


@dataclass
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
