"""Lock timeouts with retries on PostgreSQL: a migration never waits in a lock queue without limit.

PostgreSQL grants locks in order: while an ``ALTER TABLE`` waits for its
ACCESS EXCLUSIVE lock behind a long transaction, every reader that comes
after it waits too. So the run's connection gets ``lock_timeout`` (and
``statement_timeout``) once it holds the advisory lock (``LockGuard``);
a migration may declare its own ``lock_timeout`` for its step
(``apply_declared``). When the timeout fires (SQLSTATE 55P03,
``lock_not_available``) the step's transaction is rolled back, so the
queue behind it drains, and after a pause (``LockSettings.backoff``) it is
tried again, ``lock_retries`` times. Each failed attempt is a row of the
run log naming the session that held the lock; after the last one the run
stops with ``StepLocked`` (exit 6), naming it too.

Who held the lock: only another session can see whom a waiting backend
waits for (``pg_blocking_pids``), so a small thread with its own
connection (``BlockerWatch``) looks, a few times per lock timeout, while
the run goes on. It starts with the run and costs one idle connection.

On the previewed path the whole plan is one transaction: a lock timeout
in any step rolls all of it back, and the whole preview is tried again
(``PgRunner.preview``).

The lock timeout bounds a wait, not a hold: an attempt that timed out in
a late statement held every lock its earlier statements took (a backfill
under ACCESS EXCLUSIVE) for as long as they ran, and a plain retry would
hold them as long again. So while the run waits, the watch also reads the
locks its transaction holds and the one it waits for (``_HELD``); before
the next attempt runs anything, ``LockGuard.take_ahead`` takes all of them
in a transaction of its own, the awaited one first, each within the lock
timeout, and lets them go. Only when all were granted does the attempt run:
a blocker still there costs one lock timeout, not the length of the
backfill. It is a check, not a reservation: a session that takes one of the
locks again in the moment between costs one more attempt like the first. A ``transactional = False`` step is never tried
again (what it did before the timeout stays; ``apm migrate doctor`` shows
it): it fails at once, with the blocker named.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from planner.errors import StatementTimedOut, StepLocked
from planner.locks import BLOCKING, LockSettings, mode_rank, server_value, short_mode, shown_duration, tell_retry

log = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

#: SQLSTATE of ``lock_timeout`` (and of ``NOWAIT``): ``lock_not_available``.
LOCK_NOT_AVAILABLE = "55P03"
#: SQLSTATE of ``statement_timeout`` (and of a cancel request): ``query_canceled``.
QUERY_CANCELED = "57014"


def timed_out(error: BaseException | None) -> BaseException | None:
    """The server's statement timeout error in ``error`` or what caused it (``None``: it is not one); the
    migration's proxy notes on it the statement that ran (``apm_statement``)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "sqlstate", None) == QUERY_CANCELED and "statement timeout" in str(error):
            return error
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return None

def is_lock_timeout(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it: ``MigrationFailed.cause``, ``__cause__``) is SQLSTATE 55P03."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "sqlstate", None) == LOCK_NOT_AVAILABLE or isinstance(error, StepLocked):
            return True
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return False


@dataclass(frozen=True)
class Blocker:
    """A session holding a lock the migration waited for, as ``pg_stat_activity`` showed it."""

    pid: int
    application_name: str
    #: Seconds its transaction had been open (``None``: not in a transaction, or not visible to us).
    transaction_seconds: float | None
    query: str
    state: str | None = None

    def describe(self) -> str:
        """``pid 4242 (application "psql", transaction open 12.3 s, query "LOCK TABLE t ...")``."""
        parts = [f'application "{self.application_name}"' if self.application_name else "no application name"]
        if self.transaction_seconds is not None:
            parts.append(f"transaction open {self.transaction_seconds:.1f} s")
        if self.state:
            parts.append(self.state)
        text = " ".join(self.query.split())
        if text:
            parts.append(f'query "{text[:60]}{"..." if len(text) > 60 else ""}"')
        return f"pid {self.pid} ({', '.join(parts)})"

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "application_name": self.application_name,
                "transaction_seconds": None if self.transaction_seconds is None else round(self.transaction_seconds, 3),
                "state": self.state, "query": " ".join(self.query.split())[:200]}


_BLOCKERS = (
    "SELECT a.pid, coalesce(a.application_name, ''), extract(epoch FROM clock_timestamp() - a.xact_start)::float8, "
    "coalesce(a.query, ''), a.state "
    "FROM unnest(pg_blocking_pids(%s)) AS b(pid) JOIN pg_stat_activity a ON a.pid = b.pid ORDER BY a.xact_start"
)
#: The same, for the sessions of another program known by its application name (``pg_dump`` before a rollback).
_BLOCKERS_OF_NAMED = _BLOCKERS.replace(
    "FROM unnest(pg_blocking_pids(%s)) AS b(pid)",
    "FROM pg_stat_activity w CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS b(pid)").replace(
    " ORDER BY", " WHERE w.application_name = %s ORDER BY")


