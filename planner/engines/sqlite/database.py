"""Opening the database file (backups are in ``planner.engines.sqlite.backup``).

Everything that can be wrong with the file itself is found here, before any
migration runs, and reported as its own ``DatabaseError``: a missing file or
folder, something that is not SQLite, a file we may not write, a lock held
past the busy timeout. Each check happens before anything is written, and a
file this module created for a connection that then failed is removed again,
so a failed open changes nothing on disk.

Connections are opened with ``isolation_level=None``: Python's sqlite3 then
never begins or commits on its own, and the executor's ``BEGIN IMMEDIATE`` /
``COMMIT`` are the only transaction boundaries.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from planner.errors import (
    DatabaseDamaged,
    DatabaseDirectoryMissing,
    DatabaseError,
    DatabaseLocked,
    DatabaseNotFound,
    DatabaseReadOnly,
    NotADatabase,
)

#: How long a writer waits for another one's lock before giving up, in seconds.
DEFAULT_BUSY_TIMEOUT = 30.0

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def connect(path: Path | str, *, create: bool = False, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
            read: bool = True) -> sqlite3.Connection:
    """Open ``path`` for migrating, or raise the ``DatabaseError`` that says why it cannot be.

    ``create`` allows a missing file (and missing parent folders) to be
    created; without it a missing file is ``DatabaseNotFound``. The first read
    (``PRAGMA schema_version``) happens here, so a file that is not SQLite or a
    database locked past ``busy_timeout`` fails now rather than mid-plan;
    without ``read``, the caller makes it (``wait_for`` with ``sliced=True``),
    inside a transaction of its own: each read outside one takes and lets go of
    the shared lock.
    """
    path = path if isinstance(path, Path) else Path(path)  # Path(Path) parses it again: once per member
    folder = path.parent
    # Each asked once (a fleet opens a file per database): what pathlib's is_dir, exists, is_file and two stats
    # in ``writable`` asked, five times over.
    folder_found = _stat(folder)
    if folder_found is None or not stat.S_ISDIR(folder_found.st_mode):
        if not create:
            raise DatabaseDirectoryMissing(path)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseReadOnly(path) from exc
        folder_found = _stat(folder)
    created = False
    found = _stat(path)
    if found is None:
        if not create:
            raise DatabaseNotFound(path)
        if folder_found is None or not _may_write(folder, folder_found):
            raise DatabaseReadOnly(path, folder=True)
        # O_EXCL tells us whether *we* made the file, so only our own empty
        # file is removed on failure, never one a concurrent process just made.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise DatabaseReadOnly(path) from exc
        found = _stat(path)
    if found is None or not stat.S_ISREG(found.st_mode) or (found.st_size < _HEADER_SIZE and
                                                            not _has_sqlite_header(path)):
        raise NotADatabase(path)  # a folder, a device such as /dev/null, or another kind of file
    try:
        if not _may_write(path, found):
            raise DatabaseReadOnly(path) if _has_sqlite_header(path) else NotADatabase(path)
        if folder_found is None or not _may_write(folder, folder_found):
            # The folder matters too: SQLite writes its journal next to the file.
            raise DatabaseReadOnly(path, folder=True) if _has_sqlite_header(path) else NotADatabase(path)
        # Opened waiting one slice at a time already: wait_for need not set it first.
        conn = sqlite3.connect(str(path), timeout=_SLICE_MS / 1000, isolation_level=None)
        try:
            if read:
                wait_for(conn, "PRAGMA schema_version", path, busy_timeout, sliced=True)
            # The executor's TEMP tables and triggers (the ledger watch, a preview's counters) live in RAM:
            # faster, and no temporary file on disk, not even an unlinked one.
            conn.execute("PRAGMA temp_store = MEMORY")
        except BaseException:
            conn.close()
            raise
    except sqlite3.Error as exc:
        _discard(path, created)
        raise translate_error(exc, path, busy_timeout) or NotADatabase(path) from exc
    except BaseException:
        _discard(path, created)
        raise
    return conn


_MAGIC = b"SQLite format 3\x00"


#: SQLite's header. A file at least this long that is not a database fails SQLite's own check at its first read
#: ("file is not a database"), before anything is written: ``connect`` reads the header itself only of a shorter
#: file, which SQLite may take for an empty database and overwrite (three system calls fewer per file).
_HEADER_SIZE = 100


def _has_sqlite_header(path: Path) -> bool:
    """Whether the file is empty or starts like a SQLite database.

    SQLite itself reads a file shorter than its header as an empty database
    and would overwrite it on the first write, so a short non-SQLite file
    must be caught here.
    """
    if WRITE_LOCKS_HELD and lock_key(path) in WRITE_LOCKS_HELD:
        # This process has the file open with its write lock held. POSIX locks belong to the process, and
        # closing any descriptor of the file drops them all: reading the header here would hand the lock
        # to another writer in the middle of our transaction. The file is a database: we are writing it.
        return True
    return looks_like_sqlite(path)


#: The first bytes of a rollback journal SQLite wrote (``-journal`` beside the database).
_JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")


def looks_like_sqlite(path: str | Path) -> bool:
    """Whether the file is empty, starts like a SQLite database, or is one whose first transaction was cut short.

    SQLite writes a new database's page 1 (the header) last, so a process killed during the first
    transaction leaves pages without a header, beside a journal saying the file was empty. That file is
    SQLite's: opening it rolls the journal back to an empty database. Only SQLite writes that journal magic.
    """
    try:
        # The descriptor alone: ``open()`` would also ask whether the file is a terminal, seek, and stat it.
        file = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            head = os.read(file, len(_MAGIC))
        finally:
            os.close(file)
    except OSError:
        return True  # unreadable: let SQLite report what it finds
    return head == b"" or head == _MAGIC or has_journal(path)


def has_journal(path: str | Path) -> bool:
    """Whether SQLite left a rollback journal beside ``path`` (a transaction cut short, if no process holds it)."""
    try:
        with open(f"{path}-journal", "rb") as journal:
            return journal.read(len(_JOURNAL_MAGIC)) == _JOURNAL_MAGIC
    except OSError:
        return False


def writable(path: Path) -> bool:
    """Whether we may write ``path``."""
    try:
        return _may_write(path, os.stat(path))
    except OSError:
        return False


def _may_write(path: Path, found: os.stat_result) -> bool:
    """Whether we may write ``path`` (``found``: its stat).

    ``os.access`` alone is not enough: root may write anything, yet a file
    with no write bit at all was clearly meant to be left alone.
    """
    return os.access(path, os.W_OK) and bool(found.st_mode & 0o222)


#: The errors ``pathlib`` reads as "not there" (``Path.exists``): any other (a folder it may not search) is raised.
_ABSENT = frozenset((errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP))


def _stat(path: Path) -> os.stat_result | None:
    """``path``'s stat (symlinks followed), ``None`` where ``Path.exists`` says it does not exist."""
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        raise


