"""The connection handed to migrations: ``sqlite3.Connection``, minus the ways to break the transaction.

The executor wraps each migration in one transaction, so a migration must not
end it, start another, or switch foreign keys (a silent no-op inside a
transaction). Python's ``executescript`` is the subtle case: it COMMITs any
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

# Leading whitespace and comments before a statement's first keyword.
_SKIP = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*", re.S)
_WORD = re.compile(r"[A-Za-z_]+")
_PRAGMA_FOREIGN_KEYS = re.compile(
    r"""PRAGMA\s+(?:["`\[]?\w+["`\]]?\s*\.\s*)?["`\[]?foreign_keys["`\]]?\s*[=(]""", re.I
)
_FOREIGN_KEYS_REASON = (
    "PRAGMA foreign_keys does nothing inside a transaction; the executor already turns enforcement off "
    "before each migration and runs PRAGMA foreign_key_check before committing"
)


def _keywords(sql: str, count: int) -> list[str]:
    """The first ``count`` words of a statement, upper-cased, skipping comments."""
    words: list[str] = []
    pos = 0
    while len(words) < count:
        pos = _SKIP.match(sql, pos).end()
        match = _WORD.match(sql, pos)
        if match is None:
            break
        words.append(match.group().upper())
        pos = match.end()
    return words


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
        rest = _keywords(sql, 3)[1:]
        if rest[:1] == ["TRANSACTION"]:
            rest = rest[1:]
        return None if rest[:1] == ["TO"] else ""
    if first == "PRAGMA" and _PRAGMA_FOREIGN_KEYS.match(sql, _SKIP.match(sql).end()):
        return _FOREIGN_KEYS_REASON
    return None


def split_script(script: str) -> Iterable[str]:
    """The statements of a script, in order, each complete (triggers' ``BEGIN ... END`` included).

    Pieces between semicolons are joined until ``sqlite3.complete_statement``
    agrees the statement is whole, so a semicolon inside a string literal or
    a trigger body does not split it.
    """
    pieces = script.split(";")
    buffer = ""
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        buffer += piece if i == last else piece + ";"
        if i == last or sqlite3.complete_statement(buffer):
            if _keywords(buffer, 1):
                yield buffer[_SKIP.match(buffer).end() :].rstrip()
            buffer = ""


class _Guard:
    """What the connection and its cursors share: which step is running, and the check itself."""

    __slots__ = ("version", "direction", "tampered")

    def __init__(self, version: str, direction: str):
        self.version = version
        self.direction = direction
        #: The first refusal, kept so a migration that swallows the exception still fails.
        self.tampered: TransactionTampered | None = None

    def refuse(self, statement: str, reason: str | None = None) -> None:
        error = TransactionTampered(self.version, self.direction, " ".join(statement.split())[:80], reason or None)
        if self.tampered is None:
            self.tampered = error
        raise error

    def check(self, sql: str) -> None:
        reason = forbidden_reason(sql)
        if reason is not None:
            self.refuse(sql, reason)


class MigrationCursor:
    """A cursor whose ``execute``/``executemany``/``executescript`` keep the transaction."""

    def __init__(self, cursor: sqlite3.Cursor, guard: _Guard):
        object.__setattr__(self, "_cursor", cursor)
        object.__setattr__(self, "_guard", guard)

    def execute(self, sql: str, parameters: Any = ()) -> MigrationCursor:
        self._guard.check(sql)
        self._cursor.execute(sql, parameters)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> MigrationCursor:
        self._guard.check(sql)
        self._cursor.executemany(sql, seq_of_parameters)
        return self

    def executescript(self, sql_script: str) -> MigrationCursor:
        statements = list(split_script(sql_script))
        for statement in statements:  # refuse before anything runs
            self._guard.check(statement)
        for statement in statements:
            self._cursor.execute(statement)
        return self

    def __iter__(self) -> MigrationCursor:
        return self

    def __next__(self) -> Any:
        return next(self._cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)


class MigrationConnection:
    """A proxy over the executor's ``sqlite3.Connection`` that cannot end its transaction."""

    def __init__(self, conn: sqlite3.Connection, version: str = "?", direction: str = "apply"):
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_guard", _Guard(version, direction))

    @property
    def tampered(self) -> TransactionTampered | None:
        """The first refused statement, even if the migration caught the exception."""
        return self._guard.tampered

    def cursor(self, *args: Any, **kwargs: Any) -> MigrationCursor:
        return MigrationCursor(self._conn.cursor(*args, **kwargs), self._guard)

    def execute(self, sql: str, parameters: Any = ()) -> MigrationCursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> MigrationCursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str) -> MigrationCursor:
        return self.cursor().executescript(sql_script)

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
