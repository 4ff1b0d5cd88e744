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
(``planner.session``); ``planner.engines.sqlite.session`` supplies SQLite's
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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from planner.engines.sqlite.database import (
    DEFAULT_BUSY_TIMEOUT,
    check_integrity,
    connect,
    foreign_keys_enabled,
    foreign_keys_off,
    open_read_only,
)
from planner.marks import MarksThroughSessions
from planner.engines.sqlite.session import SQLiteSession
from planner.errors import DatabaseDirectoryMissing, DatabaseNotFound, LedgerChanged
from planner.events import Event, Replanned, RunResult, StepFailed, StepFinished, StepSkipped, StepStarted
from planner.engines.sqlite.ledger import Ledger
from planner.ledger import LedgerEntry
from planner.plan import Plan, commits_in_parts, refuse_non_transactional
from planner.preview import Preview

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.outside import Confirmation

log = logging.getLogger(__name__)
# A library logs; whoever runs it decides where that goes (the CLI shows it with --debug).
log.addHandler(logging.NullHandler())

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
                    if hasattr(before, "discard"):
                        # Its copy too: another process may commit before the next attempt locks; that one copies.
                        before.discard()
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
        from planner.engines.sqlite.observe import StepObserver

        started = time.perf_counter()
        result = Preview(plan)
        existed, folder_existed = self.path.exists(), self.path.parent.exists()
        conn = connect(self.path, create=self.create, busy_timeout=self.busy_timeout)
        try:
            session = self._session(conn, plan, atomic=True, before=before)
            session.preview(result, StepObserver(conn, capture_sql=capture_sql), make_plan=make_plan,
                            accept=accept, on_event=on_event, log_failures=existed)
        finally:
            conn.close()
            if not existed and not result.committed:
                _remove_if_empty(self.path, None if folder_existed else self.path.parent)
        result.duration_ms = (time.perf_counter() - started) * 1000
        return result

    # -- marks -----------------------------------------------------------------

    def _marks(self, work: Callable[[SQLiteSession], None], plan: Plan) -> None:
        conn = connect(self.path, create=self.create, busy_timeout=self.busy_timeout)
        try:
            work(self._session(conn, plan))
        finally:
            conn.close()

    def _session(self, conn, plan: Plan, *, atomic: bool = False,
                 before: Callable[[], object] | None = None) -> SQLiteSession:
        return SQLiteSession(conn, plan, path=self.path, busy_timeout=self.busy_timeout, catalog=self.catalog,
                             atomic=atomic, before=before)


def _remove_if_empty(path: Path, folder: Path | None) -> None:
    """A run that committed nothing leaves no new file behind (nor the folder it made for it)."""
    try:
        if path.stat().st_size == 0:
            path.unlink()
        if folder is not None:
            folder.rmdir()  # only if empty
    except OSError:
        pass
