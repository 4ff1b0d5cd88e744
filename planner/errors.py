"""Everything that can go wrong, as small named errors with structured fields.

The CLI chooses an exit code from the class and formats the message; it never
parses strings. Each error's ``str()`` is one line that says what is wrong and
what state the database is in. Advice that names the ``apm`` command or one of
its options belongs to the command (``cli/errors.py``), built from the fields
here: a program or a fleet using the library never ran ``apm migrate``. The hierarchy lets a caller catch at the
level it cares about: ``CatalogError`` (the files), ``PlanError`` (the request
does not fit the graph and the ledger), ``ExecutionError`` (a migration failed
while running) and ``DatabaseError`` (the database itself: the file, the
driver, the server, the backup tool). A message names a database as
``planner.urls.shown`` does: never a password.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from planner.urls import DatabaseName, shown, shown as masked


def _versions(versions: Iterable[str]) -> str:
    return ", ".join(versions)


def _ran_before(ran: Sequence[str]) -> str:
    """What of a step outside a transaction ran before the statement it stopped at, and stays."""
    if not ran:
        return "none of its statements ran"
    return f"its {len(ran)} statement(s) before it ran and stay ({'; '.join(f'`{s}`' for s in ran)})"


def _where(problem: CatalogError) -> str:
    """``migration_0002.py: `` when the problem's file is known and its message does not already name it."""
    path = problem.path
    if path is None or path.name in str(problem):
        return ""
    return f"{path.name}: "


class MigrationError(Exception):
    """Base of every error this library raises on purpose."""


class Interrupted(KeyboardInterrupt):
    """The person running the command asked it to stop (Ctrl-C): not a failure of the migration that was running.

    The ``apm`` command raises this from its SIGINT handler, so the executor
    can tell a real Ctrl-C (roll the open step back and stop) from a
    ``KeyboardInterrupt`` that a migration raised itself (a failed step).
    """


# --------------------------------------------------------------------------
# Catalog: problems found while loading migration files.
# --------------------------------------------------------------------------


class CatalogError(MigrationError):
    """A problem with one migration file or with the catalog as a whole."""

    def __init__(self, message: str, *, path: Path | None = None, versions: Sequence[str] = ()):
        self.path = path
        self.versions = tuple(versions)
        super().__init__(message)


class MalformedFileName(CatalogError, ValueError):
    """A file starts with ``migration_`` but is not ``migration_<digits>[_<slug>].py``."""

    def __init__(self, path: Path):
        super().__init__(f"{path.name}: migration files must be named migration_<digits>.py "
                         f"or migration_<digits>_<slug>.py (.sql for a plain SQL migration); rename it", path=path)


class DuplicateVersion(CatalogError, ValueError):
    """Two files carry numerically equal versions (``0027`` and ``27``)."""

    def __init__(self, version: str, paths: Sequence[Path]):
        self.paths = tuple(paths)
        names = " and ".join(p.name for p in paths)
        super().__init__(f"version {version} is defined twice ({names}); renumber one of them", path=paths[0],
                         versions=(version,))


class UnreadableMigration(CatalogError):
    """A migration file cannot be read or compiled (the line is given for syntax errors)."""

    def __init__(self, path: Path, version: str, reason: str, line: int | None = None):
        self.reason = reason
        self.line = line
        where = f"{path.name}, line {line}" if line else path.name
        super().__init__(f"{where}: cannot load migration {version}: {reason}", path=path, versions=(version,))


class MigrationImportError(CatalogError):
    """Running a migration module's top level raised an exception."""

    def __init__(self, path: Path, version: str, cause: BaseException):
        self.cause = cause
        #: The module that could not be imported, when that is what failed (``myapp.enums``).
        self.module = getattr(cause, "name", None) if isinstance(cause, ImportError) else None
        message = f"{path.name}: importing migration {version} raised {type(cause).__name__}: {cause}"
        if self.module:
            # APM's migrations import the application itself: the usual cause is apm running elsewhere.
            message = (f"{path.name}: migration {version} imports {self.module}, which cannot be imported "
                       f"({type(cause).__name__}: {cause}); run apm where the application is installed "
                       f"(the same virtualenv), or install it there (pip install -e <application>)")
        super().__init__(message, path=path, versions=(version,))


class MissingUpgrade(CatalogError):
    """A migration module defines no callable ``upgrade(conn)``."""

    def __init__(self, path: Path, version: str):
        super().__init__(f"{path.name}: migration {version} defines no upgrade(conn) function; add one", path=path,
                         versions=(version,))


class MalformedDependencies(CatalogError, ValueError):
    """``depends_on`` or a docstring ``Dependencies:`` line cannot be read as versions."""

    def __init__(self, path: Path, version: str, detail: str):
        self.detail = detail
        super().__init__(f"{path.name}: migration {version}: {detail}", path=path, versions=(version,))


class ConflictingDependencies(CatalogError, ValueError):
    """``depends_on`` and the docstring's ``Dependencies:`` section name different versions."""

    def __init__(self, path: Path, version: str, declared: Sequence[str], documented: Sequence[str]):
        self.declared = tuple(declared)
        self.documented = tuple(documented)
        super().__init__(f"{path.name}: migration {version} has depends_on = ({_versions(declared) or 'none'}) "
                         f"but its docstring lists Dependencies: ({_versions(documented) or 'None'}); make them agree",
                         path=path, versions=(version,))


