"""What a preview of a plan reports: per step, the schema changes, the data they destroy, and the SQL they ran.

A preview is the plan run for real inside one transaction on the real file
(``Executor.preview``), watched statement by statement
(``planner.engines.sqlite.observe``), then committed or rolled back. These values are what
it saw; ``describe`` words them for a person, ``to_json`` for a script.

What counts as losing data: a dropped table that held rows, a dropped column
that held non-default values, deleted rows, and values that existed before
the plan, were not NULL, and an ``UPDATE`` (or a rebuild's ``convert``)
changed, whatever they equal. Renames (of tables and columns, including a
rebuild whose ``convert`` carries a column over), inserts, NULLs filled in
and values the plan itself wrote (a table it created, a column it added) are
changes, not loss: ``values`` and ``rows`` (removed) changes.

JSON shape (``Preview.to_json()``, format 2)::

    {
      "format": 2,
      "direction": "apply" | "rollback",
      "target": "0027" | null,          # what was asked for
      "cascade": bool,
      "committed": bool,                # false for a dry run, a failure, or loss not confirmed
      "duration_ms": float,             # the whole preview
      "ok": bool,                       # no step failed
      "loses_data": bool,               # some step drops, deletes or overwrites data
      "unchecked": ["0004"],            # steps not fully checked: not run in the preview (transactional =
                                        # False), or dropping a table/column whose contents went uncounted
      "steps": [{
          "version": "0027", "description": "Add metadata", "direction": "rollback",
          "status": "ok" | "failed" | "skipped",
          "duration_ms": float,
          "loses_data": bool,
          "changes": [{"kind": "table" | "column" | "index" | "trigger" | "view" | "constraint"
                               | "function" (PostgreSQL) | "rows" | "values",
                       "action": "added" | "removed" | "changed" | "renamed" | "rebuilt",
                       "name": str, "table": str | null,
                       "before": str | int | null, "after": str | int | null, "text": str}],
          "impact": [{"kind": "dropped-table" | "dropped-column" | "deleted-rows" | "overwritten-values",
                      "table": str, "column": str | null,
                      "count": int,          # rows held / non-default values held / rows deleted / values overwritten
                                             # (column null: rows updated, values not compared; PostgreSQL)
                      "non_null": int | null,   # dropped-column: values that were not NULL
                      "before": int | null, "after": int | null,   # row counts, where known
                      "loses_data": bool,
                      "counted": bool,       # false: dropped where the preview could not count it (PostgreSQL)
                      "text": str}],
          "sql": [str],                  # the statements the step ran, parameters filled in (with --sql)
          "output": str,                 # what the migration printed ("" for nothing)
          "passed_over": [str],          # transactional = False steps: statements not run (VACUUM: they run
                                         # only outside a transaction and change no schema or data)
          "lines": [str],                # describe() of this step
          "error": null | {"type": "MigrationFailed", "message": str},
          "skipped": null | str,
          "locks": [{"relation": str, "mode": "ACCESS EXCLUSIVE" | "SHARE" | ..., "rows": int | null,
                     "bytes": int | null, "held_since": null | str}],   # PostgreSQL: locks on relations
                                         # older than the plan; held_since: taken by that earlier step
          "rewrites": [str],             # relations given a new file (rewritten); SQLite: tables rebuilt
          "rebuilds": [{"table": str, "rows": int}],   # SQLite: tables rebuilt, with the rows they held then
          "findings": [{"code": str, "level": "info" | "warning" | "error", "relation": str,
                        "advice": str, "text": str, "accepted": null | "migration" | "option"}]
                                         # planner.locks, docs/locks.md
      }],
      "not_run": ["0020"],              # plan steps after a failure, never reached
      "write_lock_ms": float | null,    # SQLite: how long the plan held the write lock (BEGIN IMMEDIATE to
                                        # COMMIT or ROLLBACK); null on PostgreSQL (per-relation locks instead)
      "held_exclusive": [{"relation": str, "rows": int | null, "taken_by": str, "held_ms": float,
                          "text": str}],  # PostgreSQL: ACCESS EXCLUSIVE on a table with rows held by this
                                        # preview longer than the lock timeout (readers waited for it)
      "lines": [str]                    # Preview.describe()
    }
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from planner.plan import Plan, Step

FORMAT = 2

#: Why a ``transactional = False`` step is left out of a preview (which is one transaction).
NOT_PREVIEWED = "not previewed: it runs outside any transaction (transactional = False)"


def left_out(step: Step, outside: set[str], needs: Callable[[Step], Iterable[str]], *,
             rehearsed: bool = False) -> str | None:
    """Why ``step`` is left out of a preview, given the versions ``outside`` it already left out; ``None``: run it.

    A ``transactional = False`` step cannot run inside the preview's
    transaction as it is; it is rehearsed there (``rehearsed``:
    ``outside.Rehearsal``), or left out when the engine cannot.
    What needs a step left out done first (``needs``: what an apply depends
    on, what a rollback's dependents are) is left out too: without it, the
    ledger would refuse them and the schema would not be theirs. A real
    run runs them after it, part by part. ``outside`` grows as steps are
    left out (the session adds a step whose rehearsal stopped).
    """
    missing = sorted(set(needs(step)) & outside)
    if (step.migration.transactional or rehearsed) and not missing:
        return None
    outside.add(step.version)
    if not step.migration.transactional:
        return NOT_PREVIEWED
    return f"not previewed: it needs {', '.join(missing)} first, which runs outside any transaction"


def passed_over_why(statement: str) -> str:
    """What a statement the preview passed over does: maintenance changes nothing; ``CREATE INDEX
    CONCURRENTLY`` adds an index (when the step runs for real), which is no loss and not nothing."""
    if statement.lstrip().upper().startswith("CREATE"):
        return "adds an index when the step runs (the preview builds none), destroying no data"
    return "changes no schema or data"


def is_left_out(skipped: str | None) -> bool:
    """Whether a step's ``skipped`` reason is one of ``left_out``'s."""
    return skipped is not None and skipped.startswith(("not previewed:", "not previewed beyond "))


def watched(steps: list[PreviewStep]) -> list[PreviewStep]:
    """The steps the preview's observer started, in order: all but those ``left_out`` kept from running. A
    rehearsal stopped part way ("not previewed beyond") was started: pairing observer readings with steps
    without it shifted every later step's locks and findings onto the next one."""
    return [step for step in steps if step.skipped is None or not step.skipped.startswith("not previewed:")]

ObjectKind = Literal["table", "column", "index", "trigger", "view", "constraint", "function", "rows", "values", "key",
                     "other"]
Action = Literal["added", "removed", "changed", "renamed", "rebuilt", "reordered"]


@dataclass(frozen=True)
class SchemaChange:
    """One difference between two snapshots.

    ``name`` is the object's name (the column's for ``column``, the table's
    for ``rows``, the constraint's description for ``key``, ``"type mood"``
    for ``other``); ``table`` is the table a column or key belongs to.
    ``before`` and ``after`` are the definitions (SQL or column definition)
    or, for ``rows``, the row counts; ``None`` on the side where the object is absent.
    """

    kind: ObjectKind
    action: Action
    name: str
    table: str | None = None
    before: str | int | None = None
    after: str | int | None = None

    @property
    def qualified_name(self) -> str:
        """``agents.metadata`` for a column, ``reviews.rating_range`` for a constraint, the plain name otherwise."""
        return f"{self.table}.{self.name}" if self.kind in ("column", "constraint") and self.table else self.name

    @property
    def subject(self) -> str:
        """``column agents.metadata``, ``foreign key agents(project_id) → projects(id)``, ``type mood``."""
        if self.kind in ("key", "other"):
            return self.name
        return f"{self.kind} {self.qualified_name}"

    def describe(self) -> str:
        """One line in the rehearsal's words: ``drops column agents.metadata (TEXT DEFAULT '{}')``."""
        if self.kind == "rows" and self.action == "added":
            rows = "1 row" if self.after == 1 else f"{self.after} rows"
            return f"inserts {rows} into {self.name}"
        if self.kind == "rows" and self.action == "removed":  # rows of a table the same plan created
            rows = "1 row" if self.before == 1 else f"{self.before} rows"
            return f"deletes {rows} of {self.name} (rows this plan wrote)"
        if self.kind == "values":  # changed, but none held data from before the plan (NULL, or the plan's own)
            values = "1 value" if self.after == 1 else f"{self.after} values"
            return f"sets {values} of {self.table}.{self.name} (none held data from before this plan)"
        if self.action == "renamed":
            if self.kind == "column":
                return f"renames column {self.table}.{self.before} to {self.after}"
            return f"renames {self.kind} {self.before} to {self.after}"
        if self.action == "rebuilt":
            return f"rebuilds table {self.name} (copies its rows into the new shape)"
        if self.action == "reordered":
            return f"reorders the columns of table {self.name} ({self.before} → {self.after})"
        if self.kind == "rows":
            before, after = int(self.before or 0), int(self.after or 0)
            delta = after - before
            verb = "deletes" if delta < 0 else "inserts"
            rows = "1 row" if abs(delta) == 1 else f"{abs(delta)} rows"
            return f"{verb} {rows} of {self.name} ({before} → {after})"
        what = self.subject
        if self.action == "added":
            detail = f" ({self.after})" if self.kind == "column" and self.after else ""
            return f"adds {what}{detail}"
        if self.action == "removed":
            detail = f" ({self.before})" if self.kind == "column" and self.before else ""
            return f"drops {what}{detail}"
        if self.kind == "column":
            return f"changes {what}: {self.before} → {self.after}"
        return f"changes {what} (its SQL differs)"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "action": self.action,
            "name": self.name,
            "table": self.table,
            "before": self.before,
            "after": self.after,
            "text": self.describe(),
        }


