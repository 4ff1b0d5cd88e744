"""The connection PostgreSQL migrations receive: the SQLite proxy's methods, over psycopg 3.

A migration written for SQLite calls ``conn.execute(sql, params)``,
``executemany``, ``executescript`` and reads rows from the returned cursor
(``fetchone``, ``fetchall``, iteration); all of these work here, and
``conn.engine`` (``"postgresql"``) lets one catalog branch where the SQL
differs. Parameters may use SQLite's styles (``?``, ``:name``) or psycopg's
(``%s``, ``%(name)s``); the first two are translated (``pg_sql``).

As on SQLite, the executor owns the transaction: ``BEGIN``, ``START
TRANSACTION``, ``COMMIT``, ``END``, ``ABORT``, ``ROLLBACK`` (but not
``ROLLBACK TO``) and ``PREPARE TRANSACTION`` raise ``TransactionTampered``
before they reach the server, and the refusal sticks even if the migration
swallows it. ``commit()`` is a no-op for seed-era habits.

During a preview each statement goes through the observer
(``pg_observe``): ``before`` counts what it will destroy, ``execute`` runs
it (inside a savepoint when it may drop what it does not name), ``after``
reads its ``rowcount``. ``raw`` tells the observer that what follows is
unseen, so the server's row counters are read from there on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from planner.engines.pg_sql import first_keywords, split_script, translate_placeholders
from planner.errors import TransactionTampered

_TRANSACTION_CONTROL = {"BEGIN", "START", "COMMIT", "END", "ABORT", "PREPARE"}


def forbidden(sql: str) -> bool:
    """Whether ``sql`` would end, begin or prepare the executor's transaction."""
    words = first_keywords(sql, 3)
    if not words:
        return False
    if words[0] in _TRANSACTION_CONTROL:
        return words[0] != "PREPARE" or words[1:2] == ["TRANSACTION"]
    if words[0] == "ROLLBACK":
        rest = words[1:]
        if rest[:1] in (["TRANSACTION"], ["WORK"]):
            rest = rest[1:]
        return rest[:1] != ["TO"] and rest[:1] != ["PREPARED"]
    return False


class PgMigrationConnection:
    """What ``upgrade(conn)`` and ``downgrade(conn)`` receive on PostgreSQL."""

    engine = "postgresql"
    IGNORED_REASON = "not applicable on PostgreSQL"

    def __init__(self, conn: Any, version: str = "?", direction: str = "apply", observer: Any = None):
        self._conn = conn
        self._version = version
        self._direction = direction
        self._observer = observer
        self.tampered: TransactionTampered | None = None
        self.ignored: list[str] = []
        #: Whether the migration may have made a constraint deferrable (or went around the proxy to do so):
        #: then the runner checks deferred constraints before the step records itself.
        self.may_defer = False

    @property
    def raw(self) -> Any:
        """The psycopg connection itself, for what the proxy does not offer (``COPY``, say)."""
        self.may_defer = True  # what runs through it is not seen
        if self._observer is not None:
            self._observer.unwatched()  # only the server's counters and catalog will tell what it did
        return self._conn

    def _check(self, sql: str) -> None:
        if forbidden(sql):
            error = TransactionTampered(self._version, self._direction, " ".join(sql.split())[:80])
            if self.tampered is None:
                self.tampered = error
            raise error

    def cursor(self) -> Any:
        return self._conn.cursor()

    def execute(self, sql: str, parameters: Any = None) -> Any:
        """Run one statement; the returned cursor has ``fetchone``, ``fetchall``, ``rowcount``."""
        self._check(sql)
        if "deferr" in sql.lower():
            self.may_defer = True
        query = translate_placeholders(sql, parameters) if parameters is not None else sql
        cursor = self._conn.cursor()
        observer = self._observer
        if observer is None:
            cursor.execute(query, parameters)
            return cursor
        # The observer runs the statement: one that may drop what it does not name runs watched, in a savepoint.
        observer.before(sql, query, parameters)
        observer.execute(cursor, query, parameters)
        observer.after(sql, query, parameters, cursor.rowcount)
        return cursor

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Any:
        self._check(sql)
        rows = list(seq_of_parameters)
        query = translate_placeholders(sql, rows[0]) if rows else sql
        cursor = self._conn.cursor()
        if self._observer is not None:
            # Each row is one statement as far as the preview is concerned (a DELETE per row counts each).
            for row in rows:
                self._observer.before(sql, query, row)
                self._observer.execute(cursor, query, row)
                self._observer.after(sql, query, row, cursor.rowcount)
            return cursor
        cursor.executemany(query, rows)
        return cursor

    def executescript(self, sql_script: str) -> Any:
        """Run a script statement by statement, so each is checked (and none can end the transaction)."""
        statements = list(split_script(sql_script))
        for statement in statements:
            self._check(statement)
        cursor = None
        for statement in statements:
            cursor = self.execute(statement)
        return cursor if cursor is not None else self._conn.cursor()

    def fetchone(self, sql: str, parameters: Any = None) -> Any:
        """One row of a query (``None`` when there is none)."""
        return self.execute(sql, parameters).fetchone()

    def fetchall(self, sql: str, parameters: Any = None) -> list[Any]:
        """Every row of a query."""
        return self.execute(sql, parameters).fetchall()

    def fetchval(self, sql: str, parameters: Any = None) -> Any:
        """The first column of the first row (``None`` when there is no row)."""
        row = self.fetchone(sql, parameters)
        return None if row is None else row[0]

    def commit(self) -> None:
        """A no-op: the executor commits the step with its ledger row."""

    def rollback(self) -> None:
        self._check("ROLLBACK")

    def close(self) -> None:
        self._check("ROLLBACK")  # the executor owns the connection: closing it would end the transaction
