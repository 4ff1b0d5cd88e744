"""The connection handed to migrations: ``sqlite3.Connection``, minus every way out of the transaction.

The executor wraps each migration in one transaction, so a migration must not
end it or start another; the rules are ``planner.transaction_guard``'s, the
same on every engine, and this module routes each path through them:
``execute``, ``executemany`` and ``executescript`` on the connection and on
every cursor it hands out (a cursor's ``connection`` is this proxy, never
the ``sqlite3.Connection``), ``rollback()``, ``close()``, ``with conn:``
(which commits on a real connection), setting ``autocommit`` (Python 3.12+)
or ``isolation_level``, ``interrupt()`` (an interrupted write rolls the
whole transaction back, and what follows would commit statement by
statement), and replacing the authorizer, trace or progress callback the
preview watches through. A statement is refused before it reaches SQLite;
one arriving after the transaction ended anyway is refused too.

``PRAGMA foreign_keys = OFF/ON`` (the seed's rebuild pattern) is passed
over and reported to the executor, which logs it: inside a transaction
SQLite ignores it, and the executor has already switched enforcement off
and checks foreign keys before committing. Python's ``executescript`` is
the subtle case: it COMMITs any open transaction before running, so here it
runs the script one statement at a time instead. ``commit()`` is a no-op
because seed-era migrations call it out of habit, and the executor commits
anyway. Everything else passes straight through to the real connection.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from sys import getrefcount
from typing import TYPE_CHECKING, Any

from planner.engines.sqlite.sql import keywords, skipped, split_script
from planner.transaction_guard import (
    REFUSED_ATTRIBUTES,
    REFUSED_METHODS,
    REFUSED_SETTINGS,
    GuardedRoutes,
    Guard,
    control_reason,
)

_PRAGMA_FOREIGN_KEYS = re.compile(
    r"""PRAGMA\s+(?:["`\[]?\w+["`\]]?\s*\.\s*)?["`\[]?foreign_keys["`\]]?\s*[=(]""", re.I
)

#: SQLite's runner opens no savepoint around a migration: every savepoint a migration names is its own.
RUNNER_SAVEPOINTS: frozenset[str] = frozenset()

# Only these first keywords need a closer look; everything else is decided by one regex match.
_FIRST = re.compile(
    r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*(BEGIN|COMMIT|END|ROLLBACK|RELEASE|SAVEPOINT|PRAGMA)\b",
    re.S | re.I,
)


def _reserved(name: str) -> bool:
    return name.lower() in RUNNER_SAVEPOINTS


def forbidden_reason(sql: str) -> str | None:
    """Why ``sql`` may not run inside the executor's transaction, or ``None`` when it may.

    ``ROLLBACK TO``, ``SAVEPOINT`` and ``RELEASE`` of the migration's own
    savepoints only move within the transaction and are allowed; reading
    ``PRAGMA foreign_keys`` is harmless. An empty string means "forbidden,
    for the usual reason".
    """
    match = _FIRST.match(sql)
    if match is None or match.group(1).upper() == "PRAGMA":
        return None
    return control_reason(keywords(sql, 5), _reserved)


def switches_foreign_keys(sql: str) -> bool:
    """Whether ``sql`` sets ``PRAGMA foreign_keys`` (reading it is harmless and runs as usual)."""
    match = _FIRST.match(sql)
    return (
        match is not None
        and match.group(1).upper() == "PRAGMA"
        and _PRAGMA_FOREIGN_KEYS.match(sql, skipped(sql)) is not None
    )


#: How many allowed statement texts a step remembers (a loop formatting its values into the SQL makes new ones).
_ALLOWED_KEPT = 1024


class _StepGuard(Guard):
    """``transaction_guard.Guard`` plus what this step's statements pass through: the texts its checks have
    already allowed, the driver's connection, and the cursor ``MigrationConnection.execute`` reuses.

    Only a text with no control word (no BEGIN, COMMIT, SAVEPOINT, PRAGMA ...)
    is kept: its verdict depends on the text alone. What depends on the
    moment (whether the runner's transaction is still open) is checked for
    every statement, kept or not. One guard per migration connection, so per step.
    """

    __slots__ = ("allowed", "raw", "spare", "spare_cursor", "free")

    def __init__(self, raw: sqlite3.Connection, version: str, direction: str, observer: Any = None):
        super().__init__(version, direction, observer)
        #: Statement texts already checked and allowed: a data migration repeating one statement is checked once.
        self.allowed: set[str] = set()
        self.raw = raw
        #: The cursor ``MigrationConnection.execute`` returned last, the driver's cursor in it, and the reference
        #: counts both have while nothing else holds them (see there).
        self.spare: MigrationCursor | None = None
        self.spare_cursor: Any = None
        self.free = (0, 0)


def _check(guard: _StepGuard, sql: str) -> bool:
    """Refuse ``sql`` if it would end the transaction; ``False`` when it is to be passed over."""
    if not isinstance(sql, str):
        return True  # sqlite3 itself rejects it
    if sql in guard.allowed:  # a data migration's loop: the text was checked once in this step
        if guard.within and not guard.raw.in_transaction:
            guard.transaction_ended(sql)
        return True
    if _FIRST.match(sql) is not None:
        reason = forbidden_reason(sql)
        if reason is not None and guard.guarded:
            guard.refuse(sql, reason)
        if switches_foreign_keys(sql):
            # The seed's own rebuild pattern wraps its work in OFF/ON. Inside a transaction SQLite
            # ignores the PRAGMA anyway; the executor has switched enforcement off already and runs
            # foreign_key_check before COMMIT, so the migration gets exactly what it asked for.
            guard.ignored.append(" ".join(sql.split()).rstrip(";")[:80])
            return False
    elif len(guard.allowed) < _ALLOWED_KEPT:
        guard.allowed.add(sql)
    if guard.within and not guard.raw.in_transaction:
        guard.transaction_ended(sql)
    return True


def _execute(guard: _StepGuard, cursor: sqlite3.Cursor, sql: str, parameters: Any, many: bool = False) -> None:
    """Run ``sql`` on the driver's ``cursor`` unless the guard refuses it (``many``: ``executemany``), watched by
    the preview's observer if there is one."""
    # A data migration's loop repeats one text: ``_check``'s first branch, without the call.
    if type(sql) is str and sql in guard.allowed:
        if guard.within and not guard.raw.in_transaction:
            guard.transaction_ended(sql)
    elif not _check(guard, sql):
        return
    if guard.observer is not None:
        guard.observer.run(cursor, sql, parameters, many)
    elif many:
        cursor.executemany(sql, parameters)
    else:
        cursor.execute(sql, parameters)


class MigrationCursor:
    """A cursor whose ``execute``/``executemany``/``executescript`` keep the transaction."""

    __slots__ = ("_cursor", "_guard")

    def __init__(self, cursor: sqlite3.Cursor, guard: _StepGuard):
        # The slots' own setters: ``__setattr__`` sends every other attribute to the real cursor.
        _set_cursor(self, cursor)
        _set_guard(self, guard)

    @property
    def connection(self) -> Any:
        """The connection the migration received, never the ``sqlite3.Connection`` under it."""
        return self._guard.connection

    def execute(self, sql: str, parameters: Any = ()) -> MigrationCursor:
        _execute(self._guard, self._cursor, sql, parameters)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> MigrationCursor:
        _execute(self._guard, self._cursor, sql, seq_of_parameters, many=True)
        return self

    def executescript(self, sql_script: str) -> MigrationCursor:
        statements = list(split_script(sql_script))
        guard = self._guard
        wanted = [_check(guard, statement) for statement in statements]  # refuse before anything runs
        for statement, run in zip(statements, wanted):
            if run and guard.observer is not None:
                guard.observer.run(self._cursor, statement)
            elif run:
                self._cursor.execute(statement)
        return self

    def __iter__(self) -> MigrationCursor:
        return self

    def __next__(self) -> Any:
        return next(self._cursor)

    # Every other public name of the driver's cursor: a property each (``_routes``); nothing private of the
    # driver's, which may lead to the raw connection.
    if TYPE_CHECKING:  # what a type checker sees: the driver's attributes, and the slots

        def __getattr__(self, name: str) -> Any: ...

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)


_set_cursor = MigrationCursor._cursor.__set__  # type: ignore[attr-defined]
_set_guard = MigrationCursor._guard.__set__  # type: ignore[attr-defined]


class MigrationConnection(GuardedRoutes):
    """A proxy over the executor's ``sqlite3.Connection`` that cannot end its transaction."""

    _guard: _StepGuard
    _conn: sqlite3.Connection

    def __init__(self, conn: sqlite3.Connection, version: str = "?", direction: str = "apply", observer: Any = None):
        guard = _StepGuard(conn, version, direction, observer)
        guard.connection = self
        # Created inside the executor's transaction (a ``transactional = False`` step is not): it must stay open.
        guard.within = conn.in_transaction
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_guard", guard)

    #: Why a ``PRAGMA foreign_keys = ...`` is passed over (the executor logs it with the statement).
    IGNORED_REASON = (
        "PRAGMA foreign_keys does nothing inside a transaction; the executor already switched enforcement "
        "off before this migration and runs PRAGMA foreign_key_check before committing"
    )

    def cursor(self, *args: Any, **kwargs: Any) -> MigrationCursor:
        return MigrationCursor(self._conn.cursor(*args, **kwargs), self._guard)

    def execute(self, sql: str, parameters: Any = ()) -> MigrationCursor:
        # A data migration's loop drops each cursor ``execute`` returns before the next call: then the last one
        # is reused, and the loop makes no cursor (and no wrapper) per statement, which cost more than the
        # guard's checks. Reused only while nothing but the guard holds the wrapper or the driver's cursor in it
        # (a variable, a ``for`` loop, a bound ``fetchone`` would): their reference counts are then what they
        # were when the pair was made here, counted in the same way. Only a statement that returns no rows is
        # kept for reuse: it is finished when ``execute`` returns, while a query's unread rows would keep its
        # statement open after the caller let it go, and an open statement makes SQLite refuse to drop a table.
        # Everything is read from the guard: this class's ``__getattr__`` makes reading its own attributes slow.
        guard = self._guard
        spare, cursor = guard.spare, guard.spare_cursor
        if spare is None or getrefcount(spare) != guard.free[0] or getrefcount(cursor) != guard.free[1]:
            spare = guard.spare = MigrationCursor(guard.raw.cursor(), guard)
            cursor = guard.spare_cursor = spare._cursor
            guard.free = (getrefcount(spare), getrefcount(cursor))
        if guard.observer is not None and type(sql) is str and sql in guard.allowed and (
                not guard.within or guard.raw.in_transaction):
            guard.observer.run(cursor, sql, parameters)  # a watched loop's repeat: ``_execute`` without the call
        else:
            _execute(guard, cursor, sql, parameters)
        if cursor.description is not None:  # a query: the caller's alone, finished when the caller lets it go
            guard.spare = guard.spare_cursor = None
        return spare

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> MigrationCursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str) -> MigrationCursor:
        return self.cursor().executescript(sql_script)

    # -- engine-neutral helpers: the same names on PostgreSQL (planner.engines.postgresql.connection) --

    #: Which engine runs the migration, so one catalog can branch where the SQL differs.
    engine = "sqlite"

    def fetchone(self, sql: str, parameters: Any = ()) -> Any:
        """One row of a query (``None`` when there is none)."""
        return self.execute(sql, parameters).fetchone()

    def fetchall(self, sql: str, parameters: Any = ()) -> list[Any]:
        """Every row of a query."""
        return self.execute(sql, parameters).fetchall()

    def fetchval(self, sql: str, parameters: Any = ()) -> Any:
        """The first column of the first row (``None`` when there is no row)."""
        row = self.fetchone(sql, parameters)
        return None if row is None else row[0]

    def observe_rebuild(self, table: str, carried: dict[str, str], dropped: list[str],
                        columns: Sequence[str] = (), changed: dict[str, int] | None = None) -> None:
        """``rebuild_table`` says what it carries over (and what its conversions changed), so a preview reports
        renames, drops and overwritten values, not a lost table."""
        if self._guard.observer is not None:
            self._guard.observer.note_rebuild(table, carried, dropped, columns, changed)

    @property
    def watched(self) -> bool:
        """Whether a preview is watching: ``rebuild_table`` then counts what its conversions change."""
        return self._guard.observer is not None

    # -- the routes out of the transaction: planner.transaction_guard.GuardedRoutes, _routes below, and this ----

    def __setattr__(self, name: str, value: Any) -> None:
        if name in REFUSED_SETTINGS:
            # ``isolation_level`` commits on a real connection, or makes Python begin transactions itself;
            # ``autocommit = True`` (Python 3.12+) commits at once.
            self._guard.refuse_setting("conn", name, value)
        setattr(self._conn, name, value)


