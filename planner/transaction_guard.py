"""What a migration may not do to the transaction the runner gave it, written once for every engine.

The runner owns the transaction a migration runs in: it commits the
migration with its ledger row, or rolls both back. Every way out of that
transaction is refused before it reaches the database, on every engine, by
the same rules: a statement that begins, commits, ends, rolls back or
prepares a transaction, or releases or rolls back to a savepoint the runner
owns; a method that would do the same (``rollback()``, ``close()``,
``transaction()``, two-phase commit, pipeline mode) or that would blind the
runner's watcher (SQLite's authorizer, trace and progress callbacks); and a
setting that changes who decides when to commit (``autocommit``,
``isolation_level``). ``commit()`` is the one method left working, as a
no-op: seed-era migrations call it out of habit, and the runner commits
anyway. A refusal raises ``TransactionTampered`` and is remembered, so a
migration that swallows the exception still fails its step.

Each engine supplies only its facts: how to read a statement's first words
(its own tokenizer) and which savepoint names its runner uses. The engine's
connection module (``engines/sqlite/connection.py``,
``engines/postgresql/connection.py``) routes every path a migration can take
through ``Guard``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from planner.errors import TransactionTampered

#: First keywords that may end, begin or prepare a transaction; a statement starting with any other word is
#: decided at once (the hot path: one set lookup).
CONTROL_WORDS = frozenset({"BEGIN", "START", "COMMIT", "END", "ABORT", "ROLLBACK", "PREPARE", "RELEASE", "SAVEPOINT"})

_OWNER = "the runner commits each migration with its ledger row"

#: Methods refused on the connection (and on any driver object reachable from it), with why.
REFUSED_METHODS: dict[str, str] = {
    "rollback": "raise an exception instead and the runner rolls the step back",
    "close": "the runner owns the connection",
    "transaction": f"{_OWNER}; use SAVEPOINT, RELEASE and ROLLBACK TO for a part you may undo",
    "set_autocommit": _OWNER,
    "set_isolation_level": _OWNER,
    "set_read_only": _OWNER,
    "set_deferrable": _OWNER,
    "interrupt": "an interrupted statement can roll back the runner's whole transaction",
    "pipeline": "pipeline mode is not available inside a migration",
    "tpc_begin": _OWNER,
    "tpc_prepare": _OWNER,
    "tpc_commit": _OWNER,
    "tpc_rollback": _OWNER,
    "set_authorizer": "the runner watches the migration's statements through it (the data-loss preview)",
    "set_progress_handler": "the runner watches the migration's statements through it",
    "set_trace_callback": "the runner watches the migration's statements through it (the data-loss preview)",
}

#: Attributes refused on read: they hand out the driver's own connection, which has no guard.
REFUSED_ATTRIBUTES: dict[str, str] = {
    "pgconn": "it is the driver's own connection, outside the runner's guard",
}

#: Settings refused on write: each changes who decides when to commit.
REFUSED_SETTINGS = frozenset({"autocommit", "isolation_level", "read_only", "deferrable"})


def control_reason(words: Sequence[str], reserved: Callable[[str], bool]) -> str | None:
    """Why a statement whose first words are ``words`` may not run in the runner's transaction; ``None`` if it may.

    ``words`` are the statement's first few words upper-cased (a savepoint's
    name as the engine folds it, upper-cased too); ``reserved(name)`` says
    whether the runner owns a savepoint of that name. ``""`` means "refused,
    for the usual reason".
    """
    if not words or words[0] not in CONTROL_WORDS:
        return None
    first, rest = words[0], list(words[1:])
    if first in ("BEGIN", "COMMIT", "END", "ABORT"):
        return ""
    if first == "START":
        return "" if rest[:1] == ["TRANSACTION"] else None
    if first == "PREPARE":
        return "" if rest[:1] == ["TRANSACTION"] else None  # PREPARE name AS ... is a prepared statement
    if first == "ROLLBACK":
        if rest[:1] in (["TRANSACTION"], ["WORK"]):
            rest = rest[1:]
        if rest[:1] != ["TO"]:
            return ""  # ROLLBACK, and ROLLBACK PREPARED, which ends a prepared transaction
        rest = rest[1:]
    if rest[:1] == ["SAVEPOINT"]:
        rest = rest[1:]
    if rest and reserved(rest[0]):
        return f"the savepoint {rest[0].lower()} belongs to the runner"
    return None


class Guard:
    """One migration's guard: which step runs, the first refusal, and what the connection passed over.

    Shared by the connection a migration receives and every cursor or driver
    object handed out from it, so a refusal anywhere fails the step.
    """

    __slots__ = ("version", "direction", "observer", "tampered", "ignored", "connection", "guarded", "within")

    def __init__(self, version: str, direction: str, observer: Any = None):
        self.version = version
        self.direction = direction
        #: The preview's observer, told about each statement before and after it runs.
        self.observer = observer
        #: The first refusal, kept so a migration that swallows the exception still fails.
        self.tampered: TransactionTampered | None = None
        #: Statements passed over on purpose (SQLite's ``PRAGMA foreign_keys = ...``), for the runner to log.
        self.ignored: list[str] = []
        #: The connection the migration received: what ``cursor.connection`` hands back instead of the driver's.
        self.connection: Any = None
        #: Whether refusals apply (a hand-written test's connection owns its transactions and turns this off).
        self.guarded = True
        #: Whether the migration runs inside the runner's transaction (a ``transactional = False`` step does not):
        #: then a statement arriving after that transaction ended anyway is refused, not committed on its own.
        self.within = False

    def refuse(self, statement: str, reason: str | None = None) -> None:
        """Raise (and remember) the refusal of ``statement``: SQL text, or the Python route taken."""
        error = TransactionTampered(self.version, self.direction, " ".join(statement.split())[:80], reason or None)
        if self.tampered is None:
            self.tampered = error
        raise error

    def refuse_method(self, owner: str, name: str) -> Callable[..., Any]:
        """A stand-in for the refused method ``name``: calling it refuses."""

        def refused(*_args: Any, **_kwargs: Any) -> Any:
            self.refuse(f"{owner}.{name}()", REFUSED_METHODS[name])

        return refused

    def refuse_setting(self, owner: str, name: str, value: Any) -> None:
        self.refuse(f"{owner}.{name} = {value!r}", _OWNER)

    def refuse_attribute(self, owner: str, name: str) -> None:
        self.refuse(f"{owner}.{name}", REFUSED_ATTRIBUTES[name])

    def transaction_ended(self, statement: str) -> None:
        """The runner's transaction is gone before ``statement`` (an earlier failure ended it): refuse to run on."""
        self.refuse(statement, "the runner's transaction had already ended (an earlier statement of this "
                               "migration ended it), so this statement would commit on its own")


