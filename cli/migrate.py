"""``apm migrate`` and its subcommands: parse, call the planner, format.

The seed's commands keep their spelling (``apm migrate``, ``--list``,
``--show-applied``, ``--rollback 0027``); what is new is that every action
starts from a plan, so ``apm migrate plan`` shows exactly what the real
command would run, and every refusal happens before anything is touched.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.options import VERSION, settings, shared_options
from cli.output import duration, echo, emit_json, migration_row, plan_json, table

# --------------------------------------------------------------------------
# Library calls, kept in one place so every command resolves things the same way.
# --------------------------------------------------------------------------


def load_catalog():
    from planner.loader import load_catalog as load

    return load(settings().catalog_dir)


def ledger_entries() -> dict:
    """What the ledger records, read without creating the database or its tables."""
    from planner.ledger import read_ledger

    return read_ledger(settings().db_path, settings().busy_timeout)


def make_apply_plan(catalog, entries: dict, target: str | None):
    from planner.plan import apply_plan

    return apply_plan(catalog, entries, target=target)


def make_rollback_plan(catalog, entries: dict, version: str, cascade: bool):
    from planner.plan import rollback_plan

    return rollback_plan(catalog, entries, version, cascade=cascade)


def execute(catalog, plan, *, atomic: bool, as_json: bool, create: bool, make_plan=None) -> list[dict]:
    """Run a plan, one line per step (or a progress bar on a terminal for long plans), then what was done.

    ``make_plan(ledger)`` plans the same request again when another process
    changes the ledger under this run (``Executor.migrate``). Ctrl-C stops
    the run: the open step is rolled back, and the message says which steps
    are applied, read back from the ledger so it is exact.
    """
    from planner.errors import Interrupted
    from planner.events import Replanned, StepFinished, StepSkipped, StepStarted
    from planner.executor import Executor

    results: list[dict] = []
    bar_wanted = not as_json and len(plan) > 10 and sys.stdout.isatty()
    executor = Executor(settings().db_path, busy_timeout=settings().busy_timeout, create=create, catalog=catalog)
    progress = Progress(len(plan)) if bar_wanted else None

    def record(event) -> None:
        if isinstance(event, Replanned):
            echo(f"The ledger changed meanwhile (another process); planned again: "
                 f"{len(event.plan)} step(s) left", fg="yellow", err=True)
            if progress is not None:
                progress.grow(len(event.plan))
            return
        migration = event.step.migration
        if isinstance(event, StepStarted):
            if progress is not None:
                progress.show(event.step)
            return
        if isinstance(event, StepFinished):
            results.append({"version": migration.version, "description": migration.description,
                            "status": "applied" if event.step.direction == "apply" else "rolled_back",
                            "duration_ms": round(event.duration_ms, 3)})
            line = f"{_verb(event.step.direction)} {migration.label} ({duration(event.duration_ms)})"
        elif isinstance(event, StepSkipped):
            results.append({"version": migration.version, "description": migration.description,
                            "status": "skipped", "reason": event.reason, "duration_ms": 0})
            line = f"Skipped {migration.label}: {event.reason}"
        else:
            return
        if progress is not None:
            progress.done(line)
        elif not as_json:
            echo(line, fg="yellow" if isinstance(event, StepSkipped) else None)

    try:
        executor.migrate(make_plan or (lambda _ledger: plan), on_event=record, atomic=atomic, plan=plan)
    except Interrupted as interrupt:
        if progress is not None:
            progress.close()
        from cli.errors import CommandError, interrupted_exit_code

        raise CommandError(_interrupted_summary(plan, atomic), interrupted_exit_code(interrupt)) from None
    if progress is not None:
        progress.close()
    return results


def _verb(direction: str) -> str:
    return "Applied" if direction == "apply" else "Rolled back"


def _interrupted_summary(plan, atomic: bool) -> str:
    """What an interrupted run left, read back from the ledger (exact even if Ctrl-C came right after a COMMIT)."""
    from planner.ledger import read_ledger

    recorded = read_ledger(settings().db_path, settings().busy_timeout)
    applying = plan.direction == "apply"
    done = [s.version for s in plan.steps if (s.version in recorded) == applying]
    verb = "applied" if applying else "rolled back"
    if atomic:
        state = "the whole plan was rolled back (--atomic)" if not done else f"{verb}: {', '.join(done)}"
    else:
        state = (f"{verb} {len(done)} of {len(plan)} step(s)" + (f" ({', '.join(done)})" if done else "")
                 + "; the step that was running was rolled back")
    again = "apm migrate" if applying else f"apm migrate --rollback {plan.target}" + (" --cascade" if plan.cascade
                                                                                        else "")
    return f"interrupted: {state}; the database is consistent. Run `{again}` to finish"


class Progress:
    """A progress bar that fits the terminal, names the migration running, and keeps the finished lines.

    The lines (``Applied 0001 ... (3 ms)``) are printed after the bar, so a
    run ends with the list of what was done and how long each step took.
    """

    def __init__(self, total: int):
        import shutil

        self.total = total
        self.count = 0
        self.lines: list[str] = []
        self.width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        self.current = ""

    def grow(self, steps: int) -> None:
        self.total = self.count + steps

    def show(self, step) -> None:
        self.current = f"{'Applying' if step.direction == 'apply' else 'Rolling back'} {step.migration.label}"
        self._draw()

    def done(self, line: str) -> None:
        self.count += 1
        self.lines.append(line)
        self._draw()

    def _draw(self) -> None:
        counter = f" {self.count}/{self.total} "
        bar_width = max(10, min(30, self.width // 3))
        filled = int(bar_width * self.count / self.total) if self.total else bar_width
        bar = "[" + "#" * filled + "-" * (bar_width - filled) + "]"
        room = self.width - len(bar) - len(counter)
        label = self.current if len(self.current) <= room else self.current[: max(0, room - 1)] + "…"
        text = f"{bar}{counter}{label}"[: self.width]
        click.echo("\r" + text.ljust(self.width), nl=False)

    def close(self) -> None:
        click.echo("\r" + " " * self.width + "\r", nl=False)
        for line in self.lines:
            echo(line, fg="yellow" if line.startswith("Skipped") else None)
        applied = sum(1 for line in self.lines if not line.startswith("Skipped"))
        echo(f"{applied} of {self.total} step(s) done")


def rehearse_plan(catalog, plan):
    from planner.rehearsal import rehearse as run_rehearsal

    return run_rehearsal(settings().db_path, plan, catalog=catalog, busy_timeout=settings().busy_timeout)


def dry_run_report(catalog, plan, as_json: bool) -> None:
    """Rehearse on a copy and report; a step that fails fails the command as it would for real."""
    rehearsal = rehearse_plan(catalog, plan)
    if as_json:
        emit_json(rehearsal.to_json())
    else:
        echo(f"Dry run: rehearsed {len(rehearsal.steps)} of {len(plan)} step(s) on a copy; "
             f"{settings().db_path} was not touched")
        for line in rehearsal.describe():
            echo(f"  {line}")
        if rehearsal.ok:
            echo("This plan destroys data." if rehearsal.loses_data else "This plan loses no data.",
                 fg="yellow" if rehearsal.loses_data else None)
    if rehearsal.error is not None:
        raise rehearsal.error


def confirm_data_loss(catalog, plan, as_json: bool) -> None:
    """Rehearse first; a plan that would destroy data needs a yes, from a person or from --yes.

    A plan the rehearsal shows failing is not started at all: the real run
    would stop at the same step after committing the ones before it.
    """
    from cli.errors import CommandError
    from cli.options import EXIT_UNCONFIRMED

    rehearsal = rehearse_plan(catalog, plan)
    if rehearsal.error is not None:
        from cli.errors import exit_code_for

        raise CommandError(f"{rehearsal.error} (found by rehearsing on a copy: nothing was run for real)",
                           exit_code_for(rehearsal.error)) from rehearsal.error
    if not rehearsal.loses_data:
        return
    lines = [line for step in rehearsal.steps if step.loses_data for line in step.describe()]
    if not stdin_is_terminal() or as_json:
        raise CommandError(
            f"this plan destroys data ({'; '.join(lines)}); nothing was changed. "
            f"Re-run with --yes to proceed, or with --dry-run to see the whole rehearsal",
            EXIT_UNCONFIRMED,
        )
    echo("This plan destroys data:", fg="yellow", err=True)
    for line in lines:
        echo(f"  {line}", err=True)
    try:
        answer = click.confirm("Proceed?", default=False, err=True)
    except click.Abort as abort:
        from planner.errors import Interrupted

        if isinstance(abort.__context__, Interrupted):
            raise abort.__context__ from None  # Ctrl-C at the prompt: exit 130 like anywhere else
        answer = False  # end of input: no answer is not a yes
    if not answer:
        raise CommandError("not confirmed; nothing was changed", EXIT_UNCONFIRMED)


def stdin_is_terminal() -> bool:
    """Whether a person can answer a question (tests replace this to play one)."""
    return sys.stdin.isatty()


def take_backup() -> Path | None:
    """The seed's "backup first" step, done for the user with SQLite's online backup API.

    The database is checked for writing first (read-only file or folder, a
    lock held past --busy-timeout): a rollback that cannot run must not leave
    a backup behind. ``--keep-backups N`` prunes the oldest afterwards.
    """
    from planner.backups import backup, prune_backups
    from planner.database import writable_now

    path = settings().db_path
    if not path.exists():
        return None
    writable_now(path, settings().busy_timeout)
    written = backup(path, busy_timeout=settings().busy_timeout)
    if settings().keep_backups:  # --keep-backups N / APM_KEEP_BACKUPS / keep_backups in the config
        prune_backups(path, settings().keep_backups)
    return written


def warn_about_edited_files(catalog, entries: dict) -> None:
    """One stderr line per applied migration whose file changed since it was applied (`check --strict` fails)."""
    from planner.drift import CHANGED, file_states

    for version, state in file_states(catalog, entries).items():
        if state == CHANGED:
            migration = catalog.get(version)
            echo(f"Warning: {migration.path.name} changed since {migration.version} was applied; the database "
                 f"holds what the old text did (see `apm migrate check`)", fg="yellow", err=True)


# --------------------------------------------------------------------------
# apm migrate
# --------------------------------------------------------------------------

_ACTIONS = ("list_pending", "show_applied", "rollback", "mark_applied", "mark_rolled_back")


class MigrateGroup(click.Group):
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
@click.option("--atomic", is_flag=True, help="Run the whole plan as one transaction: all or nothing.")
@click.option("--no-backup", is_flag=True, help="With --rollback: skip the backup taken before rolling back.")
@click.option("--dry-run", is_flag=True, help="Rehearse the plan on a copy and report what it changes; touch nothing.")
@click.option("--yes", "-y", is_flag=True, help="Run a plan that destroys data without rehearsing it or asking.")
@click.option("--mark-applied", type=VERSION, help="Record VERSION as applied without running it.")
@click.option("--mark-rolled-back", type=VERSION, help="Remove VERSION from the ledger without running it.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (see docs/commands.md).")
@click.pass_context
def migrate(ctx: click.Context, list_pending: bool, show_applied: bool, rollback: str | None, cascade: bool,
            target: str | None, atomic: bool, no_backup: bool, dry_run: bool, yes: bool, mark_applied: str | None,
            mark_rolled_back: str | None, as_json: bool) -> None:
    """Apply pending migrations in dependency order (or list, show, roll back).

    \b
    apm migrate                          apply everything pending
    apm migrate --target 0027            apply 0027 and what it needs
    apm migrate --list                   pending migrations, in run order
    apm migrate --show-applied           applied migrations and file drift
    apm migrate --rollback 0027          roll back 0027 (refused if needed)
    apm migrate --rollback 0027 --cascade   roll back 0029, then 0027
    apm migrate --rollback 0027 --cascade --dry-run   what it would destroy

    A real run is first rehearsed on a copy of the database; if it would
    destroy data it shows what and asks (on a terminal) or refuses (elsewhere)
    unless --yes is given.
    """
    chosen = [name for name in _ACTIONS if ctx.params.get(name) not in (None, False)]
    if ctx.invoked_subcommand is not None:
        if chosen or target is not None or cascade or atomic or no_backup or as_json or dry_run or yes:
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
    if dry_run and chosen and rollback is None:
        raise click.UsageError("--dry-run rehearses an apply or a --rollback; it does not combine with other actions")

    if list_pending:
        _list_pending(as_json)
    elif show_applied:
        _show_applied(as_json)
    elif mark_applied is not None or mark_rolled_back is not None:
        _mark(mark_applied, mark_rolled_back, as_json)
    elif rollback is not None:
        _rollback(rollback, cascade=cascade, backup=not no_backup, atomic=atomic, as_json=as_json,
                  dry_run=dry_run, yes=yes)
    else:
        _apply(target, atomic=atomic, as_json=as_json, dry_run=dry_run, yes=yes)


def _apply(target: str | None, *, atomic: bool, as_json: bool, dry_run: bool, yes: bool) -> None:
    catalog = load_catalog()
    entries = ledger_entries()
    warn_about_edited_files(catalog, entries)
    plan = make_apply_plan(catalog, entries, target)
    if dry_run:
        return dry_run_report(catalog, plan, as_json)  # an empty plan too: the documented shape, no steps
    if not plan:
        if as_json:
            emit_json({**plan_json(plan), "results": []})
        else:
            echo("Nothing to apply")
        return
    if not yes:
        confirm_data_loss(catalog, plan, as_json)
    results = execute(catalog, plan, atomic=atomic, as_json=as_json, create=True,
                      make_plan=lambda ledger: make_apply_plan(catalog, ledger, target))
    if as_json:
        emit_json({**plan_json(plan), "results": results})


def _rollback(version: str, *, cascade: bool, backup: bool, atomic: bool, as_json: bool, dry_run: bool,
              yes: bool) -> None:
    catalog = load_catalog()
    plan = make_rollback_plan(catalog, ledger_entries(), version, cascade)
    if dry_run:
        return dry_run_report(catalog, plan, as_json)
    if not yes:
        confirm_data_loss(catalog, plan, as_json)
    backup_path = take_backup() if backup else None
    if backup_path and not as_json:
        echo(f"Backup written to {backup_path}")
    results = execute(catalog, plan, atomic=atomic, as_json=as_json, create=False,
                      make_plan=lambda ledger: make_rollback_plan(catalog, ledger, version, cascade))
    if as_json:
        emit_json({**plan_json(plan), "backup": str(backup_path) if backup_path else None, "results": results})


def _mark(applied: str | None, rolled_back: str | None, as_json: bool) -> None:
    """The seed's "add a record to schema_migrations by hand", with the dependency checks it lacked."""
    from planner import marks

    catalog = load_catalog()
    db = settings().db_path
    if applied is not None:
        migration = marks.mark_applied(db, catalog, applied, busy_timeout=settings().busy_timeout)
        action, verb = "mark-applied", "Marked as applied"
    else:
        migration = marks.mark_rolled_back(db, catalog, rolled_back, busy_timeout=settings().busy_timeout)
        action, verb = "mark-rolled-back", "Marked as rolled back"
    if as_json:
        emit_json({"action": action, "version": migration.version, "description": migration.description})
    else:
        echo(f"{verb}: {migration.label} (nothing was run)")


