"""Renumbering files that share a version: what ``apm migrate check`` suggests, and ``check --fix`` does.

APM's old loader keyed migrations by version, so of two files sharing one
(``migration_0021_a.py``, ``migration_0021_b.py``) only the first in path
order ever ran. The first keeps its version; every other gets a distinct
free one (above every version in the files and the ledger, so no
suggestion collides with another or with an applied row) and, unless it
declares its own dependencies, ``depends_on = ("0021",)`` so it still comes
right after its partner, where the old loader would have put it. A docstring
title naming the old version is retitled, or ``check`` would then call it a
copied file.

Those files never ran anywhere: once renumbered they are pending, and
``apm migrate`` WILL run them. The finding says so; ``--fix`` shows every
change before making it.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path

from planner import versions
from planner.errors import DuplicateVersion


@dataclass(frozen=True)
class Renumbering:
    """One file of a shared version, moved to a free one."""

    path: Path
    old: str
    new: str
    #: The file that keeps ``old``: the one the old loader ran.
    first: Path
    #: The line added to keep the old order; ``None`` when the file declares its own dependencies.
    depends_line: str | None

    @property
    def target(self) -> Path:
        return self.path.with_name(self.path.name.replace(f"migration_{self.old}", f"migration_{self.new}", 1))

    def describe(self) -> str:
        """``rename A -> B; add depends_on = ("0021",)``: what ``--fix`` will do, shown first."""
        text = f"rename {self.path.name} -> {self.target.name}"
        if self.depends_line:
            text += f"; add {self.depends_line}"
        return text + f"; retitle 'Migration {self.old}' -> 'Migration {self.new}' if its docstring says so"


def plan_renumbering(problems: list, taken: list[str]) -> list[Renumbering]:
    """The renumbering of every file (but the first) of each shared version; ``taken`` is every version in use."""
    shared = [p for p in problems if isinstance(p, DuplicateVersion)]
    extra = [(p, path) for p in shared for path in p.paths[1:]]
    # The shared versions are in use too (the loader leaves them out of its files): never suggest one of them.
    free = versions.free_versions([*taken, *(_version_of(path) for p in shared for path in p.paths)], len(extra))
    return [Renumbering(path, _version_of(path), new, problem.paths[0], _depends_line(path, problem.versions[0]))
            for (problem, path), new in zip(extra, free)]


def _version_of(path: Path) -> str:
    from planner.loader import version_from_file_name

    return version_from_file_name(path) or ""


def _depends_line(path: Path, keeps: str) -> str | None:
    """The line that keeps the file after its partner, unless it already says what it depends on."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        source = ""
    if path.suffix == ".sql":
        return None if re.search(r"^\s*--\s*depends_on\s*:", source, re.M) else f"-- depends_on: {keeps}"
    if re.search(r"^depends_on\s*[:=]", source, re.M) or re.search(r"^\s*Dependencies\s*:\s*$", source, re.M):
        return None
    return f'depends_on = ("{keeps}",)'


def apply_renumbering(changes: list[Renumbering]) -> None:
    """Make the changes: write each file's new text under its new name, then remove the old name."""
    for change in changes:
        source = change.path.read_text(encoding="utf-8")
        source = re.sub(rf"(Migration\s+){re.escape(change.old)}(\s*:)", rf"\g<1>{change.new}\g<2>", source, count=1)
        if change.depends_line:
            source = _with_line(source, change.depends_line, change.path.suffix == ".sql")
        target = change.target
        if target.exists():
            raise FileExistsError(f"{target} exists; nothing renamed for {change.path.name}")
        target.write_text(source, encoding="utf-8")
        os.unlink(change.path)


def _with_line(source: str, line: str, sql: bool) -> str:
    """``source`` with ``line`` after its docstring and leading imports (a SQL file: at the top)."""
    comment = "  # keeps the order the old loader ran it in (apm migrate check --fix)"
    if sql:
        return f"{line}\n{source}"
    lines = source.splitlines(keepends=True)
    after = 0
    try:
        body = ast.parse(source).body
    except SyntaxError:
        body = []
    for node in body:
        is_doc = isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant)
        if is_doc or isinstance(node, (ast.Import, ast.ImportFrom)):
            after = node.end_lineno or after
        else:
            break
    return "".join(lines[:after]) + f"\n{line}{comment}\n" + "".join(lines[after:])
