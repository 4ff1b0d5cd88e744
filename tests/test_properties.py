"""Properties of plans over random DAGs, checked against a small reference model written here.

Most examples build the catalog straight from ``Migration`` values, since
reading files is not what they test; one property writes real files in a
shuffled order and loads them, to show that listing order never leaks into plans.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import Catalog
from planner.errors import RollbackRefused
from planner.loader import load_catalog
from planner.migration import DECLARED, Migration
from planner.plan import apply_plan, rollback_plan
from tests.conftest import write_migration

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Dag:
    """A random DAG over versions: ``needs[v]`` are v's dependencies."""

    needs: dict[str, tuple[str, ...]]

    @property
    def versions(self) -> list[str]:
        return list(self.needs)

    def ancestors(self, version: str) -> set[str]:
        return _reach(version, self.needs)

    def descendants(self, version: str) -> set[str]:
        dependents: dict[str, list[str]] = {v: [] for v in self.needs}
        for v, needs in self.needs.items():
            for need in needs:
                dependents[need].append(v)
        return _reach(version, dependents)


def _reach(start: str, adjacency: dict) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for other in adjacency[stack.pop()]:
            if other not in seen:
                seen.add(other)
                stack.append(other)
    return seen


@st.composite
def dags(draw: st.DrawFn, max_size: int = 14) -> Dag:
    """Distinct numeric versions of mixed widths; half the time dependencies may point at higher versions."""
    numbers = draw(st.lists(st.integers(1, 400), min_size=1, max_size=max_size, unique=True))
    if draw(st.booleans()):
        # Every dependency lower than its dependent: the usual catalog, which the graph orders by sorting.
        numbers.sort()
    widths = draw(st.lists(st.sampled_from([1, 3, 4]), min_size=len(numbers), max_size=len(numbers)))
    versions = [f"{n:0{w}d}" for n, w in zip(numbers, widths)]
    # The list order (not the numeric order) is the topological one, so edges run both ways in number.
    needs: dict[str, tuple[str, ...]] = {}
    for i, version in enumerate(versions):
        earlier = versions[:i]
        chosen = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        needs[version] = tuple(chosen)
    return Dag(needs)


@st.composite
def dag_and_applied(draw: st.DrawFn) -> tuple[Dag, set[str]]:
    """A DAG and an applied set closed under ancestors, as a consistent ledger is."""
    dag = draw(dags())
    picked = draw(st.sets(st.sampled_from(dag.versions)))
    applied = set(picked)
    for version in picked:
        applied |= dag.ancestors(version)
    return dag, applied


def _noop(conn: object) -> None:
    return None


def catalog_of(dag: Dag, order: list[str] | None = None) -> Catalog:
    migrations = [
        Migration(v, f"m{v}", Path(f"migration_{v}.py"), v, dag.needs[v], DECLARED, "", _noop, _noop)
        for v in (order or dag.versions)
    ]
    catalog, problems = Catalog.build(Path("."), migrations)
    assert problems == []
    return catalog


def assert_lowest_ready_first(dag: Dag, applied: set[str], order: list[str]) -> None:
    """``order`` is the greedy order: each step takes the lowest version whose needs are met."""
    done = set(applied)
    remaining = set(order)
    for version in order:
        ready = [v for v in remaining if all(n in done for n in dag.needs[v])]
        assert version == min(ready, key=int)
        done.add(version)
        remaining.discard(version)


# -- apply -------------------------------------------------------------------------


@FAST
@given(dag_and_applied())
def test_apply_plan_is_a_topological_order_of_exactly_the_pending_set(case: tuple[Dag, set[str]]) -> None:
    dag, applied = case
    plan = apply_plan(catalog_of(dag), applied).versions
    assert len(plan) == len(set(plan))
    assert set(plan) == set(dag.versions) - applied
    position = {v: i for i, v in enumerate(plan)}
    for version in plan:
        for need in dag.needs[version]:
            assert need in applied or position[need] < position[version]
    assert_lowest_ready_first(dag, applied, plan)


@FAST
@given(dag_and_applied(), st.data())
def test_apply_plan_with_a_target_is_its_pending_ancestors_and_itself(
    case: tuple[Dag, set[str]], data: st.DataObject
) -> None:
    dag, applied = case
    target = data.draw(st.sampled_from(dag.versions))
    plan = apply_plan(catalog_of(dag), applied, target=target).versions
    assert set(plan) == (dag.ancestors(target) | {target}) - applied
    position = {v: i for i, v in enumerate(plan)}
    for version in plan:
        assert all(need in applied or position[need] < position[version] for need in dag.needs[version])


