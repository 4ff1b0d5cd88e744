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

Each outcome is recorded in the run's journal (``planner.fleet.journal``) as it ends.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner import request as requests
from planner.errors import (
    DatabaseDamaged,
    DatabaseDirectoryMissing,
    DatabaseError,
    DatabaseLocked,
    DatabaseNotFound,
    DatabaseReadOnly,
    DatabaseUnreachable,
    ForeignLedger,
    Interrupted,
    MigrationError,
    NotADatabase,
    NotApplied,
    PlanError,
)
from planner.fleet.journal import (  # the outcome names, as the journal records them
    APPLIED,
    FAILED,
    NOT_STARTED,
    NOTHING_TO_DO,
    OUTCOMES,
    REFUSED,
    REHEARSED,
    ROLLED_BACK,
    SKIPPED,
    SUCCEEDED,
    Journal,
)
from planner.fleet.members import Member, resolve_keys
from planner.request import Request
from planner.urls import redact

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.plan import Plan




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
    #: Failed before any migration ran, on the database itself (not a database, another tool's ledger, locked,
    #: unreachable, missing): bad input in one row, which says nothing about the plan, so it stops no other.
    unopened: bool = False

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCEEDED

    @property
    def stops_the_run(self) -> bool:
        """A failure that stops further databases from starting (unless ``--continue-on-error``)."""
        return self.outcome == FAILED and not self.unopened

    @property
    def plan_refused(self) -> bool:
        """Refused by the planner (``apm migrate``'s exit 4), as opposed to by lock findings (exit 12)."""
        return self.outcome == REFUSED and not self.lock_findings

    def __getstate__(self) -> dict[str, Any]:
        # Sent by a worker to the fleet command, which puts its own member back (``_parallel``): the member and
        # what the worker derived of it (its Path) are not pickled and unpickled for each database.
        return {**self.__dict__, "member": None}

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
#: What the workers of the parallel run share with this process (``_Board``: set before the fork, inherited), and
#: whether a failure stops the run (no worker takes another database).
_board: _Board | None = None
_worker_stops_on_failure = True
#: The members, the request and the confirmed loss of the run, inherited by the forked workers (``_worker``).
_worker_job: Any = None


def run_member(member: Member, request: Request, catalog: Catalog | None = None,
               confirmed: list[str] | None = None) -> MemberOutcome:
    """Run ``request`` on one database; never raises for a database's own problem (it is the outcome)."""
    catalog = catalog if catalog is not None else worker_catalog
    assert catalog is not None
    started = time.perf_counter()
    # Until its ledger is read, a failure is the database's own (bad input in one row), not the plan's.
    outcome = MemberOutcome(member, FAILED, unopened=True)
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
                ledger = _ledger(member, engine, request, runner)
                plan = request.plan(catalog, ledger)
                outcome.unopened = False
            except NotApplied:
                outcome.unopened = False
                outcome.outcome = NOTHING_TO_DO  # a rollback of what this database never applied
                return outcome
            if not plan:
                outcome.outcome = NOTHING_TO_DO
                return outcome
            _run_plan(engine, catalog, plan, request, outcome, confirmed, runner, ledger)
        finally:
            getattr(runner, "release", _nothing)()
    except PlanError as error:  # refused before it ran, as `apm migrate` refuses it (exit 4): nothing changed
        outcome.outcome, outcome.error = REFUSED, one_line(error)
    except MigrationError as error:
        outcome.outcome, outcome.error = FAILED, one_line(error)
        # The file itself refused before the run began (read-only, not a database ...): as unopened as a file
        # whose ledger could not be read, whatever read its ledger (a read-only file's reads fine).
        outcome.unopened = outcome.unopened or isinstance(error, _THE_FILE_ITSELF)
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
    once, under the write lock the preview then runs in when no other process holds it); else by the engine's
    fast reader where it has one (``EngineKind.ledger_reader``: a third of the
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
              confirmed: list[str] | None, runner=None, ledger: dict | None = None) -> None:
    """The plan as ``apm migrate`` runs it: ``planner.request.run``, its one result told as this database's outcome."""
    result = requests.run(engine, catalog, request, plan, confirmed=confirmed, runner=runner, planned_from=ledger)
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
    if result.committed and not result.steps:
        # Planned again inside the lock, the plan was empty: another run (a second fleet run, `apm migrate`)
        # did it meanwhile. Saying "applied" here would count one rollout twice.
        outcome.outcome = NOTHING_TO_DO
    elif result.committed:
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
    if outcome.outcome == FAILED and not result.steps and isinstance(error, _THE_DATABASE_ITSELF):
        # The file or the server refused before any step ran (read-only, locked, unreachable ...): bad input in
        # one row, as when its ledger could not be read, which says nothing about the plan and stops no other.
        outcome.unopened = True