_Connection = TypeVar("_Connection", bound="GuardedRoutes")


class GuardedRoutes:
    """The Python routes out of the runner's transaction, closed the same way on every engine's connection.

    The engine's migration connection inherits these and keeps only what
    differs (how statements reach its driver). Its ``__getattr__`` (SQLite's: one property per
    name, which is faster) asks ``refused_route`` first, so a refused name never reaches the driver.
    """

    __slots__ = ()
    _guard: Guard

    @property
    def tampered(self) -> TransactionTampered | None:
        """The first refusal, even if the migration caught the exception."""
        return self._guard.tampered

    @property
    def ignored(self) -> list[str]:
        """Statements passed over on purpose (SQLite's ``PRAGMA foreign_keys``); the runner's log row names them."""
        return self._guard.ignored

    def commit(self) -> None:
        """A no-op: the runner commits the step, with its ledger row, once the step has passed every check."""

    def rollback(self) -> None:
        self._guard.refuse("conn.rollback()", REFUSED_METHODS["rollback"])

    def close(self) -> None:
        self._guard.refuse("conn.close()", REFUSED_METHODS["close"])

    def __enter__(self: _Connection) -> _Connection:
        # ``with conn:`` commits on exit on a driver's connection (and closes it on psycopg's); here a plain block.
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def refused_route(self, name: str) -> Callable[..., Any] | None:
        """For ``__getattr__``: a refusing stand-in for a refused method; a refused attribute refuses at once;
        ``None`` for any other name."""
        if name in REFUSED_METHODS:
            return self._guard.refuse_method("conn", name)
        if name in REFUSED_ATTRIBUTES:
            self._guard.refuse_attribute("conn", name)
        return None


class GuardedConnection(Protocol):
    """What ``upgrade(conn)``, ``downgrade(conn)`` and the validators receive, on every engine.

    The driver's statements pass through; every route out of the runner's transaction (``COMMIT`` in SQL,
    ``rollback()``, ``close()``, ``with conn:``, ``autocommit``, ``isolation_level``) is refused by one
    guard (``planner.transaction_guard``), and the first refusal is kept even when the migration's code
    swallows it. What the statements return is the driver's own (rows, a cursor), so it is not typed here.
    """

    #: ``"sqlite"`` or ``"postgresql"``: a catalog shared by both engines branches on it where SQL differs.
    engine: str
    #: Why a statement in ``ignored`` was passed over, for the step's log row.
    IGNORED_REASON: str

    @property
    def tampered(self) -> TransactionTampered | None:
        """The first refused route, even if the migration caught the exception: the step fails with it."""

    @property
    def ignored(self) -> list[str]:
        """Statements passed over on purpose (SQLite's ``PRAGMA foreign_keys = ...``), for the log row."""

    def execute(self, sql: str, parameters: Any = ...) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Any: ...

    def executescript(self, sql_script: str) -> Any: ...

    def cursor(self, *args: Any, **kwargs: Any) -> Any: ...

    def fetchone(self, sql: str, parameters: Any = ...) -> Any: ...

    def fetchall(self, sql: str, parameters: Any = ...) -> list[Any]: ...

    def fetchval(self, sql: str, parameters: Any = ...) -> Any: ...

    def commit(self) -> None:
        """A no-op: the runner commits the step with its ledger row (seed-era migrations call it by habit)."""

    def rollback(self) -> None:
        """Refused: only the runner ends its transaction."""

    def close(self) -> None:
        """Refused: the runner's connection outlives the step."""
