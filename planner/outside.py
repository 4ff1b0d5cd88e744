"""A ``transactional = False`` step checked statement by statement, in a real run and in a dry run.

Nothing can roll a step outside a transaction back, so nothing previews it
as a whole (its ``started`` row, below, keeps the trace of one that was cut
short). Its statements can be checked one at a time, though:

* **A real run** (``StatementCheck``): every statement the engine allows
  inside a transaction runs in one of its own, watched by the preview's
  observer, and commits only when it destroys nothing or the loss is
  confirmed (``Confirmation``: the command's ``--yes``, or a person). Alone
  in autocommit it would have been its own transaction anyway, so the step
  means what it meant. The statements the engine refuses inside a
  transaction (``VACUUM``, ``CREATE INDEX CONCURRENTLY``) are judged by their
  kind (``StatementRules``): those that destroy nothing run, any other is
  asked about as unchecked. The step stops before the first statement whose
  loss is not confirmed (``OutsideStepStopped``, exit 7 in the command);
  what ran before it stays, and the error says so. Where the engine
  measures locks (PostgreSQL), the same transaction measures each
  statement's locks, and an outside-only statement is judged by its kind
  (``VACUUM FULL``: a rewrite; ``CONCURRENTLY``: nothing); findings that
  gate the run under the lock policy, and are not accepted (the migration's
  ``allow``, the run's ``--allow``), roll the statement back and are asked
  about, never confirmed by ``--yes`` (``OutsideStepLocked``, exit 12).
* **A dry run** (``Rehearsal``): the step runs inside the preview's
  transaction like any other, watched as usual, except the statements the
  engine refuses there: one that changes no schema or data is passed over
  and noted, any other stops the rehearsal (``CannotRehearse``) and the
  preview leaves out the step and what needs it.

The engines supply the rules and the connection wrappers the migration's
proxy is handed (``engines.sqlite.outside``, ``engines.postgresql.outside``);
the session's part (``perform_outside``, ``rehearse``) is in ``planner.session.Session``.

Migrations that run outside a transaction (``transactional = False``), and how to find one that was cut short.

SQLite refuses ``VACUUM`` (and ignores some PRAGMAs) inside a transaction, so
such a migration cannot commit together with its ledger row: the session
logs a ``started`` row first, runs the migration in autocommit, then records
it. A ``started`` row with no later ``ok`` row for the same version (an apply,
a rollback or a mark) means the run stopped in between (a crash, a kill, a failure halfway): some of
its statements may have taken effect while the ledger says nothing happened.
``findings_for`` turns what each engine's doctor reads (``interrupted_query``) into its findings.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from planner.errors import ExecutionError, OutsideStepLocked, OutsideStepStopped

if TYPE_CHECKING:
    from collections.abc import Callable

    from planner.findings import Finding


def one_line(sql: str) -> str:
    """A statement as messages quote it: one line, at most 80 characters."""
    return " ".join(sql.split()).rstrip(";")[:80]


@dataclass(frozen=True)
class StatementLoss:
    """What one statement of a ``transactional = False`` step would destroy, found before it commits.

    ``checked`` is False for a statement that can run only outside a
    transaction and is not known to destroy nothing: what it does could not
    be measured, so it is treated as loss until someone says otherwise.
    """

    version: str
    direction: str
    statement: str
    lines: tuple[str, ...]
    checked: bool = True


class Confirmation(Protocol):
    """Who says yes to a statement that destroys data in a step outside a transaction (the command supplies it)."""

    def accept(self, loss: StatementLoss) -> bool:
        """Asked with the statement's own transaction still open: True commits it at once (``--yes``)."""

    def ask(self, loss: StatementLoss) -> bool:
        """Asked once the statement was rolled back, holding no lock: True runs it again, False stops the step."""

    def committed(self, loss: StatementLoss) -> None:
        """The statement committed with this loss, as confirmed."""

    # Optional (called through getattr, so a confirmation without them refuses lock findings and shows none):
    # ``ask_locks(locks: StatementLocks) -> bool``, asked once the statement was rolled back: True runs it again
    # with those findings accepted (``--yes`` never does); ``locked(locks: StatementLocks) -> None``: the
    # statement ran with these findings (accepted, below the gate, or confirmed), for the command to show.


class _Locked(Exception):
    """Leave a statement's transaction by rolling it back: its lock findings stop it until someone accepts them."""

    def __init__(self, keys: tuple):
        self.keys = keys


