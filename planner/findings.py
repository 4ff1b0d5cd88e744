"""A finding: one thing ``check`` or ``doctor`` found, what it means, and the remedy that fixes it.

Severities: ``error`` blocks (CI fails), ``warning`` is advice (fails only
with ``--strict``), ``info`` is a fact worth showing (the backups on disk, a
database not made yet) and never blocks. The scope decides the CLI's exit
code: the files (3), the ledger (4), or the database itself (6).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from planner import deferred_dataclass

Severity = Literal["error", "warning", "info"]
#: What a finding is about, which decides the CLI's exit code: the files, the ledger, the database file, or
#: the locks the pending plan takes (``check`` on PostgreSQL, gated by ``lock_gate``: exit 12).
Scope = Literal["catalog", "history", "database", "locks"]

ERROR: Severity = "error"
WARNING: Severity = "warning"
INFO: Severity = "info"


#: What a remedy asks for. ``line`` is a line to run or write as it is (SQL, a file edit, another tool's
#: command), whose ``arguments`` are that one line; every other action is one of apm's, or names an apm option,
#: and only the command knows how the user called it, so the CLI (``cli.safety``) spells it.
Action = Literal[
    "line", "migrate", "list", "check", "doctor", "restore", "mark-applied", "baseline", "target",
    "mark-applied-or-cascade", "settle-outside-step", "renumber", "make-catalog", "restore-file",
    "rebuild-invalid-index", "one-run-at-a-time", "no-preview", "inspect-ledger", "pg-dump",
]


@deferred_dataclass(frozen=True)
class Remedy:
    """What fixes a finding, as facts: an action and its arguments, never an ``apm`` command line.

    A library caller (a fleet, the pytest plugin, a program) never typed ``apm``
    and the options it would repeat; the command that shows the finding turns
    the action into the line its user can paste. ``note`` says when or why
    (shown after ``#``); ``database`` is set when the command must name the
    database even though the user's was found another way (a restore).
    """

    action: Action
    arguments: tuple[str, ...] = ()
    note: str | None = None
    database: str | None = None

    @classmethod
    def line(cls, text: str) -> Remedy:
        """A fix that is the same for every caller: SQL, a file edit, another tool's command."""
        return cls("line", (text,))

    def __str__(self) -> str:
        # For a caller without the command's renderer (the pytest plugin's messages): the facts, plainly.
        if self.action in ("line", "renumber"):  # a renumbering's renames are lines to run as they are
            return self.arguments[0]
        said = " ".join([self.action, *self.arguments])
        return f"{said}  # {self.note}" if self.note else said


@deferred_dataclass(frozen=True)
class Finding:
    """One thing ``check`` or ``doctor`` found: what it is, what it means, and how to fix it."""

    severity: Severity
    #: Short kebab-case name, stable across releases (scripts filter on it).
    code: str
    #: The migration concerned, when there is one.
    version: str | None
    message: str
    #: What fixes it; ``None`` when there is nothing to do.
    fix: Remedy | None = None
    scope: Scope = "catalog"
    path: Path | None = None

    def describe(self, render: Callable[[Remedy], str] = str) -> str:
        """``error  0029  unknown-dependency  <message>  fix: <fix>``: one line for a terminal or a log.

        ``render`` spells the remedy; the command passes its own, which names its ``apm`` command line.
        """
        line = f"{self.severity:<7}  {self.version or '-':<4}  {self.code}  {self.message}"
        return f"{line}  fix: {render(self.fix)}" if self.fix else line

    def to_json(self, render: Callable[[Remedy], str] = str) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "version": self.version,
            "message": self.message,
            "fix": render(self.fix) if self.fix else None,
            "scope": self.scope,
            "path": str(self.path) if self.path else None,
        }


def age_text(seconds: float) -> str:
    """An age as a finding says it: the unit a reader takes in at a glance."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def size_text(size: float, units: tuple[str, ...] = ("bytes", "KiB", "MiB")) -> str:
    """A size in bytes, KiB or MiB (or up to the last of ``units``), as a finding says it."""
    for unit in units:
        if size < 1024 or unit == units[-1]:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"