#: What the file itself raises before any step of its plan runs, and no step's commit can have come before.
_THE_FILE_ITSELF = (DatabaseNotFound, DatabaseDirectoryMissing, NotADatabase, DatabaseDamaged, DatabaseReadOnly,
                    ForeignLedger)
#: What a database's own state raises before its steps: the file, or a lock or the server (which may also go
#: between two parts of a plan), never the plan.
_THE_DATABASE_ITSELF = (*_THE_FILE_ITSELF, DatabaseLocked, DatabaseUnreachable)


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
        counts = {name: 0 for name in OUTCOMES}
        for outcome in self.outcomes:
            counts[outcome.outcome] += 1
        return {name: count for name, count in counts.items() if count}

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
        if _board is not None:
            _board.stop()

    def run(self, members: Sequence[Member], *, canary: Sequence[Member] = ()) -> FleetResult:
        """Every member's outcome: the canaries first, the rest only if every canary succeeded.

        A canary with nothing to do tried nothing: each such canary is replaced by the next member (its
        phase is ``canary`` in the journal), until as many canaries as were chosen ran the plan, or the
        fleet is through.
        """
        if self.journal is not None:
            resolve_keys(members)  # each outcome's record names its database by its key
        chosen = set(canary)
        rest = [m for m in members if m not in chosen]
        group = [m for m in members if m in chosen]
        done: dict[Member, MemberOutcome] = {}
        while group and self._stop is None:
            outcomes = self._confirmed_phase("canary", group)
            done.update({o.member: o for o in outcomes})
            if not all(o.succeeded for o in outcomes):
                self._stop = self._stop or "a canary did not succeed, so no other database was started"
            idle = sum(o.outcome == NOTHING_TO_DO for o in outcomes)
            group, rest = rest[:idle], rest[idle:]
        if self._stop is None and rest:
            done.update({o.member: o for o in self._confirmed_phase("rest" if canary else "all", rest)})
        result = [done.get(m) or MemberOutcome(m, NOT_STARTED, error=self._stop) for m in members]
        # Why the run stopped early: only when it did (a failure of the last database stopped nothing).
        stopped = self._stop if self.interrupted or any(o.outcome == NOT_STARTED for o in result) else None
        return FleetResult(result, stopped, self.interrupted)

    def _confirmed_phase(self, name: str, group: list[Member]) -> list[MemberOutcome]:
        """A phase, then one question about the members whose plan destroys data, and those run again if yes."""
        outcomes = self._phase(name, group)
        pending = [o for o in outcomes if o.unconfirmed and o.loss]
        if pending and self.confirm is not None and self._stop is None and self.confirm(pending):
            again = self._phase(name, [o.member for o in pending], {o.member: o.loss for o in pending})
            outcomes = [o for o in outcomes if o not in pending] + again
        return outcomes

    def _phase(self, name: str, members: list[Member],
               confirmed: dict[Member, list[str]] | None = None) -> list[MemberOutcome]:
        if self.jobs == 1 or len(members) <= 1:
            return self._sequential(name, members, confirmed or {})
        return self._parallel(name, members, confirmed or {})

    def _finished(self, name: str, outcome: MemberOutcome) -> None:
        outcome.phase = name
        if self.journal is not None:
            self.journal.record(outcome.to_record())
        if outcome.stops_the_run and not self.continue_on_error and self._stop is None:
            self._stop = f"{outcome.member.display} {STOPPED_BY_FAILURE}"
            if _board is not None:  # a worker that died could not say so itself
                _board.stop()
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
            try:
                outcome = run_member(candidate, self.request, self.catalog, confirmed.get(candidate))
            except Interrupted:  # a second Ctrl-C: the executor rolled this database's open transaction back
                outcome = MemberOutcome(candidate, FAILED, error=candidate.named(
                    "interrupted while it ran (Ctrl-C); what it had not committed was rolled back"))
                self._stop = self._stop or "interrupted"
                self.interrupted = True
            self._finished(name, outcome)
            outcomes.append(outcome)
        return outcomes

    def _parallel(self, name: str, members: list[Member], confirmed: dict) -> list[MemberOutcome]:
        # start-up time: planner.fleet.run runs without multiprocessing until _parallel() needs it
        import multiprocessing

        # start-up time: planner.fleet.run runs without selectors until _parallel() needs it
        import selectors

        global worker_catalog, _board, _worker_stops_on_failure, _worker_job
        _import_run_path(members[0], self.catalog)
        context = multiprocessing.get_context("fork")
        jobs = min(self.jobs, len(members))
        # Inherited by the forked workers, never pickled: the catalog (loaded once), the members and the request.
        # A worker takes the next database itself (``_Board``); only its outcome comes back, with its index, on
        # its own pipe: nothing is handed over, and nothing but an outcome is pickled, per database.
        worker_catalog = self.catalog
        _worker_stops_on_failure = not self.continue_on_error
        _worker_job = (members, self.request, confirmed)
        _board = board = _Board(context, jobs)
        # A pipe per worker: one writer to each, so no message can land inside another (a write longer than
        # ``PIPE_BUF`` reaches the pipe in pieces), and a worker killed mid-write garbles only its own.
        pipes = [context.Pipe(duplex=False) for _ in range(jobs)]
        workers = [context.Process(target=_worker, args=(board, slot, pipes, os.getpid()), daemon=True)
                   for slot in range(jobs)]
        for worker in workers:
            worker.start()
        for _, sent in pipes:
            sent.close()  # the worker's end is the worker's: its pipe reads as ended once the worker has
        # One poll set for the whole run (``multiprocessing.connection.wait`` makes and fills one per call): each
        # worker's pipe, and its sentinel, ready when it has ended.
        watched = selectors.DefaultSelector()
        for slot, (results, _) in enumerate(pipes):
            watched.register(results, selectors.EVENT_READ, slot)
        alive: dict[Any, Any] = {worker.sentinel: worker for worker in workers}
        for sentinel in alive:
            watched.register(sentinel, selectors.EVENT_READ)
        readers: set[Any] = {results for results, _ in pipes}
        outcomes: list[MemberOutcome] = []
        told: set[int] = set()  # told as started
        ended: set[int] = set()
        read = [0] * jobs  # outcomes read from each worker

        def start(index: int) -> None:
            if index not in told:
                told.add(index)
                self._started(name, members[index])

        def running() -> dict[int, int]:
            """The databases the workers run now (index -> worker), each told as started once: a worker's database
            only once every outcome it sent before is read (it may have ended one and taken the next before this
            process read that outcome), so never more than one a worker."""
            now = {}
            for slot, (index, taken) in enumerate(zip(board.slots(), board.taken())):
                if index >= 0 and index not in ended and taken == read[slot] + 1:
                    start(index)
                    now[index] = slot
            return now

        def receive(results: Any) -> bool:
            """One outcome read from a worker's pipe and told; ``False`` once the pipe has ended."""
            try:
                index, outcome = results.recv()
            except (EOFError, OSError):  # its worker ended (everything it sent read), or died mid-write
                readers.discard(results)
                watched.unregister(results)
                return False
            slot = watched.get_key(results).data
            if isinstance(outcome, str):  # what the worker raised
                outcome = MemberOutcome(members[index], FAILED, error=f"its worker process ended: {outcome}; run "
                                                                      f"it again")
            outcome.member = members[index]  # this process's own: what it knows of it (its key) stays known
            read[slot] += 1
            start(index)  # if it ended before this process saw it run
            ended.add(index)
            self._finished(name, outcome)
            outcomes.append(outcome)
            return True

        try:
            while alive:
                # A worker whose database ended takes its next at once: looked at again soon, so the databases
                # told as running are the ones running (a progress line, a library caller's events).
                between = any(index in ended for index in board.slots())
                try:
                    ready = {key.fileobj for key, _ in watched.select(timeout=0.01 if between else 0.2)}
                except KeyboardInterrupt:
                    # The workers ignore Ctrl-C and finish their database; leaving now would lose their records.
                    self.stop()
                    continue
                readable: set[Any] = ready & readers
                for results in readable:
                    receive(results)
                running()
                if readable:
                    continue  # an outcome is read before its worker's end: a worker writes it, then ends
                for ended_worker in ready & alive.keys():
                    worker = alive.pop(ended_worker)
                    watched.unregister(ended_worker)
                    worker.join()
                    if worker.exitcode != 0:
                        # A worker died (killed, out of memory), maybe holding a lock, so none is trusted further:
                        # what runs is failed, to be run again, and nothing more starts.
                        self._stop = self._stop or "a worker process ended abruptly"
                        for other in workers:
                            other.kill()
                            other.join()
                        for results in list(readers):  # what the others sent before they were ended is theirs
                            while results.poll() and receive(results):
                                pass
                        died = workers.index(worker)
                        how = f"by signal {-worker.exitcode}" if worker.exitcode < 0 else \
                            f"with exit code {worker.exitcode}"
                        for index, slot in sorted(running().items()):
                            ended.add(index)
                            error = (f"its worker process ended abruptly ({how}); what it had not committed was "
                                     f"rolled back; run it again") if slot == died else \
                                ("stopped: another worker process ended abruptly, so apm ended this one's too; "
                                 "what it had not committed was rolled back; run it again")
                            outcome = MemberOutcome(members[index], FAILED, error=error)
                            self._finished(name, outcome)
                            outcomes.append(outcome)
                        alive.clear()
                        break
        finally:
            board.stop()  # none starts another database: each ends after the one it runs
            # Closed before the workers are waited for: one blocked writing an outcome nobody will read (this
            # process is leaving on an error) then ends instead of waiting for ever.
            for results, _ in pipes:
                results.close()
            for worker in workers:
                worker.join()
            watched.close()
        return outcomes


