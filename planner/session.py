"""One run over one connection, for any engine: what a step is, and the loops that run steps.

A step is the same on every engine. Inside a transaction: re-read the
ledger (``admit``: skip what another process already did, refuse what the
ledger no longer allows, by ``plan.step_conflicts``), run the migration's
code and the checks after it (``perform``), write its ledger and log rows
(``record``); all of it commits together or not at all. Around steps, three
ways to run: ``stepwise`` (one transaction per step), ``atomic`` (one for
the plan), ``preview`` (the plan in one watched transaction, committed only
if accepted).

What differs between engines is small, and is all an engine supplies: how
a transaction begins and ends (``transaction``), how the applied set is
kept fresh (``applied_now``), the connection a migration receives and what
is checked after it (``connection_for``, ``verify``), and how the rows are
written (``record``). ``planner.marks`` records a step without running it
through the same parts. ``planner.engines.sqlite.runner`` and
``planner.engines.postgresql.runner`` are the two; nothing here names an engine.

A session is typed against the engine contract (``planner.engines.base``):
``Session[driver connection, observer, guarded connection]``, so each
engine's session states, and mypy checks, which of its classes fill each
part, and nothing here needs to know more of them than the contract says.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Generic, cast

from planner.engines.base import ConnectionT, DriverT, Ledger, ObserverT
from planner.errors import (
    DatabaseError,
    ExecutionError,
    ForeignKeyViolation,
    Interrupted,
    LedgerChanged,
    MigrationFailed,
    NonTransactionalFailed,
    ValidationFailed,
)
from planner.events import Event, Replanned, StepFailed, StepFinished, StepOutput, StepSkipped, StepStarted, emit
from planner.ledger import APPLY, FAILED, ROLLBACK, SKIPPED, LedgerEntry
from planner.plan import Plan, Step, refuse_empty_upgrades, step_conflicts
from planner.preview import Preview, PreviewStep, is_left_out, left_out
from planner.versions import number

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.outside import Confirmation, Rehearsal, StatementCheck

MakePlan = Callable[[dict[str, LedgerEntry]], Plan]


class _Discard(Exception):
    """Leave the preview's transaction by rolling it back: a dry run, a failed step, or loss not accepted."""


