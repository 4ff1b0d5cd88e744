"""One database's run: its plan from its own ledger, through the single-database run path, as an outcome.

``run_member`` makes the plan (``planner.plan``) and hands it to the
member's engine's runner exactly as ``apm migrate`` does: through the
preview (``PlanRunner.preview``: the whole plan in one watched transaction,
committed only if it destroys nothing or what it destroys was confirmed),
with the backup taken under the lock before a rollback. Nothing here
re-implements a step. A database's own problem never raises: it is the
outcome, with its one-line error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.fleet.members import Member

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.plan import Plan

APPLIED = "applied"
ROLLED_BACK = "rolled back"
NOTHING_TO_DO = "nothing to do"
FAILED = "failed"
SKIPPED = "skipped"
NOT_STARTED = "not started"
#: ``--dry-run`` and ``apm fleet plan --rehearse``: the plan ran in a transaction that was rolled back.
REHEARSED = "rehearsed"

SUCCEEDED = frozenset({APPLIED, ROLLED_BACK, NOTHING_TO_DO})


@dataclass(frozen=True)
class Request:
    """What to do to every database: what ``apm migrate`` takes, minus the database."""

    target: str | None = None
    rollback: str | None = None
    cascade: bool = False
    to: str | None = None
    dry_run: bool = False
    sql: bool = False
    yes: bool = False
    backup: bool = True
    busy_timeout: float = 30.0
    ledger_schema: str = "public"
    backup_dir: str | None = None
    keep_backups: int | None = None

    def plan(self, catalog: Catalog, entries: dict) -> Plan:
        """This database's plan, from its own ledger (raises the planner's refusals)."""
        from planner.plan import apply_plan, rollback_plan, to_plan

        if self.to is not None:
            return to_plan(catalog, entries, self.to)
        if self.rollback is not None:
            return rollback_plan(catalog, entries, self.rollback, cascade=self.cascade)
        return apply_plan(catalog, entries, target=self.target)

    def flags(self) -> list[str]:
        """The request as ``apm migrate`` options, for the command that retries one database alone."""
        flags: list[str] = []
        if self.to is not None:
            flags += ["--to", self.to]
        elif self.rollback is not None:
            flags += ["--rollback", self.rollback] + (["--cascade"] if self.cascade else [])
        elif self.target is not None:
            flags += ["--target", self.target]
        if not self.backup:
            flags.append("--no-backup")
        return flags

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "rollback": self.rollback, "cascade": self.cascade, "to": self.to,
                "backup": self.backup}


@dataclass
class MemberOutcome:
    """How one database's run ended: the outcome, the steps it ran, and the one-line error if it did not."""

    member: Member
    outcome: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    #: What the plan destroys (a rehearsal, or a run whose loss was not confirmed): the lines to confirm.
    loss: list[str] = field(default_factory=list)
    #: Rows and values the plan destroys, summed over its steps (for the fleet's total).
    lost: int = 0
    #: Whether the outcome is "not confirmed": the loss above needs --yes or a person's yes.
    unconfirmed: bool = False
    backup: str | None = None
    duration_ms: float = 0.0
    #: The SQL each step ran (``sql``), version -> statements.
    sql: dict[str, list[str]] = field(default_factory=dict)
    phase: str = ""

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCEEDED

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"db": self.member.display, "outcome": self.outcome, "steps": self.steps,
                                    "error": self.error, "duration_ms": round(self.duration_ms, 3)}
        if self.loss:
            document["loses"] = self.loss
        if self.backup:
            document["backup"] = self.backup
        if self.sql:
            document["sql"] = self.sql
        return document

    def to_record(self) -> dict[str, Any]:
        """The journal's line: the JSON, plus the member's key (its identity across runs)."""
        return {**self.to_json(), "key": self.member.key, "phase": self.phase}


# --------------------------------------------------------------------------
# One database (runs in a worker process, or here with jobs=1)
# --------------------------------------------------------------------------

#: The catalog of a worker process: set before the fork and inherited, never pickled (nor loaded again).
worker_catalog: Catalog | None = None


def run_member(member: Member, request: Request, catalog: Catalog | None = None,
               confirmed: list[str] | None = None) -> MemberOutcome:
    """Run ``request`` on one database; never raises for a database's own problem (it is the outcome)."""
    from planner.errors import MigrationError, NotApplied

    catalog = catalog if catalog is not None else worker_catalog
    assert catalog is not None
    started = time.perf_counter()
    outcome = MemberOutcome(member, FAILED)
    try:
        engine = member.engine(busy_timeout=request.busy_timeout, ledger_schema=request.ledger_schema,
                               backup_dir=Path(request.backup_dir) if request.backup_dir else None)
        if not member.on_server and not engine.exists():
            outcome.error = f"{member.display} does not exist; `apm migrate --db {member.display}` creates it"
            return outcome
        try:
            plan = request.plan(catalog, engine.applied())
        except NotApplied:
            outcome.outcome = NOTHING_TO_DO  # a rollback of what this database never applied
            return outcome
        if not plan:
            outcome.outcome = NOTHING_TO_DO
            return outcome
        _run_plan(engine, catalog, plan, request, outcome, confirmed)
    except MigrationError as error:
        outcome.outcome, outcome.error = FAILED, one_line(error)
    except Exception as error:  # a database's driver error must not end the fleet: it is this database's row
        outcome.outcome, outcome.error = FAILED, one_line(error, unexpected=True)
    finally:
        outcome.duration_ms = (time.perf_counter() - started) * 1000
    return outcome


