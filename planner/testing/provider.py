"""A pytest run's test databases: a name no earlier test of the run used, and dropping them afterwards.

The plugin asks for a database by test name (``upgrade``, ``stairway``,
a hand-written test's name) and hands it back when the test is over. What
the database is follows ``--apm-db``: a file under pytest's temporary
folder (the default), a file a SQLite template names, or a database created
on the PostgreSQL server a URL names (``planner.testing.pg_database``).
SQLite files are kept for looking at after a failure; PostgreSQL databases
are dropped when handed back, and whatever is still alive when the session
ends is dropped then. A database that could not be dropped is remembered
in ``problems`` for the plugin to report, never raised over the test's own
outcome.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from planner.engines import on_server
from planner.testing.databases import DatabaseUnavailable, SQLiteDatabase, TestDatabase, safe_name
from planner.urls import redact

if TYPE_CHECKING:
    from planner.testing.pg_database import PgServerAccess


class DatabaseProvider:
    """Makes each test's database from the ``--apm-db`` template (``None``: files under ``folder()``)."""

    def __init__(self, template: str | None, folder: Callable[[], Path]):
        self.template = template
        self._folder = folder
        self._names: dict[str, itertools.count] = {}
        self._server: PgServerAccess | None = None
        self._alive: list[TestDatabase] = []
        #: Databases that could not be dropped, one line each (a password never appears).
        self.problems: list[str] = []

    @property
    def postgres(self) -> bool:
        return self.template is not None and on_server(self.template)

    def describe(self) -> str:
        """For the report header: where the databases go, with any password masked."""
        if self.template is None:
            return "a fresh SQLite file per test under pytest's temporary folder"
        if self.postgres:
            return f"a fresh PostgreSQL database per test on {redact(self.template)}"
        return self.template

    def new(self, name: str) -> TestDatabase:
        """A database for the test ``name``, never one an earlier test of this run used (not reset yet)."""
        number = next(self._names.setdefault(name, itertools.count(1)))
        unique = name if number == 1 else f"{name}-{number}"
        if self.template is None:
            return SQLiteDatabase(self._folder() / f"{safe_name(unique)}.db")
        if not self.postgres:
            return SQLiteDatabase.from_template(self.template, unique)
        # start-up time: planner.testing.provider runs without planner.testing.pg_database until new() needs it
        from planner.testing.pg_database import PgServerAccess, PostgresDatabase

        if self._server is None:
            self._server = PgServerAccess(self.template)
        database = PostgresDatabase(self._server, unique)
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
        if self._server is not None:
            self._server.close()
