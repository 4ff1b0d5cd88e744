"""Rehearsal: run a plan for real on a copy of the database, and report what it changed and destroyed.

The seed's rollback procedure opens with "Rollback will delete all metadata
stored in the metadata column" and leaves the operator to find out how much.
A rehearsal finds out: it copies the database with SQLite's backup API, runs
the plan on the copy with the real ``Executor`` (so one transaction per step,
foreign keys off before BEGIN, ``foreign_key_check``, ``validate_pre`` and
``validate_post`` behave exactly as they will for real), and compares the
schema before and after every step. A migration that fails on the copy fails
with the same error class and message the real run would raise, and the
rehearsal stops there, as the real run would. The real file is only ever read
(``mode=ro``), so it is unchanged byte for byte.

Where the copy lives. ``Executor`` takes a path and opens its own connection,
so the copy is a file: on a RAM-backed tmpfs (``/dev/shm``) when the database
is at most ``memory_limit_bytes`` and the tmpfs has room for it ("memory"),
otherwise in the system temporary folder ("file"). Either way the folder is
deleted afterwards. A plain ``":memory:"`` database would need an executor
hook that runs a plan on a given connection; with one, only ``_copy`` and
``_connections`` here would change.

The state before each step. Data impact (how many non-default values a
dropped column held) must be counted on the state *before* the step, which
the step itself destroys. The copy is put in WAL mode, and a second
connection opens a read transaction just before each step: WAL keeps that
snapshot readable while the executor writes and commits, so the "before"
database costs no copy at all; the read ends once the step is measured.

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

import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from planner.database import DEFAULT_BUSY_TIMEOUT, copy_database, open_read_only
from planner.errors import MigrationError
from planner.schema import SchemaChange, SchemaSnapshot, diff, snapshot
from planner.sql import quote_identifier

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.plan import Plan

#: Databases up to this size are rehearsed on a RAM-backed copy.
DEFAULT_MEMORY_LIMIT = 256 * 1024 * 1024
#: RAM-backed folders tried in order; the first that exists, is writable and has room is used.
MEMORY_DIRECTORIES = (Path("/dev/shm"),)

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


# --------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------


def rehearse(
    db_path: Path | str,
    plan: Plan,
    *,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
    catalog: Catalog | None = None,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
) -> Rehearsal:
    """Run ``plan`` on a copy of ``db_path`` and report, step by step, what it changes and destroys.

    A database that does not exist yet is rehearsed as an empty one (what
    ``apm migrate`` would create). Step failures are not raised: they are the
    rehearsal's result (``Rehearsal.error``). What is raised is a problem
    with the real file itself (``DatabaseError``: locked, not a database).
    """
    started = time.perf_counter()
    rehearsal = Rehearsal(plan)
    if not plan.steps:
        return rehearsal
    db_path = Path(db_path)
    source = open_read_only(db_path, busy_timeout)
    try:
        size = 0
        if source is not None:
            page_count = source.execute("PRAGMA page_count").fetchone()[0]
            page_size = source.execute("PRAGMA page_size").fetchone()[0]
            size = page_count * page_size
        rehearsal.database_bytes = size
        memory_dir = _memory_directory(size) if size <= memory_limit_bytes else None
        rehearsal.storage = "memory" if memory_dir is not None else "file"
        workdir = Path(tempfile.mkdtemp(prefix="apm-rehearsal-", dir=memory_dir))
        try:
            copy = workdir / "rehearsal.db"
            _copy(source, copy, db_path, busy_timeout)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
    finally:
        if source is not None:
            source.close()
    try:
        _run(rehearsal, copy, catalog, busy_timeout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rehearsal.duration_ms = (time.perf_counter() - started) * 1000
    return rehearsal


def _memory_directory(size: int) -> str | None:
    """A RAM-backed folder with room for the copy and its write-ahead log, if this system has one."""
    for directory in MEMORY_DIRECTORIES:
        try:
            if not (directory.is_dir() and os.access(directory, os.W_OK)):
                continue
            stats = os.statvfs(directory)
        except OSError:
            continue
        if stats.f_bavail * stats.f_frsize > 2 * size + (16 << 20):
            return str(directory)
    return None


def _copy(source: sqlite3.Connection | None, target: Path, db_path: Path, busy_timeout: float) -> None:
    """Copy with the backup API (a consistent snapshot even while others write), then switch to WAL."""
    destination = sqlite3.connect(str(target), isolation_level=None)
    try:
        if source is not None:
            copy_database(source, destination, path=db_path, busy_timeout=busy_timeout)
        # WAL lets a reader keep the state before a step while the executor commits the step.
        destination.execute("PRAGMA journal_mode = WAL").fetchone()
    finally:
        destination.close()


def _run(rehearsal: Rehearsal, copy: Path, catalog: Catalog | None, busy_timeout: float) -> None:
    from planner.executor import Executor, StepFailed, StepFinished, StepSkipped, StepStarted

    executor = Executor(copy, busy_timeout=busy_timeout, catalog=catalog)
    before_conn = sqlite3.connect(str(copy), isolation_level=None)  # holds each step's "before" snapshot
    after_conn = sqlite3.connect(str(copy), isolation_level=None)
    events = executor.events(rehearsal.plan)
    try:
        state = snapshot(after_conn)
        for event in events:
            step = event.step
            if isinstance(event, StepStarted):
                before_conn.execute("BEGIN")
                before_conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # pins the snapshot
                continue
            record = RehearsalStep(step.version, step.direction, step.migration.description)
            if isinstance(event, StepFinished):
                after = snapshot(after_conn)
                record.changes = diff(state, after)
                record.impact = _impact(record.changes, state, before_conn)
                record.duration_ms = event.duration_ms
                state = after
            elif isinstance(event, StepSkipped):
                record.skipped = event.reason
            elif isinstance(event, StepFailed):
                record.error = event.error
            if before_conn.in_transaction:
                before_conn.execute("COMMIT")
            rehearsal.steps.append(record)
    except MigrationError as exc:
        # Raised right after its StepFailed (already recorded), or before any step could start.
        if not rehearsal.steps or rehearsal.steps[-1].error is not exc:
            step = rehearsal.plan.steps[len(rehearsal.steps)]
            rehearsal.steps.append(RehearsalStep(step.version, step.direction, step.migration.description, error=exc))
    finally:
        events.close()
        before_conn.close()
        after_conn.close()


def _impact(changes: list[SchemaChange], before: SchemaSnapshot, before_conn: sqlite3.Connection) -> list[DataImpact]:
    """What the changes destroyed or moved, counted on the state before the step."""
    impact: list[DataImpact] = []
    for change in changes:
        if change.kind == "table" and change.action == "removed":
            rows = before.tables[change.name].rows or 0
            impact.append(DataImpact("dropped-table", change.name, count=rows))
        elif change.kind == "column" and change.action == "removed" and change.table is not None:
            column = before.tables[change.table].column(change.name)
            non_null, non_default = _column_values(before_conn, change.table, change.name,
                                                   column.default if column else None,
                                                   generated=bool(column and column.hidden in (2, 3)))
            impact.append(DataImpact("dropped-column", change.table, change.name, count=non_default,
                                     non_null=non_null))
        elif change.kind == "rows":
            before_rows, after_rows = int(change.before or 0), int(change.after or 0)
            impact.append(DataImpact("rows", change.name, count=abs(after_rows - before_rows),
                                     before=before_rows, after=after_rows))
    return impact


def _column_values(
    conn: sqlite3.Connection, table: str, column: str, default: str | None, *, generated: bool = False
) -> tuple[int, int]:
    """(non-NULL values, values neither NULL nor equal to the column's default) in ``table.column``.

    The default is SQL text from the schema (``'{}'``, ``0``,
    ``CURRENT_TIMESTAMP``) and is compared as an expression, so a time-valued
    default counts every stored timestamp as data, which it is. A generated
    column holds nothing that the other columns do not, so it holds no data.
    """
    quoted_table, quoted_column = quote_identifier(table), quote_identifier(column)
    non_null = conn.execute(f"SELECT COUNT({quoted_column}) FROM {quoted_table}").fetchone()[0]
    if generated:
        return non_null, 0
    if default is None or default.strip().upper() == "NULL":
        return non_null, non_null
    try:
        non_default = conn.execute(
            f"SELECT COUNT(*) FROM {quoted_table} WHERE {quoted_column} IS NOT NULL "
            f"AND {quoted_column} IS NOT ({default})"
        ).fetchone()[0]
    except sqlite3.Error:
        non_default = non_null  # a default we cannot evaluate here: count every value as data
    return non_null, non_default
