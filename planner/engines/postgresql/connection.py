"""The connection PostgreSQL migrations receive: the SQLite proxy's methods, over psycopg 3.

A migration written for SQLite (``execute``, ``executemany``,
``executescript``, rows from the returned cursor) runs here unchanged;
``conn.engine`` lets one catalog branch where the SQL differs. SQLite's
placeholders (``?``, ``:name``) are translated to psycopg's (``postgresql.sql``).

The runner owns the transaction, by ``planner.transaction_guard``'s rules,
and every path goes through them: ``execute``, ``executemany``, ``copy``
and ``stream`` of the connection and of every cursor (without parameters
psycopg sends a text as it is, so each statement of ``"...; COMMIT"`` is
read, nested comments included); a cursor's ``connection`` (the proxy);
``conn.raw`` (psycopg's connection, for ``COPY`` say, behind the same
guard); the refused methods and settings. A procedure or ``DO`` block that
commits is stopped by the server (the step is a transaction block) and
reported the same way. ``commit()`` is a no-op for seed-era habits.

During a preview each statement goes through the observer
(``postgresql.observe``): ``before`` counts what it will destroy, ``execute`` runs
it (inside a savepoint when it may drop what it does not name), ``after``
reads its ``rowcount``. ``raw`` tells the observer that what follows is
unseen, so the server's row counters are read from there on.
"""
from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from planner.engines.postgresql.sql import split_script, tokens, translate_placeholders
from planner.transaction_guard import (
    GuardedRoutes,
    CONTROL_WORDS,
    REFUSED_ATTRIBUTES,
    REFUSED_METHODS,
    REFUSED_SETTINGS,
    Guard,
    control_reason,
)
from planner.urls import database_name

#: Savepoints PostgreSQL's runner opens around a migration's statements: the preview's step savepoint
#: (``postgresql.step_catalog.STEP_SAVEPOINT``), its watch savepoint (``observe.SAVEPOINT``) and its
#: counting one (``observe.COUNT_SAVEPOINT``). psycopg names the savepoints of its ``transaction()`` blocks
#: ``_pg3_<n>``; those are the runner's too.
RUNNER_SAVEPOINTS = frozenset({"apm_preview_step", "apm_preview_watch", "apm_preview_count"})

_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE: no transaction open
_COMMITS_INSIDE = "2D000"  # invalid_transaction_termination: a procedure or DO block tried to COMMIT or ROLLBACK
_LEAD = re.compile(r"\s*([A-Za-z_]+)")


def _reserved(name: str) -> bool:
    name = name.lower()
    return name in RUNNER_SAVEPOINTS or name.startswith("_pg3_")


def _words(statement: str) -> list[str]:
    """A statement's first five words upper-cased (a quoted name as written, upper-cased too)."""
    words: list[str] = []
    for token in tokens(statement):
        if token.kind not in ("word", "quoted") or len(words) == 5:
            break
        words.append(token.text.upper() if token.kind == "word" else (token.name or "").upper())
    return words


def _statement_reason(statement: str) -> str | None:
    lead = _LEAD.match(statement)
    if lead is not None and lead.group(1).upper() not in CONTROL_WORDS:
        return None  # the hot path: an ordinary statement is decided by one regex match
    return control_reason(_words(statement), _reserved)


def refusal(sql: str, *, several: bool = True) -> tuple[str, str] | None:
    """The statement of ``sql`` that may not run in the runner's transaction, and why; ``None`` if all may.

    ``several``: psycopg sends a text without parameters as it is (the simple
    query protocol), so the server runs every statement in it, and each is
    read; with parameters, the server takes one statement only.
    """
    if several and ";" in sql:
        for statement in split_script(sql):
            reason = _statement_reason(statement)
            if reason is not None:
                return statement, reason
        return None
    reason = _statement_reason(sql)
    return None if reason is None else (sql, reason)


def forbidden(sql: str) -> bool:
    return refusal(sql) is not None


def _check(guard: Guard, conn: Any, sql: Any, several: bool) -> None:
    if guard.guarded and isinstance(sql, str):
        refused = refusal(sql, several=several)
        if refused is not None:
            guard.refuse(*refused)
    if guard.within and conn.pgconn.transaction_status == _IDLE:
        guard.transaction_ended(str(sql))


