"""Options shared by several commands, and the exit codes.

``--db`` and ``--migrations-dir`` work both before and after the subcommand
(``apm --db X migrate`` and ``apm migrate --db X``): every command carries the
same decorator, and each occurrence writes into one ``Settings`` object, so the
one nearest the subcommand wins. Environment variables are read at the top
level only, which makes an explicit option always beat the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

DEFAULT_DB = Path(".aipm/data/aipm.db")

# Exit codes: documented in docs/commands.md; a test keeps the two in step.
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: please report it with --debug output
EXIT_USAGE = 2  # click's own code for a bad option or argument
EXIT_CATALOG = 3  # the migration files do not load (CatalogError)
EXIT_REFUSED = 4  # the plan was refused before anything ran (PlanError)
EXIT_FAILED = 5  # a migration failed while running; its step was rolled back (ExecutionError)
EXIT_DATABASE = 6  # the database cannot be opened, written or locked (DatabaseError)
EXIT_UNCONFIRMED = 7  # a plan that would destroy data was not confirmed (see --yes)
EXIT_TOOL = 8  # an outside tool the command needs (Graphviz's dot) is missing or failed
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); SIGTERM gives 143. The open step was rolled back


class VersionType(click.ParamType):
    """A version on the command line: digits, never empty (``--rollback ""`` must not become an apply)."""

    name = "VERSION"

    def convert(self, value, param, ctx):
        from planner.errors import InvalidVersion
        from planner.versions import parse

        try:
            return parse(value)
        except InvalidVersion as exc:
            self.fail(str(exc), param, ctx)


VERSION = VersionType()


def shipped_catalog() -> Path:
    """The folder of APM's own migrations (the default for --migrations-dir)."""
    from planner.catalog import shipped_catalog_dir

    return shipped_catalog_dir()


class Settings:
    """What the shared options resolved to, for the command that runs.

    A plain class rather than a dataclass: every ``apm`` run creates one, and
    importing ``dataclasses`` costs more start-up than the whole class.
    """

    def __init__(self, db: Path | None = None, migrations_dir: Path | None = None, debug: bool = False,
                 busy_timeout: float = 30.0):
        self.db = db
        self.migrations_dir = migrations_dir
        self.debug = debug
        self.busy_timeout = busy_timeout

    @property
    def db_path(self) -> Path:
        return self.db if self.db is not None else DEFAULT_DB

    @property
    def catalog_dir(self) -> Path:
        return self.migrations_dir if self.migrations_dir is not None else shipped_catalog()


def _store(name: str, convert=lambda v: v):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is not None and value is not False:
            settings = ctx.ensure_object(Settings)
            setattr(settings, name, convert(value))
        return value

    return callback


def _store_path(name: str):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is not None:
            if not value.strip():
                raise click.BadParameter("an empty path; pass the file or folder to use", ctx, param)
            setattr(ctx.ensure_object(Settings), name, Path(value))
        return value

    return callback


def _debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """--debug shows tracebacks and the library's log (which is silent otherwise)."""
    if value:
        import logging

        ctx.ensure_object(Settings).debug = True
        logging.basicConfig(level=logging.DEBUG, format="apm: %(name)s: %(message)s")
    return value


def shared_options(top_level: bool = False):
    """The options every command accepts; ``top_level`` also reads APM_DB and APM_MIGRATIONS_DIR."""

    def decorate(command):
        options = [
            click.option(
                "--db",
                # A folder or an unreadable path is the library's to report (a database problem, exit 6).
                type=str,
                metavar="PATH",
                envvar="APM_DB" if top_level else None,
                show_envvar=top_level,
                expose_value=False,
                is_eager=True,
                callback=_store_path("db"),
                help=f"SQLite database file [default: {DEFAULT_DB}; env APM_DB].",
            ),
            click.option(
                "--migrations-dir",
                type=str,
                metavar="DIR",
                envvar="APM_MIGRATIONS_DIR" if top_level else None,
                show_envvar=top_level,
                expose_value=False,
                is_eager=True,
                callback=_store_path("migrations_dir"),
                help="Folder of migration_*.py files [default: APM's shipped catalog; env APM_MIGRATIONS_DIR].",
            ),
            click.option(
                "--busy-timeout",
                type=click.FloatRange(min=0),
                expose_value=False,
                is_eager=True,
                callback=_store("busy_timeout"),
                help="Seconds to wait for another process's lock on the database [default: 30].",
            ),
            click.option(
                "--debug",
                is_flag=True,
                default=False,
                expose_value=False,
                is_eager=True,
                callback=_debug,
                help="Show the full traceback of an error.",
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def settings() -> Settings:
    """The resolved settings of the command being run."""
    return click.get_current_context().ensure_object(Settings)


def use_color() -> bool | None:
    """Colour only on a terminal, never when NO_COLOR is set (https://no-color.org)."""
    return False if os.environ.get("NO_COLOR") else None
