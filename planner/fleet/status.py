"""The state of every database of a fleet, decided from its ledger alone: read-only, nothing written.

Each member's ledger is read through a read-only connection (SQLite's
``mode=ro`` URI: the file, its journal and its folder are left exactly as
they were; not even the ledger tables are created). What the ledger says is
then compared with the catalog, which is loaded once for the whole fleet;
the comparisons are cached per distinct applied set, so a thousand
databases in the same state cost one plan, not a thousand.

A member that cannot be read gets its state and a one-line reason, and the
fleet carries on: one database's problem never hides another's state.

The states a fleet member can be in, as ``apm fleet status`` names them (``--json``: spaces as ``_``).

Reading one member's ledger for ``apm fleet status``: quickly, read-only, and every failure as a state.

A SQLite file is opened through a ``mode=ro`` URI, so nothing on disk can
change (not even a journal), and read in one statement; a PostgreSQL member
through its engine. A member that cannot be read raises ``Unreadable`` with
its state (``locked``, ``not a database``...) and a one-line reason.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from planner import errors as E
from planner import versions
from planner.engines.sqlite.database import looks_like_sqlite, translate_error, wait_for
from planner.engines.sqlite.ledger import KNOWN_COLUMNS
from planner.errors import DatabaseError, DatabaseLocked, ForeignLedger, PlanError
from planner.fleet.members import Member
from planner.plan import apply_plan
from planner.urls import redact
from planner.versions import base_version

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.schema import Difference


UP_TO_DATE = "up to date"
BEHIND = "behind"
AHEAD = "ahead"
DRIFTED = "drifted"
FAILED = "failed"
LOCKED = "locked"
NOT_A_DATABASE = "not a database"
UNREACHABLE = "unreachable"
FOREIGN_LEDGER = "foreign ledger"
#: ``--drift``: the schema could not be compared (its migrations do not replay); never shown as healthy.
DRIFT_UNCHECKED = "drift unchecked"

#: Every state, in the order a summary names them.
STATES = (UP_TO_DATE, BEHIND, AHEAD, DRIFTED, DRIFT_UNCHECKED, FAILED, LOCKED, NOT_A_DATABASE, UNREACHABLE, FOREIGN_LEDGER)


def json_state(state: str) -> str:
    """A state as ``--json`` spells it: ``up to date`` is ``up_to_date``."""
    return state.replace(" ", "_")


class Reading:
    """What a ledger said, before it is compared with the catalog."""

    __slots__ = ("entries", "last_log")

    def __init__(self, entries: dict[str, str | None], last_log: tuple[str, str, str | None] | None):
        #: Applied version -> when it was applied.
        self.entries = entries
        #: (outcome, version, detail) of the log's last row.
        self.last_log = last_log


class Unreadable(Exception):
    """The member cannot be read: ``state`` says how, the message why."""

    def __init__(self, state: str, reason: str):
        super().__init__(reason)
        self.state = state


def readings(members: Sequence[Member], busy_timeout: float, ledger_schema: str, jobs: int):
    """(member, its ledger or why it cannot be read), in fleet order, ``jobs`` read at a time.

    Threads are enough: opening a file and running the statements happen in
    SQLite's C code, which releases the GIL, and that is most of the time.
    """
    def read(candidate: Member) -> Reading | Unreadable:
        try:
            return read_ledger(candidate, busy_timeout, ledger_schema)
        except Unreadable as unreadable:
            return unreadable

    if jobs <= 1 or len(members) < 2:
        for candidate in members:
            yield candidate, read(candidate)
        return
    # start-up time: planner.fleet.status runs without concurrent.futures until readings() needs it
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        yield from zip(members, pool.map(read, members))


def read_ledger(candidate: Member, busy_timeout: float, ledger_schema: str) -> Reading:
    """What ``candidate``'s ledger says; ``Unreadable`` with the state when it cannot be read."""
    if candidate.on_server:
        return _read_postgres(candidate, busy_timeout, ledger_schema)
    return _read_sqlite(candidate.real, busy_timeout)


# --------------------------------------------------------------------------
# Reading one ledger
# --------------------------------------------------------------------------

