"""The fleet's reading of many ledgers, quickly and read-only: ``apm fleet status`` over a thousand files.

Each file is attached in turn (``mode=ro``: nothing is created, nothing is
recovered) to one scratch connection per thread, and its ledger and the
log's last row are read in one read transaction. The statement that reads a
ledger is chosen once per ledger table text (its ``CREATE TABLE``), so the
thousandth file of the same shape costs two statements. What it reads is
what ``planner.engines.sqlite.ledger.Ledger`` reads; another tool's table is
refused as that refuses it (the same columns, ``SEED_COLUMNS`` and
``KNOWN_COLUMNS``). A file this reader cannot read (a hot journal only a
writable connection rolls back) is read by the engine instead
(``planner.fleet.status``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

from planner.engines.sqlite.database import looks_like_sqlite, translate_error, wait_for
from planner.engines.sqlite.ledger import KNOWN_COLUMNS, SEED_COLUMNS, is_note
from planner.errors import DatabaseError, DatabaseLocked, ForeignLedger, NotADatabase

#: What ``read_quickly`` found: applied version -> when it was applied, and the log's last row
#: (outcome, version, detail) or ``None``.
QuickReading = tuple[dict[str, "str | None"], "tuple[str, str, str | None, str] | None"]

#: SQLite's first wait for a lock, inside C; a longer one continues in slices Ctrl-C can interrupt.
_FIRST_WAIT = 0.1
#: The log's last row, then the ledger, in one read transaction (both from the same moment). Two plain statements
#: cost a third less than one ``LEFT JOIN`` of the two, which SQLite ran as a nested loop over a subquery.
_LEDGER = "SELECT * FROM member.schema_migrations"
#: Each thread's scratch connection, which every file is attached to in turn (``read_quickly``).
_SCRATCH = threading.local()
#: Every object of the file, for ``planner.engines.sqlite.schema.known_schema`` (which keeps the user's).
_OBJECTS = "SELECT type, name, tbl_name, sql FROM member.sqlite_master ORDER BY rowid"
_ATTACH = "ATTACH ? AS member"


def read_quickly(path: str, busy_timeout: float, *, objects: list | None = None,
                 checksums: dict[str, str] | None = None) -> QuickReading:
    """The ledger of one file, for ``apm fleet status`` over many: attached read-only, read in one transaction.

    ``mode=ro`` so nothing on disk can change, not even a journal (``open_read_only`` would recover a hot one),
    and no ``Ledger``: a thousand files must cost a thousand reads, not a thousand schema checks. Each file is
    attached to one scratch connection rather than opened by a connection of its own (no connection object,
    statement cache or handle to make per file), and every statement runs on its one cursor. A file without a
    ledger reads as nothing applied. Every failure is a ``DatabaseError`` saying what is wrong with the file
    (``DatabaseLocked``, ``NotADatabase``, ``ForeignLedger``). With ``objects`` (a list), the file's schema
    objects are appended to it, read in the same transaction (``--drift``: no second open of each file). With
    ``checksums`` (a dict), each applied version's recorded checksum is put in it, where the ledger has one.
    """
    # quote() costs as much as a statement: only for what it quotes (URI characters, spaces, non-printable or
    # non-ASCII), found without a regular expression (compiling one was a fifth of this module's import).
    plain = path.isascii() and path.isprintable() and not ("?" in path or "#" in path or "%" in path or " " in path)
    uri = f"file:{path if plain else quote(path)}?mode=ro"
    cursor = _scratch(busy_timeout if busy_timeout < _FIRST_WAIT else _FIRST_WAIT)
    try:
        try:  # ATTACH reads the file's schema: a locked file, or one that is no database, fails here already
            cursor.execute(_ATTACH, (uri,))  # bound, not spelled out: one statement text, prepared once
        except sqlite3.OperationalError as exc:
            _wait_out_lock(exc, cursor, "ATTACH '{}' AS member".format(uri.replace("'", "''")), path, busy_timeout)
        try:
            cursor.execute("BEGIN")  # deferred: no lock yet, nothing written
            try:
                reading = _ledger_rows(cursor, path, checksums)
            except sqlite3.OperationalError as exc:
                _wait_out_lock(exc, cursor, "PRAGMA member.schema_version", path, busy_timeout)
                reading = _ledger_rows(cursor, path, checksums)
            if objects is not None:
                objects += cursor.execute(_OBJECTS).fetchall()
        finally:
            _detach(cursor)
        if reading is None:  # no ledger: a fresh database, or not a database at all
            if not looks_like_sqlite(path):
                raise NotADatabase(path)
            return {}, None
        return reading
    except sqlite3.Error as exc:
        translated = translate_error(exc, Path(path), busy_timeout)
        if isinstance(translated, DatabaseLocked):
            raise translated from None
        raise _unopened(path, exc, busy_timeout) from None


def _scratch(timeout: float) -> sqlite3.Cursor:
    """This thread's scratch connection (in memory, holding nothing) as its cursor, waiting ``timeout`` in C."""
    cursor = getattr(_SCRATCH, "cursor", None)
    if cursor is None or _SCRATCH.pid != os.getpid():  # a forked child never uses its parent's connection
        cursor = _SCRATCH.cursor = sqlite3.connect("file::memory:", uri=True, isolation_level=None).cursor()
        _SCRATCH.pid, _SCRATCH.timeout = os.getpid(), None
    if _SCRATCH.timeout != timeout:
        cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        _SCRATCH.timeout = timeout
    return cursor


