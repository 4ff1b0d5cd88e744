"""The ``apm`` entry point: the root group, and the one place errors become exit codes.

Library errors carry their meaning in their class (``planner.errors``); here
each family maps to one documented exit code and a one-line message on
stderr. A traceback is shown only with ``--debug``. Only click is imported at
start-up: ``apm --help`` must stay fast, so commands import the planner when
they run.
"""

from __future__ import annotations

import sys

import click

from cli import options
from cli.options import Settings, shared_options
from planner import __version__

# sqlite3 and planner.errors are not imported here: `apm --help` needs neither,
# and an error can only be a sqlite3 or planner error once a command imported them.


def _exit_codes() -> tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...]:
    """Each library error family and its exit code, most specific first."""
    from planner import errors as E

    return (
        (E.CatalogError, options.EXIT_CATALOG),
        (E.PlanError, options.EXIT_REFUSED),
        (E.ExecutionError, options.EXIT_FAILED),
        (E.DatabaseError, options.EXIT_DATABASE),
        (E.RenderError, options.EXIT_TOOL),
        # `apm migrate new` refusing to write a file is a refusal like any other.
        ((E.InvalidDescription, E.ConflictingDependencyOptions, E.MigrationFileExists), options.EXIT_REFUSED),
    )


def _is_sqlite_error(error: BaseException) -> bool:
    # A sqlite3.Error can exist only if something imported sqlite3; checking
    # sys.modules keeps start-up from importing it just to compare against.
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3 is not None and isinstance(error, sqlite3.Error)


class CommandError(click.ClickException):
    """A library error on its way to the terminal, with the exit code of its family."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def exit_code_for(error: BaseException) -> int:
    for kind, code in _exit_codes():
        if isinstance(error, kind):
            return code
    if _is_sqlite_error(error):
        return options.EXIT_DATABASE
    return options.EXIT_INTERNAL


class ApmGroup(click.Group):
    """The root group: runs a command and translates what it raises."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except Exception as error:
            if ctx.ensure_object(Settings).debug:
                raise
            from planner.errors import MigrationError

            if isinstance(error, MigrationError):
                raise CommandError(str(error), exit_code_for(error)) from error
            if _is_sqlite_error(error):
                raise CommandError(f"SQLite error: {error}; run with --debug for details", options.EXIT_DATABASE)
            # A bug: say so in one line, keep the traceback for --debug.
            raise CommandError(
                f"internal error {type(error).__name__}: {error}; run again with --debug and report it",
                options.EXIT_INTERNAL,
            ) from error


@click.group(cls=ApmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@shared_options(top_level=True)
@click.version_option(__version__, "--version", prog_name="apm")
@click.pass_context
def apm(ctx: click.Context) -> None:
    """APM's dependency-aware SQLite migration tool.

    Migrations are Python files that declare what they depend on; apm applies
    them in dependency order, one transaction each, and refuses a rollback that
    would strand applied dependents unless you ask for --cascade.

    Each setting comes from, highest first: a command-line option, an APM_*
    environment variable, the config file (apm.toml, or [tool.apm] in
    pyproject.toml, in this folder or the nearest parent that has one), the
    built-in default. `apm config` shows each setting and where it came from.
    """
    ctx.ensure_object(Settings)


def _register() -> None:
    from cli.migrate import migrate
    from cli.status import agents, status

    apm.add_command(migrate)
    apm.add_command(status)
    apm.add_command(agents)
    from cli.config import config_command

    apm.add_command(config_command)


_register()


def main() -> None:
    """Console-script entry point."""
    apm(prog_name="apm")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