def _server_refused(guard: Guard, sql: Any, exc: BaseException) -> None:
    """A procedure or ``DO`` block that commits: the server refused it; it is the same refusal as ``COMMIT``.

    A statement the server canceled (``statement_timeout``) carries its text, which the error names."""
    if getattr(exc, "sqlstate", None) == "57014":
        exc.apm_statement = str(sql)  # type: ignore[attr-defined]
    if guard.guarded and getattr(exc, "sqlstate", None) == _COMMITS_INSIDE:
        guard.refuse(str(sql), "a procedure or DO block may not commit or roll back the runner's transaction")


class PgMigrationCursor:
    """A psycopg cursor whose statements are checked and whose ``connection`` is the guarded one; ``watched``:
    its statements go through the preview's observer, as ``conn.execute``'s do (``conn.raw``'s cursors: not)."""

    __slots__ = ("_cursor", "_guard", "_owner", "_watched")

    def __init__(self, cursor: Any, guard: Guard, owner: Any, watched: bool = True):
        object.__setattr__(self, "_cursor", cursor)
        object.__setattr__(self, "_guard", guard)
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_watched", watched)

    @property
    def connection(self) -> Any:
        return self._owner

    def execute(self, query: Any, params: Any = None, **options: Any) -> PgMigrationCursor:
        guard = self._guard
        cursor = self._cursor
        _check(guard, cursor.connection, query, not params)
        try:
            if not self._watched:
                cursor.execute(query, params, **options)
                return self
            sql = query
            if params is not None:
                query = translate_placeholders(sql, params)
            observer = guard.observer
            if observer is None or options:
                if observer is not None:
                    observer.unwatched()  # run as psycopg runs it, not read by the preview
                cursor.execute(query, params, **options)
            else:
                # The observer runs the statement: one that may drop what it does not name runs watched, in a savepoint.
                observer.before(sql, query, params)
                observer.execute(cursor, query, params)
                observer.after(sql, query, params, cursor.rowcount)
        except Exception as exc:
            _server_refused(guard, query, exc)
            raise
        return self

    def executemany(self, query: Any, params_seq: Iterable[Any], **options: Any) -> PgMigrationCursor:
        guard = self._guard
        cursor = self._cursor
        _check(guard, cursor.connection, query, True)
        try:
            if not self._watched:
                cursor.executemany(query, params_seq, **options)
                return self
            rows = list(params_seq)
            sql = query
            query = translate_placeholders(sql, rows[0]) if rows else sql
            observer = guard.observer
            if observer is None or options:
                if observer is not None:
                    observer.unwatched()  # run as psycopg runs it, not read by the preview
                cursor.executemany(query, rows, **options)
            else:
                # Each row is one statement as far as the preview is concerned (a DELETE per row counts each).
                for row in rows:
                    observer.before(sql, query, row)
                    observer.execute(cursor, query, row)
                    observer.after(sql, query, row, cursor.rowcount)
        except Exception as exc:
            _server_refused(guard, query, exc)
            raise
        return self

    @contextmanager
    def copy(self, statement: Any, params: Any = None, **options: Any) -> Iterator[_GuardedCopy]:
        """``COPY``, checked like any statement; the rows it moves are seen by the server's counters only."""
        _check(self._guard, self._cursor.connection, statement, True)
        if self._guard.observer is not None:
            self._guard.observer.unwatched()
        with self._cursor.copy(statement, params, **options) as copy:
            yield _GuardedCopy(copy, self)

    def stream(self, query: Any, params: Any = None, **options: Any) -> Iterator[Any]:
        _check(self._guard, self._cursor.connection, query, not params)
        if self._watched and self._guard.observer is not None:
            self._guard.observer.unwatched()  # its rows come as they are read: the preview does not read it first
        return self._cursor.stream(query, params, **options)

    def results(self) -> Iterator[PgMigrationCursor]:
        for _ in self._cursor.results():
            yield self

    def __enter__(self) -> PgMigrationCursor:
        self._cursor.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._cursor.__exit__(*exc_info)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)

    def __next__(self) -> Any:
        return next(self._cursor)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # psycopg's private members lead to the unguarded connection
            raise AttributeError(name)
        return getattr(self._cursor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)


