"""Running one request on many databases: a few at a time, canaries first, every outcome journaled.

Each database runs through ``planner.fleet.run.run_member``: the
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

One database's run: its plan from its own ledger, through the single-database run path, as an outcome.

``run_member`` makes the plan (``planner.plan``) and hands it to the
member's engine's runner exactly as ``apm migrate`` does: through the
preview (``PlanRunner.preview``: the whole plan in one watched transaction,
committed only if it destroys nothing or what it destroys was confirmed),
with the backup taken under the lock before a rollback. Nothing here
re-implements a step. A database's own problem never raises: it is the
outcome, with its one-line error.

The journal of a fleet run: one JSON line per database as it ends, so a killed run can be resumed.

A run file (``run-<UTC time>-<pid>.jsonl``) starts with the run's request
and its members, then gets one line per database the moment that database
ends, written and flushed to the kernel before the next database is told
about: a SIGKILL of the fleet command loses no finished database's record.
A line cut short by a kill is ignored when the journal is read back.

The header and the last line are also synced to disk; the lines between are
not, one by one (an ``fdatasync`` per database cost a sixth of a fleet run).
A power cut may therefore lose the last records, never a database's own
state: each database commits durably in its own file, and ``--resume`` plans
a database whose record was lost from its own ledger, so what it finished
reads "nothing to do" and nothing runs twice.

A ``--resume`` appends to the same file, so the file is the whole story of
the run.

Journals are kept only while they can matter: a new run's file is removed
when it ends if every one of its databases had nothing to do (nothing to
resume, nothing that happened), and when a run starts, the folder keeps its
newest ``KEEP`` run files (the new one among them) and the newest run of each
fleet, and loses older ones. A resume continues the newest run of its own
fleet only (``resumable``: the same patterns and lists, the same catalog),
never another fleet's. No password is ever written: members are recorded without it, and a
resumed run finds it where libpq looks (``PGPASSWORD``, ``~/.pgpass``) or in
the ``--glob``/``--list`` given again.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner import request as requests
from planner.errors import (
    DatabaseError,
    DatabaseLocked,
    MigrationError,
    NoJournal,
    NotApplied,
    PlanError,
    UnreadableJournal,
)
from planner.fleet.members import Member
from planner.request import Request
from planner.urls import redact

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.plan import Plan


APPLIED = "applied"
ROLLED_BACK = "rolled back"
NOTHING_TO_DO = "nothing to do"
FAILED = "failed"
SKIPPED = "skipped"
NOT_STARTED = "not started"
#: ``--dry-run`` and ``apm fleet plan --rehearse``: the plan ran in a transaction that was rolled back.
REHEARSED = "rehearsed"
#: The request was refused, nothing run: by the planner (``PlanError``: a rollback through a migration without a
#: downgrade, with applied dependents, an inconsistent history; ``apm migrate`` exits 4), or by lock findings at
#: or above the gate that nothing accepted (``allow``, ``--allow``; exit 12). Not a failure: nothing ran and
#: failed; yet not a success either, so ``--resume`` runs it again.
REFUSED = "refused"

SUCCEEDED = frozenset({APPLIED, ROLLED_BACK, NOTHING_TO_DO})


@dataclass
class MemberOutcome:
    """How one database's run ended: the outcome, the steps it ran, and the one-line error if it did not."""

    member: Member
    outcome: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    #: What the plan destroys (a rehearsal, or a run whose loss was not confirmed): the lines to confirm.
    loss: list[str] = field(default_factory=list)
    #: Rows and values the plan destroys, summed over its steps (for the fleet's total).
    lost: int = 0
    #: Whether the outcome is "not confirmed": the loss above needs --yes or a person's yes.
    unconfirmed: bool = False
    #: What this run destroyed, as confirmed (``--yes`` or a person), committed.
    destroyed: list[str] = field(default_factory=list)
    #: The lock findings that stop (``refused``) or would stop (a rehearsal) this plan: ``0009: code on t (error)``.
    lock_findings: list[str] = field(default_factory=list)
    backup: str | None = None
    duration_ms: float = 0.0
    #: The SQL each step ran (``sql``), version -> statements.
    sql: dict[str, list[str]] = field(default_factory=dict)
    phase: str = ""

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCEEDED

    @property
    def plan_refused(self) -> bool:
        """Refused by the planner (``apm migrate``'s exit 4), as opposed to by lock findings (exit 12)."""
        return self.outcome == REFUSED and not self.lock_findings

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"db": self.member.display, "outcome": self.outcome, "steps": self.steps,
                                    "error": self.error, "duration_ms": round(self.duration_ms, 3)}
        if self.loss:
            document["loses"] = self.loss
        if self.destroyed:
            document["destroyed"] = self.destroyed
        if self.lock_findings:
            document["lock_findings"] = self.lock_findings
        if self.backup:
            document["backup"] = self.backup
        if self.sql:
            document["sql"] = self.sql
        return document

    def to_record(self) -> dict[str, Any]:
        """The journal's line: the JSON, plus the member's key (its identity across runs)."""
        return {**self.to_json(), "key": self.member.key, "phase": self.phase}


