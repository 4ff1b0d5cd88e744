"""The connection handed to migrations: ``sqlite3.Connection``, minus the ways to break the transaction.

The executor wraps each migration in one transaction, so a migration must not
end it or start another. ``PRAGMA foreign_keys = OFF/ON`` (the seed's rebuild
pattern) is passed over and reported to the executor, which logs it: inside a
transaction SQLite ignores it, and the executor has already switched
enforcement off and checks foreign keys before committing. Python's ``executescript`` is the subtle case: it COMMITs any
open transaction before running, so here it runs the script one statement at
a time instead. Statements that would manage the transaction raise
``TransactionTampered`` before they reach SQLite; ``commit()`` is a no-op
because seed-era migrations call it out of habit, and the executor commits
anyway. Everything else passes straight through to the real connection.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from typing import Any

from planner.errors import TransactionTampered
from planner.sql import SKIP, keywords, split_script

_PRAGMA_FOREIGN_KEYS = re.compile(
    r"""PRAGMA\s+(?:["`\[]?\w+["`\]]?\s*\.\s*)?["`\[]?foreign_keys["`\]]?\s*[=(]""", re.I
)


# Only these first keywords need a closer look; everything else is decided by one regex match.
_FIRST = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*(BEGIN|COMMIT|END|ROLLBACK|PRAGMA)\b", re.S | re.I)


def forbidden_reason(sql: str) -> str | None:
    """Why ``sql`` may not run inside the executor's transaction, or ``None`` when it may.

    ``ROLLBACK TO``, ``SAVEPOINT`` and ``RELEASE`` only move within the
    transaction and are allowed; reading ``PRAGMA foreign_keys`` is harmless.
    An empty string means "forbidden, for the usual reason".
    """
    match = _FIRST.match(sql)
    if match is None:
        return None
    first = match.group(1).upper()
    if first in ("BEGIN", "COMMIT", "END"):
        return ""
    if first == "ROLLBACK":
        rest = keywords(sql, 3)[1:]
        if rest[:1] == ["TRANSACTION"]:
            rest = rest[1:]
        return None if rest[:1] == ["TO"] else ""
    return None


def switches_foreign_keys(sql: str) -> bool:
    """Whether ``sql`` sets ``PRAGMA foreign_keys`` (reading it is harmless and runs as usual)."""
    match = _FIRST.match(sql)
    return (
        match is not None
        and match.group(1).upper() == "PRAGMA"
        and _PRAGMA_FOREIGN_KEYS.match(sql, SKIP.match(sql).end()) is not None
    )


#: How many allowed statement texts a step remembers (a loop formatting its values into the SQL makes new ones).
_ALLOWED_KEPT = 1024


class _Guard:
    """What the connection and its cursors share: which step is running, and the check itself."""

    __slots__ = ("version", "direction", "tampered", "ignored", "observer", "allowed")

    def __init__(self, version: str, direction: str, observer: Any = None):
        self.version = version
        self.direction = direction
        #: A preview's ``sqlite_observe.StepObserver``, told about each statement before and after it runs.
        self.observer = observer
        #: The first refusal, kept so a migration that swallows the exception still fails.
        self.tampered: TransactionTampered | None = None
        #: Statements passed over on purpose (``PRAGMA foreign_keys = ...``), for the executor to log.
        self.ignored: list[str] = []
        #: Statement texts already checked and allowed: a data migration repeating one statement is checked once.
        self.allowed: set[str] = set()

    def refuse(self, statement: str, reason: str | None = None) -> None:
        error = TransactionTampered(self.version, self.direction, " ".join(statement.split())[:80], reason or None)
        if self.tampered is None:
            self.tampered = error
        raise error

    def check(self, sql: str) -> bool:
        """Refuse ``sql`` if it would end the transaction; ``False`` when it is to be passed over."""
        if sql in self.allowed:
            return True
        reason = forbidden_reason(sql)
        if reason is not None:
            self.refuse(sql, reason)
        if switches_foreign_keys(sql):
            # The seed's own rebuild pattern wraps its work in OFF/ON. Inside a transaction SQLite
            # ignores the PRAGMA anyway; the executor has switched enforcement off already and runs
            # foreign_key_check before COMMIT, so the migration gets exactly what it asked for.
            self.ignored.append(" ".join(sql.split()).rstrip(";")[:80])
            return False
        if len(self.allowed) < _ALLOWED_KEPT:
            self.allowed.add(sql)
        return True


class MigrationCursor:
    """A cursor whose ``execute``/``executemany``/``executescript`` keep the transaction."""

    __slots__ = ("_cursor", "_guard")

    def __init__(self, cursor: sqlite3.Cursor, guard: _Guard):
        # The slots' own setters: ``__setattr__`` sends every other attribute to the real cursor, and
        # ``object.__setattr__`` costs more than the statement in a data migration's loop.
        _set_cursor(self, cursor)
        _set_guard(self, guard)

    def execute(self, sql: str, parameters: Any = ()) -> MigrationCursor:
        guard = self._guard
        if sql in guard.allowed or guard.check(sql):  # the set first: a data migration's loop, checked once
            observer = guard.observer
            if observer is None:
                self._cursor.execute(sql, parameters)
            else:
                seen = observer.before(sql, parameters)
                self._cursor.execute(sql, parameters)
                if seen is not None:
                    observer.after(seen, self._cursor.rowcount)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> MigrationCursor:
        if self._guard.check(sql):
            observer = self._guard.observer
            if observer is None:
                self._cursor.executemany(sql, seq_of_parameters)
            else:
                rows = list(seq_of_parameters)
                if not rows:  # nothing runs: nothing to watch
                    self._cursor.executemany(sql, rows)
                    return self
                seen = observer.before(sql, rows[0])
                self._cursor.executemany(sql, rows)
                if seen is not None:
                    observer.after(seen, self._cursor.rowcount)
        return self

    def executescript(self, sql_script: str) -> MigrationCursor:
        statements = list(split_script(sql_script))
        wanted = [self._guard.check(statement) for statement in statements]  # refuse before anything runs
        observer = self._guard.observer
        for statement, run in zip(statements, wanted):
            if run and observer is None:
                self._cursor.execute(statement)
            elif run:
                seen = observer.before(statement)
                self._cursor.execute(statement)
                if seen is not None:
                    observer.after(seen, self._cursor.rowcount)
        return self

    def __iter__(self) -> MigrationCursor:
        return self

    def __next__(self) -> Any:
        return next(self._cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)


_set_cursor = MigrationCursor._cursor.__set__  # type: ignore[attr-defined]
_set_guard = MigrationCursor._guard.__set__  # type: ignore[attr-defined]


class MigrationConnection:
    """A proxy over the executor's ``sqlite3.Connection`` that cannot end its transaction."""

    def __init__(self, conn: sqlite3.Connection, version: str = "?", direction: str = "apply", observer: Any = None):
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_guard", _Guard(version, direction, observer))

    #: Why a ``PRAGMA foreign_keys = ...`` is passed over (the executor logs it with the statement).
    IGNORED_REASON = (
        "PRAGMA foreign_keys does nothing inside a transaction; the executor already switched enforcement "
        "off before this migration and runs PRAGMA foreign_key_check before committing"
    )

    @property
    def tampered(self) -> TransactionTampered | None:
        """The first refused statement, even if the migration caught the exception."""
        return self._guard.tampered

    @property
    def ignored(self) -> list[str]:
        """``PRAGMA foreign_keys = ...`` statements the migration ran, passed over on purpose."""
        return self._guard.ignored

    def cursor(self, *args: Any, **kwargs: Any) -> MigrationCursor:
        return MigrationCursor(self._conn.cursor(*args, **kwargs), self._guard)

    def execute(self, sql: str, parameters: Any = ()) -> MigrationCursor:
        return MigrationCursor(self._conn.cursor(), self._guard).execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> MigrationCursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str) -> MigrationCursor:
        return self.cursor().executescript(sql_script)

    # -- engine-neutral helpers: the same names on PostgreSQL (planner.engines.pg_connection) --

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

    def observe_rebuild(self, table: str, carried: dict[str, str], dropped: list[str]) -> None:
        """``rebuild_table`` says what it carries over, so a preview reports renames and drops, not a lost table."""
        if self._guard.observer is not None:
            self._guard.observer.note_rebuild(table, carried, dropped)

    def commit(self) -> None:
        """Do nothing: the executor commits once the step has passed every check."""

    def rollback(self) -> None:
        self._guard.refuse("conn.rollback()", "raise an exception instead and the executor rolls the step back")

    def close(self) -> None:
        self._guard.refuse("conn.close()", "the executor owns the connection")

    def __enter__(self) -> MigrationConnection:
        # ``with conn:`` would commit on exit on a real connection; here it is a plain block.
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "isolation_level":
            # Setting it on a real connection commits, or makes Python begin transactions itself.
            self._guard.refuse(f"conn.isolation_level = {value!r}")
        setattr(self._conn, name, value)