class UnknownDependency(CatalogError, LookupError):
    """A migration depends on a version that no file in the catalog defines."""

    def __init__(self, version: str, dependency: str, path: Path | None = None):
        self.version = version
        self.dependency = dependency
        super().__init__(f"{version} depends on {dependency}, which does not exist; "
                         f"add migration {dependency} or fix the dependency", path=path, versions=(version, dependency))


class SelfDependency(CatalogError, ValueError):
    """A migration lists itself among its dependencies."""

    def __init__(self, version: str, path: Path | None = None):
        super().__init__(f"{version} depends on itself; remove {version} from its dependencies", path=path,
                         versions=(version,))


class DependencyCycle(CatalogError, ValueError):
    """Dependencies form a loop, so no order can apply them; ``cycle`` is the path, first node repeated."""

    def __init__(self, cycle: Sequence[str]):
        self.cycle = tuple(cycle)
        path = " → ".join(cycle)
        super().__init__(f"dependency cycle {path}; remove one of these dependencies", versions=cycle[:-1])


class CatalogInvalid(CatalogError):
    """The catalog has one or more problems; ``problems`` lists every one of them."""

    def __init__(self, directory: Path, problems: Sequence[CatalogError]):
        self.directory = directory
        self.problems = tuple(problems)
        if len(self.problems) <= 1:
            first = str(problems[0]) if problems else "unknown problem"
            message = f"migration catalog {directory} is invalid: {first}"
        else:
            # Every problem, one per line, so one run shows everything to fix (as `apm migrate check` does).
            lines = "\n".join(f"  - {_where(p)}{p}" for p in self.problems)
            message = f"migration catalog {directory} has {len(self.problems)} problems; nothing was run:\n{lines}"
        super().__init__(message, path=directory)


class CatalogNotFound(CatalogError, FileNotFoundError):
    """The migrations directory does not exist or is not a directory."""

    def __init__(self, directory: Path):
        self.directory = directory
        state = "is a file, not a directory" if directory.is_file() else "does not exist"
        super().__init__(f"migrations directory {directory} {state}", path=directory)


class SqlMigrationError(CatalogError, ValueError):
    """A ``migration_*.sql`` file does not follow the SQL migration format; ``line`` is where (1-based)."""

    def __init__(self, path: Path, version: str, line: int, detail: str):
        self.line = line
        self.detail = detail
        super().__init__(f"{path.name}, line {line}: {detail}", path=path, versions=(version,))


class UnknownSqlDirective(SqlMigrationError):
    """A header line reads like ``-- name: value`` but ``name`` is not a directive (a typo of ``depends_on``?)."""


class DuplicateSqlSection(SqlMigrationError):
    """``-- upgrade`` or ``-- downgrade`` (or ``-- depends_on:``) appears twice."""


class MissingUpgradeSection(SqlMigrationError):
    """No ``-- upgrade`` marker, SQL before it, or ``-- downgrade`` before it."""


class MalformedSqlDependencies(SqlMigrationError):
    """A ``-- depends_on:`` entry is not a version such as ``0030``."""


class IrreversibleWithDowngrade(SqlMigrationError):
    """A SQL file says ``-- irreversible:`` and also holds a downgrade: which one is meant cannot be guessed."""


# --------------------------------------------------------------------------
# Plans: the request does not fit the graph and the ledger.
# --------------------------------------------------------------------------


class PlanError(MigrationError):
    """A plan cannot be made, or is refused, for the graph and ledger as they are."""


class InvalidVersion(MigrationError, ValueError):
    """Text given where a version is required is not one: empty, blank, or not digits (a usage error)."""

    def __init__(self, text: str):
        self.text = text
        shown = "an empty version" if not text.strip() else f"{text!r} is not a version"
        super().__init__(f"{shown}: a version is a number such as 0027")


class MigrationNotFound(PlanError, LookupError):
    """A version named by the user is not in the catalog."""

    def __init__(self, version: str):
        self.version = version
        super().__init__(f"migration {version} is not in the catalog")


class NotApplied(PlanError, ValueError):
    """A rollback names a migration that is not applied."""

    def __init__(self, version: str):
        self.version = version
        super().__init__(f"migration {version} is not applied, so there is nothing to roll back")


class AlreadyApplied(PlanError, ValueError):
    """A mark or run names a migration that is already applied."""

    def __init__(self, version: str):
        self.version = version
        super().__init__(f"migration {version} is already applied")


class RollbackRefused(PlanError):
    """Rolling back ``version`` would strand applied ``dependents``; ``cascade_order`` is what --cascade runs.

    ``irreversible`` names migrations of that cascade without ``downgrade``
    (``reasons`` holds, by version, what the file says for those that declare
    themselves irreversible): when there are any, the message does not advise
    a cascade that would be refused too.
    """

    def __init__(self, version: str, dependents: Sequence[str], cascade_order: Sequence[str],
                 irreversible: Sequence[str] = (), reasons: Mapping[str, str] | None = None):
        self.version = version
        self.dependents = tuple(dependents)
        self.cascade_order = tuple(cascade_order)
        self.irreversible = tuple(irreversible)
        self.reasons = {v: r for v, r in (reasons or {}).items() if v in self.irreversible}
        super().__init__(f"cannot roll back {version}: applied migration(s) {_versions(dependents)} depend on it; "
                         f"nothing was changed")