# --------------------------------------------------------------------------
# One database (runs in a worker process, or here with jobs=1)
# --------------------------------------------------------------------------

#: The catalog of a worker process: set before the fork and inherited, never pickled (nor loaded again).
worker_catalog: Catalog | None = None
#: Set once no further database may start (shared memory, inherited by the forked workers), and whether a failure
#: sets it: a worker checks it before each database it takes, so one handed over ahead of time never starts late.
_worker_stop: Any = None
_worker_stops_on_failure = True
#: The members, the request and the confirmed loss of the run, inherited by the forked workers (``_worker``).
_worker_job: Any = None


def run_member(member: Member, request: Request, catalog: Catalog | None = None,
               confirmed: list[str] | None = None) -> MemberOutcome:
    """Run ``request`` on one database; never raises for a database's own problem (it is the outcome)."""
    catalog = catalog if catalog is not None else worker_catalog
    assert catalog is not None
    started = time.perf_counter()
    outcome = MemberOutcome(member, FAILED)
    try:
        engine = member.engine(busy_timeout=request.busy_timeout, ledger_schema=request.ledger_schema,
                               backup_dir=Path(request.backup_dir) if request.backup_dir else None)
        # What `apm migrate` gives its engine (cli.running.configure); an engine without lock queues ignores them.
        if request.locks is not None:
            engine.lock_settings = request.locks
        if request.lock_policy is not None:
            engine.lock_policy = request.lock_policy
        if not member.on_server and not engine.exists():
            # A fleet never creates a member; a run of it alone does (the command shows that run's line).
            outcome.error = f"{member.display} does not exist; a run of it alone creates it"
            return outcome
        runner = engine.runner(catalog=catalog)  # a fleet never creates a member
        try:
            try:
                plan = request.plan(catalog, _ledger(member, engine, request, runner))
            except NotApplied:
                outcome.outcome = NOTHING_TO_DO  # a rollback of what this database never applied
                return outcome
            if not plan:
                outcome.outcome = NOTHING_TO_DO
                return outcome
            _run_plan(engine, catalog, plan, request, outcome, confirmed, runner)
        finally:
            getattr(runner, "release", _nothing)()
    except PlanError as error:  # refused before it ran, as `apm migrate` refuses it (exit 4): nothing changed
        outcome.outcome, outcome.error = REFUSED, one_line(error)
    except MigrationError as error:
        outcome.outcome, outcome.error = FAILED, one_line(error)
    except Exception as error:  # a database's driver error must not end the fleet: it is this database's row
        outcome.outcome, outcome.error = FAILED, one_line(error, unexpected=True)
    finally:
        outcome.duration_ms = (time.perf_counter() - started) * 1000
        outcome.error = member.named(outcome.error) if outcome.error else outcome.error
    return outcome


def _nothing() -> None:
    pass


def _ledger(member: Member, engine, request: Request, runner) -> dict:
    """The ledger to plan from before the run (the preview plans again inside the write lock).

    Read by the runner on the connection its preview will use, where it can (``read_ahead``: the file is opened
    once, and the preview's read inside the lock costs one ``PRAGMA data_version`` while nothing else
    committed); else by the engine's fast reader where it has one (``EngineKind.ledger_reader``: a third of the
    cost of ``engine.applied()``), so a file the run cannot open for writing is read as ``apm fleet status``
    reads it; by the engine where that reader cannot read the file (a hot journal left by a killed run, which
    only a writable connection rolls back; another tool's ledger, which the engine names).
    """
    read_ahead = getattr(runner, "read_ahead", None)
    if read_ahead is not None and request.previewed:
        try:
            return read_ahead()
        except DatabaseLocked:
            raise  # it waited the whole busy timeout already
        except Exception:  # noqa: BLE001 (the readers below say what is wrong with the file, as they always did)
            pass
    kind = member.kind
    if kind.ledger_reader is not None:
        try:
            return kind.load(kind.ledger_reader)(member.real, request.busy_timeout)[0]
        except DatabaseLocked:
            raise  # it waited the whole busy timeout already
        except DatabaseError:
            pass
    return engine.applied()


