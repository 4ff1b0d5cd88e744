"""``apm migrate --to V`` and ``--baseline V``: moving a database to a state, and adopting one made elsewhere.

``--to`` is the one command that both applies and rolls back, so it takes
every precaution either does: the same refusals (from ``planner.plan.to_plan``),
the same rehearsal and confirmation as ``--rollback``, a backup whenever the
plan rolls anything back, and the same runner. ``--baseline`` records without
running (``planner.marks.baseline``). Both are thin: parse, call, format.
"""

from __future__ import annotations

from cli.options import settings
from cli.output import echo, emit_json, migration_row, plan_json, table
from cli.previewed import run_previewed
from cli.running import dry_run_report, ledger_entries, load_catalog, run_step_by_step


def make_to_plan(catalog, entries: dict, target: str):
    from planner.plan import to_plan

    return to_plan(catalog, entries, target)


def move_to(target: str, *, backup: bool, atomic: bool, as_json: bool, dry_run: bool, yes: bool,
            no_preview: bool = False, sql: bool = False) -> None:
    """``apm migrate --to V``: the plan, then the rules of ``--rollback`` (preview, confirm, back up) and run."""
    catalog = load_catalog()
    plan = make_to_plan(catalog, ledger_entries(), target)
    replan = lambda ledger: make_to_plan(catalog, ledger, target)  # noqa: E731 (planned inside the lock)
    from planner.plan import refuse_empty_upgrades

    refuse_empty_upgrades(plan)
    if atomic:
        from planner.plan import refuse_non_transactional

        refuse_non_transactional(plan)
    if dry_run:
        dry_run_report(catalog, plan, as_json, sql=sql, make_plan=replan)
        return
    if not plan:
        if as_json:
            emit_json({**plan_json(plan), "backup": None, "results": []})
        else:
            echo(f"Nothing to do: already at {target}")
        return
    rolls_back = any(step.direction == "rollback" for step in plan.steps)
    if no_preview:
        outcome = run_step_by_step(catalog, plan, make_plan=replan, atomic=atomic, as_json=as_json,
                                   backup=backup and rolls_back, create=True)
    else:
        outcome = run_previewed(catalog, plan, make_plan=replan, as_json=as_json, yes=yes, sql=sql,
                                backup=backup and rolls_back)
    if as_json:
        emit_json({**plan_json(plan), **outcome})


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
