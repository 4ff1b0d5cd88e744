"""The dependency graph of a catalog: a networkx DAG over version strings.

An edge runs from a dependency to its dependent (0020 → 0027 means 0027
depends on 0020), so "ancestors" are what a migration needs and "descendants"
are what needs it. This module does no I/O and knows nothing of files or
databases; the algorithms are networkx's, the meaning of their results is ours.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Collection, Iterable, Mapping

import networkx as nx

from planner.errors import CatalogError, DependencyCycle, MigrationNotFound, SelfDependency, UnknownDependency


def version_key(version: str) -> int:
    """Versions order numerically: ``0100`` comes after ``0027`` whatever their width."""
    return int(version)


class MigrationGraph:
    """Which migration needs which, with the orders that follow from it.

    The orders are computed here rather than with networkx's generic
    ``lexicographical_topological_sort`` over subgraph views: plans are asked
    for on every command, and a heap over plain adjacency keeps each one
    linear in the part of the graph it touches.
    """

    def __init__(self, graph: nx.DiGraph, order: list[str] | None = None):
        self._graph = graph
        self._succ = graph.succ
        self._pred = graph.pred
        # (number, spelling): a total order even if two spellings of one number slip in.
        self._key = {v: (int(v), v) for v in graph}
        self._order = order

    @classmethod
    def build(cls, dependencies: Mapping[str, Iterable[str]]) -> tuple[MigrationGraph, list[CatalogError]]:
        """Build from ``{version: its dependencies}``; every dependency must already be a known version.

        Self-dependencies are reported and left out; cycles are reported with
        their path, one per strongly connected group, and the graph still comes
        back so that a caller collecting problems can carry on.
        """
        problems: list[CatalogError] = []
        edges: list[tuple[str, str]] = []
        for version, needs in dependencies.items():
            for dependency in needs:
                if dependency == version:
                    problems.append(SelfDependency(version))
                else:
                    edges.append((dependency, version))
        graph = nx.DiGraph()
        graph.add_nodes_from(dependencies)
        graph.add_edges_from(edges)
        built = cls(graph)
        # The full order is needed by the first plan anyway; computing it here
        # doubles as the cycle check, so strongly connected groups are only
        # searched for when some migrations could not be ordered.
        order = built._kahn(graph, forward=True)
        if len(order) == len(graph):
            built._order = order
        else:
            stuck = graph.subgraph(set(graph) - set(order))
            groups = [c for c in nx.strongly_connected_components(stuck) if len(c) > 1]
            groups.sort(key=lambda c: min(built._key[v] for v in c))
            problems.extend(DependencyCycle(built._cycle_path(c)) for c in groups)
        return built, problems

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
        return sorted(self._pred[version], key=self._key.__getitem__)

    def dependents(self, version: str) -> list[str]:
        """The migrations that name ``version`` directly, in version order."""
        self._require(version)
        return sorted(self._succ[version], key=self._key.__getitem__)

    def ancestors(self, version: str) -> set[str]:
        """Everything that must be applied before ``version`` can be."""
        self._require(version)
        return self._reach(version, self._pred)

    def descendants(self, version: str) -> set[str]:
        """Everything that stops making sense once ``version`` is rolled back."""
        self._require(version)
        return self._reach(version, self._succ)

    @staticmethod
    def _reach(version: str, adjacency: Mapping[str, Iterable[str]]) -> set[str]:
        seen: set[str] = set()
        stack = [version]
        while stack:
            for other in adjacency[stack.pop()]:
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        seen.discard(version)  # only reachable through a cycle, which a valid catalog has not
        return seen

    def root_nodes(self) -> list[str]:
        """Migrations that depend on nothing."""
        return sorted((v for v, d in self._graph.in_degree() if d == 0), key=self._key.__getitem__)

    def leaf_nodes(self) -> list[str]:
        """Migrations nothing depends on yet: where a new migration should attach."""
        return sorted((v for v, d in self._graph.out_degree() if d == 0), key=self._key.__getitem__)

    def unmet_dependencies(self, applied: Collection[str]) -> list[tuple[str, str]]:
        """Pairs (applied version, a dependency of it that is not applied), in version order."""
        key = self._key
        pairs = [
            (version, dependency)
            for version in applied
            if version in key
            for dependency in self._pred[version]
            if dependency not in applied
        ]
        pairs.sort(key=lambda pair: (key[pair[0]], key[pair[1]]))
        return pairs

    # -- orders ------------------------------------------------------------------

    def topological_order(self, versions: Collection[str] | None = None) -> list[str]:
        """The order to apply ``versions`` (all migrations by default) so each comes after what it needs.

        Among migrations that could go next, the lowest version goes first: a
        linear catalog applies in number order, and the result never depends
        on the order files were listed in. Only dependencies among
        ``versions`` are followed, which is exact for a pending set over a
        consistent history (everything outside it that it needs is applied).
        """
        if versions is None:
            return list(self._full_order())
        nodes = self._members(versions)
        if len(nodes) == len(self._graph):
            return list(self._full_order())
        return self._kahn(nodes, forward=True)

    def reverse_topological_order(self, versions: Collection[str]) -> list[str]:
        """The order to roll back ``versions``: dependents first, the highest version first among equals."""
        return self._kahn(self._members(versions), forward=False)

    def rollback_order(self, version: str, applied: Collection[str]) -> list[str]:
        """``version`` and its applied descendants, in the order to roll them back (``version`` last).

        Dependents come first, the highest version first among equals. The
        order follows dependencies through migrations that are not applied:
        after a hand-edited ledger, ``0031`` (applied) may need ``0030`` (not
        applied) which needs ``0029`` (applied), and ``0031`` must still be
        rolled back before ``0029``.
        """
        self._require(version)
        nodes = self._reach(version, self._succ)
        nodes.add(version)
        keep = {v for v in nodes if v in applied}
        keep.add(version)
        return self._kahn(nodes, forward=False, keep=keep)

    def _full_order(self) -> list[str]:
        if self._order is None:
            order = self._kahn(self._graph, forward=True)
            if len(order) != len(self._graph):
                raise nx.NetworkXUnfeasible("the migration graph has a dependency cycle")
            self._order = order
        return self._order

    def _members(self, versions: Collection[str]) -> set[str]:
        nodes = set(versions)
        for version in nodes:
            if version not in self._key:
                raise MigrationNotFound(version)
        return nodes

    def _kahn(
        self, nodes: Collection[str], *, forward: bool, keep: Collection[str] | None = None
    ) -> list[str]:
        """Kahn's algorithm over ``nodes`` with a heap: lowest version first, or highest when not ``forward``.

        With ``keep``, other nodes are passed through as soon as they are free
        and left out of the result, so they constrain the order without
        appearing in it. Nodes on a cycle never become free and are left out.
        """
        before, after = (self._pred, self._succ) if forward else (self._succ, self._pred)
        key = self._key
        sign = 1 if forward else -1
        whole = nodes is self._graph
        waiting: dict[str, int] = {}
        heap: list[tuple[int, str]] = []
        passing: list[str] = []
        for v in nodes:
            count = len(before[v]) if whole else sum(1 for u in before[v] if u in nodes)
            if count:
                waiting[v] = count
            elif keep is None or v in keep:
                heap.append((sign * key[v][0], v))
            else:
                passing.append(v)
        heapq.heapify(heap)
        order: list[str] = []
        while heap or passing:
            if passing:
                v = passing.pop()
            else:
                v = heapq.heappop(heap)[1]
                order.append(v)
            for w in after[v]:
                if w in waiting:
                    waiting[w] -= 1
                    if not waiting[w]:
                        del waiting[w]
                        if keep is None or w in keep:
                            heapq.heappush(heap, (sign * key[w][0], w))
                        else:
                            passing.append(w)
        return order

    def _cycle_path(self, group: Collection[str]) -> list[str]:
        """The shortest cycle through the group's lowest version, from it, first node repeated.

        Successors are visited in version order so the path reported never
        depends on the order files were listed in.
        """
        start = min(group, key=self._key.__getitem__)
        parent: dict[str, str] = {}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            for w in sorted(self._succ[v], key=self._key.__getitem__):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w in group and w not in parent:
                    parent[w] = v
                    queue.append(w)
        raise AssertionError(f"{start} is on no cycle")  # a strongly connected group always has one


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
