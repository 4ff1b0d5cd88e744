"""Locks and downtime, engine-free: how long a migration may wait for a lock, and what its locks cost.

A migration on a database that serves traffic hurts more often through
locks than through lost data: an ``ALTER TABLE`` waiting for its ACCESS
EXCLUSIVE lock queues every reader behind it for as long as it waits. So
each step's transaction runs with a ``lock_timeout`` (and, when asked, a
``statement_timeout``); when the lock timeout fires the step is rolled back
and tried again after a growing, jittered pause, ``lock_retries`` times
(``planner.engines.pg_lock_timeout`` does it on PostgreSQL). The readers
queued behind the migration wait at most one lock timeout, then run.

Defaults, chosen for a server with live traffic (docs/locks.md):

* ``lock_timeout`` **2s**: long enough for an ordinary short transaction
  to finish, short enough that a queue of readers behind the migration
  costs them at most two seconds per attempt.
* ``lock_retries`` **3** (four attempts), pauses of about 1, 2 and 4
  seconds (the lock timeout, doubled each time, at most 30 s, jittered to
  between half and all of it, so several runners do not retry in step).
* ``statement_timeout`` **off**: a backfill may rightly run for an hour;
  a limit is a choice for the project (config file, option, or migration).

This module also holds the lock *findings* the preview reports, and the
policy deciding which of them stop a run (see ``findings_policy``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from planner.errors import CatalogError

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


def parse_duration(text: str) -> float:
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


@dataclass(frozen=True)
class LockSettings:
    """How long a step may wait for a lock, and run; how many times it is tried again after a lock timeout."""

    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    retries: int = DEFAULT_LOCK_RETRIES

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to pause after failed attempt ``attempt`` (1-based): exponential, capped, with jitter.

        The base is the lock timeout itself (at least 0.1 s, at most 1 s): a
        short timeout is chosen for a busy table, where a short pause is as
        likely to find a gap as a long one. The jitter (half to all of the
        pause) keeps runners and application retries from colliding again.
        """
        base = min(1.0, max(0.1, self.lock_timeout or 1.0))
        pause = min(MAX_BACKOFF, base * 2 ** (attempt - 1))
        return pause * (rng or random).uniform(0.5, 1.0)


# -- findings: what a step's locks cost a live database -------------------------------------------

#: Each finding's code, and what it means (docs/locks.md says why each matters and the safe pattern).
CODES: dict[str, str] = {
    "index-not-concurrent": "an index built without CONCURRENTLY on a table that existed before the plan",
    "set-not-null-scan": "SET NOT NULL on an existing table, scanning it under ACCESS EXCLUSIVE (no validated "
                         "CHECK (c IS NOT NULL) to prove it)",
    "constraint-not-valid-missing": "a foreign key or check added without NOT VALID, validated by scanning "
                                    "an existing table under its lock",
    "table-rewrite": "a table or index of the plan's past rewritten (a new file node): a type change, a volatile "
                     "default, SET LOGGED, CLUSTER, VACUUM FULL...",
    "access-exclusive-held": "ACCESS EXCLUSIVE on a large existing table held while later statements run",
    "no-lock-timeout": "the step runs without a lock timeout, so it may queue every reader behind it",
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
            seconds = parse_duration(lock_timeout)  # type: ignore[arg-type]
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
