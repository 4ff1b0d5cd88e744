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
from typing import TYPE_CHECKING

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
    from planner.lint import ERROR, Finding, Remedy

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
