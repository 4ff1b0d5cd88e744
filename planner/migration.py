"""One migration: what a file declares, once it has been loaded.

A ``Migration`` is a plain value. It knows its version, its description, what it
depends on (and why: declared, documented or implied by numbering), the sha256
of its file for drift detection, and the functions the executor calls. It holds
no connection and does no I/O, so plans can be computed and compared freely.

Reading "this migration cannot be undone" from a file, without running anything.

Python authors say it the way Python code says "not possible": a downgrade
whose whole body is ``raise NotImplementedError("why")`` (APM's catalog does
this for migrations 0022, 0023, 0024 and 0026). Such a downgrade can never
succeed, so treating it as an ordinary one only moves the refusal from the
plan to the middle of a run: a cascade would roll back every dependent before
reaching it. The loader reads the declaration here instead, from the file's
syntax tree, and the planner then refuses exactly as it does for a migration
without ``downgrade``, quoting the reason.

The rule, precisely: the module-level ``def downgrade`` that the loaded module
actually exposes, undecorated, whose body (after an optional docstring) is a
single ``raise`` statement, of any exception. A downgrade that can never
succeed is irreversible whatever it raises (``NotImplementedError``,
Django's ``IrreversibleError``, a project's own exception). A ``raise`` inside
an ``if``, or after other statements, may not happen, so such a downgrade is
ordinary and runs; a ``pass``-only downgrade is a no-op that succeeds, and is
ordinary too.

The reason is the exception's message when it is a string literal (implicit
concatenation, ``+`` of literals and multi-line strings included), with its
whitespace folded so it fits a one-line error; ``downgrade raises
NotImplementedError`` when there is no message; and the source of the raised
expression when the message is computed (an f-string, a name), since reading
it would mean running the file's code.

SQL files say it in their header (``-- irreversible: why``) or as the only
line of their ``-- downgrade`` section: see ``planner.loader``.
"""

from __future__ import annotations

import ast
import opcode
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import TYPE_CHECKING, TypedDict

from planner.errors import CatalogError, CatalogInvalid

if TYPE_CHECKING:
    from planner.transaction_guard import GuardedConnection


#: What a migration's ``upgrade``/``downgrade`` and validators are called with: the engine's guarded connection.
MigrationFunction = Callable[["GuardedConnection"], object]
ValidationFunction = Callable[["GuardedConnection"], bool]

#: Where a migration's dependencies came from, first rule that applies wins.
DECLARED = "depends_on"  # a module-level depends_on
DOCUMENTED = "docstring"  # the docstring's Dependencies: section
IMPLIED = "implied"  # the previous version in numeric order (the old linear framework)


@dataclass(frozen=True, eq=False)
class Migration:
    """A loaded migration file.

    Equality is by version and checksum: two loads of the same unchanged file
    are the same migration, which is what plan comparisons need.
    """

    version: str
    description: str
    path: Path
    checksum: str
    depends_on: tuple[str, ...]
    dependency_source: str
    doc: str
    upgrade: MigrationFunction
    downgrade: MigrationFunction | None = None
    validate_pre: ValidationFunction | None = None
    validate_post: ValidationFunction | None = None
    #: The version the docstring's first line names, when it names one (lint compares it to the file name).
    docstring_version: str | None = None
    #: The versions the docstring's Dependencies: section lists, when it has one (lint compares them).
    documented_dependencies: tuple[str, ...] | None = None
    #: ``False`` for statements SQLite refuses inside a transaction (``VACUUM``): the step runs on its own,
    #: in autocommit, and its ledger row is written right after it succeeds.
    transactional: bool = True
    #: The versions a squashed migration stands for (``replaces``); ``()`` for an ordinary migration.
    replaces: tuple[str, ...] = ()
    #: Why the file says it cannot be undone, when it says so (a ``downgrade`` that only raises, a SQL
    #: file's ``-- irreversible:``); ``downgrade`` is then ``None``, as for a file without one.
    irreversible_reason: str | None = None
    #: The parts whose body does nothing yet (``"upgrade"``, and a SQL file's ``"downgrade"``): an
    #: unfilled scaffold. It loads, so every command that reads still works; ``check`` flags it and a run
    #: refuses to apply it (``planner.plan.refuse_empty_upgrades``).
    unwritten: tuple[str, ...] = ()
    #: Seconds this migration's step may wait for a lock (``lock_timeout = "5s"`` in the file; 0: no limit);
    #: ``None``: the run's (``planner.locks``).
    lock_timeout: float | None = None
    #: The lock findings this migration accepts (``allow = ["index-not-concurrent"]``; ``planner.locks``).
    allow: tuple[str, ...] = ()

    @property
    def number(self) -> int:
        """The numeric value of the version: what ordering and duplicate checks use."""
        return int(self.version)  # the loader admits only ASCII digits (planner.versions)

    @property
    def reversible(self) -> bool:
        """Whether a rollback can run this migration's ``downgrade``."""
        return self.downgrade is not None

    @property
    def rollback_refusal(self) -> str | None:
        """Why a rollback cannot run this migration, as a message continues after its version; ``None`` if it can."""
        if self.downgrade is not None:
            return None
        if self.irreversible_reason is not None:
            return f'is irreversible ("{self.irreversible_reason}")'
        return "defines no downgrade(conn)"

    @property
    def label(self) -> str:
        """``0027 Add metadata``: how diagrams and tables name a migration."""
        return f"{self.version} {self.description}".strip()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Migration):
            return NotImplemented
        return (self.version, self.checksum) == (other.version, other.checksum)

    def __hash__(self) -> int:
        return hash((self.version, self.checksum))

    def __repr__(self) -> str:
        return f"<Migration {self.version} {self.description!r}>"