def _routes(cls: type, driver: type, via: str, refused: frozenset[str] = frozenset()) -> None:
    """Every other public name of ``driver`` (as this Python has it) as a property of ``cls``: the attribute of the
    driver's object held in ``via``, or for a name in ``refused`` ``refused_route``'s refusal (also when the
    driver lacks the name: ``transaction``, ``pgconn`` are refused as on every engine).

    Properties, not ``__getattr__``: a class with ``__getattr__`` makes Python look up every attribute of its
    instances the slow way, ``conn.execute`` in a data migration's loop included (about 1,000 instructions a
    statement, a fifth of what the guard and the watch add to a raw ``UPDATE``).
    """
    for name in sorted({*dir(driver), *refused}):
        if name.startswith("_") or hasattr(cls, name):
            continue  # private (it may lead to the raw connection), or the guard's own: execute, rollback ...
        setattr(cls, name, property(_refused(name) if name in refused else attrgetter(f"{via}.{name}")))


def _refused(name: str) -> Callable[[MigrationConnection], Any]:
    return lambda conn: conn.refused_route(name)


_routes(MigrationConnection, sqlite3.Connection, "_conn", frozenset({*REFUSED_METHODS, *REFUSED_ATTRIBUTES}))
_routes(MigrationCursor, sqlite3.Cursor, "_cursor")
