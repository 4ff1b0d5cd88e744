"""Diagrams of the dependency graph: every format, state styling, focus, rollback and Graphviz."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import networkx as nx
import pytest

from conftest import write_migration
from planner import diagram as diagram_formats
from planner.catalog import Catalog
from planner.diagram import build_diagram, rollback_set
from planner.diagram import FORMATS, render_image, to_dot, to_json, to_mermaid, to_text
from planner.errors import (
    GraphvizFailed,
    GraphvizMissing,
    MigrationNotFound,
    NotApplied,
    UnknownAppliedMigration,
)
from planner.loader import load_catalog
from planner.plan import rollback_plan

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt-get install graphviz)"
)

QUOTED = 'Work items "v2" \\ tags'  # as the docstring reads: a quote pair and one backslash


@pytest.fixture
def seed(seed_chain: Path) -> Catalog:
    return load_catalog(seed_chain)


@pytest.fixture
def branching(catalog_dir: Path) -> Catalog:
    """Two roots; a diamond 0001 → 0002, 0003 → 0004; leaves 0005, 0006 and 0011."""
    write_migration(catalog_dir, "0001", "Projects table", depends_on=())
    write_migration(catalog_dir, "0002", "Agents table", depends_on=("0001",))
    # The file holds two backslashes so the docstring holds one (no invalid-escape warning).
    write_migration(catalog_dir, "0003", QUOTED.replace("\\", "\\\\"), depends_on=("0001",))
    write_migration(catalog_dir, "0004", "Link agents to work items", depends_on=("0002", "0003"))
    write_migration(catalog_dir, "0005", "Agent metadata", depends_on=("0004",))
    write_migration(catalog_dir, "0006", "Work item tags", depends_on=("0003",))
    write_migration(catalog_dir, "0010", "Audit log", depends_on=())
    write_migration(catalog_dir, "0011", "Audit log indexes", depends_on=("0010",))
    return load_catalog(catalog_dir)


@pytest.fixture(params=["seed", "branching"])
def catalog(request: pytest.FixtureRequest) -> Catalog:
    return request.getfixturevalue(request.param)


def edges_of(catalog: Catalog) -> set[tuple[str, str]]:
    return set(catalog.graph.nx_graph.edges)


# -- reading each format back ---------------------------------------------------------


def mermaid_edges(text: str) -> set[tuple[str, str]]:
    return {(a, b) for a, b in re.findall(r"^\s+m(\S+) --> m(\S+)$", text, re.MULTILINE)}


def mermaid_classes(text: str) -> dict[str, set[str]]:
    classes: dict[str, set[str]] = {}
    for ids, name in re.findall(r"^\s+class (\S+) (\w+)$", text, re.MULTILINE):
        classes.setdefault(name, set()).update(i[1:] for i in ids.split(","))
    return classes


def dot_edges(text: str) -> set[tuple[str, str]]:
    return set(re.findall(r'^\s+"([^"]+)" -> "([^"]+)"', text, re.MULTILINE))


def dot_nodes(text: str) -> dict[str, str]:
    """Each node line's attributes, by version."""
    return dict(re.findall(r'^\s+"([^"]+)" \[(.*)\];$', text, re.MULTILINE))


def json_graph(text: str) -> nx.DiGraph:
    return nx.node_link_graph(json.loads(text), edges="links")


# -- every format, for a chain and for a branching graph ----------------------------------


def test_mermaid_draws_every_migration_and_dependency(catalog: Catalog) -> None:
    text = to_mermaid(catalog)
    assert text.splitlines()[0] == "graph TD"
    for migration in catalog:
        assert f'm{migration.version}["{migration.label}"]' in text.replace("#quot;", '"')
    assert mermaid_edges(text) == edges_of(catalog)
    assert "classDef" not in text and "class " not in text  # no ledger, no state styling


