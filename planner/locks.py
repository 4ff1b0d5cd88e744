"""Locks and downtime, engine-free: how long a migration may wait for a lock, and what its locks cost.

A migration on a database that serves traffic hurts more often through
locks than through lost data: an ``ALTER TABLE`` waiting for its ACCESS
EXCLUSIVE lock queues every reader behind it for as long as it waits. So
each step's transaction runs with a ``lock_timeout`` (and, when asked, a
``statement_timeout``); when the lock timeout fires the step is rolled back
and tried again after a growing, jittered pause, ``lock_retries`` times
(``planner.engines.postgresql.lock_timeout`` does it on PostgreSQL). The readers
queued behind the waiting statement wait at most one lock timeout, then run;
what earlier statements of the attempt locked stays locked for as long as
they ran, so a retry first takes the locks the attempt was seen to need,
within the lock timeout, before it runs anything.

Defaults, chosen for a server with live traffic (docs/locks.md):

* ``lock_timeout`` **2s**: long enough for an ordinary short transaction
  to finish, short enough that a queue of readers behind the waiting
  statement costs them at most two seconds per wait.
* ``lock_retries`` **3** (four attempts), pauses of about 1, 2 and 4
  seconds (the lock timeout, doubled each time, at most 30 s, jittered to
  between half and all of it, so several runners do not retry in step).
* ``statement_timeout`` **off**: a backfill may rightly run for an hour;
  a limit is a choice for the project (config file, option, or migration).

This module also holds the lock *findings* the preview reports, and the
policy deciding which of them stop a run (see ``findings_policy``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from pathlib import Path
from typing import TYPE_CHECKING

from planner import deferred_dataclass
from planner.errors import CatalogError
from planner.findings import INFO, Finding, Remedy

if TYPE_CHECKING:
    from random import Random

#: Seconds; 0 means no limit.
DEFAULT_LOCK_TIMEOUT = 2.0
DEFAULT_STATEMENT_TIMEOUT = 0.0
DEFAULT_LOCK_RETRIES = 3
#: The longest pause between two attempts, in seconds.
MAX_BACKOFF = 30.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}
#: The largest duration PostgreSQL accepts for its timeouts (INT_MAX milliseconds, about 24.8 days).
MAX_DURATION = 2147483.647

DURATION_HELP = 'a duration such as "300ms", "5s", "2min" or "1h" ("0" or "off": no limit)'


def parse_duration(text: object) -> float:  # anything a migration file declares; only text passes
    """``"300ms"`` → 0.3 seconds; ``"0"``/``"off"`` → 0 (no limit). ``ValueError`` names what is accepted.

    A unit is required: PostgreSQL reads a bare ``5`` as milliseconds and a
    person usually means seconds, so a bare number is refused, not guessed.
    """
    if not isinstance(text, str):
        raise ValueError(f"must be {DURATION_HELP}, not {text!r}")
    stripped = text.strip().lower()
    if stripped in ("0", "off", "none"):
        return 0.0
    match = _DURATION.match(stripped)
    if match is None:
        raise ValueError(f"must be {DURATION_HELP}, not {text!r}")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than PostgreSQL allows (about 24 days); use \"off\" for no limit")
    if 0 < seconds < 0.001:
        raise ValueError(f"{text!r} is shorter than a millisecond, the smallest timeout PostgreSQL keeps")
    return seconds


def shown_duration(seconds: float) -> str:
    """``0.3`` → ``"300ms"``, ``2.0`` → ``"2s"``, ``0`` → ``"off"``: as the options spell it."""
    if seconds <= 0:
        return "off"
    if seconds < 1 or seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    return f"{int(seconds)}s"


def server_value(seconds: float) -> str:
    """The value for PostgreSQL's ``SET``: whole milliseconds, ``0`` for no limit."""
    return f"{round(seconds * 1000)}ms" if seconds > 0 else "0"


#: ``listener(version, attempt, attempts, pause, blocker, waited, note)``: told before each pause after a lock
#: timeout (the CLI prints a line): the migration, the attempt that timed out and how many there are, the
#: pause before the next, who held the lock (the engine's ``describe()``-able blocker, or ``None``), the
#: lock timeout that fired (a migration's own when it declares one), in seconds, and what the attempt held
#: meanwhile and what the next one does about it, in words.
RetryListener = Callable[[str, int, int, float, Any, float, str], None]
_retry_listener: RetryListener | None = None


