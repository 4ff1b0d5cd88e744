"""Turning library results into what a person or a script reads.

Tables go through tabulate; ``--json`` output goes through ``emit_json`` so
every command's machine-readable shape is plain, sorted and stable (the shapes
are documented in docs/commands.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import click

from cli.options import use_color


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table; imported lazily because most commands never draw one."""
    from tabulate import tabulate

    return tabulate(list(rows), headers=list(headers), tablefmt="simple", disable_numparse=True)


def emit_json(value: Any) -> None:
    import json  # imported when used: most runs print no JSON, and start-up is paid on every run

    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def echo(message: str = "", *, fg: str | None = None, bold: bool = False, err: bool = False) -> None:
    """Print a line, styled only where colour is allowed (a terminal, and no NO_COLOR)."""
    if fg or bold:
        message = click.style(message, fg=fg, bold=bold)
    click.echo(message, err=err, color=use_color())


def duration(ms: float) -> str:
    """``14 ms``, or ``0.4 ms`` below a millisecond."""
    return f"{ms:.0f} ms" if ms >= 1 else f"{ms:.1f} ms"


def migration_row(migration, with_dependencies: bool = True) -> list[str]:
    row = [migration.version, migration.description]
    if with_dependencies:
        row.append(", ".join(migration.depends_on) or "-")
    return row


def step_json(step) -> dict[str, Any]:
    migration = step.migration
    return {
        "version": migration.version,
        "description": migration.description,
        "direction": step.direction,
        "depends_on": list(migration.depends_on),
        "reversible": migration.reversible,
        "transactional": migration.transactional,
    }


def plan_json(plan) -> dict[str, Any]:
    return {
        "direction": plan.direction,
        "target": plan.target,
        "cascade": plan.cascade,
        "steps": [step_json(step) for step in plan.steps],
    }
