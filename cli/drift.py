"""``apm migrate drift``: the live schema of one database against what its applied migrations make.

The work is ``planner.schema_drift`` (the replay and the comparison); this
command reads the ledger, calls it, and prints one line per difference.
"""

from __future__ import annotations

import click

from cli.options import EXIT_DRIFT, settings, shared_options
from cli.output import echo, emit_json


@click.command("drift")
@shared_options()
@click.option("--json", "as_json", is_flag=True, help='Print {"differences": [{"object", "kind", "detail"}]}.')
@click.pass_context
def drift_command(ctx: click.Context, as_json: bool) -> None:
    """Compare the schema with its applied migrations replayed in a scratch database. Writes nothing.

    Pending migrations are not drift: only what the ledger says is applied
    is replayed. Exit 0 when the schema is what its migrations make, 10 when
    it differs (one line per difference).
    """
    from cli.running import load_catalog

    options = settings()
    engine = options.engine
    engine.require()  # no database: exit 6, nothing created
    catalog = load_catalog()
    applied = engine.applied()
    from planner.fleet.members import member
    from planner.schema_drift import DriftChecker

    checker = DriftChecker(catalog, busy_timeout=options.busy_timeout, ledger_schema=options.ledger_schema)
    differences = checker.of(member(str(options.db_url or options.db_path)), applied)
    if as_json:
        emit_json({"differences": [d.to_json() for d in differences]})
    elif differences:
        for difference in differences:
            echo(difference.line, fg="yellow")
        echo(f"{options.db_display}: {len(differences)} difference(s) from its {len(applied)} applied migration(s)")
    else:
        echo(f"{options.db_display}: the schema is what its {len(applied)} applied migration(s) make")
    if differences:
        ctx.exit(EXIT_DRIFT)