def listen(listener: RetryListener | None) -> None:
    """Register the one listener told about each retry (``None``: nobody); the library never prints."""
    global _retry_listener
    _retry_listener = listener


def tell_retry(version: str, attempt: int, attempts: int, pause: float, blocker: Any, waited: float,
               note: str = "rolled back") -> None:
    """Tell the registered listener, if any, that a step is about to be tried again."""
    if _retry_listener is not None:
        _retry_listener(version, attempt, attempts, pause, blocker, waited, note)


@dataclass(frozen=True)
class LockSettings:
    """How long a step may wait for a lock, and run; how many times it is tried again after a lock timeout."""

    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    retries: int = DEFAULT_LOCK_RETRIES
    #: Where ``statement_timeout`` came from, as the caller names it (an option, the config file): a statement
    #: that runs past it says so, and what to raise.
    statement_timeout_from: str = ""

    @property
    def attempts(self) -> int:
        return self.retries + 1

    @property
    def lock_timeout_shown(self) -> str:
        return shown_duration(self.lock_timeout)

    def backoff(self, attempt: int, rng: Random | None = None) -> float:
        """Seconds to pause after failed attempt ``attempt`` (1-based): exponential, capped, with jitter.

        The base is the lock timeout itself (at least 0.1 s, at most 1 s): a
        short timeout is chosen for a busy table, where a short pause is as
        likely to find a gap as a long one. The jitter (half to all of the
        pause) keeps runners and application retries from colliding again.
        """
        import random  # start-up time: only a retry after a lock timeout jitters its pause

        base = min(1.0, max(0.1, self.lock_timeout or 1.0))
        pause = min(MAX_BACKOFF, base * 2 ** (attempt - 1))
        return pause * (rng or random).uniform(0.5, 1.0)


# -- findings: what a step's locks cost a live database -------------------------------------------

#: Each finding's code, and what it means (docs/locks.md says why each matters and the safe pattern).
CODES: dict[str, str] = {
    "index-not-concurrent": "an index built (or rebuilt by REINDEX) without CONCURRENTLY on a table that existed "
                            "before the plan",
    "set-not-null-scan": "SET NOT NULL on an existing table, scanning it under ACCESS EXCLUSIVE (no validated "
                         "CHECK (c IS NOT NULL) to prove it)",
    "constraint-not-valid-missing": "a foreign key or check added without NOT VALID, validated by scanning "
                                    "an existing table under its lock",
    "table-rewrite": "a table or index of the plan's past rewritten (a new file node): a type change, a volatile "
                     "default, SET LOGGED, CLUSTER, VACUUM FULL...",
    "access-exclusive-held": "ACCESS EXCLUSIVE on a large existing table held while later statements do work "
                             "under it (read or write its rows or another table's, build an index, rewrite, run "
                             "slowly)",
    "no-lock-timeout": "the step runs without a lock timeout, so it may queue every reader behind it",
    "validate-same-run": "VALIDATE CONSTRAINT (the safe pattern's second half) scanning a table while a lock an "
                         "earlier migration of the same run took on it is held (the run is one transaction)",
    "rename": "a table, view, index or column that existed before the plan renamed: the running application's "
              "queries that name it fail from the commit on",
}


class InvalidLockDeclaration(ValueError):
    """A migration's ``lock_timeout`` or ``allow`` is not what it must be (the loader makes it a catalog error)."""


class BadLockDeclaration(CatalogError, ValueError):
    """A migration file's ``lock_timeout`` or ``allow`` cannot be used (exit 3, like any broken file)."""

    def __init__(self, path: Path, version: str, problem: str):
        super().__init__(f"{path.name}: migration {version}: {problem}", path=path, versions=(version,))


def checked_declarations(path: Path, version: str, lock_timeout: object,
                         allow: object) -> tuple[float | None, tuple[str, ...]]:
    """``declarations`` for the loaders: a bad value is the file's catalog error."""
    try:
        return declarations(lock_timeout, allow)
    except InvalidLockDeclaration as exc:
        raise BadLockDeclaration(path, version, str(exc)) from None


