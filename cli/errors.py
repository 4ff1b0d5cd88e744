"""How a failure reaches the terminal: one line (or one summary and a list), and one documented exit code.

Library errors carry their meaning in their class (``planner.errors``); each
family maps to one exit code here. Commands raise ``CommandError`` for the
refusals that are the command's own (a prompt not answered, an agent not
found). Nothing here imports the planner at start-up: ``apm --help`` must not
pay for it, and an error can only be a planner error once a command imported it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from cli import advice, options


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
        return CommandError(advice.message(error), code)
    return CommandError(
        f"internal error {type(error).__name__}: {error}; run again with --debug and report it", code
    )


# --------------------------------------------------------------------------
# Ctrl-C and termination
# --------------------------------------------------------------------------


def _raise_interrupted(signum: int, frame: object) -> None:
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
