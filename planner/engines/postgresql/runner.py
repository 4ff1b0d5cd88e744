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

A session on PostgreSQL: what the server needs around the step protocol of ``planner.session``.

The connection is in autocommit mode, so the transactions are exactly the
ones opened here (``conn.transaction()``: BEGIN ... COMMIT, or ROLLBACK on
an exception). PostgreSQL's DDL is transactional, so a migration and its
ledger and log rows commit together. Every runner of one ledger holds the
same advisory lock for its whole run (``PostgresEngine.locked``), so the
applied set read once stays true until our own commits change it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import TYPE_CHECKING, Any

from planner.engines.postgresql.connection import PgMigrationConnection
from planner.engines.postgresql.ledger import PARAMETER_TYPES, PgLedger
from planner.engines.postgresql.lock_timeout import LockGuard, apply_declared, is_lock_timeout, timed_out
from planner.engines.postgresql.locks import attach, lock_watch
from planner.engines.postgresql.observe import PgObserver
from planner.engines.postgresql.outside import Checked, IndexBuilds, Rehearsed
from planner.engines.postgresql.step_catalog import PreparedSet, Statement
from planner.errors import MigrationFailed, NonTransactionalFailed
from planner.events import Event, Replanned, RunResult, emit
from planner.ledger import APPLY, FAILED, OK, LedgerEntry
from planner.locks import LockPolicy, LockSettings
from planner.marks import MarksThroughSessions
from planner.plan import Plan, Step, refuse_non_transactional
from planner.preview import Preview
from planner.session import Session

if TYPE_CHECKING:
    from psycopg import Connection

    from planner.catalog import Catalog
    from planner.engines.base import Observer
    from planner.outside import Confirmation


