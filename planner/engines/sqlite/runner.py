"""Running a plan against a SQLite file: one migration, one transaction.

For each step: switch foreign-key enforcement off (it cannot be switched
inside a transaction, and a table rebuild needs it off), ``BEGIN IMMEDIATE``,
re-read the ledger inside the write lock, run the migration through a
connection that cannot end the transaction, ``PRAGMA foreign_key_check``,
write the ledger row and the log row, ``COMMIT``, restore enforcement. Any
failure rolls back that step alone; the database is exactly as it was before
it, earlier steps stay applied. A SIGKILL at any moment leaves either the
step's whole transaction or none of it, which SQLite's journal guarantees.

The step itself and the loops over steps are engine-free
(``planner.session``); ``SQLiteSession`` here supplies SQLite's
part of them. ``SQLiteSession.transaction`` owns the protocol (foreign keys,
BEGIN, the ledger tables, COMMIT or ROLLBACK) for every kind of work: a
step, a whole ``--atomic`` plan, a preview, a mark, the log row of a failure.

Re-reading the ledger inside the lock is what makes concurrent runs safe:
whoever gets the lock second finds the step done and skips it, and
``Executor.migrate`` plans again when another process changed the ledger
under the plan (a rollback that ran first, say).

Whatever a migration raises, ``SystemExit`` and ``KeyboardInterrupt``
included, fails its step like any exception. Only ``Interrupted`` (what the
command raises on Ctrl-C) stops the run as an interruption: the open step is
rolled back and the exception goes on up.

A session on a SQLite file: what SQLite needs around the step protocol of ``planner.session``.

``transaction`` switches foreign-key enforcement off (it cannot be switched
inside a transaction, and a table rebuild needs it off), takes the write
lock with ``BEGIN IMMEDIATE`` (waiting in slices so Ctrl-C is heard),
readies the ledger tables, and ends with COMMIT or ROLLBACK. After a
migration's code, ``PRAGMA foreign_key_check`` stands in for the
enforcement that was off. A migration may write ``schema_migrations``
itself (APM's older ones did); the ledger is watched around its code (in a
preview, from the first statement that may write it) and the executor's rows
put back.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from planner.engines.sqlite.connection import MigrationConnection
from planner.engines.sqlite.database import (
    DEFAULT_BUSY_TIMEOUT,
    WRITE_LOCKS_HELD,
    check_integrity,
    connect,
    damaged,
    foreign_keys_enabled,
    foreign_keys_off,
    lock_key,
    open_read_only,
    set_busy_timeout,
    translate_error,
    wait_for,
)
from planner.engines.sqlite.ledger import Ledger
from planner.errors import (
    DatabaseDirectoryMissing,
    DatabaseError,
    DatabaseLocked,
    DatabaseNotFound,
    DatabaseReadOnly,
    ForeignKeyViolation,
    LedgerChanged,
    NotADatabase,
    StepUnderWay,
)
from planner.events import Event, Replanned, RunResult, StepFailed, StepFinished, StepSkipped, StepStarted, Wait
from planner.ledger import APPLY, OK, LedgerEntry
from planner.marks import MarksThroughSessions
from planner.plan import Plan, Step, commits_in_parts, refuse_non_transactional
from planner.preview import Preview
from planner.session import Session
from planner.sql import quote_identifier

if TYPE_CHECKING:
    import logging

    from planner.catalog import Catalog
    from planner.engines.sqlite.observe import StepObserver
    from planner.engines.sqlite.outside import Checked, Rehearsed
    from planner.outside import Confirmation


#: How many violations ``foreign_key_check`` reports at most; the first one is in the message.
_MAX_VIOLATIONS = 100


@dataclass
class ReadAhead:
    """What ``Executor.read_ahead`` left on its connection for the next preview.

    ``held``: the reading took the write lock (``BEGIN IMMEDIATE``) and its
    transaction is still open, so the preview runs in it: nothing can have
    committed since the ledger was read. Otherwise the reading was a read
    transaction, ``data_version`` is what ``PRAGMA data_version`` said then,
    and the connection still waits for a lock one slice at a time.
    """

    entries: dict[str, LedgerEntry]
    #: Whether both ledger tables were complete (``ensure_schema`` has nothing to do).
    complete: bool
    #: The file's ``lock_key`` when the write lock is held (in ``WRITE_LOCKS_HELD`` meanwhile); ``None`` if not.
    lock_key: str | None
    data_version: int | None = None
    #: Whether the connection enforced foreign keys when it was opened (asked once, here).
    foreign_keys: bool = False

    @property
    def held(self) -> bool:
        return self.lock_key is not None


class SQLiteSession(Session[sqlite3.Connection, "StepObserver", MigrationConnection]):
    """One run over one SQLite connection.

    Re-reading the whole ledger inside every step's lock would make a long
    plan quadratic. ``PRAGMA data_version`` changes exactly when another
    connection commits, so the applied set is re-read only then; our own
    commits update it directly (``after_commit``).
    """

    ledger: Ledger  # SQLite's: it also watches what a migration writes to it (``call``)

    def __init__(self, conn: sqlite3.Connection, plan: Plan, *, path: Path, busy_timeout: float,
                 catalog: Catalog | None = None, atomic: bool = False, before: Callable[[], object] | None = None,
                 read_ahead: ReadAhead | None = None):
        super().__init__(conn, Ledger(conn), plan, catalog=catalog, atomic=atomic, before=before)
        self.path = path
        self._lock_key = ""  # keyed by each transaction, once its lock is taken
        self.busy_timeout = busy_timeout
        self.foreign_keys = read_ahead.foreign_keys if read_ahead is not None else foreign_keys_enabled(conn)
        #: The ledger as ``Executor.read_ahead`` read it on this connection: the first transaction's, if it is
        #: still the ledger then (``_read_ahead_now``).
        self.read_ahead = read_ahead
        self._data_version: int | None = None
        # The applied set was read under the write lock now held: nothing else can commit until it is let go.
        self._locked_read = False
        # Once a transaction that ensured the ledger schema has committed, the
        # tables are durable and need not be looked up again in this run.
        self._ledger_ready = False
        self._ledger_checked = False
        #: How long the latest transaction held the write lock (``BEGIN IMMEDIATE`` to its end), in ms.
        self.write_lock_ms: float | None = None

    def admit_alone(self, step: Step) -> str | None:
        """As ``Session.admit_alone``, but first wait for another runner that has this step under way.

        SQLite's write lock lasts one transaction, and a step outside any
        transaction runs between two: without this, a second runner would
        find it unrecorded and run it again, at the same time. The step's
        ``started`` row names its process; while that process runs, this
        one waits (in slices, told about after a second), then finds the
        step recorded and skips it.
        """
        # start-up time: only a step outside a transaction needs planner.outside (a run of ordinary steps never does)
        from planner.outside import STARTED, holder, started_detail

        deadline = time.monotonic() + self.busy_timeout
        wait = Wait(str(self.path), self.busy_timeout)
        while True:
            with self.transaction():
                skipped = self.admit(step)
                if skipped is not None:
                    return skipped
                running = holder(self.ledger.history(step.version))
                if running is None:
                    self.take_backup()
                    self.ledger.log(step.version, step.direction, STARTED, step.migration.checksum,
                                    detail=started_detail())
                    return None
            if time.monotonic() >= deadline:
                raise StepUnderWay(self.path, step.version, running, self.busy_timeout)
            wait.tick()
            time.sleep(0.1)

    # -- the one transaction path ---------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Foreign keys off, ``BEGIN IMMEDIATE``, the ledger tables ready; ``COMMIT``, or ``ROLLBACK`` on anything."""
        with foreign_keys_off(self.conn, self.foreign_keys):
            ahead = self.read_ahead
            if ahead is not None and ahead.lock_key is not None:  # the reading ahead began this transaction
                self._lock_key = ahead.lock_key
            else:
                self._sql("BEGIN IMMEDIATE", sliced=ahead is not None)
                # Keyed now, not when the session was made: the file's inode is what names it (lock_key).
                self._lock_key = lock_key(self.path)
            WRITE_LOCKS_HELD.add(self._lock_key)  # a backup taken now must not wait for our own lock
            taken = time.perf_counter()
            try:
                try:
                    ahead = self._read_ahead_now()
                    if not self._ledger_ready:
                        if ahead is None or not ahead.complete:  # both tables complete when read: nothing to do
                            self.ledger.ensure_schema()
                        self._ledger_checked = True
                    yield
                except BaseException as exc:
                    self._rollback()
                    broken = self.damaged(exc)
                    if broken is not None and broken is not exc:
                        raise broken from exc
                    raise
                self._sql("COMMIT")
            finally:  # the write lock is released once COMMIT or ROLLBACK is done
                self._locked_read = False
                self.read_ahead = None  # of the first transaction only: our own commits leave data_version as it is
                self.write_lock_ms = (time.perf_counter() - taken) * 1000
                WRITE_LOCKS_HELD.discard(self._lock_key)
            self._ledger_ready = self._ledger_checked

    def _sql(self, statement: str, *, sliced: bool = False) -> None:
        """BEGIN or COMMIT; a lock or permission problem there is about the file, not the migration.

        BEGIN waits for another writer in slices (``wait_for``) so that Ctrl-C is heard; ``sliced``: the
        connection waits one slice at a time already (a read ahead left it so).
        """
        try:
            if statement.startswith("BEGIN"):
                wait_for(self.conn, statement, self.path, self.busy_timeout, sliced=sliced)
            else:
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
                _log().debug("ROLLBACK failed", exc_info=True)

    def damaged(self, error: BaseException) -> DatabaseError | None:
        return damaged(error, self.path)

    def ledger_for_plan(self) -> dict[str, LedgerEntry]:
        """As ``Session``'s; its versions are the applied set until this transaction ends (``applied_now``).

        It is read after ``BEGIN IMMEDIATE``: until COMMIT or ROLLBACK no
        other connection can write, so reading the versions again for the
        first step (``PRAGMA data_version``, the columns, the rows) could only
        find the same set. Our own steps update it (``after_commit``).
        """
        ahead, self.read_ahead = self.read_ahead, None
        if ahead is not None and self.conn.in_transaction:
            entries = ahead.entries  # no other connection has committed since it was read (``_read_ahead_now``)
        else:
            entries = self.ledger.applied_migrations()
        if self.conn.in_transaction:
            self._applied = self.applied_from(entries)
            self._locked_read = True
        return entries

    def _read_ahead_now(self) -> ReadAhead | None:
        """Inside the write lock: the ledger read ahead, if it is still the ledger. Read under this very lock, it
        is; else ``PRAGMA data_version`` changes exactly when another connection commits, and when it has, the
        reading is forgotten (read again)."""
        ahead = self.read_ahead
        if ahead is not None and not ahead.held and self._data_version_now() != ahead.data_version:
            ahead = self.read_ahead = None
        return ahead

    def applied_now(self) -> set[str]:
        if self._locked_read and self._applied is not None:
            return self._applied
        data_version = self._data_version_now()
        if self._applied is None or data_version != self._data_version:
            self._applied = self.read_applied()
            self._data_version = data_version
        return self._applied

    def _data_version_now(self) -> int:
        """``PRAGMA data_version``: it changes exactly when another connection commits to the file."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    # -- around the migration's code -------------------------------------------

    def connection_for(self, step: Step, observer: StepObserver | None = None) -> MigrationConnection:
        return MigrationConnection(self.migration_conn, step.migration.version, step.direction, observer)

    def checked_for(self, step: Step) -> Checked:
        # start-up time: only a step outside a transaction is checked statement by statement
        from planner.engines.sqlite.outside import Checked

        return Checked(self.conn, step.version, step.direction, self.confirmation,
                       lambda: self._sql("BEGIN IMMEDIATE"))

    def rehearsal_for(self, step: Step) -> Rehearsed:
        # start-up time: only a step outside a transaction is rehearsed
        from planner.engines.sqlite.outside import Rehearsed

        return Rehearsed(self.conn, step.version, step.direction)

    @contextmanager
    def performing(self, observer: StepObserver | None = None) -> Iterator[None]:
        """The step's work, with the connection's row and text factories as they were after it."""
        saved = (self.conn.row_factory, self.conn.text_factory)
        if observer is not None:
            observer.running(True)
        try:
            yield
        finally:
            self.conn.row_factory, self.conn.text_factory = saved
            if observer is not None:
                observer.running(False)

    def call(self, step: Step, function: Callable[[MigrationConnection], object], proxy: MigrationConnection,
             observer: StepObserver | None = None) -> None:
        # A previewed step's observer sees each statement before it runs, so the watch waits for the first that
        # may write the ledger (``Ledger.defer_watch``); a step checked or rehearsed outside the preview's own
        # connection is watched from the start.
        if observer is not None and self._wrapped is None:
            self.ledger.defer_watch()
            observer.ledger_watch = self.ledger.watch_now
        else:
            with _untraced(observer):  # the executor's own bookkeeping is not the step's SQL
                self.ledger.watch()  # the migration may write schema_migrations itself ...
        try:
            function(proxy)
        finally:
            if observer is not None:
                observer.ledger_watch = None
        with _untraced(observer):
            self.ledger.reconcile(step.version)  # ... so put the executor's rows back

    def verify(self, step: Step, proxy: MigrationConnection, observer: StepObserver | None = None) -> None:
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

    def detail(self, step: Step, proxy: MigrationConnection) -> str | None:
        """``PRAGMA foreign_keys = ...`` statements the connection passed over, as a warning."""
        for ignored in proxy.ignored:
            _log().warning("migration %s: ignored %s (%s)", step.version, ignored, proxy.IGNORED_REASON)
        return f"ignored: {'; '.join(proxy.ignored)} ({proxy.IGNORED_REASON})" if proxy.ignored else None

    def outside_transaction(self) -> AbstractContextManager[None]:
        return foreign_keys_off(self.conn, self.foreign_keys)

    def record(self, step: Step, execution_ms: int | None, action: str | None = None,
               detail: str | None = None) -> None:
        migration = step.migration
        detail = self.ledger.take_migration_writes(detail)  # what the migration wrote to the ledger
        if step.direction == APPLY:
            self.ledger.record_applied(migration, execution_ms)
        else:
            self.ledger.record_unapplied(migration.version)
            for replaced in migration.replaces:  # a squash applied as its chain: those rows are its row
                self.ledger.record_unapplied(replaced)
        self.ledger.log(migration.version, action or step.direction, OK, migration.checksum, execution_ms, detail)


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


def _log() -> logging.Logger:
    """This module's logger, made when there is first something to log: a run that logs nothing never imports
    logging. A library logs; whoever runs it decides where that goes (the CLI shows it with --debug)."""
    import logging  # start-up time: most runs log nothing

    log = logging.getLogger(__name__)
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log

#: How many times ``migrate`` plans again before giving up on a ledger that keeps changing.
_REPLANS = 10

__all__ = ["Executor", "Event", "RunResult", "StepFailed", "StepFinished", "StepSkipped", "StepStarted",
           "Replanned", "foreign_keys_enabled", "foreign_keys_off"]


class Executor(MarksThroughSessions):
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
        self.path = path if isinstance(path, Path) else Path(path)  # Path(Path) parses it again: once per member
        self.busy_timeout = busy_timeout
        self.create = create
        self.catalog = catalog
        self._ahead: tuple[sqlite3.Connection, ReadAhead] | None = None

    def read_ahead(self) -> dict[str, LedgerEntry]:
        """The ledger, read on the connection the next ``preview`` runs on, kept open for it.

        What ``apm fleet migrate`` plans each database from. Where no other
        process writes, the reading takes the write lock (``BEGIN
        IMMEDIATE``) and the preview runs in the same transaction: the ledger
        it plans from is the ledger, and the file is locked, opened and its
        schema read once. A database with nothing to do is let go again by
        ``release`` (nothing was written). Where another process holds the
        lock (one slice, 0.1 s, is waited for it), or the file is read-only,
        it is read in a read transaction, as ``apm fleet status`` reads it: a
        database with nothing to do does not wait for that writer. The preview
        then waits, and reads again inside the lock only if ``PRAGMA
        data_version`` says another connection committed since.
        """
        self.release()
        conn = connect(self.path, busy_timeout=self.busy_timeout, read=False)
        key: str | None = None
        try:
            try:
                foreign_keys = foreign_keys_enabled(conn)
                # A build that enforces foreign keys by default turns them off before its BEGIN (``transaction``).
                key = self._lock_now(conn) if not foreign_keys else None
                if key is not None:
                    set_busy_timeout(conn, self.busy_timeout)  # COMMIT waits for readers, the whole timeout
                    version = None
                else:
                    # One read transaction, the first read included: each statement read alone takes and lets go
                    # of the shared lock, and SQLite looks for a hot journal and a WAL file each time it takes it.
                    conn.execute("BEGIN")
                    # Waited for in slices, as connect() waits for its own first read; the slice is kept (nothing
                    # in this read transaction waits) until the preview's BEGIN IMMEDIATE, whose wait is sliced too.
                    version = wait_for(conn, "PRAGMA data_version", self.path, self.busy_timeout, sliced=True,
                                       keep_slice=True)[0][0]
                entries, complete = Ledger(conn).applied_and_complete()
            except sqlite3.Error as exc:
                raise translate_error(exc, self.path, self.busy_timeout) or NotADatabase(self.path) from exc
            finally:
                if conn.in_transaction and key is None:  # a read transaction, over
                    conn.execute("COMMIT")
        except BaseException:
            conn.close()
            if key is not None:
                WRITE_LOCKS_HELD.discard(key)
            raise
        self._ahead = (conn, ReadAhead(entries, complete, key, version, foreign_keys))
        return entries

    def _lock_now(self, conn: sqlite3.Connection) -> str | None:
        """``BEGIN IMMEDIATE`` if the write lock is free within one slice: the file's ``lock_key``; ``None`` (no
        transaction) if another process holds it, or the file cannot be written (the preview's error to say)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not isinstance(translate_error(exc, self.path, self.busy_timeout), (DatabaseLocked, DatabaseReadOnly)):
                raise
            return None
        key = lock_key(self.path)
        WRITE_LOCKS_HELD.add(key)  # never open and close the file beside it (database.py)
        return key

    def release(self) -> None:
        """Close the connection ``read_ahead`` kept, if no preview took it (letting go of its lock)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            _close_ahead(ahead[0], ahead[1])

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
            result.count(event)
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
        before: Callable[[], object] | None = None,
        confirm_outside: Confirmation | None = None,
    ) -> RunResult:
        """Run what ``make_plan(ledger)`` asks for, planning again whenever another process changed the ledger.

        A plan is made from the ledger as read before the lock; when a step
        finds, inside the lock, that the ledger no longer fits it
        (``LedgerChanged``), nothing of that step ran, so the rest is planned
        again from the ledger as it is now and the run carries on. ``plan``
        is the first plan, when the caller already made (and showed) it.
        A refusal of the new plan (a rollback that now has applied
        dependents, say) is raised as it is. ``before()`` (the backup before
        a rollback) is taken inside the write lock of the first step that
        runs, once the ledger read there admitted it (``Session.take_backup``):
        the copy is exactly the database the rollback starts from.
        ``confirm_outside``, when given, checks ``transactional = False`` steps statement by statement
        (``planner.outside``) and confirms what they destroy.
        """
        if plan is None:
            plan = make_plan(self.applied())
        result = RunResult(plan)
        for attempt in range(_REPLANS + 1):
            counted = len(result.done), len(result.skipped)
            try:
                for event in self.events(plan, atomic=atomic, before=before, confirm_outside=confirm_outside):
                    result.count(event)
                    if on_event is not None:
                        on_event(event)
                return result
            except LedgerChanged as changed:
                if attempt == _REPLANS:
                    raise
                if atomic:  # the attempt's one transaction was rolled back: nothing it reported stays done
                    del result.done[counted[0]:], result.skipped[counted[1]:]
                    discard = getattr(before, "discard", None)
                    if discard is not None:
                        # Its copy too: another process may commit before the next attempt locks; that one copies.
                        discard()
                plan = make_plan(self.applied())
                result.replans += 1
                if on_event is not None:
                    on_event(Replanned(str(changed), plan))
        return result  # pragma: no cover (the loop returns or raises)

    def events(self, plan: Plan, *, atomic: bool = False,
               before: Callable[[], object] | None = None,
               confirm_outside: Confirmation | None = None) -> Iterator[Event]:
        """Run ``plan`` lazily, yielding its events; the failure is raised after its ``StepFailed``."""
        if not plan.steps:
            return
        if atomic:
            refuse_non_transactional(plan)
        self.release()  # its own connection: a lock held ahead would have it wait for this very process
        existed = self.path.exists()
        conn = connect(self.path, create=self.create, busy_timeout=self.busy_timeout)
        try:
            if existed and not atomic and commits_in_parts(plan):
                # Step by step, each commit stays: corruption met at step 9 would leave 8 committed on top of it.
                check_integrity(conn, self.path)
            session = self._session(conn, plan, atomic=atomic, before=before)
            session.confirmation = confirm_outside
            yield from session.atomic() if atomic else session.stepwise()
        finally:
            conn.close()

    # -- the preview: the plan run for real in one transaction, watched, then committed or not --

    def preview(
        self,
        plan: Plan,
        *,
        make_plan: Callable[[dict[str, LedgerEntry]], Plan] | None = None,
        accept: Callable[[Preview], bool] | None = None,
        on_event: Callable[[Event], None] | None = None,
        capture_sql: bool = False,
        before: Callable[[], object] | None = None,
    ) -> Preview:
        """Run the plan inside one transaction on the real file, watching what each statement destroys.

        The whole plan is one transaction (foreign keys off, ``BEGIN
        IMMEDIATE``): nothing is visible to anyone else, and a SIGKILL at any
        moment leaves the database as it was. ``Session.preview`` plans again
        inside the write lock and commits only if ``accept(preview)`` says so
        (never for ``accept=None``, a dry run). A failing step is the
        preview's ``error``, logged only in a database that was there before:
        a new file is not made just for that, and is removed again.
        ``before()`` runs inside the lock once the plan was made again there.
        """
        # start-up time: planner.engines.sqlite.runner runs without planner.engines.sqlite.observe until preview() needs it
        from planner.engines.sqlite.observe import StepObserver, attach_rebuilds

        started = time.perf_counter()
        result = Preview(plan)
        taken, self._ahead = self._ahead, None
        # A file read ahead is there, in its folder (and a preview never removes what was there before it).
        existed, folder_existed = (True, True) if taken is not None else (self.path.exists(),
                                                                          self.path.parent.exists())
        conn, ahead = taken if taken is not None else (
            connect(self.path, create=self.create, busy_timeout=self.busy_timeout), None)
        try:
            session = self._session(conn, plan, atomic=True, before=before, read_ahead=ahead)
            observer = StepObserver(conn, capture_sql=capture_sql)
            session.preview(result, observer, make_plan=make_plan, accept=accept, on_event=on_event,
                            log_failures=existed)
            attach_rebuilds(result, observer)
            result.write_lock_ms = session.write_lock_ms
        finally:
            _close_ahead(conn, ahead)
            if not existed and not result.committed:
                _remove_if_empty(self.path, None if folder_existed else self.path.parent)
        result.duration_ms = (time.perf_counter() - started) * 1000
        return result

    # -- marks -----------------------------------------------------------------

    def _marks(self, work: Callable[[SQLiteSession], None], plan: Plan) -> None:
        self.release()  # as events'
        conn = connect(self.path, create=self.create, busy_timeout=self.busy_timeout)
        try:
            work(self._session(conn, plan))
        finally:
            conn.close()

    def _session(self, conn, plan: Plan, *, atomic: bool = False, before: Callable[[], object] | None = None,
                 read_ahead: ReadAhead | None = None) -> SQLiteSession:
        return SQLiteSession(conn, plan, path=self.path, busy_timeout=self.busy_timeout, catalog=self.catalog,
                             atomic=atomic, before=before, read_ahead=read_ahead)


def _close_ahead(conn: sqlite3.Connection, ahead: ReadAhead | None) -> None:
    """Close a connection, rolling back what it left open; the write lock a reading ahead held is let go with it."""
    conn.close()
    if ahead is not None and ahead.lock_key is not None:
        WRITE_LOCKS_HELD.discard(ahead.lock_key)


def _remove_if_empty(path: Path, folder: Path | None) -> None:
    """A run that committed nothing leaves no new file behind (nor the folder it made for it)."""
    try:
        if path.stat().st_size == 0:
            path.unlink()
        if folder is not None:
            folder.rmdir()  # only if empty
    except OSError:
        pass