_LAST_LOG = "SELECT outcome, version, detail FROM schema_migrations_log ORDER BY id DESC LIMIT 1"
_URI_SPECIAL = re.compile(r"[?#%\s]|[^\x00-\x7f]")
#: SQLite's first wait for a lock, inside C; a longer one continues in slices Ctrl-C can interrupt.
_FIRST_WAIT = 0.1


def _read_sqlite(path: str, busy_timeout: float) -> Reading:
    """The ledger of one file through a ``mode=ro`` connection: nothing on disk can change, not even a journal."""

    try:
        # quote() only when needed: it costs as much as a statement, and few paths hold URI characters.
        uri = f"file:{quote(path) if _URI_SPECIAL.search(path) else path}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=min(busy_timeout, _FIRST_WAIT),
                               isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _classify_open(path, exc) from None
    try:
        try:
            try:
                reading = _ledger_rows(conn, path)
            except sqlite3.OperationalError as exc:
                if not isinstance(translate_error(exc, Path(path), busy_timeout), DatabaseLocked) \
                        or busy_timeout <= _FIRST_WAIT:
                    raise
                wait_for(conn, "PRAGMA schema_version", Path(path), busy_timeout)  # the rest of the wait
                reading = _ledger_rows(conn, path)
            if reading is None:  # no ledger: a fresh database, or not a database at all
                if not looks_like_sqlite(path):
                    raise Unreadable(NOT_A_DATABASE, f"{path} is not a SQLite database")
                return Reading({}, None)
            return reading
        except sqlite3.Error as exc:
            translated = translate_error(exc, Path(path), busy_timeout)
            if isinstance(translated, DatabaseLocked):
                raise Unreadable(LOCKED, str(translated)) from None
            raise _classify_open(path, exc) from None
        except DatabaseError as exc:
            raise _unreadable(exc) from None
    finally:
        conn.close()


#: The ledger and the log's last row in one statement: each statement on a fresh connection takes the shared
#: lock and checks the schema again, so one statement instead of two saves a third of a status's time.
_LEDGER_AND_LAST_LOG = """
SELECT m.*, l.outcome, l.version, l.detail FROM (SELECT 1) AS one
LEFT JOIN schema_migrations AS m
LEFT JOIN (SELECT outcome, version, detail FROM schema_migrations_log ORDER BY id DESC LIMIT 1) AS l"""
_LEDGER_ONLY = "SELECT *, NULL, NULL, NULL FROM schema_migrations"


def _ledger_rows(conn: sqlite3.Connection, path: str) -> Reading | None:
    """``schema_migrations`` as ``Ledger.applied_migrations`` reads it, and the log's last row; ``None``
    without a ledger.

    The cursor's description gives the columns: the shape check (another
    tool's table is refused) and the rows APM's framework rolled back or
    wrote as notes are handled as ``planner.engines.sqlite.ledger`` handles them.
    """
    try:
        cursor = conn.execute(_LEDGER_AND_LAST_LOG)
    except sqlite3.OperationalError as exc:
        if "no such table: schema_migrations_log" in str(exc):  # a seed-era ledger: no log yet
            cursor = conn.execute(_LEDGER_ONLY)
        elif "no such table" in str(exc):
            return None
        else:
            raise
    columns = [d[0].lower() for d in cursor.description[:-3]]
    if "version" not in columns or not set(columns) <= KNOWN_COLUMNS:
        raise ForeignLedger(Path(path), sorted(columns), sorted(KNOWN_COLUMNS))
    version = columns.index("version")
    applied_at = columns.index("applied_at") if "applied_at" in columns else None
    rollback_at = columns.index("rollback_at") if "rollback_at" in columns else None
    entries: dict[str, str | None] = {}
    rows = cursor.fetchall()
    for row in rows:
        if row[version] is None or (rollback_at is not None and row[rollback_at] is not None):
            continue  # the empty ledger's one row of NULLs, or a row APM's framework rolled back
        text = str(row[version])
        if not text.isdigit() and base_version(text) is not None:
            continue  # a note a migration wrote itself (0018_consolidated), never an applied version
        entries[text] = row[applied_at] if applied_at is not None else None
    last = rows[0][-3:] if rows else None
    return Reading(entries, (str(last[0]), str(last[1]), last[2]) if last and last[0] is not None else None)


