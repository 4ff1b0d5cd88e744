"""Where migration tests run: a small database object per engine, and the ``--apm-db`` template naming one.

The runner, the stairway and the migrator reach a database only through
``TestDatabase``: ``reset`` it, get its ``engine()`` (the same
``planner.engines`` object ``apm migrate`` uses, so tests run migrations
with the production guarantees), ``seeding`` a transaction for seed rows,
``capture`` a schema state to compare, list its ``leftovers``, ``connect``
for a hand-written test, and ``drop`` it afterwards. ``SQLiteDatabase`` is
here; ``planner.testing.pg_database.PostgresDatabase`` is the PostgreSQL one.

A template is a SQLite path containing ``{name}``, or a PostgreSQL URL (the
server on which one database per test is created; ``{name}`` is optional).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from planner.engines import engine_for, on_server
from planner.urls import database_name, redact

if TYPE_CHECKING:
    from planner.engines.base import Engine
    from planner.schema import Schema

#: What ``{name}`` in a template is replaced by may hold only these characters.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
NAME_FIELD = "{name}"
#: What a user who lacks the driver is told to install (as ``apm migrate`` says it).
DRIVER_HINT = "pip install 'apm-migrate[postgres]'"


class DatabaseTemplateError(ValueError):
    """An ``--apm-db`` value that cannot name a fresh database per test."""


class DatabaseUnavailable(Exception):
    """The server behind ``--apm-db`` cannot give tests databases: said once per session, then tests skip.

    ``repeated`` is false the first time: that test fails with the reason;
    every later one is skipped pointing at it, rather than forty failures
    each with the same connection error.
    """

    def __init__(self, message: str, repeated: bool = False):
        self.message = message
        self.repeated = repeated
        super().__init__(message if not repeated else f"{message} (reported once, by the first test that needed it)")


class TestDatabase(Protocol):
    """What the runner, the stairway and the migrator may do with a test database; nothing else."""

    #: ``"sqlite"`` or ``"postgresql"``: what ``connection.engine`` says to seed hooks and hand-written tests.
    engine_name: str

    def engine(self) -> Engine:
        """The engine that runs plans and reads the ledger here (``planner.engines.engine_for``)."""

    def reset(self) -> None:
        """Make the database empty, whatever an earlier (perhaps killed) run left under the same name."""

    def drop(self) -> None:
        """Throw the database away once its test is over (a SQLite file stays, for looking at after a failure)."""

    def connect(self) -> Any:
        """An autocommit connection for a hand-written test, with ``engine``, ``execute`` and ``close``."""

    def seeding(self, version: str) -> Any:
        """A context manager: a connection inside one transaction, committed on exit, rolled back on error."""

    def capture(self) -> Schema:
        """The schema now, as the stairway compares it (``Schema.differences``), rows not counted."""

    def leftovers(self) -> list[str]:
        """Every user object a fresh database did not have (``table orders``...), the ledger left out."""

    def snapshot(self) -> Schema:
        """The schema with what the engine can add (SQLite: row counts), for hand-written assertions (``Migrator.schema``)."""

    def broken(self) -> dict[str, str]:
        """Each view and trigger that no longer compiles (``view v``), with the reason: none, on a sound schema."""


def safe_name(text: str) -> str:
    """``stairway[0027]`` → ``stairway-0027``: a test id usable in a file name."""
    return _UNSAFE.sub("-", text).strip("-.") or "test"


def check_template(template: str) -> str:
    """``template`` if it can name one database per test, else ``DatabaseTemplateError`` saying why.

    A SQLite template without ``{name}`` would make every test share one
    file, so one test's leftovers would become the next one's failure. A
    PostgreSQL URL names a server and the database to connect to first; the
    per-test databases are named after it, so ``{name}`` is optional there.
    """
    if on_server(template):
        if NAME_FIELD in template and (template.count(NAME_FIELD) > 1 or NAME_FIELD not in database_name(template)):
            raise DatabaseTemplateError(
                f"--apm-db {redact(template)}: {NAME_FIELD} may appear once, in the database name "
                f"(postgresql://user@host/app_{NAME_FIELD}), or be left out (the test's name is then appended "
                f"to the database name)"
            )
        return template
    url = _URL.match(template)
    if url:
        scheme = url.group(1).lower()
        raise DatabaseTemplateError(
            f"--apm-db {redact(template)}: {scheme}:// URLs are not supported; give a SQLite path template "
            f"such as /tmp/apm/{NAME_FIELD}.db, or a postgresql:// URL"
        )
    if NAME_FIELD not in template:
        example = (f"{template.rstrip('/')}/{NAME_FIELD}.db" if not template.endswith(".db")
                   else f"{template[:-3]}-{NAME_FIELD}.db")
        raise DatabaseTemplateError(
            f"--apm-db {template}: the template must contain {NAME_FIELD} (each test gets its own file), "
            f"for example {example}"
        )
    return template


def require_driver(template: str) -> None:
    """``DatabaseTemplateError`` naming the extra to install when a PostgreSQL URL is given without psycopg."""
    if not on_server(template):
        return
    try:  # optional dependency: psycopg, the postgresql extra
        import psycopg  # noqa: F401
    except ImportError:
        raise DatabaseTemplateError(
            f"--apm-db {redact(template)} is a PostgreSQL server, and the PostgreSQL driver is not installed: "
            f"{DRIVER_HINT}"
        ) from None


class _Connection(sqlite3.Connection):
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
        return cls(Path(check_template(template).replace(NAME_FIELD, safe_name(name))))

    def engine(self) -> Engine:
        return engine_for(self.path)

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
        conn = sqlite3.connect(str(self.path), isolation_level=None, factory=_Connection)
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
        # start-up time: planner.testing.databases runs without planner.engines.sqlite.schema until capture() needs it
        from planner.engines.sqlite.schema import read_schema

        with closing(self.connect()) as conn:
            return read_schema(conn)

    def leftovers(self) -> list[str]:
        return self.capture().names()

    def broken(self) -> dict[str, str]:
        # start-up time: planner.testing.databases runs without planner.engines.sqlite.schema until broken() needs it
        from planner.engines.sqlite.schema import broken_objects

        with closing(self.connect()) as conn:
            return broken_objects(conn)

    def snapshot(self) -> Schema:
        """``planner.schema.Schema``: tables with columns, keys and row counts, indexes, triggers, views."""
        # start-up time: planner.testing.databases runs without planner.engines.sqlite.schema until snapshot() needs it
        from planner.engines.sqlite.schema import read_schema

        with closing(self.connect()) as conn:
            return read_schema(conn, count_rows=True)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"SQLiteDatabase({str(self.path)!r})"
