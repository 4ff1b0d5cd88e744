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

The report (``Rehearsal`` and its JSON shape) is in ``planner.preview``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from planner.database import DEFAULT_BUSY_TIMEOUT, copy_database, open_read_only
from planner.errors import MigrationError
from planner.preview import DataImpact, Rehearsal, RehearsalStep
from planner.schema import SchemaChange, SchemaSnapshot, diff, snapshot
from planner.sql import quote_identifier

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.plan import Plan

#: Databases up to this size are rehearsed on a RAM-backed copy.
DEFAULT_MEMORY_LIMIT = 256 * 1024 * 1024
#: RAM-backed folders tried in order; the first that exists, is writable and has room is used.
MEMORY_DIRECTORIES = (Path("/dev/shm"),)

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
