"""What a diagram of a catalog's dependency graph shows: its nodes, edges and their states.

The formats (mermaid, Graphviz dot, terminal text, JSON) are drawn from this
model below.

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

``to_<format>`` builds the diagram and renders it in one call.

The catalog page of a migrations folder: a Markdown README generated from the files.

The seed kept a hand-written "Migration catalog" beside the files, and it
went stale. This page is computed from the catalog alone (no database, no
clock, no absolute path), so the same files always give the same bytes: a
test can compare the committed page with a fresh one and fail when someone
adds a migration without running ``apm migrate docs``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final, Literal

import networkx as nx
from tabulate import tabulate

from planner import versions
from planner.catalog import Catalog
from planner.errors import GraphvizFailed, GraphvizMissing
from planner.migration import DECLARED, DOCUMENTED, IMPLIED, Migration
from planner.plan import rollback_scope


APPLIED: Final = "applied"
PENDING: Final = "pending"
MISSING: Final = "missing"
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


def build_diagram(catalog: Catalog, applied: Collection[str] | None = None, *, focus: str | None = None,
                  rollback: str | None = None) -> Diagram:
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


#: One direction for every format, so the mermaid and Graphviz pictures look alike.
MERMAID_DIRECTION = "TD"
DOT_RANKDIR = "TB"

# Fill and border colours per state, shared by mermaid and dot: green is done,
# white is still to do, amber is a ledger row whose file is gone.
_FILL = {APPLIED: "#d4edda", PENDING: "#ffffff", MISSING: "#fff3cd"}
_BORDER = {APPLIED: "#2e7d32", PENDING: "#757575", MISSING: "#b26a00"}
_ROLLBACK_BORDER = "#c62828"

# Terminal markers, in the spirit of a checklist.
_TEXT_MARKER = {APPLIED: "[x]", PENDING: "[ ]", MISSING: "[!]"}
_ROLLBACK_MARKER = "*"

# Graphviz sizes boxes to their labels, so nothing is cut; wrapping long
# descriptions only keeps a box from growing as wide as a sentence.
_DOT_WRAP = 28


# -- mermaid ------------------------------------------------------------------------


def render_mermaid(diagram: Diagram) -> str:
    """A mermaid flowchart, which GitHub and most docs sites draw from a fenced ``mermaid`` block.

    Nodes read ``m0027["0027 Add metadata"]``; states become ``classDef``
    and ``class`` lines, so a reader can restyle them without touching the graph.
    """
    lines = [f"graph {MERMAID_DIRECTION}"]
    for node in diagram.nodes:
        lines.append(f'    {_mermaid_id(node.version)}["{_mermaid_text(node.label)}"]')
    for dependency, dependent in diagram.edges:
        lines.append(f"    {_mermaid_id(dependency)} --> {_mermaid_id(dependent)}")

    classes: dict[str, list[str]] = {}
    if diagram.states_known:
        for node in diagram.nodes:
            assert node.state is not None
            classes.setdefault(node.state, []).append(node.version)
    irreversible = [node.version for node in diagram.nodes if node.irreversibility]
    if irreversible:
        classes[IRREVERSIBLE] = irreversible
    rolled_back = [node.version for node in diagram.nodes if node.in_rollback]
    if rolled_back:
        classes["rollback"] = rolled_back
    styles = {
        state: f"fill:{_FILL[state]},stroke:{_BORDER[state]},color:#000000" for state in (APPLIED, PENDING, MISSING)
    }
    styles[MISSING] += ",stroke-dasharray:5 3"
    styles[IRREVERSIBLE] = "font-style:italic"  # text only, so the state's fill and the rollback's border still show
    styles["rollback"] = f"stroke:{_ROLLBACK_BORDER},stroke-width:3px"
    # The rollback class comes last so its border wins over the state's.
    names = (APPLIED, PENDING, MISSING, IRREVERSIBLE, "rollback")
    for name in names:
        if name in classes:
            lines.append(f"    classDef {name} {styles[name]}")
    for name in names:
        if name in classes:
            lines.append(f"    class {','.join(_mermaid_id(v) for v in classes[name])} {name}")
    return "\n".join(lines) + "\n"


def _mermaid_id(version: str) -> str:
    # Mermaid ids must be plain words; a version is digits, a ledger row could be anything.
    return "m" + re.sub(r"[^A-Za-z0-9_]", "_", version)


def _mermaid_text(text: str) -> str:
    # Inside a quoted label mermaid reads entity codes; quotes and angle brackets must use them.
    return text.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


# -- Graphviz dot ---------------------------------------------------------------------


def render_dot(diagram: Diagram) -> str:
    """Graphviz source: what ``render_image`` turns into svg or png, and what other tools can read.

    Boxes read ``0027`` over ``Add metadata``, filled by state; the rollback
    set has a thick red border, and the edges inside it are red too, so the
    path a cascade takes stands out.
    """
    lines = [
        "digraph migrations {",
        f"    rankdir={DOT_RANKDIR};",
        '    graph [fontname="Helvetica", nodesep=0.4, ranksep=0.5];',
        '    node [shape=box, style="rounded,filled", fillcolor="#ffffff", color="#424242", '
        'fontname="Helvetica", fontsize=12, margin="0.15,0.08"];',
        '    edge [color="#616161", arrowsize=0.8];',
    ]
    for node in diagram.nodes:
        attributes = {"label": _dot_label(node)}
        if node.state is not None:
            attributes["fillcolor"] = _FILL[node.state]
            attributes["color"] = _BORDER[node.state]
        if node.state == MISSING:
            attributes["style"] = "rounded,filled,dashed"
        if node.irreversibility:
            attributes["peripheries"] = "2"  # a double border: no way back through it
        if node.in_rollback:
            attributes["color"] = _ROLLBACK_BORDER
            attributes["penwidth"] = "3"
            attributes["fontname"] = "Helvetica-Bold"
        lines.append(f"    {_dot_quote(node.version)} [{_dot_attributes(attributes)}];")
    taken = diagram.rollback_versions
    for dependency, dependent in diagram.edges:
        edge = f"    {_dot_quote(dependency)} -> {_dot_quote(dependent)}"
        if dependency in taken and dependent in taken:
            edge += f' [color="{_ROLLBACK_BORDER}", penwidth=2]'
        lines.append(edge + ";")
    legend = _dot_legend(diagram)
    if legend:
        # A picture travels without its command line, so it says what its colours mean.
        lines.append(f'    label="{legend}"; labelloc=b; labeljust=l; fontsize=10; fontcolor="#424242";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_legend(diagram: Diagram) -> str:
    parts = []
    if diagram.states_known:
        parts.append("green: applied, white: pending")
        if any(node.state == MISSING for node in diagram.nodes):
            parts.append("amber dashed: recorded as applied, file missing")
    if any(node.irreversibility for node in diagram.nodes):
        parts.append("double border: cannot be rolled back")
    if diagram.rollback is not None:
        parts.append(f"red border: taken by a cascade rollback of {_dot_escape(diagram.rollback)}")
    # One entry per line, left-aligned (\l), so the legend never widens the picture.
    return "".join(f"{part}\\l" for part in parts)


def _dot_label(node: DiagramNode) -> str:
    if node.state == MISSING:
        return _dot_escape(node.version) + "\\n(file missing)"
    mark = [node.irreversibility.strip()] if node.irreversibility else []
    if not node.description:
        return "\\n".join([_dot_escape(node.version), *mark])
    wrapped = textwrap.wrap(node.description, _DOT_WRAP) or [node.description]
    return "\\n".join([_dot_escape(node.version), *(_dot_escape(line) for line in wrapped), *mark])


def _dot_escape(text: str) -> str:
    # In a quoted dot string a backslash starts an escape (\n, \l, \N...), so a literal one is doubled.
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _dot_quote(text: str) -> str:
    return f'"{_dot_escape(text)}"'


def _dot_attributes(attributes: dict[str, str]) -> str:
    # Labels are escaped already (they hold \n line breaks); other values are ours and plain.
    return ", ".join(f'{key}="{value}"' for key, value in attributes.items())


# -- terminal text ----------------------------------------------------------------------


def render_text(diagram: Diagram) -> str:
    """A tree for a terminal, readable for branching graphs and for chains alike.

    Each migration is listed under its first dependency; a migration's other
    dependencies follow its label as ``(also needs 0020)``. A chain does not
    drift to the right: a migration that is its parent's only dependent
    continues the column with ``→``, so the seed's chain reads
    ``0020 → 0027 → 0029`` downwards. Where a migration has several
    dependents they branch with ``├─`` and ``└─``. With a ledger a checklist
    column shows ``[x]`` applied, ``[ ]`` pending, ``[!]`` file missing; with
    ``rollback`` a ``*`` column marks what the cascade would take. A legend
    closes the output whenever a marker column is shown.
    """
    if not diagram.nodes:
        return "(no migrations)\n"
    drawn = {node.version: node for node in diagram.nodes}
    position = {node.version: i for i, node in enumerate(diagram.nodes)}
    parent: dict[str, str | None] = {}
    children: dict[str, list[str]] = {version: [] for version in drawn}
    for node in diagram.nodes:
        needs = [v for v in diagram.needs.get(node.version, ()) if v in drawn]
        # The lowest version is the "first" dependency; ties cannot happen, versions are unique.
        first = needs[0] if needs else None
        parent[node.version] = first
        if first is not None:
            children[first].append(node.version)
    for kids in children.values():
        kids.sort(key=position.__getitem__)

    rows: list[tuple[DiagramNode, str]] = []

    def walk(version: str, prefix: str, connector: str) -> None:
        node = drawn[version]
        extra = [v for v in diagram.needs.get(version, ()) if v != parent[version]]
        text = node.label + (f"  (also needs {', '.join(extra)})" if extra else "")
        rows.append((node, prefix + connector + text))
        kids = children[version]
        if len(kids) == 1:
            # A sole dependent continues the column, so chains stay as narrow as they are long.
            walk(kids[0], prefix + _continuation(connector, chain=True), "→ ")
            return
        inner = prefix + _continuation(connector, chain=False)
        for i, kid in enumerate(kids):
            last = i == len(kids) - 1
            walk(kid, inner, "└─ " if last else "├─ ")

    for node in diagram.nodes:
        if parent.get(node.version) is None:
            walk(node.version, "", "")

    show_state = diagram.states_known
    show_rollback = diagram.rollback is not None
    lines = []
    for node, tree in rows:
        gutter = ""
        if show_state:
            assert node.state is not None
            gutter += _TEXT_MARKER[node.state] + " "
        if show_rollback:
            gutter += (_ROLLBACK_MARKER if node.in_rollback else " ") + " "
        lines.append((gutter + tree).rstrip())
    legend = []
    if show_state:
        legend.append("[x] applied   [ ] pending   [!] recorded as applied, file missing")
    if show_rollback:
        legend.append(f"{_ROLLBACK_MARKER} taken by a cascade rollback of {diagram.rollback}")
    if legend:
        lines += ["", *legend]
    return "\n".join(lines) + "\n"


def _continuation(connector: str, *, chain: bool) -> str:
    """The indentation below a line that starts with ``connector``.

    Below a branch with more siblings after it, its column keeps the vertical
    line. Below a chain line (``→``) a further chain line stays in the same
    column, while branches step in under the label, so it is clear whose
    dependents they are.
    """
    if connector == "├─ ":
        return "│  "
    if connector == "└─ ":
        return "   "
    if connector == "→ " and not chain:
        return "  "
    return ""


# -- JSON -------------------------------------------------------------------------------


def render_json(diagram: Diagram) -> str:
    """networkx's node-link form, so any tool can load the graph with ``networkx.node_link_graph``.

    Each node carries ``version``, ``description``, ``label``, ``in_rollback``
    and, with a ledger, ``state``; the graph carries ``focus`` and
    ``rollback``. Keys are sorted so the output is stable enough to diff.
    """
    return json.dumps(diagram_graph(diagram), sort_keys=True, indent=2) + "\n"


def diagram_graph(diagram: Diagram) -> dict:
    """The node-link dict behind ``to_json``, for callers that want the data rather than text."""
    graph = nx.DiGraph(focus=diagram.focus, rollback=diagram.rollback)
    for node in diagram.nodes:
        attributes = {
            "version": node.version,
            "description": node.description,
            "label": node.label,
            "in_rollback": node.in_rollback,
        }
        if node.state is not None:
            attributes["state"] = node.state
        if node.state != MISSING:
            attributes["reversible"] = node.reversible
            attributes["irreversible"] = node.irreversible_reason
        graph.add_node(node.version, **attributes)
    graph.add_edges_from(diagram.edges)
    # networkx 3.4+ warns unless the edges key is named; "links" is the long-standing form.
    return nx.node_link_data(graph, edges="links")


# -- images -----------------------------------------------------------------------------

ImageFormat = Literal["svg", "png"]


def render_image(dot_source: str, fmt: ImageFormat) -> bytes:
    """Lay out ``dot_source`` with Graphviz's ``dot`` and return the svg or png bytes.

    Layout is Graphviz's job; rather than fall back to a home-made layout,
    a machine without it gets ``GraphvizMissing`` naming the package to
    install, and a ``dot`` that rejects the source gets ``GraphvizFailed``
    with the first line it printed.
    """
    if fmt not in ("svg", "png"):
        raise ValueError(f"image format must be svg or png, not {fmt!r}")
    executable = shutil.which("dot")
    if executable is None:
        raise GraphvizMissing()
    result = subprocess.run(
        [executable, f"-T{fmt}"],
        input=dot_source.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", errors="replace").strip()
        raise GraphvizFailed(result.returncode, message.splitlines()[0] if message else "")
    return result.stdout


def _drawn(render: Callable[[Diagram], str]) -> Callable[..., str]:
    """A format's face for callers holding a catalog: ``build_diagram``'s arguments in, ``render``'s text out."""

    def draw(catalog: Catalog, applied: Collection[str] | None = None, *, focus: str | None = None,
             rollback: str | None = None) -> str:
        return render(build_diagram(catalog, applied, focus=focus, rollback=rollback))

    draw.__doc__ = render.__doc__
    return draw


