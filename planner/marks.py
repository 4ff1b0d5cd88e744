"""Manual marks: record a migration as applied, or as rolled back, without running it.

The seed's troubleshooting answer to "migration already applied manually" was
to INSERT a row into ``schema_migrations`` by hand. A mark does that through
the executor instead, so the row carries the file's checksum, the action goes
to the log, and the graph's rules still hold: a migration can be marked
applied only once everything it depends on is applied, and marked rolled back
only while nothing applied depends on it. Either refusal would otherwise
create exactly the inconsistent history ``apply_plan`` refuses to build on.

``check_mark_*`` are pure (catalog and ledger in, a refusal or the migration
out), so the CLI can explain a refusal before touching the file; the
executor repeats the ledger part inside its write lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from planner import versions
from planner.catalog import Catalog
from planner.errors import (
    AlreadyApplied,
    BaselineRefused,
    MarkAppliedRefused,
    MarkRolledBackRefused,
    NotApplied,
    UnknownAppliedMigration,
)
from planner.ledger import APPLY, MARK_APPLIED, MARK_ROLLED_BACK, ROLLBACK
from planner.migration import Migration
from planner.plan import Plan, Step, rollback_scope

if TYPE_CHECKING:
    from planner.engines.base import Engine
    from planner.session import Session
    from planner.transaction_guard import GuardedConnection


def check_mark_applied(catalog: Catalog, applied: Iterable[str], version: str) -> Migration:
    """The migration ``--mark-applied version`` would record, or the reason it may not.

    Raises ``MigrationNotFound`` (no such file), ``AlreadyApplied``, or
    ``MarkAppliedRefused`` naming the dependencies that are not applied.
    """
    migration = catalog.get(version)
    known, _ = catalog.split_applied(applied)
    if migration.version in known:
        raise AlreadyApplied(migration.version)
    missing = [dependency for dependency in migration.depends_on if dependency not in known]
    if missing:
        raise MarkAppliedRefused(migration.version, versions.ordered(missing))
    return migration


def check_mark_rolled_back(catalog: Catalog, applied: Iterable[str], version: str) -> Migration:
    """The migration ``--mark-rolled-back version`` would remove from the ledger, or the reason it may not.

    Raises ``MigrationNotFound``, ``NotApplied``, or ``MarkRolledBackRefused``
    naming every applied migration that depends on it, directly or through
    others. A version recorded as applied whose file is gone may be marked:
    it is the way out of the refusal of every rollback it could block
    (``MissingFileInScope``) once its changes were undone by hand, and no
    migration in the catalog can depend on it (the catalog would not load).
    """
    applied = applied if isinstance(applied, Mapping) else list(applied)
    try:
        scope = rollback_scope(catalog, applied, version)
    except UnknownAppliedMigration:
        return _without_file(catalog, applied, version)
    if scope.dependents:
        raise MarkRolledBackRefused(scope.version, versions.ordered(scope.dependents))
    return catalog.get(scope.version)


def _without_file(catalog: Catalog, applied: Iterable[str], version: str) -> Migration:
    """A stand-in for a recorded migration whose file is gone: enough to remove its row and log the mark."""
    recorded = next(v for v in applied if versions.same(v, version))
    entry = applied[recorded] if isinstance(applied, Mapping) else None
    description = getattr(entry, "description", None) or "(file missing)"

    def _gone(conn: GuardedConnection) -> None:  # never called: a mark runs nothing
        raise RuntimeError(f"migration {recorded} has no file")

    return Migration(recorded, description, catalog.directory / f"migration_{recorded}.py",
                     getattr(entry, "checksum", None) or "", (), "ledger", "", _gone)


def mark(engine: Engine, catalog: Catalog, version: str, *, applied: bool) -> Migration:
    """Record ``version`` as applied (``applied``) or rolled back without running it; returns the migration.

    The checks run against the ledger as read now, then again inside the
    runner's lock (``LedgerChanged`` if another process got there between
    the two). An applied row gets the file's checksum, and the log a
    ``mark-applied`` or ``mark-rolled-back`` row. The database must exist.
    """
    check = check_mark_applied if applied else check_mark_rolled_back
    migration = check(catalog, engine.applied(), version)
    runner = engine.runner(catalog=catalog, create=False)
    (runner.mark_applied if applied else runner.mark_rolled_back)(migration)
    return migration


#: The log action of a baseline's rows (beside ``mark-applied`` and ``mark-rolled-back``).
BASELINE = "baseline"


def check_baseline(catalog: Catalog, applied: Iterable[str], version: str) -> list[Migration]:
    """What ``--baseline version`` would record: ``version`` and all its ancestors, in dependency order.

    A baseline adopts a database whose schema was made elsewhere (by hand, by
    another tool), so the ledger must hold none of them: ``BaselineRefused``
    names those it does. Recording over a partial ledger would hide which
    of its rows were earned by running a migration.
    """
    migration = catalog.get(version)
    wanted = catalog.graph.ancestors(migration.version) | {migration.version}
    known, _ = catalog.split_applied(applied)
    recorded = wanted & known
    if recorded:
        raise BaselineRefused(migration.version, versions.ordered(recorded))
    return catalog.in_order(catalog.graph.topological_order(wanted))


def baseline(engine: Engine, catalog: Catalog, version: str) -> list[Migration]:
    """Record ``version`` and its ancestors as applied without running them, in one transaction; returns them.

    Flyway's ``baseline``, Django's ``--fake-initial``, Alembic's ``stamp``:
    the database must exist (its schema is what is being adopted). Every row
    gets its file's checksum and a ``baseline`` log row; a concurrent change
    to the ledger between the check and the lock is caught inside the lock.
    """
    migrations = check_baseline(catalog, engine.applied(), version)
    engine.runner(catalog=catalog, create=False).mark_many(migrations, BASELINE)
    return migrations


def record_mark(session: Session, step: Step, action: str) -> None:
    """Record one step as done without running it, checked inside the session's lock as a run would be."""
    with session.transaction():
        applied = session.applied_now()
        if session.skip_reason(step, applied) is not None:
            raise AlreadyApplied(step.version) if step.direction == APPLY else NotApplied(step.version)
        session.refuse_conflicts(step, applied)
        session.record(step, None, action)