class _Board:
    """What the workers of one parallel run share with this process, in memory inherited through the fork: whether
    the run stopped (no worker takes another database), the index of the next database to take, the one each
    worker runs now (``slots``, -1 for none) and how many each has taken (``taken``), which this process reads to
    tell which databases are running without being sent a message per start."""

    def __init__(self, context: Any, jobs: int):
        # start-up time: planner.fleet.run runs without mmap until a parallel run needs it
        import mmap

        # Anonymous and shared (MAP_SHARED): one page, no file, and none of ctypes' start-up cost. The cells:
        # stopped, next, then each worker's database now, then how many each worker has taken.
        self._cells = memoryview(mmap.mmap(-1, 8 * (2 + 2 * jobs))).cast("q")
        self._jobs = jobs
        for slot in range(jobs):
            self._cells[2 + slot] = -1
        self.taking = context.Lock()

    @property
    def stopped(self) -> bool:
        return bool(self._cells[0])

    def stop(self) -> None:
        self._cells[0] = 1

    def slots(self) -> list[int]:
        return self._cells[2:2 + self._jobs].tolist()

    def taken(self) -> list[int]:
        """How many databases each worker has taken: one more than the outcomes read from it while it runs one."""
        return self._cells[2 + self._jobs:].tolist()

    def take(self, slot: int, count: int) -> int | None:
        """The next database's index, marked as run by the worker in ``slot``; ``None`` when none is left."""
        cells = self._cells
        with self.taking:
            index = cells[1]
            if index >= count:
                cells[2 + slot] = -1
                return None
            cells[1] = index + 1
            cells[2 + slot] = index
            cells[2 + self._jobs + slot] += 1
        return index