def _run_plan(engine, catalog: Catalog, plan: Plan, request: Request, outcome: MemberOutcome,
              confirmed: list[str] | None, runner=None) -> None:
    """The plan as ``apm migrate`` runs it: ``planner.request.run``, its one result told as this database's outcome."""
    result = requests.run(engine, catalog, request, plan, confirmed=confirmed, runner=runner)
    for preview in [*result.previews, *([result.stopped] if result.stopped and not request.dry_run else [])]:
        _note_preview(outcome, preview)
    outcome.lock_findings = result.lock_findings
    outcome.destroyed = list(result.destroyed)
    if request.dry_run:
        preview = result.previews[0]
        outcome.steps = [{"version": s.version, "description": s.description, "direction": s.direction,
                          "status": s.status, "duration_ms": round(s.duration_ms, 3)} for s in preview.steps]
        outcome.outcome = _failed_or_refused(preview.error) if preview.error is not None else REHEARSED
        if preview.error is not None:
            outcome.error = f"{one_line(preview.error)} (found by the preview: nothing was committed)"
        return
    outcome.steps = [{"version": row.version, "description": row.description, "status": row.status,
                      "duration_ms": round(row.duration_ms, 3)} for row in result.steps]
    done = f"committed before it: {', '.join(row.version for row in result.steps)}" if result.steps else ""
    unchanged = f"this part was rolled back ({done})" if done else "nothing was committed"
    error = result.error or RuntimeError(result.status)  # set whenever a step failed or stopped
    if result.committed:
        outcome.outcome = ROLLED_BACK if plan.direction == "rollback" else APPLIED
        outcome.backup = str(result.backup) if result.backup is not None else None
    elif result.stopped is None:  # a step outside any transaction: stopped unconfirmed, refused (locks), or failed
        outcome.outcome = SKIPPED if result.status == requests.UNCONFIRMED else \
            REFUSED if result.status == requests.REFUSED else _failed_or_refused(error)
        outcome.unconfirmed = result.status == requests.UNCONFIRMED
        outcome.loss = list(result.loss) if outcome.unconfirmed else outcome.loss
        outcome.error = one_line(error) + (f" ({done})" if done else "")
    elif result.status == requests.FAILED:
        outcome.outcome = _failed_or_refused(getattr(error, 'failure', None) or error)
        outcome.error = f"{one_line(getattr(error, 'failure', None) or error)}; {unchanged}"
    elif result.status == requests.REFUSED:
        outcome.outcome = REFUSED
        outcome.error = f"lock findings stop this plan ({'; '.join(outcome.lock_findings)}); {unchanged}"
    else:
        outcome.outcome, outcome.unconfirmed = SKIPPED, True
        # Changed: what was confirmed for this part is not what it destroys now. A later part's loss is a new question.
        what = "the database changed meanwhile: it now destroys " if result.status == requests.CHANGED else "destroys "
        outcome.error = f"this plan {what}{'; '.join(result.loss)}; {unchanged}"


def _failed_or_refused(error: BaseException) -> str:
    """``refused`` for the planner's refusal found inside the lock (the ledger changed meanwhile), as ``apm
    migrate`` exits 4 for it; ``failed`` for anything else."""
    return REFUSED if isinstance(error, PlanError) else FAILED


def _note_preview(outcome: MemberOutcome, preview) -> None:
    outcome.loss = preview.loss_lines()
    outcome.lost = sum(i.count for step in preview.steps for i in step.impact if i.loses_data)
    if preview.steps and any(step.sql for step in preview.steps):
        outcome.sql.update({f"{s.version} {s.direction}": list(s.sql) for s in preview.steps if s.sql})


