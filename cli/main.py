"""The ``apm`` entry point: the root group, where whatever a command raises becomes a message and an exit code.

The mapping from error families to exit codes lives in ``cli.errors``; a
traceback is shown only with ``--debug``, and never changes the exit code.
Only click is imported at start-up: ``apm --help`` must stay fast, so
commands import the planner when they run.
"""

from __future__ import annotations

import gc
import os
import sys

import click

from cli.errors import CommandError, as_command_error, catch_interrupts, interrupted_exit_code
from cli.lazy import LazyGroup, imported
from cli.options import Settings, shared_options
from planner import __version__

__all__ = ["CommandError", "apm", "main"]


class ApmGroup(LazyGroup):
    """The root group: runs a command and translates what it raises into a line and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            with catch_interrupts():
                return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except BrokenPipeError:
            # The reader went away (`apm ... | head`): not an error worth a message. 141 is the shell's SIGPIPE code.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(141)
        except KeyboardInterrupt as interrupt:
            # Ctrl-C (or SIGTERM) outside a run: nothing was being written, so nothing changed.
            if ctx.ensure_object(Settings).debug:
                _print_traceback()
            raise CommandError("interrupted; nothing was changed", interrupted_exit_code(interrupt)) from None
        except Exception as error:
            if ctx.ensure_object(Settings).debug:
                # --debug adds the traceback; the exit code stays the documented one.
                _print_traceback()
            failure = as_command_error(error)
            # click marks message Final, yet the error is ours to finish: the config origin belongs in it.
            failure.message += _config_origin(error, ctx.ensure_object(Settings))  # type: ignore[misc]
            raise failure from error


def _print_traceback() -> None:
    import traceback  # start-up time: traceback pulls in linecache and tokenize, wanted only with --debug

    traceback.print_exc()


def _config_origin(error: Exception, settings: Settings) -> str:
    """Where the setting an error is about came from, when that is the config file (``cli.config``)."""
    if settings._config is None:
        return ""  # the file was never read, so no setting came from it
    # start-up time: cli.main runs without cli.config until _config_origin() needs it
    from cli.config import config_origin

    try:
        return config_origin(error, settings) or ""
    except Exception:  # never let the explanation hide the error itself
        return ""


@click.group(cls=ApmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@shared_options(top_level=True)
@click.version_option(__version__, "--version", prog_name="apm")
@click.pass_context
def apm(ctx: click.Context) -> None:
    """APM's dependency-aware migration tool for SQLite and PostgreSQL.

    Migrations are Python or SQL files that declare what they depend on; apm
    applies them in dependency order, previewed as they run (nothing that
    destroys data is committed unless you confirm it), and refuses a rollback
    that would strand applied dependents unless you ask for --cascade.

    Each setting comes from, highest first: a command-line option, an APM_*
    environment variable, the config file (apm.toml, or [tool.apm] in
    pyproject.toml, in this folder or the nearest parent that has one), the
    built-in default. `apm config` shows each setting and where it came from.
    """
    ctx.ensure_object(Settings)


#: Each command by name: (its module, its name there). Imported when a command line names it (``cli.lazy``):
#: ``apm migrate`` imports none of the others' modules (start-up time: each pulls in planner modules).
_MIGRATE_COMMANDS = {
    "plan": ("cli.migrate", "plan_command"),
    "graph": ("cli.authoring", "graph_command"),
    "docs": ("cli.authoring", "docs_command"),
    "new": ("cli.authoring", "new_command"),
    "check": ("cli.safety", "check_command"),
    "doctor": ("cli.safety", "doctor_command"),
    "backups": ("cli.safety", "backups_command"),
    "restore": ("cli.safety", "restore_command"),
    "squash": ("cli.authoring", "squash_command"),
    "drift": ("cli.safety", "drift_command"),
}
_COMMANDS = {
    "status": ("cli.status", "status"),
    "agents": ("cli.status", "agents"),
    "config": ("cli.status", "config_command"),
}


def _migrate() -> click.Command:
    # start-up time: cli.main runs without cli.migrate until _migrate() needs it
    from cli.migrate import migrate

    for name, (module, attribute) in _MIGRATE_COMMANDS.items():
        migrate.add_lazy(name, imported(module, attribute))
    return migrate


def _fleet() -> click.Command:
    # start-up time: cli.main runs without cli.fleet until _fleet() needs it
    from cli.fleet import fleet, migrate_command

    fleet.add_command(migrate_command)
    return fleet


def _register() -> None:
    """Every command, in one place: command modules never import this one, so the imports form no cycle."""
    apm.add_lazy("migrate", _migrate)
    apm.add_lazy("fleet", _fleet)
    for name, (module, attribute) in _COMMANDS.items():
        apm.add_lazy(name, imported(module, attribute))


_register()


def main() -> None:
    """Console-script entry point: the process ends when it returns."""
    try:
        apm(prog_name="apm")
    finally:
        # Everything left is let go by the exit itself. Without this, the interpreter's exit-time collections walk
        # every object still alive (the catalog; psycopg's 23,000) to find cycles nobody will use: 40 ms of a
        # PostgreSQL command, 10 ms of a SQLite one (docs/performance.md). atexit handlers, the flush of stdout and
        # the release of what modules hold still happen; only cycles still alive at exit are left to the OS.
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    main()  # it exits itself (click's standalone mode); returning means success
