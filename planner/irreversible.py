"""Reading "this migration cannot be undone" from a file, without running anything.

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
line of their ``-- downgrade`` section: see ``planner.sql_migration``.
"""

from __future__ import annotations

import ast
import opcode
from collections.abc import Callable
from pathlib import Path

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
