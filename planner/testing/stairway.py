"""The stairway: climb a catalog's graph one version at a time on one database, checking each rollback.

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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from planner.testing.runner import (
    MigrationRunner,
    MigrationTestFailure,
    NoDowngrade,
    Seed,
    SeedFailed,
    StairBlocked,
    explain,
)

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.schema import Schema as State
    from planner.testing.databases import TestDatabase

@dataclass
class StairResult:
    """What climbing one stair did: the plan of each move, and the warnings worth showing."""

    version: str
    reversible: bool
    #: The database the stair was climbed on (a ``SQLiteDatabase`` or ``PostgresDatabase``).
    database: TestDatabase
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
        result = StairResult(version, migration.reversible, runner.database, fresh)

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
        result.seconds = time.perf_counter() - started
        return result

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
        from planner.errors import ExecutionError

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
