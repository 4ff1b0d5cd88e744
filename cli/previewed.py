"""A real run through the preview: commit what loses no data, ask about the rest, and plans in parts.

Every real ``apm migrate`` (apply, ``--rollback``, ``--to``) runs its plan
in one watched transaction (``Executor.preview``) and commits it only if
it destroys nothing, or what it destroys was confirmed. A plan holding
``transactional = False`` steps cannot be one transaction: it runs in
parts (``planner.plan.segments``), each run of transactional steps
previewed and confirmed the same way, each step outside a transaction
alone, confirmed as a whole up front since nothing can check it.
"""

from __future__ import annotations

from pathlib import Path

from cli import running
from cli.errors import CommandError
from cli.options import EXIT_UNCONFIRMED
from cli.output import confirm, duration, echo, printed_lines


def run_previewed(catalog, plan, *, make_plan, as_json: bool, yes: bool, sql: bool = False,
                  backup: bool = False) -> dict:
    """A real run: the preview commits what loses no data (each migration runs once), and asks about the rest.

    Data loss is committed only when confirmed: by ``--yes`` (printed, then
    committed in the same run), or by a person on a terminal (the preview is
    rolled back, the loss shown and confirmed, then the plan runs again and
    commits only if it destroys exactly what was confirmed). Without either,
    nothing is committed (exit 7). A failing step commits nothing (exit 5).
    A plan with ``transactional = False`` steps runs in parts (``run_in_parts``).
    """
    from planner.errors import Interrupted

    if any(not step.migration.transactional for step in plan.steps):
        return run_in_parts(catalog, plan, as_json=as_json, yes=yes, sql=sql, backup=backup)
    taken = running.BackupOnce(backup)
    try:
        preview = confirmed_preview(catalog, plan, make_plan=make_plan, as_json=as_json, yes=yes, sql=sql,
                                    before=taken)
    except (CommandError, Interrupted):
        if taken.path is not None:
            taken.path.unlink(missing_ok=True)  # nothing changed: a backup of it is only clutter
        raise
    if taken.path is not None:
        running.prune_backups_after_commit()
    results = committed(preview, as_json, backup=taken.path)
    return {"results": results, "preview": preview.to_json(),
            "backup": str(taken.path) if taken.path is not None else None}


def confirmed_preview(catalog, plan, *, make_plan, as_json: bool, yes: bool, sql: bool, before,
                      done: str = ""):
    """The plan previewed until it commits: at once when it loses no data or ``yes``, else once confirmed.

    Raises ``CommandError`` when a step fails (exit 5) or the loss is not
    confirmed (exit 7); ``done`` says what earlier parts of the run
    committed, for those messages (``nothing was committed`` otherwise).
    """
    from cli.errors import exit_code_for

    confirmed: list[str] | None = None
    unchanged = f"{done}; this part was rolled back" if done else "nothing was committed"
    taken_before = getattr(before, "path", None)  # an earlier part's backup stays the run's
    while True:
        def accept(preview, confirmed=confirmed) -> bool:
            if confirmed is not None:
                return preview.loss_lines() == confirmed
            return yes or not preview.loses_data

        preview = running.preview_plan(catalog, plan, make_plan=make_plan, accept=accept, sql=sql,
                               on_event=running.preview_progress(plan, as_json), before=before)
        if preview.error is not None:
            failed = preview.steps[-1]
            if failed.output:  # what it printed helps explain the failure (stderr: --json stays clean)
                echo("\n".join([f"{failed.version} {failed.description} printed, before it failed:",
                                *printed_lines(failed.output)]), err=True)
            what = getattr(preview.error, "failure", None) if done else None  # not "the whole plan": this part
            raise CommandError(f"{what}; this part was rolled back ({done})" if what else
                               f"{preview.error} ({unchanged})", exit_code_for(preview.error))
        if preview.committed:
            return preview
        lines = preview.loss_lines()
        unchanged = f"{done}; nothing else was changed" if done else "nothing was changed"
        if confirmed is not None:
            raise CommandError(f"the database changed while you decided: the plan now destroys "
                               f"{'; '.join(lines)}; {unchanged}. Run the command again", EXIT_UNCONFIRMED)
        if as_json or not running.stdin_is_terminal():
            raise CommandError(f"this plan destroys data ({'; '.join(lines)}); {unchanged}. "
                               f"Re-run with --yes to proceed, or with --dry-run to see the whole preview",
                               EXIT_UNCONFIRMED)
        if taken_before is None and getattr(before, "path", None) is not None:
            # This preview was rolled back; the run that commits takes its own copy inside its own lock, since
            # another process may commit while the person decides.
            before.discard()
        _ask(lines, unchanged)
        confirmed = lines


