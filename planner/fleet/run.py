"""Running one request on many databases: a few at a time, canaries first, every outcome journaled.

Each database runs through ``planner.fleet.member_run.run_member``: the
single-database run path, as ``apm migrate`` takes it. This module only
decides which database runs when, and records each outcome as it ends.

The catalog is loaded once by the caller. Databases run ``jobs`` at a time
in worker processes forked from this one, so each inherits the catalog
without loading it again and runs its migrations on its own core (migration
code and the preview's watching are Python, which threads would serialize).
With ``jobs=1`` everything runs in this process.

Scheduling: canaries (if any) first, then the rest only if every canary
succeeded; after a failure no further database is started unless
``continue_on_error`` (a refusal, where nothing ran, stops nothing: each
database's plan is its own); ``stop()`` (Ctrl-C) stops starting new ones while the
running ones finish. The library never prints: the caller hears of each
database through ``on_event``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from planner.fleet import member_run
from planner.fleet.member_run import (  # noqa: F401 (the outcomes and the request are named from here too)
    APPLIED,
    FAILED,
    NOT_STARTED,
    NOTHING_TO_DO,
    REFUSED,
    REHEARSED,
    ROLLED_BACK,
    SKIPPED,
    SUCCEEDED,
    MemberOutcome,
    Request,
    one_line,
    run_member,
)
from planner.fleet.members import Member

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.fleet.journal import Journal
# --------------------------------------------------------------------------
# The fleet
# --------------------------------------------------------------------------


#: Why a run stopped after a member failed (the command adds how to run them all anyway).
STOPPED_BY_FAILURE = "failed, so no further database was started"

@dataclass(frozen=True)
class MemberStarted:
    member: Member
    phase: str


@dataclass(frozen=True)
class MemberFinished:
    outcome: MemberOutcome


FleetEvent = MemberStarted | MemberFinished


@dataclass
class FleetResult:
    """Every member's outcome, in fleet order, and why the run stopped early (if it did)."""

    outcomes: list[MemberOutcome]
    stopped: str | None = None
    interrupted: bool = False

    @property
    def failed(self) -> list[MemberOutcome]:
        return [o for o in self.outcomes if o.outcome == FAILED]

    @property
    def refused(self) -> list[MemberOutcome]:
        return [o for o in self.outcomes if o.outcome == REFUSED]

    @property
    def unconfirmed(self) -> list[MemberOutcome]:
        return [o for o in self.outcomes if o.unconfirmed]

    @property
    def ok(self) -> bool:
        return all(o.succeeded or o.outcome == REHEARSED for o in self.outcomes)

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {"databases": [o.to_json() for o in self.outcomes],
                "summary": {k.replace(" ", "_"): v for k, v in self.summary().items()},
                "stopped": self.stopped, "interrupted": self.interrupted}


def canaries(members: Sequence[Member], canary: str | None) -> list[Member]:
    """The members ``--canary`` names: the first K for a number, else those whose path or URL match the pattern."""
    if not canary:
        return []
    if canary.isdigit():  # 0: no canary
        return list(members[:int(canary)])
    return [m for m in members if fnmatch.fnmatch(m.display, canary) or fnmatch.fnmatch(m.real, canary)]


