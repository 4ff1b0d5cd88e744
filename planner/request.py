"""One request run on one database, as a real ``apm migrate`` runs it: one call in, one result out.

``apm migrate`` and every database of ``apm fleet migrate`` take this path.
The plan runs in one watched transaction (the runner's ``preview``, planned
again inside the lock) that commits only if it destroys nothing, or no more
than was confirmed, and no lock finding stops it; a plan holding
``transactional = False`` steps runs in parts (``planner.plan.segments``),
each such step alone, checked statement by statement (``planner.outside``).
What needs a person's answer is not asked here: the run stops, rolls back,
and its ``RunOutcome`` says what to confirm; the caller asks, then calls
again with the answer. Only a statement of a step outside any transaction
cannot wait (``ask_outside``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from planner import deferred_dataclass
from planner.errors import Interrupted, OutsideStepLocked, OutsideStepStopped

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.engines.base import Engine
    from planner.events import Event
    from planner.locks import LockPolicy, LockSettings
    from planner.outside import StatementLocks, StatementLoss
    from planner.plan import Plan
    from planner.preview import Preview

#: How a run ended (``RunOutcome.status``); ``RUNNING`` until it did (an ``Interrupted`` run stays so).
RUNNING = "running"
COMMITTED = "committed"
#: A dry run: the plan ran in one transaction that was rolled back.
REHEARSED = "rehearsed"
FAILED = "failed"
#: It destroys data nobody confirmed (``loss``): nothing of that part was committed.
UNCONFIRMED = "unconfirmed"
#: Lock findings at or above the gate, not accepted (``lock_findings``): nothing of that part was committed.
REFUSED = "refused"
#: What was confirmed (loss or lock findings) is no longer what the part does: another process committed meanwhile.
CHANGED = "changed"


@dataclass(frozen=True)
class Request:
    """What to do to a database: what ``apm migrate`` takes, minus the database."""

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
    #: ``--no-preview``: commit step by step without watching (``atomic``: all steps in one transaction).
    previewed: bool = True
    atomic: bool = False

    def plan(self, catalog: Catalog, entries: dict) -> Plan:
        """This database's plan, from its own ledger (raises the planner's refusals)."""
        # start-up time: planner.request runs without planner.plan until plan() needs it
        from planner.plan import apply_plan, rollback_plan, to_plan

        if self.to is not None:
            return to_plan(catalog, entries, self.to)
        if self.rollback is not None:
            return rollback_plan(catalog, entries, self.rollback, cascade=self.cascade)
        return apply_plan(catalog, entries, target=self.target)

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
class StepRow:
    """One step the run committed (or skipped): what the command lists and the JSON holds."""

    version: str
    description: str
    direction: str
    status: str  # "applied", "rolled_back" or "skipped"
    duration_ms: float
    output: str = ""
    reason: str | None = None
    #: A step outside a transaction: the lock findings its statements ran with (measured, or judged by kind).
    findings: list[dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "description": self.description, "status": self.status,
                "duration_ms": round(self.duration_ms, 3),
                **({"reason": self.reason} if self.status == "skipped" else {"output": self.output}),
                **({"findings": self.findings} if self.findings is not None else {})}


@dataclass
class RunOutcome:
    """Everything one run did: each part's preview, the steps committed, what was destroyed, why it stopped."""

    plan: Plan
    status: str = RUNNING
    steps: list[StepRow] = field(default_factory=list)
    #: The previews of the parts that committed, in order (a dry run: the one rolled back).
    previews: list[Preview] = field(default_factory=list)
    #: The preview that stopped the run (failed, unconfirmed, refused, changed), or the dry run's.
    stopped: Preview | None = None
    error: BaseException | None = None
    #: What the part that stopped destroys: the lines to confirm (``UNCONFIRMED``, ``CHANGED``).
    loss: list[str] = field(default_factory=list)
    #: The lock findings that stop the part (``REFUSED``, ``CHANGED``): ``0009: code on t (error)``.
    lock_findings: list[str] = field(default_factory=list)
    #: What this run destroyed, as confirmed (``--yes`` or a person), committed.
    destroyed: list[str] = field(default_factory=list)
    #: The lock findings steps outside a transaction ran with (accepted, below the gate, or asked), as lines.
    outside_locks: list[str] = field(default_factory=list)
    backup: Path | None = None
    #: Old backups removed once the run committed (``keep_backups``).
    pruned: list[Path] = field(default_factory=list)
    #: Whether the plan ran in parts (it holds ``transactional = False`` steps).
    in_parts: bool = False
    #: Whether the part that stopped is the first this call ran (an answer given for it no longer fits).
    first_part: bool = True

    @property
    def done(self) -> list[str]:
        """The versions committed (not skipped), in order."""
        return [row.version for row in self.steps if row.status != "skipped"]

    @property
    def committed(self) -> bool:
        return self.status == COMMITTED