def one_line(error: BaseException, *, unexpected: bool = False) -> str:
    """An error as one line, any password masked."""
    # An error's text is its fact: advice for a one-database command (``--db``) is the command's to add.
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return redact(f"{type(error).__name__}: {line}" if unexpected else line)


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
        if _worker_stop is not None:
            _worker_stop.value = 1

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
            if _worker_stop is not None:  # a worker that died could not say so itself
                _worker_stop.value = 1
        if self.on_event is not None:
            self.on_event(MemberFinished(outcome))

    def _started(self, name: str, candidate: Member) -> None:
        if self.on_event is not None:
            self.on_event(MemberStarted(candidate, name))

    def _sequential(self, name: str, members: list[Member], confirmed: dict) -> list[MemberOutcome]:
        outcomes = []
        for candidate in members:
            if self._stop is not None:
                break
            self._started(name, candidate)
            outcome = run_member(candidate, self.request, self.catalog, confirmed.get(candidate))
            self._finished(name, outcome)
            outcomes.append(outcome)
        return outcomes

    def _parallel(self, name: str, members: list[Member], confirmed: dict) -> list[MemberOutcome]:
        # start-up time: planner.fleet.run runs without multiprocessing until _parallel() needs it
        import multiprocessing

        # start-up time: planner.fleet.run runs without multiprocessing.connection until _parallel() needs it
        from multiprocessing.connection import wait

        global worker_catalog, _worker_stop, _worker_stops_on_failure, _worker_job
        _import_run_path(members[0], self.catalog)
        context = multiprocessing.get_context("fork")
        # Inherited by the forked workers, never pickled: the catalog (loaded once), the members and the request.
        # A database is handed over as its index on one queue and comes back, with its outcome, on another: no
        # thread in this process, nothing but an index and an outcome pickled per database.
        worker_catalog, _worker_stop = self.catalog, context.RawValue("b", 0)
        _worker_stops_on_failure = not self.continue_on_error
        _worker_job = (members, self.request, confirmed)
        tasks = context.SimpleQueue()
        results, sent = context.Pipe(duplex=False)  # sent by every worker, under one lock
        lock = context.Lock()
        workers = [context.Process(target=_worker, args=(tasks, (sent, lock), os.getpid()), daemon=True)
                   for _ in range(min(self.jobs, len(members)))]
        for worker in workers:
            worker.start()
        outcomes: list[MemberOutcome] = []
        waiting = deque(range(len(members)))
        running: set[int] = set()
        ahead: deque[int] = deque()  # handed over, not yet told as started: a worker takes the oldest as it frees up
        try:
            while waiting or running:
                # Each worker has its next database handed over already (twice ``jobs`` in flight): no worker
                # waits while this process journals an outcome and hands over the next.
                while waiting and len(running) < 2 * self.jobs and self._stop is None:
                    index = waiting.popleft()
                    tasks.put(index)
                    running.add(index)
                    ahead.append(index)
                while ahead and len(running) - len(ahead) < self.jobs:  # told as started: at most jobs at a time
                    self._started(name, members[ahead.popleft()])
                if not running:
                    break
                try:
                    ready = wait([results, *(worker.sentinel for worker in workers)], timeout=0.2)
                except KeyboardInterrupt:
                    # The workers ignore Ctrl-C and finish their database; leaving now would lose their records.
                    self.stop()
                    continue
                while results.poll():
                    index, outcome = results.recv()
                    running.discard(index)
                    candidate = members[index]
                    if outcome is None:  # handed over, but the run stopped before a worker took it
                        if index in ahead:
                            ahead.remove(index)  # never told as started: nothing to take back
                        elif self.on_event is not None:
                            self.on_event(MemberFinished(MemberOutcome(candidate, NOT_STARTED, error=self._stop)))
                        continue
                    if isinstance(outcome, str):  # what the worker raised
                        outcome = MemberOutcome(candidate, FAILED, error=f"its worker process ended: {outcome}; "
                                                                         f"run it again")
                    outcome.member = candidate  # this process's own: what it knows of it (its key) stays known
                    if index in ahead:  # it ended before this process told it had started
                        ahead.remove(index)
                        self._started(name, candidate)
                    self._finished(name, outcome)
                    outcomes.append(outcome)
                if running and any(worker.sentinel in ready for worker in workers):
                    # A worker died (killed, out of memory): it may have died holding a queue's lock, so none is
                    # trusted further. What was in flight is failed, to be run again; nothing more starts.
                    self._stop = self._stop or "the worker processes ended"
                    for worker in workers:
                        worker.kill()
                    for index in sorted(running):
                        if index in ahead:
                            ahead.remove(index)
                            self._started(name, members[index])
                        outcome = MemberOutcome(members[index], FAILED, error="its worker process ended: a worker "
                                                "process was terminated abruptly; run it again")
                        self._finished(name, outcome)
                        outcomes.append(outcome)
                    running.clear()
        finally:
            # No more: each worker ends after the database it runs. Counted first: any worker may take any None.
            for _ in [worker for worker in workers if worker.is_alive()]:
                tasks.put(None)
            for worker in workers:
                worker.join()
            tasks.close()
            results.close()
            sent.close()
        return outcomes