def translate_error(exc: sqlite3.Error, path: Path, busy_timeout: float) -> DatabaseError | None:
    """The ``DatabaseError`` an SQLite error about the file itself stands for, or ``None``.

    Errors about a migration's own SQL (no such table, constraint failed)
    return ``None``: those belong to the migration, not to the file.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    message = str(exc).lower()
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "database is locked" in message:
        return DatabaseLocked(path, busy_timeout)
    if primary == _SQLITE_NOTADB or "file is not a database" in message:
        return NotADatabase(path)
    if primary == _SQLITE_READONLY or "readonly database" in message:
        return DatabaseReadOnly(path)
    if primary == _SQLITE_CORRUPT or (primary is None and "database disk image is malformed" in message):
        return DatabaseDamaged(path, f"SQLite: {exc}")
    return None


def damaged(exc: BaseException | None, path: Path) -> DatabaseDamaged | None:
    """The ``DatabaseDamaged`` behind ``exc`` (a migration's failure wraps SQLite's own), or ``None``.

    A corrupt page is met by whichever statement reads it: the migration's,
    the ledger's, the COMMIT. Whichever it was, the run must stop as a
    database problem (exit 6, not "the migration failed") and must not try
    to write a failure row into the damaged file.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DatabaseDamaged):
            return exc
        if isinstance(exc, sqlite3.DatabaseError):
            error = translate_error(exc, path, DEFAULT_BUSY_TIMEOUT)
            if isinstance(error, DatabaseDamaged):
                return error
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check`` before a plan whose parts commit separately; ``DatabaseDamaged`` if it fails.

    quick_check reads every page (it skips only index-against-table
    comparisons), so it costs about as much as reading the file once: paid
    only where a half-applied plan could be committed on top of corruption,
    never on the default path, where the plan is one transaction that a
    corrupt page rolls back whole.
    """
    try:
        rows = [" ".join(str(row[0]).split()) for row in conn.execute("PRAGMA quick_check(3)").fetchall()]
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows != ["ok"]:
        raise DatabaseDamaged(path, "PRAGMA quick_check: " + "; ".join(rows), checked_first=True)


def _discard(path: Path, created: bool) -> None:
    """Remove the empty file ``connect`` created, so a failed open leaves nothing behind."""
    if not created:
        return
    try:
        if path.stat().st_size == 0:
            path.unlink()
    except OSError:
        pass


# --------------------------------------------------------------------------
# Copying and checking before risky work
# --------------------------------------------------------------------------


class _PastDeadline(Exception):
    """Raised from the backup API's progress callback to stop waiting for a lock."""