class IrreversibleMigration(PlanError):
    """A rollback plan contains migrations that define no ``downgrade``, or whose downgrade declares them
    irreversible; ``reasons`` holds, by version, what those declarations say."""

    def __init__(self, versions: Sequence[str], reasons: Mapping[str, str] | None = None):
        self.versions = tuple(versions)
        self.reasons = {v: r for v, r in (reasons or {}).items() if v in self.versions}
        super().__init__(f"cannot roll back: {irreversibility(self.versions, self.reasons)}; "
                         f"nothing was changed. {irreversible_advice(self.versions, self.reasons)}")


def irreversibility(versions: Sequence[str], reasons: Mapping[str, str]) -> str:
    """``migration(s) 0002 define no downgrade(conn); 0022 is irreversible ("why")``: each reason quoted."""
    parts = []
    missing = [v for v in versions if v not in reasons]
    if missing:
        parts.append(f"migration(s) {_versions(missing)} define no downgrade(conn)")
    parts += [f'{v} is irreversible ("{reasons[v]}")' for v in versions if v in reasons]
    return "; ".join(parts)


def irreversible_advice(versions: Sequence[str], reasons: Mapping[str, str]) -> str:
    # A declared one was made irreversible on purpose: writing a downgrade is not the obvious fix there.
    if all(v in reasons for v in versions):
        return "Restore from a backup instead"
    return "Restore from a backup instead, or add a downgrade"


class UnknownAppliedMigration(PlanError, LookupError):
    """The ledger records a version that has no file in the catalog, so it cannot be rolled back."""

    def __init__(self, version: str):
        self.version = version
        super().__init__(f"migration {version} is recorded as applied but has no file in the catalog, so it cannot be "
                         f"rolled back; restore its file from version control")


class EmptyUpgrade(PlanError):
    """A plan would apply a migration whose upgrade does nothing (an unfilled ``apm migrate new`` scaffold)."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = tuple(paths)
        names = ", ".join(str(p) for p in paths)
        one = len(paths) == 1
        super().__init__(
            f"{names} {'has an upgrade that does' if one else 'have upgrades that do'} nothing yet (an unfilled "
            f"scaffold?), so applying {'it' if one else 'them'} would record a change that never happened; nothing "
            f"was changed. Write the change in {'the file' if one else 'each file'}, or delete "
            f"{'it' if one else 'them'} if {'it is' if one else 'they are'} not needed"
        )


class MissingFileInScope(PlanError, LookupError):
    """A rollback could take an applied migration whose file is gone: its dependents are unknown.

    The ledger does not record dependencies, so a migration without its file
    may depend on what the rollback removes (a trigger writing to a table the
    rollback drops). It is refused before anything runs, whatever the cascade.
    """

    def __init__(self, target: str, missing: Sequence[str], directory: Path, *, to: bool = False):
        self.target = target
        self.missing = tuple(missing)
        self.directory = directory
        self.to = to
        files = ", ".join(f"migration_{v}_*" for v in missing)
        them, verb = ("it", "depends") if len(missing) == 1 else ("they", "depend")
        super().__init__(
            f"cannot {'move to ' + target if to else 'roll back ' + target}: {_versions(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} recorded as applied, not before "
            f"{'what that rolls back' if to else 'it'}, but {'its file is' if len(missing) == 1 else 'their files are'} missing from "
            f"{directory} ({files}), so apm cannot tell whether {them} {verb} on what this rollback removes; "
            f"nothing was changed"
        )


class DependenciesNotApplied(PlanError):
    """A single migration was asked to run before the migrations it depends on."""

    def __init__(self, version: str, missing: Sequence[str]):
        self.version = version
        self.missing = tuple(missing)
        super().__init__(f"cannot apply {version}: its dependencies {_versions(missing)} are not applied; nothing was "
                         f"changed")


class LedgerChanged(PlanError):
    """Another process changed the ledger after the plan was made, so a step no longer fits it.

    ``conflicts`` are the dependencies that are no longer applied (apply) or the
    dependents that are now applied (rollback).
    """

    def __init__(self, version: str, direction: str, conflicts: Sequence[str]):
        self.version = version
        self.direction = direction
        self.conflicts = tuple(conflicts)
        if direction == "rollback":
            what = f"cannot roll back {version}: {_versions(conflicts)}, which depend(s) on it, is now applied"
        else:
            what = f"cannot apply {version}: its dependency {_versions(conflicts)} is no longer applied"
        super().__init__(f"{what} (another process changed the ledger after this plan was made); this step was not run "
                         f"and earlier steps stay as they are. Run the command again to plan from the current ledger")


class InconsistentHistory(PlanError):
    """Applied migrations depend on migrations that are not applied; ``pairs`` is (applied, missing dependency)."""

    def __init__(self, pairs: Sequence[tuple[str, str]]):
        self.pairs = tuple(pairs)
        applied, missing = self.pairs[0]
        more = f" (and {len(self.pairs) - 1} more)" if len(self.pairs) > 1 else ""
        super().__init__(f"inconsistent history: {applied} is applied but its dependency {missing} is not{more}; "
                         f"nothing was changed")


# --------------------------------------------------------------------------
# Execution: a migration failed while it ran; its transaction was rolled back.
# --------------------------------------------------------------------------


class ExecutionError(MigrationError):
    """A step of a plan failed; that step's transaction was rolled back, earlier steps stay applied."""

    def __init__(self, message: str, *, version: str, direction: str):
        self.version = version
        self.direction = direction
        super().__init__(message)


