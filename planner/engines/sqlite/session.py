"""A session on a SQLite file: what SQLite needs around the step protocol of ``planner.session``.

``transaction`` switches foreign-key enforcement off (it cannot be switched
inside a transaction, and a table rebuild needs it off), takes the write
lock with ``BEGIN IMMEDIATE`` (waiting in slices so Ctrl-C is heard),
readies the ledger tables, and ends with COMMIT or ROLLBACK. After a
migration's code, ``PRAGMA foreign_key_check`` stands in for the
enforcement that was off. A migration may write ``schema_migrations``
itself (APM's older ones did); the ledger is watched around its code and
the executor's rows put back.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from planner.engines.sqlite.connection import MigrationConnection
from planner.engines.sqlite.database import (
    WRITE_LOCKS_HELD,
    foreign_keys_enabled,
    foreign_keys_off,
    lock_key,
    translate_error,
    wait_for,
)
from planner.errors import DatabaseError, ForeignKeyViolation
from planner.engines.sqlite.ledger import Ledger
from planner.ledger import APPLY, OK
from planner.plan import Plan, Step
from planner.session import Session
from planner.sql import quote_identifier

if TYPE_CHECKING:
    from pathlib import Path

    from planner.catalog import Catalog
    from planner.engines.sqlite.observe import StepObserver
    from planner.engines.sqlite.outside import Checked, Rehearsed

log = logging.getLogger(__name__)

#: How many violations ``foreign_key_check`` reports at most; the first one is in the message.
_MAX_VIOLATIONS = 100


class SQLiteSession(Session[sqlite3.Connection, "StepObserver", MigrationConnection]):
    """One run over one SQLite connection.

    Re-reading the whole ledger inside every step's lock would make a long
    plan quadratic. ``PRAGMA data_version`` changes exactly when another
    connection commits, so the applied set is re-read only then; our own
    commits update it directly (``after_commit``).
    """

    ledger: Ledger  # SQLite's: it also watches what a migration writes to it (``call``)

    def __init__(self, conn: sqlite3.Connection, plan: Plan, *, path: Path, busy_timeout: float,
                 catalog: Catalog | None = None, atomic: bool = False, before: Callable[[], object] | None = None):
        super().__init__(conn, Ledger(conn), plan, catalog=catalog, atomic=atomic, before=before)
        self.path = path
        self._lock_key = lock_key(path)
        self.busy_timeout = busy_timeout
        self.foreign_keys = foreign_keys_enabled(conn)
        self._data_version: int | None = None
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
        from planner.errors import StepUnderWay
        from planner.nontransactional import STARTED, holder, started_detail
        from planner.waiting import Wait

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
            self._sql("BEGIN IMMEDIATE")
            WRITE_LOCKS_HELD.add(self._lock_key)  # a backup taken now must not wait for our own lock
            taken = time.perf_counter()
            try:
                try:
                    if not self._ledger_ready:
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
                self.write_lock_ms = (time.perf_counter() - taken) * 1000
                WRITE_LOCKS_HELD.discard(self._lock_key)
            self._ledger_ready = self._ledger_checked

    def _sql(self, statement: str) -> None:
        """BEGIN or COMMIT; a lock or permission problem there is about the file, not the migration.

        BEGIN waits for another writer in slices (``wait_for``) so that Ctrl-C is heard.
        """
        try:
            if statement.startswith("BEGIN"):
                wait_for(self.conn, statement, self.path, self.busy_timeout)
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
                log.debug("ROLLBACK failed", exc_info=True)

    def damaged(self, error: BaseException) -> DatabaseError | None:
        from planner.engines.sqlite.database import damaged

        return damaged(error, self.path)

    def applied_now(self) -> set[str]:
        data_version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if self._applied is None or data_version != self._data_version:
            self._applied = self.read_applied()
            self._data_version = data_version
        return self._applied

    # -- around the migration's code -------------------------------------------

    def connection_for(self, step: Step, observer: StepObserver | None = None) -> MigrationConnection:
        return MigrationConnection(self.migration_conn, step.migration.version, step.direction, observer)

    def checked_for(self, step: Step) -> Checked:
        from planner.engines.sqlite.outside import Checked

        return Checked(self.conn, step.version, step.direction, self.confirmation,
                       lambda: self._sql("BEGIN IMMEDIATE"))

    def rehearsal_for(self, step: Step) -> Rehearsed:
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
        with _untraced(observer):  # the executor's own bookkeeping is not the step's SQL
            self.ledger.watch()  # the migration may write schema_migrations itself ...
        function(proxy)
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
            log.warning("migration %s: ignored %s (%s)", step.version, ignored, proxy.IGNORED_REASON)
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