@dataclass(frozen=True)
class StatementLocks:
    """The lock findings of one statement of a ``transactional = False`` step that stop it unless accepted.

    ``measured`` is False for a statement that can run only outside a
    transaction: its findings were judged by its kind, not read from the server.
    """

    version: str
    direction: str
    statement: str
    findings: tuple[Any, ...]  # planner.locks.LockFinding
    measured: bool = True

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(f"{self.version} {self.direction}: lock {finding.describe()}" for finding in self.findings)


class _Undo(Exception):
    """Leave a statement's transaction by rolling it back: its loss was not accepted."""


class CannotRehearse(ExecutionError):
    """A dry run met a statement that runs only outside a transaction and may change schema or data."""

    def __init__(self, version: str, direction: str, statement: str):
        self.statement = statement
        super().__init__(f"not previewed beyond `{statement}`: it runs only outside a transaction and may change "
                         f"schema or data, which the preview's transaction could not undo", version=version,
                         direction=direction)


class StatementRules:
    """What an engine says about one statement of a step outside a transaction (by its kind, before it runs)."""

    def outside_only(self, sql: str) -> bool:
        """Whether the engine refuses ``sql`` inside a transaction (``VACUUM``), known before sending it."""
        raise NotImplementedError

    def destroys_nothing(self, sql: str) -> bool:
        """For an outside-only statement: whether it cannot destroy data (``VACUUM``, ``CREATE INDEX CONCURRENTLY``)."""
        raise NotImplementedError

    def changes_nothing(self, sql: str) -> bool:
        """For an outside-only statement: whether it changes no schema and no data either, so a dry run may pass
        over it and go on."""
        raise NotImplementedError

    def stand_in(self, sql: str) -> str | None:
        """For an outside-only statement: the form a transaction accepts that changes the schema as it does
        (``DROP INDEX CONCURRENTLY`` → ``DROP INDEX``), for a dry run to go on with; ``None``: there is none."""
        return None

    def refused_in_transaction(self, error: BaseException) -> bool:
        """Whether ``error`` is the engine refusing a statement inside a transaction (one ``outside_only`` missed)."""
        raise NotImplementedError