def _import_run_path(member: Member, catalog: Catalog) -> None:
    """Import the run path once, here, before the workers are forked: imported lazily (the commands that never
    run a plan skip it), it would otherwise be imported again by every worker."""
    try:
        member.engine(busy_timeout=0).runner(catalog=catalog)
    except Exception:  # noqa: BLE001 (only a head start: a worker meets the same problem and reports it)
        pass


def _worker(tasks: Any, results: tuple[Any, Any], parent: int) -> None:
    """A worker process: runs each database handed over (its index) until handed ``None``; each outcome goes back
    with its index, ``None`` for one not started, or the text of what ``run_member`` raised."""
    _worker_init(parent)
    members, request, confirmed = _worker_job
    while (index := tasks.get()) is not None:
        member = members[index]
        try:
            outcome: MemberOutcome | str | None = _member_in_worker(member, request, confirmed.get(member))
        except Exception as error:  # noqa: BLE001 (never a database's own problem: run_member makes those outcomes)
            outcome = one_line(error)
        sent, lock = results
        with lock:
            sent.send((index, outcome))


def _member_in_worker(member: Member, request: Request, confirmed: list[str] | None) -> MemberOutcome | None:
    """``run_member`` in a worker process; ``None`` (not started) once no further database may start."""
    if _worker_stop.value:
        return None
    outcome = run_member(member, request, None, confirmed)
    if outcome.outcome == FAILED and _worker_stops_on_failure:
        _worker_stop.value = 1  # before this worker takes its next database, and before any other worker does
    return outcome


def _worker_init(parent: int) -> None:
    """A worker ignores Ctrl-C (the fleet command decides, and lets the running databases finish), and dies with
    the fleet command: a worker outliving it would run databases no journal records.

    On Linux the kernel sends SIGTERM when the parent dies (``PR_SET_PDEATHSIG``); a watchdog thread checking
    the parent's pid covers other systems. SIGTERM's default action ends the worker at once: the database it
    was running is rolled back by its engine (SQLite's journal, PostgreSQL's closed connection), as after a
    SIGKILL of ``apm migrate``, and ``--resume`` plans it again from its own ledger.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with(parent)


def _die_with(parent: int) -> None:
    try:  # start-up time: ctypes is loaded only in a worker, to ask the kernel to end it with the fleet command
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


FORMAT = 1
FOLDER = ".apm-fleet"
#: How many run files a folder keeps when a new run starts, the new one included.
KEEP = 10


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Journal:
    """An open run file: each ``record`` is in the kernel when it returns, the header and the end on disk."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)

    @classmethod
    def start(cls, folder: Path, header: dict[str, Any]) -> Journal:
        """A new run file in ``folder`` (made if missing), its first line the run's ``header``."""
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        journal = cls(folder / f"run-{stamp}-{os.getpid()}.jsonl")
        journal.write({"type": "run", "format": FORMAT, "at": _now(), **header}, sync=True)
        return journal

    def write(self, record: dict[str, Any], *, sync: bool = False) -> None:
        """Append one line, in the kernel when this returns; on disk too with ``sync``."""
        self._file.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        self._file.flush()  # in the kernel now: a SIGKILL of this process cannot lose it
        if sync:  # on disk: nor can a power cut
            getattr(os, "fdatasync", os.fsync)(self._file.fileno())

    def record(self, outcome: dict[str, Any]) -> None:
        self.write({"type": "member", "at": _now(), **outcome})

    def close(self, **fields: Any) -> None:
        if not self._file.closed:
            self.write({"type": "end", "at": _now(), **fields}, sync=True)
            self._file.close()

    def discard(self) -> None:
        """Close and remove the file: a run in which no database needed anything leaves no journal."""
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


def runs(folder: Path) -> list[Path]:
    """The folder's run files, oldest first (their names start with the UTC time they started)."""
    return sorted(folder.glob("run-*.jsonl")) if folder.is_dir() else []


