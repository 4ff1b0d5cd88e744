"""Running plans on PostgreSQL: the advisory lock, one transaction per step, and the preview.

A run takes a session-level advisory lock first and keeps it to the end,
so concurrent runners serialize; the plan is made again inside it from
the ledger as it is then (``make_plan``), so every migration is applied
exactly once however many runners start together. The server releases the
lock when the connection ends, a SIGKILL included. Each step is one
transaction holding the migration and its ledger and log rows; PostgreSQL's
DDL is transactional, so a failure or a kill leaves the ledger equal to the
schema. ``transactional = False`` steps (``CREATE INDEX CONCURRENTLY``) run
in autocommit between a ``started`` log row and their ledger row, as on SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from planner.engines.pg_connection import PgMigrationConnection
from planner.engines.pg_ledger import PgLedger
from planner.errors import (
    AlreadyApplied,
    DatabaseError,
    ExecutionError,
    Interrupted,
    LedgerChanged,
    MigrationFailed,
    NotApplied,
    ValidationFailed,
)
from planner.events import Event, Replanned, RunResult, StepFailed, StepFinished, StepSkipped, StepStarted
from planner.ledger import APPLY, FAILED, MARK_APPLIED, MARK_ROLLED_BACK, OK, ROLLBACK, SKIPPED, LedgerEntry
from planner.plan import Plan, Step, refuse_non_transactional, step_conflicts
from planner.preview import Preview, PreviewStep

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.migration import Migration

NOT_PREVIEWED = "not previewed: it runs outside any transaction (transactional = False)"


class _Discard(Exception):
    """Leave the preview's transaction by rolling it back."""


