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
    from planner.events import Replanned, StepFailed, StepFinished, StepSkipped, StepStarted
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
                            "duration_ms": round(event.duration_ms, 3), "output": event.output})
            line = "\n".join([f"{_verb(event.step.direction)} {migration.label} ({duration(event.duration_ms)})",
                              *printed_lines(event.output)])  # apm-adopt: what the migration printed
        elif isinstance(event, StepSkipped):
            results.append({"version": migration.version, "description": migration.description,
                            "status": "skipped", "reason": event.reason, "duration_ms": 0})
            line = f"Skipped {migration.label}: {event.reason}"
        else:
            if isinstance(event, StepFailed) and event.output:  # apm-adopt: its output helps explain the failure
                echo("\n".join([f"{migration.label} printed, before it failed:", *printed_lines(event.output)]),
                     err=True)
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
        from cli.errors import interrupted_exit_code

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
