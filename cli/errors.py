"""How a failure reaches the terminal: one line (or one summary and a list), and one documented exit code.

Library errors carry their meaning in their class (``planner.errors``); each
family maps to one exit code here. Commands raise ``CommandError`` for the
refusals that are the command's own (a prompt not answered, an agent not
found). Nothing here imports the planner at start-up: ``apm --help`` must not
pay for it, and an error can only be a planner error once a command imported it.

What to do next: the command's advice, added to the fact a library error states.

A library error says what is wrong and what state the database is in; it
cannot know who asked (this command, a fleet, a program embedding the
planner), so it names no ``apm`` command and no option. Here each error
class gets the advice this command's user can follow, built from the
error's fields, so the line a person reads is the fact and the way out.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from cli import options


class CommandError(click.ClickException):
    """A failure on its way to the terminal, with the exit code of its family."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        # click declares exit_code a ClassVar, but each instance carries its own family's code by design.
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _exit_codes() -> tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...]:
    """Each library error family and its exit code, most specific first."""
    # start-up time: cli.errors runs without planner until _exit_codes() needs it
    from planner import errors as E

    return (
        (E.InvalidVersion, options.EXIT_USAGE),
        (E.FleetError, options.EXIT_USAGE),  # a fleet pattern naming nothing is a usage error, like a bad option
        (E.CatalogError, options.EXIT_CATALOG),
        (E.PlanError, options.EXIT_REFUSED),
        (E.OutsideStepStopped, options.EXIT_UNCONFIRMED),  # a step outside a transaction: its loss unconfirmed
        (E.OutsideStepLocked, options.EXIT_LOCK_RISK),  # ... or its lock findings not accepted
        (E.ExecutionError, options.EXIT_FAILED),
        (E.DatabaseError, options.EXIT_DATABASE),
        (E.RenderError, options.EXIT_TOOL),
        # `apm migrate new` refusing to write a file is a refusal like any other.
        ((E.InvalidDescription, E.ConflictingDependencyOptions, E.MigrationFileExists), options.EXIT_REFUSED),
    )


def is_sqlite_error(error: BaseException) -> bool:
    """Whether ``error`` is a ``sqlite3.Error``, without importing sqlite3 to find out."""
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3 is not None and isinstance(error, sqlite3.Error)


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of a library error (1, "internal", for anything unexpected)."""
    if "planner.errors" in sys.modules:
        for kind, code in _exit_codes():
            if isinstance(error, kind):
                return code
    if is_sqlite_error(error):
        return options.EXIT_DATABASE
    return options.EXIT_INTERNAL


def as_command_error(error: Exception) -> CommandError:
    """``error`` as the line and exit code a person sees; an unexpected one says it is a bug."""
    code = exit_code_for(error)
    if code != options.EXIT_INTERNAL:
        if is_sqlite_error(error):
            return CommandError(f"SQLite error: {error}; run with --debug for details", code)
        return CommandError(message(error), code)
    return CommandError(f"internal error {type(error).__name__}: {error}; run again with --debug and report it", code)


# --------------------------------------------------------------------------
# Ctrl-C and termination
# --------------------------------------------------------------------------


def _raise_interrupted(signum: int, frame: object) -> None:
    # start-up time: cli.errors runs without planner.errors until _raise_interrupted() needs it
    from planner.errors import Interrupted

    raise Interrupted(signum)


@contextmanager
def catch_interrupts() -> Iterator[None]:
    """Turn SIGINT (Ctrl-C) and SIGTERM into ``planner.errors.Interrupted`` for the rest of the command.

    The executor rolls the open step back on any exception, so what this
    changes is how the stop is *told*: a distinct exception lets the
    executor tell a person's Ctrl-C (stop, exit 130) from a
    ``KeyboardInterrupt`` a migration raised itself (a failed step, exit
    5), and lets SIGTERM run the same clean-up instead of dying mid-way.
    """
    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _raise_interrupted)
    except ValueError:  # not the main thread (an embedding program): leave its handlers alone
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interrupted_exit_code(error: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM: the shell's 128 + signal number."""
    signum = error.args[0] if error.args and isinstance(error.args[0], int) else signal.SIGINT
    return 128 + int(signum)


