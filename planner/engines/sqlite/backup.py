"""Backups of a database: writing, listing, pruning and restoring them.

The seed's guide backed up with ``cp aipm.db aipm.db.backup.$(date ...)`` and
restored with ``cp`` back, which copies a half-written file if anything is
using the database, and leaves the database half-copied if the ``cp`` is
interrupted. Here both directions use SQLite's online backup API:

* **Writing** copies a consistent snapshot into a private file
  (``<db>.backup-partial.<pid>``, never listed as a backup), then publishes it
  under ``<db>.backup.<YYYYmmdd_HHMMSS>`` with a hard link, which cannot
  overwrite another backup. A process killed half-way leaves only its
  partial file, which the next backup removes once its process is gone.
* **Restoring** runs the backup API *into the live database file*. SQLite
  copies every page inside one write transaction on the destination, under
  the destination's lock and busy timeout, with its journal: a process killed
  at any moment leaves the database either as it was (the journal rolls the
  copy back on the next open) or fully restored, and no file of ours behind.

A backup belongs to a database by name: ``<db name>.backup.<stamp>[-n]`` in
the same folder. Pruning deletes only files of that form, oldest first.
"""

from __future__ import annotations

import glob
import os
import sqlite3
import stat
from datetime import datetime
from collections.abc import Iterable
from pathlib import Path

from planner.engines.sqlite.database import (
    DEFAULT_BUSY_TIMEOUT,
    connect,
    copy_database,
    read_only_connection,
    translate_error,
)
from planner.errors import (
    DatabaseDirectoryMissing,
    DatabaseError,
    DatabaseNotFound,
    DatabaseReadOnly,
    NoBackups,
    NotADatabase,
    UnusableBackup,
)
from planner.engines.sqlite.ledger import Ledger
from planner.urls import shown
from planner.ledger import LOG_TABLE, LedgerEntry
from planner.backups import partial_path, remove_abandoned
from planner.backups import BackupInfo, RestoreResult, ledger_difference

__all__ = [
    "backup", "backup_time", "describe_backup", "check_backup", "list_backups", "prune_backups", "restore",
]

_STAMP = "%Y%m%d_%H%M%S"
_PARTIAL = ".backup-partial."


# --------------------------------------------------------------------------
# Writing and listing
# --------------------------------------------------------------------------


