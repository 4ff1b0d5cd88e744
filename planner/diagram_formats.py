"""Each format a diagram is drawn in: mermaid, Graphviz dot, terminal text, JSON, and images through Graphviz.

Every format renders the same ``planner.diagram.Diagram``, so a picture, a
terminal and a script agree on what is drawn; ``to_<format>`` builds the
diagram and renders it in one call. ``render_image`` hands dot source to
Graphviz: laying out a graph is Graphviz's job, not ours.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Collection
from typing import Literal

import networkx as nx

from planner.catalog import Catalog
from planner.diagram import APPLIED, IRREVERSIBLE, MISSING, PENDING, Diagram, DiagramNode, build_diagram
from planner.errors import GraphvizFailed, GraphvizMissing

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


def to_mermaid(
    catalog: Catalog,
    applied: Collection[str] | None = None,
    *,
    focus: str | None = None,
    rollback: str | None = None,
) -> str:
    """A mermaid flowchart, which GitHub and most docs sites draw from a fenced ``mermaid`` block.

    Nodes read ``m0027["0027 Add metadata"]``; states become ``classDef``
    and ``class`` lines, so a reader can restyle them without touching the graph.
    """
    diagram = build_diagram(catalog, applied, focus=focus, rollback=rollback)
    return render_mermaid(diagram)


def render_mermaid(diagram: Diagram) -> str:
    """The mermaid text for an already computed diagram."""
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


def to_dot(
    catalog: Catalog,
    applied: Collection[str] | None = None,
    *,
    focus: str | None = None,
    rollback: str | None = None,
) -> str:
    """Graphviz source: what ``render_image`` turns into svg or png, and what other tools can read.

    Boxes read ``0027`` over ``Add metadata``, filled by state; the rollback
    set has a thick red border, and the edges inside it are red too, so the
    path a cascade takes stands out.
    """
    diagram = build_diagram(catalog, applied, focus=focus, rollback=rollback)
    return render_dot(diagram)


def render_dot(diagram: Diagram) -> str:
    """The dot text for an already computed diagram."""
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


def to_text(
    catalog: Catalog,
    applied: Collection[str] | None = None,
    *,
    focus: str | None = None,
    rollback: str | None = None,
) -> str:
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
    diagram = build_diagram(catalog, applied, focus=focus, rollback=rollback)
    return render_text(diagram)


def render_text(diagram: Diagram) -> str:
    """The terminal text for an already computed diagram."""
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


def to_json(
    catalog: Catalog,
    applied: Collection[str] | None = None,
    *,
    focus: str | None = None,
    rollback: str | None = None,
) -> str:
    """networkx's node-link form, so any tool can load the graph with ``networkx.node_link_graph``.

    Each node carries ``version``, ``description``, ``label``, ``in_rollback``
    and, with a ledger, ``state``; the graph carries ``focus`` and
    ``rollback``. Keys are sorted so the output is stable enough to diff.
    """
    diagram = build_diagram(catalog, applied, focus=focus, rollback=rollback)
    return render_json(diagram)


def render_json(diagram: Diagram) -> str:
    """The JSON text for an already computed diagram."""
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


#: Each text format by the name ``apm migrate graph --format`` uses.
FORMATS: dict[str, Callable[..., str]] = {
    "mermaid": to_mermaid,
    "dot": to_dot,
    "text": to_text,
    "json": to_json,
}