class _GuardedCopy:
    """psycopg's ``Copy``, whose ``cursor`` and ``connection`` are the guarded ones."""

    __slots__ = ("_copy", "cursor", "connection")

    def __init__(self, copy: Any, cursor: PgMigrationCursor):
        self._copy, self.cursor, self.connection = copy, cursor, cursor.connection

    def __iter__(self) -> Iterator[Any]:
        return iter(self._copy)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._copy, name)


class PgDriverConnection:
    """``conn.raw``: psycopg's connection minus the ways out of the transaction; the rest is psycopg's own.
    Its statements run unwatched by the preview, whose row counters see them."""

    def __init__(self, conn: Any, guard: Guard):
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_guard", guard)
        # ``row_factory`` set here shapes this object's cursors only: on psycopg's connection it would change
        # the rows the runner itself reads (its ledger, its checks) for the rest of the run.
        object.__setattr__(self, "row_factory", conn.row_factory)

    def cursor(self, *args: Any, **kwargs: Any) -> PgMigrationCursor:
        if not args and "row_factory" not in kwargs:
            kwargs["row_factory"] = self.row_factory
        return PgMigrationCursor(self._conn.cursor(*args, **kwargs), self._guard, self, watched=False)

    def execute(self, query: Any, params: Any = None, **options: Any) -> PgMigrationCursor:
        return self.cursor().execute(query, params, **options)

    @property
    def info(self) -> Any:
        return _GuardedInfo(self._conn.info, self._guard)

    def commit(self) -> None:
        """Do nothing, as on the migration's connection: the runner commits the step with its ledger row."""

    def __enter__(self) -> PgDriverConnection:
        # psycopg's ``with conn:`` commits and closes on exit; here it is a plain block.
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        if name in REFUSED_METHODS:
            return self._guard.refuse_method("conn.raw", name)
        if name in REFUSED_ATTRIBUTES:
            self._guard.refuse_attribute("conn.raw", name)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in REFUSED_SETTINGS:
            self._guard.refuse_setting("conn.raw", name, value)
        if name == "row_factory":
            object.__setattr__(self, name, value)
        else:
            setattr(self._conn, name, value)


class _GuardedInfo:
    """``conn.raw.info`` without ``pgconn`` (libpq's connection, which would run anything unchecked)."""

    __slots__ = ("_info", "_guard")

    def __init__(self, info: Any, guard: Guard):
        self._info, self._guard = info, guard

    def __getattr__(self, name: str) -> Any:
        if name in REFUSED_ATTRIBUTES:
            self._guard.refuse_attribute("conn.raw.info", name)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._info, name)


class PgMigrationConnection(GuardedRoutes):
    """What ``upgrade(conn)`` and ``downgrade(conn)`` receive on PostgreSQL."""

    engine = "postgresql"
    IGNORED_REASON = "not applicable on PostgreSQL"
    _raw: PgDriverConnection | None  # set in __init__ through object.__setattr__, which mypy does not follow

    def __init__(self, conn: Any, version: str = "?", direction: str = "apply", observer: Any = None):
        guard = Guard(version, direction, observer)
        guard.connection = self
        # Created inside the runner's transaction (a ``transactional = False`` step is not): it must stay open.
        guard.within = conn.pgconn.transaction_status != _IDLE
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_guard", guard)
        #: Whether the migration may have made a constraint deferrable (or went around the proxy to do so):
        #: then the runner checks deferred constraints before the step records itself.
        object.__setattr__(self, "may_defer", False)
        object.__setattr__(self, "_raw", None)

    @property
    def raw(self) -> PgDriverConnection:
        """psycopg's connection, for what the proxy does not offer (``COPY``, say), behind the same guard."""
        self.may_defer = True  # what runs through it is not seen
        if self._guard.observer is not None:
            self._guard.observer.unwatched()  # only the server's counters and catalog will tell what it did
        if self._raw is None:
            self._raw = PgDriverConnection(self._conn, self._guard)
        return self._raw

    def cursor(self, *args: Any, **kwargs: Any) -> PgMigrationCursor:
        return PgMigrationCursor(self._conn.cursor(*args, **kwargs), self._guard, self)

    def execute(self, sql: str, parameters: Any = None) -> PgMigrationCursor:
        """Run one statement; the returned cursor has ``fetchone``, ``fetchall``, ``rowcount``."""
        if "deferr" in sql.lower():
            self.may_defer = True
        return PgMigrationCursor(self._conn.cursor(), self._guard, self).execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> PgMigrationCursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str) -> PgMigrationCursor:
        """Run a script statement by statement, so each is checked (and none can end the transaction)."""
        statements = list(split_script(sql_script))
        guard = self._guard
        for statement in statements:
            _check(guard, self._conn, statement, False)  # refuse before anything runs
        cursor = None
        for statement in statements:
            cursor = self.execute(statement)
        return cursor if cursor is not None else self.cursor()

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

    # -- the routes out of the transaction: planner.transaction_guard.GuardedRoutes, and these two ----

    def __getattr__(self, name: str) -> Any:
        refused = self.refused_route(name)
        if refused is not None:
            return refused
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in REFUSED_SETTINGS:
            self._guard.refuse_setting("conn", name, value)
        object.__setattr__(self, name, value)


