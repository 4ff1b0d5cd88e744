"""``apm migrate squash FROM TO``: write one migration that replaces a range of the graph (``planner.squash``)."""

from __future__ import annotations

import click

from cli import advice
from cli.options import VERSION, settings, shared_options
from cli.output import echo, emit_json


@click.command("squash")
@shared_options()
@click.argument("first", type=VERSION)
@click.argument("last", type=VERSION)
@click.option("--schema-only", is_flag=True, help="Squash even if some migrations change rows; their data is dropped.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON (see docs/commands.md).")
def squash_command(first: str, last: str, schema_only: bool, as_json: bool) -> None:
    """Write a migration that replaces FIRST..LAST (every migration between them in dependency order).

    \b
    apm migrate squash 0002 0005                 one file instead of 0002..0005
    apm migrate squash 0002 0005 --schema-only   even if some change rows

    The range runs on a scratch database; the new file creates what it built.
    The replaced files may stay: a database that applied them all counts the
    squash as applied, a fresh one applies the squash alone. A range the
    database (--db, SQLite or PostgreSQL) applied only in part is refused.
    """
    from cli.errors import CommandError
    from cli.options import EXIT_FAILED
    from cli.running import load_catalog
    from planner.errors import ExecutionError
    from planner.squash import squash, write_squash

    from cli.writable import catalog_to_write

    catalog_to_write("apm migrate squash")  # before the range is built: that takes a while, and writes nothing
    engine = settings().engine
    applied = engine.applied_if_exists() or {}  # a database not there yet has applied nothing
    try:
        built = squash(load_catalog(), first, last, schema_only=schema_only, applied=applied)
    except ExecutionError as exc:  # the scratch database is SQLite whichever engine --db names
        raise CommandError(f"{advice.message(exc)} (on the scratch SQLite database squash builds the range in: its migrations, "
                           f"and those they need, must run on SQLite); nothing was written", EXIT_FAILED) from exc
    path = write_squash(built)
    if as_json:
        emit_json({"version": built.version, "path": str(path), "replaces": list(built.replaces),
                   "depends_on": list(built.depends_on),
                   "objects": [{"type": kind, "name": name} for kind, name in built.objects],
                   "data_dropped": list(built.data_migrations)})
        return
    echo(f"Wrote {path}")
    echo(f"  replaces:   {', '.join(built.replaces)}")
    echo(f"  depends on: {', '.join(built.depends_on) or '-'}")
    kinds: dict[str, int] = {}
    for kind, _ in built.objects:
        kinds[kind] = kinds.get(kind, 0) + 1
    echo(f"  creates:    {', '.join(f'{n} {kind}(s)' for kind, n in kinds.items()) or 'nothing'}")
    if built.data_migrations:
        echo(f"  data changes of {', '.join(built.data_migrations)} are not kept (--schema-only)", fg="yellow")
    if engine.name != "sqlite":
        echo(f"  note: the range ran on a scratch SQLite database; check the file's SQL runs on {engine.name} "
             f"(apm migrate --dry-run on a fresh database)", fg="yellow")
