"""The dependency graph of a catalog: a DAG over version strings.

An edge runs from a dependency to its dependent (0020 → 0027 means 0027
depends on 0020), so "ancestors" are what a migration needs and "descendants"
are what needs it. This module does no I/O and knows nothing of files or
databases.

Orders come from networkx (``lexicographical_topological_sort``, ties broken
by version number), with one shortcut: when every dependency has a lower
number than its dependent (the usual catalog, and always true of implied
dependencies), number order *is* that order, so a sort replaces building a
networkx ``DiGraph`` at all. On a 10,000-migration catalog building the
``DiGraph`` alone costs more than the whole plan should (see
docs/performance.md); the property tests check both paths against a model.
networkx itself is imported only when a graph needs it: importing it costs
about 0.2 s, more than the rest of ``apm migrate --list`` on such a catalog.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, cast

from planner import versions
from planner.errors import CatalogError, DependencyCycle, MigrationNotFound, SelfDependency

if TYPE_CHECKING:
    import networkx as nx


class MigrationGraph:
    """Which migration needs which, with the orders that follow from it.

    Orders break ties by version number. When every dependency has a lower
    number than its dependent, number order is itself a dependency order, so
    the orders are plain sorts; otherwise networkx computes them on
    ``nx_graph``.
    """

    def __init__(self, dependencies: Mapping[str, Iterable[str]], numbers: Mapping[str, int] | None = None):
        """``dependencies`` maps every version to the versions it needs, all of them versions of the graph.

        ``numbers`` (each version's numeric value) saves parsing them again
        when the caller already has them. A dependency named twice counts
        once; a self-dependency is left out (``build`` reports it).
        """
        pred: dict[str, tuple[str, ...]] = dict(dependencies)  # type: ignore[arg-type]  # tuples after the loop
        # Every version of a graph spells a number (the caller's contract), so none of these is None.
        key = numbers if numbers is not None else cast("dict[str, int]", {v: versions.number(v) for v in pred})
        monotone = True
        untidy: list[str] = []  # versions naming themselves or a dependency twice
        self._self_dependent: list[str] = []
        # One pass over the edges, a comparison each: this runs on every command.
        for version, needs in pred.items():
            if type(needs) is not tuple:
                needs = pred[version] = tuple(needs)
            number = key[version]
            for dependency in needs:
                if key[dependency] >= number:
                    monotone = False
                    if dependency == version:
                        self._self_dependent.append(version)
                        untidy.append(version)
            if len(needs) > 1 and len(set(needs)) < len(needs):
                untidy.append(version)
        for version in untidy:
            pred[version] = tuple(d for d in dict.fromkeys(pred[version]) if d != version)
        self._pred = pred
        self._key = key
        # Dependents are built on first use: applying, and rolling back a
        # catalog whose dependencies all point to lower versions, never need them.
        self._dependents: dict[str, list[str]] | None = None
        self._monotone = monotone
        self._order: list[str] | None = None
        self._nx: nx.DiGraph | None = None

    @classmethod
    def build(
        cls,
        dependencies: Mapping[str, Iterable[str]],
        numbers: Mapping[str, int] | None = None,
        *,
        in_number_order: bool = False,
    ) -> tuple[MigrationGraph, list[CatalogError]]:
        """Build from ``{version: its dependencies}``; every dependency must already be a known version.

        Self-dependencies are reported and left out; cycles are reported with
        their path, one per strongly connected group, and the graph still comes
        back so that a caller collecting problems can carry on.
        ``in_number_order`` says the mapping lists versions by number (a
        catalog has sorted them already), which spares sorting them again.
        """
        graph = cls(dependencies, numbers)
        if graph._monotone and in_number_order:
            graph._order = list(graph._pred)
        problems: list[CatalogError] = [SelfDependency(v) for v in dict.fromkeys(graph._self_dependent)]
        if not graph._monotone:
            # start-up time: planner.graph runs without networkx until build() needs it
            import networkx as nx

            # Ordering everything doubles as the cycle check.
            try:
                graph._order = graph._lexicographic(graph.nx_graph)
            except nx.NetworkXUnfeasible:
                groups = [c for c in nx.strongly_connected_components(graph.nx_graph) if len(c) > 1]
                groups.sort(key=lambda c: min(graph._key[v] for v in c))
                problems.extend(DependencyCycle(graph._cycle_path(c)) for c in groups)
        return graph, problems

    # -- what a migration needs, and what needs it ------------------------------

    def __contains__(self, version: object) -> bool:
        return version in self._pred

    def __len__(self) -> int:
        return len(self._pred)

    @property
    def nx_graph(self) -> nx.DiGraph:
        """The graph as a networkx ``DiGraph``, built on first use (read it; do not change it)."""
        if self._nx is None:
            # start-up time: planner.graph runs without networkx until nx_graph() needs it
            import networkx as nx

            graph = nx.DiGraph()
            graph.add_nodes_from(self._pred)
            graph.add_edges_from((d, v) for v, needs in self._pred.items() for d in needs)
            self._nx = graph
        return self._nx

    @property
    def _succ(self) -> dict[str, list[str]]:
        """Each version's direct dependents, in the order the dependencies were given."""
        if self._dependents is None:
            succ: dict[str, list[str]] = {v: [] for v in self._pred}
            for version, needs in self._pred.items():
                for dependency in needs:
                    succ[dependency].append(version)
            self._dependents = succ
        return self._dependents

    def _require(self, version: str) -> None:
        if version not in self._pred:
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
        # Frontier by frontier, so that each migration's neighbours are merged by
        # set operations rather than one Python step per dependency.
        seen: set[str] = set()
        frontier = {version}
        while frontier:
            reached: set[str] = set()
            for node in frontier:
                reached.update(adjacency[node])
            reached -= seen
            seen |= reached
            frontier = reached
        seen.discard(version)  # only reachable through a cycle, which a valid catalog has not
        return seen

    def root_nodes(self) -> list[str]:
        """Migrations that depend on nothing."""
        return sorted((v for v, needs in self._pred.items() if not needs), key=self._key.__getitem__)

    def leaf_nodes(self) -> list[str]:
        """Migrations nothing depends on yet: where a new migration should attach."""
        return sorted((v for v, dependents in self._succ.items() if not dependents), key=self._key.__getitem__)

    def unmet_dependencies(self, applied: Collection[str]) -> list[tuple[str, str]]:
        """Pairs (applied version, a dependency of it that is not applied), in version order."""
        key = self._key
        pred = self._pred
        pairs = [
            (version, dependency)
            for version in applied
            if version in pred
            for dependency in pred[version]
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
        if len(nodes) == len(self._pred):
            return list(self._full_order())
        if self._monotone:
            return sorted(nodes, key=self._key.__getitem__)
        return self._lexicographic(self.nx_graph.subgraph(nodes))

    def reverse_topological_order(self, versions: Collection[str]) -> list[str]:
        """The order to roll back ``versions``: dependents first, the highest version first among equals."""
        nodes = self._members(versions)
        if self._monotone:
            return sorted(nodes, key=self._key.__getitem__, reverse=True)
        return self._lexicographic(self.nx_graph.subgraph(nodes).reverse(copy=False), descending=True)

    def rollback_order(self, version: str, applied: Collection[str]) -> list[str]:
        """``version`` and its applied descendants, in the order to roll them back (``version`` last).

        Dependents come first, the highest version first among equals. The
        order follows dependencies through migrations that are not applied:
        after a hand-edited ledger, ``0003`` (applied) may need ``0005`` (not
        applied) which needs ``0004`` (applied), and ``0003`` must still be
        rolled back before ``0004``.
        """
        self._require(version)
        if self._monotone:
            # Every descendant has a higher number, so descending number is dependents
            # first; and one sweep along number order finds them all, a set test
            # per migration, where a search would take a Python step per dependency.
            order = self._full_order()
            reached = {version}
            touches, add = reached.isdisjoint, reached.add
            pred = self._pred
            found: list[str] = []
            for other in order[order.index(version) + 1 :]:
                if not touches(pred[other]):
                    add(other)
                    found.append(other)
            # ``found`` is in number order already: reversed, it is dependents first.
            keep = [other for other in reversed(found) if other in applied]
            keep.append(version)
            return keep
        # Order the whole descendant set, applied or not, so that dependencies
        # through unapplied migrations still constrain the order; then keep the applied.
        nodes = self._reach(version, self._succ)
        kept = nodes.intersection(applied)
        kept.add(version)
        nodes.add(version)
        order = self._lexicographic(self.nx_graph.subgraph(nodes).reverse(copy=False), descending=True)
        return [v for v in order if v in kept]

    def _full_order(self) -> list[str]:
        if self._order is None:
            if self._monotone:
                order = sorted(self._pred, key=self._key.__getitem__)
            else:
                order = self._lexicographic(self.nx_graph)  # raises NetworkXUnfeasible on a cycle
            self._order = order
        return self._order

    def _members(self, versions: Collection[str]) -> set[str]:
        nodes = set(versions)
        if not nodes <= self._pred.keys():
            raise MigrationNotFound(min(nodes - self._pred.keys()))
        return nodes

    def _lexicographic(self, graph: nx.DiGraph, *, descending: bool = False) -> list[str]:
        """networkx's topological order of ``graph``, the lowest (or highest) version first among equals."""
        # start-up time: planner.graph runs without networkx until _lexicographic() needs it
        import networkx as nx

        key = self._key
        by = (lambda v: -key[v]) if descending else key.__getitem__
        return list(nx.lexicographical_topological_sort(graph, key=by))

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
