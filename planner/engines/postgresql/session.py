"""A session on PostgreSQL: what the server needs around the step protocol of ``planner.session``.

The connection is in autocommit mode, so the transactions are exactly the
ones opened here (``conn.transaction()``: BEGIN ... COMMIT, or ROLLBACK on
an exception). PostgreSQL's DDL is transactional, so a migration and its
ledger and log rows commit together. Every runner of one ledger holds the
same advisory lock for its whole run (``PostgresEngine.locked``), so the
applied set read once stays true until our own commits change it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from planner.engines.postgresql.connection import PgMigrationConnection
from planner.engines.postgresql.lock_timeout import apply_declared
from planner.ledger import APPLY, OK
from planner.plan import Plan, Step
from planner.session import Session

if TYPE_CHECKING:
    from psycopg import Connection

    from planner.catalog import Catalog
    from planner.engines.base import Observer
    from planner.engines.postgresql.outside import Checked, Rehearsed
    from planner.engines.postgresql.ledger import PgLedger
    from planner.engines.postgresql.lock_timeout import LockGuard


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

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN, the ledger tables ready; COMMIT, or ROLLBACK on anything (psycopg's block does both)."""
        try:
            with self.conn.transaction():
                if not self._ready:
                    self.ledger.ensure_schema()
                yield
        except BaseException:
            self._applied = None  # it may have counted what was just rolled back
            raise
        self._ready = True

    def applied_now(self) -> set[str]:
        if self._applied is None:
            self._applied = self.read_applied()
        return self._applied

    def connection_for(self, step: Step, observer: Observer | None = None) -> PgMigrationConnection:
        return PgMigrationConnection(self.migration_conn, step.migration.version, step.direction, observer)

    def checked_for(self, step: Step) -> Checked:
        from planner.engines.postgresql.outside import Checked

        from planner.locks import LockPolicy

        return Checked(self.conn, self.ledger.log_table, step.version, step.direction, self.confirmation,
                       policy=self.lock_policy or LockPolicy(), settings=self.locks.settings if self.locks else None,
                       declared=step.migration.lock_timeout, allow=step.migration.allow)

    def rehearsal_for(self, step: Step) -> Rehearsed:
        from planner.engines.postgresql.outside import Rehearsed

        return Rehearsed(self.conn, step.version, step.direction)

    def call(self, step: Step, function: Callable[[PgMigrationConnection], object], proxy: PgMigrationConnection,
             observer: Observer | None = None) -> None:
        """The migration's code, under its own ``lock_timeout`` when it declares one."""
        declared = step.migration.lock_timeout
        if observer is not None and hasattr(observer, "declare"):
            observer.declare(declared)  # the lock measurements judge "no lock timeout" by the step's own
        if declared is None or self.locks is None:
            function(proxy)
        else:
            apply_declared(self.conn, declared, self.locks.settings, lambda: function(proxy))

    def explained(self, step: Step, error: Exception) -> Exception:
        """A lock timeout's row says which attempt it was and which session held the lock."""
        return self.locks.explain(step.version, error) if self.locks is not None else error

    def verify(self, step: Step, proxy: PgMigrationConnection, observer: Observer | None = None) -> None:
        """Deferred foreign keys checked now, so a violation is this migration's failure, not COMMIT's.

        Only a database that has deferrable constraints (or may have just got
        one: the migration's SQL mentioned deferring) needs the round trip.
        """
        if self._deferrable is None:
            row = self.conn.execute("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE condeferrable)").fetchone()
            self._deferrable = bool(row and row[0])  # EXISTS always answers one row
        if self._deferrable or proxy.may_defer:
            self._deferrable = True
            self.conn.execute("SET CONSTRAINTS ALL IMMEDIATE")

    def record(self, step: Step, execution_ms: int | None, action: str | None = None,
               detail: str | None = None) -> None:
        migration = step.migration
        if step.direction == APPLY:
            self.ledger.record_applied_and_log(migration, execution_ms, action or step.direction, detail)
            return
        self.ledger.record_unapplied(migration.version)
        for replaced in migration.replaces:  # a squash applied as its chain: those rows are its row
            self.ledger.record_unapplied(replaced)
        self.ledger.log(migration.version, action or step.direction, OK, migration.checksum, execution_ms, detail)
