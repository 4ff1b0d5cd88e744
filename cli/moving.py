"""``apm migrate --to V`` and ``--baseline V``: moving a database to a state, and adopting one made elsewhere.

``--to`` is the one command that both applies and rolls back, so it takes
every precaution either does: it is one more ``planner.request.Request``
(``cli.running.run_request``), with the same refusals (from ``planner.plan.to_plan``),
rehearsal and confirmation as ``--rollback``, and a backup whenever the plan
rolls anything back. ``--baseline`` records without running
(``planner.marks.baseline``). Both are thin: parse, call, format.
"""

from __future__ import annotations

from cli.options import settings
from cli.output import echo, emit_json, migration_row, table
from cli.running import load_catalog


def record_baseline(version: str, as_json: bool) -> None:
    """``apm migrate --baseline V``: record V and its ancestors as applied, in one transaction, running nothing."""
    from planner import marks

    catalog = load_catalog()
    recorded = marks.baseline(settings().engine, catalog, version)  # one transaction, under the runner's lock
    if as_json:
        emit_json({"action": "baseline", "version": recorded[-1].version,
                   "recorded": [{"version": m.version, "description": m.description} for m in recorded]})
        return
    echo(f"Baselined at {recorded[-1].label}: recorded {len(recorded)} migration(s) as applied (nothing was run)")
    for migration in recorded:
        echo(f"  {migration.label}")


def plan_title(plan) -> str:
    """The first line of ``apm migrate plan``: what kind of plan, and how long."""
    if plan.direction == "mixed":
        back = sum(1 for step in plan.steps if step.direction == "rollback")
        return (f"Plan to {plan.target}: {len(plan)} step(s), {back} rollback(s) then "
                f"{len(plan) - back} apply(ies)")
    title = "Rollback plan" if plan.direction == "rollback" else "Apply plan"
    return f"{title}: {len(plan)} migration(s)"


def plan_table(plan) -> str:
    """The steps of a plan as a table; a plan to a state adds each step's direction, and a step that runs
    outside a transaction (``transactional = False``) is marked in a column that appears only then."""
    mixed = plan.direction == "mixed"
    outside = any(not step.migration.transactional for step in plan.steps)
    headers = ["#", *(["direction"] if mixed else []), "version", "description", "depends on",
               *(["transaction"] if outside else [])]
    rows = []
    for index, step in enumerate(plan.steps, 1):
        row = [index, *([step.direction] if mixed else []), *migration_row(step.migration)]
        if outside:
            row.append("yes" if step.migration.transactional else "no: runs alone")
        rows.append(row)
    return table(rows, headers)
