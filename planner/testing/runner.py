"""The checks behind the generated migration tests, as a library: no pytest in here.

Each check is a small function over a ``MigrationRunner`` (one catalog on one
database, driven through the same plans and executor as ``apm migrate``) and
raises ``MigrationTestFailure`` naming the version and the exact difference.
The stairway, which climbs the graph one version at a time, is below.

``Migrator``: a catalog on a test database, moved version by version from a hand-written test.

django-test-migrations' ``migrator`` is the model: a test brings the database
to the version before the one it tests, writes rows, migrates, and asserts on
what the migration did to them. Everything goes through the planner's plans
and the database's engine, so a test sees exactly what ``apm migrate`` would
do, on SQLite or PostgreSQL.

The stairway: climb a catalog's graph one version at a time on one database, checking each rollback.

A ``Stairway`` applies V, rolls it back and compares the schema with the one
before, re-applies V and compares with the first apply, for every version,
on one database: rebuilding every version's ancestors from an empty file
would make the whole walk quadratic.

Why the walk is correct on a DAG, not just a line: versions are climbed in
topological order, so when V's turn comes every ancestor of V is applied and
no descendant of V is (descendants come later). Other migrations may be
applied too, those from other branches that sort earlier; they are
independent of V by construction, and any plan from an empty database
applies them beside V anyway. Rolling V back alone is then exactly what
``apm migrate --rollback V`` would do there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import ExecutionError
from planner.plan import APPLY, Plan, Step, apply_plan, rollback_plan

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.engines.base import Engine
    from planner.schema import Schema as State
    from planner.testing.databases import TestDatabase


#: Called after a version is applied, with a connection to write rows on (the seed hook): a ``sqlite3``
#: connection on SQLite, the migration connection (``?`` parameters, ``engine``) on PostgreSQL.
Seed = Callable[[str, Any], None]


class MigrationTestFailure(AssertionError):
    """A migration test found something wrong; each line names the version and the difference.

    An ``AssertionError`` so any test runner reports it as a failed test,
    not as an error in the test machinery.
    """

    def __init__(self, version: str | None, lines: Iterable[str]):
        self.version = version
        self.lines = list(lines)
        prefix = f"{version} " if version else ""
        super().__init__("\n".join(prefix + line for line in self.lines))


class StairBlocked(Exception):
    """A stair cannot be climbed because a migration it needs failed to apply; its own test says why."""

    def __init__(self, version: str, blockers: dict[str, str]):
        self.version = version
        self.blockers = dict(blockers)
        names = ", ".join(sorted(blockers, key=int))
        super().__init__(f"{version} was not tested: it depends on {names}, whose upgrade failed "
                         f"({'; '.join(blockers[v] for v in sorted(blockers, key=int))})")


class NoDowngrade(Exception):
    """The version (or a version a check needs to roll back) declares no ``downgrade``, or declares itself
    irreversible (a downgrade that only raises): expected, not a failure.

    ``reasons`` holds, by version, what the declarations say; each is quoted in the message.
    """

    def __init__(self, versions: Iterable[str], what: str, reasons: Mapping[str, str] | None = None):
        self.versions = sorted(versions, key=int)
        self.reasons = {v: r for v, r in (reasons or {}).items() if v in self.versions}
        missing = [v for v in self.versions if v not in self.reasons]
        parts = [f"{', '.join(missing)} declare(s) no downgrade(conn)"] if missing else []
        parts += [f'{v} is irreversible ("{self.reasons[v]}")' for v in self.versions if v in self.reasons]
        super().__init__(f"{'; '.join(parts)}: {what}")


class SeedFailed(Exception):
    """The seed hook raised after ``version`` was applied; its rows were rolled back."""

    def __init__(self, version: str, cause: BaseException):
        self.version = version
        self.cause = cause
        super().__init__(f"seeding after {version} failed: {type(cause).__name__}: {cause}")


def explain(error: BaseException) -> str:
    """One line for an executor or plan error: the migration's own exception when there is one."""
    cause = getattr(error, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(error)


# --------------------------------------------------------------------------
# One catalog on one database
# --------------------------------------------------------------------------


class MigrationRunner:
    """One catalog on one database, moved with the same plans and engine as ``apm migrate``.

    Plans run through ``database.engine().runner(...)``, the very object
    ``apm migrate`` uses for that database (SQLite's executor, PostgreSQL's
    ``PgRunner`` with its advisory lock), so a test proves what production
    will do. ``seed`` runs after each version this runner applies, in its
    own transaction, so tests can give later migrations rows to work on.
    """

    def __init__(self, catalog: Catalog, database: TestDatabase, seed: Seed | None = None):
        self.catalog = catalog
        self.database = database
        self.seed = seed
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.database.engine()
        return self._engine

    @property
    def applied(self) -> frozenset[str]:
        """The versions the ledger records as applied, spelled as the catalog spells them."""
        known, unknown = self.catalog.split_applied(self.engine.applied())
        return frozenset(known | unknown)

    def run(self, plan: Plan) -> None:
        """Run ``plan`` through the engine; with a seed, one step at a time, seeding after each applied one."""
        if not plan:
            return
        runner = self.engine.runner(catalog=self.catalog, create=True)
        if self.seed is None or plan.direction != "apply":
            runner.migrate(lambda _ledger: plan, plan=plan)
            return
        for step in plan.steps:
            # After the step's commit, before the next step: the seed sees exactly that version applied.
            one = Plan(plan.direction, (step,), target=plan.target)

            def planned(_ledger: object, one: Plan = one) -> Plan:
                return one

            runner.migrate(planned, plan=one)
            self.run_seed(step.version)

    def run_seed(self, version: str) -> None:
        """Call the seed for ``version`` in one transaction; ``SeedFailed`` (rows rolled back) if it raises."""
        if self.seed is None:
            return
        try:
            with self.database.seeding(version) as conn:
                self.seed(version, conn)
        except Exception as exc:
            raise SeedFailed(version, exc) from exc

    def apply(self, target: str | None = None) -> Plan:
        """Apply everything pending (or what ``target`` needs, and ``target``); return the plan that ran."""
        plan = apply_plan(self.catalog, self.applied, target)
        self.run(plan)
        return plan

    def apply_versions(self, versions: Iterable[str]) -> Plan:
        """Apply exactly ``versions`` (all pending, their dependencies applied or among them), in graph order."""
        order = self.catalog.graph.topological_order(set(versions))
        plan = Plan(APPLY, tuple(Step(self.catalog.get(v), APPLY) for v in order))
        self.run(plan)
        return plan

    def rollback(self, version: str, cascade: bool = False) -> Plan:
        """Roll ``version`` back (with ``cascade``, its applied dependents first); return the plan that ran."""
        plan = rollback_plan(self.catalog, self.applied, version, cascade=cascade)
        self.run(plan)
        return plan

    def migrate_to(self, version: str | None = None) -> list[str]:
        """Bring the database to ``version``: it and its ancestors applied, its applied descendants rolled back.

        Migrations of other branches are left as they are, the way a rollback
        of ``version``'s dependents would leave them. ``None`` applies
        everything. Returns the versions applied or rolled back, in order.
        """
        ran = self.apply(version).versions
        if version is None:
            return ran
        graph = self.catalog.graph
        version = self.catalog.get(version).version
        for dependent in graph.topological_order(graph.descendants(version) & self.applied):
            if dependent in self.applied:  # an earlier cascade may have taken it already
                ran += self.rollback(dependent, cascade=True).versions
        return ran

    def state(self) -> State:
        """The schema now, as the stairway compares it."""
        return self.database.capture()

    def objects(self) -> list[str]:
        """Every user object now that a fresh database did not have (the ledger's left out)."""
        return self.database.leftovers()


# --------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------


def check_catalog(directory: Path | str) -> list[str]:
    """The catalog loads and ``apm migrate check`` finds no error; return its warnings.

    Raises ``MigrationTestFailure`` with one line per error finding.
    """
    # start-up time: planner.testing.runner runs without planner.lint until check_catalog() needs it
    from planner.lint import check_catalog as lint

    findings = lint(directory)
    problems = [f.describe() for f in findings if f.severity == "error"]
    if problems:
        raise MigrationTestFailure(None, [f"catalog {directory} has {len(problems)} error(s):", *problems])
    return [f.describe() for f in findings if f.severity == "warning"]


def check_upgrade(runner: MigrationRunner) -> list[str]:
    """From an empty database, every migration applies in plan order and the ledger then lists them all."""
    runner.database.reset()
    plan = apply_plan(runner.catalog, runner.applied)
    try:
        runner.run(plan)
    except ExecutionError as exc:
        version = getattr(exc, "version", None)
        # It may have tripped over a view or trigger an earlier migration broke (SQLite compiles them all for an
        # ALTER TABLE): that one is to blame.
        earlier = [step.version for step in plan.steps].index(version) if version in plan.versions else 0
        if earlier:
            _blame_broken(runner, Plan(plan.direction, plan.steps[:earlier], target=plan.target))
        raise MigrationTestFailure(version, [f"upgrade from an empty database failed: {explain(exc)}"]) from exc
    except SeedFailed as exc:
        raise MigrationTestFailure(exc.version, [str(exc)]) from exc
    missing = set(runner.catalog.versions) - runner.applied
    if missing:
        raise MigrationTestFailure(None, [f"upgrade left {', '.join(sorted(missing, key=int))} unapplied"])
    if runner.database.broken():
        _blame_broken(runner, plan)
    return plan.versions


def _blame_broken(runner: MigrationRunner, plan: Plan) -> None:
    """Some view or trigger no longer compiles after the whole upgrade: apply it again one step at a time to
    fail the migration that broke it, not whichever later one happens to trip over it."""
    runner.database.reset()
    before = runner.database.broken()
    for step in plan.steps:
        runner.run(Plan(plan.direction, (step,), target=plan.target))
        after = runner.database.broken()
        newly = _newly_broken(before, after, "upgrade")
        if newly:
            raise MigrationTestFailure(step.version, newly)
        before = after


def check_downgrade_all(runner: MigrationRunner) -> list[str]:
    """Apply everything, then a cascade rollback of every root: only the ledger may remain.

    Raises ``NoDowngrade`` when some migration has no ``downgrade`` (a full
    rollback cannot pass it), ``MigrationTestFailure`` for anything left.
    """
    irreversible = [m for m in runner.catalog if m.downgrade is None]
    if irreversible:
        raise NoDowngrade([m.version for m in irreversible], "a full rollback cannot pass them",
                          {m.version: m.irreversible_reason for m in irreversible if m.irreversible_reason})
    runner.database.reset()
    try:
        runner.apply()
    except (ExecutionError, SeedFailed) as exc:
        raise MigrationTestFailure(getattr(exc, "version", None), [
            f"could not apply the catalog to roll it back: {explain(exc)} (see the upgrade test)"
        ]) from exc
    rolled: list[str] = []
    for root in runner.catalog.graph.root_nodes():
        if root not in runner.applied:
            continue
        try:
            rolled += runner.rollback(root, cascade=True).versions
        except ExecutionError as exc:
            raise MigrationTestFailure(getattr(exc, "version", None), [
                f"rollback failed during the cascade rollback of {root}: {explain(exc)}"
            ]) from exc
    lines = [f"downgrade-all left {thing}" for thing in runner.objects()]
    still = runner.applied
    if still:
        lines.append(f"downgrade-all left {', '.join(sorted(still, key=int))} recorded as applied")
    if lines:
        raise MigrationTestFailure(None, lines)
    return rolled


class Migrator:
    """Move one test database through a catalog; read and write it through ``connection``."""

    def __init__(self, catalog: Catalog, database: TestDatabase):
        self.catalog = catalog
        self.database = database
        self._runner = MigrationRunner(catalog, database)
        self._connection: Any = None

    @property
    def path(self) -> Path:
        """The database file (SQLite; a ``PostgresDatabase`` has ``url`` and ``name`` instead)."""
        return self.database.path  # type: ignore[attr-defined]  # only SQLite's TestDatabase has one

    @property
    def connection(self) -> Any:
        """A connection to the test database (autocommit, foreign keys on), opened on first use.

        SQLite: a ``sqlite3`` connection. PostgreSQL: the connection migrations
        receive (``execute`` with ``?`` or ``%s`` parameters, ``fetchall``,
        ``fetchval``, ``raw`` for psycopg itself), in autocommit mode. Both
        have ``engine`` (``"sqlite"`` or ``"postgresql"``).

        Before each migration the migrator commits whatever this connection
        left open: the executor needs the write lock, and a test that wrote
        rows means them to be there when the migration runs.
        """
        if self._connection is None:
            self._connection = self.database.connect()
        return self._connection

    @property
    def applied(self) -> frozenset[str]:
        """The versions applied now, as the ledger records them."""
        return self._runner.applied

    def migrate_to(self, version: str | None = None) -> list[str]:
        """Apply ``version`` and what it needs, and roll back its applied dependents; ``None`` applies all.

        Returns the versions applied or rolled back, in the order they ran.
        """
        self._release()
        return self._runner.migrate_to(version)

    def rollback(self, version: str, cascade: bool = False) -> list[str]:
        """Roll ``version`` back, as ``apm migrate --rollback`` would (refused without ``cascade`` if dependents are applied)."""
        self._release()
        return self._runner.rollback(version, cascade=cascade).versions

    def schema(self) -> Any:
        """The schema now. A ``planner.schema.Schema`` on either engine (tables with columns, keys and,
        on SQLite, row counts; indexes, triggers, views)."""
        self._release()
        return self.database.snapshot()

    def close(self) -> None:
        """Close the connection, if one was opened."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _release(self) -> None:
        if self._connection is not None and self._connection.in_transaction:
            self._connection.execute("COMMIT")


class Stairway:
    """Climbs a catalog one version at a time: apply V, roll it back, compare, re-apply, compare.

    Versions may be climbed in any order and any subset (``-k`` picks a few,
    a plugin may shuffle): a version whose ancestors are not all applied, or
    that is applied already, starts a fresh database with exactly its
    ancestors applied. In topological order that never happens, and the walk
    costs one apply, one rollback and one re-apply per migration.

    A failure is about its version alone. Whether the database can still be
    trusted decides what comes next: a failed apply or rollback was rolled
    back by the executor, so the walk goes on; a rollback that left or took
    something leaves a schema no plan describes, so the next version starts a
    fresh database instead of reporting differences that are not its own.
    Versions that need a migration whose upgrade failed raise
    ``StairBlocked``, naming it.
    """

    def __init__(self, catalog: Catalog, new_database: Callable[[], TestDatabase], seed: Seed | None = None,
                 release: Callable[[TestDatabase], None] | None = None):
        """``release`` is handed each database the walk is done with (a PostgreSQL one is dropped there)."""
        self.catalog = catalog
        self.new_database = new_database
        self.seed = seed
        self.release = release
        self.runner: MigrationRunner | None = None
        self.applied: set[str] = set()
        self.trusted = False
        #: Versions whose upgrade failed, with the reason: their descendants are blocked.
        self.failed_upgrades: dict[str, str] = {}
        self._last_state: State | None = None
        #: The views and triggers that did not compile where the last stair ended (``TestDatabase.broken``).
        self._last_broken: dict[str, str] | None = None

    @property
    def order(self) -> list[str]:
        """The order that climbs each stair once, on one database: the graph's topological order."""
        return self.catalog.graph.topological_order()

    def climb(self, version: str) -> None:
        """Test ``version``'s stair; raise ``MigrationTestFailure``, ``StairBlocked`` or ``NoDowngrade``."""
        migration = self.catalog.get(version)
        version = migration.version
        needs = self.catalog.graph.ancestors(version)
        blockers = {v: self.failed_upgrades[v] for v in needs if v in self.failed_upgrades}
        if blockers:
            raise StairBlocked(version, blockers)
        fresh = self._prepare(version, needs)
        runner = self.runner
        assert runner is not None

        # In an unbroken walk the previous stair ended on this very schema (seeds add rows only).
        before = self._last_state if not fresh and self._last_state is not None else runner.state()
        broken_before = self._last_broken if not fresh and self._last_broken is not None else runner.database.broken()
        self._last_state = self._last_broken = None
        try:
            runner.apply_versions([version])
        except ExecutionError as exc:
            # The executor rolled the step back: the database is as it was, the walk goes on without V.
            self.failed_upgrades[version] = f"{version} upgrade failed: {explain(exc)}"
            raise MigrationTestFailure(version, [f"upgrade failed: {explain(exc)}"]) from exc
        except SeedFailed as exc:
            self.trusted = False
            raise MigrationTestFailure(version, [str(exc)]) from exc
        self.applied.add(version)
        broken = runner.database.broken()
        newly = _newly_broken(broken_before, broken, "upgrade")
        if newly:
            # V applied, and left a view or trigger that cannot run: V's stair fails, not the later ones it trips.
            self.failed_upgrades[version] = f"{version} {newly[0]}"
            self.trusted = False
            raise MigrationTestFailure(version, newly)
        after = runner.state()

        if not migration.reversible:
            reasons = {version: migration.irreversible_reason} if migration.irreversible_reason else None
            raise NoDowngrade([version], "the stairway applied it once and cannot roll it back", reasons)

        try:
            runner.rollback(version)
        except ExecutionError as exc:
            # Rolled back by the executor: V stays applied, which is what its descendants need.
            raise MigrationTestFailure(version, [f"rollback failed: {explain(exc)}"]) from exc
        self.applied.discard(version)
        rolled_back = runner.state()
        lines = [f"rollback {line}" for line in before.differences(rolled_back, "rollback")]
        lines += _newly_broken(broken_before, runner.database.broken(), "rollback")
        if lines:
            self.trusted = False  # a schema no plan describes: the next stair starts afresh

        try:
            runner.apply_versions([version])
        except ExecutionError as exc:
            self.trusted = False  # V's upgrade works (it ran once); only this database is spent
            lines.append(f"re-apply failed after the rollback: {explain(exc)}")
            raise MigrationTestFailure(version, lines) from exc
        except SeedFailed as exc:
            self.trusted = False
            raise MigrationTestFailure(version, [*lines, str(exc)]) from exc
        self.applied.add(version)
        again = runner.state()
        changed = after.differences(again, "re-apply")
        if changed:
            self.trusted = False
            lines.append("re-apply differs from the first apply: " + "; ".join(changed))
        if lines:
            raise MigrationTestFailure(version, lines)
        self._last_state, self._last_broken = again, broken

    def close(self) -> None:
        """Hand the walk's database to ``release``; the next stair starts a fresh one."""
        if self.runner is not None and self.release is not None:
            self.release(self.runner.database)
        self.runner = None
        self.applied = set()
        self.trusted = False
        self._last_state = self._last_broken = None

    def _prepare(self, version: str, needs: set[str]) -> bool:
        """Make the database hold every ancestor of ``version`` and not ``version``; whether it is a fresh one."""
        reusable = (
            self.runner is not None and self.trusted and version not in self.applied and needs <= self.applied
        )
        if reusable:
            return False
        self.close()
        database = self.new_database()
        database.reset()
        self.runner = MigrationRunner(self.catalog, database, self.seed)
        self.applied = set()
        self.trusted = True
        if needs:
            try:
                self.runner.apply_versions(needs)
            except ExecutionError as exc:
                failed = getattr(exc, "version", None) or "?"
                reason = f"{failed} upgrade failed: {explain(exc)}"
                if failed in needs:
                    self.failed_upgrades[failed] = reason
                self.trusted = False
                raise StairBlocked(version, {failed: reason}) from exc
            except SeedFailed as exc:
                self.trusted = False
                raise StairBlocked(version, {exc.version: str(exc)}) from exc
            self.applied = set(needs)
        return True


def _newly_broken(before: dict[str, str], after: dict[str, str], move: str) -> list[str]:
    """A line for each view or trigger that compiled before ``move`` and does not after it."""
    return [f"{move} leaves {what} broken: it no longer compiles ({reason})"
            for what, reason in sorted(after.items()) if what not in before]
