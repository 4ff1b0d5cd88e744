"""Plans: which migrations to run, in which direction and order. Pure functions.

A plan is computed from the catalog and the set of applied versions alone, so
"what would run" can be shown, compared and tested without a database; the
executor only runs what a plan says. Every refusal happens here, before
anything runs: a rollback that would strand applied dependents, a rollback
through a migration without ``downgrade``, an apply over an inconsistent history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from planner.catalog import Catalog, is_version
from planner.errors import (
    InconsistentHistory,
    IrreversibleMigration,
    MigrationNotFound,
    NotApplied,
    RollbackRefused,
    UnknownAppliedMigration,
)
from planner.gcpause import without_collector
from planner.graph import version_key
from planner.migration import Migration

APPLY = "apply"
ROLLBACK = "rollback"
Direction = Literal["apply", "rollback"]


class Step(NamedTuple):
    """Run one migration in one direction.

    A named tuple rather than a frozen dataclass: a plan over 10,000
    migrations makes 10,000 steps, and a frozen dataclass costs several times
    as much to create.
    """

    migration: Migration
    direction: Direction

    @property
    def version(self) -> str:
        return self.migration.version


@dataclass(frozen=True)
class Plan:
    """An ordered list of steps, all in the same direction, and what was asked for."""

    direction: Direction
    steps: tuple[Step, ...]
    #: The version the user named (``--target`` or ``--rollback``), if any.
    target: str | None = None
    cascade: bool = False

    @property
    def versions(self) -> list[str]:
        return [step.version for step in self.steps]

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)


def _steps(migrations: list[Migration], direction: Direction) -> tuple[Step, ...]:
    # tuple.__new__ directly skips the named tuple's generated __new__: half the cost per step.
    new = tuple.__new__
    return tuple([new(Step, (migration, direction)) for migration in migrations])


def inconsistent_history(catalog: Catalog, applied: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs (applied migration, its dependency that is not applied), in version order.

    Possible only after files were edited or the ledger was changed by hand;
    applying anything on top of such a history would build on a schema that
    is not what the graph says it is.
    """
    known, _ = catalog.split_applied(applied)
    return catalog.graph.unmet_dependencies(known)


def unknown_applied(catalog: Catalog, applied: Iterable[str]) -> list[str]:
    """Versions recorded as applied that have no file in the catalog; they stay applied."""
    _, unknown = catalog.split_applied(applied)
    return sorted(unknown, key=lambda v: (int(v) if is_version(v) else -1, v))


@without_collector
def apply_plan(catalog: Catalog, applied: Iterable[str], target: str | None = None) -> Plan:
    """Every pending migration (or only what ``target`` needs, and ``target``) in dependency order.

    Refuses with ``InconsistentHistory`` when an applied migration's dependency
    is not applied, since no order of the pending ones can repair that.
    """
    known, _ = catalog.split_applied(applied)
    problems = catalog.graph.unmet_dependencies(known)
    if problems:
        raise InconsistentHistory(problems)
    if target is not None:
        target = catalog.get(target).version
        wanted = catalog.graph.ancestors(target)
        wanted.add(target)
        order = catalog.graph.topological_order(wanted - known)
    elif known:
        order = catalog.graph.topological_order(set(catalog.versions) - known)
    else:
        order = catalog.graph.topological_order()
    return Plan(APPLY, _steps(catalog.in_order(order), APPLY), target=target)


@without_collector
def rollback_plan(catalog: Catalog, applied: Iterable[str], version: str, cascade: bool = False) -> Plan:
    """Roll back ``version``, and with ``cascade`` its applied dependents first.

    Without ``cascade``, applied dependents make this a refusal that names
    them and the order a cascade would take. Any migration in the plan
    without ``downgrade`` refuses the whole plan: stopping halfway through a
    cascade would leave the database between two consistent states.
    """
    known, unknown = catalog.split_applied(applied)
    canonical = catalog.canonical(version)
    if canonical is None:
        if version in unknown or (
            is_version(version) and any(is_version(v) and int(v) == int(version) for v in unknown)
        ):
            raise UnknownAppliedMigration(version)
        raise MigrationNotFound(version)
    if canonical not in known:
        raise NotApplied(canonical)
    order = catalog.graph.rollback_order(canonical, known)
    dependents = order[:-1]
    migrations = catalog.in_order(order)
    irreversible = [m.version for m in migrations if m.downgrade is None]
    if dependents and not cascade:
        # Name what would block the cascade too, so the advice is never a command that fails.
        raise RollbackRefused(
            canonical, sorted(dependents, key=version_key), order, sorted(irreversible, key=version_key)
        )
    if irreversible:
        raise IrreversibleMigration(sorted(irreversible, key=version_key))
    return Plan(ROLLBACK, _steps(migrations, ROLLBACK), target=canonical, cascade=cascade)