#: The names whose binding describes a migration: a file binding any of them otherwise than to a literal (or,
#: for the functions, a ``def``) is run to be described. ``__getattr__`` would answer for names never bound.
_DESCRIBING = frozenset({"__doc__", "depends_on", "replaces", "transactional", "lock_timeout", "allow", "upgrade",
                         "downgrade", "validate_pre", "validate_post", "__getattr__"})
_FUNCTIONS = frozenset({"upgrade", "downgrade", "validate_pre", "validate_post"})
#: The only instructions a top level read without running may hold: no call, jump, ``import *``, ``del``,
#: subscript or operator, so whatever it binds last to a name is what running it binds (or it raises).
_PLAIN = frozenset(opcode.opmap[name] for name in (
    "CACHE", "NOP", "RESUME", "EXTENDED_ARG", "LOAD_CONST", "RETURN_CONST", "LOAD_NAME", "LOAD_ATTR",
    "BUILD_TUPLE", "BUILD_LIST", "BUILD_SET", "BUILD_MAP", "BUILD_CONST_KEY_MAP", "LIST_EXTEND", "SET_UPDATE",
    "IMPORT_NAME", "IMPORT_FROM", "STORE_NAME", "POP_TOP", "MAKE_FUNCTION", "SET_FUNCTION_ATTRIBUTE",
    "RETURN_VALUE") if name in opcode.opmap)
_LOAD_CONST, _STORE_NAME = opcode.opmap["LOAD_CONST"], opcode.opmap["STORE_NAME"]
_EXTENDED_ARG, _CACHE = opcode.opmap["EXTENDED_ARG"], opcode.opmap.get("CACHE", -1)
_MADE = frozenset(opcode.opmap[name] for name in ("MAKE_FUNCTION", "SET_FUNCTION_ATTRIBUTE") if name in opcode.opmap)


def plain_bindings(code: CodeType) -> dict[str, object] | None:
    """What a module's top level binds to the describing names, read from its bytecode without running it.

    A literal's value, or the code object of a ``def`` (one without
    decorators, which are calls); ``None`` when the top level holds anything
    else, or binds a describing name to anything else (an import, an
    expression): then only running the file says what it declares. Imports
    and annotations are left to run with the module: they can only fail,
    which is reported when the code is needed (``DeferredFunction``).
    """
    bindings: dict[str, object] = {}
    previous, argument, last_argument, extended, last_code = -1, 0, 0, 0, None
    raw = code.co_code
    for index in range(0, len(raw), 2):
        op = raw[index]
        if op == _CACHE:
            continue
        if op not in _PLAIN:
            return None
        argument, extended = raw[index + 1] | extended, 0
        if op == _EXTENDED_ARG:
            extended = argument << 8
            continue
        if op == _LOAD_CONST and isinstance(code.co_consts[argument], CodeType):
            last_code = code.co_consts[argument]
        elif op == _STORE_NAME and code.co_names[argument] in _DESCRIBING:
            name = code.co_names[argument]
            if previous == _LOAD_CONST and name not in _FUNCTIONS:
                bindings[name] = code.co_consts[last_argument]
            elif previous in _MADE and name in _FUNCTIONS and last_code is not None:
                bindings[name] = last_code
            else:
                return None
        previous, last_argument = op, argument
    return bindings


class DeferredFunction:
    """A migration's function whose module has not run yet; the module runs at the first call or ``load()``.

    Why: a command that only reads (``apm fleet status``, ``apm migrate
    list``) needs each file's version, dependencies, docstring and checksum,
    never its code, and running the modules was most of its start-up (their
    imports included). The loader reads those facts from the compiled file
    without running it when the file's top level can only bind them as
    literals (``planner.loader``), and hands out these in place of the
    functions. ``__code__`` is the function's own code object and
    ``__globals__`` the dict its module will run in, so what is read from a
    function before it exists (``does_nothing``, ``declared_reason``) reads
    the same as from the function itself.
    """

    def __init__(self, name: str, code: object, namespace: dict, run: Callable[[], None]):
        self.name, self.__code__, self.__globals__, self._run = name, code, namespace, run

    def load(self) -> Callable[..., object]:
        """The function itself, its module run first (once); ``CatalogInvalid`` when the module cannot run."""
        self._run()
        return self.__globals__[self.name]

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self.load()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<deferred {self.name} of {self.__globals__.get('__file__')}>"


