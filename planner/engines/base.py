"""The engine contract: what an engine provides, written once and typed.

The catalog, the graph and plans never touch a database. Everything that
does sits behind the contract below, which both engines in this folder
(``sqlite``, ``postgresql``) satisfy and mypy proves they do:

* ``Engine``: one database (connecting, reading the ledger, the doctor), and
  what runs plans on it (``runner``) and keeps its copies (``backups``).
* ``PlanRunner``: runs plans, previews and marks against the database.
* ``Backups``: the copies taken before a rollback, listed, checked, restored.
* ``Ledger``: the engine's ``schema_migrations`` and its log, inside a run.
* ``GuardedConnection`` (``planner.transaction_guard``, beside the guard it
  describes, since ``Migration`` names it): what ``upgrade(conn)`` receives,
  the driver's statements minus every way out of the runner's transaction.
* ``Observer``: a preview's watcher of one step at a time.
* ``DriverConnection``: the engine's own connection, as the engine-free
  session uses it (a savepoint of its own, nothing more).

A step, and the loops over steps (step by step, atomic, the preview, the
marks), are written once, in ``planner.session.Session``, typed against
these; an engine's session (``sqlite.session``, ``postgresql.session``)
supplies only its transaction, its applied-set cache, the connection a
migration receives, the checks after it and how rows are written. Adding an
engine means a folder providing these and one line in ``planner.engines.KINDS``;
nothing above this folder changes. APM's own ``agents`` table is no part of
the contract: ``planner.compat`` reads it through ``Engine.read_rows``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from planner.errors import NoBackups

if TYPE_CHECKING:
    from planner.backups import BackupInfo, RestoreResult
    from planner.catalog import Catalog
    from planner.events import Event, RunResult
    from planner.findings import Finding
    from planner.ledger import LedgerEntry, LedgerNote, LogEntry
    from planner.locks import LockPolicy, LockSettings
    from planner.migration import Migration
    from planner.outside import Confirmation
    from planner.plan import Plan
    from planner.preview import DataImpact, Preview
    from planner.schema import Difference, Replay, SchemaChange
    from planner.transaction_guard import GuardedConnection

MakePlan = Callable[[dict[str, "LedgerEntry"]], "Plan"]


class DriverConnection(Protocol):
    """The engine's own connection (``sqlite3.Connection``, psycopg's), as the engine-free session uses it.

    The session runs only SQL both engines spell alike (a savepoint around a rehearsed step); everything
    else it asks of the engine's session, which knows its driver.
    """

    def execute(self, sql: str, /) -> object: ...


class Observer(Protocol):
    """A preview's watcher: told where each step begins and ends, it measures what the step destroys.

    The engine's migration connection tells it about each statement (in the engine's own terms); the
    session needs only these three calls.
    """

    def start_step(self) -> None: ...

    def stop(self) -> None:
        """The step failed (or cannot be rehearsed further): stop watching, report nothing of it."""

    def end_step(self) -> tuple[list[SchemaChange], list[DataImpact], list[str]]:
        """The step's schema changes, its data loss, and its SQL (when ``capture_sql``)."""


class Ledger(Protocol):
    """The engine's ``schema_migrations`` and ``schema_migrations_log``, on the run's connection.

    Its invariant (``planner.ledger``): a row means the migration is applied, written in the same
    transaction as its change; the log is append-only. Nothing here commits: the session does.
    """

    def exists(self) -> bool:
        """Whether the ledger table is there (nothing is created to find out)."""

    def ensure_schema(self) -> None:
        """Create the ledger and log tables if missing; refuse a table of another tool's shape."""

    def applied_migrations(self) -> dict[str, LedgerEntry]: ...

    def applied_versions(self) -> list[str]: ...

    def record_applied(self, migration: Migration, execution_ms: int | None) -> None: ...

    def record_unapplied(self, version: str) -> None: ...

    def log(self, version: str, action: str, outcome: str, checksum: str | None = None,
            execution_ms: int | None = None, detail: str | None = None) -> None: ...

    def history(self, version: str | None = None) -> list[LogEntry]:
        """The log (of ``version`` only, if given), oldest first; empty when there is no log table."""