def copy_database(
    source: sqlite3.Connection, destination: sqlite3.Connection, *, path: Path, busy_timeout: float
) -> None:
    """Copy ``source`` into ``destination`` with SQLite's backup API, waiting at most ``busy_timeout`` for locks.

    Python's ``Connection.backup`` retries a locked source forever (it sleeps
    and steps again on SQLITE_BUSY), so ``--busy-timeout`` would mean
    nothing; the progress callback, called after every step, enforces it.
    """
    deadline = time.monotonic() + busy_timeout

    def progress(status: int, remaining: int, total: int) -> None:
        if status in (_SQLITE_BUSY, _SQLITE_LOCKED) and time.monotonic() >= deadline:
            raise _PastDeadline

    try:
        source.backup(destination, progress=progress)
    except _PastDeadline:
        raise DatabaseLocked(path, busy_timeout) from None


#: Files whose write lock this process holds now (a run's open ``BEGIN IMMEDIATE``, by ``lock_key``): the
#: backup before a rollback is taken inside that lock, and must not wait for it.
WRITE_LOCKS_HELD: set[str] = set()


def lock_key(path: Path | str) -> str:
    """One name per file, however it was spelled (relative, through a symlink or a hard link): its inode.

    One ``stat``, where ``realpath`` takes an ``lstat`` per component of the
    path (a fleet run asks once per database). ``stat`` opens no descriptor,
    so asking while the lock is held cannot drop it (``_has_sqlite_header``).
    """
    try:
        found = os.stat(path)
    except OSError:
        return os.path.realpath(path)  # no such file (yet): nobody holds its lock
    return f"{found.st_dev}:{found.st_ino}"