class MigrationFailed(ExecutionError):
    """``upgrade`` or ``downgrade`` raised; ``cause`` is the original exception."""

    def __init__(self, version: str, direction: str, cause: BaseException, rolled_back: bool = True):
        self.cause = cause
        state = "its changes were rolled back" if rolled_back else "the whole plan was rolled back"
        if isinstance(cause, SystemExit):
            what = f"called sys.exit({cause.code!r})"
        elif str(cause).strip():
            what = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"  # a server adds LINE/DETAIL/HINT
        else:
            what = f"raised {type(cause).__name__}"
        #: What failed, without what was rolled back (a caller running the plan in parts says that itself).
        self.failure = f"migration {version} failed during {direction}: {what}"
        super().__init__(f"{self.failure}; {state}", version=version, direction=direction)


class ValidationFailed(ExecutionError):
    """``validate_pre`` or ``validate_post`` returned False."""

    def __init__(self, version: str, direction: str, check: str):
        self.check = check
        super().__init__(
            f"migration {version}: {check} returned False during {direction}; its changes were rolled back",
            version=version,
            direction=direction,
        )


class ForeignKeyViolation(ExecutionError):
    """After a step, ``PRAGMA foreign_key_check`` found rows whose parent is missing."""

    def __init__(self, version: str, direction: str, violations: Sequence[tuple[str, int | None, str, int]]):
        # Each violation is (table, rowid, parent table, foreign key index), as SQLite reports it.
        self.violations = tuple(violations)
        table, rowid, parent, _ = self.violations[0]
        more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        super().__init__(f"migration {version} left a broken foreign key during {direction}: {table} row {rowid} "
                         f"references a missing row of {parent}{more}; its changes were rolled back", version=version,
                         direction=direction)


class TransactionTampered(ExecutionError):
    """A migration tried to commit, roll back or begin a transaction itself."""

    def __init__(self, version: str, direction: str, statement: str, reason: str | None = None):
        self.statement = statement
        self.reason = reason or "migrations must not manage transactions (the executor commits each one)"
        super().__init__(f"migration {version} ran `{statement}` during {direction}; {self.reason}; remove it. "
                         f"Its changes were rolled back", version=version, direction=direction)


# --------------------------------------------------------------------------
# Database: the file itself cannot be used.
# --------------------------------------------------------------------------


class DatabaseError(MigrationError):
    """The database file cannot be opened or written; nothing was changed.

    The message is the fact alone: what to do next depends on who asked (a
    one-database command, a fleet, a program), so the command adds its own
    advice (``cli.errors``). ``database`` names it as a person reads it
    (``planner.urls.shown``): a path, or a URL with its password
    masked; ``None`` when there is none to name.
    """

    def __init__(self, message: str, *, database: Path | str | None):
        self.database: DatabaseName | None = shown(database) if database is not None else None
        super().__init__(message)


class DatabaseNotFound(DatabaseError, FileNotFoundError):
    """A command that only reads was pointed at a database that does not exist."""

    def __init__(self, database: Path | str):
        name = shown(database)
        super().__init__(f"database {name} does not exist", database=name)


class DatabaseDirectoryMissing(DatabaseError, FileNotFoundError):
    """The folder that should hold the database does not exist."""

    def __init__(self, database: Path | str):
        name = shown(database)
        super().__init__(f"folder {os.path.dirname(name) or '.'} for database {os.path.basename(name)} does not "
                         f"exist", database=name)


class NotADatabase(DatabaseError):
    """The path exists but is not a SQLite database (another kind of file, a folder, a device)."""

    def __init__(self, database: Path | str):
        self.folder = os.path.isdir(database)
        name = shown(database)
        super().__init__(f"{name} is a folder, not a database file" if self.folder else
                         f"{name} is not a SQLite database", database=name)


class DatabaseDamaged(DatabaseError):
    """The file itself is corrupt (SQLite's "database disk image is malformed"): stop, keep what is committed."""

    def __init__(self, database: Path | str, detail: str, *, checked_first: bool = False):
        self.detail = detail
        name = shown(database)
        state = ("found before anything ran; nothing was changed" if checked_first else
                 "the transaction that met it was rolled back and nothing after it ran")
        super().__init__(f"database {name} is damaged ({detail}); {state}", database=name)


class DatabaseReadOnly(DatabaseError, PermissionError):
    """The database, or the folder SQLite writes its journal in, cannot be written."""

    def __init__(self, database: Path | str, *, folder: bool = False):
        self.folder = folder
        name = shown(database)
        if folder:
            parent = os.path.dirname(name) or "."
            message = (f"folder {parent} is read-only, and SQLite must write its journal there next to "
                       f"database {os.path.basename(name)}; make the folder writable (chmod u+w {parent}) or move "
                       f"the database elsewhere; nothing was changed")
        else:
            message = (f"database {name} is read-only; make it writable (chmod u+w {name}) or copy it "
                       f"elsewhere; nothing was changed")
        super().__init__(message, database=name)