#: The run's own relation locks while it waits: (schema, table, mode, granted, seconds its transaction is open).
#: Read from the watch's session, which cannot see a table the run created and did not commit: it has to be
#: created again anyway, so it needs no lock ahead.
_HELD = (
    "SELECT n.nspname, c.relname, l.mode, l.granted, extract(epoch FROM clock_timestamp() - a.xact_start)::float8 "
    "FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.pid = %s AND l.locktype = 'relation' "
    "AND c.relkind IN ('r', 'p', 'm') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%' "
    "ORDER BY l.granted, n.nspname, c.relname"
)


@dataclass(frozen=True)
class Held:
    """A relation lock of the run's transaction, as the watch saw it while the run waited."""

    schema: str
    table: str
    mode: str  # as ``pg_locks`` spells it: ``AccessExclusiveLock``
    granted: bool

    @property
    def relation(self) -> str:
        return self.table if self.schema == "public" else f"{self.schema}.{self.table}"

    def lock_sql(self) -> str:
        return f"LOCK TABLE {_quoted(self)} IN {short_mode(self.mode)} MODE"


def _quoted(held: Held) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in (held.schema, held.table))


class BlockerWatch:
    """A thread with its own connection noting whom the run's backend waits for, while it waits.

    It polls ``pg_blocking_pids`` every third of the lock timeout (20 ms to
    1 s), so each wait that ends in a timeout is seen two or three times.
    Failures are only logged: the watch is a witness, never a reason to stop.
    """

    def __init__(self, connect: Callable[[], Any], pid: int | str, interval: float, cancel_after: float = 0.0):
        """``pid``: the backend to watch, or the ``application_name`` of a client tool's sessions (``pg_dump``,
        ``pg_restore``).

        ``cancel_after``: cancel the watched backend's statement once it has waited that long for a lock
        (``cancelled`` says so): the lock timeout of a client whose own script turns it off (a pg_dump
        archive begins with ``SET lock_timeout = 0``).
        """
        self._connect, self._pid, self.interval, self.cancel_after = connect, pid, interval, cancel_after
        self.cancelled = False
        self._waiting_since: float | None = None
        self._stop = threading.Event()
        #: (monotonic time, blockers) of the latest poll that found any.
        self.seen: tuple[float, list[Blocker]] | None = None
        #: (monotonic time, the run's own locks then, seconds its transaction was open) of that poll.
        self.held: tuple[float, list[Held], float] | None = None
        self._thread = threading.Thread(target=self._run, name="apm-blocker-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._connect() as conn:
                conn.execute("SET application_name = 'apm lock watch'")
                query = _BLOCKERS_OF_NAMED if isinstance(self._pid, str) else _BLOCKERS
                while not self._stop.wait(self.interval):
                    rows = conn.execute(query, (self._pid,)).fetchall()
                    if rows and isinstance(self._pid, int):
                        now = time.monotonic()
                        own = conn.execute(_HELD, (self._pid,)).fetchall()
                        self.held = (now, [Held(*row[:4]) for row in own], max((r[4] or 0.0 for r in own),
                                                                              default=0.0))
                    if rows:
                        self.seen = (time.monotonic(), [Blocker(*row) for row in rows])
                    self._cancel_if_waited(conn, bool(rows))
        except Exception:  # a witness only: the run goes on without it
            log.debug("the blocker watch stopped", exc_info=True)

    def _cancel_if_waited(self, conn: Any, waiting: bool) -> None:
        now = time.monotonic()
        if not waiting or self.cancel_after <= 0:
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = now - self.interval / 2  # it began waiting somewhen since the last poll
        elif now - self._waiting_since >= self.cancel_after:
            conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                         (self._pid,))
            self.cancelled, self._waiting_since = True, None

    def since(self, started: float) -> list[Blocker]:
        """The blockers the latest poll after ``started`` found (``[]``: none seen)."""
        seen = self.seen
        return seen[1] if seen is not None and seen[0] >= started else []

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def apply_declared(conn: Any, declared: float | None, settings: LockSettings, function: Callable[[], T]) -> T:
    """Run ``function`` with a migration's own ``lock_timeout`` (``declared``), the run's again after it.

    Set for the session, not ``LOCAL``: a ``transactional = False`` step has
    no transaction to be local to. Inside a transaction that rolls back, the
    server undoes the ``SET`` itself; the restore after a failure is then
    refused (the transaction is aborted) and not needed.
    """
    if declared is None:
        return function()
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (server_value(declared),))
    try:
        return function()
    finally:
        with contextlib.suppress(Exception):  # an aborted transaction: its rollback restores the run's value
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (server_value(settings.lock_timeout),))