def load_code(migrations: Iterable[tuple[Migration, bool]]) -> None:
    """Run the modules of what a command is about to call (``(migration, applying)``), every problem in one error.

    A run asks this before anything runs (``planner.plan.refuse_empty_upgrades``), so a module that cannot
    be imported stops the command where loading the whole catalog used to, not half-way through a plan.
    """
    problems: list[CatalogError] = []
    directory = None
    for migration, applying in migrations:
        parts = (migration.upgrade, migration.validate_pre, migration.validate_post) if applying else \
            (migration.downgrade,)
        for function in parts:
            if isinstance(function, DeferredFunction):
                try:
                    function.load()
                except CatalogInvalid as exc:
                    directory = exc.directory
                    problems.extend(p for p in exc.problems if p not in problems)
    if problems and directory is not None:
        raise CatalogInvalid(directory, problems)


def _nothing(conn: object) -> None:
    pass


def does_nothing(function: Callable[..., object]) -> bool:
    """Whether ``function``'s body is empty: ``pass``, ``...``, a docstring, comments (an unfilled scaffold).

    Read from its bytecode, which is as short as an empty function's and names
    nothing, on every Python version; no source is parsed, so loading 100,000
    migrations pays nothing for it.
    """
    code = getattr(function, "__code__", None)
    return code is not None and not code.co_names and len(code.co_code) <= len(_nothing.__code__.co_code)


class LockFields(TypedDict):
    """``module_locks``'s result, spread into ``Migration(...)``: the names and types of its two fields."""

    lock_timeout: float | None
    allow: tuple[str, ...]


def module_locks(path: Path, version: str, module: object) -> LockFields:
    """A Python migration's ``lock_timeout`` and ``allow``, checked (``planner.locks``), as ``Migration`` fields."""
    declared_timeout, declared_allow = getattr(module, "lock_timeout", None), getattr(module, "allow", ())
    if declared_timeout is None and declared_allow == ():
        return {"lock_timeout": None, "allow": ()}  # most files declare neither: no need to load planner.locks
    from planner.locks import checked_declarations  # start-up time: every command loads the catalog

    lock_timeout, allow = checked_declarations(path, version, declared_timeout, declared_allow)
    return {"lock_timeout": lock_timeout, "allow": allow}


#: The opcode of a ``raise`` statement (each code unit is two bytes: opcode, argument).
_RAISE = opcode.opmap["RAISE_VARARGS"]
#: The reason given when a SQL file's ``-- irreversible:`` line says nothing more.
UNEXPLAINED = "declared irreversible"


def declared_reason(source: bytes, path: Path, downgrade: Callable | None, namespace: dict) -> str | None:
    """The reason ``downgrade`` can never succeed, read from ``source``; ``None`` for an ordinary downgrade.

    ``downgrade`` is the function the loaded module (whose globals are
    ``namespace``) exposes: only the top-level ``def`` that compiled to that
    very function counts, so a later rebinding, an imported function, a
    decorator or a definition inside an ``if`` leaves the migration ordinary.
    """
    code = getattr(downgrade, "__code__", None)
    if code is None or code.co_name != "downgrade" or getattr(downgrade, "__globals__", None) is not namespace:
        return None
    # The function's own bytecode first: parsing a file costs about a fifth of a millisecond, and a
    # downgrade without a raise statement of its own (nearly all of them) cannot be one.
    if _RAISE not in code.co_code[::2]:
        return None
    try:
        tree = ast.parse(source, str(path))
    except (SyntaxError, ValueError):  # cannot happen for a file that compiled; never worth failing a load over
        return None
    for node in tree.body:
        if (isinstance(node, ast.FunctionDef) and node.name == "downgrade" and not node.decorator_list
                and node.lineno == code.co_firstlineno):
            return _only_raise(node, source)
    return None


def _only_raise(function: ast.FunctionDef, source: bytes) -> str | None:
    body = function.body
    if body and isinstance(body[0], ast.Expr) and _literal(body[0].value) is not None:
        body = body[1:]  # the docstring
    if len(body) != 1 or not isinstance(body[0], ast.Raise):
        return None
    raised = body[0].exc
    if raised is None:  # a bare `raise` with no exception being handled fails too
        return "downgrade raises"
    target = raised.func if isinstance(raised, ast.Call) else raised
    name = _dotted(target)
    if isinstance(raised, ast.Call) and raised.args:
        message = _literal(raised.args[0])
        if message is not None:
            return fold(message) or f"downgrade raises {name or 'an exception'}"
    elif name is not None and not (isinstance(raised, ast.Call) and raised.keywords):
        return f"downgrade raises {name}"
    text = ast.get_source_segment(source.decode("utf-8", "replace"), raised)
    return f"downgrade raises {fold(text or name or 'an exception')}"


def _literal(node: ast.expr) -> str | None:
    """The string a literal expression spells: a constant, or constants joined by ``+``; ``None`` otherwise."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left), _literal(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def _dotted(node: ast.expr) -> str | None:
    """``NotImplementedError``, ``errors.Irreversible``: the name of the raised class, when it is one."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        owner = _dotted(node.value)
        return f"{owner}.{node.attr}" if owner else None
    return None


def fold(text: str) -> str:
    """``text`` on one line: every run of whitespace (a multi-line message's breaks and indents) one space."""
    return " ".join(text.split())
