"""The shape of the code itself: imports that follow the design.

A newcomer should be able to follow imports one way only: a cycle means two
modules that cannot be understood (or changed) apart, and one that runs at
import time fails as soon as someone imports the other module first. The engines are
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


def import_graph(*, at_import_time: bool = False) -> nx.DiGraph:
    """Which module imports which: a lazy import is a dependency too, and so is one only a type checker runs.

    ``at_import_time``: only what runs when a module is imported (top-level imports), plus the packages above
    each target, whose ``__init__`` runs first (unless it is the importer's own package, already running).
    """
    known = modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                       for node in ast.walk(block)}
        nodes = tree.body if at_import_time else list(ast.walk(tree))
        for node in nodes:
            if at_import_time and id(node) in typing_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target in known and target != name:
                    graph.add_edge(name, target)
                    parts = target.split(".")
                    for i in range(1, len(parts) if at_import_time else 0):
                        parent = ".".join(parts[:i])
                        if parent in known and not (name == parent or name.startswith(parent + ".")):
                            graph.add_edge(name, parent)
                    break
    return graph


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"
    assert graph.number_of_edges() > 50  # the walk really found the imports


def test_importing_any_module_first_runs_into_no_cycle():
    """What runs at import time, packages' ``__init__`` included, is a cycle-free graph: any module imports first.

    (Hoisting a lazy import once made ``planner.compat`` and ``planner.engines.sqlite`` import each other at
    import time; the graph of all imports did not show it, since only the package's ``__init__`` closed it.)
    """
    cycles = list(nx.simple_cycles(import_graph(at_import_time=True)))
    assert not cycles, f"import cycles at import time: {cycles[:5]}"


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


def test_the_command_turns_errors_into_advice_without_an_engine():
    """Each failure's class is in ``planner.errors`` (``StepLocked`` too): the advice table needs no engine."""
    modules_ = modules()
    offenders = [target for target in _imports(modules_["cli.errors"]) if _in_package(target, "planner.engines")]
    assert not offenders, offenders


def test_only_the_engines_import_a_database_driver():
    """No module outside ``planner/engines/`` imports a driver: the engine-free code reaches a database only
    through an engine (the registry's ``EngineKind``: the engine, its test databases, its fast ledger reader)."""
    users = {name for name, path in modules().items()
             if not _in_package(name, "planner.engines")
             and any(_in_package(target, driver) for target in _imports(path) for driver in ("sqlite3", "psycopg"))}
    assert not users, f"driver imports outside planner/engines/: {sorted(users)}"


#: The only engine-free modules that name one engine, each because the feature is that engine's by definition.
SQLITE_FEATURES = {
    "planner.rebuild": "a re-export: APM's applied migrations import rebuild_table by this name and are checksummed",
    "planner.squash": "writes a migration of SQLite's own CREATE statements, read from a scratch SQLite file",
    "planner.compat": "APM's old framework API (DatabaseService, MigrationManager) over SQLite files",
}


def test_the_engine_free_code_asks_the_registry_for_an_engine():
    """Outside ``planner/engines/``, an engine is reached through the registry and the contract, never by
    importing one: code that imports PostgreSQL's drift or SQLite's session is code that asks which engine it
    holds (``planner.schema_drift`` did, until drift became ``Engine.drift``)."""
    named = {f"{name} imports {target}" for name, path in modules().items()
             if not _in_package(name, "planner.engines") and name not in SQLITE_FEATURES
             for target in _imports(path) for engine in ENGINES if _in_package(target, engine)}
    assert not named, sorted(named)


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


# Errors and findings carry facts; the command gives advice (cli/errors.py, cli/safety.py). Nothing the library
# builds names an `apm` command or one of its options: a program, a fleet or a test plugin calling the library
# never typed `apm migrate`, and only the command knows which options to repeat. Docstrings and comments may.
#
# What may stay, by (module, a fragment of the string), each with its reason. Another program's options are
# not advice: they are the arguments apm gives it, or name its format.
NAMES_A_COMMAND_ON_PURPOSE: dict[tuple[str, str], str] = {
    ("planner/engines/postgresql/backup.py", "--"): "pg_dump's own arguments, as apm runs it",
    ("planner/engines/postgresql/backup.py", "--"): "pg_restore's and pg_dump's own arguments and archive format",
    ("planner/pytest_plugin.py", "--apm-"): "the pytest plugin's own options (--apm-db, --apm-migrations)",
    ("planner/testing/databases.py", "--apm-db "): "the plugin's --apm-db option, named in its errors",
    ("planner/engines/postgresql/testdb.py", "--apm-db "): "the plugin's --apm-db option, named in its errors",
    ("planner/diagram.py", "apm migrate docs"): "the generated page names the command that wrote it",
    ("planner/squash.py", "Written by `apm migrate squash`"): "a written squash file says what wrote it",
    ("planner/squash.py", "(--schema-only)"): "a written squash file says which choice dropped the data",
    ("planner/renumber.py", "(apm migrate check --fix)"): "a renumbered file's added line says what added it",
}
# Strings still to move into the command, which may only shrink (each says where its advice should go).
ADVICE_NOT_YET_MOVED: dict[tuple[str, str], str] = {}


def _command_pattern():
    import re

    from cli.main import apm

    return re.compile(r"\bapm (%s)\b|(?<![\w-])--[a-z][\w-]*" % "|".join(sorted(apm.commands)))


def _advice_in_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each string constant of ``path``, docstrings aside, that names an apm command or a --flag."""
    command = _command_pattern()
    tree = ast.parse(path.read_text())
    documentation = set()
    for node in ast.walk(tree):
        # A docstring, and a string standing alone as a statement (an attribute's docstring), documents.
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            documentation.add(id(node.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in documentation
            and command.search(node.value)]  # f-string parts are constants too


def test_the_library_names_no_command_or_option():
    """No string the library builds (an error, a finding, an event, a result) names `apm ...` or a --flag."""
    allowed = {**NAMES_A_COMMAND_ON_PURPOSE, **ADVICE_NOT_YET_MOVED}
    used = set()
    unexpected = []
    for path in sorted((ROOT / "planner").rglob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        for line, text in _advice_in_strings(path):
            keys = [key for key in allowed if key[0] == module and key[1] in text]
            used.update(keys)
            if not keys:
                unexpected.append(f"{module}:{line}: {text!r}")
    assert not unexpected, "advice belongs in the command (cli/errors.py, cli/safety.py):\n" + "\n".join(unexpected)
    stale = set(allowed) - used
    assert not stale, f"no longer needed, so remove from the allow-lists: {sorted(stale)}"


def test_the_scan_sees_advice_wherever_the_library_writes_it(tmp_path):
    """The check above finds a command in an error, a finding's fix and a plain constant, and skips docstrings."""
    sample = tmp_path / "sample.py"
    sample.write_text('''"""Run `apm migrate doctor` (a docstring may say so)."""
NOTE = "then run apm migrate check"


class Refused(Exception):
    """Pass --cascade (documentation)."""

    def __init__(self, version):
        super().__init__(f"cannot roll back {version}; pass --cascade")


def finding(path):
    """Says `apm status`."""
    return ("apm status", f"rm {path}")
''')
    assert sorted(line for line, _ in _advice_in_strings(sample)) == [2, 9, 14]


#: Why an import may sit inside a function: the comment on its line, or just above it, says which.
IMPORT_REASONS = ("start-up time", "optional dependency")
#: What may stand between such an import and its comment: other imports of the block, the try/if/with holding it.
_ABOVE = ("#", "import ", "from ", "try:", "if ", "else", "with ")


def _function_imports_without_a_reason(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    found = []

    def visit(body: list[ast.stmt], in_function: bool) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) and in_function:
                said = lines[node.lineno - 1]
                above = node.lineno - 2
                # The comment may sit above a block of such imports (or above the try/if that holds them).
                while above >= 0 and (lines[above].strip().startswith(_ABOVE) or (
                        not lines[above].strip() and above > 0 and lines[above - 1].strip().startswith(_ABOVE))):
                    said += lines[above]
                    above -= 1
                if not any(reason in said.lower() for reason in IMPORT_REASONS):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
            inner_function = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for field in ("body", "orelse", "finalbody"):
                inner = getattr(node, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                    visit(inner, inner_function)
            for handler in getattr(node, "handlers", []) or []:
                visit(handler.body, inner_function)

    visit(ast.parse("\n".join(lines)).body, False)
    return found


def test_an_import_inside_a_function_says_why():
    """A module's dependencies are read at its top. An import moves into a function only for an optional
    dependency or for start-up time (``apm`` loads only what a command needs), and its comment says which."""
    found = [line for path in modules().values() for line in _function_imports_without_a_reason(path)]
    assert not found, "\n".join(found)


def test_no_package_hides_one_of_its_modules_behind_a_name():
    """``from planner.engines.sqlite import backup`` must give the module: a function of that name imported into the
    package's ``__init__`` replaced it once, and tests patching the module patched a function instead."""
    found = []
    for init in (ROOT / "planner").rglob("__init__.py"):
        modules_here = {p.stem for p in init.parent.glob("*.py")} | {
            p.name for p in init.parent.iterdir() if (p / "__init__.py").exists()}
        for node in ast.walk(ast.parse(init.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    name = alias.asname or alias.name.split(".")[0]
                    module = f"{node.module}.{alias.name}" if isinstance(node, ast.ImportFrom) else alias.name
                    own = ".".join(init.parent.relative_to(ROOT).parts) + "." + name
                    if name in modules_here and module != own and name != "__future__":
                        found.append(f"{init.relative_to(ROOT)}: {ast.unparse(node)}")
    assert not found, found