class StatementCheck:
    """One ``transactional = False`` step's statements, checked and run one by one (a real run).

    The engine's connection wrapper calls ``run`` for every statement the
    migration executes, with ``execute`` (the statement on the real
    cursor), ``watched`` (that, inside an open transaction, watched: the
    loss lines) and ``transaction`` (a context manager: one transaction of
    the statement's own, rolled back on any exception). A refusal sticks:
    every later statement raises it again, and the session raises it after
    the migration even if its code swallowed it.
    """

    #: What the migration's proxy wraps while the step runs; each engine's subclass sets it.
    connection: Any

    def __init__(self, version: str, direction: str, rules: StatementRules, confirmation: Confirmation):
        self.version, self.direction = version, direction
        self.rules = rules
        self.confirmation = confirmation
        #: The statements that ran (and, outside any transaction, stay), in order.
        self.ran: list[str] = []
        self.stopped: Exception | None = None

    def run(self, sql: str, execute, watched, transaction) -> None:
        if self.stopped is not None:
            raise self.stopped
        short = one_line(sql)
        if self.rules.outside_only(sql):
            self._alone(sql, short, execute)
            return
        confirmed: tuple[str, ...] | None = None
        locks_confirmed: tuple = ()
        while True:
            try:
                with transaction():
                    lines = tuple(watched())
                    found = tuple(self.measured_findings())
                    keys = self._gating(found)
                    if keys and keys != locks_confirmed:
                        raise _Locked(keys)  # asked before any --yes: it never accepts a lock finding
                    loss = StatementLoss(self.version, self.direction, short, lines)
                    if lines and lines != confirmed and not self.confirmation.accept(loss):
                        raise _Undo
            except _Undo:
                if not self.confirmation.ask(loss):
                    self._stop(short, lines)
                confirmed = lines
                continue
            except _Locked as locked:
                self._ask_locks(StatementLocks(self.version, self.direction, short, found))
                locks_confirmed = locked.keys
                continue
            except Exception as exc:
                if not self.rules.refused_in_transaction(exc):
                    raise
                self._alone(sql, short, execute)  # rolled back; it must run alone
                return
            if lines:
                self.confirmation.committed(loss)
            self._tell_locks(StatementLocks(self.version, self.direction, short, found))
            self.ran.append(short)
            return

    # -- lock findings (an engine that measures locks overrides the two readings and sets ``policy``) ----------

    #: The run's ``planner.locks.LockPolicy``; ``None``: lock findings are neither read nor gated.
    policy: Any = None
    #: The codes the migration's ``allow`` accepts.
    allow: tuple[str, ...] = ()

    def measured_findings(self) -> list:
        """The lock findings of the statement just run by ``watched`` (in its transaction, still open)."""
        return []

    def judged_findings(self, sql: str) -> list:
        """The lock findings of an outside-only statement, judged by its kind before it runs."""
        return []

    def _gating(self, findings: tuple) -> tuple:
        """What of ``findings`` stops the statement: those at or above the gate that nothing accepted."""
        if self.policy is None or not findings:
            return ()
        self.policy.accept(list(findings), self.allow)
        return tuple((f.code, f.relation, f.level) for f in findings if self.policy.gates(f))

    def _ask_locks(self, locks: StatementLocks) -> None:
        """Asked with the statement rolled back (or not yet run); a refusal stops the step."""
        ask = getattr(self.confirmation, "ask_locks", None)
        gating = StatementLocks(locks.version, locks.direction, locks.statement,
                                tuple(f for f in locks.findings if self.policy.gates(f)), locks.measured)
        if ask is None or not ask(gating):
            self.stopped = OutsideStepLocked(self.version, self.direction, locks.statement, gating.lines,
                                             list(self.ran), measured=locks.measured,
                                             findings=gating.findings)
            raise self.stopped

    def _tell_locks(self, locks: StatementLocks) -> None:
        told = getattr(self.confirmation, "locked", None)
        if locks.findings and told is not None:
            told(locks)

    def _alone(self, sql: str, short: str, execute) -> None:
        """A statement the engine runs only outside a transaction: run if it destroys nothing, else asked about.

        Its lock findings, judged by its kind, are asked about first: nothing can measure it before it runs.
        """
        judged = StatementLocks(self.version, self.direction, short, tuple(self.judged_findings(sql)), False)
        if self._gating(judged.findings):
            self._ask_locks(judged)
        if not self.rules.destroys_nothing(sql):
            loss = StatementLoss(self.version, self.direction, short, (
                f"{self.version} {self.direction}: runs `{short}`, which cannot run inside a transaction, so what it "
                f"destroys cannot be checked",), checked=False)
            if not (self.confirmation.accept(loss) or self.confirmation.ask(loss)):
                self._stop(short, loss.lines)
            self.confirmation.committed(loss)
        execute()
        self._tell_locks(judged)
        self.ran.append(short)

    def _stop(self, short: str, lines: tuple[str, ...]) -> None:
        self.stopped = OutsideStepStopped(self.version, self.direction, short, lines, list(self.ran))
        raise self.stopped


class Rehearsal:
    """One ``transactional = False`` step rehearsed inside a dry run's transaction.

    Statements run there like any step's, watched, except those the engine
    runs only outside a transaction: one that changes no schema or data
    (``VACUUM``) is passed over and noted, any other stops the rehearsal
    (``CannotRehearse``, sticky like a refusal): the preview cannot go
    beyond the step.
    """

    #: What the migration's proxy wraps while the step is rehearsed; each engine's subclass sets it.
    connection: Any

    def __init__(self, version: str, direction: str, rules: StatementRules):
        self.version, self.direction = version, direction
        self.rules = rules
        #: Statements not run by the dry run, since they change nothing it could show.
        self.passed_over: list[str] = []
        #: The preview's observer (set by ``Session.rehearse``): it judges the passed-over statements' locks.
        self.observer: Any = None
        self.beyond: CannotRehearse | None = None

    def run(self, sql: str, execute, execute_sql: Callable[[str], object] | None = None) -> bool:
        """Run ``sql`` through ``execute`` (which raises what the engine raised); whether it ran.

        ``execute_sql`` runs other SQL the same way: an outside-only statement with a ``stand_in`` runs as
        that (its schema change is seen by later steps; its locks are judged by its own kind, not measured)."""
        if self.beyond is not None:
            raise self.beyond
        if not self.rules.outside_only(sql):
            try:
                execute()
                return True
            except Exception as exc:
                if not self.rules.refused_in_transaction(exc):
                    raise
        short = one_line(sql)
        if self.rules.changes_nothing(sql):
            self.passed_over.append(short)
            judge = getattr(self.observer, "passed_over", None)
            if judge is not None:  # its lock findings, judged by its kind (a VACUUM FULL rewrites its table)
                judge(sql)
            return False
        stand_in = self.rules.stand_in(sql) if execute_sql is not None else None
        if stand_in is not None and execute_sql is not None and _ran(execute_sql, stand_in):
            judge = getattr(self.observer, "passed_over", None)
            if judge is not None:  # its locks are CONCURRENTLY's (none), not the stand-in's
                judge(sql)
            return True
        self.beyond = CannotRehearse(self.version, self.direction, short)
        raise self.beyond