_Advise = Callable[[Any], str]


def message(error: BaseException) -> str:
    """``error``'s fact followed by this command's advice for it (the fact alone for a class without advice)."""
    table = _table()
    for kind in type(error).__mro__:
        advise = table.get(kind)
        if advise is not None:
            return advise(error)
    return str(error)


def _table() -> dict[type, _Advise]:
    """Each library error class and the whole line this command shows for it."""
    # start-up time: cli.errors runs without planner until _table() needs it
    from planner import errors as E

    return {
        E.DatabaseLocked: lambda e: f"{e}. Wait for it to finish and retry, or raise --busy-timeout",
        E.DatabaseNotFound: lambda e: f"{e}; run `apm migrate` to create it, or pass --db",
        E.DatabaseDirectoryMissing: lambda e: f"{e}; create it or pass another --db",
        E.NotADatabase: lambda e: f"{e}; " + ("pass the database file's path with --db" if e.folder
                                              else "check the --db path"),
        E.ForeignLedger: lambda e: (f"{e.fact}. Point --db at APM's database, or move that table aside "
                                    f"(ALTER TABLE {e.table} RENAME TO ...) if you mean to switch tools"),
        E.DatabaseDamaged: lambda e: (f"{e}. Restore it from a backup with `apm migrate restore` "
                                      f"(`apm migrate backups` lists them), or see `apm migrate doctor`"),
        E.NoAgentsTable: lambda e: f"{e}; run `apm migrate` first",
        E.StepUnderWay: lambda e: (f"{e}. Wait for that process to finish and retry, or raise --busy-timeout; "
                                   f"if it is gone, `apm migrate doctor` says what to check"),
        E.UnusableBackup: lambda e: f"{e}. Choose another backup (`apm migrate backups` lists them)",
        E.NoBackups: lambda e: f"{e}. Name a backup file: apm migrate restore FILE",
        E.MigrationNotFound: lambda e: f"{e}; see `apm migrate --list` for versions",
        E.RollbackRefused: _rollback_refused,
        E.MissingFileInScope: _missing_file_in_scope,
        E.DependenciesNotApplied: lambda e: f"{e}. Apply them first, or run `apm migrate --target {e.version}`",
        E.InconsistentHistory: _inconsistent_history,
        E.MarkAppliedRefused: lambda e: (f"{e}. Apply them first (`apm migrate --target {e.blockers[0]}`), or mark "
                                         f"them applied first if their changes are already in the schema"),
        E.BaselineRefused: lambda e: (f"{e}. A baseline is for a database apm has not migrated yet; here use "
                                      f"`apm migrate --mark-applied V` for what is missing "
                                      f"(see `apm migrate --show-applied`)"),
        E.NonTransactionalInAtomic: lambda e: (
            "cannot run this plan with --atomic" + str(e).removeprefix("cannot run this plan in one transaction")
            + ". Run without --atomic (each step then commits on its own)"),
        E.NonTransactionalFailed: lambda e: f"{e}. See `apm migrate doctor` for what to check",
        E.OutsideStepStopped: lambda e: f"{e} (" + ("`apm migrate doctor` shows what to check" if e.ran
                                                     else "run it again once confirmed") + ")",
        E.PartiallyAppliedSquash: lambda e: (
            f"{e}. Finish the chain first: move {e.squash}'s file out of the folder, run `apm migrate --target "
            f"{e.missing[-1]}`, and put it back ({e.squash} then counts as applied); or roll back "
            f"{', '.join(e.applied)} with the same file moved out"),
        E.SquashRefused: _squash_refused,
        E.StepLocked: lambda e: (f"{e}. Try again when that session is done (or end it), or raise "
                               f"{'the lock_timeout its migration declares' if e.declared else '--lock-timeout'} / "
                               f"--lock-retries" if e.final else str(e)),
        E.StatementTimedOut: lambda e: f"{e}. Raise --statement-timeout (statement_timeout in apm.toml), or run "
                                       f"it when the table is smaller or quieter",
        E.ConflictingDependencyOptions: lambda e: f"{e}; pass either --root or --depends-on",
        E.EmptyPattern: _empty_pattern,
        E.NoFleet: lambda e: f"{e}: give --glob PATTERN or --list FILE, or set fleet = [...] in apm.toml",
        E.NoJournal: lambda e: (f"{e}; resume one with --resume --journal FILE, or give the --glob/--list and "
                                f"--migrations-dir it ran with" if e.others else
                                f"{e}; run `apm fleet migrate` first, or pass the folder it used with --journal-dir"),
        E.UnreadableJournal: lambda e: f"{e}; start a new run instead (without --resume)",
        E.CatalogNotFound: lambda e: f"{e}; pass --migrations-dir or set APM_MIGRATIONS_DIR",
        E.CatalogInvalid: _catalog_invalid,
        E.BackupToolMissing: lambda e: str(e) if e.advice else f"{e}. Install it, or pass --no-backup",
        E.BackupFailed: lambda e: str(e) if e.advice else f"{e}. " + (
            "Wait for that transaction to end (or raise --busy-timeout), then run again" if e.locked
            else "Fix what pg_dump reports") + ", or pass --no-backup",
    }


