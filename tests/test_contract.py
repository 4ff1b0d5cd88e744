"""The engine contract is written once, typed, and every registered engine provides all of it.

mypy proves the engines satisfy the protocols (``python -m mypy``: each
engine's session names its classes as ``Session[...]``'s type arguments, whose
bounds are the protocols). These tests state the same at run time, from the
registry, so an engine added to ``planner.engines.KINDS`` is held to every
member of ``planner.engines.base`` even where nobody runs mypy, and so the
engine-free session cannot drift back to ``Any`` where a contract is meant.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
import typing
from pathlib import Path
from types import ModuleType

import pytest

from planner.engines import KINDS
from planner.engines.base import Backups, DriverConnection, Engine, Ledger, Observer, PlanRunner
from planner.session import Session
from planner.transaction_guard import GuardedConnection

ROOT = Path(__file__).resolve().parent.parent

#: Every protocol of the contract, by the name docs/architecture.md gives it.
PROTOCOLS: dict[str, type] = {
    "Engine": Engine, "Backups": Backups, "PlanRunner": PlanRunner, "Ledger": Ledger,
    "GuardedConnection": GuardedConnection, "Observer": Observer, "DriverConnection": DriverConnection,
}


def members(protocol: type) -> dict[str, object]:
    """The names a protocol promises: its methods, properties and declared attributes (no private ones)."""
    found: dict[str, object] = {}
    for name, value in vars(protocol).items():
        if name.startswith("_"):
            continue
        if callable(value) or isinstance(value, property):
            found[name] = value
    for name in vars(protocol).get("__annotations__", {}):
        if not name.startswith("_"):
            found.setdefault(name, None)
    return found


def type_checking_names(module: ModuleType) -> dict[str, object]:
    """What the module's ``if TYPE_CHECKING:`` block imports, so its string annotations can be resolved."""
    names: dict[str, object] = {}
    if getattr(module, "__file__", None) is None:  # builtins, for ``object`` in a class's bases
        return names
    tree = ast.parse(Path(module.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    imported = importlib.import_module(statement.module)
                    for alias in statement.names:
                        names[alias.asname or alias.name] = getattr(imported, alias.name)
    return names


def hints(obj: object) -> dict[str, object]:
    """``typing.get_type_hints``, with the names a module imports for the type checker only."""
    module = sys.modules[obj.__module__]  # type: ignore[attr-defined]
    localns = type_checking_names(module)
    for cls in getattr(obj, "__mro__", ()):
        localns |= type_checking_names(sys.modules[cls.__module__])
    return typing.get_type_hints(obj, localns=localns)


def missing(protocol: type, implementation: type) -> list[str]:
    """Members of ``protocol`` that ``implementation`` lacks, or offers with a signature that cannot stand in."""
    wrong = []
    declared = {name for cls in implementation.__mro__ for name in vars(cls).get("__annotations__", {})}
    for name, promised in members(protocol).items():
        offered = inspect.getattr_static(implementation, name, None)
        if offered is None and name not in declared:
            wrong.append(f"{name}: missing")
            continue
        if getattr(offered, "__isabstractmethod__", False):
            wrong.append(f"{name}: still abstract")
        if isinstance(promised, property):
            if offered is not None and not isinstance(offered, property) and callable(offered):
                wrong.append(f"{name}: a method where a property is promised")
            continue
        if not callable(promised):
            continue
        if not callable(offered):
            wrong.append(f"{name}: not callable")
            continue
        wrong += [f"{name}: {problem}" for problem in _signature_problems(promised, offered)]
    return wrong


def _signature_problems(promised: object, offered: object) -> list[str]:
    """Whether a call the protocol allows is a call the implementation accepts (names, kinds, defaults)."""
    try:
        have = inspect.signature(offered).parameters
    except ValueError:  # a driver's method written in C (sqlite3's) states no signature; mypy checked its stub
        return []
    want = inspect.signature(promised).parameters
    problems = []
    has_args = any(p.kind is p.VAR_POSITIONAL for p in have.values())
    has_kwargs = any(p.kind is p.VAR_KEYWORD for p in have.values())
    positional = [p for p in have.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    matched: set[str] = set()
    for index, (name, parameter) in enumerate(want.items()):
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY:  # its name is the implementation's own affair
            other = positional[index] if index < len(positional) else None
            if other is None and not has_args:
                problems.append(f"no positional parameter {index}")
        else:
            other = have.get(name)
            if other is None and not has_kwargs:
                problems.append(f"no parameter {name!r}")
        if other is None:
            continue
        matched.add(other.name)
        if parameter.default is not parameter.empty and other.default is other.empty:
            problems.append(f"parameter {name!r} is optional in the contract but required here")
        if parameter.kind is parameter.KEYWORD_ONLY and other.kind not in (other.KEYWORD_ONLY,
                                                                           other.POSITIONAL_OR_KEYWORD):
            problems.append(f"parameter {name!r} cannot be passed by keyword")
    for name, other in have.items():
        if name not in matched and other.default is other.empty and other.kind not in (other.VAR_POSITIONAL,
                                                                                       other.VAR_KEYWORD):
            problems.append(f"requires {name!r}, which the contract never passes")
    return problems


def engine_parts(module_name: str) -> dict[str, type]:
    """What one registered engine's folder provides for each protocol, found from the registry alone."""
    package = importlib.import_module(module_name)
    engine = hints(package.open_engine)["return"]
    parts: dict[str, type] = {"Engine": engine}
    parts["Backups"] = hints(engine.backups.fget)["return"]
    parts["PlanRunner"] = hints(engine.runner)["return"]
    # The engine's session is the one ``Session`` subclass its runner's module defines.
    sessions = importlib.import_module(parts["PlanRunner"].__module__)
    [session] = [cls for cls in vars(sessions).values() if isinstance(cls, type) and issubclass(cls, Session)
                 and cls is not Session and cls.__module__ == sessions.__name__]
    base = next(b for b in session.__orig_bases__ if typing.get_origin(b) is Session)
    namespace = vars(sessions) | type_checking_names(sessions)
    driver, observer, connection = (eval(a.__forward_arg__, namespace) if isinstance(a, typing.ForwardRef) else a
                                    for a in typing.get_args(base))
    parts["DriverConnection"] = typing.get_origin(driver) or driver
    parts["Observer"], parts["GuardedConnection"] = observer, connection
    parts["Ledger"] = hints(session)["ledger"]
    return parts


@pytest.fixture(params=[kind.module for kind in KINDS], ids=[kind.name for kind in KINDS])
def parts(request) -> dict[str, type]:
    if request.param.endswith("postgresql"):
        pytest.importorskip("psycopg")
    return engine_parts(request.param)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_every_registered_engine_provides_every_member_of_the_contract(parts, protocol):
    implementation, contract = parts[protocol], PROTOCOLS[protocol]
    if contract in (Engine, Backups):  # abstract classes: subclassed, every abstract member filled in
        assert issubclass(implementation, contract) and not inspect.isabstract(implementation)
    assert not missing(contract, implementation), implementation


def test_the_member_check_finds_what_an_engine_lacks():
    """The check above can fail: a ledger without ``history`` and with a ``log`` that needs more is caught."""

    class HalfLedger:
        def exists(self) -> bool: ...
        def ensure_schema(self) -> None: ...
        def applied_migrations(self): ...
        def applied_versions(self): ...
        def record_applied(self, migration, execution_ms): ...
        def record_unapplied(self, version): ...
        def log(self, version, action, outcome, checksum, execution_ms=None, detail=None, *, note): ...

    assert missing(Ledger, HalfLedger) == [
        "log: parameter 'checksum' is optional in the contract but required here",
        "log: requires 'note', which the contract never passes",
        "history: missing",
    ]


def test_the_engine_contract_holds_no_backups_and_no_agents_table():
    """An engine *has* backups (one protocol of their own); APM's ``agents`` table is not the engine's concern."""
    engine = members(Engine)
    assert "backups" in engine and not {n for n in engine if "backup" in n and n != "backups"}
    assert not {n for n in engine if "agent" in n}
    # Was 24, 13 of them about backups; since then: drift, the run's lock settings (declared, not duck-typed), and
    # the log's history (the fleet read it through PostgreSQL's engine only).
    assert len(engine) <= 17


def _annotation_nodes(tree: ast.AST) -> typing.Iterator[ast.AST]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                             arguments.vararg, arguments.kwarg]:
                if argument is not None and argument.annotation is not None:
                    yield argument.annotation
            if node.returns is not None:
                yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation
        elif isinstance(node, ast.ClassDef):
            yield from node.bases


def uses_any(annotation: ast.AST) -> bool:
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name) and node.id == "Any" or isinstance(node, ast.Attribute) and node.attr == "Any":
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"\bAny\b", node.value):
            return True
    return False


