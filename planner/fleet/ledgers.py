"""Reading one member's ledger for ``apm fleet status``: quickly, read-only, and every failure as a state.

A SQLite file is opened through a ``mode=ro`` URI, so nothing on disk can
change (not even a journal), and read in one statement; a PostgreSQL member
through its engine. A member that cannot be read raises ``Unreadable`` with
its state (``locked``, ``not a database``...) and a one-line reason.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from planner.engines.sqlite.database import looks_like_sqlite
from planner.fleet.members import Member
from planner.fleet.states import FOREIGN_LEDGER, LOCKED, NOT_A_DATABASE, UNREACHABLE


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
    from urllib.parse import quote

    from planner.engines.sqlite.database import translate_error, wait_for
    from planner.errors import DatabaseError, DatabaseLocked

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
    from planner.engines.sqlite.ledger import KNOWN_COLUMNS
    from planner.errors import ForeignLedger
    from planner.versions import base_version

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
    from planner.errors import DatabaseError

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
    from planner import errors as E

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
    from planner.urls import redact

    # An error's text is its fact: advice for a one-database command (``--db``) is the command's to add.
    return redact(first_line(str(error)) or type(error).__name__)