def declarations(lock_timeout: object, allow: object) -> tuple[float | None, tuple[str, ...]]:
    """A migration's ``lock_timeout`` (seconds) and ``allow`` (codes), checked; ``InvalidLockDeclaration`` else."""
    seconds = None
    if lock_timeout is not None:
        try:
            seconds = parse_duration(lock_timeout)
        except ValueError as exc:
            raise InvalidLockDeclaration(f"lock_timeout {exc}") from None
    if isinstance(allow, str):
        allow = [allow]
    if not isinstance(allow, (list, tuple)) or not all(isinstance(code, str) for code in allow):
        raise InvalidLockDeclaration(f'allow must be a list of finding codes such as ["table-rewrite"], '
                                     f"not {allow!r}")
    codes = tuple(code.strip() for code in allow)
    unknown = [code for code in codes if code not in CODES]
    if unknown:
        raise InvalidLockDeclaration(f"allow names {unknown[0]!r}, which is no finding code; the codes are "
                                     f"{', '.join(CODES)}")
    return seconds, codes


#: Lock modes from weakest to strongest (PostgreSQL's table-level modes, as ``pg_locks.mode`` spells them).
MODES = ("AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
         "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
#: From this mode up a lock blocks ordinary writes (ShareLock) or reads too (AccessExclusiveLock).
BLOCKING = MODES.index("ShareLock")

LEVELS = ("info", "warning", "error")
DEFAULT_GATE = "error"
#: Rows from which an ACCESS EXCLUSIVE lock held across other statements is a finding (config ``large_table_rows``).
DEFAULT_LARGE_TABLE_ROWS = 10_000

#: The safe pattern for each finding (docs/locks.md says more), in the library's words: the SQL and the settings,
#: no command or option. A command that has its own way to it says so in ``LockPolicy.advice`` (``cli.running``).
ADVICE: dict[str, str] = {
    "index-not-concurrent": "build it with CREATE INDEX CONCURRENTLY (rebuild one with REINDEX ... CONCURRENTLY) "
                            "in a migration of its own with transactional = False (it blocks no writes)",
    "set-not-null-scan": "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT it in a later migration "
                         "(no write lock), then SET NOT NULL uses it and scans nothing",
    "constraint-not-valid-missing": "add it with NOT VALID (new rows are checked at once), then VALIDATE "
                                    "CONSTRAINT in a later migration: it scans under SHARE UPDATE EXCLUSIVE, "
                                    "which blocks neither reads nor writes",
    "table-rewrite": "add a new column and backfill it in batches, or use a type change that needs no rewrite "
                     "(varchar(n) to a longer n or to text); a volatile default: add the column without it, then "
                     "set the default and backfill",
    "access-exclusive-held": "keep the statement that takes ACCESS EXCLUSIVE alone in its migration, and run "
                             "what does work under it (a backfill, a scan, an index build) in steps of its own",
    "no-lock-timeout": "set a lock timeout (lock_timeout in the config or the migration), so the step gives up "
                       "instead of queueing every reader behind it",
    "validate-same-run": "add the constraint NOT VALID in one migration and VALIDATE it in another, applied in a "
                         "later run: within one run the earlier lock is held until the whole plan commits",
    "rename": "expand and contract: add the new name beside the old (a new column written with both, or a view "
              "under the old name), move the application's readers and writers to it, and drop the old name in a "
              "later migration once nothing uses it",
}


def mode_rank(mode: str) -> int:
    return MODES.index(mode) if mode in MODES else -1


def short_mode(mode: str) -> str:
    """``AccessExclusiveLock`` → ``ACCESS EXCLUSIVE``, as the documentation names the modes."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", mode.removesuffix("Lock")).upper()


@deferred_dataclass(frozen=True)
class LockTaken:
    """A lock a step took on a relation that existed before the plan, with the relation's size."""

    relation: str
    mode: str
    rows: int | None = None  # the planner's estimate (reltuples); None when the table was never analysed
    bytes: int | None = None
    #: The earlier step of the same transaction that took this lock: the step touched the relation while it was
    #: held (a preview is one transaction), so the server showed no new lock for it. ``None``: the step's own.
    held_since: str | None = None

    def to_json(self) -> dict:
        return {"relation": self.relation, "mode": short_mode(self.mode), "rows": self.rows, "bytes": self.bytes,
                "held_since": self.held_since}


@deferred_dataclass()
class LockFinding:
    """One thing a step does that can hold a live database up, with the safe way to do it."""

    code: str
    level: str
    relation: str
    text: str
    #: Who accepted it: ``"migration"`` (its ``allow``), ``"option"`` (``--allow``), or ``None``.
    accepted: str | None = None
    #: The safer way, in the words of whoever runs the plan (``LockPolicy.accept`` gives the run's); ``ADVICE``'s
    #: until then.
    advice: str = ""

    def __post_init__(self) -> None:
        self.advice = self.advice or ADVICE[self.code]

    def describe(self) -> str:
        accepted = f" (accepted by the {self.accepted})" if self.accepted else ""
        return f"{self.level}: {self.code}: {self.text}{accepted}; safer: {self.advice}"

    def to_json(self) -> dict:
        return {"code": self.code, "level": self.level, "relation": self.relation, "advice": self.advice,
                "text": self.text, "accepted": self.accepted}


@dataclass
class StepLocks:
    """What one step's locks cost: the locks it took, what it rewrote, its findings (``PreviewStep.locks``)."""

    locks: list[LockTaken]
    rewrites: list[str]
    findings: list[LockFinding]
    #: SQLite: the tables the step rebuilt (a new table, the rows copied, the old one dropped), each
    #: ``{"table": ..., "rows": N}`` with the rows it held when rebuilt; their names are ``rewrites`` too.
    rebuilt: list[dict] | None = None

    def to_json(self) -> dict:
        return {"locks": [lock.to_json() for lock in self.locks], "rewrites": list(self.rewrites),
                "findings": [finding.to_json() for finding in self.findings],
                "rebuilds": [dict(rebuild) for rebuild in self.rebuilt or ()]}

    def lines(self, prefix: str) -> list[str]:
        return [f"{prefix}: lock {finding.describe()}" for finding in self.findings]


class LockPolicy:
    """Which findings stop a run: levels per code (config ``lock_levels``), the gate, accepted codes.

    By default an index built without ``CONCURRENTLY`` on a table holding
    rows, a rewrite, and a validating scan of a table holding rows are
    ``error``, the level that gates ``--dry-run``, ``check`` and scripts;
    the same on an empty table, ACCESS EXCLUSIVE held across statements and
    no lock timeout are ``warning``.
    """

    def __init__(self, gate: str = DEFAULT_GATE, levels: dict[str, str] | None = None,
                 large_table_rows: int = DEFAULT_LARGE_TABLE_ROWS, allowed: tuple[str, ...] = (),
                 advice: Mapping[str, str] | None = None):
        self.gate, self.levels = gate, dict(levels or {})
        self.large_table_rows, self.allowed = large_table_rows, tuple(allowed)
        #: Codes whose safer way the caller words itself (a command naming its own options); ``ADVICE`` otherwise.
        self.advice = dict(advice or {})

    def level(self, code: str, holds_rows: bool = True) -> str:
        if code in self.levels:
            return self.levels[code]
        if code in ("access-exclusive-held", "no-lock-timeout", "rename"):
            return "warning"
        if code == "table-rewrite":
            return "error"
        return "error" if holds_rows else "warning"

    def gates(self, finding: LockFinding) -> bool:
        return finding.accepted is None and LEVELS.index(finding.level) >= LEVELS.index(self.gate)

    def accept(self, findings: list[LockFinding], allow: tuple[str, ...]) -> None:
        """Mark the findings a migration's ``allow`` or the run's ``--allow`` accepts, and word their advice as the
        run's caller does: every finding of a run passes here once, before anything describes it.

        Advice fitted to what the step ran (``access-exclusive-held``'s) keeps its words; the caller's are added."""
        for finding in findings:
            words = self.advice.get(finding.code)
            if words and finding.advice == ADVICE[finding.code]:
                finding.advice = words
            elif words and not finding.advice.endswith(words):
                finding.advice = f"{finding.advice}; {words}"
            if finding.code in allow:
                finding.accepted = "migration"
            elif finding.code in self.allowed:
                finding.accepted = "option"


def gating(policy: LockPolicy, steps: list) -> list[tuple[str, LockFinding]]:
    """(version, finding) for each finding of a preview's steps that stops the run under ``policy``."""
    found = []
    for step in steps:
        report = getattr(step, "locks", None)
        for finding in report.findings if report is not None else ():
            if policy.gates(finding):
                found.append((step.version, finding))
    return found


def check_findings(steps: list) -> list:
    """The lock findings of a preview's steps as ``apm migrate check`` lists them (``planner.findings.Finding``).

    An accepted finding is an ``info``: a decision someone wrote down, shown
    so a reviewer sees it, never a failure (as ``irreversible`` is).
    """
    found = []
    for step in steps:
        report = getattr(step, "locks", None)
        for finding in report.findings if report is not None else ():
            accepted = f" ({finding.level}, accepted by the {finding.accepted})" if finding.accepted else ""
            found.append(Finding(INFO if finding.accepted else finding.level, finding.code, step.version,
                                 f"{finding.text}{accepted}", Remedy.line(finding.advice), "locks"))
    return found