def _import_run_path(member: Member, catalog: Catalog) -> None:
    """Import the run path once, here, before the workers are forked: imported lazily (the commands that never
    run a plan skip it), it would otherwise be imported again by every worker."""
    try:
        member.engine(busy_timeout=0).runner(catalog=catalog)
    except Exception:  # noqa: BLE001 (only a head start: a worker meets the same problem and reports it)
        pass


def _worker(board: _Board, slot: int, pipes: list, parent: int) -> None:
    """A worker process: takes the next database (``board``) and runs it, until none is left or the run stops;
    each outcome goes back on its own pipe (``pipes[slot]``) with its index, or the text of what ``run_member``
    raised."""
    _worker_init(parent)
    sent = pipes[slot][1]
    for reader, writer in pipes:
        # Inherited, and not this worker's to keep: while a worker held a reading end of its own pipe, its write
        # to a fleet command that had stopped reading waited for ever instead of failing.
        reader.close()
        if writer is not sent:
            writer.close()
    members, request, confirmed = _worker_job
    while not board.stopped and (index := board.take(slot, len(members))) is not None:
        member = members[index]
        try:
            outcome: MemberOutcome | str = _member_in_worker(member, request, confirmed.get(member))
        except Exception as error:  # noqa: BLE001 (never a database's own problem: run_member makes those outcomes)
            outcome = one_line(error)
        try:
            sent.send((index, outcome))
        except OSError:  # the fleet command stopped reading (it is leaving): nobody to tell
            return


def _member_in_worker(member: Member, request: Request, confirmed: list[str] | None) -> MemberOutcome:
    """``run_member`` in a worker process, which stops the run (no worker takes another database) when it
    failed and a failure stops the run."""
    outcome = run_member(member, request, None, confirmed)
    if outcome.stops_the_run and _worker_stops_on_failure and _board is not None:
        _board.stop()  # before this worker takes its next database, and before any other worker does
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
    asked = False
    try:  # start-up time: ctypes is loaded only in a worker, to ask the kernel to end it with the fleet command
        import ctypes

        pr_set_pdeathsig = 1
        asked = ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: the watchdog alone
        pass
    if os.getppid() != parent:  # the parent died before the line above: nobody would send the signal
        os._exit(1)
    if asked:
        # The kernel will tell: no second thread, whose mere presence makes each release of the interpreter lock
        # (every SQLite call) cost more.
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="apm-fleet-parent-watch", daemon=True).start()