def record_marks(session: Session, steps: list[Step], action: str) -> None:
    """A baseline: every step recorded as applied in ONE transaction, or none (``AlreadyApplied``)."""
    with session.transaction():
        applied = set(session.applied_now())
        for step in steps:
            if session.skip_reason(step, applied) is not None:
                raise AlreadyApplied(step.version)
            session.refuse_conflicts(step, applied)
            session.record(step, None, action)
            applied.add(step.version)


class MarksThroughSessions:
    """The marks of a runner, written once: each opens the engine's session (``_marks``) and lets it record.

    A runner supplies ``_marks(work, plan)``: open a connection (and take the lock), make a session for
    ``plan`` and call ``work`` with it. The checks and the rows are ``planner.marks.record_mark``'s.
    """

    def _marks(self, work: Callable[[Session], None], plan: Plan) -> None:
        raise NotImplementedError

    def mark_applied(self, migration: Migration) -> None:
        """Record ``migration`` as applied without running it (its changes are already in the schema)."""
        step = Step(migration, APPLY)
        self._marks(lambda session: record_mark(session, step, MARK_APPLIED), Plan(APPLY, (step,)))

    def mark_rolled_back(self, migration: Migration) -> None:
        """Remove ``migration``'s ledger row without running its downgrade."""
        step = Step(migration, ROLLBACK)
        self._marks(lambda session: record_mark(session, step, MARK_ROLLED_BACK), Plan(ROLLBACK, (step,)))

    def mark_many(self, migrations: list[Migration], action: str) -> None:
        """Record ``migrations`` (in dependency order) as applied, without running them, in ONE transaction.

        A baseline: all of them or none. Each is checked inside the lock as a
        mark is (not applied yet, its dependencies applied or earlier in the
        list); ``AlreadyApplied`` if another process recorded one meanwhile.
        """
        steps = [Step(m, APPLY) for m in migrations]
        self._marks(lambda session: record_marks(session, steps, action), Plan(APPLY, tuple(steps)))