def test_dot_draws_every_migration_and_dependency_top_to_bottom(catalog: Catalog) -> None:
    text = to_dot(catalog)
    assert text.startswith("digraph migrations {")
    assert "rankdir=TB;" in text  # the same direction as mermaid's graph TD
    assert set(dot_nodes(text)) == set(catalog.versions)
    assert dot_edges(text) == edges_of(catalog)
    for migration in catalog:
        assert f'label="{migration.version}\\n' in dot_nodes(text)[migration.version]


def test_json_loads_back_to_the_same_graph(catalog: Catalog) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # node_link_data must not warn about its edges keyword
        text = to_json(catalog)
    graph = json_graph(text)
    assert set(graph.nodes) == set(catalog.versions)
    assert set(graph.edges) == edges_of(catalog)
    for migration in catalog:
        attributes = graph.nodes[migration.version]
        assert attributes["version"] == migration.version
        assert attributes["description"] == migration.description
        assert attributes["in_rollback"] is False
        assert "state" not in attributes
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def test_text_lists_every_migration_once(catalog: Catalog) -> None:
    text = to_text(catalog)
    for migration in catalog:
        assert sum(line.endswith(migration.label) or f"{migration.label}  (" in line for line in text.splitlines()) == 1
    assert "[x]" not in text and "[ ]" not in text and "*" not in text


def test_every_format_is_deterministic(catalog: Catalog) -> None:
    for render in FORMATS.values():
        assert render(catalog, {"0001"}) == render(catalog, ["0001"])
    assert set(FORMATS) == {"mermaid", "dot", "text", "json"}


def test_seed_chain_text_reads_like_the_seed_diagram(seed: Catalog) -> None:
    assert to_text(seed) == (
        "0001 Initial schema\n"
        "├─ 0020 Fix agents.tier\n"
        "│  → 0027 Add metadata\n"
        "│  → 0029 Utility agents\n"
        "└─ 0030 Feature flags\n"
    )


def test_branching_text_shows_branches_and_extra_dependencies(branching: Catalog) -> None:
    assert to_text(branching) == (
        "0001 Projects table\n"
        "├─ 0002 Agents table\n"
        "│  → 0004 Link agents to work items  (also needs 0003)\n"
        "│  → 0005 Agent metadata\n"
        f"└─ 0003 {QUOTED}\n"
        "   → 0006 Work item tags\n"
        "0010 Audit log\n"
        "→ 0011 Audit log indexes\n"
    )


