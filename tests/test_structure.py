"""The shape of the code itself: no import cycle, and every module readable in one sitting.

A newcomer should be able to read any module top to bottom, and follow
imports one way only: a cycle means two modules that cannot be understood
(or changed) apart. Function-level imports count too, since a lazy import is
still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("planner", "cli")
#: The one module allowed past the limit: a flat list of small error classes, one per failure.
LONG_ALLOWED = {"planner/errors.py"}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> nx.DiGraph:
    known = modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target in known and target != name:
                    graph.add_edge(name, target)
                    break
    return graph


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"
    assert graph.number_of_edges() > 50  # the walk really found the imports


def test_no_module_is_longer_than_one_sitting():
    long = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in modules().values()
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert set(long) <= LONG_ALLOWED, long