def idle(outcomes: list[str], members: int) -> bool:
    """Whether a run's journal records nothing worth keeping: every one of its ``members`` databases ended,
    each with nothing to do."""
    return len(outcomes) == members > 0 and all(outcome == "nothing to do" for outcome in outcomes)


def prune(folder: Path, *, keep: int = KEEP, spare: Path | None = None) -> list[Path]:
    """Remove all but the newest ``keep`` run files of ``folder``, never ``spare`` (the file a resume would
    use) nor the newest run of each fleet (runs of other fleets must not push out the one a fleet resumes
    from); the files removed. A file that cannot be removed is left: pruning never stops a run."""
    removed, fleets = [], set()
    for age, path in enumerate(reversed(runs(folder))):  # newest first
        fleet = _fleet_of(path)
        newest_of_its_fleet = fleet not in fleets
        fleets.add(fleet)
        if age < keep or newest_of_its_fleet or path == spare:
            continue
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def _fleet_of(path: Path) -> str | None:
    """The fleet a run file's header names (``members.identity``, as JSON), ``None`` when it names none."""
    try:
        with open(path, encoding="utf-8") as file:
            header = json.loads(file.readline())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    fleet = header.get("fleet") if isinstance(header, dict) else None
    return json.dumps(fleet, sort_keys=True) if fleet is not None else None


@dataclass
class PastRun:
    """A journal read back: the run's header and the last outcome recorded for each member key."""

    path: Path
    header: dict[str, Any]
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def succeeded(self) -> set[str]:
        """Member keys that need nothing more: their last recorded outcome succeeded."""
        return {key for key, record in self.outcomes.items() if record.get("outcome") in SUCCEEDED}


def resumable(folder: Path, fleet: dict[str, Any], keys: set[str] | None = None) -> PastRun:
    """The newest run of ``fleet`` in ``folder``: ``{"named_by", "catalog"}`` as the headers record it
    (``members.identity``), or a run of this catalog on exactly the databases
    named now (``keys``: the same fleet named otherwise, a symlink for a path). With no fleet named (``named_by``
    ``None``), the newest of this catalog, if its runs are all one fleet's. Otherwise ``NoJournal`` describing
    each journal there: a resume never continues another fleet's run, and a person must see which to name."""
    found = runs(folder)
    if not found:
        raise NoJournal(folder)
    pasts = []
    for path in reversed(found):  # newest first
        try:
            pasts.append(read(path))
        except UnreadableJournal:
            continue  # not a run this project wrote: never resumed unless named (and then refused by read)
    if fleet.get("named_by") is not None:
        mine = [past for past in pasts if past.header.get("fleet") == fleet or (
            (past.header.get("fleet") or {}).get("catalog") == fleet.get("catalog")
            and {m.get("key") for m in past.header.get("members", [])} == keys)]
    else:
        mine = [past for past in pasts if (past.header.get("fleet") or {}).get("catalog") == fleet.get("catalog")]
        if len({json.dumps(past.header["fleet"].get("named_by")) for past in mine}) > 1:
            mine = []  # runs of several fleets: which one is the person's to say
    if mine:
        return mine[0]
    raise NoJournal(folder, [_described(past, fleet) for past in pasts] or [p.name for p in found],
                    named=fleet.get("named_by") is not None)


def _described(past: PastRun, fleet: dict[str, Any]) -> str:
    """``run-....jsonl (glob /home/me/projects/*, 3 of 40 databases not succeeded)``: which fleet it ran."""
    recorded = past.header.get("fleet") or {}
    what = ", ".join(recorded.get("named_by") or ["databases named by no pattern" if recorded else "an older run"])
    if recorded.get("catalog") not in (None, fleet.get("catalog")):
        what += f", catalog {recorded['catalog']}"
    total = len(past.header.get("members", []))
    return f"{past.path.name} ({what}, {total - len(past.succeeded())} of {total} databases not succeeded)"


def read(path: Path) -> PastRun:
    """The run recorded in ``path``; a last line cut short by a kill is ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableJournal(path, getattr(exc, "strerror", None) or str(exc)) from exc
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the line a kill interrupted: that database's record was never complete
    if not records or records[0].get("type") != "run" or records[0].get("format") != FORMAT:
        raise UnreadableJournal(path, "it does not start with a fleet run's header")
    past = PastRun(path, records[0])
    for record in records[1:]:
        if record.get("type") == "member" and "key" in record:
            past.outcomes[record["key"]] = record
    return past