class ForeignLedger(DatabaseError):
    """``schema_migrations`` exists with a shape this project neither wrote nor inherited from APM's old framework."""

    def __init__(self, database: Path | str, columns: Sequence[str], known: Sequence[str], reason: str | None = None,
                 table: str = "schema_migrations"):
        self.columns = tuple(columns)
        self.reason = reason
        self.table = table
        name = shown(database)
        why = f"; {reason}" if reason else f"; apm knows {', '.join(known)}"
        #: What is wrong and what was done, without the way out (which the message adds).
        self.fact = f"{name} has a {table} table made by another tool (columns: {', '.join(columns)}{why}); " \
                    f"nothing was changed"
        # Moving the table aside is SQL, open to any caller; naming another database is the command's advice.
        super().__init__(f"{self.fact}. Move that table aside (ALTER TABLE {table} RENAME TO ...) if you mean to "
                         f"switch tools", database=name)


class NoAgentsTable(DatabaseError, LookupError):
    """The database has no agents table yet (migration 0001 is not applied)."""

    def __init__(self, database: Path | str):
        name = shown(database)
        super().__init__(f"database {name} has no agents table yet", database=name)


class DatabaseLocked(DatabaseError, TimeoutError):
    """Another process held the lock a run needs longer than the busy timeout, on any engine: SQLite's write
    lock on the file, or the migration lock (an advisory lock) another apm holds on a server's ledger."""

    def __init__(self, database: Path | str, timeout: float, *, migration_lock: bool = False):
        self.timeout = timeout
        name = shown(database)
        held = (f"another apm process has held the migration lock on {name} for more than {timeout:g}s"
                if migration_lock else f"database {name} stayed locked by another process for {timeout:g} s")
        super().__init__(f"{held}; nothing was changed", database=name)


class _LockLimits(Protocol):
    """What ``StepLocked`` reads of a run's ``planner.locks.LockSettings`` (not imported: planner.locks imports
    this module)."""

    @property
    def lock_timeout(self) -> float: ...

    @property
    def attempts(self) -> int: ...

    @property
    def lock_timeout_shown(self) -> str: ...


class _Holder(Protocol):
    """A session that held the lock (``planner.engines.postgresql.lock_timeout.Blocker``), as it names itself."""

    def describe(self) -> str: ...


class StepLocked(DatabaseError):
    """A step could not get a lock within the lock timeout, however many times it was tried (exit 6).

    A database error like ``DatabaseLocked``, but for a lock a statement waits
    for, not the run's own lock: it names the attempts and who held the lock,
    and the command says which of its options raise the limits.
    """

    def __init__(self, version: str | None, settings: _LockLimits, attempts: int, blockers: Sequence[_Holder],
                 *, final: bool = True, pause: float = 0.0, shown: str | None = None, waited: str | None = None,
                 declared: bool = False):
        """``waited``: the lock timeout that fired, as shown; ``declared``: it is the migration's own
        (``lock_timeout = "..."`` in its file), which the run's settings do not change."""
        self.version, self.attempts, self.blockers = version, attempts, list(blockers)
        self.declared = declared
        self.lock_timeout = settings.lock_timeout
        self.final = final
        who = ("held by " + "; ".join(b.describe() for b in blockers)) if blockers else \
            "held by a session the watch did not see (it may have ended)"
        what = f"migration {version}" if version else "the run"
        timeout = waited or settings.lock_timeout_shown
        if final:
            tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
            message = (f"{what} could not get its lock within the lock timeout ({timeout}) in {tries}: {who}; "
                       f"its step was rolled back, so nothing waits behind it")
        else:
            message = (f"lock timeout ({timeout}) on attempt {attempts} of {settings.attempts}: {who}; "
                       f"rolled back, trying again in {pause:.1f} s")
        super().__init__(message, database=shown)  # a redacted URL, or nothing


class StatementTimedOut(DatabaseError):
    """A step's statement ran past the run's statement timeout and was canceled (exit 6, like a lock timeout).

    Not a defect of the migration (exit 5): a limit the run chose, met on
    this database's data; the same step passes with a higher limit.
    """

    def __init__(self, version: str | None, statement: str | None, limit: str, source: str, *, whole: bool,
                 shown: str | None = None):
        """``source``: where the limit came from (an option, the config file); ``whole``: the plan was one
        transaction, all of it rolled back."""
        self.version, self.statement, self.limit, self.source = version, statement, limit, source
        what = f"migration {version}'s statement" if version else "a statement"
        text = " ".join((statement or "").split())
        what += f" `{text[:80]}{'...' if len(text) > 80 else ''}`" if text else ""
        undone = "the whole plan was rolled back" if whole else "its step was rolled back"
        super().__init__(f"{what} ran past the statement timeout ({limit}{f', from {source}' if source else ''}) "
                         f"and was canceled; {undone}", database=shown)