def test_text_indents_branches_below_a_chain(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", "A", depends_on=())
    write_migration(catalog_dir, "0002", "B", depends_on=("0001",))
    write_migration(catalog_dir, "0003", "C", depends_on=("0002",))
    write_migration(catalog_dir, "0004", "D", depends_on=("0002",))
    assert to_text(load_catalog(catalog_dir)) == "0001 A\n→ 0002 B\n  ├─ 0003 C\n  └─ 0004 D\n"


# -- styling by state ---------------------------------------------------------------


@pytest.fixture
def ledger() -> set[str]:
    """The branching catalog's ledger: 0001-0004 and 0006 applied (0002 spelled "2"), 0099 has no file."""
    return {"0001", "2", "0003", "0004", "0006", "0099"}


APPLIED = {"0001", "0002", "0003", "0004", "0006"}
PENDING = {"0005", "0010", "0011"}


def test_mermaid_classes_by_state(branching: Catalog, ledger: set[str]) -> None:
    text = to_mermaid(branching, ledger)
    assert mermaid_classes(text) == {"applied": APPLIED, "pending": PENDING, "missing": {"0099"}}
    assert 'm0099["0099 (file missing)"]' in text
    assert "m0099 -->" not in text and "--> m0099" not in text
    for name in ("applied", "pending", "missing"):
        assert f"classDef {name} " in text
    assert "classDef rollback" not in text


def test_dot_fills_by_state(branching: Catalog, ledger: set[str]) -> None:
    nodes = dot_nodes(to_dot(branching, ledger))
    fills = {version: re.search(r'fillcolor="([^"]+)"', attrs).group(1) for version, attrs in nodes.items()}
    assert {fills[v] for v in APPLIED} == {diagram_formats._FILL["applied"]}
    assert {fills[v] for v in PENDING} == {diagram_formats._FILL["pending"]}
    assert fills["0099"] == diagram_formats._FILL["missing"]
    assert "(file missing)" in nodes["0099"] and "dashed" in nodes["0099"]
    assert len({fills["0001"], fills["0005"], fills["0099"]}) == 3


def test_text_marks_state(branching: Catalog, ledger: set[str]) -> None:
    lines = to_text(branching, ledger).splitlines()
    marker = {}
    for line in lines:
        match = re.match(r"^(\[.\]) .*?(\d{4}) ", line)
        if match:
            marker[match.group(2)] = match.group(1)
    assert {v for v, m in marker.items() if m == "[x]"} == APPLIED
    assert {v for v, m in marker.items() if m == "[ ]"} == PENDING
    assert marker["0099"] == "[!]"
    assert "[!] 0099 (file missing)" in lines
    assert lines[-1] == "[x] applied   [ ] pending   [!] recorded as applied, file missing"


def test_json_carries_state(branching: Catalog, ledger: set[str]) -> None:
    graph = json_graph(to_json(branching, ledger))
    states = nx.get_node_attributes(graph, "state")
    assert states == {**dict.fromkeys(APPLIED, "applied"), **dict.fromkeys(PENDING, "pending"), "0099": "missing"}
    assert graph.degree("0099") == 0
    assert graph.nodes["0099"]["label"] == "0099 (file missing)"


def test_empty_ledger_is_all_pending_not_unstyled(seed: Catalog) -> None:
    assert mermaid_classes(to_mermaid(seed, set())) == {"pending": set(seed.versions)}


# -- focus --------------------------------------------------------------------------


@pytest.mark.parametrize("render", [to_mermaid, to_dot, to_json, to_text])
def test_focus_keeps_ancestors_and_descendants(branching: Catalog, ledger: set[str], render) -> None:
    for version in branching.versions:
        expected = branching.graph.ancestors(version) | {version} | branching.graph.descendants(version)
        assert set(build_diagram(branching, ledger, focus=version).versions) == expected
        text = render(branching, ledger, focus=version)
        # Text may name a dependency outside the focus in "(also needs ...)"; that is not a drawn node.
        shown = set(re.findall(r"\b00\d\d\b", re.sub(r"\(also needs [^)]*\)", "", text)))
        assert shown - {"0099"} == expected, version
        assert "0099" not in shown  # a missing file has no place in anyone's story


def test_focus_on_the_seed_shows_the_seed_chain(seed: Catalog) -> None:
    text = to_text(seed, focus="27")
    assert text == "0001 Initial schema\n→ 0020 Fix agents.tier\n→ 0027 Add metadata\n→ 0029 Utility agents\n"
    order = [re.search(r"\d{4}", line).group() for line in text.splitlines()]
    assert order.index("0020") < order.index("0027") < order.index("0029")
    assert mermaid_edges(to_mermaid(seed, focus="0027")) == {("0001", "0020"), ("0020", "0027"), ("0027", "0029")}


def test_focus_on_an_unknown_version(seed: Catalog) -> None:
    with pytest.raises(MigrationNotFound):
        to_text(seed, focus="0042")


# -- rollback -------------------------------------------------------------------------


def test_rollback_set_matches_the_planner(branching: Catalog, ledger: set[str]) -> None:
    for version in sorted(APPLIED):
        # 0099 (no file) would make the planner refuse (issue 22 point 4); the diagram still draws the rest.
        plan = rollback_plan(branching, ledger - {"0099"}, version, cascade=True)
        assert rollback_set(branching, ledger, version) == set(plan.versions)
        assert build_diagram(branching, ledger, rollback=version).rollback_versions == set(plan.versions)


def test_rollback_without_a_ledger_takes_every_descendant(branching: Catalog) -> None:
    for version in branching.versions:
        expected = branching.graph.descendants(version) | {version}
        assert build_diagram(branching, rollback=version).rollback_versions == expected


def test_rollback_is_highlighted_over_state_in_every_format(branching: Catalog, ledger: set[str]) -> None:
    taken = set(rollback_plan(branching, ledger - {"0099"}, "0003", cascade=True).versions)
    assert taken == {"0003", "0004", "0006"}  # 0005 depends on 0004 but is pending

    classes = mermaid_classes(to_mermaid(branching, ledger, rollback="0003"))
    assert classes["rollback"] == taken
    assert classes["applied"] == APPLIED and classes["pending"] == PENDING  # state colours stay

    dot = to_dot(branching, ledger, rollback="0003")
    nodes = dot_nodes(dot)
    assert {v for v, attrs in nodes.items() if "penwidth" in attrs} == taken
    assert all(diagram_formats._FILL["applied"] in nodes[v] for v in taken)
    assert "cascade rollback of 0003" in dot

    lines = to_text(branching, ledger, rollback="3").splitlines()
    starred = {re.search(r"\d{4}", line).group() for line in lines if line.startswith("[x] * ")}
    assert starred == taken
    assert lines[-1] == "* taken by a cascade rollback of 0003"

    graph = json_graph(to_json(branching, ledger, rollback="0003"))
    assert {v for v, flag in graph.nodes(data="in_rollback") if flag} == taken
    assert graph.graph["rollback"] == "0003"


def test_rollback_includes_irreversible_migrations(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", "Base", depends_on=())
    write_migration(catalog_dir, "0002", "One way", depends_on=("0001",), downgrade=None)
    catalog = load_catalog(catalog_dir)
    assert rollback_set(catalog, {"0001", "0002"}, "0001") == {"0001", "0002"}


def test_rollback_refusals_match_the_planner(branching: Catalog, ledger: set[str]) -> None:
    with pytest.raises(NotApplied):
        to_mermaid(branching, ledger, rollback="0005")
    with pytest.raises(MigrationNotFound):
        to_mermaid(branching, ledger, rollback="0042")
    with pytest.raises(UnknownAppliedMigration):
        to_mermaid(branching, ledger, rollback="0099")


# -- escaping -----------------------------------------------------------------------------


def test_quotes_and_backslashes_are_escaped(branching: Catalog) -> None:
    assert 'm0003["0003 Work items #quot;v2#quot; \\ tags"]' in to_mermaid(branching)
    assert 'label="0003\\nWork items \\"v2\\" \\\\ tags"' in to_dot(branching)
    assert json_graph(to_json(branching)).nodes["0003"]["description"] == QUOTED


# -- Graphviz -----------------------------------------------------------------------------


@needs_dot
@pytest.mark.parametrize("rollback", [None, "0003"])
def test_graphviz_accepts_the_dot_output(branching: Catalog, ledger: set[str], rollback: str | None) -> None:
    svg = render_image(to_dot(branching, ledger, rollback=rollback), "svg").decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "Work items &quot;v2&quot; \\ tags" in svg  # the label survived escaping intact
    for version in [*branching.versions, "0099"]:
        assert f">{version}<" in svg


@needs_dot
def test_graphviz_renders_png(seed: Catalog) -> None:
    png = render_image(to_dot(seed, focus="0027"), "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


@needs_dot
def test_graphviz_failure_names_the_problem() -> None:
    with pytest.raises(GraphvizFailed) as caught:
        render_image("digraph { a -> }", "svg")
    assert caught.value.returncode != 0
    assert "\n" not in str(caught.value) and caught.value.stderr


def test_missing_graphviz_names_the_package(seed: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(GraphvizMissing) as caught:
        render_image(to_dot(seed), "png")
    message = str(caught.value)
    assert "graphviz" in message and "apt-get install graphviz" in message and "\n" not in message


def test_only_svg_and_png_are_images(seed: Catalog) -> None:
    with pytest.raises(ValueError):
        render_image(to_dot(seed), "gif")  # type: ignore[arg-type]