def committed(preview, as_json: bool, backup: Path | None = None) -> list[dict]:
    """What a committed preview did, shown (the loss it was allowed first, on stderr) and as result rows."""
    if preview.loses_data:  # on stderr, so --json stays one document on stdout
        echo("This run destroyed data, as confirmed:", fg="yellow", err=True)
        for line in preview.loss_lines():
            echo(f"  {line}", err=True)
    if backup is not None and not as_json:
        echo(f"Backup written to {backup}")
    results = []
    for step in preview.steps:
        status = "skipped" if step.skipped else "applied" if step.direction == "apply" else "rolled_back"
        results.append({"version": step.version, "description": step.description, "status": status,
                        "duration_ms": round(step.duration_ms, 3),
                        **({"reason": step.skipped} if step.skipped else {"output": step.output})})
        if not as_json:
            if step.skipped:
                echo(f"Skipped {step.version} {step.description}: {step.skipped}", fg="yellow")
            else:
                echo("\n".join([f"{running.verb(step.direction)} {step.version} {step.description} "
                                f"({duration(step.duration_ms)})", *printed_lines(step.output)]))
    return results


def _ask(lines: list[str], unchanged: str = "nothing was changed", heading: str = "This plan destroys data:") -> None:
    """Show what the plan destroys and ask; anything but yes refuses (exit 7), Ctrl-C exits 130."""
    echo(heading, fg="yellow", err=True)
    for line in lines:
        echo(f"  {line}", err=True)
    answer = confirm("Proceed?")  # Ctrl-C: Interrupted, exit 130
    if not answer:
        raise CommandError(f"not confirmed; {unchanged}", EXIT_UNCONFIRMED)




def run_in_parts(catalog, plan, *, as_json: bool, yes: bool, sql: bool, backup: bool) -> dict:
    """A plan with ``transactional = False`` steps: each run of the others previewed, each of those alone.

    What a step outside any transaction does cannot be previewed, so the
    plan needs ``--yes`` (or a person's yes) for those before anything
    runs. The parts around them are previewed and confirmed like any plan;
    a part that fails, or whose loss is not confirmed, is rolled back and
    stops the run, and the message names what earlier parts committed.
    """
    from planner.errors import Interrupted
    from planner.plan import segments

    outside = [step.version for step in plan.steps if not step.migration.transactional]
    they, run, do, them = ("they", "run", "they do", "them") if len(outside) > 1 else ("it", "runs", "it does", "it")
    why = (f"{', '.join(outside)} declare(s) transactional = False, so {they} {run} outside any transaction, "
           f"where what {do} cannot be checked for data loss (the steps around {them} are previewed as usual)")
    if not yes:
        if as_json or not running.stdin_is_terminal():
            raise CommandError(f"{why}; nothing was changed. Review it (`apm migrate --dry-run --sql` shows the "
                               f"rest), then re-run with --yes", EXIT_UNCONFIRMED)
        _ask([why], heading="This plan may destroy data where it cannot be checked:")
    else:
        echo(f"Note: {why}", fg="yellow", err=True)
    taken = running.BackupOnce(backup, announce=not as_json)
    results: list[dict] = []
    previews: list[dict] = []
    verb = "applied" if plan.direction == "apply" else "rolled back" if plan.direction == "rollback" else "done"

    def done() -> str:
        finished = [r["version"] for r in results if r["status"] != "skipped"]
        return f"{verb} before it: {', '.join(finished)}" if finished else ""

    for part in segments(plan):
        if not part.steps[0].migration.transactional:
            try:
                results += running.execute(catalog, part, atomic=False, as_json=as_json,
                                           create=part.direction == "apply", before=taken)
            except Exception:
                if done():  # the error names this step; what the parts before it committed stays
                    echo(f"The parts before it were committed ({done()})", fg="yellow", err=True)
                raise
            continue
        try:
            preview = confirmed_preview(catalog, part, make_plan=None, as_json=as_json, yes=yes, sql=sql,
                                        before=taken, done=done())
        except Interrupted as interrupt:
            if not results:
                raise
            from cli.errors import interrupted_exit_code

            raise CommandError(f"interrupted: {done()}; the part that was running was rolled back and the "
                               f"database is consistent. Run the command again to finish",
                               interrupted_exit_code(interrupt)) from None
        results += committed(preview, as_json)
        previews.append(preview.to_json())
    if taken.path is not None:
        running.prune_backups_after_commit()
    return {"results": results, "previews": previews,
            "backup": str(taken.path) if taken.path is not None else None}