ImpactKind = Literal["dropped-table", "dropped-column", "deleted-rows", "overwritten-values"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class DataImpact:
    """Data one step destroyed: a dropped table or column and what it held, deleted rows, overwritten values."""

    kind: ImpactKind
    table: str
    column: str | None = None
    #: dropped-table: rows held; dropped-column: non-default values; deleted-rows / overwritten-values: how many.
    count: int = 0
    #: dropped-column only: how many of its values were not NULL (default values included).
    non_null: int | None = None
    before: int | None = None
    after: int | None = None
    #: False when the preview could not count what went (PostgreSQL: a table or column dropped, or a table
    #: truncated, by a statement it could not watch, such as one inside a trigger): loss until a person says not.
    counted: bool = True

    @property
    def loses_data(self) -> bool:
        return self.count > 0 or not self.counted

    def describe(self) -> str:
        """``drops column agents.metadata holding 37 non-default values``."""
        if not self.counted and self.kind == "deleted-rows":
            return (f"may delete rows of {self.table} (not counted: emptied or rewritten where the preview could "
                    f"not watch, as by a TRUNCATE inside a function)")
        if not self.counted and self.kind == "overwritten-values":
            return f"may change values of {self.table}.{self.column} (not counted: they could not be compared)"
        if not self.counted:
            what = f"column {self.table}.{self.column}" if self.kind == "dropped-column" else f"table {self.table}"
            return f"drops {what} (not counted: dropped where the preview could not watch)"
        if self.kind == "dropped-table":
            held = f"holding {_count(self.count, 'row')}" if self.count else "(it was empty)"
            return f"drops table {self.table} {held}"
        if self.kind == "dropped-column":
            name = f"{self.table}.{self.column}"
            if self.count:
                also = f" ({self.non_null} non-null)" if self.non_null not in (None, self.count) else ""
                return f"drops column {name} holding {_count(self.count, 'non-default value')}{also}"
            return f"drops column {name} (it held only NULL or default values)"
        if self.kind == "overwritten-values" and self.column is None:
            return f"updates {_count(self.count, 'row')} of {self.table} (values not compared)"
        if self.kind == "overwritten-values":
            return f"overwrites {_count(self.count, 'value')} of {self.table}.{self.column}"
        counts = f" ({self.before} → {self.after})" if self.before is not None and self.after is not None else ""
        return f"deletes {_count(self.count, 'row')} of {self.table}{counts}"

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
            "counted": self.counted,
            "text": self.describe(),
        }