class PgSession:
    """One locked connection: the applied set (exact, since every runner holds the same lock) and the step work."""

    def __init__(self, conn: Any, ledger: PgLedger, catalog: Catalog | None, plan: Plan):
        self.conn, self.ledger, self.catalog = conn, ledger, catalog
        self.plan = plan
        self._ready = False
        self._deferrable: bool | None = None
        self.applied = self._read_applied()

    def _has_deferrable(self) -> bool:
        """Whether any constraint of the database is DEFERRABLE, asked once per run (migrations that make one
        say so through their connection, ``may_defer``)."""
        if self._deferrable is None:
            self._deferrable = bool(self.conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE condeferrable)").fetchone()[0])
        return self._deferrable

    def _read_applied(self) -> set[str]:
        recorded = self.ledger.applied_versions()
        if self.catalog is None:
            return set(recorded)
        applied = {self.catalog.canonical(v) or v for v in recorded}
        return set.union(*self.catalog.split_applied(applied)) if self.catalog.has_squashes else applied

    def _dependents(self, version: str) -> list[str]:
        if self.catalog is not None:
            return self.catalog.graph.dependents(version) if version in self.catalog.graph else []
        return [s.version for s in self.plan.steps if version in s.migration.depends_on]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN, the ledger tables ready; COMMIT, or ROLLBACK on anything (psycopg's block does both)."""
        applied = set(self.applied)
        try:
            with self.conn.transaction():
                if not self._ready:
                    self.ledger.ensure_schema()
                yield
        except BaseException:
            self.applied = applied  # what the rolled-back transaction counted is undone
            raise
        self._ready = True

    def admit(self, step: Step) -> str | None:
        is_applied = step.version in self.applied
        reason = None
        if step.direction == APPLY and is_applied:
            reason = "already applied (by another process since the plan was made)"
        elif step.direction == ROLLBACK and not is_applied:
            reason = "already rolled back (by another process since the plan was made)"
        if reason is not None:
            self.ledger.log(step.version, step.direction, SKIPPED, step.migration.checksum, detail=reason)
            return reason
        conflicts = step_conflicts(step, self.applied, self._dependents)
        if conflicts:
            raise LedgerChanged(step.version, step.direction, conflicts)
        return None

    def perform(self, step: Step, observer: Any = None) -> None:
        """The migration's code and its checks; anything it raises fails the step."""
        migration = step.migration
        applying = step.direction == APPLY
        proxy = PgMigrationConnection(self.conn, migration.version, step.direction, observer)
        try:
            if applying and migration.validate_pre is not None and not migration.validate_pre(proxy):
                raise ValidationFailed(migration.version, step.direction, "validate_pre")
            function = migration.upgrade if applying else migration.downgrade
            if function is None:
                raise MigrationFailed(migration.version, step.direction,
                                      NotImplementedError("no downgrade(conn) function"))
            function(proxy)
            if proxy.tampered is None:
                # Deferred foreign keys are checked now, so a violation is this migration's failure, not COMMIT's.
                # Only a database that has deferrable constraints (or may have just got one) needs the round trip.
                if proxy.may_defer:
                    self._deferrable = True
                if self._has_deferrable():
                    self.conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
                if applying and migration.validate_post is not None and not migration.validate_post(proxy):
                    raise ValidationFailed(migration.version, step.direction, "validate_post")
            if proxy.tampered is not None:
                raise proxy.tampered
        except (Interrupted, ExecutionError, DatabaseError):
            raise
        except BaseException as exc:
            raise MigrationFailed(migration.version, step.direction, exc) from exc

    def record(self, step: Step, execution_ms: int | None, action: str | None = None) -> None:
        migration = step.migration
        if step.direction == APPLY:
            self.ledger.record_applied_and_log(migration, execution_ms, action or step.direction)
            self.applied.add(step.version)
            return
        else:
            self.ledger.record_unapplied(migration.version)
            for replaced in migration.replaces:
                self.ledger.record_unapplied(replaced)
            self.applied.discard(step.version)
        self.ledger.log(migration.version, action or step.direction, OK, migration.checksum, execution_ms)

    def attempt(self, step: Step, observer: Any = None) -> str | None:
        skipped = self.admit(step)
        if skipped is not None:
            return skipped
        started = time.perf_counter()
        self.perform(step, observer)
        self.record(step, round((time.perf_counter() - started) * 1000))
        return None

    def attempt_outside_transaction(self, step: Step) -> str | None:
        from planner.errors import ForeignKeyViolation, NonTransactionalFailed
        from planner.nontransactional import STARTED

        with self.transaction():
            skipped = self.admit(step)
            if skipped is not None:
                return skipped
            self.ledger.log(step.version, step.direction, STARTED, step.migration.checksum,
                            detail="transactional = False: runs outside a transaction")
        started = time.perf_counter()
        try:
            self.perform(step)
        except (MigrationFailed, ValidationFailed, ForeignKeyViolation) as exc:
            raise NonTransactionalFailed(step.version, step.direction, getattr(exc, "cause", exc)) from exc
        with self.transaction():
            self.record(step, round((time.perf_counter() - started) * 1000))
        return None

    def log_failure(self, step: Step, error: Exception, execution_ms: int | None) -> None:
        try:
            with self.transaction():
                self.ledger.log(step.version, step.direction, FAILED, step.migration.checksum, execution_ms,
                                str(error))
        except Exception:  # best effort: the connection may be the problem
            pass

    def stepwise(self) -> Iterator[Event]:
        total = len(self.plan.steps)
        for index, step in enumerate(self.plan.steps, 1):
            yield StepStarted(step, index, total)
            started = time.perf_counter()
            try:
                if step.migration.transactional:
                    with self.transaction():
                        skipped = self.attempt(step)
                else:
                    skipped = self.attempt_outside_transaction(step)
            except Exception as exc:
                if not isinstance(exc, (DatabaseError, LedgerChanged)):
                    self.log_failure(step, exc, round((time.perf_counter() - started) * 1000))
                yield StepFailed(step, index, total, exc)
                raise
            if skipped is not None:
                yield StepSkipped(step, index, total, skipped)
            else:
                yield StepFinished(step, index, total, (time.perf_counter() - started) * 1000)

    def atomic(self) -> Iterator[Event]:
        total = len(self.plan.steps)
        index, step, started = 0, None, time.perf_counter()
        try:
            with self.transaction():
                for index, step in enumerate(self.plan.steps, 1):
                    yield StepStarted(step, index, total)
                    started = time.perf_counter()
                    skipped = self.attempt(step)
                    if skipped is not None:
                        yield StepSkipped(step, index, total, skipped)
                    else:
                        yield StepFinished(step, index, total, (time.perf_counter() - started) * 1000)
        except Exception as exc:
            if step is not None:
                if not isinstance(exc, (DatabaseError, LedgerChanged)):
                    self.log_failure(step, exc, round((time.perf_counter() - started) * 1000))
                yield StepFailed(step, index, total, exc)
            raise


def _same(a: Plan, b: Plan) -> bool:
    return [(s.version, s.direction) for s in a] == [(s.version, s.direction) for s in b]


class PgRunner:
    """``PlanRunner`` for PostgreSQL (see ``planner.engines.base``)."""

    def __init__(self, engine: Any, catalog: Catalog | None = None):
        """``engine``: a ``planner.engines.postgresql.PostgresEngine`` (its ``locked()`` and ``ledger_schema``)."""
        self.engine = engine
        self.catalog = catalog

    def applied(self) -> dict[str, LedgerEntry]:
        return self.engine.applied()

    def run(self, plan: Plan, on_event: Callable[[Event], None] | None = None, *, atomic: bool = False) -> RunResult:
        return self.migrate(lambda _ledger: plan, on_event, atomic=atomic, plan=plan)

    def migrate(self, make_plan: Callable[[dict[str, LedgerEntry]], Plan],
                on_event: Callable[[Event], None] | None = None, *, atomic: bool = False,
                plan: Plan | None = None) -> RunResult:
        """Lock, plan from the ledger as it is inside the lock, run; the first failure is raised."""
        with self.engine.locked() as conn:
            ledger = PgLedger(conn, self.engine.ledger_schema)
            planned = make_plan(ledger.applied_migrations())
            if plan is not None and not _same(plan, planned):
                _emit(on_event, Replanned("the ledger changed since the plan was shown", planned))
            result = RunResult(planned)
            if not planned.steps:
                return result
            if atomic:
                refuse_non_transactional(planned)
            session = PgSession(conn, ledger, self.catalog, planned)
            for event in session.atomic() if atomic else session.stepwise():
                if isinstance(event, StepFinished):
                    result.done.append(event.step)
                elif isinstance(event, StepSkipped):
                    result.skipped.append(event.step)
                _emit(on_event, event)
            return result

    def preview(self, plan: Plan, *, make_plan: Callable[[dict[str, LedgerEntry]], Plan] | None = None,
                accept: Callable[[Preview], bool] | None = None, on_event: Callable[[Event], None] | None = None,
                capture_sql: bool = False) -> Preview:
        """The whole plan in one transaction under the lock, watched; committed only if ``accept(preview)``."""
        from planner.engines.pg_observe import PgObserver

        started = time.perf_counter()
        result = Preview(plan)
        with self.engine.locked() as conn:
            ledger = PgLedger(conn, self.engine.ledger_schema)
            if make_plan is not None:
                result.plan = make_plan(ledger.applied_migrations())
                if not _same(result.plan, plan):
                    _emit(on_event, Replanned("the ledger changed since the plan was shown", result.plan))
            session = PgSession(conn, ledger, self.catalog, result.plan)
            observer = PgObserver(conn, capture_sql=capture_sql)
            total = len(result.plan.steps)
            failed = None
            try:
                with session.transaction():
                    for index, step in enumerate(result.plan.steps, 1):
                        _emit(on_event, StepStarted(step, index, total))
                        record = PreviewStep(step.version, step.direction, step.migration.description)
                        result.steps.append(record)
                        step_started = time.perf_counter()
                        if not step.migration.transactional:
                            record.skipped = NOT_PREVIEWED
                            _emit(on_event, StepSkipped(step, index, total, record.skipped))
                            continue
                        observer.start_step()
                        try:
                            record.skipped = session.attempt(step, observer)
                        except Exception as exc:
                            observer.stop()
                            record.error = exc
                            record.duration_ms = (time.perf_counter() - step_started) * 1000
                            failed = (step, record, step_started)
                            _emit(on_event, StepFailed(step, index, total, exc))
                            raise _Discard from exc
                        record.changes, record.impact, record.sql = observer.end_step()
                        record.duration_ms = (time.perf_counter() - step_started) * 1000
                        if record.skipped is not None:
                            _emit(on_event, StepSkipped(step, index, total, record.skipped))
                        else:
                            _emit(on_event, StepFinished(step, index, total, record.duration_ms))
                    result.duration_ms = (time.perf_counter() - started) * 1000
                    if accept is None or any(s.skipped == NOT_PREVIEWED for s in result.steps) or not accept(result):
                        raise _Discard
                result.committed = True
            except _Discard:
                pass
            if failed is not None and not isinstance(failed[1].error, DatabaseError):
                step, record, step_started = failed
                session.log_failure(step, record.error, round((time.perf_counter() - step_started) * 1000))
        result.duration_ms = (time.perf_counter() - started) * 1000
        return result

    # -- marks: the ledger row without running the migration ----------------------

    def mark_applied(self, migration: Migration) -> None:
        self._mark(Step(migration, APPLY), MARK_APPLIED)

    def mark_rolled_back(self, migration: Migration) -> None:
        self._mark(Step(migration, ROLLBACK), MARK_ROLLED_BACK)

    def mark_many(self, migrations: list[Migration], action: str) -> None:
        """A baseline: every one recorded in ONE transaction under the lock, or none (``AlreadyApplied``)."""
        steps = tuple(Step(m, APPLY) for m in migrations)
        with self.engine.locked() as conn:
            session = PgSession(conn, PgLedger(conn, self.engine.ledger_schema), self.catalog, Plan(APPLY, steps))
            with session.transaction():
                for step in steps:
                    if step.version in session.applied:
                        raise AlreadyApplied(step.version)
                    conflicts = step_conflicts(step, session.applied, session._dependents)
                    if conflicts:
                        raise LedgerChanged(step.version, step.direction, conflicts)
                    session.record(step, None, action)

    def _mark(self, step: Step, action: str) -> None:
        with self.engine.locked() as conn:
            session = PgSession(conn, PgLedger(conn, self.engine.ledger_schema), self.catalog,
                                Plan(step.direction, (step,)))
            with session.transaction():
                if (step.version in session.applied) == (step.direction == APPLY):
                    raise AlreadyApplied(step.version) if step.direction == APPLY else NotApplied(step.version)
                conflicts = step_conflicts(step, session.applied, session._dependents)
                if conflicts:
                    raise LedgerChanged(step.version, step.direction, conflicts)
                session.record(step, None, action)


def _emit(on_event: Callable[[Event], None] | None, event: Event) -> None:
    if on_event is not None:
        on_event(event)
