"""SQLite behind the engine boundary: the original modules, unchanged, seen through ``Engine``.

``planner.engines.sqlite.runner.Executor`` already is a ``PlanRunner``; the ledger is
read with ``planner.engines.sqlite.ledger.read_ledger`` and backups use SQLite's online
backup API (``planner.engines.sqlite.backup``). Nothing here adds behaviour: it names what
the SQLite modules already do, so the CLI can ask an engine instead of a path.

``SQLiteDatabase`` is what the pytest plugin needs of SQLite (``EngineKind.testing``):
a test database, one file a test may create, throw away and connect to.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from collections.abc import Hashable, Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from planner.engines.base import Backups, Engine
from planner.engines.sqlite.database import DEFAULT_BUSY_TIMEOUT, check_integrity, open_read_only, writable_now
from planner.engines.sqlite.ledger import read_history, read_ledger, read_notes
from planner.errors import DatabaseDirectoryMissing, DatabaseNotFound, NotADatabase

if TYPE_CHECKING:
    from planner.backups import BackupInfo, RestoreResult
    from planner.catalog import Catalog
    from planner.engines.sqlite.runner import Executor
    from planner.findings import Finding
    from planner.ledger import LedgerEntry, LedgerNote, LogEntry
    from planner.schema import Difference, Replay, Schema


#: What ``stat`` says of a path that names no file (``Path.exists`` answers False to these, raises the rest).
_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


class SQLiteEngine(Engine):
    """A SQLite file."""

    name = "sqlite"

    def __init__(self, path: Path | str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT):
        """Refuses a path that is there but is no file (a folder, a device): ``NotADatabase``, for every command.

        Checked once here, because each command asks something else first
        (does it exist? its ledger if it does? its backups?), and a folder
        answered "does not exist" to some of them and "no backup" to others.
        """
        self.path = path if isinstance(path, Path) else Path(path)  # Path(Path) parses it again: once per member
        self.busy_timeout = busy_timeout
        try:
            found = os.stat(self.path).st_mode  # one stat for "there, and not a file" (a fleet makes one per member)
        except OSError as exc:
            if exc.errno not in _MISSING:
                raise
            found = None
        except ValueError:  # a NUL in the path names no file
            found = None
        if found is not None and not stat.S_ISREG(found):
            raise NotADatabase(self.path)
        self._backups: SQLiteBackups | None = None

    @property
    def display(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def require(self) -> None:
        if not self.path.exists():
            raise DatabaseNotFound(self.path) if self.path.parent.is_dir() else DatabaseDirectoryMissing(self.path)

    def applied(self) -> dict[str, LedgerEntry]:
        return read_ledger(self.path, self.busy_timeout)

    def history(self, version: str | None = None) -> list[LogEntry]:
        return read_history(self.path, self.busy_timeout, version)

    def schema(self, *, known_good: bool = False) -> Schema:
        """The file's schema (``planner.engines.sqlite.schema``), read through a read-only connection.

        ``known_good``: the caller just read the file as a database, so its header need not be checked again.
        """
        # start-up time: planner.engines.sqlite runs without planner.engines.sqlite.schema until schema() needs it
        from planner.engines.sqlite.schema import file_schema

        return file_schema(self.path, self.busy_timeout, known_good=known_good)

    def drift(self, catalog: Catalog, applied: Iterable[str], replays: dict[Hashable, Replay], *,
              objects: list[Any] | None = None) -> list[Difference]:
        """Replayed in memory (``planner.engines.sqlite.schema.replay``), one replay per applied set; the live
        schema from ``objects`` (``sqlite_master``'s rows, read with the ledger) when its tables were seen before."""
        # start-up time: planner.engines.sqlite runs without planner.engines.sqlite.schema until drift() needs it
        from planner.engines.sqlite.schema import known_schema, replay

        # start-up time: planner.engines.sqlite runs without planner.schema until drift() needs it
        from planner.schema import compare

        key = frozenset(applied)
        if key not in replays:
            replays[key] = replay(catalog, key, self.display)
        live = known_schema(objects) if objects is not None else None
        return compare(replays[key], live or self.schema(known_good=objects is not None))

    def runner(self, *, catalog: Catalog | None = None, create: bool = False) -> Executor:
        # start-up time: planner.engines.sqlite runs without planner.engines.sqlite.runner until runner() needs it
        from planner.engines.sqlite.runner import Executor

        return Executor(self.path, busy_timeout=self.busy_timeout, create=create, catalog=catalog)

    def applied_if_exists(self) -> dict[str, LedgerEntry] | None:
        return self.applied() if self.path.is_file() else None

    def notes(self) -> list[LedgerNote]:
        return read_notes(self.path, self.busy_timeout)

    def diagnose(self, catalog_dir: Path) -> list[Finding]:
        # start-up time: planner.engines.sqlite runs without planner.engines.sqlite.doctor until diagnose() needs it
        from planner.engines.sqlite.doctor import diagnose

        return diagnose(self.path, catalog_dir, busy_timeout=self.busy_timeout)

    def check_integrity(self) -> None:
        conn = open_read_only(self.path, self.busy_timeout)
        if conn is not None:  # nothing there yet: nothing to be damaged
            try:
                check_integrity(conn, self.path)
            finally:
                conn.close()

    @property
    def backups(self) -> SQLiteBackups:
        if self._backups is None:
            self._backups = SQLiteBackups(self.path, self.busy_timeout)
        return self._backups

    def read_rows(self, table: str) -> list[dict[str, object]] | None:
        """Read-only, so neither the file nor a journal is created; ``DatabaseNotFound`` when there is no file."""

        conn = open_read_only(self.path, self.busy_timeout)
        if conn is None:
            raise DatabaseNotFound(self.path)
        try:
            conn.row_factory = sqlite3.Row
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is None:
                return None
            # start-up time: planner.engines.sqlite runs without planner.sql (its dialects) until a table is read
            from planner.sql import quote_identifier

            return [dict(row) for row in conn.execute(f"SELECT * FROM {quote_identifier(table)}").fetchall()]
        finally:
            conn.close()


def _backup() -> ModuleType:
    # start-up time: an apply takes no backup, so apm migrate runs without planner.engines.sqlite.backup (and
    # planner.backups, glob) until a backup is wanted
    from planner.engines.sqlite import backup

    return backup


class SQLiteBackups(Backups):
    """Copies beside the file, ``NAME.backup.STAMP``, made with SQLite's online backup (``sqlite.backup``)."""

    def __init__(self, path: Path, busy_timeout: float):
        self.path, self.busy_timeout = path, busy_timeout
        self.display = str(path)

    @property
    def short_name(self) -> str:
        return self.path.name

    @property
    def names(self) -> str:
        return f"{self.path.name}.backup.*"

    def take(self, folder: Path | None = None) -> Path | None:
        """SQLite's backups sit beside the file (``planner.engines.sqlite.backup``); ``folder`` is not used."""
        if not self.path.exists():
            return None
        writable_now(self.path, self.busy_timeout)
        return _backup().backup(self.path, busy_timeout=self.busy_timeout)

    def prune(self, keep: int, folder: Path | None = None, spare: Iterable[Path] = ()) -> list[Path]:
        return _backup().prune_backups(self.path, keep, spare)

    def files(self) -> list[Path]:
        return _backup().list_backups(self.path)

    def describe(self, backup: Path) -> BackupInfo:
        return _backup().describe_backup(backup, self.path)

    def check(self, backup: Path) -> dict[str, LedgerEntry]:
        return _backup().check_backup(backup, self.path)

    def restore(self, backup: Path, *, all_schemas: bool = False) -> RestoreResult:
        return _backup().restore(self.path, backup, busy_timeout=self.busy_timeout)


def open_engine(db: str | Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT, **_server_options: object) -> SQLiteEngine:
    """The registry's entry (``planner.engines.KINDS``): a file needs no ledger schema or backup folder."""
    return SQLiteEngine(db, busy_timeout=busy_timeout)


# -- the pytest plugin's test databases (EngineKind.testing) --------------------------------------


class _TestConnection(sqlite3.Connection):
    """A ``sqlite3`` connection that says which engine it is, as a migration's connection does."""

    engine = "sqlite"


class SQLiteDatabase:
    """One SQLite file that a migration test may create, throw away and connect to."""

    engine_name = "sqlite"

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @classmethod
    def from_template(cls, template: str, name: str) -> SQLiteDatabase:
        """The file ``template`` names for the test ``name`` (``{name}`` replaced by a safe form of it)."""
        # start-up time: apm loads this module for every run; the plugin's template rules only for a test
        from planner.testing.databases import NAME_FIELD, check_template, safe_name

        return cls(Path(check_template(template).replace(NAME_FIELD, safe_name(name))))

    def engine(self) -> Engine:
        return open_engine(self.path)

    def reset(self) -> None:
        """Start from nothing: remove the file and its journals, so each test meets a fresh database.

        A template may name the same file on every run; yesterday's run must
        not be today's starting schema.
        """
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def drop(self) -> None:
        """Nothing: the file stays under pytest's temporary folder (or the template's), to look at after a failure."""

    def connect(self) -> sqlite3.Connection:
        """A connection for reading the schema or writing seed rows, in autocommit mode with foreign keys on.

        Autocommit, so no transaction is left open to block the executor's
        ``BEGIN IMMEDIATE``; foreign keys on, so a seed row pointing nowhere
        fails where it is written rather than in the next migration's check.
        """
        conn = sqlite3.connect(str(self.path), isolation_level=None, factory=_TestConnection)
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def seeding(self, version: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN`` ... ``COMMIT`` around a seed, so its rows land together or (it raised) not at all."""
        with closing(self.connect()) as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if conn.in_transaction:
                conn.execute("COMMIT")

    def capture(self) -> Schema:
        # start-up time: planner.engines.sqlite runs without planner.engines.sqlite.schema until capture() needs it
        from planner.engines.sqlite.schema import read_schema

        with closing(self.connect()) as conn:
            return read_schema(conn)

    def leftovers(self) -> list[str]:
        return self.capture().names()

    def broken(self) -> dict[str, str]:
        # start-up time: planner.engines.sqlite runs without planner.engines.sqlite.schema until broken() needs it
        from planner.engines.sqlite.schema import broken_objects

        with closing(self.connect()) as conn:
            return broken_objects(conn)

    def snapshot(self) -> Schema:
        """``planner.schema.Schema``: tables with columns, keys and row counts, indexes, triggers, views."""
        # start-up time: planner.engines.sqlite runs without planner.engines.sqlite.schema until snapshot() needs it
        from planner.engines.sqlite.schema import read_schema

        with closing(self.connect()) as conn:
            return read_schema(conn, count_rows=True)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"SQLiteDatabase({str(self.path)!r})"


class SQLiteDatabases:
    """The files a SQLite ``--apm-db`` template names, one per test; kept after the test, for looking at."""

    drops = False

    def __init__(self, template: str):
        self.template = template

    def new(self, name: str) -> SQLiteDatabase:
        return SQLiteDatabase.from_template(self.template, name)

    def close(self) -> None:
        """Nothing to disconnect: each test's connections are its own."""


def databases_for(template: str) -> SQLiteDatabases:
    """The pytest plugin's test databases for a SQLite template (``planner.testing.databases.databases_for``)."""
    return SQLiteDatabases(template)
