"""Running a plan against a SQLite file: one migration, one transaction.

For each step: switch foreign-key enforcement off (it cannot be switched
inside a transaction, and a table rebuild needs it off), ``BEGIN IMMEDIATE``,
re-read the ledger inside the write lock, run the migration through a
connection that cannot end the transaction, ``PRAGMA foreign_key_check``,
write the ledger row and the log row, ``COMMIT``, restore enforcement. Any
failure rolls back that step alone; the database is exactly as it was before
it, earlier steps stay applied. A SIGKILL at any moment leaves either the
step's whole transaction or none of it, which SQLite's journal guarantees.

One context manager, ``_Session.transaction``, owns that protocol (foreign
keys, BEGIN, the ledger tables, COMMIT or ROLLBACK) for every kind of work:
a step, a whole ``--atomic`` plan, a mark, the log row of a failure.

Re-reading the ledger inside the lock is what makes concurrent runs safe:
whoever gets the lock second finds the step done and skips it, and
``Executor.migrate`` plans again when another process changed the ledger
under the plan (a rollback that ran first, say).

Whatever a migration raises, ``SystemExit`` and ``KeyboardInterrupt``
included, fails its step like any exception. Only ``Interrupted`` (what the
command raises on Ctrl-C) stops the run as an interruption: the open step is
rolled back and the exception goes on up.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from planner.connection import MigrationConnection
from planner.database import DEFAULT_BUSY_TIMEOUT, connect, open_read_only, translate_error
from planner.errors import (
    AlreadyApplied,
    DatabaseDirectoryMissing,
    DatabaseError,
    DatabaseNotFound,
    ExecutionError,
    ForeignKeyViolation,
    Interrupted,
    LedgerChanged,
    MigrationFailed,
    NotApplied,
    ValidationFailed,
)
from planner.events import Event, Replanned, RunResult, StepFailed, StepFinished, StepSkipped, StepStarted
from planner.ledger import APPLY, FAILED, MARK_APPLIED, MARK_ROLLED_BACK, OK, ROLLBACK, SKIPPED, Ledger, LedgerEntry
from planner.migration import Migration
from planner.plan import Plan, Step, step_conflicts
from planner.versions import number

if TYPE_CHECKING:
    from planner.catalog import Catalog

log = logging.getLogger(__name__)
# A library logs; whoever runs it decides where that goes (the CLI shows it with --debug).
log.addHandler(logging.NullHandler())

#: How many violations ``foreign_key_check`` reports at most; the first one is in the message.
_MAX_VIOLATIONS = 100
#: How many times ``migrate`` plans again before giving up on a ledger that keeps changing.
_REPLANS = 10

__all__ = ["Executor", "Event", "RunResult", "StepFailed", "StepFinished", "StepSkipped", "StepStarted",
           "Replanned", "foreign_keys_enabled", "foreign_keys_off"]


def foreign_keys_enabled(conn: sqlite3.Connection) -> bool:
    """Whether the connection enforces foreign keys right now."""
    return bool(conn.execute("PRAGMA foreign_keys").fetchone()[0])


@contextmanager
def foreign_keys_off(conn: sqlite3.Connection, previous: bool | None = None) -> Iterator[None]:
    """Turn enforcement off for the block, then restore what it was, even on failure.

    Must be entered outside any transaction: inside one, ``PRAGMA
    foreign_keys`` is silently ignored. ``previous`` saves the lookup when the
    caller already knows the setting (migrations cannot change it: the
    connection proxy ignores the PRAGMA).
    """
    if previous is None:
        previous = foreign_keys_enabled(conn)
    if previous:
        conn.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        if previous:
            conn.execute("PRAGMA foreign_keys = ON")


class Executor:
    """Runs plans against one database file.

    ``catalog``, when given, lets the in-lock check of a rollback step see
    applied dependents that are not in the plan (applied meanwhile by another
    process); without it only the plan's own migrations are considered.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        create: bool = False,
        catalog: Catalog | None = None,
    ):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.create = create
        self.catalog = catalog

    def applied(self) -> dict[str, LedgerEntry]:
        """The ledger as it is now, read without writing; ``{}`` for a database that may still be created."""
        conn = open_read_only(self.path, self.busy_timeout)
        if conn is None:
            if not self.create:
                raise DatabaseNotFound(self.path) if self.path.parent.is_dir() else DatabaseDirectoryMissing(self.path)
            return {}
        try:
            return Ledger(conn).applied_migrations()
        finally:
            conn.close()

    # -- running ---------------------------------------------------------------

    def run(self, plan: Plan, on_event: Callable[[Event], None] | None = None, *, atomic: bool = False) -> RunResult:
        """Run ``plan``, reporting each step to ``on_event``; raise the first failure.

        Raises ``ExecutionError`` (a migration failed; its step was rolled
        back), ``LedgerChanged`` (another process changed what the plan
        assumed) or ``DatabaseError`` (the file itself). Steps committed before
        the failure stay committed, unless ``atomic``.
        """
        result = RunResult(plan)
        for event in self.events(plan, atomic=atomic):
            _tally(result, event)
            if on_event is not None:
                on_event(event)
        return result

    def migrate(
        self,
        make_plan: Callable[[dict[str, LedgerEntry]], Plan],
        on_event: Callable[[Event], None] | None = None,
        *,
        atomic: bool = False,
        plan: Plan | None = None,
    ) -> RunResult:
        """Run what ``make_plan(ledger)`` asks for, planning again whenever another process changed the ledger.

        A plan is made from the ledger as read before the lock; when a step
        finds, inside the lock, that the ledger no longer fits it
        (``LedgerChanged``), nothing of that step ran, so the rest is planned
        again from the ledger as it is now and the run carries on. ``plan``
        is the first plan, when the caller already made (and showed) it.
        A refusal of the new plan (a rollback that now has applied
        dependents, say) is raised as it is.
        """
        if plan is None:
            plan = make_plan(self.applied())
        result = RunResult(plan)
        for attempt in range(_REPLANS + 1):
            try:
                for event in self.events(plan, atomic=atomic):
                    _tally(result, event)
                    if on_event is not None:
                        on_event(event)
                return result
            except LedgerChanged as changed:
                if attempt == _REPLANS:
                    raise
                plan = make_plan(self.applied())
                result.replans += 1
                if on_event is not None:
                    on_event(Replanned(str(changed), plan))
        return result  # pragma: no cover (the loop returns or raises)

    def events(self, plan: Plan, *, atomic: bool = False) -> Iterator[Event]:
        """Run ``plan`` lazily, yielding its events; the failure is raised after its ``StepFailed``."""
        if not plan.steps:
            return
        conn = connect(self.path, create=self.create, busy_timeout=self.busy_timeout)
        try:
            session = _Session(self, conn, plan, atomic=atomic)
            yield from session.atomic() if atomic else session.stepwise()
        finally:
            conn.close()

    # -- marks -----------------------------------------------------------------

    def mark_applied(self, migration: Migration) -> None:
        """Record ``migration`` as applied without running it (its changes are already in the schema)."""
        self._mark(Step(migration, APPLY), MARK_APPLIED)

    def mark_rolled_back(self, migration: Migration) -> None:
        """Remove ``migration``'s ledger row without running its downgrade."""
        self._mark(Step(migration, ROLLBACK), MARK_ROLLED_BACK)

    def _mark(self, step: Step, action: str) -> None:
        conn = connect(self.path, create=self.create, busy_timeout=self.busy_timeout)
        try:
            session = _Session(self, conn, Plan(step.direction, (step,)))
            with session.transaction():
                applied = session.applied_now()
                if session.skip_reason(step, applied) is not None:
                    raise AlreadyApplied(step.version) if step.direction == APPLY else NotApplied(step.version)
                session.check(step, applied)
                session.record(step, None, action)
        finally:
            conn.close()


