"""Plans: which migrations to run, in which direction and order. Pure functions.

A plan is computed from the catalog and the set of applied versions alone, so
"what would run" can be shown, compared and tested without a database; the
executor only runs what a plan says. Every refusal happens here, before
anything runs: a rollback that would strand applied dependents, a rollback
through a migration without ``downgrade``, an apply over an inconsistent history.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final, Literal, NamedTuple

from planner import deferred_dataclass, versions
from planner.catalog import Catalog
from planner.errors import (
    EmptyUpgrade,
    InconsistentHistory,
    InvalidVersion,
    IrreversibleMigration,
    MigrationNotFound,
    MissingFileInScope,
    NonTransactionalInAtomic,
    NotApplied,
    PartiallyAppliedSquash,
    RollbackRefused,
    UnknownAppliedMigration,
)
from planner.catalog import without_collector
from planner.migration import Migration, load_code

APPLY: Final = "apply"
ROLLBACK: Final = "rollback"
#: A plan to a state (``--to``): rollbacks, then applies; each step says its own direction.
MIXED: Final = "mixed"
#: ``--to base``: the state before the first migration.
BASE = "base"
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
    """An ordered list of steps and what was asked for.

    ``direction`` is the steps' common direction, or ``"mixed"`` for a plan
    to a state (``to_plan``), whose steps each carry their own.
    """

    direction: Direction | Literal["mixed"]
    steps: tuple[Step, ...]
    #: The version the user named (``--target``, ``--rollback`` or ``--to``, where it may be ``"base"``), if any.
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
    return versions.ordered(unknown)


def applied_heads(catalog: Catalog, applied: Iterable[str]) -> list[str]:
    """The applied migrations that no applied migration depends on, directly or not: where each line stands.

    One number cannot say which schema a database has once the graph
    branches: the highest applied version says nothing of the lines below it
    that are still pending. The heads do (``apm status``). Rows with no file
    are not in the graph and are not heads (``unknown_applied`` lists them).
    """
    known, _ = catalog.split_applied(applied)
    graph = catalog.graph
    below_applied: set[str] = set()  # versions some applied migration depends on
    for version in reversed(graph.topological_order()):
        if any(d in known or d in below_applied for d in graph.dependents(version)):
            below_applied.add(version)
    return versions.ordered(v for v in known if v in graph and v not in below_applied)


@without_collector
def apply_plan(catalog: Catalog, applied: Iterable[str], target: str | None = None) -> Plan:
    """Every pending migration (or only what ``target`` needs, and ``target``) in dependency order.

    Refuses with ``InconsistentHistory`` when an applied migration's dependency
    is not applied, since no order of the pending ones can repair that.
    """
    known, _ = catalog.split_applied(_refuse_partial_squash(catalog, applied))
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


@deferred_dataclass(frozen=True)
class RollbackScope:
    """What rolling back one migration takes: it, and every applied migration that depends on it.

    ``order`` is the order to roll them back in: dependents first (the
    highest version first among equals), the migration itself last.
    """

    version: str
    order: tuple[str, ...]

    @property
    def dependents(self) -> tuple[str, ...]:
        """The applied migrations that need ``version``, directly or through others, in rollback order."""
        return self.order[:-1]


def rollback_scope(
    catalog: Catalog, applied: Iterable[str] | None, version: str, *, require_applied: bool = True
) -> RollbackScope:
    """The one rule for what a rollback of ``version`` takes; the plan, the marks, the diagram and ``--to`` ask it.

    ``applied`` is the ledger in any spelling, or ``None`` when there is no
    database (then every descendant counts, since any may be applied
    somewhere). Refuses with ``MigrationNotFound`` (no such version),
    ``UnknownAppliedMigration`` (recorded as applied but its file is gone, in
    any spelling) or ``NotApplied``; ``require_applied=False`` (``--to``, which
    keeps ``version`` and takes only its dependents) drops the last refusal.
    """
    if not isinstance(version, str) or not version.strip():
        raise InvalidVersion(version if isinstance(version, str) else "")
    if applied is None:
        known, unknown = set(catalog.versions), set[str]()
    else:
        known, unknown = catalog.split_applied(applied)
    canonical = catalog.canonical(version)
    if canonical is None:
        if any(versions.same(version, recorded) for recorded in unknown):
            raise UnknownAppliedMigration(version)
        raise MigrationNotFound(version)
    if require_applied and canonical not in known:
        raise NotApplied(canonical)
    return RollbackScope(canonical, tuple(catalog.graph.rollback_order(canonical, known)))


def refuse_missing_files_in_scope(catalog: Catalog, applied: Iterable[str], target: str,
                                  scope: Collection[str], *, to: bool = False) -> None:
    """Refuse (``MissingFileInScope``) a rollback of ``scope`` that an applied migration without its file may need.

    The ledger keeps no dependencies, so a migration whose file is gone could
    depend on anything applied before it. The one thing known is time: a
    migration applied strictly before every version in ``scope`` cannot depend
    on any of them (a dependency is always applied first). So only those are
    let through; one applied later, at the same second, or at a time the
    ledger does not hold (``applied`` given as bare versions, old rows
    without ``applied_at``) refuses the whole rollback, before anything runs.
    """
    if not scope:
        return
    _, unknown = catalog.split_applied(applied)
    if not unknown:
        return
    when = _applied_times(catalog, applied)
    starts = [when.get(version) for version in scope]
    earliest = None if None in starts else min(s for s in starts if s is not None)
    blocking = [m for m in unknown if earliest is None or when.get(m) is None or not when[m] < earliest]
    if blocking:
        raise MissingFileInScope(target, versions.ordered(blocking), catalog.directory, to=to)


def _applied_times(catalog: Catalog, applied: Iterable[str]) -> dict[str, str]:
    """When each applied migration was recorded, by canonical version, where the ledger says so to the second.

    ``applied_at`` is ``YYYY-MM-DD HH:MM:SS`` on both engines (UTC), so such
    strings order as times; anything shorter (a date alone) orders nothing.
    """
    if not isinstance(applied, Mapping):
        return {}
    times = {}
    for recorded, entry in applied.items():  # a ledger entry, or its applied_at alone (a fleet's quick reading)
        moment = entry if isinstance(entry, str) else getattr(entry, "applied_at", None)
        if isinstance(moment, str) and len(moment) >= 19:
            times[catalog.canonical(recorded) or recorded] = moment[:19]
    return times


def step_conflicts(step: Step, applied: Collection[str], dependents: Callable[[str], Iterable[str]]) -> list[str]:
    """Why ``step`` no longer fits the ledger ``applied`` (canonical spellings); ``[]`` when it still does.

    An apply needs every dependency applied; a rollback needs every direct
    dependent unapplied (a cascade has rolled them back in earlier steps).
    The executor asks this inside each step's write lock, because another
    process may have changed the ledger since the plan was made.
    """
    migration = step.migration
    if step.direction == APPLY:
        return [v for v in migration.depends_on if v not in applied]
    return versions.ordered({v for v in dependents(migration.version) if v in applied})


@without_collector
def rollback_plan(catalog: Catalog, applied: Iterable[str], version: str, cascade: bool = False) -> Plan:
    """Roll back ``version``, and with ``cascade`` its applied dependents first.

    Without ``cascade``, applied dependents make this a refusal that names
    them and the order a cascade would take. Any migration in the plan
    without ``downgrade`` refuses the whole plan: stopping halfway through a
    cascade would leave the database between two consistent states.
    """
    applied = applied if isinstance(applied, Mapping) else list(applied)  # read twice below
    scope = rollback_scope(catalog, _refuse_partial_squash(catalog, applied), version)
    refuse_missing_files_in_scope(catalog, applied, scope.version, scope.order)
    migrations = catalog.in_order(scope.order)
    irreversible = versions.ordered(m.version for m in migrations if m.downgrade is None)
    if scope.dependents and not cascade:
        # Name what would block the cascade too, so the advice is never a command that fails.
        raise RollbackRefused(scope.version, versions.ordered(scope.dependents), list(scope.order), irreversible,
                              _declared_reasons(migrations))
    if irreversible:
        raise IrreversibleMigration(irreversible, _declared_reasons(migrations))
    return Plan(ROLLBACK, _steps(migrations, ROLLBACK), target=scope.version, cascade=cascade)


@without_collector
def to_plan(catalog: Catalog, applied: Iterable[str], target: str) -> Plan:
    """Bring ``target``'s line of the graph to exactly ``target``: one plan, rollbacks first, then applies.

    The rollbacks are the applied migrations that depend on ``target``, in
    the order ``rollback_scope`` gives a cascade (the same rule as
    ``--rollback --cascade``); the applies are ``target``'s pending ancestors
    and ``target``, as ``apply_plan(target=...)`` orders them. No rollback
    can un-apply an ancestor of ``target`` (the graph is acyclic), so the
    apply half is computed on the ledger as it is. Migrations neither before
    nor after ``target`` are left alone. ``target == "base"`` rolls back every
    applied migration, and so is refused (``UnknownAppliedMigration``) while
    the ledger records one whose file is gone: it could never be rolled back,
    and "base" would be a lie.

    Refuses with ``InconsistentHistory`` as ``apply_plan`` does (a state
    cannot be reached from a history the graph does not describe), and with
    ``IrreversibleMigration`` naming every rollback without ``downgrade``.
    """
    applied = applied if isinstance(applied, Mapping) else list(applied)  # read twice below
    known, unknown = catalog.split_applied(_refuse_partial_squash(catalog, applied))
    problems = catalog.graph.unmet_dependencies(known)
    if problems:
        raise InconsistentHistory(problems)
    forward: tuple[Step, ...]
    if target.strip().lower() == BASE:
        if unknown:
            raise UnknownAppliedMigration(versions.ordered(unknown)[0])
        target, back, forward = BASE, catalog.graph.reverse_topological_order(known), ()
    else:
        scope = rollback_scope(catalog, known, target, require_applied=False)
        target, back = scope.version, list(scope.dependents)
        refuse_missing_files_in_scope(catalog, applied, target, back, to=True)
        forward = apply_plan(catalog, known, target=target).steps
    rollbacks = catalog.in_order(back)
    irreversible = versions.ordered(m.version for m in rollbacks if m.downgrade is None)
    if irreversible:
        raise IrreversibleMigration(irreversible, _declared_reasons(rollbacks))
    return Plan(MIXED, _steps(rollbacks, ROLLBACK) + tuple(forward), target=target, cascade=bool(rollbacks))


def _declared_reasons(migrations: Iterable[Migration]) -> dict[str, str]:
    """What each migration that declares itself irreversible says, so the refusal can quote it."""
    return {m.version: m.irreversible_reason for m in migrations if m.irreversible_reason is not None}


def segments(plan: Plan) -> list[Plan]:
    """``plan`` cut where a step runs outside any transaction: each run of transactional steps, and each
    ``transactional = False`` step alone, in order.

    One transaction cannot hold a ``VACUUM`` or a ``CREATE INDEX
    CONCURRENTLY``, but the steps around it can each be held by one: a real
    run previews and commits every run of transactional steps as a plan of
    its own, so what they destroy is still shown and confirmed.
    """
    parts: list[list[Step]] = []
    for step in plan.steps:
        if step.migration.transactional and parts and parts[-1][-1].migration.transactional:
            parts[-1].append(step)
        else:
            parts.append([step])
    return [replace(plan, steps=tuple(part)) for part in parts]


def refuse_empty_upgrades(plan: Plan) -> None:
    """Refuse (``EmptyUpgrade``, naming every file) a plan that applies a migration whose upgrade does nothing.

    Its ledger row would say a change was made that never was, and the
    author meant to write one (an unfilled scaffold). A migration's file can
    be written half-way through a session, so the session asks this of every
    plan it runs, before anything runs; reading commands never do. It first runs the modules of what the
    plan calls when they were loaded without running (``planner.migration.load_code``): one that cannot be
    imported refuses the plan here, before anything runs, as loading the whole catalog used to.
    """
    load_code((step.migration, step.direction == APPLY) for step in plan.steps)
    empty = [step.migration.path for step in plan.steps
             if step.direction == APPLY and "upgrade" in step.migration.unwritten]
    if empty:
        raise EmptyUpgrade(empty)


def commits_in_parts(plan: Plan) -> bool:
    """Whether running ``plan`` step by step leaves earlier steps committed when a later one stops.

    True for more than one step, or any step outside a transaction. Such a
    run checks the database's integrity first: a corrupt page met half-way
    would otherwise leave half a plan committed on top of it.
    """
    steps = plan.steps
    return len(steps) > 1 or any(not step.migration.transactional for step in steps)


def refuse_non_transactional(plan: Plan) -> None:
    """An ``--atomic`` run holds one transaction for the whole plan; a ``transactional = False`` step cannot join it.

    Raises ``NonTransactionalInAtomic`` naming those steps, before anything runs.
    """
    outside = [step.version for step in plan.steps if not step.migration.transactional]
    if outside:
        raise NonTransactionalInAtomic(outside)


def _refuse_partial_squash(catalog: Catalog, applied: Iterable[str]) -> Iterable[str]:
    """``applied``, unless some but not all of a squash's replaced migrations are in it (``PartiallyAppliedSquash``).

    Such a database has neither the squash's schema nor the chain's: applying
    the squash would create what the chain already made, and applying the
    rest of the chain is impossible while the squash stands in the graph.
    """
    if not catalog.has_squashes:
        return applied
    applied = list(applied)
    for squash, (rows, missing) in sorted(catalog.squash_states(applied).items()):
        if missing:
            raise PartiallyAppliedSquash(squash, versions.ordered(rows), missing)
    return applied
