"""The shape of the code itself: imports that follow the design.

A newcomer should be able to follow imports one way only: a cycle means two
modules that cannot be understood (or changed) apart. The engines are
folders that never import each other, the library never imports the
command, and only the engines talk to a database driver. Function-level
imports count too, since a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("planner", "cli")


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


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (a lazy import is still a dependency)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


ENGINES = ("planner.engines.sqlite", "planner.engines.postgresql")


def test_no_engine_imports_another():
    """An engine is one folder: a third one is added beside these, and removing one breaks nothing else."""
    crossings = []
    for name, path in modules().items():
        own = [engine for engine in ENGINES if _in_package(name, engine)]
        if not own:
            continue
        for target in _imports(path):
            if any(_in_package(target, other) for other in ENGINES if other != own[0]):
                crossings.append(f"{name} imports {target}")
    assert not crossings, crossings


def test_the_library_never_imports_the_command():
    """``planner`` is usable without the CLI (APM calls it from its own commands); advice flows the other way."""
    offenders = [f"{name} imports {target}" for name, path in modules().items() if _in_package(name, "planner")
                 for target in _imports(path) if _in_package(target, "cli")]
    assert not offenders, offenders


#: Modules outside ``planner/engines/`` that still reach a driver directly. Each is SQLite-specific code that
#: predates the engine packages (APM's ``agents`` table, SQLite's rebuild helper, the test databases of the
#: pytest plugin); the list may only shrink. The schema is read by the engines (``engines/*/schema.py``).
DRIVER_USERS_LEFT = {
    "planner.agents", "planner.conversions", "planner.fleet.ledgers", "planner.migration", "planner.nontransactional",
    "planner.rebuild", "planner.sql", "planner.testing.databases", "planner.testing.pg_database",
}


def test_only_the_engines_import_a_database_driver():
    users = {name for name, path in modules().items()
             if not _in_package(name, "planner.engines")
             and any(_in_package(target, driver) for target in _imports(path) for driver in ("sqlite3", "psycopg"))}
    assert users <= DRIVER_USERS_LEFT, f"new driver imports outside planner/engines/: {sorted(users - DRIVER_USERS_LEFT)}"
    assert not any(_in_package(name, "cli") for name in users)


def test_every_package_of_the_source_is_in_the_wheel():
    """An editable install finds every folder; a wheel holds only the listed packages (``apm fleet`` once
    shipped without ``planner.fleet``). Every folder with an ``__init__.py`` must be listed in pyproject."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for package in PACKAGES
             for init in (ROOT / package).rglob("__init__.py")}
    assert found - listed == set(), f"packages missing from pyproject.toml's [tool.setuptools] packages: {found - listed}"


# Errors carry facts; the command gives advice (cli/advice.py). Classes still to convert, which may only shrink.
ADVICE_NOT_YET_MOVED: frozenset[str] = frozenset()


def _advice_in_strings(path: Path) -> list[tuple[str, int, str]]:
    """(class, line, text) of each string constant inside an error class that names an apm command or a --flag."""
    import re

    from cli.main import apm

    command = re.compile(r"\bapm (%s)\b|(?<![\w-])--[a-z][\w-]*" % "|".join(sorted(apm.commands)))
    found = []
    for cls in ast.walk(ast.parse(path.read_text())):
        if not isinstance(cls, ast.ClassDef):
            continue
        docstring = cls.body[0].value if cls.body and isinstance(cls.body[0], ast.Expr) else None
        for node in ast.walk(cls):
            if node is docstring or not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            if command.search(node.value):  # f-string parts are constants too
                found.append((cls.name, node.lineno, node.value))
    return found


def test_library_errors_name_no_command_or_option():
    """A library caller (APM's code, the fleet) never ran `apm ...`: an error's text is the fact, the CLI adds advice."""
    found = [hit for module in ("planner/errors.py", "planner/engines/errors.py")
             for hit in _advice_in_strings(ROOT / module)]
    unexpected = [hit for hit in found if hit[0] not in ADVICE_NOT_YET_MOVED]
    assert not unexpected, "advice belongs in cli/advice.py:\n" + "\n".join(map(str, unexpected))
    stale = ADVICE_NOT_YET_MOVED - {hit[0] for hit in found}
    assert not stale, f"converted, so remove from ADVICE_NOT_YET_MOVED: {sorted(stale)}"