class StepUnderWay(DatabaseError, TimeoutError):
    """Another process kept running a ``transactional = False`` step longer than the busy timeout."""

    def __init__(self, database: Path | str, version: str, holder: str, timeout: float):
        self.version, self.holder, self.timeout = version, holder, timeout
        super().__init__(f"migration {version} runs outside a transaction in another process ({holder}), still after "
                         f"{timeout:g} s; nothing of it was run here", database=database)


class UnusableBackup(DatabaseError):
    """A backup cannot be restored: it is not SQLite, fails ``PRAGMA integrity_check``, or cannot be read."""

    def __init__(self, backup: Path, reason: str, *, database: Path | str):
        self.backup = backup  # a file: restoring reads it
        self.reason = reason
        super().__init__(f"cannot restore {backup}: {reason}; nothing was changed", database=database)


class NoBackups(DatabaseError, FileNotFoundError):
    """A restore named no backup, and none of this database exists."""

    def __init__(self, database: Path | str, names: str | None = None):
        name = shown(database)
        super().__init__(
            f"no backup of {name} exists ({names or f'{os.path.basename(name)}.backup.*'}); nothing was changed",
            database=name,
        )


# --------------------------------------------------------------------------
# Rendering: drawing a diagram as an image needs Graphviz, an outside program.
# --------------------------------------------------------------------------


class RenderError(MigrationError):
    """A diagram could not be turned into an image; the text formats still work."""


class GraphvizMissing(RenderError, FileNotFoundError):
    """Graphviz's ``dot`` executable is not on PATH, so svg and png cannot be made."""

    def __init__(self) -> None:
        super().__init__(
            "Graphviz's dot is not installed; install the Debian package graphviz (apt-get install graphviz)"
        )


class GraphvizFailed(RenderError, RuntimeError):
    """``dot`` ran and exited non-zero; ``stderr`` is the first line of what it said."""

    def __init__(self, returncode: int, stderr: str):
        self.returncode = returncode
        self.stderr = stderr
        detail = f": {stderr}" if stderr else ""
        super().__init__(f"Graphviz's dot failed with exit code {returncode}{detail}")


# --------------------------------------------------------------------------
# Authoring: helpers a migration author calls (table rebuilds, new files).
# --------------------------------------------------------------------------


class RebuildError(MigrationError):
    """``rebuild_table`` or ``drop_columns`` did not change ``table``; it is exactly as before the call."""

    def __init__(self, message: str, *, table: str):
        self.table = table
        super().__init__(message)


class RebuildRefused(RebuildError, ValueError):
    """A rebuild would lose or break something (``object_name`` says what), so nothing was changed."""

    def __init__(self, table: str, object_name: str, reason: str, advice: str):
        self.object_name = object_name
        self.reason = reason
        super().__init__(
            f"cannot rebuild table {table}: {object_name} {reason}; nothing was changed. {advice}", table=table
        )


class TableNotFound(RebuildRefused, LookupError):
    """The table to rebuild or read does not exist in the database."""

    def __init__(self, table: str):
        RebuildError.__init__(
            self,
            f"table {table} does not exist; nothing was changed. Check the name, and that the migrations "
            f"that create it come first in depends_on",
            table=table,
        )
        self.object_name = table
        self.reason = "does not exist"


class RebuildFailed(RebuildError):
    """SQLite rejected a step of a rebuild (often a row that breaks the new schema); it was undone."""

    def __init__(self, table: str, step: str, cause: BaseException):
        self.step = step
        self.cause = cause
        super().__init__(f"rebuilding table {table} failed while {step}: {type(cause).__name__}: {cause}; the table is "
                         f"unchanged. Fix the new CREATE TABLE or the convert expressions, or the rows that break them",
                         table=table)


class InvalidDescription(MigrationError, ValueError):
    """A new migration's description cannot become a file name slug or a docstring title."""

    def __init__(self, description: str, reason: str):
        self.description = description
        self.reason = reason
        super().__init__(f"cannot name a migration {description!r}: {reason}; describe it in words, "
                         f"e.g. 'Add feature_flags table'")


class ConflictingDependencyOptions(MigrationError, ValueError):
    """A new migration was asked to be a root and to depend on versions at the same time."""

    def __init__(self, depends_on: Sequence[str]):
        self.depends_on = tuple(depends_on)
        super().__init__(f"a root migration depends on nothing, but dependencies {_versions(depends_on)} were given")


class MigrationFileExists(MigrationError, FileExistsError):
    """The file a new migration would be written to is already there; it was left untouched."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(f"{path} already exists and was left untouched; move it away or pick another description")


# --------------------------------------------------------------------------
# Manual marks: recording a migration as applied or rolled back without running it.
# --------------------------------------------------------------------------


class MarkRefused(PlanError):
    """A manual mark would leave the ledger inconsistent; ``blockers`` are the versions in the way."""

    def __init__(self, message: str, *, version: str, blockers: Sequence[str]):
        self.version = version
        self.blockers = tuple(blockers)
        super().__init__(message)


class MarkAppliedRefused(MarkRefused):
    """``--mark-applied V`` while some of V's dependencies are not applied; nothing was recorded."""

    def __init__(self, version: str, missing: Sequence[str]):
        super().__init__(f"cannot mark {version} as applied: its dependencies {_versions(missing)} are not applied; "
                         f"nothing was recorded", version=version, blockers=missing)


