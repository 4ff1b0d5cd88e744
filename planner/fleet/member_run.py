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
from planner.request import Request  # noqa: F401 (what to do to every database: named from here too)

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
#: The request was refused, nothing run: by the planner (``PlanError``: a rollback through a migration without a
#: downgrade, with applied dependents, an inconsistent history; ``apm migrate`` exits 4), or by lock findings at
#: or above the gate that nothing accepted (``allow``, ``--allow``; exit 12). Not a failure: nothing ran and
#: failed; yet not a success either, so ``--resume`` runs it again.
REFUSED = "refused"

SUCCEEDED = frozenset({APPLIED, ROLLED_BACK, NOTHING_TO_DO})


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
    #: What this run destroyed, as confirmed (``--yes`` or a person), committed.
    destroyed: list[str] = field(default_factory=list)
    #: The lock findings that stop (``refused``) or would stop (a rehearsal) this plan: ``0009: code on t (error)``.
    lock_findings: list[str] = field(default_factory=list)
    backup: str | None = None
    duration_ms: float = 0.0
    #: The SQL each step ran (``sql``), version -> statements.
    sql: dict[str, list[str]] = field(default_factory=dict)
    phase: str = ""

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCEEDED

    @property
    def plan_refused(self) -> bool:
        """Refused by the planner (``apm migrate``'s exit 4), as opposed to by lock findings (exit 12)."""
        return self.outcome == REFUSED and not self.lock_findings

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"db": self.member.display, "outcome": self.outcome, "steps": self.steps,
                                    "error": self.error, "duration_ms": round(self.duration_ms, 3)}
        if self.loss:
            document["loses"] = self.loss
        if self.destroyed:
            document["destroyed"] = self.destroyed
        if self.lock_findings:
            document["lock_findings"] = self.lock_findings
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
    from planner.errors import MigrationError, NotApplied, PlanError

    catalog = catalog if catalog is not None else worker_catalog
    assert catalog is not None
    started = time.perf_counter()
    outcome = MemberOutcome(member, FAILED)
    try:
        engine = member.engine(busy_timeout=request.busy_timeout, ledger_schema=request.ledger_schema,
                               backup_dir=Path(request.backup_dir) if request.backup_dir else None)
        if hasattr(engine, "lock_settings"):  # what `apm migrate` gives its engine (cli.locking.configure)
            if request.locks is not None:
                engine.lock_settings = request.locks
            if request.lock_policy is not None:
                engine.lock_policy = request.lock_policy
        if not member.on_server and not engine.exists():
            # A fleet never creates a member; a run of it alone does (the command shows that run's line).
            outcome.error = f"{member.display} does not exist; a run of it alone creates it"
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
    except PlanError as error:  # refused before it ran, as `apm migrate` refuses it (exit 4): nothing changed
        outcome.outcome, outcome.error = REFUSED, one_line(error)
    except MigrationError as error:
        outcome.outcome, outcome.error = FAILED, one_line(error)
    except Exception as error:  # a database's driver error must not end the fleet: it is this database's row
        outcome.outcome, outcome.error = FAILED, one_line(error, unexpected=True)
    finally:
        outcome.duration_ms = (time.perf_counter() - started) * 1000
    return outcome


def _run_plan(engine, catalog: Catalog, plan: Plan, request: Request, outcome: MemberOutcome,
              confirmed: list[str] | None) -> None:
    """The plan as ``apm migrate`` runs it: ``planner.request.run``, its one result told as this database's outcome."""
    from planner import request as requests

    result = requests.run(engine, catalog, request, plan, confirmed=confirmed)
    for preview in [*result.previews, *([result.stopped] if result.stopped and not request.dry_run else [])]:
        _note_preview(outcome, preview)
    outcome.lock_findings = result.lock_findings
    outcome.destroyed = list(result.destroyed)
    if request.dry_run:
        preview = result.previews[0]
        outcome.steps = [{"version": s.version, "description": s.description, "direction": s.direction,
                          "status": s.status, "duration_ms": round(s.duration_ms, 3)} for s in preview.steps]
        outcome.outcome = _failed_or_refused(preview.error) if preview.error is not None else REHEARSED
        if preview.error is not None:
            outcome.error = f"{one_line(preview.error)} (found by the preview: nothing was committed)"
        return
    outcome.steps = [{"version": row.version, "description": row.description, "status": row.status,
                      "duration_ms": round(row.duration_ms, 3)} for row in result.steps]
    done = f"committed before it: {', '.join(row.version for row in result.steps)}" if result.steps else ""
    unchanged = f"this part was rolled back ({done})" if done else "nothing was committed"
    error = result.error or RuntimeError(result.status)  # set whenever a step failed or stopped
    if result.committed:
        outcome.outcome = ROLLED_BACK if plan.direction == "rollback" else APPLIED
        outcome.backup = str(result.backup) if result.backup is not None else None
    elif result.stopped is None:  # a step outside any transaction: stopped unconfirmed, refused (locks), or failed
        outcome.outcome = SKIPPED if result.status == requests.UNCONFIRMED else \
            REFUSED if result.status == requests.REFUSED else _failed_or_refused(error)
        outcome.unconfirmed = result.status == requests.UNCONFIRMED
        outcome.loss = list(result.loss) if outcome.unconfirmed else outcome.loss
        outcome.error = one_line(error) + (f" ({done})" if done else "")
    elif result.status == requests.FAILED:
        outcome.outcome = _failed_or_refused(getattr(error, 'failure', None) or error)
        outcome.error = f"{one_line(getattr(error, 'failure', None) or error)}; {unchanged}"
    elif result.status == requests.REFUSED:
        outcome.outcome = REFUSED
        outcome.error = f"lock findings stop this plan ({'; '.join(outcome.lock_findings)}); {unchanged}"
    else:
        outcome.outcome, outcome.unconfirmed = SKIPPED, True
        # Changed: what was confirmed for this part is not what it destroys now. A later part's loss is a new question.
        what = "the database changed meanwhile: it now destroys " if result.status == requests.CHANGED else "destroys "
        outcome.error = f"this plan {what}{'; '.join(result.loss)}; {unchanged}"


def _failed_or_refused(error: BaseException) -> str:
    """``refused`` for the planner's refusal found inside the lock (the ledger changed meanwhile), as ``apm
    migrate`` exits 4 for it; ``failed`` for anything else."""
    from planner.errors import PlanError

    return REFUSED if isinstance(error, PlanError) else FAILED


def _note_preview(outcome: MemberOutcome, preview) -> None:
    outcome.loss = preview.loss_lines()
    outcome.lost = sum(i.count for step in preview.steps for i in step.impact if i.loses_data)
    if preview.steps and any(step.sql for step in preview.steps):
        outcome.sql.update({f"{s.version} {s.direction}": list(s.sql) for s in preview.steps if s.sql})


def one_line(error: BaseException, *, unexpected: bool = False) -> str:
    """An error as one line, any password masked."""
    from planner.urls import redact

    # An error's text is its fact: advice for a one-database command (``--db``) is the command's to add.
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return redact(f"{type(error).__name__}: {line}" if unexpected else line)
