"""``apm migrate new``: start a migration file from the template, numbered and wired into the graph.

``apm migrate squash FROM TO``: write one migration that replaces a range of the graph (``planner.squash``).

``apm migrate graph`` and ``apm migrate docs``: the graph drawn for people.

Both are generated from the catalog (and the ledger, when the database
exists), so the seed's hand-drawn ``0020 → 0027 → 0029`` and its hand-kept
catalog README cannot go stale: regenerate them instead.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import cast

import click

from cli import errors as advice
from cli.errors import CommandError
from cli.options import (EXIT_CATALOG, EXIT_FAILED, VERSION, catalog_to_write, refuse_installed, settings,
                         shared_options)
from cli.output import echo, emit_json
from cli.running import load_catalog


@click.command("new")
@shared_options()
@click.argument("description")
@click.option("--depends-on", "depends_on", multiple=True, type=VERSION,
              help="A dependency (repeatable) [default: every current leaf of the graph].")
@click.option("--root", is_flag=True, help="Depend on nothing.")
@click.option("--sql", is_flag=True, help="Write a plain SQL migration (migration_<next>_<slug>.sql).")
def new_command(description: str, depends_on: tuple[str, ...], root: bool, sql: bool) -> None:
    """Create migration_<next>_<slug>.py (or .sql with --sql) with DESCRIPTION, ready to fill in."""
    # start-up time: cli.authoring runs without planner.scaffold until new_command() needs it
    from planner.scaffold import create_migration

    if root and depends_on:
        raise click.UsageError("--root and --depends-on cannot be used together; choose one")
    if not description.strip():
        raise click.BadParameter("an empty description; say what the migration does", param_hint="DESCRIPTION")
    catalog_dir = catalog_to_write("apm migrate new")
    # Versions the ledger holds are taken even when their file is gone: a new file must never reuse one.
    engine = settings().engine  # a SQLite file or a PostgreSQL database alike
    recorded = engine.applied() if engine.exists() else {}
    path = create_migration(catalog_dir, description, depends_on=list(depends_on) or None, root=root,
                            recorded=recorded, sql=sql)
    click.echo(f"Created {path}")


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
    # start-up time: cli.authoring runs without planner.errors until squash_command() needs it
    from planner.errors import ExecutionError

    # start-up time: cli.authoring runs without planner.squash until squash_command() needs it
    from planner.squash import squash, write_squash

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


TEXT_FORMATS = ("mermaid", "dot", "text", "json")  # planner.diagram.FORMATS; kept here so --help needs no import
IMAGE_FORMATS = ("svg", "png")


@click.command("graph")
@shared_options()
@click.option("--format", "fmt", type=click.Choice(TEXT_FORMATS + IMAGE_FORMATS), default="text",
              show_default=True, help="Output format; svg and png need Graphviz's dot.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to FILE instead of standard output.")
@click.option("--focus", type=VERSION, help="Only VERSION, what it needs and what needs it.")
@click.option("--rollback", type=VERSION, help="Highlight what a cascade rollback of VERSION takes.")
def graph_command(fmt: str, output: Path | None, focus: str | None, rollback: str | None) -> None:
    """Draw the dependency graph (applied/pending styling when the database exists)."""
    # start-up time: cli.authoring runs without planner until graph_command() needs it
    from planner import diagram

    catalog = load_catalog()
    recorded = settings().engine.applied_if_exists()  # no database yet: no applied/pending styling
    applied = list(recorded) if recorded is not None else None
    if fmt in IMAGE_FORMATS:
        if output is None and sys.stdout.isatty():
            raise click.UsageError(f"--format {fmt} writes binary data: pass -o FILE.{fmt}")
        source = diagram.to_dot(catalog, applied, focus=focus, rollback=rollback)
        data: bytes = diagram.render_image(source, cast(diagram.ImageFormat, fmt))  # one of IMAGE_FORMATS
    else:
        text = diagram.FORMATS[fmt](catalog, applied, focus=focus, rollback=rollback)
        data = (text if text.endswith("\n") else text + "\n").encode()
    if output is None:
        click.echo(data, nl=False)  # bytes go to the binary stream underneath
    else:
        output.write_bytes(data)
        click.echo(f"Wrote {output}")


@click.command("docs")
@shared_options()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the page [default: README.md in the migrations folder].")
@click.option("--check", is_flag=True, help="Write nothing; exit 3 if the page on disk is out of date.")
def docs_command(output: Path | None, check: bool) -> None:
    """Write the catalog page: table, mermaid diagram and each migration's text."""
    # start-up time: cli.authoring runs without planner.diagram until docs_command() needs it
    from planner.diagram import catalog_page

    if check:
        target = output or settings().catalog_dir / "README.md"
    elif output is not None:
        refuse_installed(output, "apm migrate docs")
        target = output
    else:
        target = catalog_to_write("apm migrate docs") / "README.md"
    page = catalog_page(load_catalog())
    if check:
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != page:
            # A stale page is a catalog problem for CI to fail on, not a bug (exit 1 means a bug).
            folder = shlex.quote(str(settings().catalog_dir))
            raise CommandError(f"{target} is out of date; run `apm --migrations-dir {folder} migrate docs` to "
                               f"refresh it", EXIT_CATALOG)
        click.echo(f"{target} is up to date")
        return
    target.write_text(page, encoding="utf-8")
    click.echo(f"Wrote {target}")