def _run_plan(engine, catalog: Catalog, plan: Plan, request: Request, outcome: MemberOutcome,
              confirmed: list[str] | None) -> None:
    """The plan through the preview, as ``apm migrate`` runs it: commit what loses nothing or was confirmed."""
    from planner.plan import segments

    replan = lambda ledger: request.plan(catalog, ledger)  # noqa: E731 (planned again inside the lock)
    creates = all(step.direction == "apply" for step in plan.steps)
    runner = engine.runner(catalog=catalog, create=creates)
    if request.dry_run:
        preview = runner.preview(plan, make_plan=replan, accept=None, capture_sql=request.sql)
        _note_preview(outcome, preview)
        outcome.steps = [{"version": s.version, "description": s.description, "direction": s.direction,
                          "status": s.status, "duration_ms": round(s.duration_ms, 3)} for s in preview.steps]
        outcome.outcome = FAILED if preview.error is not None else REHEARSED
        if preview.error is not None:
            outcome.error = f"{one_line(preview.error)} (found by the preview: nothing was committed)"
        return
    outside = [step.version for step in plan.steps if not step.migration.transactional]
    if outside and not request.yes:
        outcome.outcome, outcome.unconfirmed = SKIPPED, True
        outcome.error = (f"{', '.join(outside)} run(s) outside any transaction (transactional = False), where "
                         f"loss cannot be checked; nothing was changed. Review it, then re-run with --yes")
        return
    backup = _Backup(engine, request) if request.backup and any(s.direction == "rollback" for s in plan.steps) \
        else None
    parts = segments(plan) if outside else [plan]
    done: list[dict[str, Any]] = []
    for part in parts:
        if not part.steps[0].migration.transactional:
            try:  # outside any transaction: nothing can preview it, so --yes was required above
                result = runner.migrate(lambda _ledger, part=part: part, plan=part, before=backup)
            except Exception as error:
                outcome.outcome, outcome.error = FAILED, one_line(error) + (
                    f" (committed before it: {', '.join(d['version'] for d in done)})" if done else "")
                break
            done += [{"version": s.version, "description": s.migration.description,
                      "status": _status(s.direction), "duration_ms": None} for s in result.done]
            continue

        def accept(preview, confirmed=confirmed) -> bool:
            if confirmed is not None:
                return preview.loss_lines() == confirmed
            return request.yes or not preview.loses_data

        preview = runner.preview(part, make_plan=replan if len(parts) == 1 else None, accept=accept,
                                 capture_sql=request.sql, before=backup)
        _note_preview(outcome, preview)
        if preview.error is not None:
            outcome.outcome = FAILED
            outcome.error = one_line(getattr(preview.error, "failure", None) or preview.error) + (
                "; nothing was committed" if not done else f"; this part was rolled back (committed before it: "
                                                           f"{', '.join(d['version'] for d in done)})")
            break
        if not preview.committed:
            outcome.outcome, outcome.unconfirmed = SKIPPED, True
            what = "the database changed meanwhile: it now destroys " if confirmed is not None else "destroys "
            outcome.error = f"this plan {what}{'; '.join(preview.loss_lines())}; nothing was committed. " \
                            f"Re-run with --yes to proceed"
            break
        done += [{"version": s.version, "description": s.description,
                  "status": "skipped" if s.skipped else _status(s.direction),
                  "duration_ms": round(s.duration_ms, 3)} for s in preview.steps]
    else:
        outcome.outcome = ROLLED_BACK if plan.direction == "rollback" else APPLIED
    outcome.steps = done
    if backup is not None and backup.path is not None:
        if outcome.outcome in SUCCEEDED:
            outcome.backup = str(backup.path)
            if request.keep_backups:
                engine.prune_backups(request.keep_backups, Path(request.backup_dir) if request.backup_dir else None)
        elif not done:
            backup.path.unlink(missing_ok=True)  # nothing changed: a backup of it is only clutter


def _status(direction: str) -> str:
    return "applied" if direction == "apply" else "rolled_back"


def _note_preview(outcome: MemberOutcome, preview) -> None:
    outcome.loss = preview.loss_lines()
    outcome.lost = sum(i.count for step in preview.steps for i in step.impact if i.loses_data)
    if preview.steps and any(step.sql for step in preview.steps):
        outcome.sql.update({f"{s.version} {s.direction}": list(s.sql) for s in preview.steps if s.sql})


class _Backup:
    """The backup before a rollback, taken by the runner once it holds the lock (as ``apm migrate`` does)."""

    def __init__(self, engine, request: Request):
        self.engine, self.request = engine, request
        self.path: Path | None = None

    def __call__(self) -> None:
        if self.path is None:
            folder = Path(self.request.backup_dir) if self.request.backup_dir else None
            self.path = self.engine.backup(folder)


def one_line(error: BaseException, *, unexpected: bool = False) -> str:
    """An error as one line, any password masked."""
    from planner.engines.urls import redact

    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return redact(f"{type(error).__name__}: {line}" if unexpected else line)