@deferred_dataclass(frozen=True)
class BackupTaken:
    """The event: the backup before a rollback was written (it is deleted again if the run changes nothing)."""

    path: Path


@deferred_dataclass(frozen=True)
class PartEnded:
    """The event: one part of a plan in parts ended (committed, unless it is the one that stopped the run)."""

    preview: Preview | None  # a part of transactional steps; None for a step outside any transaction
    steps: list[StepRow]
    destroyed: list[str]  # what it destroyed, as confirmed, committed


#: What ``run`` reports as it goes: the runner's step events, and its own.
RunEvent = Union["Event", BackupTaken, PartEnded]


class _Backup:
    """The backup before a rollback: taken by the runner (``before``) once it holds the lock, at most once."""

    def __init__(self, engine: "Engine", folder: Path | None, path: Path | None = None,
                 on_event: Callable[[Any], None] | None = None):
        self.engine, self.folder, self.path, self.on_event = engine, folder, path, on_event

    def __call__(self) -> None:
        if self.path is None:
            self.path = self.engine.backups.take(self.folder)
            if self.path is not None and self.on_event is not None:
                self.on_event(BackupTaken(self.path))

    def discard(self) -> None:
        """Delete a copy whose run was rolled back: the next attempt takes its own, inside its own lock."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


class _Outside:
    """``planner.outside.Confirmation`` of a run: ``--yes``, lines confirmed before, else ``ask`` (a person).

    Lock findings of a statement outside a transaction are asked about as it runs (it cannot be rolled back
    and asked about later): accepted lines of an earlier call, else ``ask_locks``; ``--yes`` never accepts them.
    """

    def __init__(self, yes: bool, confirmed: Sequence[str] | None, ask: Callable[[StatementLoss], bool] | None,
                 outcome: RunOutcome, locks_accepted: Sequence[str] = (),
                 ask_locks: Callable[[StatementLocks], bool] | None = None):
        self.yes, self.confirmed, self._ask, self.outcome = yes, set(confirmed or ()), ask, outcome
        self.locks_accepted, self._ask_locks = set(locks_accepted), ask_locks
        #: Per version, the lock findings its statements ran with (a step's ``findings`` in ``--json``).
        self.findings: dict[str, list[dict[str, Any]]] = {}

    def accept(self, loss: StatementLoss) -> bool:
        return self.yes or (bool(loss.lines) and set(loss.lines) <= self.confirmed)

    def ask(self, loss: StatementLoss) -> bool:
        return self.accept(loss) or (self._ask is not None and self._ask(loss))

    def committed(self, loss: StatementLoss) -> None:
        self.outcome.destroyed += loss.lines

    def ask_locks(self, locks: StatementLocks) -> bool:
        if locks.lines and set(locks.lines) <= self.locks_accepted:
            return True
        return self._ask_locks is not None and self._ask_locks(locks)

    def locked(self, locks: StatementLocks) -> None:
        self.outcome.outside_locks += locks.lines
        self.findings.setdefault(locks.version, []).extend(
            {**finding.to_json(), "statement": locks.statement, "measured": locks.measured}
            for finding in locks.findings)


def gating_lines(policy: LockPolicy | None, preview: Preview) -> list[str]:
    """Lines for the lock findings of ``preview`` that stop the run (at or above the gate, not allowed)."""
    # start-up time: planner.request runs without planner.locks until gating_lines() needs it
    from planner.locks import LockPolicy, gating

    return [f"{version}: {finding.code} on {finding.relation} ({finding.level})"
            for version, finding in gating(policy or LockPolicy(), preview.steps)]


def run(engine: "Engine", catalog: Catalog, request: Request, plan: Plan | None = None, *,
        confirmed: Sequence[str] | None = None, locks_accepted: Sequence[str] = (),
        on_event: Callable[[RunEvent], None] | None = None,
        ask_outside: Callable[[StatementLoss], bool] | None = None,
        ask_outside_locks: Callable[[StatementLocks], bool] | None = None,
        after: RunOutcome | None = None, runner: Any = None, planned_from: dict | None = None) -> RunOutcome:
    """Run ``request`` on ``engine``'s database; the whole story in one ``RunOutcome``.

    ``plan`` is the plan already made (and shown); without it, it is made
    from the ledger. ``confirmed`` and ``locks_accepted`` answer the part
    that stopped the previous call (``after``): that part commits only if it
    destroys no more than was confirmed and meets no other lock finding;
    a later part is judged afresh. A step outside a transaction asks as it
    runs: ``ask_outside`` about a statement's loss, ``ask_outside_locks``
    about its lock findings. A step's failure is the outcome's ``error``;
    only ``Interrupted`` (Ctrl-C) is raised. ``runner`` is ``engine``'s runner
    when the caller made it already (``apm fleet migrate`` read the ledger through it).
    ``planned_from`` is the ledger ``plan`` was made from, as that runner read it: planning again inside
    the write lock from that very reading (the runner hands it back while no other connection has committed
    since) gives ``plan`` again, so it is not made twice.
    """
    # start-up time: planner.request runs without planner.plan until run() needs it
    from planner.plan import segments

    plan = plan if plan is not None else request.plan(catalog, engine.applied())
    outcome = after if after is not None else RunOutcome(plan)
    outcome.status, outcome.stopped, outcome.error, outcome.loss, outcome.lock_findings = RUNNING, None, None, [], []
    if runner is None:
        runner = engine.runner(catalog=catalog, create=all(step.direction == "apply" for step in plan.steps))
    if request.dry_run:  # the plan in one watched transaction, rolled back (--dry-run, plan --rehearse)
        outcome.stopped = preview = runner.preview(plan, make_plan=lambda ledger: request.plan(catalog, ledger),
                                                   on_event=on_event, capture_sql=request.sql)
        outcome.status, outcome.error = (FAILED if preview.error is not None else REHEARSED), preview.error
        outcome.previews, outcome.loss = [preview], preview.loss_lines()
        outcome.lock_findings = gating_lines(request.lock_policy, preview)
        return outcome
    folder = Path(request.backup_dir) if request.backup_dir else None
    wanted = request.backup and any(step.direction == "rollback" for step in plan.steps)
    backup = _Backup(engine, folder, outcome.backup, on_event) if wanted or outcome.backup is not None else None
    outcome.in_parts = outcome.in_parts or (request.previewed and any(not s.migration.transactional for s in plan))
    if outcome.in_parts and after is None:
        engine.check_integrity()  # each part commits on its own: a damaged file is found before the first
    parts = segments(plan) if outcome.in_parts else [plan]
    try:
        for number, part in enumerate(parts):
            outcome.first_part = number == 0
            answer, locks_answer = (confirmed, locks_accepted) if number == 0 else (None, ())
            if not request.previewed or not part.steps[0].migration.transactional:
                _alone(runner, catalog, request, part, outcome, backup, on_event, _Outside(
                    request.yes, answer, ask_outside, outcome, locks_answer, ask_outside_locks)
                    if request.previewed else None)
            else:
                replan = (lambda ledger: plan if ledger is planned_from else request.plan(catalog, ledger)) \
                    if len(parts) == 1 else None
                _previewed(runner, request, part, outcome, replan, backup, on_event, answer, locks_answer)
            if outcome.status != RUNNING:
                break
        else:
            outcome.status = COMMITTED
    finally:
        _settle_backup(outcome, backup, engine, request, folder)
    return outcome


def _alone(runner: Any, catalog: Catalog, request: Request, part: Plan, outcome: RunOutcome, backup: Any,
           on_event: Callable[[RunEvent], None] | None, answers: _Outside | None) -> None:
    """A step outside any transaction (exactly that part), or ``--no-preview`` (planned again as it runs)."""
    rows, destroyed = _Rows(outcome.steps, on_event, atomic=request.atomic), len(outcome.destroyed)
    replan = (lambda ledger: request.plan(catalog, ledger)) if not request.previewed else (lambda _ledger: part)
    try:
        runner.migrate(replan, rows.event, atomic=request.atomic, plan=part, before=backup, confirm_outside=answers)
    except OutsideStepLocked as stopped:  # its lock findings not accepted: refused, as a previewed part's are
        outcome.status, outcome.error = REFUSED, stopped
        outcome.lock_findings = [f"{stopped.version}: {f.code} on {f.relation} ({f.level})" for f in stopped.findings]
    except OutsideStepStopped as stopped:
        outcome.status, outcome.error, outcome.loss = UNCONFIRMED, stopped, list(stopped.lines)
    except Interrupted:
        raise
    except Exception as error:
        outcome.status, outcome.error = FAILED, error
        if request.atomic:  # its one transaction was rolled back: nothing it reported stays
            del outcome.steps[rows.start:]
    if answers is not None:
        for row in outcome.steps[rows.start:]:
            row.findings = answers.findings.get(row.version, [])
    if outcome.in_parts and on_event is not None:
        on_event(PartEnded(None, outcome.steps[rows.start:], outcome.destroyed[destroyed:]))


def _previewed(runner: Any, request: Request, part: Plan, outcome: RunOutcome, replan: Callable[[dict], Plan] | None,
               backup: Any, on_event: Callable[[RunEvent], None] | None, confirmed: Sequence[str] | None,
               locks_accepted: Sequence[str]) -> None:
    """One part in one watched transaction, committed only by the rules (no person is asked meanwhile)."""

    def accept(preview: Preview) -> bool:
        if not set(gating_lines(request.lock_policy, preview)) <= set(locks_accepted):
            return False  # --yes never accepts lock findings (docs/locks.md)
        if confirmed is not None:
            return set(preview.loss_lines()) <= set(confirmed)  # never more than was confirmed
        return request.yes or not preview.loses_data

    preview = runner.preview(part, make_plan=replan, accept=accept, capture_sql=request.sql, before=backup,
                             on_event=on_event)
    if not preview.committed:
        outcome.stopped, outcome.error, outcome.loss = preview, preview.error, preview.loss_lines()
        outcome.lock_findings = gating_lines(request.lock_policy, preview)
        outcome.status = _why_not(outcome, confirmed is not None, locks_accepted)
        return
    rows = [StepRow(s.version, s.description, s.direction, "skipped" if s.skipped else _status(s.direction),
                    s.duration_ms, s.output or "", s.skipped) for s in preview.steps]
    destroyed = preview.loss_lines() if preview.loses_data else []
    outcome.previews.append(preview)
    outcome.steps += rows
    outcome.destroyed += destroyed
    if outcome.in_parts and on_event is not None:
        on_event(PartEnded(preview, rows, destroyed))


def _why_not(outcome: RunOutcome, confirmed: bool, locks_accepted: Sequence[str]) -> str:
    """Why a part's preview did not commit: failed, lock findings, loss; ``CHANGED`` when an answer no longer fits."""
    if outcome.error is not None:
        return FAILED
    if not set(outcome.lock_findings) <= set(locks_accepted):
        return CHANGED if locks_accepted else REFUSED
    return CHANGED if confirmed else UNCONFIRMED


