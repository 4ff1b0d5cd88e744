"""PostgreSQL test databases: one per test, created on the ``--apm-db`` server and dropped afterwards.

``--apm-db postgresql://me@host/app`` names a server and a database the
plugin may connect to (the *maintenance* connection, one per session); each
test then gets a database of its own, ``app_<test name>``
(``app_stairway``, ``app_downgrade_all``). A URL whose database name holds
``{name}`` (``postgresql://me@host/ci_{name}``) puts the test's name there
instead, and connects to the server's ``postgres`` database for the
maintenance. A name longer than PostgreSQL's 63 bytes ends in a short hash
of the whole name, so two long test names never share a database.

``reset`` drops a database of that name first (a run killed before it
could clean up left it behind), as SQLite's reset deletes the file; ``drop``
removes it after the test, with ``WITH (FORCE)`` on PostgreSQL 13 and later
(earlier servers: the other sessions are ended first). If the server cannot
be reached, or refuses ``CREATE DATABASE``, the first test that needs it is
told why and every later one is skipped (``DatabaseUnavailable``).

Migrations run through ``planner.engines.engine_for(url)``, the engine
``apm migrate`` uses: the advisory lock, one transaction per step with its
ledger row, ``transactional = False`` steps. A password in the URL is only
ever shown through ``redact``; it is never part of a database name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from planner.engines import engine_for
from planner.engines.postgresql.connection import database_of, on_database
from planner.engines.postgresql.connection import PgMigrationConnection
from planner.engines.postgresql.schema import read_schema
from planner.testing.databases import NAME_FIELD, DatabaseTemplateError, DatabaseUnavailable, check_template
from planner.urls import redact

if TYPE_CHECKING:
    from planner.engines.base import Engine
    from planner.schema import Schema

#: PostgreSQL truncates identifiers beyond this many bytes (NAMEDATALEN - 1).
MAX_NAME_BYTES = 63
_UNSAFE = re.compile(r"[^a-z0-9_]+")
LEDGER_SCHEMA = "public"


def identifier_part(text: str) -> str:
    """``stairway[0027]`` → ``stairway_0027``: a test id as lower-case letters, digits and underscores."""
    return _UNSAFE.sub("_", text.lower()).strip("_") or "test"


def database_name_for(template: str, test: str) -> str:
    """The database of the test ``test``: ``<dbname>_<test>``, or the template's ``{name}`` replaced.

    Over 63 bytes, the name is cut and ends in eight hex digits of a hash of
    the whole name, so it stays unique and PostgreSQL does not cut it silently.
    """
    base, part = database_of(template), identifier_part(test)
    full = base.replace(NAME_FIELD, part) if NAME_FIELD in base else f"{base}_{part}"
    if len(full.encode()) <= MAX_NAME_BYTES:
        return full
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    head = full
    while len(head.encode()) > MAX_NAME_BYTES - 9:
        head = head[:-1]
    return f"{head}_{digest}"


def with_database(url: str, dbname: str) -> str:
    """``url``'s server and role, naming ``dbname`` instead: made from the parsed connection
    (``postgresql.on_database``), so a ``#`` in a password or a ``?dbname=`` in the query cannot send a test's
    migrations to another database."""
    return on_database(url, dbname)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PgServerAccess:
    """The maintenance connection that creates and drops the per-test databases; one per session.

    It is opened on first use, so a run that selects no migration test never
    connects. The first failure is remembered: later tests are told it again
    as ``repeated`` (and skip) instead of each waiting for the same timeout.
    """

    def __init__(self, template: str, connect_timeout: int = 10):
        check_template(template)
        self.template = template
        self.maintenance_url = with_database(template, "postgres") if NAME_FIELD in template else template
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        self._failure: str | None = None
        self._force: bool | None = None

    @property
    def display(self) -> str:
        return redact(self.maintenance_url)

    def url_for(self, dbname: str) -> str:
        return with_database(self.template, dbname)

    def _connection(self) -> Any:
        if self._failure is not None:
            raise DatabaseUnavailable(self._failure, repeated=True)
        if self._conn is None or self._conn.closed or self._conn.broken:
            # optional dependency: psycopg is installed with an extra
            import psycopg

            try:
                self._conn = psycopg.connect(self.maintenance_url, autocommit=True,
                                             connect_timeout=self.connect_timeout)
            except psycopg.Error as exc:
                self._fail(f"cannot connect to the PostgreSQL server of --apm-db {self.display}: {_reason(exc)}")
            self._force = self._conn.info.server_version >= 130000
        return self._conn

    def _fail(self, message: str) -> NoReturn:
        self._failure = message
        raise DatabaseUnavailable(message)

    def recreate(self, dbname: str) -> None:
        """Drop ``dbname`` if an earlier run left it, then create it empty."""
        # optional dependency: psycopg is installed with an extra
        import psycopg

        try:
            self.drop(dbname)
            self._connection().execute(f"CREATE DATABASE {_quote(dbname)}")
        except psycopg.Error as exc:
            self._fail(f"cannot create the test database {dbname} on {self.display}: {_reason(exc)}")

    def drop(self, dbname: str) -> None:
        """``DROP DATABASE IF EXISTS``, ending whatever sessions still use it (``WITH (FORCE)`` on 13+)."""
        conn = self._connection()
        if self._force:
            conn.execute(f"DROP DATABASE IF EXISTS {_quote(dbname)} WITH (FORCE)")
            return
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
        conn.execute(f"DROP DATABASE IF EXISTS {_quote(dbname)}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact(lines[0] if lines else type(exc).__name__)


class PgTestConnection(PgMigrationConnection):
    """``apm_migrator.connection`` on PostgreSQL: the migration connection's methods, in autocommit mode.

    A hand-written test owns this connection, so unlike a migration it may
    begin, commit and close; ``in_transaction`` lets the migrator commit
    what the test left open before a migration needs the tables.
    """

    def __init__(self, conn: Any, version: str = "test", direction: str = "test"):
        super().__init__(conn, version, direction)
        self._guard.guarded = False  # nothing is refused: the test, not the runner, owns its transactions

    @property
    def in_transaction(self) -> bool:
        # optional dependency: psycopg is installed with an extra
        import psycopg

        return self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def commit(self) -> None:
        if self.in_transaction:
            self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()


class PostgresDatabase:
    """One database on the ``--apm-db`` server that a migration test creates, uses and drops."""

    engine_name = "postgresql"

    def __init__(self, server: PgServerAccess, test: str):
        self.server = server
        self.name = database_name_for(server.template, test)
        #: The database's connection string (it may hold a password: show it through ``str()``).
        self.url = server.url_for(self.name)
        self._baseline: frozenset[str] = frozenset()
        self._reader: Any = None

    def engine(self) -> Engine:
        return engine_for(self.url, ledger_schema=LEDGER_SCHEMA)

    def _open(self) -> Any:
        # optional dependency: psycopg is installed with an extra
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=self.server.connect_timeout)

    def _reading(self) -> Any:
        """One autocommit connection for schema reads and seeds, kept between them.

        The stairway reads the schema three or four times per migration, and
        a new server session each time cost as much as the query. Idle in
        autocommit it holds no lock, so migrations (``CREATE INDEX
        CONCURRENTLY`` too) never wait for it.
        """
        if self._reader is None or self._reader.closed or self._reader.broken:
            self._reader = self._open()
        return self._reader

    def reset(self) -> None:
        """A new, empty database of this name; what a fresh one already holds (plpgsql) is never a leftover."""
        self._close_reader()
        self.server.recreate(self.name)
        self._baseline = frozenset(self.capture().names())

    def drop(self) -> None:
        self._close_reader()
        self.server.drop(self.name)

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def connect(self) -> PgTestConnection:
        return PgTestConnection(self._open(), "test", "test")

    @contextmanager
    def seeding(self, version: str) -> Iterator[PgMigrationConnection]:
        """One transaction, and the migration connection over it: ``?`` parameters, ``engine``, no COMMIT."""
        with self._reading().transaction():
            yield PgMigrationConnection(self._reading(), version, "seeding")

    def capture(self) -> Schema:
        return read_schema(self._reading(), LEDGER_SCHEMA)

    def leftovers(self) -> list[str]:
        return [name for name in self.capture().names() if name not in self._baseline]

    def broken(self) -> dict[str, str]:
        """Nothing to find: PostgreSQL compiles a view when it is created, refuses to drop what a view uses (or
        drops the view with it, ``CASCADE``), and binds a PL/pgSQL trigger function's tables only when it runs,
        which no check short of running it can see."""
        return {}

    def snapshot(self) -> Schema:
        """``planner.schema.Schema``: ``has("column", "priority", "app.tasks")``, ``names()``, ``tables``."""
        return self.capture()

    def __str__(self) -> str:
        return redact(self.url)

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.name!r} on {self.server.display})"


class PostgresDatabases:
    """The databases one ``--apm-db`` server gives the tests: each dropped when handed back."""

    drops = True

    def __init__(self, template: str):
        self.server = PgServerAccess(template)

    def new(self, name: str) -> PostgresDatabase:
        return PostgresDatabase(self.server, name)

    def close(self) -> None:
        self.server.close()


def databases_for(template: str) -> PostgresDatabases:
    """The pytest plugin's test databases on the server ``template`` names (``EngineKind.testing``)."""
    return PostgresDatabases(template)


#: What a user who lacks the driver is told to install (as ``apm migrate`` says it).
DRIVER_HINT = "pip install 'apm-migrate[postgres]'"


def require_driver(template: str) -> None:
    """``DatabaseTemplateError`` naming the extra to install when ``template`` is given without psycopg."""
    try:  # optional dependency: psycopg, the postgresql extra
        import psycopg  # noqa: F401
    except ImportError:
        raise DatabaseTemplateError(
            f"--apm-db {redact(template)} is a PostgreSQL server, and the PostgreSQL driver is not installed: "
            f"{DRIVER_HINT}"
        ) from None
