"""``apm migrate`` and its subcommands: parse, call the planner, format.

The seed's commands keep their spelling (``apm migrate``, ``--list``,
``--show-applied``, ``--rollback 0027``); what is new is that every action
starts from a plan, so ``apm migrate plan`` shows exactly what the real
command would run, and every refusal happens before anything is touched.

``apm migrate --to V`` and ``--baseline V``: moving a database to a state, and adopting one made elsewhere.

``--to`` is the one command that both applies and rolls back, so it takes
every precaution either does: it is one more ``planner.request.Request``
(``cli.running.run_request``), with the same refusals (from ``planner.plan.to_plan``),
rehearsal and confirmation as ``--rollback``, and a backup whenever the plan
rolls anything back. ``--baseline`` records without running
(``planner.marks.baseline``). Both are thin: parse, call, format.
"""

from __future__ import annotations

from typing import cast

import click

from cli.lazy import LazyGroup
from cli.options import EXIT_PENDING, STATE, VERSION, settings, shared_options
from cli.output import echo, emit_json, migration_row, note_json, note_row, plan_json, table
from cli.running import (
    dry_run_report,
    ledger_entries,
    load_catalog,
    lock_options,
    preview_plan,
    request_for,
    require_database,
    run_request,
    warn_about_edited_files,
    warn_about_missing_files,
)


def record_baseline(version: str, as_json: bool) -> None:
    """``apm migrate --baseline V``: record V and its ancestors as applied, in one transaction, running nothing."""
    # start-up time: cli.migrate runs without planner until record_baseline() needs it
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


_ACTIONS = ("list_pending", "show_applied", "rollback", "mark_applied", "mark_rolled_back", "to", "baseline")