class PlanRunner(Protocol):
    """Runs plans against one database: ``sqlite.runner.Executor`` and ``postgresql.runner.PgRunner``."""

    def applied(self) -> dict[str, LedgerEntry]:
        """The ledger as it is now, read without creating anything."""

    def migrate(self, make_plan: MakePlan, on_event: Callable[[Event], None] | None = None, *,
                atomic: bool = False, plan: Plan | None = None,
                before: Callable[[], object] | None = None,
                confirm_outside: Confirmation | None = None) -> RunResult:
        """One transaction per step (or one for all, ``atomic``), each with its ledger row; plans inside the lock.

        ``before()`` (the backup before a rollback) runs inside the lock, once the ledger read there admitted
        the first step that runs: the copy is exactly the state the run starts from (a ``before`` with a
        ``discard()`` is told when the transaction it ran in is rolled back to be tried again). ``RunResult.replans``
        counts each time the run planned again because the ledger had changed. ``confirm_outside``
        checks ``transactional = False`` steps statement by statement; without it they run unchecked.
        """

    def preview(self, plan: Plan, *, make_plan: MakePlan | None = None,
                accept: Callable[[Preview], bool] | None = None,
                on_event: Callable[[Event], None] | None = None, capture_sql: bool = False,
                before: Callable[[], object] | None = None) -> Preview:
        """The whole plan in one transaction, watched; committed only if ``accept`` says so.

        ``before()`` runs inside the lock, once the plan was made again there from the ledger.
        """

    def mark_applied(self, migration: Migration) -> None: ...

    def mark_rolled_back(self, migration: Migration) -> None: ...

    def mark_many(self, migrations: list[Migration], action: str) -> None:
        """Record ``migrations`` (dependency order) as applied without running them, in one transaction."""


class Backups(ABC):
    """The copies of one database an engine keeps (``apm migrate backups|restore``, the backup before a rollback).

    An engine *has* backups (``Engine.backups``): where they live and how they are made differ (SQLite's
    online backup beside the file, ``pg_dump`` files in a folder), what a command does with them does not.
    """

    #: How messages name the database the backups are of (as ``Engine.display``).
    display: str

    @property
    @abstractmethod
    def short_name(self) -> str:
        """The database's own name, which its backups' names begin with: the file's name, or the dbname."""

    @property
    @abstractmethod
    def names(self) -> str:
        """Which files are this database's backups, for messages: ``aipm.db.backup.*`` or ``app.*.dump in DIR``."""

    @abstractmethod
    def take(self, folder: Path | None = None) -> Path | None:
        """A copy taken before a rollback; ``None`` when there is nothing to copy yet."""

    @abstractmethod
    def prune(self, keep: int, folder: Path | None = None, spare: Iterable[Path] = ()) -> list[Path]:
        """Delete all but the newest ``keep`` backups of this database (after a run committed); what was deleted.

        ``spare`` is never deleted: a restore spares the backup it restored from.
        """

    @abstractmethod
    def files(self) -> list[Path]:
        """This database's backups, oldest first; half-written ones (and those of other databases) never."""

    @abstractmethod
    def describe(self, backup: Path) -> BackupInfo:
        """Size, time and ledger of one backup, cheaply (no integrity check); an unreadable one says why."""

    @abstractmethod
    def check(self, backup: Path) -> dict[str, LedgerEntry]:
        """The ledger ``backup`` would restore; ``UnusableBackup`` (nothing changed) if it cannot be restored."""

    @abstractmethod
    def restore(self, backup: Path, *, all_schemas: bool = False) -> RestoreResult:
        """Replace the database's content with ``backup``'s, all or nothing, keeping a safety backup first.

        ``all_schemas`` (``--all-schemas``): everything the backup holds, where a restore could touch less
        (a PostgreSQL tenant's restore replaces its schema alone); one file's restore is all of it anyway."""

    def left_in_place(self, backup: Path, *, all_schemas: bool = False) -> list[str]:
        """What a restore of ``backup`` keeps that the backup does not hold (nothing, where a restore replaces all)."""
        return []

    def other_ledgers(self, backup: Path, *, all_schemas: bool = False) -> list[str]:
        """Ledger schemas besides this one that a restore of ``backup`` also puts back (none, where a database
        holds one ledger)."""
        return []

    def ledgers_in_backup(self, backup: Path, *, all_schemas: bool = False) -> list[str]:
        """Ledger schemas besides this one that ``backup`` itself holds and a restore would put back: a restore
        that overwrites another project's or tenant's ledger must be asked for (``--all-schemas``)."""
        return []

    def described(self) -> list[BackupInfo]:
        """Every backup of this database, newest first, described."""
        return [self.describe(path) for path in reversed(self.files())]

    def newest(self) -> Path:
        """The backup a restore uses when none is named; ``NoBackups`` when there is none."""
        found = self.files()
        if not found:
            raise NoBackups(self.display, self.names)
        return found[-1]

    def is_own(self, backup: Path) -> bool:
        """Whether ``backup`` is one of this database's backups (by name and folder), not just any file."""
        return backup.resolve() in {path.resolve() for path in self.files()}