# -- connection strings to the same server's other databases (drift's scratch one, backups, test databases) --

def _parsed(url: str) -> dict[str, str]:
    """``url`` as libpq reads it (a URL, its query's ``dbname=``/``host=`` included, or the keyword form)."""
    # optional dependency: psycopg, the postgresql extra (every caller has connected, or is about to)
    from psycopg.conninfo import conninfo_to_dict

    return {key: str(value) for key, value in conninfo_to_dict(url).items()}


def on_database(url: str, dbname: str) -> str:
    """A connection string reaching database ``dbname`` of ``url``'s server, as ``url``'s role, with its options.

    Made from the parsed connection, never by editing the URL's text: a
    ``#`` or ``?`` in a password, a ``?dbname=`` or ``host=`` in the query,
    the keyword form, all read as libpq reads them, and ``dbname`` replaces
    whatever named the database. Keyword form, ``dbname`` first (``is_postgres``
    knows a connection string by its first keyword).
    """
    # optional dependency: psycopg, the postgresql extra (every caller has connected, or is about to)
    from psycopg.conninfo import make_conninfo

    params = _parsed(url)
    params.pop("dbname", None)
    return make_conninfo("", dbname=dbname, **params)


def database_of(url: str) -> str:
    """The database libpq connects ``url`` to: its ``dbname`` wherever the string gives it (a URL's query wins
    over its path, as in libpq), else its service's (``service=``, ``PGSERVICE``), else ``PGDATABASE``, else the
    user's name. Backups are named by it: a name
    taken from the URL's path alone would file one database's dump under another's name."""
    try:
        params = _parsed(url)
    except Exception:  # not a connection string libpq reads (it cannot connect either): its text's guess
        return database_name(url)
    params = {**_service(params.get("service") or os.environ.get("PGSERVICE")), **params}
    user = params.get("user") or os.environ.get("PGUSER")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (a container's): libpq would fail alike
            user = "postgres"
    return params.get("dbname") or os.environ.get("PGDATABASE") or user


def _service(name: str | None) -> dict[str, str]:
    """The parameters of service ``name`` in libpq's service files: the user's (``PGSERVICEFILE``, else
    ``~/.pg_service.conf``) first, then the system's (``PGSYSCONFDIR``, else Debian's folder); they fill only
    what the connection string leaves out."""
    if not name:
        return {}
    # start-up time: configparser is loaded only for a connection string naming a service
    import configparser

    for path in (os.environ.get("PGSERVICEFILE") or os.path.expanduser("~/.pg_service.conf"),
                 os.path.join(os.environ.get("PGSYSCONFDIR", "/etc/postgresql-common"), "pg_service.conf")):
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue  # libpq refuses such a file too: the name falls back as libpq's connection would fail
        if parser.has_section(name):
            return dict(parser[name])
    return {}


def server_identity(url: str) -> tuple[tuple[str, str], ...]:
    """What tells ``url``'s server and role apart from another's: every parameter but the database and the
    password (host, socket folder, port, user, service, options...), as libpq parsed them; never a display
    string, which for two Unix sockets (``postgresql://app@/db?host=/a`` and ``?host=/b``) says ``app@``."""
    params = _parsed(url)
    params.pop("dbname", None)
    params.pop("password", None)
    return tuple(sorted(params.items()))
