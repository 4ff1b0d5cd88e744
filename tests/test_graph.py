"""The dependency graph: what it refuses (unknown, self, cycles) and the orders it gives."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from cli.errors import message as command_message
from planner.catalog import Catalog
from planner.errors import CatalogInvalid, DependencyCycle, MigrationNotFound, SelfDependency, UnknownDependency
from planner.graph import MigrationGraph
from planner.loader import load_catalog
from tests.conftest import write_migration


def graph_of(dependencies: dict[str, tuple[str, ...]]) -> MigrationGraph:
    graph, problems = MigrationGraph.build(dependencies)
    assert problems == []
    return graph


def problems_of(dependencies: dict[str, tuple[str, ...]]) -> list:
    return MigrationGraph.build(dependencies)[1]


# -- what the graph refuses ----------------------------------------------------


def test_unknown_dependency_message(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0027")
    write_migration(catalog_dir, "0029", depends_on=("0028",))
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(catalog_dir)
    (problem,) = info.value.problems
    assert isinstance(problem, UnknownDependency) and isinstance(problem, LookupError)
    assert (problem.version, problem.dependency) == ("0029", "0028")
    assert str(problem) == "0029 depends on 0028, which does not exist; add migration 0028 or fix the dependency"
    assert "0029 depends on 0028, which does not exist" in str(info.value)


def test_unknown_dependencies_are_all_reported(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", depends_on=("0005", "0006"))
    write_migration(catalog_dir, "0002", depends_on=("0007",))
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(catalog_dir)
    assert [p.versions for p in info.value.problems] == [("0001", "0005"), ("0001", "0006"), ("0002", "0007")]


def test_self_dependency(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "0009", depends_on=("0001", "9"))
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(catalog_dir)
    (problem,) = info.value.problems
    assert isinstance(problem, SelfDependency)
    assert problem.versions == ("0009",) and problem.path == catalog_dir / "migration_0009.py"
    assert str(problem) == "0009 depends on itself; remove 0009 from its dependencies"


def test_self_dependency_is_left_out_of_the_graph() -> None:
    graph, problems = MigrationGraph.build({"0001": (), "0002": ("0001", "0002")})
    assert [type(p) for p in problems] == [SelfDependency]
    assert graph.dependencies("0002") == ["0001"]
    assert graph.topological_order() == ["0001", "0002"]


def test_two_migration_cycle_path_starts_at_the_lowest_version() -> None:
    (problem,) = problems_of({"0029": ("0027",), "0027": ("0029",)})
    assert isinstance(problem, DependencyCycle)
    assert problem.cycle == ("0027", "0029", "0027")
    assert problem.versions == ("0027", "0029")
    assert str(problem) == "dependency cycle 0027 → 0029 → 0027; remove one of these dependencies"


def test_cycle_follows_dependency_direction() -> None:
    # 0001 needs 0003, 0003 needs 0002, 0002 needs 0001: 0001 must come before 0002, 0002 before 0003...
    (problem,) = problems_of({"0001": ("0003",), "0002": ("0001",), "0003": ("0002",)})
    assert problem.cycle == ("0001", "0002", "0003", "0001")


@pytest.mark.parametrize("order", list(itertools.permutations(["0005", "0010", "0020", "0030"])))
def test_cycle_report_does_not_depend_on_insertion_order(order: tuple[str, ...]) -> None:
    # 0010 ↔ 0020 and 0010 → 0030 → 0020 → 0010: one strongly connected group, two cycles through 0010.
    dependencies = {"0005": (), "0010": ("0020", "0005"), "0020": ("0010", "0030"), "0030": ("0010",)}
    (problem,) = problems_of({v: dependencies[v] for v in order})
    assert problem.cycle[0] == problem.cycle[-1] == "0010"
    assert problem.cycle == ("0010", "0020", "0010")


def test_cycle_path_is_a_real_cycle_through_the_lowest_version() -> None:
    dependencies = {"0040": ("0010",), "0030": ("0040",), "0020": ("0030",), "0010": ("0020", "0030")}
    (problem,) = problems_of(dependencies)
    assert problem.cycle[0] == "0010"
    for before, after in zip(problem.cycle, problem.cycle[1:]):
        assert before in dependencies[after]


def test_two_separate_cycles_are_both_reported(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "0027", depends_on=("0029",))
    write_migration(catalog_dir, "0029", depends_on=("0027",))
    write_migration(catalog_dir, "0040", depends_on=("0042",))
    write_migration(catalog_dir, "0041", depends_on=("0040",))
    write_migration(catalog_dir, "0042", depends_on=("0041",))
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(catalog_dir)
    cycles = sorted(p.cycle for p in info.value.problems if isinstance(p, DependencyCycle))
    assert cycles == [("0027", "0029", "0027"), ("0040", "0041", "0042", "0040")]
    assert len(info.value.problems) == 2
    assert {p.path.name for p in info.value.problems} == {"migration_0027.py", "migration_0040.py"}


def test_a_graph_with_a_cycle_still_comes_back() -> None:
    graph, problems = MigrationGraph.build({"0001": (), "0002": ("0003",), "0003": ("0002",)})
    assert len(problems) == 1 and len(graph) == 3


# -- orders ------------------------------------------------------------------------


def test_ties_are_broken_by_numeric_version_whatever_the_width() -> None:
    graph = graph_of({"0100": (), "27": (), "0030": (), "9": ()})
    assert graph.topological_order() == ["9", "27", "0030", "0100"]


def test_linear_catalog_applies_in_number_order() -> None:
    versions = [f"{n:04d}" for n in (1, 2, 10, 27, 100, 1000)]
    dependencies = {v: ((versions[i - 1],) if i else ()) for i, v in enumerate(versions)}
    assert graph_of(dict(reversed(dependencies.items()))).topological_order() == versions


def test_dependency_on_a_higher_version_is_respected() -> None:
    graph = graph_of({"0001": ("0005",), "0002": (), "0005": ()})
    assert graph.topological_order() == ["0002", "0005", "0001"]


def test_lowest_ready_version_goes_first() -> None:
    # 0027 becomes ready only after 0020; 0030 is ready at once, but 0020 < 0030 goes first.
    graph = graph_of({"0001": (), "0020": ("0001",), "0027": ("0020",), "0030": ("0001",), "0100": ()})
    assert graph.topological_order() == ["0001", "0020", "0027", "0030", "0100"]


def test_order_of_a_subset() -> None:
    graph = graph_of({"0001": (), "0020": ("0001",), "0027": ("0020",), "0030": ("0001",)})
    assert graph.topological_order({"0030", "0027", "0020"}) == ["0020", "0027", "0030"]
    assert graph.topological_order([]) == []


def test_order_of_a_subset_as_large_as_the_graph_is_that_subset() -> None:
    graph = graph_of({"0001": (), "0002": ("0001",)})
    with pytest.raises(MigrationNotFound):
        graph.topological_order(["0002", "0099"])


def test_full_order_is_a_fresh_list_each_time() -> None:
    graph = graph_of({"0001": (), "0002": ("0001",)})
    graph.topological_order().append("junk")
    assert graph.topological_order() == ["0001", "0002"]


def test_reverse_order_is_dependents_first_highest_version_among_equals() -> None:
    graph = graph_of({"0001": (), "0020": ("0001",), "0027": ("0020",), "0030": ("0001",)})
    assert graph.reverse_topological_order({"0001", "0020", "0027", "0030"}) == ["0030", "0027", "0020", "0001"]
    assert graph.reverse_topological_order({"0001", "0020"}) == ["0020", "0001"]


# -- neighbours ------------------------------------------------------------------


def seed_graph() -> MigrationGraph:
    return graph_of({"0001": (), "0020": ("0001",), "0027": ("0020",), "0029": ("0027",), "0030": ("0001",)})


def test_roots_and_leaves() -> None:
    graph = seed_graph()
    assert graph.root_nodes() == ["0001"]
    assert graph.leaf_nodes() == ["0029", "0030"]
    assert graph_of({"0100": (), "27": ()}).root_nodes() == ["27", "0100"]


def test_direct_dependencies_and_dependents_in_version_order() -> None:
    graph = graph_of({"0001": (), "0002": (), "0010": ("0002", "0001"), "0011": ("0001",)})
    assert graph.dependencies("0010") == ["0001", "0002"]
    assert graph.dependents("0001") == ["0010", "0011"]


def test_ancestors_and_descendants() -> None:
    graph = seed_graph()
    assert graph.ancestors("0029") == {"0001", "0020", "0027"}
    assert graph.descendants("0020") == {"0027", "0029"}
    assert graph.descendants("0029") == set()
    assert graph.ancestors("0001") == set()


@pytest.mark.parametrize("method", ["ancestors", "descendants", "dependencies", "dependents"])
def test_unknown_version_is_migration_not_found(method: str) -> None:
    with pytest.raises(MigrationNotFound) as info:
        getattr(seed_graph(), method)("0099")
    assert info.value.version == "0099"
    assert str(info.value) == "migration 0099 is not in the catalog"  # the fact; the command adds where to look
    assert "apm migrate --list" in command_message(info.value)


def test_catalog_graph_uses_catalog_spellings(tmp_path: Path) -> None:
    from planner.migration import IMPLIED, Migration

    def migration(version: str, *needs: str) -> Migration:
        return Migration(version, "", tmp_path / f"migration_{version}.py", version, needs, IMPLIED, "", print)

    catalog, problems = Catalog.build(tmp_path, [migration("0027"), migration("0029", "27")])
    assert problems == []
    assert catalog.graph.dependencies("0029") == ["0027"]
    assert catalog.get("0029").depends_on == ("0027",)