def _tally(result: RunResult, event: Event) -> None:
    if isinstance(event, StepFinished):
        result.done.append(event.step)
    elif isinstance(event, StepSkipped):
        result.skipped.append(event.step)


class _Session:
    """One run over one connection: the transaction protocol, the per-step work, and the ledger cache.

    Re-reading the whole ledger inside every step's lock would make a long
    plan quadratic. ``PRAGMA data_version`` changes exactly when another
    connection commits, so the applied set is re-read only then; our own
    commits update it directly.
    """

    def __init__(self, executor: Executor, conn: sqlite3.Connection, plan: Plan, *, atomic: bool = False):
        self.executor = executor
        self.atomic_run = atomic
        self.conn = conn
        self.plan = plan
        self.ledger = Ledger(conn)
        self.total = len(plan.steps)
        self.foreign_keys = foreign_keys_enabled(conn)
        self._applied: set[str] | None = None
        self._data_version: int | None = None
        # Once a transaction that ensured the ledger schema has committed, the
        # tables are durable and need not be looked up again in this run.
        self._ledger_ready = False
        self._ledger_checked = False
        catalog = executor.catalog
        self._canonical: dict[int, str] = {}
        if catalog is None:
            # Without a catalog, the plan's own migrations are all there is to match rows and dependents to.
            self._canonical = {m.number: m.version for m in (s.migration for s in plan.steps)}
            self._plan_dependents: dict[str, list[str]] = {}
            for step in plan.steps:
                for dependency in step.migration.depends_on:
                    self._plan_dependents.setdefault(dependency, []).append(step.version)

    # -- the one transaction path ---------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Foreign keys off, ``BEGIN IMMEDIATE``, the ledger tables ready; ``COMMIT``, or ``ROLLBACK`` on anything.

        Every write this module makes goes through here, so BEGIN, COMMIT,
        ROLLBACK and foreign-key enforcement are decided in one place.
        """
        with foreign_keys_off(self.conn, self.foreign_keys):
            self._sql("BEGIN IMMEDIATE")
            try:
                if not self._ledger_ready:
                    self.ledger.ensure_schema()
                    self._ledger_checked = True
                yield
            except BaseException:
                self._rollback()
                raise
            self._sql("COMMIT")
            self._ledger_ready = self._ledger_checked

    def _sql(self, statement: str) -> None:
        """BEGIN or COMMIT; a lock or permission problem there is about the file, not the migration."""
        try:
            self.conn.execute(statement)
        except sqlite3.Error as exc:
            error = translate_error(exc, self.executor.path, self.executor.busy_timeout)
            if error is None:
                raise
            raise error from exc

    def _rollback(self) -> None:
        """Roll back whatever is open; forget the cached ledger, which may have counted rolled-back rows."""
        self._applied = None
        self._ledger_checked = self._ledger_ready
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                # SQLite may already have rolled back (e.g. after SQLITE_FULL); nothing is left open.
                log.debug("ROLLBACK failed", exc_info=True)

    # -- the ledger, as seen inside the lock -----------------------------------

    def applied_now(self) -> set[str]:
        """Applied versions in the catalog's spelling (rows the catalog does not know keep theirs)."""
        data_version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if self._applied is None or data_version != self._data_version:
            self._applied = {self._spelling(v) for v in self.ledger.applied_versions()}
            self._data_version = data_version
        return self._applied

    def _spelling(self, recorded: str) -> str:
        catalog = self.executor.catalog
        if catalog is not None:
            return catalog.canonical(recorded) or recorded
        value = number(recorded)
        return recorded if value is None else self._canonical.get(value, recorded)

    def _dependents(self, version: str) -> list[str]:
        catalog = self.executor.catalog
        if catalog is None:
            return self._plan_dependents.get(version, [])
        return catalog.graph.dependents(version) if version in catalog.graph else []

    def skip_reason(self, step: Step, applied: set[str]) -> str | None:
        is_applied = step.version in applied
        if step.direction == APPLY and is_applied:
            return "already applied (by another process since the plan was made)"
        if step.direction == ROLLBACK and not is_applied:
            return "already rolled back (by another process since the plan was made)"
        return None

    def check(self, step: Step, applied: set[str]) -> None:
        """Refuse a step the ledger no longer allows (``plan.step_conflicts``: the planner's own rule)."""
        conflicts = step_conflicts(step, applied, self._dependents)
        if conflicts:
            raise LedgerChanged(step.version, step.direction, conflicts)

    def record(self, step: Step, execution_ms: int | None, action: str | None = None,
               detail: str | None = None) -> None:
        """The ledger row and the log row of a step, in the step's transaction."""
        migration = step.migration
        if step.direction == APPLY:
            self.ledger.record_applied(migration, execution_ms)
        else:
            self.ledger.record_unapplied(migration.version)
        self.ledger.log(migration.version, action or step.direction, OK, migration.checksum, execution_ms, detail)

    # -- one step's work, inside an open transaction ---------------------------

    def attempt(self, step: Step) -> str | None:
        """Check the step against the ledger, then run it; the reason it was skipped, or ``None`` when it ran."""
        applied = self.applied_now()
        skipped = self.skip_reason(step, applied)
        if skipped is not None:
            self.ledger.log(step.version, step.direction, SKIPPED, step.migration.checksum, detail=skipped)
            return skipped
        self.check(step, applied)
        started = time.perf_counter()
        ignored = self.perform(step)
        detail = f"ignored: {'; '.join(ignored)} ({MigrationConnection.IGNORED_REASON})" if ignored else None
        self.record(step, round((time.perf_counter() - started) * 1000), detail=detail)
        return None

    def perform(self, step: Step) -> list[str]:
        """Run the migration's code and the checks after it; anything it raises fails the step.

        Returns the statements the connection passed over (``PRAGMA
        foreign_keys = ...``), which the step's log row records as a warning.
        """
        migration = step.migration
        applying = step.direction == APPLY
        proxy = MigrationConnection(self.conn, migration.version, step.direction)
        saved = (self.conn.row_factory, self.conn.text_factory)
        try:
            # validate_pre/post describe the upgraded schema, so they guard the apply direction only.
            if applying and migration.validate_pre is not None and not migration.validate_pre(proxy):
                raise ValidationFailed(migration.version, step.direction, "validate_pre")
            function = migration.upgrade if applying else migration.downgrade
            if function is None:
                raise MigrationFailed(
                    migration.version, step.direction, NotImplementedError("no downgrade(conn) function")
                )
            function(proxy)
            if proxy.tampered is None:
                self._check_foreign_keys(step)
                if applying and migration.validate_post is not None and not migration.validate_post(proxy):
                    raise ValidationFailed(migration.version, step.direction, "validate_post")
            if proxy.tampered is not None:
                raise proxy.tampered
        except (Interrupted, ExecutionError, DatabaseError):
            raise
        except BaseException as exc:
            # sys.exit() or a KeyboardInterrupt raised by the migration's own code is its failure,
            # not a reason to end the program with the transaction half done.
            raise MigrationFailed(migration.version, step.direction, exc, rolled_back=not self.atomic_run) from exc
        finally:
            self.conn.row_factory, self.conn.text_factory = saved
        for ignored in proxy.ignored:
            log.warning("migration %s: ignored %s (%s)", migration.version, ignored, proxy.IGNORED_REASON)
        return proxy.ignored

    def _check_foreign_keys(self, step: Step) -> None:
        cursor = self.conn.cursor()
        cursor.row_factory = None
        violations = cursor.execute("PRAGMA foreign_key_check").fetchmany(_MAX_VIOLATIONS)
        if violations:
            raise ForeignKeyViolation(step.version, step.direction, [tuple(v) for v in violations])

    def after_commit(self, step: Step) -> None:
        if self._applied is not None:
            if step.direction == APPLY:
                self._applied.add(step.version)
            else:
                self._applied.discard(step.version)

    # -- failures ---------------------------------------------------------------

    def failed(self, step: Step, index: int, error: Exception, started: float) -> Iterator[Event]:
        """Log the failure, report it as an event, then raise it."""
        if not isinstance(error, (DatabaseError, LedgerChanged)):
            self._log_failure(step, error, round((time.perf_counter() - started) * 1000))
        yield StepFailed(step, index, self.total, error)
        raise error

    def _log_failure(self, step: Step, error: Exception, execution_ms: int | None) -> None:
        """Record the failure in its own small transaction; best effort, since the file may be the problem."""
        try:
            with self.transaction():
                self.ledger.log(
                    step.version, step.direction, FAILED, step.migration.checksum, execution_ms, str(error)
                )
        except Exception:
            log.warning("could not log the failure of migration %s", step.version, exc_info=True)

    # -- the two ways to run ----------------------------------------------------

    def stepwise(self) -> Iterator[Event]:
        """One transaction per step: a failure undoes that step only."""
        for index, step in enumerate(self.plan.steps, 1):
            yield StepStarted(step, index, self.total)
            started = time.perf_counter()
            try:
                with self.transaction():
                    skipped = self.attempt(step)
            except Exception as exc:
                yield from self.failed(step, index, exc, started)
                return  # pragma: no cover (failed raises)
            if skipped is not None:
                yield StepSkipped(step, index, self.total, skipped)
            else:
                self.after_commit(step)
                yield StepFinished(step, index, self.total, (time.perf_counter() - started) * 1000)

    def atomic(self) -> Iterator[Event]:
        """The whole plan in one transaction: all of it, or none of it."""
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
                    yield StepFinished(step, index, self.total, (time.perf_counter() - started) * 1000)
        except Exception as exc:
            yield from self.failed(step, index, exc, started)