#: The order of a step's impact lines on both engines (SQLite's preview nets a step's effects in this order).
_ORDER = {"dropped-table": 0, "dropped-column": 1, "overwritten-values": 2, "deleted-rows": 3}


def summed(impact: list[DataImpact]) -> list[DataImpact]:
    """A step's impact as one line per table (column) and kind, summed, in the order SQLite's preview nets it.

    An engine that counts statement by statement (PostgreSQL) would otherwise print one line per statement of
    a data migration's loop, where SQLite, which counts the step as a whole, prints one: the same step must read
    the same on both. Drops keep their order (a table made and dropped twice is two drops)."""
    merged: list[DataImpact] = []
    at: dict[tuple[str, str, str | None, bool], int] = {}
    for item in impact:
        key = (item.kind, item.table, item.column, item.counted)
        if item.kind not in ("overwritten-values", "deleted-rows") or key not in at:
            at.setdefault(key, len(merged))
            merged.append(item)
            continue
        first = merged[at[key]]
        known = first.before is not None and item.after is not None
        merged[at[key]] = replace(first, count=first.count + item.count, after=item.after if known else None,
                                  before=first.before if known else None)
    return sorted(merged, key=lambda i: (_ORDER.get(i.kind, 4), *((i.table, i.column or "") if _ORDER.get(
        i.kind, 4) >= 2 else ("", ""))))


