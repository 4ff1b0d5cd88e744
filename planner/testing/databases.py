"""Where migration tests run: a small database object per engine, and the ``--apm-db`` template naming one.

The runner, the stairway and the migrator reach a database only through
``TestDatabase``: ``reset`` it, get its ``engine()`` (the same
``planner.engines`` object ``apm migrate`` uses, so tests run migrations
with the production guarantees), ``seeding`` a transaction for seed rows,
``capture`` a schema state to compare, list its ``leftovers``, ``connect``
for a hand-written test, and ``drop`` it afterwards. Each engine makes its
own (``EngineKind.testing`` in the registry names the module:
``planner.engines.sqlite.SQLiteDatabase``,
``planner.engines.postgresql.testdb.PostgresDatabase``); this module knows
none of them, only the protocol, the template and the run's provider.

A template is a SQLite path containing ``{name}``, or a PostgreSQL URL (the
server on which one database per test is created; ``{name}`` is optional).

``DatabaseProvider`` gives a pytest run its test databases: a name no
earlier test of the run used, and dropping them afterwards. SQLite files are
kept for looking at after a failure; PostgreSQL databases are dropped when
handed back, and whatever is still alive when the session ends is dropped
then. A database that could not be dropped is remembered in ``problems`` for
the plugin to report, never raised over the test's own outcome.
"""

from __future__ import annotations

import importlib
import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from planner.engines import kind_of, on_server
from planner.urls import database_name, redact

if TYPE_CHECKING:
    from planner.engines.base import Engine
    from planner.schema import Schema

#: What ``{name}`` in a template is replaced by may hold only these characters.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
NAME_FIELD = "{name}"


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


class TestDatabases(Protocol):
    """What an engine's ``databases_for(template)`` returns: the test databases one ``--apm-db`` template gives."""

    #: Whether a database handed back is dropped (a server's); a file is kept for looking at after a failure.
    drops: bool

    def new(self, name: str) -> TestDatabase:
        """The database for the test ``name`` (already unique in the run), not reset yet."""

    def close(self) -> None:
        """The session is over: disconnect whatever the databases shared (a server's maintenance connection)."""


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
    """``DatabaseTemplateError`` naming what to install when ``template``'s engine has no driver here.

    An engine whose driver is optional (PostgreSQL's psycopg) says so by a ``require_driver()`` in its
    testing module; SQLite's is in Python itself.
    """
    check = getattr(_testing(template), "require_driver", None)
    if check is not None:
        check(template)


def _testing(template: str) -> Any:
    """The engine's testing module for ``template`` (``EngineKind.testing``), imported now."""
    return importlib.import_module(kind_of(template).testing)


def databases_for(template: str) -> TestDatabases:
    """The test databases ``template`` gives, made by the engine that claims it (``EngineKind.testing``)."""
    maker: TestDatabases = _testing(template).databases_for(template)
    return maker


def database_at(path: Path) -> TestDatabase:
    """The test database in the file ``path`` (a hand-written test's own, when no ``--apm-db`` is given)."""
    return databases_for(str(path.parent / f"{NAME_FIELD}{path.suffix}")).new(path.stem)


class DatabaseProvider:
    """Makes each test's database from the ``--apm-db`` template (``None``: files under ``folder()``)."""

    def __init__(self, template: str | None, folder: Callable[[], Path]):
        self.template = template
        self._folder = folder
        self._names: dict[str, itertools.count] = {}
        self._made: TestDatabases | None = None
        self._alive: list[TestDatabase] = []
        #: Databases that could not be dropped, one line each (a password never appears).
        self.problems: list[str] = []

    def describe(self) -> str:
        """For the report header: where the databases go, with any password masked."""
        if self.template is None:
            return "a fresh SQLite file per test under pytest's temporary folder"
        if on_server(self.template):
            return f"a fresh {kind_of(self.template).title} database per test on {redact(self.template)}"
        return self.template

    def new(self, name: str) -> TestDatabase:
        """A database for the test ``name``, never one an earlier test of this run used (not reset yet)."""
        number = next(self._names.setdefault(name, itertools.count(1)))
        unique = name if number == 1 else f"{name}-{number}"
        if self._made is None:  # on first use: a run that selects no migration test never connects to a server
            self._made = databases_for(self.template or str(self._folder() / f"{NAME_FIELD}.db"))
        database = self._made.new(unique)
        if self._made.drops:
            self._alive.append(database)
        return database

    def release(self, database: TestDatabase | None) -> None:
        """The test is over: drop the database (PostgreSQL); never raises."""
        if database is None or database not in self._alive:
            return
        self._alive.remove(database)
        try:
            database.drop()
        except DatabaseUnavailable:
            pass  # the server is gone: the first test that needed it already said so
        except Exception as exc:  # noqa: BLE001 - a teardown must not hide the test's outcome
            self.problems.append(f"could not drop {database}: {type(exc).__name__}: {redact(str(exc))}")

    def close(self) -> None:
        """The session is over: drop what is still alive (the stairway's last database) and disconnect."""
        for database in list(self._alive):
            self.release(database)
        if self._made is not None:
            self._made.close()