def backup(path: Path | str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Path:
    """Copy the database to ``<db>.backup.<YYYYmmdd_HHMMSS>`` and return the copy's path.

    A consistent snapshot even while another process writes, which ``cp`` is
    not. The copy gets the database's permission bits, since it holds the same
    data. A name already taken gets a ``-1``, ``-2``... suffix rather than
    being overwritten.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise DatabaseDirectoryMissing(path)
    if not path.is_file():
        raise DatabaseNotFound(path)
    _remove_abandoned_partials(path)
    source = read_only_connection(path, busy_timeout)
    partial = partial_path(path, _PARTIAL)
    try:
        try:
            destination = sqlite3.connect(str(partial), isolation_level=None)
            try:
                # The partial file is private and thrown away on failure: no journal file beside it.
                destination.execute("PRAGMA journal_mode = MEMORY")
                copy_database(source, destination, path=path, busy_timeout=busy_timeout)
            finally:
                destination.close()
        finally:
            source.close()
        os.chmod(partial, stat.S_IMODE(path.stat().st_mode))
        return _publish(partial, path)
    except sqlite3.Error as exc:
        raise translate_error(exc, path, busy_timeout) or NotADatabase(path) from exc
    finally:
        partial.unlink(missing_ok=True)


def _publish(partial: Path, path: Path) -> Path:
    """Give the finished copy its backup name; a hard link never replaces an existing file."""
    stamp = datetime.now().strftime(_STAMP)
    base = path.with_name(f"{path.name}.backup.{stamp}")
    candidate, n = base, 0
    while True:
        try:
            os.link(partial, candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        except PermissionError as exc:
            raise DatabaseReadOnly(path) from exc
        except OSError:  # a file system without hard links: reserve the name, then move the copy onto it
            try:
                os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                n += 1
                candidate = base.with_name(f"{base.name}-{n}")
                continue
            os.replace(partial, candidate)
            return candidate


def _remove_abandoned_partials(path: Path) -> None:
    """Delete partial copies whose writer no longer runs (it was killed mid-backup)."""
    remove_abandoned(path.parent, f"{path.name}{_PARTIAL}", _PARTIAL)


def list_backups(path: Path | str) -> list[Path]:
    """Backups ``backup`` made of this database (by name, in its folder), oldest first."""
    path = Path(path)
    prefix = f"{path.name}.backup."
    found = [
        p
        for p in path.parent.glob(glob.escape(prefix) + "*")
        if p.is_file() and not p.name.endswith(("-journal", "-wal", "-shm"))
    ]
    return sorted(found, key=lambda p: _sort_key(p.name[len(prefix):]))


def _sort_key(stamp: str) -> tuple[str, int]:
    base, _, suffix = stamp.partition("-")
    return base, int(suffix) if suffix.isascii() and suffix.isdigit() else 0


def backup_time(backup_path: Path, database: Path) -> datetime | None:
    """When a backup was taken, from its name (local time, as written); ``None`` if the name says nothing."""
    prefix = f"{database.name}.backup."
    if not backup_path.name.startswith(prefix):
        return None
    stamp = backup_path.name[len(prefix):].partition("-")[0]
    try:
        return datetime.strptime(stamp, _STAMP)
    except ValueError:
        return None


def prune_backups(path: Path | str, keep: int, spare: Iterable[Path] = ()) -> list[Path]:
    """Delete all but the newest ``keep`` backups of this database; return what was deleted, oldest first.

    Only files named as this database's backups are candidates, so nothing
    else in the folder (another database's backups, the database itself) is
    ever touched. ``spare`` is never deleted, whatever its age: a restore
    spares the backup it restored from, which is the state the user chose
    to go back to and may still need.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    backups = list_backups(path)
    doomed = _without(backups[: max(0, len(backups) - keep)], spare)
    for old in doomed:
        old.unlink(missing_ok=True)
    return doomed


def _without(paths: list[Path], spare: Iterable[Path]) -> list[Path]:
    """``paths`` less any that is the same file as one in ``spare`` (however either is spelled)."""
    spared = {Path(p).resolve() for p in spare}
    return [p for p in paths if p.resolve() not in spared]


# --------------------------------------------------------------------------
# Reading a backup
# --------------------------------------------------------------------------


def describe_backup(backup_path: Path, database: Path) -> BackupInfo:
    """Size, time and ledger of a backup, without the (slow) integrity check."""
    size = backup_path.stat().st_size
    taken = backup_time(backup_path, database)
    try:
        conn = read_only_connection(backup_path)
    except DatabaseError as exc:
        return BackupInfo(backup_path, size, taken, None, _reason(exc))
    try:
        return BackupInfo(backup_path, size, taken, _applied(conn))
    except sqlite3.Error as exc:
        return BackupInfo(backup_path, size, taken, None, f"cannot read its ledger ({exc})")
    finally:
        conn.close()


def _applied(conn: sqlite3.Connection) -> dict[str, LedgerEntry]:
    ledger = Ledger(conn)
    return ledger.applied_migrations() if ledger.exists() else {}


def _reason(error: DatabaseError) -> str:
    if isinstance(error, NotADatabase):
        return "it is not a SQLite database"
    if isinstance(error, DatabaseReadOnly):
        return "it has an unfinished journal beside it (an interrupted write), so it is not a complete copy"
    return str(error)


def check_backup(backup_path: Path | str, database: Path | str) -> dict[str, LedgerEntry]:
    """The ledger a backup would restore, after ``PRAGMA integrity_check`` on a read-only connection.

    Raises ``UnusableBackup`` (nothing changed) for a missing file, a file that
    is not SQLite, or one that fails the check: restoring it would replace a
    working database with a broken one.
    """
    backup_path, database = Path(backup_path), Path(database)
    if not backup_path.is_file():
        raise UnusableBackup(backup_path, "no such file", database=database)
    try:
        conn = read_only_connection(backup_path)
    except DatabaseError as exc:
        raise UnusableBackup(backup_path, _reason(exc), database=database) from exc
    try:
        try:
            verdict = [row[0] for row in conn.execute("PRAGMA integrity_check(5)")]
            if verdict != ["ok"]:
                raise UnusableBackup(backup_path, f"PRAGMA integrity_check reports {'; '.join(verdict)}",
                                     database=database)
            return _applied(conn)
        except sqlite3.Error as exc:
            raise UnusableBackup(backup_path, f"it cannot be read ({exc})", database=database) from exc
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Restoring
# --------------------------------------------------------------------------


def newest_backup(database: Path | str) -> Path:
    """The backup a restore uses when none is named, or ``NoBackups``."""
    database = Path(database)
    backups = list_backups(database)
    if not backups:
        raise NoBackups(database)
    return backups[-1]


def restore(database: Path | str, backup_path: Path | str, *,
            busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> RestoreResult:
    """Replace the database's content with the backup's, keeping the current content as a new backup first.

    The backup is checked (``check_backup``) before anything is written. The
    copy into the live file is one SQLite write transaction, so it is all or
    nothing even under SIGKILL, and it waits for other processes' locks up to
    ``busy_timeout`` (then ``DatabaseLocked``, nothing changed). A database
    that is missing is created from the backup (its folder must exist).
    """
    database, backup_path = Path(database), Path(backup_path)
    if backup_path.resolve() == database.resolve():
        raise UnusableBackup(backup_path, "it is the database itself", database=database)
    restored = check_backup(backup_path, database)
    _remove_abandoned_partials(database)
    if not database.parent.is_dir():
        raise DatabaseDirectoryMissing(database)
    current: dict[str, LedgerEntry] = {}
    safety: Path | None = None
    if database.exists():
        conn = connect(database, busy_timeout=busy_timeout)  # recovers a hot journal; refuses a non-SQLite file
        try:
            current = _applied(conn)
        finally:
            conn.close()
        safety = backup(database, busy_timeout=busy_timeout)
    try:
        _copy_into(backup_path, database, busy_timeout)
    except BaseException:
        if safety is not None:  # the database is unchanged, so its fresh copy is only clutter
            safety.unlink(missing_ok=True)
        raise
    if safety is not None:
        _log_restore(database, backup_path, safety, busy_timeout)
    return RestoreResult(shown(database), backup_path, safety, ledger_difference(current, restored))


#: The version a restore's row in the run log carries: it is about the whole database, not one migration.
RESTORE_VERSION = "-"


def _log_restore(database: Path, backup_path: Path, safety: Path, busy_timeout: float) -> None:
    """The run log's trace of a restore, when the restored content has a log: doctor reads it, and never offers
    the safety copy, whose restore would undo this one, as a fix. Best effort: the restore itself is done."""
    try:
        conn = connect(database, busy_timeout=busy_timeout)
        try:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LOG_TABLE,)).fetchone():
                with conn:
                    Ledger(conn).log(RESTORE_VERSION, "restore", "ok", detail=f"restored from {backup_path.name}; "
                                                                              f"the database as it was is in {safety.name}")
        finally:
            conn.close()
    except sqlite3.Error:
        pass  # the data are restored; only the trace is missing


def _copy_into(backup_path: Path, database: Path, busy_timeout: float) -> None:
    """The backup API into the live file: one write transaction on the destination, journal and all."""
    source = read_only_connection(backup_path, busy_timeout)
    try:
        destination = connect(database, create=True, busy_timeout=busy_timeout)
        try:
            copy_database(source, destination, path=database, busy_timeout=busy_timeout)
        except sqlite3.Error as exc:
            raise translate_error(exc, database, busy_timeout) or exc
        finally:
            destination.close()
    finally:
        source.close()
