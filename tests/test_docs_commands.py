"""`apm migrate graph` and `apm migrate docs` against real databases, and the committed catalog page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner

from cli.main import apm
from cli.options import shipped_catalog
from planner.diagram import catalog_page
from planner.loader import load_catalog


def ok(*args: str) -> str:
    result = CliRunner().invoke(apm, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_committed_catalog_page_is_fresh() -> None:
    page = shipped_catalog() / "README.md"
    expected = catalog_page(load_catalog(shipped_catalog()))
    assert page.exists() and page.read_text(encoding="utf-8") == expected, (
        "migrations/README.md is out of date: run `apm --migrations-dir migrations migrate docs` and commit the result"
    )
    assert "is up to date" in ok("migrate", "docs", "--check")


def test_docs_writes_and_checks(tmp_path: Path) -> None:
    folder = tmp_path / "catalog"
    shutil.copytree(shipped_catalog(), folder, ignore=shutil.ignore_patterns("README.md", "__pycache__"))
    stale = CliRunner().invoke(apm, ["--migrations-dir", str(folder), "migrate", "docs", "--check"])
    assert stale.exit_code == 3 and f"apm --migrations-dir {folder} migrate docs" in stale.output
    assert "Wrote" in ok("--migrations-dir", str(folder), "migrate", "docs")
    assert "0029 Utility agents" in (folder / "README.md").read_text(encoding="utf-8")


def test_graph_styles_states_from_a_real_database(tmp_path: Path) -> None:
    db = tmp_path / "aipm.db"
    assert "[x]" not in ok("--db", str(db), "migrate", "graph")  # no database: no states, and none created
    assert not db.exists()
    ok("--db", str(db), "migrate", "--target", "0027")
    data = json.loads(ok("--db", str(db), "migrate", "graph", "--format", "json"))
    graph = nx.node_link_graph(data, edges="links")
    states = {node: attrs["state"] for node, attrs in graph.nodes(data=True)}
    assert states == {"0001": "applied", "0020": "applied", "0027": "applied", "0029": "pending",
                      "0030": "pending"}
    assert set(graph.edges) == {("0001", "0020"), ("0020", "0027"), ("0027", "0029"), ("0001", "0030")}
    mermaid = ok("--db", str(db), "migrate", "graph", "--format", "mermaid", "--rollback", "0020")
    assert "class m0001,m0020,m0027 applied" in mermaid and "class m0020,m0027 rollback" in mermaid


def test_graph_focus_shows_the_seed_chain(tmp_path: Path) -> None:
    text = ok("--db", str(tmp_path / "none.db"), "migrate", "graph", "--format", "text", "--focus", "0027")
    lines = [line for line in text.splitlines() if line.strip()]
    order = [next(v for v in ("0001", "0020", "0027", "0029", "0030") if v in line) for line in lines]
    assert order == ["0001", "0020", "0027", "0029"]


def test_graph_to_file_and_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "graph.dot"
    ok("--db", str(tmp_path / "none.db"), "migrate", "graph", "--format", "dot", "-o", str(out))
    assert out.read_text().startswith("digraph")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    missing = CliRunner().invoke(apm, ["migrate", "graph", "--format", "svg", "-o", str(tmp_path / "g.svg")])
    assert missing.exit_code == 8 and "graphviz" in missing.output and "Traceback" not in missing.output


def test_graph_offers_exactly_the_library_formats() -> None:
    from cli.authoring import TEXT_FORMATS
    from planner.diagram import FORMATS

    assert set(TEXT_FORMATS) == set(FORMATS)