class MigrateGroup(LazyGroup):
    """``apm migrate``: its actions are options, so a word that names one gets the option's spelling back."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and self.get_command(ctx, name) is None and not name.startswith("-"):
            option = next((p for p in self.params if f"--{name.replace('_', '-')}" in getattr(p, "opts", ())), None)
            if option is not None:
                rest = " ".join(args[1:])
                flag = f"--{name.replace('_', '-')}"
                hint = f"apm migrate {flag}" + (f" {rest}" if rest else "")
                raise click.UsageError(f"no such command {name!r}; {flag} is an option: `{hint}`", ctx)
        return super().resolve_command(ctx, args)


@click.group(cls=MigrateGroup, invoke_without_command=True)
@shared_options()
@click.option("--list", "list_pending", is_flag=True, help="List pending migrations in the order they would run.")
@click.option("--show-applied", is_flag=True, help="List applied migrations and whether their files changed.")
@click.option("--rollback", type=VERSION, help="Roll back VERSION (refused if applied migrations need it).")
@click.option("--cascade", is_flag=True, help="With --rollback: roll back the applied dependents first.")
@click.option("--target", type=VERSION, help="Apply only VERSION and the migrations it needs.")
@click.option("--to", "to", type=STATE,
              help="Bring VERSION's line to exactly VERSION: roll back what depends on it, apply what it needs "
                   "(`base`: roll back everything).")
@click.option("--baseline", type=VERSION,
              help="Record VERSION and its ancestors as applied without running them (an existing schema).")
@click.option("--atomic", is_flag=True, help="All or nothing (every previewed run is; with --no-preview, one transaction).")
@click.option("--no-backup", is_flag=True, help="With --rollback or --to: skip the backup taken before rolling back.")
@click.option("--dry-run", is_flag=True,
              help="Run the plan in a transaction, report what it changes and destroys, roll back (exit 7 on loss).")
@click.option("--sql", is_flag=True, help="With --dry-run or a run: also show the SQL each step ran.")
@click.option("--yes", "-y", is_flag=True, help="Confirm a plan that destroys data (what it destroys is printed).")
@click.option("--no-preview", is_flag=True,
              help="Skip the preview: commit step by step, without checking for data loss (reviewed plans only).")
@click.option("--mark-applied", type=VERSION, help="Record VERSION as applied without running it.")
@click.option("--mark-rolled-back", type=VERSION, help="Remove VERSION from the ledger without running it.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (see docs/commands.md).")
@lock_options()
@click.pass_context
def migrate(ctx: click.Context, list_pending: bool, show_applied: bool, rollback: str | None, cascade: bool,
            target: str | None, to: str | None, baseline: str | None, atomic: bool, no_backup: bool, dry_run: bool,
            sql: bool, yes: bool, no_preview: bool, mark_applied: str | None, mark_rolled_back: str | None,
            as_json: bool) -> None:
    """Apply pending migrations in dependency order (or list, show, roll back).

    \b
    apm migrate                          apply everything pending
    apm migrate --target 0027            apply 0027 and what it needs
    apm migrate --list                   pending migrations, in run order
    apm migrate --show-applied           applied migrations and file drift
    apm migrate --rollback 0027          roll back 0027 (refused if needed)
    apm migrate --rollback 0027 --cascade   roll back 0029, then 0027
    apm migrate --rollback 0027 --cascade --dry-run   what it would destroy
    apm migrate --to 0027                0027's line at exactly 0027, both ways
    apm migrate --baseline 0027          adopt a schema made elsewhere

    A run is previewed as it runs: the whole plan runs in one transaction,
    watched for what it drops, deletes or overwrites, and is committed only
    if it destroys nothing, or if --yes (or a person, on a terminal) confirms
    what it destroys. Otherwise nothing is committed (exit 7), except in a
    plan with transactional = False steps, which runs in parts: the parts
    before the refused one stay committed, and the message names them.
    """
    chosen = [name for name in _ACTIONS if ctx.params.get(name) not in (None, False)]
    if ctx.invoked_subcommand is not None:
        if (chosen or target is not None or cascade or atomic or no_backup or as_json or dry_run or yes or sql
                or no_preview):
            raise click.UsageError(
                f"options of `apm migrate` go after the subcommand: apm migrate {ctx.invoked_subcommand} ..."
            )
        return
    if len(chosen) > 1:
        flags = " and ".join("--" + name.replace("_", "-").replace("list-pending", "list") for name in chosen)
        raise click.UsageError(f"{flags} cannot be used together; choose one")
    if cascade and rollback is None:
        raise click.UsageError("--cascade only makes sense with --rollback VERSION")
    if target is not None and chosen:
        raise click.UsageError("--target only applies to `apm migrate` and `apm migrate plan`")
    if dry_run and chosen and rollback is None and to is None:
        raise click.UsageError("--dry-run previews an apply or a --rollback; it does not combine with other actions")
    if (sql or no_preview) and chosen and rollback is None and to is None:
        raise click.UsageError("--sql and --no-preview apply to a run (an apply, a --rollback or a --to)")
    if no_preview and (dry_run or sql):
        raise click.UsageError("--no-preview runs without watching; it cannot combine with --dry-run or --sql")

    if list_pending:
        _list_pending(as_json)
    elif show_applied:
        _show_applied(as_json)
    elif mark_applied is not None or mark_rolled_back is not None:
        _mark(mark_applied, mark_rolled_back, as_json)
    elif baseline is not None:
        record_baseline(baseline, as_json)
    else:  # an apply, a --rollback or a --to: one request, one way through the library
        run_request(request_for(target=target, to=to, rollback=rollback, cascade=cascade, dry_run=dry_run, sql=sql,
                                yes=yes, backup=not no_backup, previewed=not no_preview, atomic=atomic),
                    as_json=as_json)


def _mark(applied: str | None, rolled_back: str | None, as_json: bool) -> None:
    """The seed's "add a record to schema_migrations by hand", with the dependency checks it lacked."""
    # start-up time: cli.migrate runs without planner until _mark() needs it
    from planner import marks

    catalog = load_catalog()
    if rolled_back is not None:
        require_database()
    version = cast(str, applied or rolled_back)  # the command calls _mark only when one of them is given
    migration = marks.mark(settings().engine, catalog, version, applied=applied is not None)
    action, verb = ("mark-applied", "Marked as applied") if applied else ("mark-rolled-back", "Marked as rolled back")
    if as_json:
        emit_json({"action": action, "version": migration.version, "description": migration.description})
    else:
        echo(f"{verb}: {migration.label} (nothing was run)")


def _list_pending(as_json: bool) -> None:
    # start-up time: cli.migrate runs without planner.request until _list_pending() needs it
    from planner.request import Request

    catalog = load_catalog()
    plan = Request().plan(catalog, ledger_entries())  # what `apm migrate` would apply
    if as_json:
        emit_json([{"version": s.version, "description": s.migration.description,
                    "depends_on": list(s.migration.depends_on), "reversible": s.migration.reversible,
                    "irreversible": s.migration.irreversible_reason} for s in plan.steps])
    elif not plan:
        echo("No pending migrations")
    else:
        migrations = [s.migration for s in plan.steps]
        # Whether a migration can be undone is worth knowing before it is applied; the column
        # appears only when one cannot, and a declared reason is quoted below, too long for a cell.
        blocked = any(not m.reversible for m in migrations)
        rows = [migration_row(m) + ([_rollback_cell(m)] if blocked else []) for m in migrations]
        echo(table(rows, ["version", "description", "depends on", *(["rollback"] if blocked else [])]))
        for migration in migrations:
            if migration.irreversible_reason is not None:
                echo(f"{migration.version} {migration.rollback_refusal}")