@pytest.mark.parametrize("module", ["planner/session.py", "planner/engines/base.py"])
def test_the_session_and_the_contract_say_which_contract_they_mean_never_any(module):
    tree = ast.parse((ROOT / module).read_text())
    offenders = [ast.unparse(a) for a in _annotation_nodes(tree) if uses_any(a)]
    assert not offenders, f"{module} types with Any where a contract is meant: {offenders}"
    assert uses_any(ast.parse("def f(conn: Any, ledger: 'dict[str, Any]') -> None: ...").body[0].args.args[0])


def test_architecture_lists_every_member_of_the_contract():
    """docs/architecture.md names each protocol and each of its members: what a third engine's folder provides."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("## The engine contract"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    absent = [f"{name}.{member}" for name, protocol in PROTOCOLS.items()
              for member in [name, *members(protocol)] if f"`{member}" not in section]
    assert not absent, f"docs/architecture.md's contract section does not list: {absent}"


# -- APM's agents table, read through the contract's plain table read on both engines -------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "app.db")
    pytest.importorskip("psycopg")
    return request.getfixturevalue("pg_url")


def _execute(db: str, *statements: str) -> None:
    if db.startswith("postgresql"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    import sqlite3

    conn = sqlite3.connect(db)
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def test_agents_are_read_through_the_engine_in_id_order_and_by_role(database):
    from planner.compat import read_agents
    from planner.engines import engine_for
    from planner.errors import NoAgentsTable

    engine = engine_for(database)
    _execute(database, "CREATE TABLE other (id INTEGER)")
    with pytest.raises(NoAgentsTable, match=re.escape(f"database {engine.display} has no agents table yet")):
        read_agents(engine)
    _execute(database, "CREATE TABLE agents (id INTEGER PRIMARY KEY, role TEXT NOT NULL, is_active INTEGER, "
                       "metadata TEXT)",
             "INSERT INTO agents VALUES (3, 'scribe', 1, '{\"k\": 1}')",
             "INSERT INTO agents VALUES (1, 'manager', 0, 'not json')",
             "INSERT INTO agents VALUES (2, 'scribe', 1, NULL)")
    agents = read_agents(engine)
    assert [(a.id, a.role, a.is_active, a.metadata) for a in agents] == [
        (1, "manager", False, "not json"), (2, "scribe", True, None), (3, "scribe", True, {"k": 1})]
    assert [a.id for a in read_agents(engine, "scribe")] == [2, 3]
    assert read_agents(engine, "nobody") == []
    assert engine.read_rows("missing") is None


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_every_registered_engine_supplies_the_plugins_test_databases_and_the_fleets_reading(kind, tmp_path):
    """Issue 23: the pytest plugin and the fleet reach an engine only through the registry, never a driver.

    Each kind names a module making its test databases (``databases_for``, the
    ``TestDatabases`` protocol) and, optionally, a fast ledger reader; both
    must load, or the plugin and ``apm fleet status`` would fail on first use.
    Making the databases connects to nothing until a test asks for one.
    """
    from planner.testing.databases import TestDatabases

    template = "postgresql://apm@localhost/app" if kind.on_server else str(tmp_path / "{name}.db")
    made = importlib.import_module(kind.testing).databases_for(template)
    missing = [name for name in members(TestDatabases) if not hasattr(made, name)]
    assert not missing, f"{kind.testing}.databases_for gives no {missing}"
    assert made.drops is kind.on_server  # a server's databases are dropped; a file is kept to look at
    made.close()
    if kind.ledger_reader is not None:
        assert callable(kind.load(kind.ledger_reader))


def test_a_sqlite_template_gives_each_test_its_own_file_through_the_registry(tmp_path):
    """The engine-free provider makes a SQLite test database it never imports (``EngineKind.testing``)."""
    from planner.testing.databases import DatabaseProvider, database_at

    provider = DatabaseProvider(str(tmp_path / "db" / "{name}.db"), lambda: tmp_path / "unused")
    first, second = provider.new("stairway[0001]"), provider.new("stairway[0001]")
    assert str(first) == str(tmp_path / "db" / "stairway-0001.db") and str(second) != str(first)
    first.reset()
    conn = first.connect()
    try:
        assert conn.engine == "sqlite"
        conn.execute("CREATE TABLE t (x)")
    finally:
        conn.close()
    assert first.leftovers() == ["table t"] and first.engine().name == "sqlite"
    assert str(database_at(tmp_path / "apm.db")) == str(tmp_path / "apm.db")
    provider.close()
    assert not provider.problems


def test_the_rebuild_helper_is_importable_by_the_name_applied_migrations_use():
    """``planner.rebuild`` is SQLite's rebuild re-exported (migrations 0020 and 0027 import it; their files are
    checksummed), and ``from planner import rebuild_table`` gives the same function."""
    import planner
    import planner.rebuild
    from planner.engines.sqlite import rebuild

    assert planner.rebuild.rebuild_table is rebuild.rebuild_table is planner.rebuild_table
    assert planner.rebuild.drop_columns is rebuild.drop_columns