def _settle_backup(outcome: RunOutcome, backup: _Backup | None, engine: "Engine", request: Request,
                   folder: Path | None) -> None:
    """A backup of a run that changed nothing is only clutter; one that committed prunes the old ones."""
    if backup is None or backup.path is None:
        return
    if not outcome.steps and not outcome.committed and request.previewed:  # --no-preview told it as it was taken
        backup.discard()
        return
    outcome.backup = backup.path
    if outcome.committed and request.keep_backups and not outcome.pruned:
        outcome.pruned = list(engine.backups.prune(request.keep_backups, folder))


class _Rows:
    """The steps a run without a preview committed, from its events; ``--atomic``: kept only if the whole commits."""

    def __init__(self, rows: list[StepRow], on_event: Callable[[RunEvent], None] | None, *, atomic: bool):
        self.rows, self.start, self.on_event, self.atomic = rows, len(rows), on_event, atomic

    def event(self, event: Event) -> None:
        # start-up time: planner.request runs without planner.events until event() needs it
        from planner.events import Replanned, StepFinished, StepSkipped

        if isinstance(event, Replanned) and self.atomic:  # the attempt's one transaction was rolled back
            del self.rows[self.start:]
        elif isinstance(event, StepFinished):
            step = event.step
            self.rows.append(StepRow(step.version, step.migration.description, step.direction,
                                     _status(step.direction), event.duration_ms, event.output))
        elif isinstance(event, StepSkipped):
            step = event.step
            self.rows.append(StepRow(step.version, step.migration.description, step.direction, "skipped", 0, "",
                                     event.reason))
        if self.on_event is not None:
            self.on_event(event)


def _status(direction: str) -> str:
    return "applied" if direction == "apply" else "rolled_back"