def _rollback_cell(migration) -> str:
    if migration.reversible:
        return ""
    return "no: irreversible" if migration.irreversible_reason is not None else "no: no downgrade"


def _show_applied(as_json: bool) -> None:
    # start-up time: cli.migrate runs without planner.lint until _show_applied() needs it
    from planner.lint import file_states

    entries = ledger_entries()
    notes = settings().engine.notes()  # rows that are no applied migration (APM's framework's notes)
    states = file_states(load_catalog(), entries)
    ordered = list(entries.values())  # read_ledger orders them: versions by number, other rows after
    if as_json:
        emit_json([{"version": e.version, "description": e.description, "applied_at": e.applied_at,
                    "checksum": e.checksum, "file": states[e.version]} for e in ordered]
                  + [note_json(n) for n in notes])
    elif not ordered and not notes:
        echo("No applied migrations")
    else:
        rows = [[e.version, e.description or "", e.applied_at or "", states[e.version]] for e in ordered]
        rows += [note_row(n) for n in notes]
        echo(table(rows, ["version", "description", "applied_at", "file"]))


# --------------------------------------------------------------------------
# apm migrate plan
# --------------------------------------------------------------------------


@click.command("plan")
@shared_options()
@click.option("--rollback", type=VERSION, help="Show the rollback order for VERSION instead.")
@click.option("--cascade", is_flag=True, help="With --rollback: include the applied dependents.")
@click.option("--target", type=VERSION, help="Plan only VERSION and the migrations it needs.")
@click.option("--to", "to", type=STATE, help="Show the plan to VERSION's state (rollbacks, then applies); `base` too.")
@click.option("--rehearse", "--preview", "rehearse", is_flag=True,
              help="Also run the plan in a transaction and report what it changes and destroys, then roll back.")
@click.option("--sql", is_flag=True, help="Also show the SQL each step runs (implies --preview).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (see docs/commands.md).")
@click.option("--exit-code", "exit_code", is_flag=True,
              help="Exit 9 when the plan has steps (something to do), 0 when it has none.")
def plan_command(rollback: str | None, cascade: bool, target: str | None, to: str | None, rehearse: bool, sql: bool,
                 as_json: bool, exit_code: bool) -> None:
    """Show what `apm migrate` would run, changing nothing.

    With --exit-code, the exit status says whether there is anything to do
    (9, whatever the plan's direction) or not (0), for scripts and CI.
    """
    if cascade and rollback is None:
        raise click.UsageError("--cascade only makes sense with --rollback VERSION")
    if sum(v is not None for v in (target, rollback, to)) > 1:
        raise click.UsageError("--target, --rollback and --to cannot be used together; choose one")
    # start-up time: cli.migrate runs without planner.plan until plan_command() needs it
    from planner.plan import refuse_empty_upgrades

    # start-up time: cli.migrate runs without planner.request until plan_command() needs it
    from planner.request import Request

    catalog = load_catalog()
    request = Request(target=target, rollback=rollback, cascade=cascade, to=to, sql=sql, dry_run=True)
    entries = ledger_entries()
    if rollback is None and to is None:  # what `apm migrate` warns about before the same plan (stderr)
        warn_about_edited_files(catalog, entries)
        warn_about_missing_files(catalog, entries)
    plan = request.plan(catalog, entries)
    refuse_empty_upgrades(plan)  # what `apm migrate` would answer
    rehearse = rehearse or sql
    if as_json:
        preview = preview_plan(catalog, plan, request) if plan and rehearse else None
        emit_json({**plan_json(plan), **({"preview": preview.to_json() if preview else None} if rehearse else {})})
    elif not plan:
        echo(f"Nothing to do: already at {to}" if to is not None else "Nothing to apply")
    else:
        echo(plan_title(plan))
        echo(plan_table(plan))
        if rehearse:
            echo()
            dry_run_report(catalog, plan, request, as_json=False, exit_on_loss=False)
    if exit_code and plan:
        click.get_current_context().exit(EXIT_PENDING)
