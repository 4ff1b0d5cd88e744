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

from collections.abc import Iterable
from pathlib import Path

from planner import versions
from planner.catalog import Catalog
from planner.database import DEFAULT_BUSY_TIMEOUT
from planner.errors import AlreadyApplied, BaselineRefused, MarkAppliedRefused, MarkRolledBackRefused
from planner.migration import Migration
from planner.plan import rollback_scope


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

    Raises ``MigrationNotFound``, ``UnknownAppliedMigration`` (recorded but
    its file is gone, so there is no migration to mark), ``NotApplied``, or
    ``MarkRolledBackRefused`` naming every applied migration that depends on
    it, directly or through others.
    """
    scope = rollback_scope(catalog, applied, version)
    if scope.dependents:
        raise MarkRolledBackRefused(scope.version, versions.ordered(scope.dependents))
    return catalog.get(scope.version)


def mark_applied(
    db_path: Path | str, catalog: Catalog, version: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
) -> Migration:
    """Record ``version`` as applied without running it; returns the migration recorded.

    The checks run against the ledger as read now, then again inside the
    executor's write lock (``LedgerChanged`` if another process got there
    between the two). The ledger row gets the file's checksum and the log an
    ``mark-applied`` row.
    """
    from planner.executor import Executor
    from planner.ledger import read_ledger

    migration = check_mark_applied(catalog, read_ledger(db_path, busy_timeout), version)
    Executor(db_path, busy_timeout=busy_timeout, catalog=catalog).mark_applied(migration)
    return migration


def mark_rolled_back(
    db_path: Path | str, catalog: Catalog, version: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
) -> Migration:
    """Remove ``version``'s ledger row without running its downgrade; returns the migration unmarked."""
    from planner.executor import Executor
    from planner.ledger import read_ledger

    migration = check_mark_rolled_back(catalog, read_ledger(db_path, busy_timeout), version)
    Executor(db_path, busy_timeout=busy_timeout, catalog=catalog).mark_rolled_back(migration)
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


def baseline(
    db_path: Path | str, catalog: Catalog, version: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
) -> list[Migration]:
    """Record ``version`` and its ancestors as applied without running them, in one transaction; returns them.

    Flyway's ``baseline``, Django's ``--fake-initial``, Alembic's ``stamp``:
    the database must exist (its schema is what is being adopted). Every row
    gets its file's checksum and a ``baseline`` log row; a concurrent change
    to the ledger between the check and the lock is caught inside the lock.
    """
    from planner.executor import Executor
    from planner.ledger import read_ledger

    migrations = check_baseline(catalog, read_ledger(db_path, busy_timeout), version)
    Executor(db_path, busy_timeout=busy_timeout, catalog=catalog).mark_many(migrations, BASELINE)
    return migrations


# -- the same three through an engine (``planner.engines``): PostgreSQL's ledger lives on the server ------------


def mark_with(engine, catalog: Catalog, version: str, *, applied: bool) -> Migration:
    """``mark_applied`` (``applied``) or ``mark_rolled_back`` on any engine: the same refusals, checked against
    ``engine.applied()`` and again inside the runner's lock (PostgreSQL's advisory lock), and the same log row."""
    check = check_mark_applied if applied else check_mark_rolled_back
    migration = check(catalog, engine.applied(), version)
    runner = engine.runner(catalog=catalog, create=applied)
    (runner.mark_applied if applied else runner.mark_rolled_back)(migration)
    return migration


def baseline_with(engine, catalog: Catalog, version: str) -> list[Migration]:
    """``baseline`` on any engine: ``version`` and its ancestors recorded in one transaction, or none."""
    migrations = check_baseline(catalog, engine.applied(), version)
    engine.runner(catalog=catalog, create=False).mark_many(migrations, BASELINE)
    return migrations
