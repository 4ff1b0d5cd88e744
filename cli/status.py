"""``apm status``, ``apm agents`` and ``apm config``: read-only reports.

None of these ever creates the database: pointing them at a path that does
not exist says so instead of leaving an empty file behind.
"""

from __future__ import annotations

import click

from cli.errors import CommandError
from cli.options import EXIT_REFUSED, settings, shared_options
from cli.output import echo, emit_json, table


@click.command()
@shared_options()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON (see docs/commands.md).")
def status(as_json: bool) -> None:
    """The applied heads, applied and pending counts, and agent counts."""
    # start-up time: cli.status runs without cli.running until status() needs it
    from cli.running import load_catalog, warn_about_edited_files

    # start-up time: cli.status runs without planner.plan until status() needs it
    from planner.plan import applied_heads, unknown_applied

    # start-up time: cli.status runs without planner.versions until status() needs it
    from planner.versions import number

    engine = settings().engine
    catalog = load_catalog()
    with engine.reading():  # one server connection for the ledger, the notes and the agents
        entries = engine.applied()  # a missing SQLite file reads as {}; a missing server database is refused
        notes = engine.notes()
        exists = engine.exists()
        agents = _agents_or_none() if exists else None
    warn_about_edited_files(catalog, entries)
    known, _ = catalog.split_applied(entries)
    missing = unknown_applied(catalog, entries)
    numeric = {v: n for v in entries if (n := number(v)) is not None}
    version = max(numeric, key=numeric.__getitem__) if numeric else None
    report = {
        "database": engine.display,
        "exists": exists,
        "schema_version": version,
        "heads": applied_heads(catalog, entries),
        "applied": len(entries),
        "pending": len(catalog) - len(known),
        "applied_without_file": missing,
        "notes": [n.version for n in notes if n.kind == "note"],
        "rolled_back": [n.version for n in notes if n.kind == "rolled-back"],
        "agents": _agent_counts(agents),
    }
    if as_json:
        emit_json(report)
        return
    state = "" if exists else " (does not exist yet; `apm migrate` creates it)"
    echo(f"Database:        {engine.display}{state}")
    # Not the highest applied version: with the graph branching, that says nothing of the lines still pending.
    without = f" (and {len(missing)} with no file)" if missing else ""
    echo(f"Applied:         {len(known)} of {len(catalog)}{without}")
    echo(f"Pending:         {report['pending']}")
    echo(f"Heads:           {', '.join(report['heads']) or '-'}")
    if missing:
        echo(f"Applied without a file: {', '.join(missing)}", fg="yellow")
    if report["notes"]:
        echo(f"Ledger notes:    {', '.join(report['notes'])} (rows migrations wrote; not applied migrations)")
    if report["rolled_back"]:
        echo(f"Rolled back:     {', '.join(report['rolled_back'])} (by APM's framework; pending again)")
    counts = report["agents"]
    if counts is not None:
        tiers = ", ".join(f"tier {t}: {n}" for t, n in counts["by_tier"].items())
        echo(f"Agents:          {counts['total']} ({counts['active']} active{'; ' + tiers if tiers else ''})")


def _agents_or_none() -> list | None:
    """APM's agents, or ``None`` when the database has no agents table (not APM's, or not migrated yet)."""
    from planner.compat import read_agents  # start-up time: only the agents commands read APM's table

    # start-up time: cli.status runs without planner.errors until _agents_or_none() needs it
    from planner.errors import NoAgentsTable

    try:
        return read_agents(settings().engine)
    except NoAgentsTable:
        return None


def _agent_counts(agents: list | None) -> dict | None:
    if agents is None:
        return None
    return {"total": len(agents), "active": sum(1 for a in agents if a.is_active),
            "by_tier": {str(t): sum(1 for a in agents if a.tier == t) for t in sorted({a.tier for a in agents},
                                                                                    key=str)}}


@click.group()
@shared_options()
def agents() -> None:
    """Read the agents table (metadata included)."""


@agents.command("list")
@shared_options()
@click.option("--json", "as_json", is_flag=True, help="Print the agents as JSON.")
def agents_list(as_json: bool) -> None:
    """Every agent: role, name, tier, active, metadata."""
    from planner.compat import read_agents  # start-up time: only the agents commands read APM's table

    rows = read_agents(settings().engine)
    if as_json:
        emit_json([agent.columns | {"metadata": agent.metadata} for agent in rows])
        return
    if not rows:
        echo("No agents")
        return
    import json  # start-up time: only --json output needs it

    echo(table(
        [[a.role, a.display_name, a.tier if a.tier is not None else "-", "yes" if a.is_active else "no",
          _short(json.dumps(a.metadata) if not isinstance(a.metadata, str) else a.metadata)] for a in rows],
        ["role", "name", "tier", "active", "metadata"],
    ))


@agents.command("show")
@shared_options()
@click.argument("role")
@click.option("--json", "as_json", is_flag=True, help="Print the agent as JSON.")
def agents_show(role: str, as_json: bool) -> None:
    """One agent, every column."""
    from planner.compat import read_agents  # start-up time: only the agents commands read APM's table

    found = read_agents(settings().engine, role)
    if not found:
        raise CommandError(f"no agent with role {role!r}; see `apm agents list` for the roles", EXIT_REFUSED)
    agent = found[0]
    if as_json:
        emit_json(agent.columns | {"metadata": agent.metadata})
        return
    # start-up time: cli.status runs without json until agents_show() needs it
    import json

    for name, value in agent.columns.items():
        if name == "metadata":
            value = json.dumps(agent.metadata, indent=2, sort_keys=True) if not isinstance(
                agent.metadata, str) else agent.metadata
        echo(f"{name + ':':<14} {value if value is not None else '-'}")


def _short(text: str | None, width: int = 60) -> str:
    if text is None:
        return "-"
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------
# apm config
# --------------------------------------------------------------------------


def _cell(value: object) -> object:
    """A setting as the table shows it: ``-`` for none, a table of codes as ``code = level, ...``."""
    if isinstance(value, dict):
        return ", ".join(f"{key} = {level}" for key, level in value.items()) or "-"
    return "-" if value is None else value


@click.command("config")
@shared_options()
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON (see docs/commands.md).")
@click.pass_context
def config_command(ctx: click.Context, as_json: bool) -> None:
    """Show each setting, its value, and where it came from (option, environment, file, default)."""
    # start-up time: cli.status runs without cli.running until config_command() needs it
    from cli.running import explain_locks

    resolved = settings()
    rows = resolved.explain() + explain_locks(resolved)
    if as_json:
        emit_json({"config_file": str(resolved.config.path) if resolved.config.path else None,
                   "settings": {name: {"value": value, "source": source} for name, value, source in rows}})
        return
    echo(table([[name, _cell(value), source] for name, value, source in rows],
               ["setting", "value", "from"]))
    path = resolved.config.path
    echo(f"Config file: {path}" if path else "Config file: none (apm.toml, or [tool.apm] in pyproject.toml, "
         "in this folder or a parent)")