to_mermaid, to_dot, to_text, to_json = (_drawn(render) for render in (render_mermaid, render_dot, render_text,
                                                                        render_json))

#: Each text format by the name ``apm migrate graph --format`` uses.
FORMATS: dict[str, Callable[..., str]] = {"mermaid": to_mermaid, "dot": to_dot, "text": to_text, "json": to_json}


#: The command that writes this page; the page names it so a reader knows how to refresh it.
REGENERATE_COMMAND = "apm migrate docs"

#: How many hex digits of a checksum the table shows: enough to spot an edited file.
CHECKSUM_DIGITS = 12

_NONE = "—"

_SOURCE = {
    DECLARED: "declared in `depends_on`",
    DOCUMENTED: "from the docstring's `Dependencies:` section",
    IMPLIED: "implied: the previous version in numeric order",
}


def catalog_page(catalog: Catalog, title: str = "Migration catalog") -> str:
    """The Markdown page for ``catalog``: summary table, mermaid diagram and each migration's doc text.

    Deterministic by construction: it reads only versions, descriptions,
    dependencies, checksums, file names and docstrings.
    """
    graph = catalog.graph
    lines = [
        f"# {title}",
        "",
        f"This page is generated from the migration files in this folder; "
        f"run `{REGENERATE_COMMAND}` to regenerate it after adding or changing a migration, "
        f"rather than editing it by hand.",
        "",
    ]
    if len(catalog) == 0:
        lines += ["There are no migrations yet.", ""]
        return "\n".join(lines)

    rows = []
    for migration in catalog:
        rows.append([
                        migration.version,     _cell(migration.description),
                        _versions(graph.dependencies(migration.version)),
                        _versions(graph.dependents(migration.version)),     "yes" if migration.reversible else "no",
                        f"`{migration.checksum[:CHECKSUM_DIGITS]}`", ])
    headers = ["Version", "Description", "Depends on", "Dependents", "Can be rolled back", "Checksum"]
    lines += [
        "## Migrations",
        "",
        tabulate(rows, headers, tablefmt="github", disable_numparse=True),
        "",
        "## Dependency graph",
        "",
        "An arrow runs from a migration to a migration that depends on it.",
        "",
        "```mermaid",
        to_mermaid(catalog).rstrip("\n"),
        "```",
        "",
    ]
    for migration in catalog:
        lines += _section(catalog, migration)
    return "\n".join(lines)


