"""One run over one connection: the transaction every write goes through, and what one step does inside it.

``Session.transaction`` owns the protocol (foreign keys off, ``BEGIN
IMMEDIATE``, the ledger tables ready; ``COMMIT``, or ``ROLLBACK`` on any
exception) for every kind of work: a step, a whole ``--atomic`` plan, a
mark, the log row of a failure. ``attempt`` is one step inside it: re-read
the ledger, skip what another process already did, refuse what the ledger
no longer allows, run the migration, check foreign keys, record.
``Executor`` (``planner.executor``) opens the connection and drives a session.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from planner.connection import MigrationConnection
from planner.database import foreign_keys_enabled, foreign_keys_off, translate_error, wait_for
from planner.errors import (
    DatabaseError,
    ExecutionError,
    ForeignKeyViolation,
    Interrupted,
    LedgerChanged,
    MigrationFailed,
    ValidationFailed,
)
from planner.events import Event, StepFailed, StepFinished, StepSkipped, StepStarted
from planner.ledger import APPLY, FAILED, OK, ROLLBACK, SKIPPED, Ledger
from planner.output_capture import StepOutput
from planner.plan import Plan, Step, step_conflicts
from planner.sql import quote_identifier
from planner.versions import number

if TYPE_CHECKING:
    from pathlib import Path

    from planner.catalog import Catalog
    from planner.observe import StepObserver

log = logging.getLogger("planner.executor")

#: How many violations ``foreign_key_check`` reports at most; the first one is in the message.
_MAX_VIOLATIONS = 100


class Session:
    """One run over one connection: the transaction protocol, the per-step work, and the ledger cache.

    Re-reading the whole ledger inside every step's lock would make a long
    plan quadratic. ``PRAGMA data_version`` changes exactly when another
    connection commits, so the applied set is re-read only then; our own
    commits update it directly.
    """

    def __init__(self, conn: sqlite3.Connection, plan: Plan, *, path: Path, busy_timeout: float,
                 catalog: Catalog | None = None, atomic: bool = False):
        self.path = path
        self.busy_timeout = busy_timeout
        self.catalog = catalog
        self.atomic_run = atomic
        self.conn = conn
        self.plan = plan
        self.ledger = Ledger(conn)
        self.output = StepOutput()  # what migrations print, for the step's event
        self.total = len(plan.steps)
        self.foreign_keys = foreign_keys_enabled(conn)
        self._applied: set[str] | None = None
        self._data_version: int | None = None
        # Once a transaction that ensured the ledger schema has committed, the
        # tables are durable and need not be looked up again in this run.
        self._ledger_ready = False
        self._ledger_checked = False
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
            self._begin()
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

    def _begin(self) -> None:
        """``BEGIN IMMEDIATE``, waiting for another writer in slices so that Ctrl-C is heard (``wait_for``)."""
        try:
            wait_for(self.conn, "BEGIN IMMEDIATE", self.path, self.busy_timeout)
        except sqlite3.Error as exc:
            error = translate_error(exc, self.path, self.busy_timeout)
            if error is None:
                raise
            raise error from exc

    def _sql(self, statement: str) -> None:
        """BEGIN or COMMIT; a lock or permission problem there is about the file, not the migration."""
        try:
            self.conn.execute(statement)
        except sqlite3.Error as exc:
            error = translate_error(exc, self.path, self.busy_timeout)
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
            if self.catalog is not None and self.catalog.has_squashes:  # replaced rows stand for their squash
                self._applied = set.union(*self.catalog.split_applied(self._applied))
            self._data_version = data_version
        return self._applied

    def _spelling(self, recorded: str) -> str:
        catalog = self.catalog
        if catalog is not None:
            return catalog.canonical(recorded) or recorded
        value = number(recorded)
        return recorded if value is None else self._canonical.get(value, recorded)

    def _dependents(self, version: str) -> list[str]:
        catalog = self.catalog
        if catalog is None:
            return self._plan_dependents.get(version, [])
        return catalog.graph.dependents(version) if version in catalog.graph else []

    def use(self, plan: Plan) -> None:
        """Run ``plan`` instead: one planned inside the lock, from the ledger as it is now."""
        self.plan = plan
        self.total = len(plan.steps)

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
        detail = self.ledger.take_migration_writes(detail)  # what the migration wrote to the ledger
        if step.direction == APPLY:
            self.ledger.record_applied(migration, execution_ms)
        else:
            self.ledger.record_unapplied(migration.version)
            for replaced in migration.replaces:  # a squash applied as its chain: those rows are its row
                self.ledger.record_unapplied(replaced)
        self.ledger.log(migration.version, action or step.direction, OK, migration.checksum, execution_ms, detail)

    # -- one step's work, inside an open transaction ---------------------------

    def attempt(self, step: Step, observer: StepObserver | None = None) -> str | None:
        """Check the step against the ledger, then run it; the reason it was skipped, or ``None`` when it ran.

        ``observer`` (a preview's) is told about each statement the migration runs.
        """
        skipped = self.admit(step)
        if skipped is not None:
            return skipped
        started = time.perf_counter()
        with self.output.capture():  # a migration's print() never reaches stdout; the step's event carries it
            ignored = self.perform(step, observer)
        self.record(step, round((time.perf_counter() - started) * 1000), detail=_ignored_detail(ignored))
        return None

    def admit(self, step: Step) -> str | None:
        """Inside the lock: the reason to skip ``step`` (logged), or ``None``; ``LedgerChanged`` if it no longer fits."""
        applied = self.applied_now()
        skipped = self.skip_reason(step, applied)
        if skipped is not None:
            self.ledger.log(step.version, step.direction, SKIPPED, step.migration.checksum, detail=skipped)
            return skipped
        self.check(step, applied)
        return None

    def perform(self, step: Step, observer: StepObserver | None = None) -> list[str]:
        """Run the migration's code and the checks after it; anything it raises fails the step.

        Returns the statements the connection passed over (``PRAGMA
        foreign_keys = ...``), which the step's log row records as a warning.
        """
        migration = step.migration
        applying = step.direction == APPLY
        proxy = MigrationConnection(self.conn, migration.version, step.direction, observer)
        saved = (self.conn.row_factory, self.conn.text_factory)
        if observer is not None:
            observer.running(True)
        try:
            # validate_pre/post describe the upgraded schema, so they guard the apply direction only.
            if applying and migration.validate_pre is not None and not migration.validate_pre(proxy):
                raise ValidationFailed(migration.version, step.direction, "validate_pre")
            function = migration.upgrade if applying else migration.downgrade
            if function is None:
                raise MigrationFailed(
                    migration.version, step.direction, NotImplementedError("no downgrade(conn) function")
                )
            with _untraced(observer):  # the executor's own bookkeeping is not the step's SQL
                self.ledger.watch()  # the migration may write schema_migrations itself ...
            function(proxy)
            with _untraced(observer):
                self.ledger.reconcile(migration.version)  # ... so put the executor's rows back
            if proxy.tampered is None:
                self._check_foreign_keys(step, observer)
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
            if observer is not None:
                observer.running(False)
        for ignored in proxy.ignored:
            log.warning("migration %s: ignored %s (%s)", migration.version, ignored, proxy.IGNORED_REASON)
        return proxy.ignored

    def _check_foreign_keys(self, step: Step, observer: StepObserver | None = None) -> None:
        """``PRAGMA foreign_key_check``: of the whole database, or, in a preview, of what the step touched."""
        cursor = self.conn.cursor()
        cursor.row_factory = None
        if observer is None:
            violations = cursor.execute("PRAGMA foreign_key_check").fetchmany(_MAX_VIOLATIONS)
        else:
            violations = []
            for table in observer.foreign_key_tables():
                violations += cursor.execute(f"PRAGMA foreign_key_check({quote_identifier(table)})").fetchmany(
                    _MAX_VIOLATIONS - len(violations))
                if len(violations) >= _MAX_VIOLATIONS:
                    break
        if violations:
            raise ForeignKeyViolation(step.version, step.direction, [tuple(v) for v in violations])

    def after_commit(self, step: Step) -> None:
        if self._applied is not None:
            if step.direction == APPLY:
                self._applied.add(step.version)
            else:
                self._applied.discard(step.version)

    # -- a step that cannot run inside a transaction (transactional = False) ---

    def attempt_outside_transaction(self, step: Step) -> str | None:
        """Run a ``transactional = False`` step on its own; the reason it was skipped, or ``None`` when it ran.

        SQLite refuses ``VACUUM`` inside a transaction, so the step cannot
        commit with its ledger row. Three phases instead: check the ledger and
        log a ``started`` row (committed, so a kill mid-way leaves a trace that
        ``apm migrate doctor`` reports); run the migration in autocommit, foreign
        keys off and checked after as for any step; then record it in a
        transaction of its own, right after it succeeds.
        """
        from planner.errors import NonTransactionalFailed
        from planner.nontransactional import STARTED

        with self.transaction():
            skipped = self.admit(step)
            if skipped is not None:
                return skipped
            self.ledger.log(step.version, step.direction, STARTED, step.migration.checksum,
                            detail="transactional = False: runs outside a transaction")
        started = time.perf_counter()
        try:
            with foreign_keys_off(self.conn, self.foreign_keys), self.output.capture():
                ignored = self.perform(step)
        except (MigrationFailed, ValidationFailed, ForeignKeyViolation) as exc:
            raise NonTransactionalFailed(step.version, step.direction, getattr(exc, "cause", exc)) from exc
        with self.transaction():
            self.record(step, round((time.perf_counter() - started) * 1000), detail=_ignored_detail(ignored))
        return None

    # -- failures ---------------------------------------------------------------

    def failed(self, step: Step, index: int, error: Exception, started: float) -> Iterator[Event]:
        """Log the failure, report it as an event, then raise it."""
        if not isinstance(error, (DatabaseError, LedgerChanged)):
            self.log_failure(step, error, round((time.perf_counter() - started) * 1000))
        yield StepFailed(step, index, self.total, error, self.output.take())
        raise error

    def log_failure(self, step: Step, error: Exception, execution_ms: int | None) -> None:
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
                if step.migration.transactional:
                    with self.transaction():
                        skipped = self.attempt(step)
                else:
                    skipped = self.attempt_outside_transaction(step)
            except Exception as exc:
                yield from self.failed(step, index, exc, started)
                return  # pragma: no cover (failed raises)
            if skipped is not None:
                yield StepSkipped(step, index, self.total, skipped)
            else:
                self.after_commit(step)
                yield StepFinished(step, index, self.total, (time.perf_counter() - started) * 1000, self.output.take())

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
                    yield StepFinished(step, index, self.total, (time.perf_counter() - started) * 1000,
                                       self.output.take())
        except Exception as exc:
            yield from self.failed(step, index, exc, started)


def _ignored_detail(ignored: list[str]) -> str | None:
    """The log row's note about ``PRAGMA foreign_keys = ...`` statements the connection passed over."""
    return f"ignored: {'; '.join(ignored)} ({MigrationConnection.IGNORED_REASON})" if ignored else None


@contextmanager
def _untraced(observer: StepObserver | None) -> Iterator[None]:
    """Statements the executor runs between the migration's own: a preview's ``--sql`` leaves them out."""
    if observer is None:
        yield
        return
    observer.running(False)
    try:
        yield
    finally:
        observer.running(True)