def _list_pending(as_json: bool) -> None:
    catalog = load_catalog()
    plan = make_apply_plan(catalog, ledger_entries(), None)
    if as_json:
        emit_json([{"version": s.version, "description": s.migration.description,
                    "depends_on": list(s.migration.depends_on)} for s in plan.steps])
    elif not plan:
        echo("No pending migrations")
    else:
        echo(table([migration_row(s.migration) for s in plan.steps], ["version", "description", "depends on"]))


def _show_applied(as_json: bool) -> None:
    from planner.drift import file_states
    from planner.loader import load_catalog as load

    entries = ledger_entries()
    catalog = load(settings().catalog_dir)
    states = file_states(catalog, entries)
    ordered = list(entries.values())  # read_ledger orders them: versions by number, other rows after
    if as_json:
        emit_json([{"version": e.version, "description": e.description, "applied_at": e.applied_at,
                    "checksum": e.checksum, "file": states[e.version]} for e in ordered])
    elif not ordered:
        echo("No applied migrations")
    else:
        rows = [[e.version, e.description or "", e.applied_at or "", states[e.version]] for e in ordered]
        echo(table(rows, ["version", "description", "applied_at", "file"]))


# --------------------------------------------------------------------------
# apm migrate plan
# --------------------------------------------------------------------------