class Session(ABC, Generic[DriverT, ObserverT, ConnectionT]):
    """One run over one connection: the step protocol, with the few engine-specific parts left to subclasses.

    ``conn`` is the engine's own connection, ``ledger`` its ledger on it;
    ``catalog``, when given, lets a rollback step's in-lock check see
    applied dependents outside the plan. A subclass's ``transaction`` forgets
    the cached applied set (``_applied = None``) when it rolls back.
    ``confirmation`` is set by the runner (``migrate(..., confirm_outside=...)``):
    who confirms a statement that destroys data in a step outside a
    transaction; without it such a step runs unchecked (``--no-preview``, the
    library's default), as it always did (``planner.outside``).
    """

    #: Who confirms a statement that destroys data (the command's ``Confirmation``); ``None``: unchecked.
    confirmation: Confirmation | None = None

    def __init__(self, conn: DriverT, ledger: Ledger, plan: Plan, *, catalog: Catalog | None = None,
                 atomic: bool = False, before: Callable[[], object] | None = None):
        self.conn, self._before = conn, before
        self.ledger = ledger
        #: What the migration's connection wraps instead of ``conn`` while a step is checked or rehearsed.
        self._wrapped: DriverT | None = None
        self.catalog = catalog
        self.atomic_run = atomic
        self.output = StepOutput()  # what migrations print, for the step's event
        self._applied: set[str] | None = None
        self.use(plan)
        self._canonical: dict[int, str] = {}
        self._plan_dependents: dict[str, list[str]] = {}
        if catalog is None:
            # Without a catalog, the plan's own migrations are all there is to match rows and dependents to.
            self._canonical = {s.migration.number: s.version for s in plan.steps}
            for step in plan.steps:
                for dependency in step.migration.depends_on:
                    self._plan_dependents.setdefault(dependency, []).append(step.version)

    # -- what an engine supplies -------------------------------------------------

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """BEGIN, the ledger tables ready; COMMIT, or ROLLBACK on any exception (and forget ``_applied``)."""

    @abstractmethod
    def applied_now(self) -> set[str]:
        """Applied versions as the ledger says inside the lock (``read_applied``), cached as the engine allows."""

    @abstractmethod
    def connection_for(self, step: Step, observer: ObserverT | None = None) -> ConnectionT:
        """The connection the migration receives: it cannot end the transaction, and tells ``observer``."""

    @abstractmethod
    def verify(self, step: Step, proxy: ConnectionT, observer: ObserverT | None = None) -> None:
        """The engine's checks after the migration's code, such as foreign keys; raise to fail the step."""

    @abstractmethod
    def record(self, step: Step, execution_ms: int | None, action: str | None = None,
               detail: str | None = None) -> None:
        """The ledger row and the log row of a step, in the step's transaction."""

    def call(self, step: Step, function: Callable[[ConnectionT], object], proxy: ConnectionT,
             observer: ObserverT | None = None) -> None:
        function(proxy)  # an engine may watch the ledger around it

    def detail(self, step: Step, proxy: ConnectionT) -> str | None:
        """A note for the step's log row about what the connection passed over; ``None`` for nothing."""
        return None

    def outside_transaction(self) -> AbstractContextManager[None]:
        """What a ``transactional = False`` step runs inside, since it has no transaction of ours."""
        return nullcontext()

    def checked_for(self, step: Step) -> StatementCheck | None:
        """The engine's ``StatementCheck`` of ``step`` (``None``: the engine cannot check statements)."""
        return None

    def rehearsal_for(self, step: Step) -> Rehearsal | None:
        """The engine's ``Rehearsal`` of ``step`` in a preview (``None``: the preview leaves it out)."""
        return None

    def ledger_for_plan(self) -> dict[str, LedgerEntry]:
        """The ledger read inside the lock to plan again; an engine may keep its versions as the applied set
        the first step checks (SQLite: one read instead of two, as nothing else can write under its lock)."""
        return self.ledger.applied_migrations()

    def performing(self, observer: ObserverT | None = None) -> AbstractContextManager[None]:
        """What one step's work runs inside: an engine puts back what a migration may change on its connection."""
        return nullcontext()

    def explained(self, step: Step, error: Exception) -> Exception:
        """The failure as the log row tells it; an engine may say more (PostgreSQL: the attempt, the lock holder)."""
        return error

    # -- the ledger, as seen inside the lock ---------------------------------------

    def read_applied(self) -> set[str]:
        """The ledger's applied versions in the catalog's spelling; a squash's replaced rows stand for it."""
        return self.applied_from(self.ledger.applied_versions())

    def applied_from(self, recorded: Iterable[str]) -> set[str]:
        """``read_applied`` of versions already read (``ledger_for_plan``'s rows), without reading them again."""
        applied = {self._spelling(v) for v in recorded}
        if self.catalog is not None and self.catalog.has_squashes:
            applied = set.union(*self.catalog.split_applied(applied))
        return applied

    def _spelling(self, recorded: str) -> str:
        if self.catalog is not None:
            return self.catalog.canonical(recorded) or recorded
        value = number(recorded)
        return recorded if value is None else self._canonical.get(value, recorded)

    def _dependents(self, version: str) -> list[str]:
        if self.catalog is None:
            return self._plan_dependents.get(version, [])
        return self.catalog.graph.dependents(version) if version in self.catalog.graph else []

    def _needs(self, step: Step) -> list[str]:
        """What must be done before ``step``: an apply's dependencies, a rollback's dependents."""
        return list(step.migration.depends_on) if step.direction == APPLY else self._dependents(step.version)

    def use(self, plan: Plan) -> None:
        """Run ``plan`` (at the start, or one planned inside the lock); never one applying an unfilled migration."""
        refuse_empty_upgrades(plan)
        self.plan = plan
        self.total = len(plan.steps)

    def skip_reason(self, step: Step, applied: set[str]) -> str | None:
        """Why ``step`` is already done (by another process since the plan was made), or ``None``."""
        is_applied = step.version in applied
        if step.direction == APPLY and is_applied:
            return "already applied (by another process since the plan was made)"
        if step.direction == ROLLBACK and not is_applied:
            return "already rolled back (by another process since the plan was made)"
        return None

    def refuse_conflicts(self, step: Step, applied: set[str]) -> None:
        """Refuse a step the ledger no longer allows (``plan.step_conflicts``: the planner's own rule)."""
        conflicts = step_conflicts(step, applied, self._dependents)
        if conflicts:
            raise LedgerChanged(step.version, step.direction, conflicts)

    def admit(self, step: Step) -> str | None:
        """Inside the lock: the reason to skip ``step`` (logged), or ``None``; ``LedgerChanged`` if it no longer fits."""
        applied = self.applied_now()
        skipped = self.skip_reason(step, applied)
        if skipped is not None:
            self.ledger.log(step.version, step.direction, SKIPPED, step.migration.checksum, detail=skipped)
            return skipped
        self.refuse_conflicts(step, applied)
        return None

    def take_backup(self) -> None:
        """The backup before a rollback (``before``), once: inside the lock, when the ledger read there admitted
        the first step to run (a preview: once the plan was made again), before anything is written. The copy
        is exactly the state the run starts from; any earlier, another process could commit in between."""
        before, self._before = self._before, None
        if before is not None:
            before()

    def after_commit(self, step: Step) -> None:
        """Our own change to the ledger, known without reading it again."""
        if self._applied is not None:
            if step.direction == APPLY:
                self._applied.add(step.version)
            else:
                self._applied.discard(step.version)

    # -- one step's work, inside an open transaction -------------------------------

    def perform(self, step: Step, observer: ObserverT | None = None) -> str | None:
        """Run the migration's code and the checks after it, inside what the engine wraps around a step's work
        (``performing``); anything it raises fails the step.

        Returns the log row's note (``detail``). ``sys.exit()`` or a
        ``KeyboardInterrupt`` raised by the migration's own code is its
        failure, not a reason to end the program with the transaction half
        done; only ``Interrupted`` (the user's Ctrl-C) goes on up as it is.
        """
        with self.performing(observer):
            migration = step.migration
            applying = step.direction == APPLY
            proxy = self.connection_for(step, observer)
            try:
                # validate_pre/post describe the upgraded schema, so they guard the apply direction only.
                if applying and migration.validate_pre is not None and not migration.validate_pre(proxy):
                    raise ValidationFailed(migration.version, step.direction, "validate_pre")
                function = migration.upgrade if applying else migration.downgrade
                if function is None:
                    raise MigrationFailed(migration.version, step.direction,
                                          NotImplementedError("no downgrade(conn) function"))
                self.call(step, function, proxy, observer)
                if proxy.tampered is None:
                    self.verify(step, proxy, observer)
                    if applying and migration.validate_post is not None and not migration.validate_post(proxy):
                        raise ValidationFailed(migration.version, step.direction, "validate_post")
                if proxy.tampered is not None:
                    raise proxy.tampered
            except (Interrupted, ExecutionError, DatabaseError):
                raise
            except BaseException as exc:
                broken = self.damaged(exc)
                if broken is not None:  # the file, not the migration: exit 6, and no failure row written into it
                    raise broken from exc
                raise MigrationFailed(migration.version, step.direction, exc,
                                      rolled_back=not self.atomic_run) from exc
            return self.detail(step, proxy)

    def attempt(self, step: Step, observer: ObserverT | None = None) -> str | None:
        """Check the step against the ledger, then run it; the reason it was skipped, or ``None`` when it ran."""
        skipped = self.admit(step)
        if skipped is not None:
            return skipped
        self.take_backup()
        started = time.perf_counter()
        with self.output.capture():  # a migration's print() never reaches stdout; the step's event carries it
            detail = self.perform(step, observer)
        self.record(step, _ms_since(started), detail=detail)
        return None

    def attempt_outside_transaction(self, step: Step) -> str | None:
        """Run a ``transactional = False`` step on its own; the reason it was skipped, or ``None`` when it ran.

        ``VACUUM`` and ``CREATE INDEX CONCURRENTLY`` refuse to run inside a
        transaction, so the step cannot commit with its ledger row. Three
        phases instead: check the ledger and log a ``started`` row
        (committed, so a kill mid-way leaves a trace ``doctor`` reports); run
        the migration in autocommit; record it in a transaction of its own.
        """
        skipped = self.admit_alone(step)
        if skipped is not None:
            return skipped
        started = time.perf_counter()
        try:
            detail = self.perform_outside(step)  # statement by statement, when checked (``planner.outside``)
        except (MigrationFailed, ValidationFailed, ForeignKeyViolation) as exc:
            raise NonTransactionalFailed(step.version, step.direction, getattr(exc, "cause", exc)) from exc
        with self.transaction():
            self.record(step, _ms_since(started), detail=detail)
        return None

    def admit_alone(self, step: Step) -> str | None:
        """Admit a ``transactional = False`` step and log its ``started`` row, committed; the reason to skip it.

        Enough where the engine's lock spans the whole run (PostgreSQL's
        advisory lock): no other runner can be inside the step meanwhile.
        """
        # start-up time: only a step outside a transaction needs planner.outside (a run of ordinary steps never does)
        from planner.outside import STARTED, started_detail

        with self.transaction():
            skipped = self.admit(step)
            if skipped is None:
                self.take_backup()
                self.ledger.log(step.version, step.direction, STARTED, step.migration.checksum,
                                detail=started_detail())
        return skipped

    def damaged(self, error: BaseException) -> DatabaseError | None:
        """The engine's "the database file is damaged" error behind ``error``, or ``None`` (SQLite overrides)."""
        return None

    def log_failure(self, step: Step, error: Exception, execution_ms: int | None) -> None:
        """Record the failure in its own small transaction; best effort, since the database may be the problem."""
        error = self.explained(step, error)
        try:
            with self.transaction():
                self.ledger.log(step.version, step.direction, FAILED, step.migration.checksum, execution_ms,
                                str(error))
        except Exception as exc:  # a line, not a traceback: the failure itself is what the command reports
            import logging  # start-up time: only this rare case logs, and most runs never import logging

            log = logging.getLogger(__name__)
            log.warning("could not log the failure of migration %s: %s", step.version, exc)
            log.debug("while logging the failure of migration %s", step.version, exc_info=True)

    def _failed(self, step: Step, index: int, error: Exception, started: float) -> Iterator[Event]:
        """Log the failure, report it as an event, then raise it."""
        broken = self.damaged(error) if not isinstance(error, DatabaseError) else None
        if broken is not None:  # never a failure row written into a damaged file
            broken.__cause__, error = error, broken
        if not isinstance(error, (DatabaseError, LedgerChanged)):
            self.log_failure(step, error, _ms_since(started))
        yield StepFailed(step, index, self.total, error, self.output.take())
        raise error

    # -- steps outside a transaction (``planner.outside``) ----------------------------

    @property
    def migration_conn(self) -> DriverT:
        """The connection a migration's proxy wraps: the session's own, or, while a step outside a transaction
        is checked or rehearsed, the engine's wrapper, which stands in for the driver's connection."""
        return self.conn if self._wrapped is None else self._wrapped

    def perform_outside(self, step: Step) -> str | None:
        """Run a ``transactional = False`` step's code in autocommit, checked statement by statement if confirmed.

        A refusal (``OutsideStepStopped``) stands even when the migration's
        code swallowed it or failed afterwards: the step stopped there.
        """
        checked = self.checked_for(step) if self.confirmation is not None else None
        self._wrapped = checked.connection if checked is not None else None
        try:
            with self.outside_transaction(), self.output.capture():
                detail = self.perform(step)
        except ExecutionError as exc:
            if checked is not None and checked.stopped is not None and checked.stopped is not exc:
                raise checked.stopped from exc
            raise
        finally:
            self._wrapped = None
        if checked is not None and checked.stopped is not None:
            raise checked.stopped
        return detail

    def rehearse(self, step: Step, observer: ObserverT, rehearsal: Rehearsal, record: PreviewStep) -> Exception | None:
        """Run ``step`` inside the preview's transaction through ``rehearsal``; why the preview cannot go beyond
        it (then ``record.skipped`` says so, and its work so far is undone), or ``None`` once it ran.

        A savepoint undoes the partial work (the same SQL on both engines);
        a failure is raised as any step's.
        """
        conn = self.conn
        self._wrapped = rehearsal.connection
        rehearsal.observer = observer
        conn.execute("SAVEPOINT apm_rehearsal")
        started = time.perf_counter()
        try:
            try:
                skipped = self.attempt(step, observer)
            except ExecutionError:
                if rehearsal.beyond is None:
                    raise
            if rehearsal.beyond is not None:  # raised, or swallowed by the migration's code: the same
                conn.execute("ROLLBACK TO SAVEPOINT apm_rehearsal")
                conn.execute("RELEASE SAVEPOINT apm_rehearsal")
                observer.stop()
                record.output = self.output.take()
                record.skipped = str(rehearsal.beyond)
                record.duration_ms = (time.perf_counter() - started) * 1000
                return rehearsal.beyond
            conn.execute("RELEASE SAVEPOINT apm_rehearsal")
            record.skipped = skipped
            record.passed_over = list(rehearsal.passed_over)
            return None
        finally:
            self._wrapped = None

    # -- the ways to run -------------------------------------------------------------

    def stepwise(self) -> Iterator[Event]:
        """One transaction per step: a failure undoes that step only."""
        for index, step in enumerate(self.plan.steps, 1):
            yield StepStarted(step, index, self.total)
            started = time.perf_counter()
            try:
                if step.migration.transactional:
                    with self.transaction():
                        skipped = self.attempt(step)
                else:
                    skipped = self.attempt_outside_transaction(step)
            except Exception as exc:
                yield from self._failed(step, index, exc, started)  # raises
            if skipped is not None:
                yield StepSkipped(step, index, self.total, skipped)
            else:
                self.after_commit(step)
                yield StepFinished(step, index, self.total, (time.perf_counter() - started) * 1000, self.output.take())

    def atomic(self) -> Iterator[Event]:
        """The whole plan in one transaction: all of it, or none of it."""
        if not self.plan.steps:
            return
        index, step = 1, self.plan.steps[0]
        started = time.perf_counter()
        try:
            with self.transaction():
                for index, step in enumerate(self.plan.steps, 1):
                    yield StepStarted(step, index, self.total)
                    started = time.perf_counter()
                    skipped = self.attempt(step)
                    if skipped is not None:
                        yield StepSkipped(step, index, self.total, skipped)
                        continue
                    self.after_commit(step)  # visible to later steps of this same transaction
                    yield StepFinished(step, index, self.total, (time.perf_counter() - started) * 1000,
                                       self.output.take())
        except Exception as exc:
            yield from self._failed(step, index, exc, started)

    def preview(self, result: Preview, observer: ObserverT, *, make_plan: MakePlan | None = None,
                accept: Callable[[Preview], bool] | None = None, on_event: Callable[[Event], None] | None = None,
                log_failures: bool = True) -> None:
        """The whole plan in one transaction, each step watched by ``observer``; committed only if accepted.

        ``make_plan(ledger)`` plans again inside the lock, from the ledger as
        it is now, so a concurrent runner can never make the plan stale. With
        ``accept=None`` (a dry run) the transaction is always rolled back, as
        it is when a step cannot run inside it (``transactional = False``). A
        failing step rolls everything back and becomes ``result``'s error;
        only ``Interrupted`` and problems with the database itself are raised.
        Each migration's code therefore runs once per preview.
        """
        started = time.perf_counter()
        failed: tuple[Step, PreviewStep, float] | None = None
        try:
            with self.transaction():
                if make_plan is not None:
                    planned = make_plan(self.ledger_for_plan())
                    if [(s.version, s.direction) for s in planned] != [(s.version, s.direction) for s in result.plan]:
                        emit(on_event, Replanned("the ledger changed since the plan was shown", planned))
                    result.plan = planned
                    self.use(planned)
                if self.plan.steps:  # after planning again: nothing left to run, nothing to copy
                    self.take_backup()
                outside: set[str] = set()  # left out (``left_out``), with what needs them first
                for index, step in enumerate(self.plan.steps, 1):
                    emit(on_event, StepStarted(step, index, self.total))
                    record = PreviewStep(step.version, step.direction, step.migration.description)
                    result.steps.append(record)
                    step_started = time.perf_counter()
                    rehearsal = None if step.migration.transactional else self.rehearsal_for(step)
                    record.skipped = left_out(step, outside, self._needs, rehearsed=rehearsal is not None)
                    if record.skipped is not None:  # shown, never run, never committed
                        emit(on_event, StepSkipped(step, index, self.total, record.skipped))
                        continue
                    observer.start_step()
                    try:
                        if rehearsal is None:
                            record.skipped = self.attempt(step, observer)
                        elif self.rehearse(step, observer, rehearsal, record) is not None:  # cannot go beyond it
                            outside.add(step.version)
                            # rehearse set record.skipped to its reason, which mypy cannot see through the call.
                            emit(on_event, StepSkipped(step, index, self.total, cast(str, record.skipped)))
                            continue
                    except Exception as exc:
                        observer.stop()
                        record.output = self.output.take()
                        record.error = exc
                        record.duration_ms = (time.perf_counter() - step_started) * 1000
                        failed = (step, record, step_started)
                        emit(on_event, StepFailed(step, index, self.total, exc, record.output))
                        raise _Discard from exc
                    record.changes, record.impact, record.sql = observer.end_step()
                    record.output = self.output.take()
                    record.duration_ms = (time.perf_counter() - step_started) * 1000
                    if record.skipped is not None:
                        emit(on_event, StepSkipped(step, index, self.total, record.skipped))
                    else:
                        self.after_commit(step)  # visible to later steps of this transaction
                        emit(on_event, StepFinished(step, index, self.total, record.duration_ms, record.output))
                result.duration_ms = (time.perf_counter() - started) * 1000
                if accept is None or any(is_left_out(s.skipped) for s in result.steps) or not accept(result):
                    raise _Discard
            result.committed = True
        except _Discard:
            pass
        # A dry run (``accept=None``) leaves the database as it found it, its log included: a rehearsal's
        # failure is the command's to report, not the database's state (``apm fleet status`` reads the log).
        if failed is not None and log_failures and accept is not None and not isinstance(failed[1].error,
                                                                                           DatabaseError):
            step, record, step_started = failed
            self.log_failure(step, cast(Exception, record.error), _ms_since(step_started))  # set where failed is


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)

