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
    from planner.locks import LockPolicy, LockSettings
    from planner.plan import Plan

APPLIED = "applied"
ROLLED_BACK = "rolled back"
NOTHING_TO_DO = "nothing to do"
FAILED = "failed"
SKIPPED = "skipped"
NOT_STARTED = "not started"
#: ``--dry-run`` and ``apm fleet plan --rehearse``: the plan ran in a transaction that was rolled back.
REHEARSED = "rehearsed"
#: Lock findings at or above the gate, not accepted (``allow``, ``--allow``): nothing was committed.
REFUSED = "refused"

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
    #: PostgreSQL: how long a step may wait for a lock, and the retries (``planner.locks.LockSettings``).
    locks: LockSettings | None = None
    #: Which lock findings stop a run (``planner.locks.LockPolicy``), as ``apm migrate`` decides it.
    lock_policy: LockPolicy | None = None

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
        for code in self.lock_policy.allowed if self.lock_policy else ():
            flags += ["--allow", code]
        return flags

    def to_json(self) -> dict[str, Any]:
        """The whole request, as the journal keeps it for ``--resume`` (nothing in it holds a password)."""
        locks = self.locks
        policy = self.lock_policy
        return {"target": self.target, "rollback": self.rollback, "cascade": self.cascade, "to": self.to,
                "backup": self.backup, "yes": self.yes, "sql": self.sql, "busy_timeout": self.busy_timeout,
                "lock_timeout": locks.lock_timeout if locks else None,
                "statement_timeout": locks.statement_timeout if locks else None,
                "lock_retries": locks.retries if locks else None,
                "allow": list(policy.allowed) if policy else []}


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
    from planner.errors import MigrationError, NotApplied

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
    """The plan as ``apm migrate`` runs it (``cli.previewed``): each transactional part previewed and committed
    only if it destroys nothing or what it destroys was confirmed, and no lock finding stops it; each
    ``transactional = False`` step checked statement by statement (``planner.outside``)."""
    from planner.errors import OutsideStepLocked, OutsideStepStopped
    from planner.locks import LockPolicy, gating
    from planner.plan import segments

    policy = request.lock_policy or LockPolicy()

    def findings(preview) -> list[str]:
        return [f"{version}: {finding.code} on {finding.relation} ({finding.level})"
                for version, finding in gating(policy, preview.steps)]

    replan = lambda ledger: request.plan(catalog, ledger)  # noqa: E731 (planned again inside the lock)
    creates = all(step.direction == "apply" for step in plan.steps)
    runner = engine.runner(catalog=catalog, create=creates)
    if request.dry_run:
        preview = runner.preview(plan, make_plan=replan, accept=None, capture_sql=request.sql)
        _note_preview(outcome, preview)
        outcome.lock_findings = findings(preview)
        outcome.steps = [{"version": s.version, "description": s.description, "direction": s.direction,
                          "status": s.status, "duration_ms": round(s.duration_ms, 3)} for s in preview.steps]
        outcome.outcome = FAILED if preview.error is not None else REHEARSED
        if preview.error is not None:
            outcome.error = f"{one_line(preview.error)} (found by the preview: nothing was committed)"
        return
    outside = any(not step.migration.transactional for step in plan.steps)
    backup = _Backup(engine, request) if request.backup and any(s.direction == "rollback" for s in plan.steps) \
        else None
    parts = segments(plan) if outside else [plan]
    done: list[dict[str, Any]] = []

    def before_it() -> str:
        return f"committed before it: {', '.join(d['version'] for d in done)}"

    for part in parts:
        if not part.steps[0].migration.transactional:
            answers = _OutsideAnswers(request.yes, confirmed)
            try:  # checked statement by statement as it runs: what destroys nothing runs, the rest is confirmed
                result = runner.migrate(lambda _ledger, part=part: part, plan=part, before=backup,
                                        confirm_outside=answers)
            except OutsideStepLocked as stopped:  # lock findings not accepted: refused, as a previewed part's
                outcome.outcome = REFUSED
                outcome.lock_findings = [f"{stopped.version}: {f.code} on {f.relation} ({f.level})"
                                         for f in stopped.findings]
                outcome.error = one_line(stopped) + (f" ({before_it()})" if done else "")
                break
            except OutsideStepStopped as stopped:
                outcome.outcome, outcome.unconfirmed = SKIPPED, True
                outcome.loss = list(stopped.lines)
                outcome.error = one_line(stopped) + (f" ({before_it()})" if done else "")
                break
            except Exception as error:
                outcome.outcome, outcome.error = FAILED, one_line(error) + (f" ({before_it()})" if done else "")
                break
            finally:
                outcome.destroyed += answers.destroyed
            done += [{"version": s.version, "description": s.migration.description,
                      "status": _status(s.direction), "duration_ms": None} for s in result.done]
            continue

        def accept(preview, confirmed=confirmed) -> bool:
            if findings(preview):
                return False  # lock findings are never confirmed by --yes (docs/locks.md)
            if confirmed is not None:  # a part destroys part of what was shown, never more
                return set(preview.loss_lines()) <= set(confirmed)
            return request.yes or not preview.loses_data

        preview = runner.preview(part, make_plan=replan if len(parts) == 1 else None, accept=accept,
                                 capture_sql=request.sql, before=backup)
        _note_preview(outcome, preview)
        unchanged = f"this part was rolled back ({before_it()})" if done else "nothing was committed"
        if preview.error is not None:
            outcome.outcome = FAILED
            outcome.error = f"{one_line(getattr(preview.error, 'failure', None) or preview.error)}; {unchanged}"
            break
        if not preview.committed:
            outcome.lock_findings = findings(preview)
            if outcome.lock_findings:
                outcome.outcome = REFUSED
                outcome.error = f"lock findings stop this plan ({'; '.join(outcome.lock_findings)}); {unchanged}"
                break
            outcome.outcome, outcome.unconfirmed = SKIPPED, True
            what = "the database changed meanwhile: it now destroys " if confirmed is not None else "destroys "
            outcome.error = f"this plan {what}{'; '.join(preview.loss_lines())}; {unchanged}"
            break
        if preview.loses_data:
            outcome.destroyed += preview.loss_lines()
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


class _OutsideAnswers:
    """``planner.outside.Confirmation`` for a fleet's database: ``--yes``, or what a person confirmed before.

    A worker has no terminal: a statement destroying data that nothing
    confirmed stops the step (``OutsideStepStopped``); the fleet shows its
    loss, asks once, and runs the database again with those lines confirmed.
    """

    def __init__(self, yes: bool, confirmed: list[str] | None):
        self.yes, self.confirmed = yes, set(confirmed or ())
        self.destroyed: list[str] = []

    def accept(self, loss) -> bool:
        return self.yes or (bool(loss.lines) and set(loss.lines) <= self.confirmed)

    def ask(self, loss) -> bool:
        return self.accept(loss)

    def committed(self, loss) -> None:
        self.destroyed += loss.lines


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

    # An error's text is its fact: advice for a one-database command (``--db``) is the command's to add.
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return redact(f"{type(error).__name__}: {line}" if unexpected else line)