def _empty_pattern(error: Any) -> str:
    """The pattern named by the option that gave it (``--glob 'x' matches no database``), and the one advice
    that fits where it came from: a glob's quoting, a list file's lines, the config file's folder."""
    option = {"glob pattern": "--glob", "list file": "--list"}.get(error.source, error.source)
    if error.source == "glob pattern":
        advice = "check the pattern, and quote it so the shell does not expand it"
    elif error.source == "list file":
        advice = "check the file's path" if error.why.startswith("cannot") else \
            "write one database a line in it (a path or a URL; # starts a comment)"
    else:
        advice = "check fleet = [...] in the config file (shown made absolute: a relative pattern there is " \
            "relative to that file's folder, wherever apm runs)"
    return f"{option} {error.pattern!r} {error.why}; {advice}; nothing was changed"


def _catalog_invalid(error: Any) -> str:
    if len(error.problems) <= 1:
        return str(error)
    head, _, lines = str(error).partition(":\n")
    return f"{head}. Fix each of these (`apm migrate check` shows the fix for each):\n{lines}"


def _squash_refused(error: Any) -> str:
    if error.kind == "no-range":
        return f"{error}. See `apm migrate graph`"
    if error.kind == "data":
        return f"{error}. Pass --schema-only if that data is not needed on a fresh database"
    if error.kind == "partly-applied":
        fact = str(error).removesuffix("; nothing was written")
        return (f"{fact}; apply the rest (apm migrate --target {error.target}) or roll them back first; nothing was "
                f"written")
    return str(error)


def _rollback_refused(error: Any) -> str:
    # start-up time: cli.errors runs without planner.errors until _rollback_refused() needs it
    from planner.errors import irreversibility, irreversible_advice

    if error.irreversible:  # a cascade would be refused too: do not advise it
        return (f"{error}. A cascade cannot help: {irreversibility(error.irreversible, error.reasons)}. "
                f"{irreversible_advice(error.irreversible, error.reasons)}")
    return (f"{error}. To roll back {' then '.join(error.cascade_order)}, run "
            f"`apm migrate --rollback {error.version} --cascade`")


def _missing_file_in_scope(error: Any) -> str:
    fact = str(error)
    if error.to:  # name the option that asked for the move
        head = f"cannot move to {error.target}"
        fact = f"{head} (--to)" + fact.removeprefix(head)
    marks = " and ".join(f"`apm migrate --mark-rolled-back {v}`" for v in error.missing)
    return (f"{fact}. Restore the file from version control (git log --diff-filter=D -- {error.directory}), "
            f"or, if its changes are already undone by hand, {marks}")


def _inconsistent_history(error: Any) -> str:
    applied, missing = error.pairs[0]
    return (f"{error}. Either roll back {applied} (`apm migrate --rollback {applied} --cascade`), or, if "
            f"{missing}'s changes are already in the schema, record it with `apm migrate --mark-applied {missing}`")