# -- rollback ----------------------------------------------------------------------


@FAST
@given(dag_and_applied(), st.data())
def test_cascade_rollback_is_the_applied_descendants_and_the_version(
    case: tuple[Dag, set[str]], data: st.DataObject
) -> None:
    dag, applied = case
    if not applied:
        return
    version = data.draw(st.sampled_from(sorted(applied)))
    plan = rollback_plan(catalog_of(dag), applied, version, cascade=True).versions
    assert set(plan) == (dag.descendants(version) & applied) | {version}
    assert len(plan) == len(set(plan)) and plan[-1] == version
    # Dependents first: nothing is rolled back while something still applied needs it.
    still = set(applied)
    for rolled in plan:
        assert not any(rolled in dag.needs[v] for v in still if v != rolled)
        still.discard(rolled)


@FAST
@given(dag_and_applied(), st.data())
def test_refusal_happens_exactly_when_applied_descendants_exist(
    case: tuple[Dag, set[str]], data: st.DataObject
) -> None:
    dag, applied = case
    if not applied:
        return
    version = data.draw(st.sampled_from(sorted(applied)))
    stranded = dag.descendants(version) & applied
    catalog = catalog_of(dag)
    if stranded:
        with pytest.raises(RollbackRefused) as info:
            rollback_plan(catalog, applied, version)
        assert set(info.value.dependents) == stranded
        assert info.value.cascade_order == tuple(rollback_plan(catalog, applied, version, cascade=True).versions)
    else:
        assert rollback_plan(catalog, applied, version).versions == [version]


# -- order independence ------------------------------------------------------------


@FAST
@given(dag_and_applied(), st.randoms(use_true_random=False))
def test_plans_do_not_depend_on_insertion_order(case: tuple[Dag, set[str]], rng: random.Random) -> None:
    dag, applied = case
    shuffled_versions = dag.versions
    rng.shuffle(shuffled_versions)
    shuffled_needs = Dag({v: tuple(rng.sample(dag.needs[v], len(dag.needs[v]))) for v in shuffled_versions})
    one, other = catalog_of(dag), catalog_of(shuffled_needs)
    assert apply_plan(one, applied).versions == apply_plan(other, applied).versions
    for version in dag.versions:
        assert apply_plan(one, applied, version).versions == apply_plan(other, applied, version).versions
    for version in applied:
        assert (
            rollback_plan(one, applied, version, cascade=True).versions
            == rollback_plan(other, applied, version, cascade=True).versions
        )
    assert one.graph.leaf_nodes() == other.graph.leaf_nodes()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(max_size=8), st.randoms(use_true_random=False))
def test_plans_do_not_depend_on_file_order(dag: Dag, rng: random.Random) -> None:
    # Files written in two shuffled orders (so directory listings differ) load into identical plans.
    plans = []
    for _ in range(2):
        order = dag.versions
        rng.shuffle(order)
        with tempfile.TemporaryDirectory() as folder:
            directory = Path(folder)
            for version in order:
                write_migration(directory, version, depends_on=dag.needs[version])
            catalog = load_catalog(directory)
            root = dag.versions[0]
            plans.append(
                (
                    apply_plan(catalog, []).versions,
                    rollback_plan(catalog, catalog.versions, root, cascade=True).versions,
                    [m.checksum for m in catalog],
                )
            )
    assert plans[0] == plans[1]
    assert set(plans[0][0]) == set(dag.versions)


# -- round trip ----------------------------------------------------------------------


@FAST
@given(dag_and_applied(), st.randoms(use_true_random=False))
def test_apply_then_rollback_everything_round_trips(case: tuple[Dag, set[str]], rng: random.Random) -> None:
    dag, applied = case
    catalog = catalog_of(dag)
    ledger = set(applied)
    for version in apply_plan(catalog, ledger).versions:
        assert all(need in ledger for need in dag.needs[version])
        ledger.add(version)
    assert ledger == set(dag.versions)
    # Roll back in cascades from randomly chosen applied migrations until nothing is left.
    while ledger:
        version = rng.choice(sorted(ledger))
        for rolled in rollback_plan(catalog, ledger, version, cascade=True).versions:
            assert not any(rolled in dag.needs[v] for v in ledger if v != rolled)
            ledger.remove(rolled)
        assert not catalog.graph.unmet_dependencies(ledger)
    assert apply_plan(catalog, ledger).versions == catalog.graph.topological_order()