class FleetRun:
    """One request over many members: ``run`` schedules them and returns every outcome.

    ``confirm(outcomes)`` is asked, once per phase, about the members whose
    plan destroys data that was not confirmed (``--yes`` not given): each
    outcome holds the loss lines shown; a yes re-runs exactly those members,
    each committed only if it destroys exactly what was shown.
    """

    def __init__(self, catalog: Catalog, request: Request, *, jobs: int = 1, continue_on_error: bool = False,
                 journal: Journal | None = None, on_event: Callable[[FleetEvent], None] | None = None,
                 confirm: Callable[[list[MemberOutcome]], bool] | None = None):
        self.catalog, self.request, self.jobs = catalog, request, max(1, jobs)
        self.continue_on_error, self.journal = continue_on_error, journal
        self.on_event, self.confirm = on_event, confirm
        self._stop: str | None = None
        self.interrupted = False

    def stop(self, why: str = "interrupted") -> None:
        """Start no further database; the running ones finish (called from a signal handler)."""
        self.interrupted = True
        self._stop = self._stop or why

    def run(self, members: Sequence[Member], *, canary: Sequence[Member] = ()) -> FleetResult:
        chosen = set(canary)
        first = [m for m in members if m in chosen]
        phases = [("canary", first), ("rest", [m for m in members if m not in chosen])] if first else \
            [("all", list(members))]
        done: dict[Member, MemberOutcome] = {}
        for name, group in phases:
            if self._stop is not None:
                break
            outcomes = self._phase(name, group)
            pending = [o for o in outcomes if o.unconfirmed and o.loss]
            if pending and self.confirm is not None and self._stop is None and self.confirm(pending):
                again = self._phase(name, [o.member for o in pending], {o.member: o.loss for o in pending})
                outcomes = [o for o in outcomes if o not in pending] + again
            done.update({o.member: o for o in outcomes})
            if name == "canary" and not all(o.succeeded for o in outcomes) and self._stop is None:
                self._stop = "a canary did not succeed, so no other database was started"
        result = [done.get(m) or MemberOutcome(m, NOT_STARTED, error=self._stop) for m in members]
        # Why the run stopped early: only when it did (a failure of the last database stopped nothing).
        stopped = self._stop if self.interrupted or any(o.outcome == NOT_STARTED for o in result) else None
        return FleetResult(result, stopped, self.interrupted)

    def _phase(self, name: str, members: list[Member],
               confirmed: dict[Member, list[str]] | None = None) -> list[MemberOutcome]:
        if self.jobs == 1 or len(members) <= 1:
            return self._sequential(name, members, confirmed or {})
        return self._parallel(name, members, confirmed or {})

    def _finished(self, name: str, outcome: MemberOutcome) -> None:
        outcome.phase = name
        if self.journal is not None:
            self.journal.record(outcome.to_record())
        if outcome.outcome == FAILED and not self.continue_on_error and self._stop is None:
            self._stop = f"{outcome.member.display} {STOPPED_BY_FAILURE}"
        if self.on_event is not None:
            self.on_event(MemberFinished(outcome))

    def _sequential(self, name: str, members: list[Member], confirmed: dict) -> list[MemberOutcome]:
        outcomes = []
        for candidate in members:
            if self._stop is not None:
                break
            if self.on_event is not None:
                self.on_event(MemberStarted(candidate, name))
            outcome = run_member(candidate, self.request, self.catalog, confirmed.get(candidate))
            self._finished(name, outcome)
            outcomes.append(outcome)
        return outcomes

    def _parallel(self, name: str, members: list[Member], confirmed: dict) -> list[MemberOutcome]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        member_run.worker_catalog = self.catalog  # inherited by the forked workers: the catalog is loaded once
        outcomes: list[MemberOutcome] = []
        waiting = list(members)
        running: dict = {}
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(members)), mp_context=context,
                                 initializer=_worker_init, initargs=(os.getpid(),)) as pool:
            while waiting or running:
                while waiting and len(running) < self.jobs and self._stop is None:
                    candidate = waiting.pop(0)
                    if self.on_event is not None:
                        self.on_event(MemberStarted(candidate, name))
                    try:
                        future = pool.submit(run_member, candidate, self.request, None, confirmed.get(candidate))
                    except BrokenProcessPool as broken:  # a worker was killed: start nothing more
                        self._finished(name, MemberOutcome(candidate, NOT_STARTED, error=f"not started: the "
                                                           f"worker processes ended ({one_line(broken)})"))
                        self._stop = self._stop or "the worker processes ended"
                        continue
                    running[future] = candidate
                if not running:
                    break
                try:
                    finished, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    # The workers ignore Ctrl-C and finish their database; leaving now would lose their records.
                    self.stop()
                    continue
                for future in finished:
                    candidate = running.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as error:  # the worker died (killed, out of memory): say so, carry on
                        outcome = MemberOutcome(candidate, FAILED, error=f"its worker process ended: "
                                                                         f"{one_line(error)}; run it again")
                    self._finished(name, outcome)
                    outcomes.append(outcome)
        return outcomes


def _worker_init(parent: int) -> None:
    """A worker ignores Ctrl-C (the fleet command decides, and lets the running databases finish), and dies with
    the fleet command: a worker outliving it would run databases no journal records.

    On Linux the kernel sends SIGTERM when the parent dies (``PR_SET_PDEATHSIG``); a watchdog thread checking
    the parent's pid covers other systems. SIGTERM's default action ends the worker at once: the database it
    was running is rolled back by its engine (SQLite's journal, PostgreSQL's closed connection), as after a
    SIGKILL of ``apm migrate``, and ``--resume`` plans it again from its own ledger.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with(parent)


def _die_with(parent: int) -> None:
    import signal
    import threading
    import time

    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog alone
        pass
    if os.getppid() != parent:  # the parent died before the line above: nobody would send the signal
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="apm-fleet-parent-watch", daemon=True).start()
