"""Running a plan against a SQLite file: one migration, one transaction.

For each step: switch foreign-key enforcement off (it cannot be switched
inside a transaction, and a table rebuild needs it off), ``BEGIN IMMEDIATE``,
re-read the ledger inside the write lock, run the migration through a
connection that cannot end the transaction, ``PRAGMA foreign_key_check``,
write the ledger row and the log row, ``COMMIT``, restore enforcement. Any
failure rolls back that step alone; the database is exactly as it was before
it, earlier steps stay applied. A SIGKILL at any moment leaves either the
step's whole transaction or none of it, which SQLite's journal guarantees.

One context manager, ``Session.transaction`` (``planner.session``), owns that protocol (foreign
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from planner.database import DEFAULT_BUSY_TIMEOUT, connect, open_read_only
from planner.errors import AlreadyApplied, DatabaseDirectoryMissing, DatabaseNotFound, LedgerChanged, NotApplied
from planner.events import Event, Replanned, RunResult, StepFailed, StepFinished, StepSkipped, StepStarted
from planner.ledger import APPLY, MARK_APPLIED, MARK_ROLLED_BACK, ROLLBACK, Ledger, LedgerEntry
from planner.migration import Migration
from planner.plan import Plan, Step, refuse_non_transactional
from planner.session import Session, foreign_keys_enabled, foreign_keys_off

if TYPE_CHECKING:
    from planner.catalog import Catalog

log = logging.getLogger(__name__)
# A library logs; whoever runs it decides where that goes (the CLI shows it with --debug).
log.addHandler(logging.NullHandler())

#: How many times ``migrate`` plans again before giving up on a ledger that keeps changing.
_REPLANS = 10

__all__ = ["Executor", "Event", "RunResult", "StepFailed", "StepFinished", "StepSkipped", "StepStarted",
           "Replanned", "foreign_keys_enabled", "foreign_keys_off"]


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
        if atomic:
            refuse_non_transactional(plan)
        conn = connect(self.path, create=self.create, busy_timeout=self.busy_timeout)
        try:
            session = Session(conn, plan, path=self.path, busy_timeout=self.busy_timeout, catalog=self.catalog,
                              atomic=atomic)
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

    def mark_many(self, migrations: list[Migration], action: str) -> None:
        """Record ``migrations`` (in dependency order) as applied, without running them, in ONE transaction.

        A baseline: all of them or none. Each is checked inside the write lock
        as a mark is (not applied yet, its dependencies applied or earlier in
        the list); ``AlreadyApplied`` if another process recorded one meanwhile.
        """
        steps = [Step(m, APPLY) for m in migrations]
        conn = connect(self.path, create=self.create, busy_timeout=self.busy_timeout)
        try:
            session = Session(conn, Plan(APPLY, tuple(steps)), path=self.path, busy_timeout=self.busy_timeout,
                              catalog=self.catalog)
            with session.transaction():
                applied = set(session.applied_now())
                for step in steps:
                    if session.skip_reason(step, applied) is not None:
                        raise AlreadyApplied(step.version)
                    session.check(step, applied)
                    session.record(step, None, action)
                    applied.add(step.version)
        finally:
            conn.close()

    def _mark(self, step: Step, action: str) -> None:
        conn = connect(self.path, create=self.create, busy_timeout=self.busy_timeout)
        try:
            session = Session(conn, Plan(step.direction, (step,)), path=self.path, busy_timeout=self.busy_timeout,
                              catalog=self.catalog)
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
