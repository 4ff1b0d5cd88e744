"""PostgreSQL behind the engine boundary, with psycopg 3 (the ``postgres`` extra).

One connection per run, in autocommit mode so transactions are exactly the
ones the runner opens (``conn.transaction()``: BEGIN ... COMMIT/ROLLBACK).
``locked()`` holds a session-level advisory lock for the whole run; the
key is derived from the ledger schema, so runners of one ledger wait for
each other and runners of different ledgers do not. Every message names
the database through ``redact``: a password never reaches the terminal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.catalog import collector_paused
from planner.engines.base import Backups, Engine
from planner.engines.postgresql.ledger import PgLedger, lock_key, quote
from planner.engines.postgresql.schema import own_schemas, read_schema
from planner.errors import DatabaseLocked, DatabaseMissing, DatabaseUnreachable, DriverMissing, ServerError
from planner.events import Wait
from planner.urls import database_name, display_name, redact, unencoded_password

if TYPE_CHECKING:
    from planner.backups import BackupInfo, RestoreResult
    from planner.catalog import Catalog
    from planner.engines.postgresql.runner import PgRunner
    from planner.findings import Finding
    from planner.ledger import LedgerEntry, LogEntry
    from planner.schema import Difference, Replay, Schema


_MISSING = re.compile(r'database ".*" does not exist')


def _reason(exc: BaseException) -> str:
    """The first line of a server or libpq message, with any password masked."""
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


class PostgresEngine(Engine):
    """A PostgreSQL database, named by a URL or a libpq connection string."""

    name = "postgresql"

    def __init__(self, url: str, *, busy_timeout: float = 30.0, ledger_schema: str = "public",
                 backup_dir: Path | None = None):
        self.url = url
        self.busy_timeout = busy_timeout
        self.ledger_schema = ledger_schema
        self.backup_dir = backup_dir
        self._reader: Any = None  # the connection ``reading()`` shares, while it lasts
        self._tenant: bool | None = None
        self._backups: PgBackups | None = None

    @property
    def tenant(self) -> bool:
        """Whether the ledger's schema is a tenant's: not ``public``, and where the connection puts its tables
        (first on its ``search_path``, as ``url#schema`` or ``options=-csearch_path=...`` sets it).

        A tenant's backups hold its schema alone and its restore replaces that
        schema alone: the other tenants of the database are not its to put back.
        A ledger kept in its own schema beside tables in ``public`` is no tenant.
        """
        if self._tenant is None:
            if self.ledger_schema == "public":
                self._tenant = False
            else:
                with self.session() as conn:
                    self._tenant = own_schemas(conn, self.ledger_schema)
        return self._tenant

    @property
    def display(self) -> str:
        """The database as every command and ``apm fleet`` name it: a tenant as ``url#schema``, no password."""
        return display_name(self.url, self.ledger_schema)

    def connect(self) -> Any:
        """An autocommit psycopg connection; a missing driver or an unreachable server is one clear error."""
        try:
            # optional dependency: psycopg, the postgresql extra (DriverMissing says how to install it).
            # Importing the driver makes some 23,000 objects, all kept: the cyclic collector's passes during the
            # import (over them, and over a catalog already loaded) find nothing to free (docs/performance.md).
            with collector_paused():
                import psycopg
        except ImportError:
            raise DriverMissing(self.display) from None
        unreadable = unencoded_password(self.url)  # libpq would quote pieces of that password in its error
        if unreadable:
            raise DatabaseUnreachable(self.display, f"its password holds {unreadable}, which a URL must percent-encode")
        try:
            # A DBA tells apm's sessions apart in pg_stat_activity (as apm names theirs); a name the URL or
            # PGAPPNAME gives wins.
            return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.busy_timeout) or 10),
                                   fallback_application_name="apm")
        except psycopg.Error as exc:
            reason = _reason(exc)
            if _MISSING.search(reason):  # libpq gives no SQLSTATE for it: the server's words are all there is
                raise DatabaseMissing(self.display, reason) from None
            raise DatabaseUnreachable(self.display, reason) from None

    @contextmanager
    def session(self, *, shared: bool = True) -> Iterator[Any]:
        """A connection for the block; server errors outside migrations become ``ServerError`` (exit 6).

        Inside ``reading()`` the reads of one command share its connection
        (``shared``); a run's lock, and the doctor's probes, always get their own.
        """
        reader = self._reader if shared else None
        conn = reader if reader is not None else self.connect()  # without the driver: DriverMissing, the extra
        # optional dependency: psycopg is installed with an extra
        import psycopg

        try:
            yield conn
        except psycopg.Error as exc:
            raise ServerError(self.display, _reason(exc)) from None
        finally:
            if conn is not reader:
                conn.close()

    def schema(self) -> Schema:
        """The database's schema (``planner.engines.postgresql.schema``), the ledger's tables left out."""
        with self.session() as conn:
            return read_schema(conn, self.ledger_schema)

    def drift(self, catalog: Catalog, applied: Iterable[str], replays: dict[Hashable, Replay], *,
              objects: list[Any] | None = None) -> list[Difference]:
        """Replayed into a scratch database on the same server (``planner.engines.postgresql.drift``)."""
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.drift until drift() needs it
        from planner.engines.postgresql.drift import differences

        return differences(self, catalog, applied, replays)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One connection for every read of the block: each connection costs the server a new backend."""
        with self.session(shared=False) as conn:
            self._reader = conn
            try:
                yield
            finally:
                self._reader = None

    @contextmanager
    def locked(self) -> Iterator[Any]:
        """A connection holding the ledger's advisory lock; the server releases it when the connection ends."""
        with self.session(shared=False) as conn:
            # optional dependency: psycopg is installed with an extra
            import psycopg


            key = lock_key(self.ledger_schema)
            # Polled, not waited for inside pg_advisory_lock(): a runner blocked in a statement has a
            # transaction open, and another runner's CREATE INDEX CONCURRENTLY waits for every open
            # transaction, so the two would deadlock (the server kills one; the index is left invalid).
            # Between polls this runner holds nothing, and Ctrl-C is heard within a slice.
            deadline = time.monotonic() + max(0.0, self.busy_timeout)
            wait = Wait(self.display, self.busy_timeout)
            while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                if time.monotonic() >= deadline:
                    raise DatabaseLocked(self.display, self.busy_timeout, migration_lock=True)
                wait.tick()  # a long wait is told about (planner.events)
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            try:
                self._tenant = own_schemas(conn, self.ledger_schema)  # the run reads (and locks) its own only
                yield conn
            finally:
                if not conn.closed and not conn.broken:
                    try:
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    except psycopg.Error:
                        pass  # closing the connection releases it anyway

    def exists(self) -> bool:
        if self._reader is not None:
            return True
        try:
            with self.session():
                return True
        except DatabaseUnreachable:
            return False

    def require(self) -> None:
        """Nothing to ask first: connecting says ``DatabaseMissing`` for a database the server does not have."""

    def applied(self) -> dict[str, LedgerEntry]:
        """The ledger, read without creating its schema or tables."""
        with self.session() as conn:
            return PgLedger(conn, self.ledger_schema).applied_migrations()

    def history(self, version: str | None = None) -> list[LogEntry]:
        with self.session() as conn:
            return PgLedger(conn, self.ledger_schema).history(version)

    def runner(self, *, catalog: Catalog | None = None, create: bool = False) -> PgRunner:
        """``create`` means nothing here: the database must exist on the server (the ledger tables are made)."""
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.runner until runner() needs it
        from planner.engines.postgresql.runner import PgRunner

        return PgRunner(self, catalog)

    def applied_if_exists(self) -> dict[str, LedgerEntry] | None:
        """``None`` for a database the server does not have; an unreachable server is still an error."""
        try:
            return self.applied()
        except DatabaseMissing:
            return None

    def diagnose(self, catalog_dir: Path) -> list[Finding]:
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.doctor until diagnose() needs it
        from planner.engines.postgresql.doctor import diagnose_postgres

        return diagnose_postgres(self, catalog_dir, self.backup_dir)

    @property
    def backups(self) -> PgBackups:
        if self._backups is None:
            self._backups = PgBackups(self)
        return self._backups

    def read_rows(self, table: str) -> list[dict[str, object]] | None:
        """The table as the connection's ``search_path`` finds it."""
        # optional dependency: psycopg is installed with an extra
        import psycopg


        with self.session() as conn:
            try:  # autocommit: a failed statement aborts no transaction, so ask directly
                cursor = conn.execute(f"SELECT * FROM {quote(table)}")
            except psycopg.errors.UndefinedTable:
                return None
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class PgBackups(Backups):
    """``pg_dump`` files in the backup folder (``postgresql.backup``), restored by ``pg_restore`` (``postgresql.restore``)."""

    def __init__(self, engine: PostgresEngine):
        self.engine = engine
        self.url, self.schema = engine.url, engine.ledger_schema
        self.display = engine.display

    @property
    def folder(self) -> Path:
        return self.engine.backup_dir if self.engine.backup_dir is not None else Path(".")

    @property
    def short_name(self) -> str:
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.connection until a backup is named
        from planner.engines.postgresql.connection import database_of

        return database_of(self.url)

    @property
    def names(self) -> str:
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.backup until names() needs it
        from planner.engines.postgresql.backup import dump_stem

        return f"{dump_stem(self.url, self.schema)}.*.dump in {self.folder}"

    def take(self, folder: Path | None = None) -> Path | None:
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.backup until take() needs it
        from planner.engines.postgresql.backup import dump

        return dump(self.url, folder if folder is not None else self.folder,
                    lock_wait=self.engine.busy_timeout, schema=self.schema, only_schema=self.engine.tenant,
                    connect=self.engine.connect)

    def prune(self, keep: int, folder: Path | None = None, spare: Iterable[Path] = ()) -> list[Path]:
        """This database's dumps in the folder, all but the newest ``keep`` (no other file there is touched)."""
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.backup until prune() needs it
        from planner.engines.postgresql.backup import prune_dumps

        return prune_dumps(self.url, folder if folder is not None else self.folder, keep, spare, self.schema)

    def files(self) -> list[Path]:
        """This database's dumps; partial ones a killed ``apm`` left behind are removed first."""
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.backup until files() needs it
        from planner.engines.postgresql.backup import list_dumps, remove_abandoned_dumps

        remove_abandoned_dumps(self.url, self.folder, self.schema)
        return list_dumps(self.url, self.folder, self.schema)

    def describe(self, backup: Path) -> BackupInfo:
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.backup until describe() needs it
        from planner.engines.postgresql.backup import describe_dump

        return describe_dump(self.engine, backup)

    def check(self, backup: Path) -> dict[str, LedgerEntry]:
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.backup until check() needs it
        from planner.engines.postgresql.backup import read_dump_ledger

        return read_dump_ledger(backup, self.schema, self.display)

    def restore(self, backup: Path, *, all_schemas: bool = False) -> RestoreResult:
        """A tenant's restore replaces its schema alone unless ``all_schemas`` (``--all-schemas``) asks for
        everything the dump holds."""
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.backup until restore() needs it
        from planner.engines.postgresql.backup import restore_dump

        return restore_dump(self.engine, backup, self.folder, all_schemas=all_schemas)

    def left_in_place(self, backup: Path, *, all_schemas: bool = False) -> list[str]:
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.backup until left_in_place() needs it
        from planner.engines.postgresql.backup import objects_left_in_place

        return objects_left_in_place(self.engine, backup, all_schemas=all_schemas)

    def other_ledgers(self, backup: Path, *, all_schemas: bool = False) -> list[str]:
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.backup until other_ledgers() needs it
        from planner.engines.postgresql.backup import ledgers_besides

        return ledgers_besides(self.engine, backup, all_schemas=all_schemas)

    def ledgers_in_backup(self, backup: Path, *, all_schemas: bool = False) -> list[str]:
        # start-up time: planner.engines.postgresql runs without planner.engines.postgresql.backup until ledgers_in_backup() needs it
        from planner.engines.postgresql.backup import ledgers_in_dump

        return ledgers_in_dump(self.engine, backup, all_schemas=all_schemas)


def open_engine(db: str | Path, *, busy_timeout: float = 30.0, ledger_schema: str = "public",
                backup_dir: Path | None = None) -> PostgresEngine:
    """The registry's entry (``planner.engines.KINDS``)."""
    return PostgresEngine(str(db), busy_timeout=busy_timeout, ledger_schema=ledger_schema, backup_dir=backup_dir)