class PgSession(Session["Connection[Any]", "Observer", PgMigrationConnection]):
    """One locked connection to a PostgreSQL database.

    The observer is the contract's: a preview's ``PgObserver``, or the lock
    measurements wrapped around it (``postgresql.locks.LockWatch``).
    """

    ledger: PgLedger  # PostgreSQL's: it writes a step's ledger and log rows in one statement (``record``)

    def __init__(self, conn: Connection[Any], ledger: PgLedger, plan: Plan, *, catalog: Catalog | None = None,
                 atomic: bool = False, before: Callable[[], object] | None = None,
                 locks: LockGuard | None = None):
        super().__init__(conn, ledger, plan, catalog=catalog, atomic=atomic, before=before)
        self.locks = locks  # the run's lock timeouts (``postgresql.lock_timeout``); ``None`` for marks
        #: Which lock findings stop a checked ``transactional = False`` statement (``planner.locks.LockPolicy``).
        self.lock_policy: Any = None
        self._ready = False
        self._deferrable: bool | None = None
        #: A preview's ``PgObserver.settle``: the catalog readings that waited, read before the transaction ends.
        self.settle_preview: Callable[..., None] | None = None
        #: A preview's ``PgObserver.open_step``: the step's savepoint, opened before the session's own statements.
        self.open_step: Callable[..., None] = lambda eager=False: None
        #: A preview's ``PgObserver.close_step``: the next step's savepoint, sent behind this step's ledger row.
        self.close_step: Callable[[], str] = lambda: ""
        #: A preview's statements prepared by name: the ledger rows' statement is planned once, not per step.
        self.prepared: PreparedSet | None = None
        self._builds: IndexBuilds | None = None  # the indexes of the step outside a transaction under way

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN, the ledger tables ready; COMMIT, or ROLLBACK on anything (psycopg's block does both)."""
        try:
            with self.conn.transaction():
                if not self._ready:
                    self.ledger.ensure_schema()
                try:
                    yield
                except Exception:
                    if self.settle_preview is not None:  # a dry run's or a refused preview's last lines
                        self.settle_preview(failed=True)
                    raise
        except BaseException:
            self._applied = None  # it may have counted what was just rolled back
            raise
        self._ready = True

    def applied_now(self) -> set[str]:
        if self._applied is None:
            self._applied = self.read_applied()
        return self._applied

    def connection_for(self, step: Step, observer: Observer | None = None) -> PgMigrationConnection:
        conn = self.migration_conn if self._builds is None else self._builds.wrap(self.migration_conn)
        return PgMigrationConnection(conn, step.migration.version, step.direction, observer)

    def perform_outside(self, step: Step) -> str | None:
        """As every engine's, with its indexes checked (``postgresql.outside.IndexBuilds``): one left invalid
        fails the step, unrecorded; a failure names its blocker and what it left."""
        builds = self._builds = IndexBuilds(self.conn, step.migration.lock_timeout,
                                            self.locks.settings if self.locks else None)
        try:
            detail = super().perform_outside(step)
        except MigrationFailed as exc:
            blockers = self.locks.blockers() if self.locks is not None and is_lock_timeout(exc) else []
            raise MigrationFailed(step.version, step.direction,
                                  builds.failure(exc.cause, blockers, builds.left_invalid())) from exc
        finally:
            self._builds = None
        left = builds.left_invalid()
        if left:
            raise MigrationFailed(step.version, step.direction, builds.failure(None, [], left))
        return detail

    def checked_for(self, step: Step) -> Checked:

        return Checked(self.conn, self.ledger.log_table, step.version, step.direction, self.confirmation,
                       policy=self.lock_policy or LockPolicy(), settings=self.locks.settings if self.locks else None,
                       declared=step.migration.lock_timeout, allow=step.migration.allow)

    def rehearsal_for(self, step: Step) -> Rehearsed:
        self.open_step(eager=True)  # the rehearsal's own savepoint comes after the step's, not around it
        return Rehearsed(self.conn, step.version, step.direction)

    def call(self, step: Step, function: Callable[[PgMigrationConnection], object], proxy: PgMigrationConnection,
             observer: Observer | None = None) -> None:
        """The migration's code, under its own ``lock_timeout`` when it declares one."""
        declared = step.migration.lock_timeout
        if observer is not None and hasattr(observer, "declare"):
            observer.declare(declared, step.version)  # "no lock timeout" is judged by the step's own; findings name it
        if declared is None or self.locks is None:
            function(proxy)
        else:
            self.open_step()
            apply_declared(self.conn, declared, self.locks.settings, lambda: function(proxy))

    def explained(self, step: Step, error: Exception) -> Exception:
        """A lock timeout's row says which attempt it was and which session held the lock; a step outside a
        transaction is never tried again, and its error already says so (``perform_outside``)."""
        if self.locks is None or not step.migration.transactional:
            return error
        return self.locks.explain(step.version, error)

    def verify(self, step: Step, proxy: PgMigrationConnection, observer: Observer | None = None) -> None:
        """Deferred foreign keys checked now, so a violation is this migration's failure, not COMMIT's.

        Only a database that has deferrable constraints (or may have just got
        one: the migration's SQL mentioned deferring) needs the round trip.
        """
        self.open_step()
        if self._deferrable is None:
            row = self.conn.execute("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE condeferrable)").fetchone()
            self._deferrable = bool(row and row[0])  # EXISTS always answers one row
        if self._deferrable or proxy.may_defer:
            self._deferrable = True
            self.conn.execute("SET CONSTRAINTS ALL IMMEDIATE")

    def record(self, step: Step, execution_ms: int | None, action: str | None = None,
               detail: str | None = None) -> None:
        migration = step.migration
        self.open_step()
        # A rehearsed step (not transactional) still has its rehearsal's savepoint to release after its ledger row.
        then = self.close_step() if migration.transactional else ""
        run = partial(self._prepared, then=then) if self.prepared is not None else None
        if step.direction == APPLY:
            self.ledger.record_applied_and_log(migration, execution_ms, action or step.direction, detail, run)
            return
        for replaced in migration.replaces:  # a squash applied as its chain: those rows are its row
            self.ledger.record_unapplied(replaced)
        self.ledger.record_unapplied_and_log(migration, execution_ms, action or step.direction, detail, run)

    def _prepared(self, sql: str, parameters: dict[str, Any], then: str = "") -> None:
        """``sql`` run as a statement the preview prepared (the same text every step: one per ledger table);
        ``then``: sent behind it in the same round trip (``close_step``)."""
        statement = _LEDGER_STATEMENTS.get(sql)
        if statement is None:
            statement = Statement(f"ledger_{len(_LEDGER_STATEMENTS)}", sql, PARAMETER_TYPES)
            _LEDGER_STATEMENTS[sql] = statement
        assert self.prepared is not None  # record passes this only then
        self.prepared.execute(self.conn, statement, parameters, then=then).close()


_LEDGER_STATEMENTS: dict[str, Statement] = {}


def _judged(accept: Callable[[Preview], bool] | None, watch: Any, ledger: PgLedger) -> Callable[[Preview], bool] | None:
    """``accept``, asked once the lock findings are on the preview's steps (the policy reads them); once
    accepted, each step's findings join its log row's detail, in the transaction about to commit."""
    if accept is None:
        return None

    def judged(preview: Preview) -> bool:
        watch.settle()  # every step's lines are there before anyone judges them
        attach(preview, watch)
        accepted = accept(preview)
        for step in preview.steps if accepted else ():
            if step.locks is not None and step.locks.findings and not step.skipped:
                ledger.conn.execute(
                    f"UPDATE {ledger.log_table} SET detail = concat_ws('; ', nullif(detail, ''), %s::text) WHERE id = "
                    f"(SELECT max(id) FROM {ledger.log_table} WHERE version = %s AND outcome = %s)",
                    ("; ".join(f"lock {f.describe()}" for f in step.locks.findings), step.version, OK))
        return accepted

    return judged


@contextmanager
def _unprepared(conn: Any) -> Iterator[None]:
    """psycopg prepares nothing on ``conn`` for the block: a preview's readings are prepared by name instead
    (``postgresql.prepared`` says why), and psycopg, preparing nothing, never deallocates them."""
    previous = conn.prepare_threshold
    conn.prepare_threshold = None
    try:
        yield
    finally:
        conn.prepare_threshold = previous


def _log_attempt(conn: Any, ledger: PgLedger, plans: list[Plan]) -> Callable[[str | None, BaseException], None]:
    """The run log's row for an attempt that ended taking its locks ahead (``LockGuard.take_ahead``), as a
    step's own failed attempt has one; best effort, as ``Session.log_failure``."""
    def record(version: str | None, error: BaseException) -> None:
        step = next((s for plan in plans for s in plan.steps if s.version == version), None)
        if step is not None:
            with suppress(Exception), conn.transaction():
                ledger.log(step.version, step.direction, FAILED, step.migration.checksum, None, str(error))
    return record


def _same(a: Plan, b: Plan) -> bool:
    return [(s.version, s.direction) for s in a] == [(s.version, s.direction) for s in b]


class PgRunner(MarksThroughSessions):
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
                plan: Plan | None = None, before: Callable[[], object] | None = None,
                confirm_outside: Confirmation | None = None) -> RunResult:
        """Lock, plan from the ledger as it is inside the lock, run; the first failure is raised.

        ``before()`` (the backup before a rollback) is taken inside the lock, in the first step's
        transaction once the ledger admitted it (``Session.take_backup``), as on SQLite: what it copies
        is exactly the database this run changes. A plan made again differently from the one shown
        counts as a re-plan (``RunResult.replans``). ``confirm_outside``: as ``sqlite.runner.Executor.migrate``.
        """
        with self.engine.locked() as conn, self._guard(conn, plan) as guard:
            ledger = PgLedger(conn, self.engine.ledger_schema)
            results: list[RunResult] = []
            plans: list[Plan] = []

            def once(attempt: int) -> RunResult:
                # A retry after a lock timeout plans again: what committed before it is not run twice.
                planned = make_plan(ledger.applied_migrations())
                plans[:] = [planned]
                if not results:
                    results.append(RunResult(planned))
                result = results[0]
                if attempt == 1 and plan is not None and not _same(plan, planned):
                    result.replans += 1
                    emit(on_event, Replanned("the ledger changed since the plan was shown", planned))
                if not planned.steps:
                    return result
                if atomic:
                    refuse_non_transactional(planned)
                session = PgSession(conn, ledger, planned, catalog=self.catalog, atomic=atomic, locks=guard,
                                    before=before)
                session.confirmation = confirm_outside
                session.lock_policy = self.engine.lock_policy  # gates its checked statements
                for event in session.atomic() if atomic else session.stepwise():
                    result.count(event)
                    emit(on_event, event)
                return result

            return guard.retrying(once, version_of=lambda error: getattr(error, "version", None),
                                  retryable=lambda e: not isinstance(e, NonTransactionalFailed),
                                  record=_log_attempt(conn, ledger, plans))

    def preview(self, plan: Plan, *, make_plan: Callable[[dict[str, LedgerEntry]], Plan] | None = None,
                accept: Callable[[Preview], bool] | None = None, on_event: Callable[[Event], None] | None = None,
                capture_sql: bool = False, before: Callable[[], object] | None = None) -> Preview:
        """The whole plan in one transaction under the lock, watched; committed only if ``accept(preview)``.

        ``before()`` runs inside the lock once the plan was made again there, as in ``migrate``.
        """
        started = time.perf_counter()
        with self.engine.locked() as conn, self._guard(conn, plan) as guard, _unprepared(conn):
            ledger = PgLedger(conn, self.engine.ledger_schema)

            tried: list[Preview] = []

            def once(attempt: int) -> Preview:
                # A lock timeout rolled the whole transaction back: the whole preview is tried again.
                result = Preview(plan)
                tried.append(result)
                session = PgSession(conn, ledger, plan, catalog=self.catalog, atomic=True, locks=guard,
                                    before=before)
                observer = PgObserver(conn, ledger.log_table, capture_sql=capture_sql, prepared=PreparedSet())
                session.settle_preview, session.open_step = observer.settle, observer.open_step
                session.close_step = observer.close_step
                session.prepared = observer.prepared
                watch = lock_watch(observer, conn, self.engine, guard.settings)
                session.preview(result, watch, make_plan=make_plan, accept=_judged(accept, watch, ledger),
                                on_event=on_event)
                attach(result, watch)  # a failed or dry-run preview reports them too
                return result

            def waiting_step(_error: BaseException) -> str | None:
                # The preview carries its failure: the step that waited is the last one it reached.
                steps = tried[-1].steps if tried else []
                return steps[-1].version if steps else None

            result = guard.retrying(once, failure=lambda r: r.error, version_of=waiting_step,
                                    record=_log_attempt(conn, ledger, [plan]))
            if is_lock_timeout(result.error):
                failed = result.steps[-1]
                failed.error = guard.final_error(failed.version)
            elif result.error is not None and timed_out(result.error) is not None:
                result.steps[-1].error = guard.timed_out(result.steps[-1].version, result.error, whole=True)
        result.duration_ms = (time.perf_counter() - started) * 1000
        return result

    @contextmanager
    def _guard(self, conn: Any, plan: Plan | None) -> Iterator[LockGuard]:
        """The run's lock timeouts on ``conn`` (``planner.engines.postgresql.lock_timeout``), for the block; the
        migrations' own (``lock_timeout = "..."``) from the catalog, since the plan is made again inside."""
        settings = self.engine.lock_settings or LockSettings()
        migrations = list(self.catalog) if self.catalog is not None else [s.migration for s in plan.steps] if plan \
            else []
        declared = {m.version: m.lock_timeout for m in migrations if m.lock_timeout is not None}
        guard = LockGuard(conn, settings, self.engine.connect, shown=self.engine.display, declared=declared)
        try:
            yield guard
        finally:
            guard.close()

    # -- marks: the ledger row without running the migration ----------------------

    def _marks(self, work: Callable[[PgSession], None], plan: Plan) -> None:
        with self.engine.locked() as conn:
            work(PgSession(conn, PgLedger(conn, self.engine.ledger_schema), plan, catalog=self.catalog))