def _wait_out_lock(exc: sqlite3.OperationalError, cursor: sqlite3.Cursor, statement: str, path: str,
                   busy_timeout: float) -> None:
    """Raise ``exc`` unless it is another process's lock with more of ``busy_timeout`` left than the first wait;
    then wait in slices Ctrl-C can interrupt until ``statement`` runs."""
    if not isinstance(translate_error(exc, Path(path), busy_timeout), DatabaseLocked) or busy_timeout <= _FIRST_WAIT:
        raise exc
    _SCRATCH.timeout = None  # wait_for leaves the whole busy timeout set
    wait_for(cursor.connection, statement, Path(path), busy_timeout)


def _detach(cursor: sqlite3.Cursor) -> None:
    """End the read and let the file go; a scratch connection that cannot is dropped, never reused."""
    try:
        if cursor.connection.in_transaction:
            cursor.execute("COMMIT")
        cursor.execute("DETACH member")
    except sqlite3.Error:
        _SCRATCH.cursor = None
        cursor.connection.close()


#: Where a ledger's version, applied_at, rollback_at and checksum are in its rows (``None``: it has none).
_Shape = tuple[int, int | None, int | None, int | None]
#: The log's last row with the ledger table's text (its ``CREATE TABLE``, which names its columns).
_LAST_LOG_AND_LEDGER = ("SELECT outcome, version, detail, action, (SELECT sql FROM member.sqlite_master WHERE type IN "
                        "('table', 'view') AND name = 'schema_migrations' COLLATE NOCASE) FROM "
                        "member.schema_migrations_log ORDER BY id DESC LIMIT 1")
#: A ledger table's text -> the statement reading only the columns the fleet needs and their places in it, or
#: ``None`` for another tool's table. Decided by the first file of each text, from its columns.
_BY_TABLE: dict[str, tuple[str, _Shape] | None] = {}


def _shape(names: list[str]) -> _Shape | None:
    columns = [name.lower() for name in names]
    if not SEED_COLUMNS <= set(columns) <= KNOWN_COLUMNS:  # as ``Ledger`` decides it (Rails' lone version too)
        return None
    place = {name: index for index, name in enumerate(columns)}
    return place["version"], place.get("applied_at"), place.get("rollback_at"), place.get("checksum")


def _ledger_rows(cursor: sqlite3.Cursor, path: str, checksums: dict[str, str] | None = None) -> QuickReading | None:
    """``schema_migrations`` as ``Ledger.applied_migrations`` reads it, and the log's last row; ``None`` without one.

    The columns decide the shape check (another tool's table is refused) and which rows are rolled back by
    APM's framework or notes, as ``Ledger`` decides them. The log's last row comes with the ledger table's text:
    a text met before says the table's columns, and only the four needed are read (each column read costs about
    what a statement does); otherwise every column is, and the text is remembered.
    """
    try:
        last = cursor.execute(_LAST_LOG_AND_LEDGER).fetchall()  # all, not one: an open statement keeps the file
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        last = []  # a seed-era ledger: no log yet (or no ledger at all)
    table = last[0][4] if last else None
    if last and table is None:
        return None  # a log without a ledger: nothing applied
    log = (str(last[0][0]), str(last[0][1]), last[0][2], str(last[0][3])) if last else None
    if (known := _BY_TABLE.get(table) if table is not None else None) is not None:
        shape, rows = known[1], cursor.execute(known[0]).fetchall()
    else:
        try:
            cursor.execute(_LEDGER)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        found = _shape(names := [d[0] for d in cursor.description])
        if table is not None:
            _BY_TABLE[table] = _narrow(found)
        if found is None:
            raise ForeignLedger(Path(path), sorted(name.lower() for name in names), sorted(KNOWN_COLUMNS))
        shape, rows = found, cursor.fetchall()
    return _entries(rows, shape, checksums), log


def _narrow(shape: _Shape | None) -> tuple[str, _Shape] | None:
    """The statement reading only the needed columns of a ledger of ``shape`` (``None``: another tool's)."""
    if shape is None:
        return None
    wanted = [name for name, at in zip(("version", "applied_at", "rollback_at", "checksum"), shape) if at is not None]
    at = {name: index for index, name in enumerate(wanted)}
    return (f"SELECT {', '.join(wanted)} FROM member.schema_migrations",
            (0, at.get("applied_at"), at.get("rollback_at"), at.get("checksum")))


def _entries(rows: list, shape: _Shape, checksums: dict[str, str] | None) -> dict[str, str | None]:
    """Applied version -> when it was applied, from the ledger's ``rows`` (``shape``: where each column is);
    each version's checksum put in ``checksums`` where the row has one."""
    version, applied_at, rollback_at, checksum = shape
    if checksums is None:
        checksum = None
    entries: dict[str, str | None] = {}
    for row in rows:
        text = row[version]
        if text is None or (rollback_at is not None and row[rollback_at] is not None):
            continue  # a row APM's framework rolled back
        text = str(text)
        if not text.isdigit() and is_note(text):
            continue  # a note a migration wrote itself (0018_consolidated), never an applied version
        entries[text] = row[applied_at] if applied_at is not None else None
        if checksum is not None and row[checksum]:
            checksums[text] = row[checksum]  # type: ignore[index]  # not None when checksum is set
    return entries


def _unopened(path: str, exc: sqlite3.Error, busy_timeout: float) -> DatabaseError:
    """Why ``path`` could not be opened or read, as the error about the file it stands for."""
    if not os.path.exists(path):
        return DatabaseError(f"{path} does not exist", database=path)
    message = str(exc)
    if os.path.isdir(path) or "not a database" in message or not looks_like_sqlite(path):
        return NotADatabase(path)
    if "locked" in message:
        return DatabaseLocked(path, busy_timeout)
    return DatabaseError(f"{path} cannot be read: {message}", database=path)