@dataclass
class PreviewStep:
    """One migration as the preview ran it: its changes and impact, or the error it failed with."""

    version: str
    direction: str
    description: str = ""
    changes: list[SchemaChange] = field(default_factory=list)
    impact: list[DataImpact] = field(default_factory=list)
    #: The statements the step ran (filled only when SQL was asked for).
    sql: list[str] = field(default_factory=list)
    #: The exception the step failed with (``MigrationFailed``, ``ForeignKeyViolation``...).
    error: Exception | None = None
    #: Why the step was skipped (the ledger, read inside the lock, had it done already).
    skipped: str | None = None
    duration_ms: float = 0.0
    #: What the migration's code printed (captured: it never reaches stdout).
    output: str = ""
    #: Statements of a ``transactional = False`` step the preview did not run: they run only outside a
    #: transaction and change no schema or data (``VACUUM``).
    passed_over: list[str] = field(default_factory=list)
    #: What its locks cost a live database (``planner.locks.StepLocks``); ``None``: not measured.
    locks: Any = None

    @property
    def status(self) -> str:
        return "failed" if self.error is not None else "skipped" if self.skipped else "ok"

    @property
    def loses_data(self) -> bool:
        return any(i.loses_data for i in self.impact)

    @property
    def unchecked(self) -> bool:
        """Whether the step could not be fully checked: not run in the preview, or some loss not counted."""
        return is_left_out(self.skipped) or any(not i.counted for i in self.impact)

    def describe(self) -> list[str]:
        """One line per change, removals told by what they held: ``0027 rollback: drops column ...``."""
        prefix = f"{self.version} {self.direction}"
        if self.error is not None:
            return [f"{prefix}: fails: {self.error}"]
        if self.skipped:
            return [f"{prefix}: skipped: {self.skipped}"]
        told = {(i.table, i.column) for i in self.impact if i.kind in ("dropped-column",)}
        told |= {(i.table, None) for i in self.impact if i.kind == "dropped-table"}
        lines = [f"{prefix}: {impact.describe()}" for impact in self.impact]
        lines += [f"{prefix}: `{statement}` not run by the preview: it runs only outside a transaction and "
                  f"{passed_over_why(statement)}" for statement in self.passed_over]
        for change in self.changes:
            if change.action == "removed" and (change.table, change.name) in told:
                continue
            if change.kind == "table" and change.action == "removed" and (change.name, None) in told:
                continue
            lines.append(f"{prefix}: {change.describe()}")
        lines = lines or [f"{prefix}: no schema or data change"]
        return lines + (self.locks.lines(prefix) if self.locks is not None else [])

    def loss_lines(self) -> list[str]:
        """Only what the step destroys: the lines a confirmation shows and compares."""
        prefix = f"{self.version} {self.direction}"
        return [f"{prefix}: {impact.describe()}" for impact in self.impact if impact.loses_data]

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
            "sql": list(self.sql),
            "output": self.output,
            "lines": self.describe(),
            "error": None if self.error is None else {"type": type(self.error).__name__, "message": str(self.error)},
            "skipped": self.skipped,
            "passed_over": list(self.passed_over),
            **(self.locks.to_json() if self.locks is not None
               else {"locks": [], "rewrites": [], "findings": [], "rebuilds": []}),
        }


