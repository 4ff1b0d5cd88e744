"""Running a plan against a SQLite file: one migration, one transaction.

For each step: switch foreign-key enforcement off (it cannot be switched
inside a transaction, and a table rebuild needs it off), ``BEGIN IMMEDIATE``,
re-read the ledger inside the write lock, run the migration through a
connection that cannot end the transaction, ``PRAGMA foreign_key_check``,
write the ledger row and the log row, ``COMMIT``, restore enforcement. Any
failure rolls back that step alone; the database is exactly as it was before
it, earlier steps stay applied. A SIGKILL at any moment leaves either the
step's whole transaction or none of it, which SQLite's journal guarantees.

Re-reading the ledger inside the lock is what makes concurrent runs safe:
whoever gets the lock second finds the step done and skips it.

Progress is reported as typed events, to a callback (``run``) or as an
iterator (``events``); this module never prints.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

from planner.catalog import is_version
from planner.connection import MigrationConnection
from planner.database import DEFAULT_BUSY_TIMEOUT, connect, open_read_only, translate_error
from planner.errors import (
    AlreadyApplied,
    DatabaseError,
    DatabaseNotFound,
    DatabaseDirectoryMissing,
    ExecutionError,
    ForeignKeyViolation,
    LedgerChanged,
    MigrationFailed,
    NotApplied,
    ValidationFailed,
)
from planner.ledger import (
    APPLY,
    FAILED,
    MARK_APPLIED,
    MARK_ROLLED_BACK,
    OK,
    ROLLBACK,
    SKIPPED,
    Ledger,
    LedgerEntry,
)
from planner.migration import Migration
from planner.plan import Plan, Step

if TYPE_CHECKING:
    from planner.catalog import Catalog

log = logging.getLogger(__name__)
# A library logs; whoever runs it decides where that goes (the CLI shows it with --debug).
log.addHandler(logging.NullHandler())

#: How many violations ``foreign_key_check`` reports at most; the first one is in the message.
_MAX_VIOLATIONS = 100


# --------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------


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


Event = Union[StepStarted, StepFinished, StepSkipped, StepFailed]


@dataclass
class RunResult:
    """What a run did: the steps committed and the steps found already done."""

    plan: Plan
    done: list[Step] = field(default_factory=list)
    skipped: list[Step] = field(default_factory=list)


def _key(version: str) -> int | str:
    """Ledger versions compare by number (``27`` is ``0027``), like the catalog's."""
    return int(version) if is_version(version) else version


def foreign_keys_enabled(conn: sqlite3.Connection) -> bool:
    """Whether the connection enforces foreign keys right now."""
    return bool(conn.execute("PRAGMA foreign_keys").fetchone()[0])


@contextmanager
def foreign_keys_off(conn: sqlite3.Connection, previous: bool | None = None) -> Iterator[None]:
    """Turn enforcement off for the block, then restore what it was, even on failure.

    Must be entered outside any transaction: inside one, ``PRAGMA
    foreign_keys`` is silently ignored. ``previous`` saves the lookup when the
    caller already knows the setting (migrations cannot change it: the
    connection proxy refuses the PRAGMA).
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


# --------------------------------------------------------------------------
# The executor
# --------------------------------------------------------------------------


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

    # -- reading ---------------------------------------------------------------

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

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, create=self.create, busy_timeout=self.busy_timeout)

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
            if isinstance(event, StepFinished):
                result.done.append(event.step)
            elif isinstance(event, StepSkipped):
                result.skipped.append(event.step)
            if on_event is not None:
                on_event(event)
        return result

    def events(self, plan: Plan, *, atomic: bool = False) -> Iterator[Event]:
        """Run ``plan`` lazily, yielding its events; the failure is raised after its ``StepFailed``."""
        if not plan.steps:
            return
        conn = self._connect()
        try:
            run = _Run(self, conn, plan)
            if atomic:
                yield from run.atomic()
            else:
                yield from run.stepwise()
        finally:
            conn.close()

    # -- marks -----------------------------------------------------------------

    def mark_applied(self, migration: Migration) -> None:
        """Record ``migration`` as applied without running it (its changes are already in the schema)."""
        self._mark(migration, MARK_APPLIED)

    def mark_rolled_back(self, migration: Migration) -> None:
        """Remove ``migration``'s ledger row without running its downgrade."""
        self._mark(migration, MARK_ROLLED_BACK)

    def _mark(self, migration: Migration, action: str) -> None:
        conn = self._connect()
        try:
            run = _Run(self, conn, Plan(APPLY if action == MARK_APPLIED else ROLLBACK, ()))
            direction = APPLY if action == MARK_APPLIED else ROLLBACK
            with foreign_keys_off(conn):
                run.begin()
                try:
                    run.ensure_ledger()
                    applied = run.applied_now()
                    if direction == APPLY and _key(migration.version) in applied:
                        raise AlreadyApplied(migration.version)
                    if direction == ROLLBACK and _key(migration.version) not in applied:
                        raise NotApplied(migration.version)
                    conflicts = run.conflicts(Step(migration, direction), applied)
                    if conflicts:
                        raise LedgerChanged(migration.version, direction, conflicts)
                    if direction == APPLY:
                        run.ledger.record_applied(migration, None)
                    else:
                        run.ledger.record_unapplied(migration.version)
                    run.ledger.log(migration.version, action, OK, checksum=migration.checksum)
                    run.commit()
                except BaseException:
                    run.rollback()
                    raise
        finally:
            conn.close()