@migrate.command("plan")
@shared_options()
@click.option("--rollback", type=VERSION, help="Show the rollback order for VERSION instead.")
@click.option("--cascade", is_flag=True, help="With --rollback: include the applied dependents.")
@click.option("--target", type=VERSION, help="Plan only VERSION and the migrations it needs.")
@click.option("--rehearse", is_flag=True, help="Also run the plan on a copy and report what it changes.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (see docs/commands.md).")
def plan_command(rollback: str | None, cascade: bool, target: str | None, rehearse: bool, as_json: bool) -> None:
    """Show what `apm migrate` would run, changing nothing."""
    if cascade and rollback is None:
        raise click.UsageError("--cascade only makes sense with --rollback VERSION")
    if target is not None and rollback is not None:
        raise click.UsageError("--target and --rollback cannot be used together; choose one")
    catalog = load_catalog()
    entries = ledger_entries()
    if rollback is not None:
        plan = make_rollback_plan(catalog, entries, rollback, cascade)
    else:
        plan = make_apply_plan(catalog, entries, target)
    if as_json and not rehearse:
        emit_json(plan_json(plan))
        return
    if as_json:
        emit_json({**plan_json(plan), "rehearsal": rehearse_plan(catalog, plan).to_json()})
        return
    if not plan:
        echo("Nothing to apply")
        return
    title = "Rollback plan" if plan.direction == "rollback" else "Apply plan"
    echo(f"{title}: {len(plan)} migration(s)")
    rows = [[i, *migration_row(s.migration)] for i, s in enumerate(plan.steps, 1)]
    echo(table(rows, ["#", "version", "description", "depends on"]))
    if rehearse:
        echo()
        dry_run_report(catalog, plan, as_json=False)


def _register_subcommands() -> None:
    from cli.authoring import new_command
    from cli.diagrams import docs_command, graph_command
    from cli.safety import check_command, doctor_command

    for command in (graph_command, docs_command, new_command, check_command, doctor_command):
        migrate.add_command(command)
    from cli.backups import backups_command, restore_command

    migrate.add_command(backups_command)
    migrate.add_command(restore_command)


_register_subcommands()
