"""The checks behind the generated migration tests, as a library: no pytest in here.

Each check is a small function over a ``MigrationRunner`` (one catalog on one
database, driven through the same plans and executor as ``apm migrate``) and
raises ``MigrationTestFailure`` naming the version and the exact difference.
The stairway, which climbs the graph one version at a time, is in
``planner.testing.stairway``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.engines.base import Engine
    from planner.plan import Plan
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
        super().__init__(
            f"{version} was not tested: it depends on {names}, whose upgrade failed "
            f"({'; '.join(blockers[v] for v in sorted(blockers, key=int))})"
        )


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
        from planner.plan import Plan

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
        from planner.plan import apply_plan

        plan = apply_plan(self.catalog, self.applied, target)
        self.run(plan)
        return plan

    def apply_versions(self, versions: Iterable[str]) -> Plan:
        """Apply exactly ``versions`` (all pending, their dependencies applied or among them), in graph order."""
        from planner.plan import APPLY, Plan, Step

        order = self.catalog.graph.topological_order(set(versions))
        plan = Plan(APPLY, tuple(Step(self.catalog.get(v), APPLY) for v in order))
        self.run(plan)
        return plan

    def rollback(self, version: str, cascade: bool = False) -> Plan:
        """Roll ``version`` back (with ``cascade``, its applied dependents first); return the plan that ran."""
        from planner.plan import rollback_plan

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
    from planner.lint import check_catalog as lint

    findings = lint(directory)
    problems = [f.describe() for f in findings if f.severity == "error"]
    if problems:
        raise MigrationTestFailure(None, [f"catalog {directory} has {len(problems)} error(s):", *problems])
    return [f.describe() for f in findings if f.severity == "warning"]


def check_upgrade(runner: MigrationRunner) -> list[str]:
    """From an empty database, every migration applies in plan order and the ledger then lists them all."""
    from planner.errors import ExecutionError

    from planner.plan import Plan, apply_plan

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
    from planner.plan import Plan

    runner.database.reset()
    before = runner.database.broken()
    for step in plan.steps:
        runner.run(Plan(plan.direction, (step,), target=plan.target))
        after = runner.database.broken()
        newly = [f"upgrade leaves {what} broken: it no longer compiles ({reason})"
                 for what, reason in sorted(after.items()) if what not in before]
        if newly:
            raise MigrationTestFailure(step.version, newly)
        before = after


def check_downgrade_all(runner: MigrationRunner) -> list[str]:
    """Apply everything, then a cascade rollback of every root: only the ledger may remain.

    Raises ``NoDowngrade`` when some migration has no ``downgrade`` (a full
    rollback cannot pass it), ``MigrationTestFailure`` for anything left.
    """
    from planner.errors import ExecutionError

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