class Engine(ABC):
    """One database, reached through one engine."""

    #: ``"sqlite"`` or ``"postgresql"``: what ``conn.engine`` tells a migration.
    name: str
    #: The run's lock timeouts and which lock findings stop it (``planner.locks``), set by whoever runs a plan
    #: (``None``: the defaults). An engine whose statements do not queue for locks ignores them: SQLite waits
    #: for its one write lock by its busy timeout.
    lock_settings: LockSettings | None = None
    lock_policy: LockPolicy | None = None

    @property
    @abstractmethod
    def display(self) -> str:
        """How messages name the database: a path, or a URL with its password masked."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the database is there (a SQLite file may still be created; a server database must exist)."""

    def reading(self) -> AbstractContextManager[None]:
        """Let the reads of one command share what they can (one server connection); nothing for a file."""
        return nullcontext()

    def require(self) -> None:
        """Raise the engine's own ``DatabaseError`` when the database is not there, for commands that need one."""

    @abstractmethod
    def applied(self) -> dict[str, LedgerEntry]:
        """What the ledger records, read without creating the database or its tables."""

    @abstractmethod
    def history(self, version: str | None = None) -> list[LogEntry]:
        """The log (of ``version`` only), oldest first, read without writing: what ``fleet status`` tells a
        ``failed`` database by, on an engine without a fast reader (``EngineKind.ledger_reader``)."""

    @abstractmethod
    def runner(self, *, catalog: Catalog | None = None, create: bool = False) -> PlanRunner:
        """What runs plans here (``create``: a SQLite file may be made by an apply)."""

    @abstractmethod
    def applied_if_exists(self) -> dict[str, LedgerEntry] | None:
        """The ledger, or ``None`` when the database is not there yet (a lint then checks an empty history)."""

    def notes(self) -> list[LedgerNote]:
        """Ledger rows that are no applied migration (APM's framework wrote some into SQLite ledgers)."""
        return []

    @abstractmethod
    def diagnose(self, catalog_dir: Path) -> list[Finding]:
        """``apm migrate doctor``: everything wrong with the database and its ledger, found without writing."""

    def check_integrity(self) -> None:
        """Raise ``DatabaseDamaged`` when the database's own storage is damaged; before a plan that commits in parts.

        A no-op where the server keeps its pages (PostgreSQL); SQLite runs ``PRAGMA quick_check``.
        """

    @property
    @abstractmethod
    def backups(self) -> Backups:
        """This database's backups (made on first use: the backup modules are not imported by every command)."""

    @abstractmethod
    def drift(self, catalog: Catalog, applied: Iterable[str], replays: dict[Hashable, Replay], *,
              objects: list[object] | None = None) -> list[Difference]:
        """How the live schema differs from what its ``applied`` migrations make (``apm migrate drift``).

        The migrations are replayed into a scratch database of the engine's own kind, since only the engine
        knows where one can be made; ``replays`` keeps each replay under a key the engine chooses, so a fleet
        in one state pays for one. ``objects``: what the engine's fast ledger reader (``EngineKind.ledger_reader``)
        read of the schema with the ledger, which spares reading the database again (``None``: not read).
        ``DriftUnchecked`` when the replay cannot be made.
        """

    @abstractmethod
    def read_rows(self, table: str) -> list[dict[str, object]] | None:
        """Every row of ``table`` (column -> value), read without writing; ``None`` when there is no such table.

        For reading the application's own tables (``planner.compat``): what is in them is not the engine's
        concern, only how to read them is.
        """


#: The contract's protocols, for the engine-free session's type parameters (``planner.session.Session``).
DriverT = TypeVar("DriverT", bound=DriverConnection)
ObserverT = TypeVar("ObserverT", bound=Observer)
# A string: the protocol lives in planner.transaction_guard, which a plain ``import planner.engines`` does not load.
ConnectionT = TypeVar("ConnectionT", bound="GuardedConnection")