class MarkRolledBackRefused(MarkRefused):
    """``--mark-rolled-back V`` while applied migrations depend on V; nothing was recorded."""

    def __init__(self, version: str, dependents: Sequence[str]):
        super().__init__(
            f"cannot mark {version} as rolled back: applied migration(s) {_versions(dependents)} depend on it; "
            f"nothing was recorded. Mark or roll back {_versions(dependents)} first",
            version=version,
            blockers=dependents,
        )


# --------------------------------------------------------------------------
# Baselines, non-transactional migrations, squashes.
# --------------------------------------------------------------------------


class BaselineRefused(PlanError):
    """``--baseline V`` on a ledger that already records V or one of its ancestors; nothing was recorded."""

    def __init__(self, version: str, recorded: Sequence[str]):
        self.version = version
        self.recorded = tuple(recorded)
        super().__init__(f"cannot baseline at {version}: the ledger already records {_versions(recorded)}; nothing was "
                         f"recorded")


class NonTransactionalInAtomic(PlanError):
    """``--atomic`` with a plan holding ``transactional = False`` migrations, which cannot run inside its transaction."""

    def __init__(self, versions: Sequence[str]):
        self.versions = tuple(versions)
        super().__init__(f"cannot run this plan in one transaction: migration(s) {_versions(versions)} declare "
                         f"transactional = False and must run outside any transaction; nothing was changed")


class MalformedSqlDirective(SqlMigrationError):
    """A SQL header directive whose value cannot be read (``-- transactional: maybe``)."""


class InvalidTransactional(CatalogError, ValueError):
    """A Python migration's ``transactional`` is not ``True`` or ``False``."""

    def __init__(self, path: Path, version: str, value: object):
        super().__init__(f"{path.name}: migration {version}: transactional must be True or False, not {value!r}",
                         path=path, versions=(version,))


class NonTransactionalFailed(ExecutionError):
    """A ``transactional = False`` migration failed; it ran in autocommit, so nothing rolled its statements back."""

    def __init__(self, version: str, direction: str, cause: BaseException):
        self.cause = cause
        super().__init__(
            f"migration {version} (transactional = False) failed during {direction}: {cause}; it ran outside a "
            f"transaction, so statements before the failure may have taken effect, and it is not recorded",
            version=version,
            direction=direction,
        )


class OutsideStepStopped(ExecutionError):
    """A ``transactional = False`` step stopped before a statement that destroys data, which was not confirmed.

    Such a step runs statement by statement, each committed as it runs, so
    what ran before the stop stays: ``ran`` lists those statements, and
    ``lines`` what the refused one would destroy. The step is not recorded.
    """

    def __init__(self, version: str, direction: str, statement: str, lines: Sequence[str], ran: Sequence[str]):
        self.statement, self.lines, self.ran = statement, tuple(lines), tuple(ran)
        what = "; ".join(line.removeprefix(f"{version} {direction}: ") for line in lines)
        done = _ran_before(ran)
        super().__init__(
            f"migration {version} (transactional = False) stopped before `{statement}` during {direction}: "
            f"{what}, which was not confirmed. It runs outside a transaction: {done}, and it is not recorded",
            version=version,
            direction=direction,
        )


class OutsideStepLocked(ExecutionError):
    """A ``transactional = False`` step stopped before a statement whose lock findings stop the run, not accepted.

    The statement was tried in a transaction of its own and rolled back (or,
    when it runs only outside one, judged by its kind and not run); what ran
    before it stays (``ran``). ``lines`` are the findings that stopped it.
    """

    def __init__(self, version: str, direction: str, statement: str, lines: Sequence[str], ran: Sequence[str],
                 *, measured: bool = True, findings: Sequence[Any] = ()):
        self.statement, self.lines, self.ran, self.measured = statement, tuple(lines), tuple(ran), measured
        self.findings = tuple(findings)  # the planner.locks.LockFinding that stopped it (not imported: a cycle)
        what = "; ".join(line.removeprefix(f"{version} {direction}: lock ") for line in lines)
        how = "tried in a transaction of its own and rolled back" if measured else "judged by its kind and not run"
        done = _ran_before(ran)
        super().__init__(
            f"migration {version} (transactional = False) stopped before `{statement}` during {direction} ({how}): "
            f"{what}, which was not accepted. It runs outside a transaction: {done}, and it is not recorded",
            version=version,
            direction=direction,
        )


class SquashConflict(CatalogError, ValueError):
    """A version is replaced by two squashes, or a squash replaces itself."""

    def __init__(self, squash: str, version: str, path: Path | None = None):
        super().__init__(
            f"migration {squash} replaces {version}, which is itself a squash or already replaced by another "
            f"squash; each migration can be replaced once",
            path=path, versions=(squash,),
        )


class PartiallyAppliedSquash(PlanError):
    """Some, but not all, of the migrations a squash replaces are applied: neither the squash nor the chain fits."""

    def __init__(self, squash: str, applied: Sequence[str], missing: Sequence[str]):
        self.squash, self.applied, self.missing = squash, tuple(applied), tuple(missing)
        super().__init__(
            f"migration {squash} replaces {_versions([*applied, *missing])}, but only {_versions(applied)} "
            f"of them are applied here; nothing was changed"
        )


