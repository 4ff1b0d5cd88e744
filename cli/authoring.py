"""``apm migrate new``: start a migration file from the template, numbered and wired into the graph."""

from __future__ import annotations

import click

from cli.options import VERSION, settings, shared_options


@click.command("new")
@shared_options()
@click.argument("description")
@click.option("--depends-on", "depends_on", multiple=True, type=VERSION,
              help="A dependency (repeatable) [default: every current leaf of the graph].")
@click.option("--root", is_flag=True, help="Depend on nothing.")
@click.option("--sql", is_flag=True, help="Write a plain SQL migration (migration_<next>_<slug>.sql).")
def new_command(description: str, depends_on: tuple[str, ...], root: bool, sql: bool) -> None:
    """Create migration_<next>_<slug>.py (or .sql with --sql) with DESCRIPTION, ready to fill in."""
    from cli.writable import catalog_to_write
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
