"""A ``transactional = False`` step on PostgreSQL, checked statement by statement (``planner.outside``).

The migration's proxy (``postgresql.connection.PgMigrationConnection``) is handed
one of these in place of the psycopg connection, so every statement it
sends, ``conn.raw.execute`` included, reaches the check here first.

How a statement is judged, decided here: by its kind before it is sent,
then by running it where the server allows.

* The statements PostgreSQL refuses inside a transaction block are known
  by their first words (``VACUUM``, ``CREATE INDEX CONCURRENTLY``, ``DROP
  INDEX CONCURRENTLY``, ``REINDEX ... CONCURRENTLY``, ``REINDEX
  DATABASE``/``SYSTEM``, ``CREATE``/``DROP DATABASE``, ``CREATE``/``DROP
  TABLESPACE``, ``ALTER SYSTEM``), or by the server's refusal
  (``ActiveSqlTransaction``) for one the list misses. Those that destroy
  no data (maintenance, and building or dropping an index, whose contents
  are derived) run as they are; any other is asked about as unchecked.
* Every other statement runs in a transaction of its own, watched by the
  preview's observer (``postgresql.observe.PgObserver``, the same four readings),
  and commits only if it destroys nothing or the loss is confirmed; in
  autocommit it would have been its own transaction anyway. The catalog
  is read twice per statement for that: keep such migrations to the
  statements that need to run outside a transaction.
* Locks, in the same transaction: the preview's lock watch
  (``postgresql.locks.LockWatch``, one per step) measures what each
  statement locks, rewrites and scans; an outside-only statement is judged
  by its kind (``LockWatch.judged``: ``VACUUM FULL`` rewrites, ``REINDEX
  SCHEMA`` rebuilds indexes, ``CONCURRENTLY`` blocks nobody). Findings
  that gate the run under the policy and are not accepted roll the
  statement back (or keep it from running) until a person accepts them;
  ``--yes`` never does (``planner.outside.StatementCheck``).

Indexes, on every real run of such a step (``IndexBuilds``): a
``CONCURRENTLY`` statement waits with no lock timeout unless the migration
declares one, because while it waits (for older transactions) it blocks no
reader or writer, and a timeout would only leave an invalid index behind.
After the step, the indexes its statements name (and new invalid ones on
the tables they name) are read from ``pg_index``: one left invalid (a
failed build, or ``IF NOT EXISTS`` finding the remains of one) fails the
step, unrecorded, naming it and ``DROP INDEX CONCURRENTLY``.

A dry run rehearses the step inside the preview's transaction, each
statement in a savepoint (in autocommit, a failed statement the migration
catches would not abort the rest); the outside-only statements that change
no schema or data (``VACUUM``, ``ANALYZE``, ``REINDEX``, ``CLUSTER``,
``CREATE INDEX CONCURRENTLY``, whose index is not built by the dry run)
are passed over and noted, their lock findings judged by kind; ``DROP
INDEX CONCURRENTLY`` runs as ``DROP INDEX`` (``PgRules.stand_in``: the same
schema change), its locks judged as the concurrent form's; any other stops
the preview at that step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from planner.engines.postgresql.observe import PgObserver
from planner.engines.postgresql.sql import _qualified, _skip, indexed_table, tokens
from planner.ledger import LOG_TABLE, TABLE
from planner.locks import LockSettings, server_value, shown_duration
from planner.outside import Rehearsal, StatementCheck, StatementRules

_MAINTENANCE = {"VACUUM", "ANALYZE", "ANALYSE", "REINDEX", "CLUSTER", "CHECKPOINT"}


def _words(sql: str, count: int = 8) -> list[str]:
    return [t.upper for t in tokens(sql) if t.kind == "word"][:count]


class PgRules(StatementRules):
    def outside_only(self, sql: str) -> bool:
        words = _words(sql)
        if not words:
            return False
        if words[0] == "VACUUM" or words[:2] in (["ALTER", "SYSTEM"], ["CREATE", "DATABASE"], ["DROP", "DATABASE"],
                                                 ["CREATE", "TABLESPACE"], ["DROP", "TABLESPACE"]):
            return True
        if words[0] == "REINDEX":
            return "CONCURRENTLY" in words or any(w in ("SYSTEM", "DATABASE", "SCHEMA") for w in words[1:3])
        if words[0] == "CLUSTER":  # CLUSTER with no table reclusters every clustered one, each in a transaction
            return not any(t.name is not None and t.upper != "VERBOSE" for t in tokens(sql)[1:])
        return self._index_concurrently(words)

    @staticmethod
    def _index_concurrently(words: list[str]) -> bool:
        return ((words[:3] == ["CREATE", "INDEX", "CONCURRENTLY"] or words[:4] == ["CREATE", "UNIQUE", "INDEX",
                                                                                  "CONCURRENTLY"])
                or words[:3] == ["DROP", "INDEX", "CONCURRENTLY"])

    def destroys_nothing(self, sql: str) -> bool:
        words = _words(sql)
        if not words:
            return True
        if words[0] in _MAINTENANCE:
            return True
        return self._index_concurrently(words)

    def changes_nothing(self, sql: str) -> bool:
        words = _words(sql)
        return bool(words) and (words[0] in _MAINTENANCE or (self._index_concurrently(words) and words[0] == "CREATE"))

    def stand_in(self, sql: str) -> str | None:
        """``DROP INDEX CONCURRENTLY i`` rehearsed as ``DROP INDEX i``: the same schema change, so a rollback of a
        ``CREATE INDEX CONCURRENTLY`` migration previews on (it stopped the preview there: exit 7, always)."""
        parts = tokens(sql)
        if [t.upper for t in parts[:3]] != ["DROP", "INDEX", "CONCURRENTLY"]:
            return None
        return sql[:parts[2].start] + sql[parts[2].end:]

    def refused_in_transaction(self, error: BaseException) -> bool:
        # optional dependency: psycopg is installed with an extra
        import psycopg

        return isinstance(error, psycopg.errors.ActiveSqlTransaction)


RULES = PgRules()


class _Connection:
    """The psycopg connection, with ``cursor()`` and ``execute()`` going through ``cursor_class``."""

    def __init__(self, conn: Any, cursor_class: type, owner: Any):
        self._conn, self._cursor_class, self._owner = conn, cursor_class, owner

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return self._cursor_class(self._conn.cursor(*args, **kwargs), self._owner)

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        return self.cursor().execute(query, params, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _Cursor:
    def __init__(self, cursor: Any, owner: Any):
        self._cursor, self._owner = cursor, owner

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._cursor.close()

    def __iter__(self) -> Any:
        return iter(self._cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _CheckedCursor(_Cursor):
    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _CheckedCursor:
        self._owner.statement(self._cursor, query, [params], many=False, **kwargs)
        return self

    def executemany(self, query: Any, params_seq: Iterable[Any], **kwargs: Any) -> _CheckedCursor:
        self._owner.statement(self._cursor, query, list(params_seq), many=True, **kwargs)
        return self


class Checked(StatementCheck):
    """A real run's check of one step; ``connection`` is what the migration's proxy wraps.

    With a ``policy`` (``planner.locks.LockPolicy``), each statement's locks
    are measured in its own transaction by the preview's lock watch
    (``postgresql.locks.LockWatch``, one for the step: what existed when the
    step began is "before", so what its earlier statements created is never
    a finding), and an outside-only statement is judged by its kind.
    """

    def __init__(self, conn: Any, log_table: str, version: str, direction: str, confirmation: Any, *,
                 policy: Any = None, settings: Any = None, declared: float | None = None,
                 allow: tuple[str, ...] = ()):
        super().__init__(version, direction, RULES, confirmation)
        self.conn, self.log_table = conn, log_table
        self.connection = _Connection(conn, _CheckedCursor, self)
        self.policy, self.allow = policy, tuple(allow)
        self._watch: Any = None
        if policy is not None:
            # start-up time: planner.engines.postgresql.outside runs without planner.engines.postgresql.locks until __init__() needs it
            from planner.engines.postgresql.locks import LockWatch

            self._watch = LockWatch(None, conn, policy, settings or LockSettings(), {TABLE, LOG_TABLE})
            self._watch.declare(declared, version)

    def measured_findings(self) -> list:
        report = self._watch.steps[-1] if self._watch is not None and self._watch.steps else None
        return list(report.findings) if report is not None else []

    def judged_findings(self, sql: str) -> list:
        return self._watch.judged(sql) if self._watch is not None else []

    def statement(self, cursor: Any, query: Any, rows: list, *, many: bool, **kwargs: Any) -> None:
        query = _text(query, self.conn)  # a composed query (psycopg.sql) is checked as the SQL it stands for
        text = query if isinstance(query, str) else str(query)

        def execute() -> None:
            if many:
                cursor.executemany(query, rows, **kwargs)
            else:
                cursor.execute(query, rows[0], **kwargs)

        def watched() -> list[str]:
            if not isinstance(query, str) or not rows:  # bytes, or nothing to run
                if self._watch is not None:
                    self._watch.steps.clear()  # no findings of an earlier statement are this one's
                execute()
                return []
            observer: Any = PgObserver(self.conn, self.log_table)
            if self._watch is not None:
                self._watch.alone(observer)  # the same four readings, with the locks measured beside them
                observer = self._watch
            observer.start_step()
            for row in rows:
                observer.before(query, query, row)
                observer.execute(cursor, query, row)
                observer.after(query, query, row, cursor.rowcount)
            _, impact, _ = observer.end_step()
            return [f"{self.version} {self.direction}: {i.describe()}" for i in impact if i.loses_data]

        self.run(text, execute, watched, self.conn.transaction)


class _RehearsedCursor(_Cursor):
    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _RehearsedCursor:
        self._run(query, lambda: self._cursor.execute(query, params, **kwargs))
        return self

    def executemany(self, query: Any, params_seq: Iterable[Any], **kwargs: Any) -> _RehearsedCursor:
        rows = list(params_seq)
        self._run(query, lambda: self._cursor.executemany(query, rows, **kwargs))
        return self

    def _run(self, query: Any, execute: Any) -> None:
        def in_savepoint() -> None:
            with self._owner.conn.transaction():
                execute()

        def other(sql: str) -> None:
            with self._owner.conn.transaction():
                self._cursor.execute(sql)

        text = _text(query, self._owner.conn)
        self._owner.run(text if isinstance(text, str) else str(text), in_savepoint, other)


def _text(query: Any, conn: Any) -> Any:
    """The SQL a ``psycopg.sql`` composition stands for; any other query as it is."""
    as_string = getattr(query, "as_string", None)
    return as_string(conn) if as_string is not None else query


class Rehearsed(Rehearsal):
    """A dry run's rehearsal of one step; ``connection`` is what the migration's proxy wraps."""

    def __init__(self, conn: Any, version: str, direction: str):
        super().__init__(version, direction, RULES)
        self.conn = conn
        self.connection = _Connection(conn, _RehearsedCursor, self)


_INVALID = ("SELECT i.indexrelid, i.indexrelid::regclass::text FROM pg_index i WHERE NOT i.indisvalid "
            "AND (i.indexrelid = ANY(%s) OR (i.indexrelid <> ALL(%s) AND i.indrelid = ANY(%s)))")
_OIDS = "SELECT coalesce(array_agg(to_regclass(x)::oid) FILTER (WHERE to_regclass(x) IS NOT NULL), '{}') " \
        "FROM unnest(%s::text[]) AS x"


def named_index(sql: str) -> str | None:
    """The index ``CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] name`` or ``REINDEX INDEX name`` names."""
    parts = tokens(sql)
    upper = [t.upper for t in parts]
    if upper[:1] == ["REINDEX"] and "INDEX" in upper[1:3]:
        return _qualified(parts, _skip(parts, upper.index("INDEX") + 1, "CONCURRENTLY"))[0]
    if upper[:1] == ["CREATE"] and "INDEX" in upper[1:3]:
        i = _skip(parts, upper.index("INDEX") + 1, "CONCURRENTLY", "IF", "NOT", "EXISTS")
        return _qualified(parts, i)[0] if i < len(parts) and upper[i] != "ON" else None
    return None


class OutsideFailure(Exception):
    """Why a ``transactional = False`` step failed, in words that name what it left (its blocker, an invalid
    index): such a step is never rolled back or tried again, so the run log must not say it was."""


class _NotedCursor(_Cursor):
    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _NotedCursor:
        self._owner.statement(query, lambda: self._cursor.execute(query, params, **kwargs))
        return self

    def executemany(self, query: Any, params_seq: Iterable[Any], **kwargs: Any) -> _NotedCursor:
        self._owner.statement(query, lambda: self._cursor.executemany(query, params_seq, **kwargs))
        return self


class IndexBuilds:
    """One real run of a ``transactional = False`` step: its ``CONCURRENTLY`` statements waited for without a
    lock timeout, and the indexes its statements name checked for ``indisvalid`` after it."""

    def __init__(self, conn: Any, declared: float | None, settings: LockSettings | None):
        self.conn, self.declared, self.settings = conn, declared, settings or LockSettings()
        self.indexes: list[str] = []
        self.tables: list[str] = []
        self._before = [row[0] for row in conn.execute("SELECT indexrelid FROM pg_index WHERE NOT indisvalid")]

    def wrap(self, connection: Any) -> _Connection:
        return _Connection(connection, _NotedCursor, self)

    def statement(self, query: Any, execute: Any) -> None:
        text = _text(query, self.conn)
        if not isinstance(text, str):
            execute()
            return
        for names, name in ((self.indexes, named_index(text)), (self.tables, indexed_table(text))):
            if name is not None:
                names.append(name)
        words = _words(text)
        concurrently = "CONCURRENTLY" in words[:4] and words[0] in ("CREATE", "DROP", "REINDEX")
        if not concurrently or self.declared is not None:
            execute()
            return
        self.conn.execute("SELECT set_config('lock_timeout', '0', false)")
        try:
            execute()
        finally:
            self.conn.execute("SELECT set_config('lock_timeout', %s, false)",
                              (server_value(self.settings.lock_timeout),))

    def left_invalid(self) -> list[str]:
        """The invalid indexes the step's statements name, and new ones on the tables they build indexes on."""
        if not self.indexes and not self.tables:
            return []
        indexes, tables = (self.conn.execute(_OIDS, (names,)).fetchone()[0] for names in (self.indexes, self.tables))
        return [row[1] for row in self.conn.execute(_INVALID, (indexes, self._before, tables)).fetchall()]

    def failure(self, cause: BaseException | None, blockers: list, left: list[str]) -> OutsideFailure:
        """The words for the run log and the error: what failed, who held the lock, what it left, what to do."""
        parts = []
        if cause is not None:
            text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            if getattr(cause, "sqlstate", None) == "55P03":
                timeout = shown_duration(self.declared if self.declared is not None else self.settings.lock_timeout)
                own = ", the migration's own" if self.declared is not None else ""
                who = "; ".join(b.describe() for b in blockers) or "a session the watch did not see"
                text = f"{text} ({timeout}{own}): held by {who}"
            parts.append(text)
        for name in left:
            parts.append(f"the index {name} is left invalid (pg_index.indisvalid = false; a CREATE INDEX IF NOT "
                         f"EXISTS takes it as built): drop it with DROP INDEX CONCURRENTLY {name}, then run again")
        parts.append("such a step is neither rolled back nor tried again")
        return OutsideFailure("; ".join(parts))
