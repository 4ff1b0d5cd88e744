"""The checks behind the generated migration tests, as a library: no pytest in here.

Each check is a small function over a ``MigrationRunner`` (one catalog on one
database, driven through the same plans and executor as ``apm migrate``) and
raises ``MigrationTestFailure`` naming the version and the exact difference.
The stairway is a ``Stairway`` object that climbs the catalog's graph one
version at a time on one database, because rebuilding every version's
ancestors from an empty file would make the whole walk quadratic.

Why the walk is correct on a DAG, not just a line: versions are climbed in
topological order, so when V's turn comes every ancestor of V is applied and
no descendant of V is (descendants come later). Other migrations may be
applied too, those from other branches that sort earlier; they are
independent of V by construction, and any plan from an empty database
applies them beside V anyway. Rolling V back alone is then exactly what
``apm migrate --rollback V`` would do there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from planner.testing.compare import SchemaState, capture, differences, user_objects
from planner.testing.databases import SQLiteDatabase

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.plan import Plan

#: Called after a version is applied, with a connection to write rows on (the seed hook).
Seed = Callable[[str, sqlite3.Connection], None]


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
    """The version (or a version a check needs to roll back) declares no ``downgrade``: expected, not a failure."""

    def __init__(self, versions: Iterable[str], what: str):
        self.versions = sorted(versions, key=int)
        super().__init__(f"{', '.join(self.versions)} declare(s) no downgrade(conn): {what}")


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
    """One catalog on one database, moved with the same plans and executor as ``apm migrate``.

    ``seed`` runs after each version this runner applies, in its own
    transaction, so tests can give later migrations rows to work on.
    """

    def __init__(self, catalog: Catalog, database: SQLiteDatabase, seed: Seed | None = None):
        self.catalog = catalog
        self.database = database
        self.seed = seed

    @property
    def applied(self) -> frozenset[str]:
        """The versions the ledger records as applied, spelled as the catalog spells them."""
        from planner.ledger import read_ledger

        known, unknown = self.catalog.split_applied(read_ledger(self.database.path))
        return frozenset(known | unknown)

    def run(self, plan: Plan) -> None:
        """Run ``plan`` with the executor; with a seed, one step at a time, seeding after each applied one."""
        from planner.executor import Executor
        from planner.plan import Plan

        if not plan:
            return
        executor = Executor(self.database.path, create=True, catalog=self.catalog)
        if self.seed is None or plan.direction != "apply":
            executor.run(plan)
            return
        for step in plan.steps:
            # After the step's commit, before the next step: the seed sees exactly that version applied.
            executor.run(Plan(plan.direction, (step,), target=plan.target))
            self.run_seed(step.version)

    def run_seed(self, version: str) -> None:
        """Call the seed for ``version`` in one transaction; ``SeedFailed`` (rows rolled back) if it raises."""
        if self.seed is None:
            return
        with closing(self.database.connect()) as conn:
            conn.execute("BEGIN")
            try:
                self.seed(version, conn)
                if conn.in_transaction:
                    conn.execute("COMMIT")
            except Exception as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
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

    def state(self) -> SchemaState:
        """The schema now, as the stairway compares it."""
        with closing(self.database.connect()) as conn:
            return capture(conn)

    def objects(self) -> list[str]:
        """Every user table, index, trigger and view now (the ledger's left out)."""
        with closing(self.database.connect()) as conn:
            return user_objects(conn)


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

    runner.database.reset()
    try:
        plan = runner.apply()
    except ExecutionError as exc:
        version = getattr(exc, "version", None)
        raise MigrationTestFailure(version, [f"upgrade from an empty database failed: {explain(exc)}"]) from exc
    except SeedFailed as exc:
        raise MigrationTestFailure(exc.version, [str(exc)]) from exc
    missing = set(runner.catalog.versions) - runner.applied
    if missing:
        raise MigrationTestFailure(None, [f"upgrade left {', '.join(sorted(missing, key=int))} unapplied"])
    return plan.versions


def check_downgrade_all(runner: MigrationRunner) -> list[str]:
    """Apply everything, then a cascade rollback of every root: only the ledger may remain.

    Raises ``NoDowngrade`` when some migration has no ``downgrade`` (a full
    rollback cannot pass it), ``MigrationTestFailure`` for anything left.
    """
    from planner.errors import ExecutionError

    irreversible = [m.version for m in runner.catalog if m.downgrade is None]
    if irreversible:
        raise NoDowngrade(irreversible, "a full rollback cannot pass them")
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


# --------------------------------------------------------------------------
# The stairway
# --------------------------------------------------------------------------


@dataclass
class StairResult:
    """What climbing one stair did: the plan of each move, and the warnings worth showing."""

    version: str
    reversible: bool
    database: Path
    fresh_database: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


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

    def __init__(self, catalog: Catalog, new_database: Callable[[], SQLiteDatabase], seed: Seed | None = None):
        self.catalog = catalog
        self.new_database = new_database
        self.seed = seed
        self.runner: MigrationRunner | None = None
        self.applied: set[str] = set()
        self.trusted = False
        #: Versions whose upgrade failed, with the reason: their descendants are blocked.
        self.failed_upgrades: dict[str, str] = {}
        self._last_state: SchemaState | None = None

    @property
    def order(self) -> list[str]:
        """The order that climbs each stair once, on one database: the graph's topological order."""
        return self.catalog.graph.topological_order()

    def climb(self, version: str) -> StairResult:
        """Test ``version``'s stair; raise ``MigrationTestFailure``, ``StairBlocked`` or ``NoDowngrade``."""
        import time

        from planner.errors import ExecutionError

        started = time.perf_counter()
        migration = self.catalog.get(version)
        version = migration.version
        needs = self.catalog.graph.ancestors(version)
        blockers = {v: self.failed_upgrades[v] for v in needs if v in self.failed_upgrades}
        if blockers:
            raise StairBlocked(version, blockers)
        fresh = self._prepare(version, needs)
        runner = self.runner
        assert runner is not None
        result = StairResult(version, migration.reversible, runner.database.path, fresh)

        # In an unbroken walk the previous stair ended on this very schema (seeds add rows only).
        before = self._last_state if not fresh and self._last_state is not None else runner.state()
        self._last_state = None
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
        after = runner.state()

        if not migration.reversible:
            raise NoDowngrade([version], "the stairway applied it once and cannot roll it back")

        try:
            runner.rollback(version)
        except ExecutionError as exc:
            # Rolled back by the executor: V stays applied, which is what its descendants need.
            raise MigrationTestFailure(version, [f"rollback failed: {explain(exc)}"]) from exc
        self.applied.discard(version)
        rolled_back = runner.state()
        lines = [f"rollback {line}" for line in differences(before, rolled_back, "rollback")]
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
        changed = differences(after, again, "re-apply")
        if changed:
            self.trusted = False
            lines.append("re-apply differs from the first apply: " + "; ".join(changed))
        if lines:
            raise MigrationTestFailure(version, lines)
        self._last_state = again
        result.seconds = time.perf_counter() - started
        return result

    def _prepare(self, version: str, needs: set[str]) -> bool:
        """Make the database hold every ancestor of ``version`` and not ``version``; whether it is a fresh one."""
        from planner.errors import ExecutionError

        reusable = (
            self.runner is not None and self.trusted and version not in self.applied and needs <= self.applied
        )
        if reusable:
            return False
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