def _ran(execute_sql: Callable[[str], object], sql: str) -> bool:
    """Whether a stand-in ran; one that failed (the index a passed-over ``CREATE INDEX CONCURRENTLY`` did not
    build) stops the preview as the statement it stands in for would, rather than fail a migration that is right."""
    try:
        execute_sql(sql)
    except Exception:
        return False
    return True


#: The log outcome written before a non-transactional step runs (beside ``ok``, ``failed``, ``skipped``).
STARTED = "started"
_RUNS_OUTSIDE = "transactional = False: runs outside a transaction"


def started_detail() -> str:
    """The ``started`` row's note: what it means, and which process runs the step (``holder`` reads it back)."""
    return f"{_RUNS_OUTSIDE} (pid {os.getpid()} on {_host()})"


def _host() -> str:
    import socket  # start-up time: socket builds its enums at import, and only a step outside a transaction asks

    return socket.gethostname()


def holder(entries: list) -> str | None:
    """The process still running this version's step outside a transaction, as ``pid N on host``; ``None`` if none.

    ``entries`` is the version's log, oldest first. Its newest row is a
    ``started`` one while the step runs; a process of this machine that is
    gone (killed, crashed) holds nothing, and its row is the trace ``doctor``
    reports. A process of another machine cannot be asked: it is taken as
    running.
    """

    if not entries or entries[-1].outcome != STARTED:
        return None
    found = re.search(r"\(pid (\d+) on (.+)\)$", entries[-1].detail or "")
    if found is None:
        return None  # written before runners said who they were: judged by doctor, not waited for
    # start-up time: planner.backups (and glob) only for a step outside a transaction
    from planner.backups import running

    pid, host = int(found.group(1)), found.group(2)
    if host == _host() and not running(pid):
        return None
    return f"pid {pid} on {host}"



def interrupted_query(log_table: str, placeholder: str = "?") -> str:
    """The log rows of steps that started outside a transaction and never finished (both engines' SQL).

    Parameters: ``STARTED`` twice; ``placeholder`` is ``?`` (sqlite3) or ``%s`` (psycopg).
    """
    return (
        f"SELECT s.version, s.action, s.at, "
        f"       (SELECT detail FROM {log_table} f WHERE f.version = s.version AND f.action = s.action "
        f"          AND f.id > s.id AND f.outcome = 'failed' ORDER BY f.id LIMIT 1) "
        f"FROM {log_table} s WHERE s.outcome = {placeholder} AND NOT EXISTS ("
        f"  SELECT 1 FROM {log_table} o WHERE o.version = s.version "
        f"    AND o.id > s.id AND o.outcome IN ('ok', {placeholder})) ORDER BY s.id"
    )


def findings_for(rows: list) -> list[Finding]:
    """The doctor's finding for each ``(version, action, at, failure detail)`` row of ``interrupted_query``."""
    # start-up time: planner.outside runs without the findings' module until findings_for() needs it
    from planner.findings import ERROR, Finding, Remedy

    findings = []
    for version, action, at, failure in rows:
        how = f"failed ({failure})" if failure else "was interrupted (no outcome was ever logged)"
        undo = "upgrade" if action == "apply" else "downgrade"
        findings.append(Finding(
            ERROR, "interrupted-non-transactional", version,
            f"migration {version} runs outside a transaction (transactional = False); its {action} started at "
            f"{at} and {how}, so the ledger does not record it although some of its statements may have "
            f"taken effect. Check the schema against its {undo}(): if every statement took effect, record it; "
            f"if none did, run it again; if some did, undo those by hand first",
            Remedy("settle-outside-step", (action, version)), "history"))
    return findings