def writable_now(path: Path | str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
    """Raise the ``DatabaseError`` that would stop a write to ``path`` now (read-only, locked), changing nothing.

    Takes the write lock (``BEGIN IMMEDIATE``) and gives it straight back, so
    a rollback can refuse before it writes a backup it would never need. When
    this process holds that lock already (the backup is taken inside it),
    the file is writable and there is nothing to wait for.
    """
    if WRITE_LOCKS_HELD and lock_key(path) in WRITE_LOCKS_HELD:
        return
    conn = connect(Path(path), busy_timeout=busy_timeout)
    try:
        try:
            wait_for(conn, "BEGIN IMMEDIATE", Path(path), busy_timeout)
        except sqlite3.Error as exc:
            raise translate_error(exc, Path(path), busy_timeout) or NotADatabase(Path(path)) from exc
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def read_only_connection(path: Path, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> sqlite3.Connection:
    """A connection that can never create or change the file (URI ``mode=ro``), not even to recover a journal.

    ``doctor`` needs exactly this: it must report a crashed database as it is.
    Everything else uses ``open_read_only``, which recovers first.
    """
    if not _has_sqlite_header(path):
        raise NotADatabase(path)
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
        wait_for(conn, "PRAGMA schema_version", path, busy_timeout)
    except sqlite3.Error as exc:
        raise translate_error(exc, path, busy_timeout) or NotADatabase(path) from exc
    return conn


#: How long SQLite's own busy handler waits at a time; between slices Python runs, so Ctrl-C is heard.
_SLICE_MS = 100


def wait_for(conn: sqlite3.Connection, statement: str, path: Path, busy_timeout: float, *,
             sliced: bool = False, keep_slice: bool = False) -> list:
    """Run ``statement`` (a first read, ``BEGIN IMMEDIATE``), waiting for another process's lock in slices.

    SQLite waits for a lock inside C, where Python's signal handlers cannot
    run: a Ctrl-C would only be heard once the other process let go, up to
    ``busy_timeout`` later. Waiting in 100 ms slices keeps the same total wait
    and lets the interrupt through at once. The connection's own timeout is
    put back afterwards for the statements that follow. ``sliced``: the
    connection was opened with the slice as its timeout (one PRAGMA fewer).
    ``keep_slice``: once the statement succeeded the slice stays, for a caller
    whose next statements cannot wait for a lock (reads inside the read
    transaction this statement began) and whose next ``wait_for`` is
    ``sliced``: two PRAGMAs fewer. The statement's rows are returned.
    """
    # start-up time: planner.engines.sqlite.database runs without planner.events until wait_for() needs it
    from planner.events import Wait

    deadline = time.monotonic() + busy_timeout
    wait = Wait(str(path), busy_timeout)
    if not sliced:
        conn.execute(f"PRAGMA busy_timeout = {_SLICE_MS}")
    rows = None
    try:
        while True:
            try:
                rows = conn.execute(statement).fetchall()
                return rows
            except sqlite3.OperationalError as exc:
                if not isinstance(translate_error(exc, path, busy_timeout), DatabaseLocked):
                    raise
                if time.monotonic() >= deadline:
                    raise
                wait.tick()  # a long wait is told about (planner.events)
    finally:
        if rows is None or not keep_slice:
            set_busy_timeout(conn, busy_timeout)


def set_busy_timeout(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """The connection's own wait for another process's lock, after ``wait_for`` waited in slices."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")


def open_read_only(path: Path | str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> sqlite3.Connection | None:
    """Open an existing database for reading only; ``None`` when the file does not exist.

    After a crash the file may have a hot journal that a read-only connection
    cannot roll back; then one read-write open recovers it (which is exactly
    what the next writer would do) and the read goes ahead.
    """
    path = Path(path)
    if not path.is_file():
        # Asked again: another process may have created the file since the first question (a race, not a folder).
        if path.exists() and not path.is_file():
            raise NotADatabase(path)  # a folder or a device, never "no database yet"
        if not path.exists():
            return None
    try:
        return read_only_connection(path, busy_timeout)
    except DatabaseReadOnly:
        if not writable(path):
            raise
    connect(path, busy_timeout=busy_timeout).close()
    return read_only_connection(path, busy_timeout)


# --------------------------------------------------------------------------
# Foreign key enforcement, around a transaction
# --------------------------------------------------------------------------


def foreign_keys_enabled(conn: sqlite3.Connection) -> bool:
    """Whether the connection enforces foreign keys right now."""
    return bool(conn.execute("PRAGMA foreign_keys").fetchone()[0])


@contextmanager
def foreign_keys_off(conn: sqlite3.Connection, previous: bool | None = None) -> Iterator[None]:
    """Turn enforcement off for the block, then restore what it was, even on failure.

    Must be entered outside any transaction: inside one, ``PRAGMA
    foreign_keys`` is silently ignored. ``previous`` saves the lookup when the
    caller already knows the setting (migrations cannot change it: the
    connection proxy ignores the PRAGMA).
    """
    if previous is None:
        previous = foreign_keys_enabled(conn)
    if previous:
        conn.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        if previous:
            conn.execute("PRAGMA foreign_keys = ON")
