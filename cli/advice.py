"""What to do next: the command's advice, added to the fact a library error states.

A library error says what is wrong and what state the database is in; it
cannot know who asked (this command, a fleet, a program embedding the
planner), so it names no ``apm`` command and no option. Here each error
class gets the advice this command's user can follow, built from the
error's fields, so the line a person reads is the fact and the way out.
Like ``cli.errors``, nothing here imports the planner at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    from planner import errors as E
    from planner.engines import errors as engine
    from planner.engines.postgresql.lock_timeout import StepLocked

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
        StepLocked: lambda e: (f"{e}. Try again when that session is done (or end it), or raise --lock-timeout / "
                               f"--lock-retries" if e.final else str(e)),
        E.ConflictingDependencyOptions: lambda e: f"{e}; pass either --root or --depends-on",
        E.EmptyPattern: _empty_pattern,
        E.NoFleet: lambda e: f"{e}: give --glob PATTERN or --list FILE, or set fleet = [...] in apm.toml",
        E.NoJournal: lambda e: (f"{e}; run `apm fleet migrate` first, or pass the folder it used with "
                                f"--journal-dir"),
        E.UnreadableJournal: lambda e: f"{e}; start a new run instead (without --resume)",
        E.CatalogNotFound: lambda e: f"{e}; pass --migrations-dir or set APM_MIGRATIONS_DIR",
        E.CatalogInvalid: _catalog_invalid,
        engine.BackupToolMissing: lambda e: str(e) if e.advice else f"{e}. Install it, or pass --no-backup",
        engine.BackupFailed: lambda e: str(e) if e.advice else f"{e}. Fix it, or pass --no-backup",
    }


def _empty_pattern(error: Any) -> str:
    """The pattern named by the option that gave it (``--glob 'x' matches no database``)."""
    option = {"glob pattern": "--glob", "list file": "--list"}.get(error.source)
    return f"{option}{str(error).removeprefix(error.source)}" if option else str(error)


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