class _Run:
    """One run of a plan over one connection: the per-step protocol, and the ledger cache.

    Re-reading the whole ledger inside every step's lock would make a long
    plan quadratic. ``PRAGMA data_version`` changes exactly when another
    connection commits, so the applied set is re-read only then; our own
    commits update it directly.
    """

    def __init__(self, executor: Executor, conn: sqlite3.Connection, plan: Plan):
        self.executor = executor
        self.conn = conn
        self.plan = plan
        self.ledger = Ledger(conn)
        self.total = len(plan.steps)
        self._applied: set[int | str] | None = None
        self._data_version: int | None = None
        # Once a transaction that ensured the ledger schema has committed, the
        # tables are durable and need not be looked up again in this run.
        self._ledger_ready = False
        self._ledger_checked = False
        self.foreign_keys = foreign_keys_enabled(conn)
        # Dependents each plan step has among the plan's own migrations (for rollback checks).
        self._plan_dependents: dict[str, list[str]] = {}
        for step in plan.steps:
            for dependency in step.migration.depends_on:
                self._plan_dependents.setdefault(dependency, []).append(step.version)

    # -- transactions ----------------------------------------------------------

    def begin(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._raise_translated(exc)

    def commit(self) -> None:
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._raise_translated(exc)
        self._ledger_ready = self._ledger_checked

    def ensure_ledger(self) -> None:
        """Create or upgrade the ledger tables inside the open transaction, unless a commit already did."""
        if not self._ledger_ready:
            self.ledger.ensure_schema()
            self._ledger_checked = True

    def _raise_translated(self, exc: sqlite3.Error) -> None:
        """A lock or permission problem at BEGIN/COMMIT is about the file, not the migration."""
        error = translate_error(exc, self.executor.path, self.executor.busy_timeout)
        if error is None:
            raise exc
        raise error from exc

    def rollback(self) -> None:
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

    def applied_now(self) -> set[int | str]:
        data_version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if self._applied is None or data_version != self._data_version:
            self._applied = {_key(v) for v in self.ledger.applied_versions()}
            self._data_version = data_version
        return self._applied

    def conflicts(self, step: Step, applied: set[int | str]) -> list[str]:
        """Dependencies no longer applied (apply), or dependents now applied (rollback)."""
        migration = step.migration
        if step.direction == APPLY:
            return [v for v in migration.depends_on if _key(v) not in applied]
        dependents = set(self._plan_dependents.get(migration.version, ()))
        catalog = self.executor.catalog
        if catalog is not None and migration.version in catalog.graph:
            dependents.update(catalog.graph.dependents(migration.version))
        return sorted((v for v in dependents if _key(v) in applied), key=_key)

    def skip_reason(self, step: Step, applied: set[int | str]) -> str | None:
        is_applied = _key(step.version) in applied
        if step.direction == APPLY and is_applied:
            return "already applied (by another process since the plan was made)"
        if step.direction == ROLLBACK and not is_applied:
            return "already rolled back (by another process since the plan was made)"
        return None

    # -- one step's work, inside an open transaction ---------------------------

    def perform(self, step: Step) -> int:
        """Run the migration, check it, write the ledger; return its execution time in ms."""
        migration = step.migration
        started = time.perf_counter()
        proxy = MigrationConnection(self.conn, migration.version, step.direction)
        saved = (self.conn.row_factory, self.conn.text_factory)
        try:
            applying = step.direction == APPLY
            # validate_pre/post describe the upgraded schema, so they guard the apply direction only.
            if applying and migration.validate_pre is not None and not migration.validate_pre(proxy):
                raise ValidationFailed(migration.version, step.direction, "validate_pre")
            function = migration.upgrade if applying else migration.downgrade
            if function is None:
                raise MigrationFailed(
                    migration.version, step.direction, NotImplementedError("no downgrade(conn) function")
                )
            function(proxy)
            if proxy.tampered is not None:
                raise proxy.tampered
            self.check_foreign_keys(step)
            if applying and migration.validate_post is not None and not migration.validate_post(proxy):
                raise ValidationFailed(migration.version, step.direction, "validate_post")
            if proxy.tampered is not None:
                raise proxy.tampered
        finally:
            self.conn.row_factory, self.conn.text_factory = saved
        execution_ms = round((time.perf_counter() - started) * 1000)
        if applying:
            self.ledger.record_applied(migration, execution_ms)
        else:
            self.ledger.record_unapplied(migration.version)
        self.ledger.log(migration.version, step.direction, OK, migration.checksum, execution_ms)
        return execution_ms

    def check_foreign_keys(self, step: Step) -> None:
        cursor = self.conn.cursor()
        cursor.row_factory = None
        violations = cursor.execute("PRAGMA foreign_key_check").fetchmany(_MAX_VIOLATIONS)
        if violations:
            raise ForeignKeyViolation(step.version, step.direction, [tuple(v) for v in violations])

    def after_commit(self, step: Step) -> None:
        if self._applied is not None:
            if step.direction == APPLY:
                self._applied.add(_key(step.version))
            else:
                self._applied.discard(_key(step.version))

    # -- failures ---------------------------------------------------------------

    def wrap(self, step: Step, exc: BaseException, *, atomic: bool) -> Exception:
        """The error a failed step raises: ours as they are, anything else as ``MigrationFailed``."""
        if isinstance(exc, (ExecutionError, DatabaseError, LedgerChanged)):
            return exc
        return MigrationFailed(step.version, step.direction, exc, rolled_back=not atomic)

    def failed(self, step: Step, index: int, exc: BaseException, started: float, *, atomic: bool) -> Iterator[Event]:
        """Log the failure, report it as an event, then raise it (as ``MigrationFailed`` unless it is ours)."""
        error = self.wrap(step, exc, atomic=atomic)
        self.log_failure(step, error, round((time.perf_counter() - started) * 1000))
        yield StepFailed(step, index, self.total, error)
        if error is exc:
            raise exc
        raise error from exc

    def log_failure(self, step: Step, error: Exception, execution_ms: int | None) -> None:
        """Record the failure in its own small transaction; best effort, since the file may be the problem."""
        if isinstance(error, DatabaseError):
            return
        try:
            self.begin()
            try:
                self.ensure_ledger()
                self.ledger.log(
                    step.version, step.direction, FAILED, step.migration.checksum, execution_ms, str(error)
                )
                self.commit()
            except BaseException:
                self.rollback()
                raise
        except Exception:
            log.warning("could not log the failure of migration %s", step.version, exc_info=True)

    # -- the two ways to run ----------------------------------------------------

    def stepwise(self) -> Iterator[Event]:
        """One transaction per step: a failure undoes that step only."""
        for index, step in enumerate(self.plan.steps, 1):
            yield StepStarted(step, index, self.total)
            started = time.perf_counter()
            skipped: str | None = None
            try:
                with foreign_keys_off(self.conn, self.foreign_keys):
                    self.begin()
                    try:
                        self.ensure_ledger()
                        applied = self.applied_now()
                        skipped = self.skip_reason(step, applied)
                        if skipped is not None:
                            self.ledger.log(step.version, step.direction, SKIPPED, step.migration.checksum,
                                            detail=skipped)
                        else:
                            conflicts = self.conflicts(step, applied)
                            if conflicts:
                                raise LedgerChanged(step.version, step.direction, conflicts)
                            self.perform(step)
                        self.commit()
                    except BaseException:
                        self.rollback()
                        raise
            except (GeneratorExit, KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                yield from self.failed(step, index, exc, started, atomic=False)
            if skipped is not None:
                yield StepSkipped(step, index, self.total, skipped)
            else:
                self.after_commit(step)
                yield StepFinished(step, index, self.total, (time.perf_counter() - started) * 1000)

    def atomic(self) -> Iterator[Event]:
        """The whole plan in one transaction: all of it, or none of it."""
        index, step = 0, self.plan.steps[0]
        started = time.perf_counter()
        with foreign_keys_off(self.conn, self.foreign_keys):
            try:
                self.begin()
                try:
                    self.ensure_ledger()
                    for index, step in enumerate(self.plan.steps, 1):
                        yield StepStarted(step, index, self.total)
                        started = time.perf_counter()
                        applied = self.applied_now()
                        skipped = self.skip_reason(step, applied)
                        if skipped is not None:
                            self.ledger.log(step.version, step.direction, SKIPPED, step.migration.checksum,
                                            detail=skipped)
                            yield StepSkipped(step, index, self.total, skipped)
                            continue
                        conflicts = self.conflicts(step, applied)
                        if conflicts:
                            raise LedgerChanged(step.version, step.direction, conflicts)
                        self.perform(step)
                        self.after_commit(step)  # visible to later steps of this same transaction
                        yield StepFinished(step, index, self.total, (time.perf_counter() - started) * 1000)
                    self.commit()
                except BaseException:
                    self.rollback()
                    raise
            except (GeneratorExit, KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                yield from self.failed(step, index or 1, exc, started, atomic=True)