def _classify_open(path: str, exc: sqlite3.Error) -> Unreadable:
    if not os.path.exists(path):
        return Unreadable(UNREACHABLE, f"{path} does not exist")
    if os.path.isdir(path):
        return Unreadable(NOT_A_DATABASE, f"{path} is a folder, not a SQLite database")
    message = str(exc)
    if "not a database" in message or not looks_like_sqlite(path):
        return Unreadable(NOT_A_DATABASE, f"{path} is not a SQLite database")
    if "locked" in message:
        return Unreadable(LOCKED, f"{path} is locked by another process")
    return Unreadable(UNREACHABLE, f"{path} cannot be read: {message}")


def _read_postgres(candidate: Member, busy_timeout: float, ledger_schema: str) -> Reading:
    engine = candidate.engine(busy_timeout=busy_timeout, ledger_schema=ledger_schema)
    try:
        with engine.reading():
            entries = engine.applied()
            history = engine.history() if entries else []
    except DatabaseError as exc:
        raise _unreadable(exc) from None
    last = history[-1] if history else None
    return Reading({v: e.applied_at for v, e in entries.items()}, (last.outcome, last.version, last.detail) if last is not None else None)


def _unreadable(error: Exception) -> Unreadable:
    """A library error about the database itself, as a state and its one line."""
    if isinstance(error, E.ForeignLedger):
        return Unreadable(FOREIGN_LEDGER, "schema_migrations was made by another tool (columns: "
                                           f"{', '.join(error.columns)})")
    if isinstance(error, (E.DatabaseLocked, TimeoutError)):
        return Unreadable(LOCKED, one_line(error))
    if isinstance(error, E.NotADatabase):
        return Unreadable(NOT_A_DATABASE, one_line(error))
    return Unreadable(UNREACHABLE, one_line(error))


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def one_line(error: BaseException) -> str:
    """An error's message on one line, any password masked."""
    # An error's text is its fact: advice for a one-database command (``--db``) is the command's to add.
    return redact(first_line(str(error)) or type(error).__name__)


@dataclass
class MemberStatus:
    """One member's state, and what it was decided from."""

    member: Member
    state: str
    applied: int = 0
    pending: int = 0
    heads: tuple[str, ...] = ()
    last_applied_at: str | None = None
    error: str | None = None
    #: The versions the ledger records as applied (``None`` when it could not be read).
    applied_versions: frozenset[str] | None = None
    #: Applied versions the catalog has no file for (``ahead``).
    unknown: tuple[str, ...] = ()
    #: The schema's differences from its migrations, when drift was checked (``drifted``).
    differences: list[Difference] | None = None

    @property
    def needs_attention(self) -> bool:
        return self.state != UP_TO_DATE

    @property
    def shown_state(self) -> str:
        """``behind 3`` rather than ``behind``: what the table shows."""
        return f"{BEHIND} {self.pending}" if self.state == BEHIND else self.state

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "db": self.member.display,
            "state": json_state(self.state),
            # Unread (not a database, locked, unreachable...): unknown, not zero (docs' JSON convention).
            "applied": self.applied if self.applied_versions is not None else None,
            "pending": self.pending if self.applied_versions is not None else None,
            "head": list(self.heads) if self.applied_versions is not None else None,
            "last_applied_at": self.last_applied_at,
            "error": self.error,
        }
        if self.unknown:
            document["unknown"] = list(self.unknown)
        if self.differences is not None:
            document["differences"] = [d.to_json() for d in self.differences]
        return document


@dataclass
class FleetStatus:
    """Every member's status, in fleet order."""

    members: list[MemberStatus] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in self.members:
            counts[status.state] = counts.get(status.state, 0) + 1
        return {state: counts[state] for state in STATES if state in counts}

    @property
    def needs_attention(self) -> bool:
        return any(status.needs_attention for status in self.members)

    def summary_line(self) -> str:
        """``38 up to date, 3 behind, 1 drifted``."""
        return ", ".join(f"{count} {state}" for state, count in self.summary.items()) or "no databases"

    def to_json(self) -> dict[str, Any]:
        return {"databases": [status.to_json() for status in self.members],
                "summary": {json_state(state): count for state, count in self.summary.items()}}