@dataclass
class Preview:
    """A plan as it ran inside one transaction, step by step, up to and including a failure."""

    plan: Plan
    steps: list[PreviewStep] = field(default_factory=list)
    #: Whether the transaction was committed (a real run whose loss, if any, was accepted).
    committed: bool = False
    duration_ms: float = 0.0
    #: SQLite: milliseconds from ``BEGIN IMMEDIATE`` to ``COMMIT``/``ROLLBACK``: no other writer could write.
    write_lock_ms: float | None = None
    #: PostgreSQL: the ACCESS EXCLUSIVE locks on tables holding rows that this preview held longer than the lock
    #: timeout, each ``{"relation", "rows", "taken_by", "held_ms", "text"}``: a preview takes the run's locks, so
    #: every reader of those tables waited for it (``postgresql.locks.attach``).
    held_exclusive: list[dict] = field(default_factory=list)

    @property
    def error(self) -> Exception | None:
        """The error the run stopped with; ``None`` when every step passed."""
        return next((s.error for s in self.steps if s.error is not None), None)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def loses_data(self) -> bool:
        return any(step.loses_data for step in self.steps)

    @property
    def unchecked(self) -> list[str]:
        """Versions whose loss is not fully known: not run in the preview (``transactional = False``), or a
        table or column they drop went uncounted (PostgreSQL, ``DataImpact.counted``)."""
        return [step.version for step in self.steps if step.unchecked]

    @property
    def not_previewed(self) -> list[str]:
        """Versions the preview could not run (``transactional = False``, and what needs them first)."""
        return [step.version for step in self.steps if is_left_out(step.skipped)]

    @property
    def not_run(self) -> list[str]:
        """Versions of the plan never reached because an earlier step failed."""
        return [step.version for step in self.plan.steps[len(self.steps):]]

    def loss_lines(self) -> list[str]:
        return [line for step in self.steps for line in step.loss_lines()]

    def rebuilds(self) -> list[dict]:
        """SQLite: every table the plan rebuilt, with its rows, in plan order (``StepLocks.rebuilt``)."""
        return [rebuild for step in self.steps if step.locks is not None for rebuild in step.locks.rebuilt or ()]

    def describe(self) -> list[str]:
        lines = [line for step in self.steps for line in step.describe()]
        if self.not_run:
            lines.append(f"not run (the plan stops at the failure): {', '.join(self.not_run)}")
        return lines + [held["text"] for held in self.held_exclusive]

    def to_json(self) -> dict[str, Any]:
        """The documented shape (see the module docstring)."""
        return {
            "format": FORMAT,
            "direction": self.plan.direction,
            "target": self.plan.target,
            "cascade": self.plan.cascade,
            "committed": self.committed,
            "duration_ms": round(self.duration_ms, 3),
            "ok": self.ok,
            "loses_data": self.loses_data,
            "unchecked": self.unchecked,
            "steps": [step.to_json() for step in self.steps],
            "not_run": self.not_run,
            "write_lock_ms": None if self.write_lock_ms is None else round(self.write_lock_ms, 3),
            "held_exclusive": [dict(held) for held in self.held_exclusive],
            "lines": self.describe(),
        }