class LockGuard:
    """One run's lock timeouts: the settings on its connection, the blocker watch, and the retry loop."""

    def __init__(self, conn: Any, settings: LockSettings, connect: Callable[[], Any] | None = None,
                 shown: str | None = None, declared: Mapping[str, float] | None = None):
        """``declared``: the lock timeouts the plan's migrations declare, by version (``lock_timeout = "..."``)."""
        self.conn, self.settings, self.shown = conn, settings, shown
        self.declared = dict(declared or {})
        self.attempt = 1
        self._pause: float | None = None  # the pause after the current attempt, once asked
        self.started = time.monotonic()
        self.last_blockers: list[Blocker] = []
        #: The locks the attempts that timed out held or waited for, the awaited first: taken ahead of a retry.
        self.needed: list[Held] = []
        self._ahead_failed = False  # the latest attempt failed while taking ``needed`` ahead, holding nothing else
        # A session setting, so every transaction of the run waits at most so long for a lock or a statement.
        conn.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                     (server_value(settings.lock_timeout), server_value(settings.statement_timeout)))
        self.watch: BlockerWatch | None = None
        # Polled often enough for the shortest wait that can time out, a migration's own included: a watch
        # paced by the run's 2 s never sees the blocker of a step that declares 200 ms.
        limits = [t for t in (settings.lock_timeout, *self.declared.values()) if t > 0]
        if limits and connect is not None:
            interval = min(1.0, max(0.02, min(limits) / 3))
            self.watch = BlockerWatch(connect, conn.info.backend_pid, interval)

    def _pause_for(self, version: str | None) -> float:
        """The pause after this attempt, paced by the lock timeout that fired (a migration's own 300 ms pauses
        about 0.15 to 0.3 s, not the run's 2 s schedule); drawn once, so the log and the wait agree."""
        if self._pause is None:
            self._pause = replace(self.settings, lock_timeout=self.timeout_of(version)).backoff(self.attempt)
        return self._pause

    def timeout_of(self, version: str | None) -> float:
        """The lock timeout a step waits under: its migration's own when it declares one, else the run's."""
        return self.declared.get(version or "", self.settings.lock_timeout)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()

    def blockers(self) -> list[Blocker]:
        found = self.watch.since(self.started) if self.watch is not None else []
        if found:
            self.last_blockers = found
        return found or self.last_blockers

    def timed_out(self, version: str | None, error: BaseException, *, whole: bool) -> StatementTimedOut:
        """A statement timeout as the run reports it: the statement, the limit, where the limit came from."""
        canceled = timed_out(error)
        return StatementTimedOut(version, getattr(canceled, "apm_statement", None),
                                 shown_duration(self.settings.statement_timeout),
                                 self.settings.statement_timeout_from, whole=whole, shown=self.shown)

    def explain(self, version: str | None, error: E) -> E | StepLocked | StatementTimedOut:
        """The run log's words for a failure: a lock timeout says which attempt and who held the lock."""
        if timed_out(error) is not None:
            return self.timed_out(version, error, whole=False)
        if not is_lock_timeout(error):
            return error
        final = self.attempt >= self.settings.attempts
        return StepLocked(version, self.settings, self.attempt, self.blockers(), final=final,
                          pause=0.0 if final else self._pause_for(version), shown=self.shown,
                          waited=shown_duration(self.timeout_of(version)),
                          declared=(version or "") in self.declared)

    def retrying(self, once: Callable[[int], T], failure: Callable[[T], BaseException | None] = lambda _r: None,
                 version_of: Callable[[BaseException], str | None] = lambda _e: None,
                 retryable: Callable[[BaseException], bool] = lambda _e: True,
                 record: Callable[[str | None, BaseException], None] = lambda _v, _e: None) -> T:
        """``once(attempt)`` until it ends without a lock timeout, or the attempts are spent.

        A lock timeout is either raised (the step-by-step path) or carried in
        the result (``failure(result)``: the preview's). After the last
        attempt, a raised one becomes ``StepLocked``; a carried one is left to
        the caller (``final_error``). Before each retry the locks the failed
        attempts were seen to need are taken ahead (``take_ahead``); when one
        times out there, the attempt ends without running anything, and
        ``record(version, error)`` logs it as the steps' own failures are.
        """
        version: str | None = None
        last: list[T] = []
        while True:
            self.started = time.monotonic()
            if self.attempt > 1:
                missed = self.take_ahead(version)
                if missed is not None:
                    record(version, self.explain(version, missed))
                    if self.attempt < self.settings.attempts:
                        self._wait(version)
                        continue
                    if last:
                        return last[0]  # the carried failure of the attempt that ran; the caller names the end
                    raise self.final_error(version) from missed
            try:
                result = once(self.attempt)
                error = failure(result)
            except Exception as exc:
                if timed_out(exc) is not None and retryable(exc):
                    raise self.timed_out(version_of(exc), exc, whole=False) from exc
                if not is_lock_timeout(exc) or not retryable(exc):
                    raise
                if self.attempt >= self.settings.attempts or isinstance(exc, StepLocked):
                    if isinstance(exc, StepLocked):
                        raise
                    raise self.final_error(version_of(exc)) from exc
                version = version_of(exc)
                self._wait(version)
                continue
            if error is None or not is_lock_timeout(error) or self.attempt >= self.settings.attempts:
                return result
            last[:] = [result]
            version = version_of(error)
            self._wait(version)

    def take_ahead(self, version: str | None) -> BaseException | None:
        """Take, in a transaction of their own, the locks earlier attempts held or waited for, each within the
        lock timeout, and let them go; the lock timeout that fired, or ``None`` when all were granted.

        Only a lock timeout counts: anything else (a table dropped since, a privilege) leaves the attempt
        to run as it would have without this check, which is a way to fail fast, never a reason to fail.
        """
        self._ahead_failed = False
        if not self.needed:
            return None
        try:
            with self.conn.transaction():
                declared = self.declared.get(version or "")
                if declared is not None:
                    self.conn.execute("SELECT set_config('lock_timeout', %s, true)", (server_value(declared),))
                present = {row[0] for row in self.conn.execute(
                    "SELECT x FROM unnest(%s::text[]) AS x WHERE to_regclass(x) IS NOT NULL",
                    ([_quoted(h) for h in self.needed],)).fetchall()}
                for held in self.needed:
                    if _quoted(held) in present:
                        self.conn.execute(held.lock_sql())
        except Exception as exc:
            if not is_lock_timeout(exc):
                log.debug("taking the locks ahead failed; the attempt runs without it", exc_info=True)
                return None
            self._ahead_failed = True
            return exc
        return None

    def _learn(self) -> str:
        """Add the locks the watch saw the attempt hold or wait for to ``needed``; say what it held, and how long.

        Only locks that block writers (SHARE and up) are named: they are what kept the application waiting.
        """
        seen = self.watch.held if self.watch is not None else None
        if seen is None or seen[0] < self.started:
            return "rolled back"
        at, held, seconds = seen
        # The lock awaited now goes first: while another session still has it, nothing else is held waiting for
        # it. Then the ones known before, then the new ones, strongest first.
        awaited = [h for h in held if not h.granted]
        keys = {(h.schema, h.table, h.mode) for h in awaited}
        known = [h for h in self.needed if (h.schema, h.table, h.mode) not in keys]
        keys |= {(h.schema, h.table, h.mode) for h in known}
        fresh = sorted((h for h in held if (h.schema, h.table, h.mode) not in keys), key=lambda h: -mode_rank(h.mode))
        self.needed = awaited + known + fresh
        blocking = [h for h in held if h.granted and mode_rank(h.mode) >= BLOCKING]
        if self._ahead_failed:
            what = "taking its locks ahead, it ran nothing"
        elif blocking:
            what = "it held " + ", ".join(f"{short_mode(h.mode)} on {h.relation}" for h in blocking) + \
                f" for {seconds + time.monotonic() - at:.1f} s before"
        else:
            what = "it held no lock that blocks readers or writers before"
        tables = sorted({h.relation for h in self.needed})
        return (f"{what} it was rolled back; the next attempt first takes its locks on {', '.join(tables)} within "
                f"the lock timeout, so a blocker still there costs one lock timeout")

    def final_error(self, version: str | None) -> StepLocked:
        return StepLocked(version, self.settings, self.attempt, self.blockers(), shown=self.shown,
                          waited=shown_duration(self.timeout_of(version)),
                          declared=(version or "") in self.declared)

    def _wait(self, version: str | None) -> None:
        pause = self._pause_for(version)
        blockers = self.blockers()
        tell_retry(version or "?", self.attempt, self.settings.attempts, pause, blockers[0] if blockers else None,
                   self.timeout_of(version), self._learn())
        time.sleep(pause)
        self.attempt += 1
        self._pause = None