class SquashRefused(PlanError):
    """``apm migrate squash FROM TO`` cannot write a squash for that range; nothing was written.

    ``kind`` names the refusals a caller can act on: ``"no-range"`` (the two
    versions are not on one path of the graph), ``"data"`` (the range changes
    rows: ``versions``), ``"partly-applied"`` (the database applied part of it;
    ``target`` is the range's last version, which finishes it).
    """

    def __init__(self, message: str, *, versions: Sequence[str] = (), kind: str | None = None,
                 target: str | None = None):
        self.versions = tuple(versions)
        self.kind = kind
        self.target = target
        super().__init__(message)


# --------------------------------------------------------------------------
# Fleets: many databases at once (planner.fleet).
# --------------------------------------------------------------------------


class FleetError(MigrationError, ValueError):
    """A fleet cannot be formed as asked: the CLI treats it as a usage error (exit 2)."""


class EmptyPattern(FleetError):
    """A ``--glob`` pattern, a ``--list`` file or a config ``fleet`` pattern named no database at all.

    ``source`` says which: ``"glob pattern"``, ``"list file"`` or ``"fleet pattern"``; ``why``, what is wrong.
    """

    def __init__(self, source: str, pattern: str, why: str = "matches no database"):
        self.source, self.pattern, self.why = source, pattern, why
        super().__init__(f"{source} {pattern!r} {why}; nothing was changed")


class NoFleet(FleetError):
    """No database was named: no ``--glob``, no ``--list``, and no ``fleet`` in the config file."""

    def __init__(self) -> None:
        super().__init__("no databases named")


class NoJournal(FleetError):
    """``--resume`` found no run to resume in the journal folder: none at all, or only other fleets' (``others``,
    each described in a few words), whose runs a resume must never continue."""

    def __init__(self, folder: Path, others: Sequence[str] = (), *, named: bool = True):
        self.folder, self.others = folder, list(others)
        if not others:
            super().__init__(f"nothing to resume: no fleet run journal (run-*.jsonl) in {folder}")
        else:
            which = f"no journal in {folder} is of this fleet (the same patterns and lists, the same catalog); " \
                "it holds" if named else f"no fleet was named, and a resume never guesses which run of {folder} to continue"
            super().__init__(f"nothing to resume: {which}: {'; '.join(others)}")


class UnreadableJournal(FleetError):
    """The journal ``--resume`` would continue is not one this project wrote."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot resume from {path}: {reason}")


class DriverMissing(DatabaseError):
    """A PostgreSQL URL was given, but psycopg (the ``postgres`` extra) is not installed."""

    def __init__(self, shown: str):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        super().__init__(
            f"{shown} is a PostgreSQL database, and the PostgreSQL driver is not installed: "
            f"pip install 'apm-migrate[postgres]'",
            database=shown,  # a connection string, redacted, not a file
        )


class DatabaseUnreachable(DatabaseError):
    """The server refused the connection or could not be reached; nothing was changed."""

    def __init__(self, shown: str, reason: str):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        self.reason = reason
        super().__init__(f"cannot connect to {shown}: {reason}; nothing was changed", database=shown)


class DatabaseMissing(DatabaseUnreachable):
    """The server answered, but the database the URL names does not exist on it (``CREATE DATABASE`` first)."""


class ServerError(DatabaseError):
    """The server failed a statement of the ledger or the lock (not a migration's); nothing was changed."""

    def __init__(self, shown: str, reason: str):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        self.reason = reason
        super().__init__(f"PostgreSQL error on {shown}: {reason}", database=shown)


class BackupToolMissing(DatabaseError, FileNotFoundError):
    """``pg_dump`` (or ``pg_restore``) is not installed, so the backup cannot be written (or restored)."""

    def __init__(self, shown: str, *, tool: str = "pg_dump", task: str = "back up {shown} before rolling back",
                 advice: str | None = None):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        self.tool = tool
        #: What the caller that wanted the tool lets the user do; ``None`` leaves it to the command.
        self.advice = advice
        super().__init__(f"cannot {task.format(shown=shown)}: {tool} is not installed (apt-get install "
                         f"postgresql-client); nothing was changed" + (f". {advice}" if advice else ""), database=shown)


class BackupFailed(DatabaseError):
    """``pg_dump`` ran and failed; the command that wanted the backup (a rollback, a restore) did not run."""

    def __init__(self, shown: str, reason: str, advice: str | None = None, *, locked: str | None = None):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        self.reason = reason
        #: What the caller that wanted the dump lets the user do; ``None`` leaves it to the command.
        self.advice = advice
        #: The table pg_dump could not lock in time (``reason`` then says within what, and who held it).
        self.locked = locked
        lead = f"pg_dump could not lock {locked} " if locked else f"pg_dump could not back up {shown}: "
        super().__init__(f"{lead}{reason}; nothing was changed" + (f". {advice}" if advice else ""), database=shown)


class RestoreFailed(DatabaseError):
    """``pg_restore`` failed; its single transaction rolled back, so the database is as it was."""

    def __init__(self, shown: str, backup: object, reason: str):
        shown = masked(shown)  # a caller's raw URL never reaches the message
        self.reason = reason
        super().__init__(f"pg_restore could not restore {shown} from {backup}: {reason}; the restore ran in one "
                         f"transaction, so nothing was changed", database=shown)