def _section(catalog: Catalog, migration: Migration) -> list[str]:
    graph = catalog.graph
    needs = graph.dependencies(migration.version)
    source = f" ({_SOURCE[migration.dependency_source]})" if needs and migration.dependency_source in _SOURCE else ""
    lines = [
        f"## {_heading(migration.label)}",
        "",
        f"- File: [{migration.path.name}]({migration.path.name})",
        f"- Depends on: {_versions(needs)}{source}",
        f"- Dependents: {_versions(graph.dependents(migration.version))}",
        f"- Can be rolled back: {_rollback(migration)}",
        f"- Checksum (sha256): `{migration.checksum}`",
        "",
    ]
    body = _doc_body(migration)
    if body:
        # Docstrings are plain text, not Markdown: a fence keeps their layout and
        # stops a line such as "# notes" from becoming a heading of this page.
        fence = "`" * max(3, _longest_backtick_run(body) + 1)
        lines += [f"{fence}text", body, fence, ""]
    return lines


def _rollback(migration: Migration) -> str:
    if migration.reversible:
        return "yes"
    if migration.irreversible_reason is not None:
        return f"no (it is irreversible: {migration.irreversible_reason})"
    return "no (it defines no downgrade)"


def _doc_body(migration: Migration) -> str:
    """The docstring without its title line, which the section heading already shows."""
    lines = migration.doc.splitlines()
    if lines and migration.docstring_version is not None:
        lines = lines[1:]
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _versions(versions: list[str]) -> str:
    return ", ".join(versions) if versions else _NONE


def _cell(text: str) -> str:
    # A pipe would end the table cell early; GitHub reads \| as a literal pipe.
    return text.replace("|", "\\|")


def _heading(text: str) -> str:
    # Headings are one line; a stray # or leading/trailing space would change their meaning.
    return text.replace("\n", " ").strip()
