"""What a diagram of a catalog's dependency graph shows: its nodes, edges and their states.

The formats (mermaid, Graphviz dot, terminal text, JSON) are drawn from this
model by ``planner.diagram_formats``.

Hand-drawn diagrams such as the seed guide's ``0020 → 0027 → 0029`` go stale
the day a migration is added; these are computed from the catalog (and, when a
database exists, from its ledger) every time. Everything here is a pure
function from a catalog to text, except ``render_image``, which hands dot
source to Graphviz: laying out a graph is Graphviz's job, not ours.

All formats share one reading, so a picture, a terminal and a script agree:

* the graph runs top to bottom (mermaid ``graph TD``, dot ``rankdir=TB``);
  an edge runs from a dependency to its dependent, as in ``planner.graph``;
* a node is named by its label, ``0027 Add metadata``;
* with a ledger, each node is ``applied``, ``pending``, or ``missing``
  (recorded as applied but its file is gone: drawn alone, with no edges,
  since without the file nobody knows what it depended on);
* ``focus`` keeps a migration, its ancestors and its descendants;
* ``rollback`` marks what a cascade rollback of a migration would take,
  while every node keeps its state styling;
* a migration that can never be rolled back is marked in every format, as
  the planner refuses it: ``(irreversible)`` after the label when its file
  declares so (a downgrade that only raises), ``(no downgrade)`` when it has
  none.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from planner import versions
from planner.catalog import Catalog
from planner.plan import rollback_scope

APPLIED = "applied"
PENDING = "pending"
MISSING = "missing"
#: The mermaid class of a migration that cannot be rolled back (no downgrade, or one that only raises).
IRREVERSIBLE = "irreversible"
State = Literal["applied", "pending", "missing"]

@dataclass(frozen=True)
class DiagramNode:
    """One box in a diagram: a migration, or a ledger row whose file is missing."""

    version: str
    description: str
    #: ``None`` when there is no ledger to compare with.
    state: State | None
    in_rollback: bool = False
    #: ``False`` for a migration without a usable ``downgrade`` (none, or one that only raises).
    reversible: bool = True
    #: What the file says when it declares itself irreversible (``Migration.irreversible_reason``).
    irreversible_reason: str | None = None

    @property
    def label(self) -> str:
        """``0027 Add metadata``, or ``0031 (file missing)`` when only the ledger knows the version;
        ``(irreversible)`` or ``(no downgrade)`` follows a migration that cannot be rolled back."""
        if self.state == MISSING:
            return f"{self.version} (file missing)"
        return f"{self.version} {self.description}{self.irreversibility}".strip()

    @property
    def irreversibility(self) -> str:
        """The mark after the label of a migration that cannot be rolled back; ``""`` for one that can."""
        if self.reversible or self.state == MISSING:
            return ""
        return " (irreversible)" if self.irreversible_reason is not None else " (no downgrade)"


@dataclass(frozen=True)
class Diagram:
    """What to draw, computed once and rendered by every format the same way.

    ``nodes`` come in the catalog's topological order (lowest version first
    among equals), then missing-file versions in version order; ``edges`` are
    (dependency, dependent) pairs between drawn nodes, in the same order.
    ``needs`` holds each drawn migration's dependencies in the whole catalog,
    so a focused text view can still say what else a migration needs.
    """

    nodes: tuple[DiagramNode, ...]
    edges: tuple[tuple[str, str], ...]
    needs: dict[str, tuple[str, ...]]
    states_known: bool
    focus: str | None = None
    rollback: str | None = None

    @property
    def versions(self) -> list[str]:
        """The drawn versions, in drawing order."""
        return [node.version for node in self.nodes]

    @property
    def rollback_versions(self) -> set[str]:
        """The drawn versions a cascade rollback of ``rollback`` would take."""
        return {node.version for node in self.nodes if node.in_rollback}


# -- what to draw -----------------------------------------------------------------


def focus_set(catalog: Catalog, version: str) -> set[str]:
    """``version`` with everything it needs and everything that needs it: its whole story in the graph."""
    canonical = catalog.get(version).version
    return catalog.graph.ancestors(canonical) | {canonical} | catalog.graph.descendants(canonical)


def rollback_set(catalog: Catalog, applied: Collection[str] | None, version: str) -> set[str]:
    """What a cascade rollback of ``version`` would take: ``plan.rollback_scope``, the planner's own rule.

    So a diagram never promises a rollback the planner refuses to plan, and
    refuses with the same error. Irreversible migrations are still included:
    the picture should show what stands in the way, not hide it.
    """
    return set(rollback_scope(catalog, applied, version).order)


def build_diagram(
    catalog: Catalog,
    applied: Collection[str] | None = None,
    *,
    focus: str | None = None,
    rollback: str | None = None,
) -> Diagram:
    """Decide which nodes and edges to draw, and how to mark each one.

    ``applied`` is the ledger's versions in any spelling (``"27"`` or
    ``"0027"``), or ``None`` when there is no database: then nodes carry no
    state. ``focus`` and ``rollback`` name versions in the catalog;
    ``MigrationNotFound`` (and, for ``rollback``, ``NotApplied`` or
    ``UnknownAppliedMigration``) say when they cannot be used.
    """
    graph = catalog.graph
    if applied is not None:
        applied = tuple(applied)  # read twice below; a one-shot iterable must not run dry
    if focus is not None:
        focus = catalog.get(focus).version
        drawn = focus_set(catalog, focus)
    else:
        drawn = set(catalog.versions)
    taken: set[str] = set()
    if rollback is not None:
        taken = rollback_set(catalog, applied, rollback)
        rollback = catalog.canonical(rollback) or rollback

    known: set[str] = set()
    missing: set[str] = set()
    if applied is not None:
        known, missing = catalog.split_applied(applied)

    def state_of(version: str) -> State | None:
        if applied is None:
            return None
        return APPLIED if version in known else PENDING

    order = graph.topological_order(drawn)
    nodes = [
        DiagramNode(version, catalog[version].description, state_of(version), version in taken,
                    catalog[version].reversible, catalog[version].irreversible_reason)
        for version in order
    ]
    # A missing file has no dependencies to focus on, so only the full picture shows it.
    if focus is None:
        nodes += [DiagramNode(version, "", MISSING) for version in versions.ordered(missing)]
    position = {version: i for i, version in enumerate(order)}
    edges = sorted(
        ((dependency, version) for version in order for dependency in graph.dependencies(version) if dependency in drawn),
        key=lambda edge: (position[edge[0]], position[edge[1]]),
    )
    needs = {version: tuple(graph.dependencies(version)) for version in order}
    return Diagram(tuple(nodes), tuple(edges), needs, applied is not None, focus, rollback)
