"""The dependency graph of a catalog: a networkx DAG over version strings.

An edge runs from a dependency to its dependent (0020 → 0027 means 0027
depends on 0020), so "ancestors" are what a migration needs and "descendants"
are what needs it. This module does no I/O and knows nothing of files or
databases; the algorithms are networkx's, the meaning of their results is ours.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import networkx as nx

from planner.errors import CatalogError, DependencyCycle, MigrationNotFound, SelfDependency, UnknownDependency


def version_key(version: str) -> int:
    """Versions order numerically: ``0100`` comes after ``0027`` whatever their width."""
    return int(version)


class MigrationGraph:
    """Which migration needs which, with the orders that follow from it."""

    def __init__(self, graph: nx.DiGraph):
        self._graph = graph
        self._order: list[str] | None = None

    @classmethod
    def build(cls, dependencies: Mapping[str, Iterable[str]]) -> tuple[MigrationGraph, list[CatalogError]]:
        """Build from ``{version: its dependencies}``; every dependency must already be a known version.

        Self-dependencies are reported and left out; cycles are reported with
        their path, one per strongly connected group, and the graph still comes
        back so that a caller collecting problems can carry on.
        """
        problems: list[CatalogError] = []
        graph = nx.DiGraph()
        graph.add_nodes_from(dependencies)
        for version, needs in dependencies.items():
            for dependency in needs:
                if dependency == version:
                    problems.append(SelfDependency(version))
                else:
                    graph.add_edge(dependency, version)
        for component in nx.strongly_connected_components(graph):
            if len(component) > 1:
                problems.append(DependencyCycle(_cycle_path(graph.subgraph(component))))
        return cls(graph), problems

    # -- what a migration needs, and what needs it ------------------------------

    def __contains__(self, version: object) -> bool:
        return version in self._graph

    def __len__(self) -> int:
        return self._graph.number_of_nodes()

    @property
    def nx_graph(self) -> nx.DiGraph:
        """The underlying networkx graph (read it; do not change it)."""
        return self._graph

    def _require(self, version: str) -> None:
        if version not in self._graph:
            raise MigrationNotFound(version)

    def dependencies(self, version: str) -> list[str]:
        """The migrations ``version`` names directly, in version order."""
        self._require(version)
        return sorted(self._graph.predecessors(version), key=version_key)

    def dependents(self, version: str) -> list[str]:
        """The migrations that name ``version`` directly, in version order."""
        self._require(version)
        return sorted(self._graph.successors(version), key=version_key)

    def ancestors(self, version: str) -> set[str]:
        """Everything that must be applied before ``version`` can be."""
        self._require(version)
        return nx.ancestors(self._graph, version)

    def descendants(self, version: str) -> set[str]:
        """Everything that stops making sense once ``version`` is rolled back."""
        self._require(version)
        return nx.descendants(self._graph, version)

    def root_nodes(self) -> list[str]:
        """Migrations that depend on nothing."""
        return sorted((v for v, d in self._graph.in_degree() if d == 0), key=version_key)

    def leaf_nodes(self) -> list[str]:
        """Migrations nothing depends on yet: where a new migration should attach."""
        return sorted((v for v, d in self._graph.out_degree() if d == 0), key=version_key)

    # -- orders ------------------------------------------------------------------

    def topological_order(self, versions: Collection[str] | None = None) -> list[str]:
        """The order to apply ``versions`` (all migrations by default) so each comes after what it needs.

        Among migrations that could go next, the lowest version goes first: a
        linear catalog applies in number order, and the result never depends
        on the order files were listed in.
        """
        if versions is None or len(versions) == len(self._graph):
            if self._order is None:
                self._order = list(nx.lexicographical_topological_sort(self._graph, key=version_key))
            return list(self._order)
        return list(nx.lexicographical_topological_sort(self._graph.subgraph(versions), key=version_key))

    def reverse_topological_order(self, versions: Collection[str]) -> list[str]:
        """The order to roll back ``versions``: dependents first, the highest version first among equals."""
        subgraph = self._graph.subgraph(versions).reverse(copy=False)
        return list(nx.lexicographical_topological_sort(subgraph, key=lambda v: -version_key(v)))


def _cycle_path(component: nx.DiGraph) -> list[str]:
    """One cycle through a strongly connected group, starting at its lowest version, first node repeated."""
    start = min(component, key=version_key)
    edges = nx.find_cycle(component, source=start)
    path = [u for u, _ in edges]
    # find_cycle may enter the cycle after a short tail; rotate so it starts at its lowest version.
    first = min(path, key=version_key)
    i = path.index(first)
    path = path[i:] + path[:i]
    return [*path, path[0]]


def unknown_dependencies(
    dependencies: Mapping[str, Iterable[str]], known: Collection[str]
) -> list[UnknownDependency]:
    """Each dependency that names a version outside ``known``, as an error naming both versions."""
    return [
        UnknownDependency(version, dependency)
        for version, needs in dependencies.items()
        for dependency in needs
        if dependency not in known
    ]
