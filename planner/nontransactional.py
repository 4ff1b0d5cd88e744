"""Migrations that run outside a transaction (``transactional = False``), and how to find one that was cut short.

SQLite refuses ``VACUUM`` (and ignores some PRAGMAs) inside a transaction, so
such a migration cannot commit together with its ledger row: the session
logs a ``started`` row first, runs the migration in autocommit, then records
it. A ``started`` row with no later ``ok`` row for the same version (an apply,
a rollback or a mark) means the run stopped in between (a crash, a kill, a failure halfway): some of
its statements may have taken effect while the ledger says nothing happened.
``interrupted_findings`` is the doctor's check for exactly that.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from planner.errors import ExecutionError

#: The log outcome written before a non-transactional step runs (beside ``ok``, ``failed``, ``skipped``).
STARTED = "started"
_RUNS_OUTSIDE = "transactional = False: runs outside a transaction"


def started_detail() -> str:
    """The ``started`` row's note: what it means, and which process runs the step (``holder`` reads it back)."""
    import os
    import socket

    return f"{_RUNS_OUTSIDE} (pid {os.getpid()} on {socket.gethostname()})"


def holder(entries: list) -> str | None:
    """The process still running this version's step outside a transaction, as ``pid N on host``; ``None`` if none.

    ``entries`` is the version's log, oldest first. Its newest row is a
    ``started`` one while the step runs; a process of this machine that is
    gone (killed, crashed) holds nothing, and its row is the trace ``doctor``
    reports. A process of another machine cannot be asked: it is taken as
    running.
    """
    import re
    import socket

    from planner.partials import running

    if not entries or entries[-1].outcome != STARTED:
        return None
    found = re.search(r"\(pid (\d+) on (.+)\)$", entries[-1].detail or "")
    if found is None:
        return None  # written before runners said who they were: judged by doctor, not waited for
    pid, host = int(found.group(1)), found.group(2)
    if host == socket.gethostname() and not running(pid):
        return None
    return f"pid {pid} on {host}"

if TYPE_CHECKING:
    from planner.lint import Finding


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


def interrupted_findings(conn: sqlite3.Connection) -> list[Finding]:
    """One error per non-transactional step whose ``started`` row has no later ``ok`` row, with what to check.

    Any later ``ok`` row for the version settles it (a re-run, or a mark
    once someone checked the schema); a later ``started`` row is judged on its own.
    """
    from planner.ledger import LOG_TABLE

    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LOG_TABLE,)).fetchone():
        return []
    return findings_for(conn.execute(interrupted_query(LOG_TABLE), (STARTED, STARTED)).fetchall())


def findings_for(rows: list) -> list[Finding]:
    """The doctor's finding for each ``(version, action, at, failure detail)`` row of ``interrupted_query``."""
    from planner.lint import ERROR, Finding

    findings = []
    for version, action, at, failure in rows:
        how = f"failed ({failure})" if failure else "was interrupted (no outcome was ever logged)"
        undo = "upgrade" if action == "apply" else "downgrade"
        done = "--mark-applied" if action == "apply" else "--mark-rolled-back"
        again = "apm migrate" if action == "apply" else f"apm migrate --rollback {version}"
        findings.append(Finding(
            ERROR, "interrupted-non-transactional", version,
            f"migration {version} runs outside a transaction (transactional = False); its {action} started at "
            f"{at} and {how}, so the ledger does not record it although some of its statements may have "
            f"taken effect. Check the schema against its {undo}(): if every statement took effect, record it; "
            f"if none did, run it again; if some did, undo those by hand first",
            f"apm migrate {done} {version}  # only once the schema shows its whole {undo}; otherwise run "
            f"`{again}` again after undoing the partial change", "history"))
    return findings


# -- checking such a step statement by statement ---------------------------------------------------------
#
# Nothing can roll a step outside a transaction back, so nothing previews it as a whole. Its statements
# can be checked one at a time, though: every statement the engine allows inside a transaction runs in one
# of its own, watched by the preview's observer, and commits only when it destroys nothing or the loss is
# confirmed (the same statement alone in autocommit would have committed anyway, so the step's meaning is
# unchanged). The statements the engine refuses inside a transaction (``VACUUM``, ``CREATE INDEX
# CONCURRENTLY``) are judged by their kind: those that destroy nothing run, any other is asked about as
# unchecked. A dry run rehearses such a step inside the preview's transaction the same way, passing over
# the statements that change no schema or data and cannot run there, and stops at any other such statement.


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
        while True:
            try:
                with transaction():
                    lines = tuple(watched())
                    loss = StatementLoss(self.version, self.direction, short, lines)
                    if lines and lines != confirmed and not self.confirmation.accept(loss):
                        raise _Undo
            except _Undo:
                if not self.confirmation.ask(loss):
                    self._stop(short, lines)
                confirmed = lines
                continue
            except Exception as exc:
                if not self.rules.refused_in_transaction(exc):
                    raise
                self._alone(sql, short, execute)  # rolled back; it must run alone
                return
            if lines:
                self.confirmation.committed(loss)
            self.ran.append(short)
            return

    def _alone(self, sql: str, short: str, execute) -> None:
        """A statement the engine runs only outside a transaction: run if it destroys nothing, else asked about."""
        if not self.rules.destroys_nothing(sql):
            loss = StatementLoss(self.version, self.direction, short, (
                f"{self.version} {self.direction}: runs `{short}`, which cannot run inside a transaction, so what it "
                f"destroys cannot be checked",), checked=False)
            if not (self.confirmation.accept(loss) or self.confirmation.ask(loss)):
                self._stop(short, loss.lines)
            self.confirmation.committed(loss)
        execute()
        self.ran.append(short)

    def _stop(self, short: str, lines: tuple[str, ...]) -> None:
        from planner.errors import OutsideStepStopped

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

    def __init__(self, version: str, direction: str, rules: StatementRules):
        self.version, self.direction = version, direction
        self.rules = rules
        #: Statements not run by the dry run, since they change nothing it could show.
        self.passed_over: list[str] = []
        self.beyond: CannotRehearse | None = None

    def run(self, sql: str, execute) -> bool:
        """Run ``sql`` through ``execute`` (which raises what the engine raised); whether it ran."""
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
            return False
        self.beyond = CannotRehearse(self.version, self.direction, short)
        raise self.beyond
