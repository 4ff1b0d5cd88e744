"""A finding: one thing ``check`` or ``doctor`` found, what it means, and the line or command that fixes it.

Severities: ``error`` blocks (CI fails), ``warning`` is advice (fails only
with ``--strict``), ``info`` is a fact worth showing (the backups on disk, a
database not made yet) and never blocks. The scope decides the CLI's exit
code: the files (3), the ledger (4), or the database itself (6).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]
#: What a finding is about, which decides the CLI's exit code: the files, the ledger, or the database file.
Scope = Literal["catalog", "history", "database"]

ERROR: Severity = "error"
WARNING: Severity = "warning"
INFO: Severity = "info"


@dataclass(frozen=True)
class Finding:
    """One thing ``check`` or ``doctor`` found: what it is, what it means, and how to fix it."""

    severity: Severity
    #: Short kebab-case name, stable across releases (scripts filter on it).
    code: str
    #: The migration concerned, when there is one.
    version: str | None
    message: str
    #: The command or line that fixes it; ``None`` when there is nothing to do.
    fix: str | None = None
    scope: Scope = "catalog"
    path: Path | None = None

    def describe(self) -> str:
        """``error  0029  unknown-dependency  <message>  fix: <fix>``: one line for a terminal or a log."""
        line = f"{self.severity:<7}  {self.version or '-':<4}  {self.code}  {self.message}"
        return f"{line}  fix: {self.fix}" if self.fix else line

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "version": self.version,
            "message": self.message,
            "fix": self.fix,
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


def size_text(size: float) -> str:
    """A size in bytes, KiB or MiB, as a finding says it."""
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"
