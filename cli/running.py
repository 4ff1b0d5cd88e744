"""Running a plan for a person: confirmation, backup, progress, and what an interruption left.

``apm migrate`` (applies and rollbacks) and ``apm migrate restore`` share
these steps: every command that changes a database goes through here, so
the prompt, the backup rule, the progress bar and the Ctrl-C summary are
the same everywhere. The planner does the work; this module only decides
what a person sees and when to ask.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.errors import CommandError
from cli.options import EXIT_UNCONFIRMED, settings
from cli.output import duration, echo, emit_json, printed_lines
from cli.progress import Progress

# --------------------------------------------------------------------------
# Library calls, kept in one place so every command resolves things the same way.
# --------------------------------------------------------------------------


def load_catalog():
    from planner.loader import load_catalog as load

    return load(settings().catalog_dir)


def ledger_entries() -> dict:
    """What the ledger records, read without creating the database or its tables (either engine)."""
    return settings().engine.applied()


def make_apply_plan(catalog, entries: dict, target: str | None):
    from planner.plan import apply_plan

    return apply_plan(catalog, entries, target=target)


def make_rollback_plan(catalog, entries: dict, version: str, cascade: bool):
    from planner.plan import rollback_plan

    return rollback_plan(catalog, entries, version, cascade=cascade)


def execute(catalog, plan, *, atomic: bool, as_json: bool, create: bool, make_plan=None,
            before=None, confirm_outside=None, whole=None) -> list[dict]:
    """Run a plan, one line per step (or a progress bar on a terminal for long plans), then what was done.

    ``make_plan(ledger)`` plans the same request again when another process
    changes the ledger under this run (``Executor.migrate``). Ctrl-C stops
    the run: the open step is rolled back, and the message says which steps
    are applied, read back from the ledger so it is exact, counted over
    ``whole`` (the whole plan, when ``plan`` is one part of it).
    ``confirm_outside`` checks ``transactional = False`` steps statement by
    statement (``planner.outside``).
    """
    from planner.errors import Interrupted
    from planner.events import Replanned, StepFailed, StepFinished, StepSkipped, StepStarted

    results: list[dict] = []
    held: list[tuple[str, bool]] = []  # --atomic: nothing is applied until the one COMMIT, so lines wait for it
    bar_wanted = not as_json and len(plan) > 10 and sys.stdout.isatty()
    executor = settings().engine.runner(catalog=catalog, create=create)  # sqlite.runner.Executor on SQLite
    progress = Progress(len(plan), keep_lines=not atomic) if bar_wanted else None
    running: list = [None]  # the step under way, for the message when Ctrl-C stops it

    def record(event) -> None:
        if isinstance(event, Replanned):
            if atomic:  # the attempt's one transaction was rolled back: what it reported never happened
                held.clear()
                results.clear()
            echo(f"The ledger changed meanwhile (another process); planned again: "
                 f"{len(event.plan)} step(s) left", fg="yellow", err=True)
            if progress is not None:
                progress.grow(len(event.plan))
            return
        migration = event.step.migration
        running[0] = event.step if isinstance(event, StepStarted) else None
        if isinstance(event, StepStarted):
            if progress is not None:
                progress.show(event.step)
            return
        if isinstance(event, StepFinished):
            results.append({"version": migration.version, "description": migration.description,
                            "status": "applied" if event.step.direction == "apply" else "rolled_back",
                            "duration_ms": round(event.duration_ms, 3), "output": event.output})
            line = "\n".join([f"{verb(event.step.direction)} {migration.label} ({duration(event.duration_ms)})",
                              *printed_lines(event.output)])  # what the migration printed
        elif isinstance(event, StepSkipped):
            results.append({"version": migration.version, "description": migration.description,
                            "status": "skipped", "reason": event.reason, "duration_ms": 0})
            line = f"Skipped {migration.label}: {event.reason}"
        else:
            if isinstance(event, StepFailed) and event.output:  # its output helps explain the failure
                echo("\n".join([f"{migration.label} printed, before it failed:", *printed_lines(event.output)]),
                     err=True)
            return
        if atomic:
            held.append((line, isinstance(event, StepSkipped)))
        if progress is not None:
            progress.done(line)
        elif not atomic and not as_json:
            echo(line, fg="yellow" if isinstance(event, StepSkipped) else None)

    try:
        executor.migrate(make_plan or (lambda _ledger: plan), on_event=record, atomic=atomic, plan=plan,
                         before=before, confirm_outside=confirm_outside)
    except Interrupted as interrupt:
        if progress is not None:
            progress.close()
        from cli.errors import interrupted_exit_code

        raise CommandError(interrupted_summary(whole or plan, atomic, running[0]),
                           interrupted_exit_code(interrupt)) from None
    if progress is not None:
        progress.close()
    for line, skipped in held if not as_json else ():
        echo(line, fg="yellow" if skipped else None)
    return results


def verb(direction: str) -> str:
    return "Applied" if direction == "apply" else "Rolled back"


def interrupted_summary(plan, atomic: bool = False, running=None) -> str:
    """What an interrupted run left, read back from the ledger (exact even if Ctrl-C came right after a COMMIT).

    A ``transactional = False`` step has no transaction to roll back: what it did before the stop stays,
    and the message says so instead of calling the database consistent.
    """
    recorded = ledger_entries()
    applying = plan.direction == "apply"
    done = [s.version for s in plan.steps if (s.version in recorded) == (s.direction == "apply")]
    verb = "applied" if applying else "rolled back" if plan.direction == "rollback" else "done"
    if atomic:
        state = "the whole plan was rolled back (--atomic)" if not done else f"{verb}: {', '.join(done)}"
    else:
        state = (f"{verb} {len(done)} of {len(plan)} step(s)" + (f" ({', '.join(done)})" if done else "")
                 + "; the step that was running was rolled back")
    again = "apm migrate" if applying else f"apm migrate --rollback {plan.target}" + (" --cascade" if plan.cascade
                                                                                        else "")
    if plan.direction == "mixed":  # a plan to a state (--to)
        again = f"apm migrate --to {plan.target}"
    if running is not None and not running.migration.transactional and not atomic:
        state = state.replace("; the step that was running was rolled back", "")
        return (f"interrupted: {state}; {running.version} was running outside any transaction (transactional = "
                f"False), so what it did before the stop stays: `apm migrate doctor` shows it and what to check, "
                f"then run `{again}`")
    return f"interrupted: {state}; the database is consistent. Run `{again}` to finish"


def preview_plan(catalog, plan, *, make_plan=None, accept=None, sql: bool = False, on_event=None, before=None):
    """The plan run for real in one transaction, watched (``Executor.preview``); committed only if ``accept``."""
    # A plan that only applies may create the database (a --to that only goes forward too).
    creates = all(step.direction == "apply" for step in plan.steps)
    executor = settings().engine.runner(catalog=catalog, create=creates)
    return executor.preview(plan, make_plan=make_plan, accept=accept, on_event=on_event, capture_sql=sql,
                            before=before)


def report_preview(preview, plan, *, as_json: bool, sql: bool, title: str = "Dry run") -> None:
    """What a preview saw, step by step (and the SQL each step ran, with ``sql``)."""
    if as_json:
        emit_json(preview.to_json())
        return
    state = "committed" if preview.committed else f"rolled back; {settings().db_display} is unchanged"
    ran = len(preview.steps) - len(preview.not_previewed)
    echo(f"{title}: ran {ran} of {len(preview.plan)} step(s) in one transaction, then {state}")
    if preview.write_lock_ms is not None:  # SQLite: one write lock for the whole plan
        rebuilt = ", ".join(f"{r['table']} ({r['rows']} rows)" for r in preview.rebuilds())
        echo(f"  held the write lock {duration(preview.write_lock_ms)} (BEGIN IMMEDIATE to "
             f"{'COMMIT' if preview.committed else 'ROLLBACK'}; other writers waited)"
             + (f"; rebuilt {rebuilt}" if rebuilt else "; rebuilt no table"))
    for step in preview.steps:
        for line in step.describe():
            echo(f"  {line}", fg="yellow" if step.loses_data and line in step.loss_lines() else None)
        if sql and step.sql:
            echo(f"  -- {step.version} {step.direction}: the SQL it ran")
            for statement in step.sql:
                echo("    " + " ".join(statement.split()).rstrip(";") + ";")
    if preview.not_run:
        echo(f"  not run (the plan stops at the failure): {', '.join(preview.not_run)}")
    if preview.ok and preview.unchecked:
        outside = preview.not_previewed
        uncounted = [v for v in preview.unchecked if v not in outside]
        why = [f"{', '.join(outside)} could not be previewed (a transactional = False step reaching a statement "
               f"that runs only outside a transaction, or needing such a step first), so what "
               f"{'they do' if len(outside) > 1 else 'it does'} was not checked; a real run checks such a step "
               f"statement by statement"] if outside else []
        why += [f"{', '.join(uncounted)} drops what the preview could not count"] if uncounted else []
        echo(f"This plan may destroy data: {'; '.join(why)}."
             + (" It also destroys data." if any(i.count for s in preview.steps for i in s.impact) else ""),
             fg="yellow")
    elif preview.ok:
        echo("This plan destroys data." if preview.loses_data else "This plan loses no data.",
             fg="yellow" if preview.loses_data else None)


def dry_run_report(catalog, plan, as_json: bool, *, sql: bool = False, make_plan=None, exit_on_loss: bool = True):
    """Preview and roll back: exit 7 when the plan would destroy data, 5 (or the error's code) when a step fails."""
    preview = preview_plan(catalog, plan, make_plan=make_plan, sql=sql, on_event=preview_progress(plan, as_json))
    report_preview(preview, plan, as_json=as_json, sql=sql)
    if preview.error is not None:
        from cli.errors import exit_code_for

        raise CommandError(f"{preview.error} (found by the preview: nothing was committed)",
                           exit_code_for(preview.error)) from preview.error
    if (preview.loses_data or preview.unchecked) and exit_on_loss:
        click.get_current_context().exit(EXIT_UNCONFIRMED)  # a step nobody could check is not a safe plan
    from cli.locking import gating_findings

    if gating_findings(preview) and exit_on_loss:
        from cli.options import EXIT_LOCK_RISK

        click.get_current_context().exit(EXIT_LOCK_RISK)  # a CI gate: lock findings not accepted
    return preview


def preview_progress(plan, as_json: bool):
    """A progress bar while a preview runs on a terminal, so a long plan never sits silent; a note if re-planned."""
    from planner.events import Replanned, StepFinished, StepSkipped, StepStarted

    progress = Progress(len(plan), keep_lines=False) if not as_json and sys.stdout.isatty() else None

    def on_event(event) -> None:
        if isinstance(event, Replanned):
            echo(f"The ledger changed meanwhile (another process); planned again inside the lock: "
                 f"{len(event.plan)} step(s)", fg="yellow", err=True)
            return
        if progress is None:
            return
        if isinstance(event, StepStarted):
            progress.total = max(progress.total, event.total)
            progress.show(event.step)
        elif isinstance(event, (StepFinished, StepSkipped)):
            progress.done("")
            if event.index == event.total:
                progress.close()

    return on_event


def stdin_is_terminal() -> bool:
    """Whether a person can answer a question (tests replace this to play one)."""
    return sys.stdin.isatty()


def require_database() -> None:
    """Refuse, as a database problem (exit 6), a command that needs an existing database and has none."""
    settings().engine.require()


def run_step_by_step(catalog, plan, *, make_plan, atomic: bool, as_json: bool, backup: bool,
                     create: bool) -> dict:
    """A run without the preview (``--no-preview``, or a plan with steps outside any transaction).

    The backup first (when asked), each step committed in turn (or all at
    once with ``atomic``), and old backups pruned once the run committed.
    """
    taken = BackupOnce(backup, announce=not as_json)
    results = execute(catalog, plan, atomic=atomic, as_json=as_json, create=create, make_plan=make_plan,
                      before=taken)
    backup_path = taken.path
    if backup_path is not None:
        prune_backups_after_commit()
    return {"results": results, "backup": str(backup_path) if backup_path is not None else None}


class BackupOnce:
    """The backup before a rollback, taken by the runner (``before``) at most once, on both engines.

    The runner takes it inside its lock, once the plan was made again there
    from the ledger (``Session.take_backup``), before anything is written: the
    copy is exactly the database the rollback starts from. Taken any earlier,
    another process could commit between the copy and the run, and "the
    newest backup" would not be the database this run changed.
    """

    def __init__(self, wanted: bool, *, announce: bool = False):
        self.wanted, self.announce = wanted, announce
        self.path: Path | None = None

    def __call__(self) -> None:
        if self.wanted and self.path is None:
            self.path = take_backup()
            if self.path is not None and self.announce:
                echo(f"Backup written to {self.path}")

    def discard(self) -> None:
        """Forget (and delete) a copy whose run was rolled back: the next run takes its own."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def take_backup() -> Path | None:
    """The seed's "backup first" step, done for the user: SQLite's online backup API, or ``pg_dump``.

    A SQLite file is checked for writing first (read-only file or folder, a
    lock held past --busy-timeout): a rollback that cannot run must not leave
    a backup behind. Old backups are pruned (``--keep-backups N``) only once
    the run has committed.
    """
    return settings().engine.backup(settings().backup_dir)


def prune_backups_after_commit() -> None:
    """After a run that committed: --keep-backups N / APM_KEEP_BACKUPS / keep_backups in the config.

    SQLite: ``<db>.backup.*`` beside the file. PostgreSQL: this database's
    ``<dbname>.*.dump`` files in the backup folder (no other file there).
    """
    options = settings()
    if not options.keep_backups:
        return
    for path in options.engine.prune_backups(options.keep_backups, options.backup_dir):
        echo(f"Removed old backup {path} (--keep-backups {options.keep_backups})", err=True)  # as restore says it


def warn_about_edited_files(catalog, entries: dict) -> None:
    """One stderr line per applied migration whose file changed since it was applied (`check --strict` fails)."""
    from planner.drift import CHANGED, file_states

    for version, state in file_states(catalog, entries).items():
        if state == CHANGED:
            migration = catalog.get(version)
            echo(f"Warning: {migration.path.name} changed since {migration.version} was applied; the database "
                 f"holds what the old text did (see `apm migrate check`)", fg="yellow", err=True)


def warn_about_missing_files(catalog, entries: dict) -> None:
    """One stderr line per applied version with no file in the catalog: it cannot be rolled back from here."""
    from planner.plan import unknown_applied
    from planner.versions import is_version

    for version in unknown_applied(catalog, entries):
        if catalog.squash_of(version) is not None:
            continue  # a squash replaces it: its row is the squash's, not a missing file
        if is_version(version):
            from planner.lint import missing_file_name  # start-up time: lint and its findings, only for a warning

            echo(f"Warning: {version} is recorded as applied but no {missing_file_name(version)} is in "
                 f"{catalog.directory}; it cannot be rolled back from this catalog (see `apm migrate check`)",
                 fg="yellow", err=True)
        else:
            echo(f"Warning: schema_migrations holds {version!r}, which is not a version, so no file can match it "
                 f"(see `apm migrate check`)", fg="yellow", err=True)
