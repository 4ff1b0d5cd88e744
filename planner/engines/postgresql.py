"""PostgreSQL behind the engine boundary, with psycopg 3 (the ``postgres`` extra).

One connection per run, in autocommit mode so transactions are exactly the
ones the runner opens (``conn.transaction()``: BEGIN ... COMMIT/ROLLBACK).
``locked()`` holds a session-level advisory lock for the whole run; the
key is derived from the ledger schema, so runners of one ledger wait for
each other and runners of different ledgers do not. Every message names
the database through ``redact``: a password never reaches the terminal.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.engines.base import Engine
from planner.engines.errors import DatabaseMissing, DatabaseUnreachable, DriverMissing, LockTimeout, ServerError
from planner.engines.pg_ledger import PgLedger
from planner.engines.urls import redact
from planner.gcpause import collector_paused

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.engines.pg_runner import PgRunner
    from planner.ledger import LedgerEntry


_MISSING = re.compile(r'database ".*" does not exist')


def lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory-lock key for one ledger (``apm-migrate:<schema>``)."""
    digest = hashlib.sha256(f"apm-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


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

    @property
    def display(self) -> str:
        return redact(self.url)

    def connect(self) -> Any:
        """An autocommit psycopg connection; a missing driver or an unreachable server is one clear error."""
        try:
            # Importing the driver makes some 23,000 objects, all kept: the cyclic collector's passes during the
            # import (over them, and over a catalog already loaded) find nothing to free (docs/performance.md).
            with collector_paused():
                import psycopg
        except ImportError:
            raise DriverMissing(self.display) from None
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.busy_timeout) or 10))
        except psycopg.Error as exc:
            reason = _reason(exc)
            if _MISSING.search(reason):  # libpq gives no SQLSTATE for it: the server's words are all there is
                raise DatabaseMissing(self.display, reason) from None
            raise DatabaseUnreachable(self.display, reason) from None

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A connection for the block; server errors outside migrations become ``ServerError`` (exit 6)."""
        conn = self.connect()  # first: without the driver, DriverMissing says which extra to install
        import psycopg

        try:
            yield conn
        except psycopg.Error as exc:
            raise ServerError(self.display, _reason(exc)) from None
        finally:
            conn.close()

    @contextmanager
    def locked(self) -> Iterator[Any]:
        """A connection holding the ledger's advisory lock; the server releases it when the connection ends."""
        with self.session() as conn:
            import psycopg

            key = lock_key(self.ledger_schema)
            if self.busy_timeout <= 0:
                if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                    raise LockTimeout(self.display, 0)
            else:
                conn.execute(f"SET lock_timeout = {int(self.busy_timeout * 1000)}")
                try:
                    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                except psycopg.errors.LockNotAvailable:
                    raise LockTimeout(self.display, self.busy_timeout) from None
                conn.execute("SET lock_timeout = 0")  # migrations wait for locks as they would anywhere
            try:
                yield conn
            finally:
                if not conn.closed and not conn.broken:
                    try:
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    except psycopg.Error:
                        pass  # closing the connection releases it anyway

    def exists(self) -> bool:
        try:
            with self.session():
                return True
        except DatabaseUnreachable:
            return False

    def applied(self) -> dict[str, LedgerEntry]:
        """The ledger, read without creating its schema or tables."""
        with self.session() as conn:
            return PgLedger(conn, self.ledger_schema).applied_migrations()

    def history(self, version: str | None = None) -> list:
        with self.session() as conn:
            return PgLedger(conn, self.ledger_schema).history(version)

    def runner(self, *, catalog: Catalog | None = None, create: bool = False) -> PgRunner:
        """``create`` means nothing here: the database must exist on the server (the ledger tables are made)."""
        from planner.engines.pg_runner import PgRunner

        return PgRunner(self, catalog)

    def backup(self, folder: Path | None = None) -> Path | None:
        from planner.engines.pg_backup import dump

        return dump(self.url, folder if folder is not None else self.backup_dir or Path("."))
