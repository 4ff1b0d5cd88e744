"""A ``transactional = False`` step on SQLite, checked statement by statement (``planner.outside``).

The migration's connection proxy (``sqlite.connection.MigrationConnection``)
is handed one of these in place of the real connection, so every statement
it lets through, cursors and scripts included, reaches ``execute`` here.

* A real run (``Checked``): a statement other than ``VACUUM`` runs inside a
  ``BEGIN IMMEDIATE`` of its own, watched by the preview's observer
  (``sqlite.observe.StepObserver``: the authorizer on an ``EXPLAIN`` of it,
  which works outside a transaction too, then the counts), and commits
  only if it destroys nothing or the loss is confirmed. Alone in
  autocommit it would have been its own transaction anyway, so the step
  means what it meant. ``VACUUM`` (the one statement SQLite refuses inside
  a transaction) destroys nothing and runs as it is.
* A dry run (``Rehearsed``): the step runs inside the preview's transaction
  like any other, watched as usual; ``VACUUM``, which cannot run there and
  changes no schema or data, is passed over and noted.

``PRAGMA`` statements run as they are in both: the observer never prepares
them (some take effect while compiled), and none of them deletes or
overwrites rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from planner.engines.sqlite.sql import keywords
from planner.outside import Rehearsal, StatementCheck, StatementRules

#: First keywords of statements that change no schema or data (a dry run passes over them where SQLite
#: refuses them inside its transaction).
_CHANGE_NOTHING = {"VACUUM", "ANALYZE", "REINDEX", "PRAGMA"}


class SQLiteRules(StatementRules):
    def outside_only(self, sql: str) -> bool:
        return keywords(sql, 1) == ["VACUUM"]

    def destroys_nothing(self, sql: str) -> bool:
        words = keywords(sql, 1)
        return bool(words) and words[0] in _CHANGE_NOTHING

    def changes_nothing(self, sql: str) -> bool:
        return self.destroys_nothing(sql)

    def refused_in_transaction(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError) and "within a transaction" in str(error)


RULES = SQLiteRules()


class _Connection:
    """The real connection, with ``cursor()`` (and so every statement) going through ``cursor_class``."""

    def __init__(self, conn: sqlite3.Connection, cursor_class: Callable[[sqlite3.Cursor, Any], Any], owner: Any):
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_cursor_class", cursor_class)
        object.__setattr__(self, "_owner", owner)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return self._cursor_class(self._conn.cursor(*args, **kwargs), self._owner)

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Any:
        return self.cursor().executemany(sql, seq_of_parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)


class _Cursor:
    def __init__(self, cursor: sqlite3.Cursor, owner: Any):
        object.__setattr__(self, "_cursor", cursor)
        object.__setattr__(self, "_owner", owner)

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return next(self._cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)


class _CheckedCursor(_Cursor):
    def execute(self, sql: str, parameters: Any = ()) -> _CheckedCursor:
        self._owner.statement(self._cursor, sql, parameters, many=False)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> _CheckedCursor:
        self._owner.statement(self._cursor, sql, list(seq_of_parameters), many=True)
        return self


class Checked(StatementCheck):
    """A real run's check of one step; ``connection`` is what the migration's proxy wraps."""

    def __init__(self, conn: sqlite3.Connection, version: str, direction: str, confirmation: Any,
                 begin: Callable[[], None]):
        super().__init__(version, direction, RULES, confirmation)
        self.conn = conn
        self.begin = begin  # BEGIN IMMEDIATE, waiting for another writer in slices (Ctrl-C is heard)
        self.connection = _Connection(conn, _CheckedCursor, self)

    def statement(self, cursor: sqlite3.Cursor, sql: str, parameters: Any, *, many: bool) -> None:
        def execute() -> None:
            if many:
                cursor.executemany(sql, parameters)
            else:
                cursor.execute(sql, parameters)

        def watched() -> list[str]:
            # start-up time: planner.engines.sqlite.outside runs without planner.engines.sqlite.observe until watched() needs it
            from planner.engines.sqlite.observe import StepObserver

            observer = StepObserver(self.conn)
            observer.start_step()
            observer.run(cursor, sql, parameters, many)
            _, impact, _ = observer.end_step()
            return [f"{self.version} {self.direction}: {i.describe()}" for i in impact if i.loses_data]

        if keywords(sql, 1) == ["PRAGMA"]:  # never in a transaction of its own: some must not be in one
            if self.stopped is not None:
                raise self.stopped
            execute()
            return
        self.run(sql, execute, watched, self._transaction)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


class _RehearsedCursor(_Cursor):
    def execute(self, sql: str, parameters: Any = ()) -> _RehearsedCursor:
        self._owner.run(sql, lambda: self._cursor.execute(sql, parameters))
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> _RehearsedCursor:
        rows = list(seq_of_parameters)
        self._owner.run(sql, lambda: self._cursor.executemany(sql, rows))
        return self


class Rehearsed(Rehearsal):
    """A dry run's rehearsal of one step; ``connection`` is what the migration's proxy wraps."""

    def __init__(self, conn: sqlite3.Connection, version: str, direction: str):
        super().__init__(version, direction, RULES)
        self.connection = _Connection(conn, _RehearsedCursor, self)