class Comparison:
    """The catalog's view of applied sets, computed once per distinct set (a fleet has few)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._cache: dict[frozenset[str], tuple[int, tuple[str, ...], tuple[str, ...], str | None]] = {}

    def of(self, applied: frozenset[str]) -> tuple[int, tuple[str, ...], tuple[str, ...], str | None]:
        """(pending count, heads, unknown versions, refusal) for ``applied``."""
        found = self._cache.get(applied)
        if found is None:
            found = self._cache[applied] = self._compare(applied)
        return found

    def _compare(self, applied: frozenset[str]) -> tuple[int, tuple[str, ...], tuple[str, ...], str | None]:
        known, unknown = self.catalog.split_applied(applied)
        graph = self.catalog.graph
        heads = tuple(versions.ordered(v for v in known if v in graph
                                       and not any(d in known for d in graph.dependents(v))))
        try:
            pending = len(apply_plan(self.catalog, applied))
        except PlanError as refusal:
            return 0, heads, tuple(versions.ordered(unknown)), str(refusal)
        return pending, heads, tuple(versions.ordered(unknown)), None


def fleet_status(
    members: Sequence[Member],
    catalog: Catalog,
    *,
    busy_timeout: float = 30.0,
    ledger_schema: str = "public",
    drift: Callable[[Member, MemberStatus], list[Difference] | None] | None = None,
    on_member: Callable[[MemberStatus], None] | None = None,
    jobs: int = 1,
) -> FleetStatus:
    """Each member's state from its ledger (and, with ``drift``, its schema against its migrations).

    ``drift(member, status)`` returns the member's differences, or ``None``
    when it was not compared; ``planner.schema_drift.DriftChecker`` is one.
    """
    comparison = Comparison(catalog)
    result = FleetStatus()
    for candidate, reading in readings(members, busy_timeout, ledger_schema, jobs):
        status = member_status(candidate, comparison, busy_timeout=busy_timeout, ledger_schema=ledger_schema,
                               reading=reading)
        if drift is not None and status.state in (UP_TO_DATE, BEHIND, AHEAD, FAILED) and not status.unknown:
            try:
                status.differences = drift(candidate, status)
            except Exception as exc:  # one member's replay failing must not hide the others' states
                status.error = status.error or f"drift not checked: {one_line(exc)}"
                if status.state in (UP_TO_DATE, BEHIND):  # a schema nobody could compare must not look healthy
                    status.state = DRIFT_UNCHECKED
            if status.differences and status.state in (UP_TO_DATE, BEHIND):
                status.state = DRIFTED
        result.members.append(status)
        if on_member is not None:
            on_member(status)
    return result

def member_status(candidate: Member, comparison: Comparison, *, busy_timeout: float = 30.0,
                  ledger_schema: str = "public", reading: Reading | Unreadable | None = None) -> MemberStatus:
    """One member's state, from its ledger alone (``reading``, when it was already read)."""
    try:
        if reading is None:
            reading = read_ledger(candidate, busy_timeout, ledger_schema)
        if isinstance(reading, Unreadable):
            raise reading
    except Unreadable as unreadable:
        shown = str(unreadable).replace(candidate.real, candidate.display)  # the path as given, not resolved
        return MemberStatus(candidate, unreadable.state, error=shown)
    applied = frozenset(reading.entries)
    pending, heads, unknown, refusal = comparison.of(applied)
    times = [str(at) for at in reading.entries.values() if at]
    status = MemberStatus(candidate, UP_TO_DATE, applied=len(applied), pending=pending, heads=heads,
                          last_applied_at=max(times) if times else None, applied_versions=applied,
                          unknown=unknown)
    if reading.last_log is not None and reading.last_log[0] == "failed":
        outcome, version, detail = reading.last_log
        status.state, status.error = FAILED, f"{version} failed: {first_line(detail) or 'no detail recorded'}"
    elif refusal is not None:
        status.state, status.error = FAILED, refusal
    elif unknown:
        status.state = AHEAD
        status.error = f"applied but not in the catalog: {', '.join(unknown)}"
    elif pending:
        status.state = BEHIND
    return status


def count_states(statuses: Iterable[MemberStatus]) -> dict[str, int]:
    """How many members are in each state (for a caller summarizing its own selection)."""
    return FleetStatus(list(statuses)).summary
