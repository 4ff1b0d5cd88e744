"""What a preview of a plan reports: per step, the schema changes and the data they destroy.

JSON shape (``Rehearsal.to_json()``, version 1)::

    {
      "format": 1,
      "direction": "apply" | "rollback",
      "target": "0027" | null,          # what was asked for
      "cascade": bool,
      "storage": "memory" | "file" | null,   # null for an empty plan (nothing was copied)
      "database_bytes": int,            # size of the database rehearsed
      "duration_ms": float,             # the whole rehearsal, copy included
      "ok": bool,                       # no step failed
      "loses_data": bool,               # some step drops or deletes data
      "steps": [{
          "version": "0027", "description": "Add metadata", "direction": "rollback",
          "status": "ok" | "failed" | "skipped",
          "duration_ms": float,          # the migration itself, on the copy
          "loses_data": bool,
          "changes": [{"kind": "table" | "column" | "index" | "trigger" | "view" | "rows",
                       "action": "added" | "removed" | "changed",
                       "name": str, "table": str | null,
                       "before": str | int | null, "after": str | int | null, "text": str}],
          "impact": [{"kind": "dropped-table" | "dropped-column" | "rows",
                      "table": str, "column": str | null,
                      "count": int,          # rows held / non-default values held / |row delta|
                      "non_null": int | null,   # dropped-column: values that were not NULL
                      "before": int | null, "after": int | null,   # rows: the row counts
                      "loses_data": bool, "text": str}],
          "lines": [str],                # describe() of this step
          "error": null | {"type": "MigrationFailed", "message": str},
          "skipped": null | str
      }],
      "not_run": ["0020"],              # plan steps after a failure, never reached
      "lines": [str]                    # Rehearsal.describe()
    }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from planner.schema import SchemaChange

if TYPE_CHECKING:
    from planner.plan import Plan

ImpactKind = Literal["dropped-table", "dropped-column", "rows"]


FORMAT = 1

ImpactKind = Literal["dropped-table", "dropped-column", "rows"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class DataImpact:
    """What one step did to stored data: a dropped table or column and what it held, or a row count change."""

    kind: ImpactKind
    table: str
    column: str | None = None
    #: dropped-table: its rows; dropped-column: its non-NULL, non-default values; rows: the size of the change.
    count: int = 0
    #: dropped-column only: how many of its values were not NULL (default values included).
    non_null: int | None = None
    before: int | None = None
    after: int | None = None

    @property
    def loses_data(self) -> bool:
        """Rows or non-default values that the step destroyed."""
        if self.kind == "rows":
            return (self.after or 0) < (self.before or 0)
        return self.count > 0

    def describe(self) -> str:
        """``drops column agents.metadata holding 37 non-default values``."""
        if self.kind == "dropped-table":
            held = f"holding {_count(self.count, 'row')}" if self.count else "(it was empty)"
            return f"drops table {self.table} {held}"
        if self.kind == "dropped-column":
            name = f"{self.table}.{self.column}"
            if self.count:
                also = f" ({self.non_null} non-null)" if self.non_null not in (None, self.count) else ""
                return f"drops column {name} holding {_count(self.count, 'non-default value')}{also}"
            return f"drops column {name} (it held only NULL or default values)"
        before, after = self.before or 0, self.after or 0
        if after < before:
            return f"deletes {_count(before - after, 'row')} of {self.table} ({before} → {after})"
        return f"inserts {_count(after - before, 'row')} into {self.table} ({before} → {after})"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "table": self.table,
            "column": self.column,
            "count": self.count,
            "non_null": self.non_null,
            "before": self.before,
            "after": self.after,
            "loses_data": self.loses_data,
            "text": self.describe(),
        }


@dataclass
class RehearsalStep:
    """One migration as rehearsed: its schema changes and data impact, or the error it failed with."""

    version: str
    direction: str
    description: str = ""
    changes: list[SchemaChange] = field(default_factory=list)
    impact: list[DataImpact] = field(default_factory=list)
    #: The exception the real run would raise at this step (``MigrationFailed``, ``ForeignKeyViolation``...).
    error: Exception | None = None
    #: Why the executor skipped the step (only if the copy's ledger already had it done).
    skipped: str | None = None
    duration_ms: float = 0.0

    @property
    def status(self) -> str:
        return "failed" if self.error is not None else "skipped" if self.skipped else "ok"

    @property
    def loses_data(self) -> bool:
        return any(i.loses_data for i in self.impact)

    def describe(self) -> list[str]:
        """One line per change, each removal told by what it held: ``0027 rollback: drops column ...``."""
        prefix = f"{self.version} {self.direction}"
        if self.error is not None:
            return [f"{prefix}: fails: {self.error}"]
        if self.skipped:
            return [f"{prefix}: skipped: {self.skipped}"]
        told = {(i.kind, i.table, i.column) for i in self.impact}
        lines: list[str] = []
        for impact in self.impact:
            lines.append(f"{prefix}: {impact.describe()}")
        for change in self.changes:
            if change.kind == "rows" and ("rows", change.name, None) in told:
                continue
            if change.kind == "table" and change.action == "removed" and ("dropped-table", change.name, None) in told:
                continue
            if (change.kind == "column" and change.action == "removed"
                    and ("dropped-column", change.table, change.name) in told):
                continue
            lines.append(f"{prefix}: {change.describe()}")
        return lines or [f"{prefix}: no schema or row count change"]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "description": self.description,
            "direction": self.direction,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "loses_data": self.loses_data,
            "changes": [c.to_json() for c in self.changes],
            "impact": [i.to_json() for i in self.impact],
            "lines": self.describe(),
            "error": None if self.error is None else {"type": type(self.error).__name__, "message": str(self.error)},
            "skipped": self.skipped,
        }


@dataclass
class Rehearsal:
    """The result of running a plan on a copy: each step rehearsed, up to and including a failure."""

    plan: Plan
    steps: list[RehearsalStep] = field(default_factory=list)
    #: "memory" (a RAM-backed copy), "file" (a temporary file), ``None`` when there was nothing to run.
    storage: str | None = None
    database_bytes: int = 0
    duration_ms: float = 0.0

    @property
    def error(self) -> Exception | None:
        """The error the real run would stop with, ``None`` when every step passed."""
        return next((s.error for s in self.steps if s.error is not None), None)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def loses_data(self) -> bool:
        """Whether any step drops a table or column that held rows or non-default values, or deletes rows."""
        return any(step.loses_data for step in self.steps)

    @property
    def not_run(self) -> list[str]:
        """Versions of the plan never reached because an earlier step failed."""
        return [step.version for step in self.plan.steps[len(self.steps):]]

    def describe(self) -> list[str]:
        lines = [line for step in self.steps for line in step.describe()]
        if self.not_run:
            lines.append(f"not rehearsed (the plan stops at the failure): {', '.join(self.not_run)}")
        return lines

    def to_json(self) -> dict[str, Any]:
        """The documented shape (see the module docstring)."""
        return {
            "format": FORMAT,
            "direction": self.plan.direction,
            "target": self.plan.target,
            "cascade": self.plan.cascade,
            "storage": self.storage,
            "database_bytes": self.database_bytes,
            "duration_ms": round(self.duration_ms, 3),
            "ok": self.ok,
            "loses_data": self.loses_data,
            "steps": [step.to_json() for step in self.steps],
            "not_run": self.not_run,
            "lines": self.describe(),
        }


