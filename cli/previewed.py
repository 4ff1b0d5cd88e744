"""A real run through the preview: commit what loses no data, ask about the rest, and plans in parts.

Every real ``apm migrate`` (apply, ``--rollback``, ``--to``) runs its plan
in one watched transaction (``Executor.preview``) and commits it only if
it destroys nothing, or what it destroys was confirmed. A plan holding
``transactional = False`` steps cannot be one transaction: it runs in
parts (``planner.plan.segments``), each run of transactional steps
previewed and confirmed the same way, each step outside a transaction
alone, checked statement by statement as it runs (``planner.outside``):
it stops before a statement that destroys data until that is confirmed.
"""

from __future__ import annotations

from pathlib import Path

from cli import advice, running
from cli.errors import CommandError
from cli.options import EXIT_LOCK_RISK, EXIT_UNCONFIRMED
from cli.output import confirm, duration, echo, printed_lines


def run_previewed(catalog, plan, *, make_plan, as_json: bool, yes: bool, sql: bool = False,
                  backup: bool = False) -> dict:
    """A real run: the preview commits what loses no data (each migration runs once), and asks about the rest.

    Data loss is committed only when confirmed: by ``--yes`` (printed, then
    committed in the same run), or by a person on a terminal (the preview is
    rolled back, the loss shown and confirmed, then the plan runs again and
    commits only if it destroys exactly what was confirmed). Without either,
    nothing is committed (exit 7). A failing step commits nothing (exit 5).
    A plan with ``transactional = False`` steps runs in parts (``run_in_parts``),
    each committed on its own: a refusal keeps the parts before it, and says so.
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

    from cli.locking import gating_findings, lock_refusal

    confirmed: list[str] | None = None
    locks_confirmed: list[str] = []  # lock findings a person accepted on the terminal (--yes never does)
    unchanged = f"{done}; this part was rolled back" if done else "nothing was committed"
    taken_before = getattr(before, "path", None)  # an earlier part's backup stays the run's
    while True:
        def accept(preview, confirmed=confirmed, locks_confirmed=locks_confirmed) -> bool:
            if gating_findings(preview) != locks_confirmed:
                return False
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
        risky = gating_findings(preview)
        if risky != locks_confirmed:
            if locks_confirmed:
                raise CommandError(f"the database changed while you decided: the plan's lock findings are now "
                                   f"{'; '.join(risky)}; {unchanged}. Run the command again", EXIT_LOCK_RISK)
            if as_json or not running.stdin_is_terminal():
                raise CommandError(lock_refusal(risky, unchanged), EXIT_LOCK_RISK)
            _ask([line for step in preview.steps for line in step.describe() if ": lock " in line], unchanged,
                 heading="This plan takes locks that can hold a live database up:", code=EXIT_LOCK_RISK)
            locks_confirmed[:] = risky
            continue  # run again; data loss, if any, is asked about next
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


def _ask(lines: list[str], unchanged: str = "nothing was changed", heading: str = "This plan destroys data:",
         code: int = EXIT_UNCONFIRMED) -> None:
    """Show what the plan destroys and ask; anything but yes refuses (exit 7), Ctrl-C exits 130."""
    echo(heading, fg="yellow", err=True)
    for line in lines:
        echo(f"  {line}", err=True)
    answer = confirm("Proceed?")  # Ctrl-C: Interrupted, exit 130
    if not answer:
        raise CommandError(f"not confirmed; {unchanged}", code)




def run_in_parts(catalog, plan, *, as_json: bool, yes: bool, sql: bool, backup: bool) -> dict:
    """A plan with ``transactional = False`` steps: each run of the others previewed, each of those alone.

    The parts around such a step are previewed and confirmed like any plan.
    The step itself is checked statement by statement as it runs
    (``planner.outside``): what destroys nothing runs; it stops
    before the first statement that destroys data, which runs only once
    confirmed (``--yes``, or a person on a terminal; otherwise exit 7). A
    part that fails, or whose loss is not confirmed, stops the run, and the
    message names what earlier parts committed.
    """
    from planner.errors import Interrupted, OutsideStepLocked, OutsideStepStopped
    from planner.plan import segments

    # Each part commits on its own: a damaged file must be found before the first, not at the fifth.
    running.settings().engine.check_integrity()
    taken = running.BackupOnce(backup, announce=not as_json)
    results: list[dict] = []
    previews: list[dict] = []
    verb = "applied" if plan.direction == "apply" else "rolled back" if plan.direction == "rollback" else "done"

    def done() -> str:
        finished = [r["version"] for r in results if r["status"] != "skipped"]
        return f"{verb} before it: {', '.join(finished)}" if finished else ""

    for part in segments(plan):
        if not part.steps[0].migration.transactional:
            answers = OutsideAnswers(yes=yes, as_json=as_json)
            try:
                rows = running.execute(catalog, part, atomic=False, as_json=as_json,
                                       create=part.direction == "apply", before=taken,
                                       confirm_outside=answers, whole=plan)
                for row in rows:  # its lock findings, measured (or judged) statement by statement
                    row["findings"] = answers.findings.get(row["version"], [])
                results += rows
            except OutsideStepLocked as stopped:
                raise CommandError(f"{advice.message(stopped)}; {done() or f'no step before it was {verb} by this run'}"
                                   f". Accept them with allow = [\"code\"] in the migration or --allow CODE (--yes "
                                   f"does not), run it on a terminal to be asked, or change the migration "
                                   f"(docs/locks.md)", EXIT_LOCK_RISK) from None
            except OutsideStepStopped as stopped:
                again = ("Re-run with --yes to let it (its statements run again from the start), or run it on "
                         "a terminal to be asked")
                raise CommandError(f"{advice.message(stopped)}; {done() or f'no step before it was {verb} by this run'}. "
                                   f"{again}", EXIT_UNCONFIRMED) from None
            except Exception:
                if done():  # the error names this step; what the parts before it committed stays
                    echo(f"The parts before it were committed ({done()})", fg="yellow", err=True)
                raise
            finally:
                answers.show()
            continue
        try:
            preview = confirmed_preview(catalog, part, make_plan=None, as_json=as_json, yes=yes, sql=sql,
                                        before=taken, done=done())
        except Interrupted as interrupt:
            if not results:
                raise
            from cli.errors import interrupted_exit_code

            raise CommandError(running.interrupted_summary(plan).replace("the step that was running",
                                                                         "the part that was running"),
                               interrupted_exit_code(interrupt)) from None
        results += committed(preview, as_json)
        previews.append(preview.to_json())
    if taken.path is not None:
        running.prune_backups_after_commit()
    return {"results": results, "previews": previews,
            "backup": str(taken.path) if taken.path is not None else None}


class OutsideAnswers:
    """The command's ``outside.Confirmation``: ``--yes`` accepts, a person on a terminal is asked.

    Without either (a script, ``--json``), nothing that destroys data is
    confirmed: the step stops before that statement (exit 7). What was
    confirmed and committed is shown once the step is over, on stderr.
    """

    def __init__(self, *, yes: bool, as_json: bool):
        self.yes, self.as_json = yes, as_json
        self.destroyed: list[str] = []
        self.locked_lines: list[str] = []
        #: Per version, the lock findings its statements ran with (``--json``: the step's ``findings``).
        self.findings: dict[str, list[dict]] = {}

    def ask_locks(self, locks) -> bool:
        """Lock findings that gate: a person on a terminal may accept them; ``--yes`` never does."""
        if self.as_json or not running.stdin_is_terminal():
            return False
        echo(f"{locks.version} runs outside a transaction (transactional = False); its next statement, "
             f"`{locks.statement}`, takes locks that can hold a live database up:", fg="yellow", err=True)
        for line in locks.lines:
            echo(f"  {line}", err=True)
        return bool(confirm("Proceed?"))  # Ctrl-C: Interrupted, exit 130

    def locked(self, locks) -> None:
        self.locked_lines += locks.lines
        self.findings.setdefault(locks.version, []).extend(
            {**finding.to_json(), "statement": locks.statement, "measured": locks.measured}
            for finding in locks.findings)

    def accept(self, loss) -> bool:
        return self.yes

    def ask(self, loss) -> bool:
        if self.yes:
            return True
        if self.as_json or not running.stdin_is_terminal():
            return False
        echo(f"{loss.version} runs outside a transaction (transactional = False); its next statement, "
             f"`{loss.statement}`, destroys data:", fg="yellow", err=True)
        for line in loss.lines:
            echo(f"  {line}", err=True)
        return bool(confirm("Proceed?"))  # Ctrl-C: Interrupted, exit 130

    def committed(self, loss) -> None:
        self.destroyed += loss.lines

    def show(self) -> None:
        if self.destroyed:  # on stderr, so --json stays one document on stdout
            echo("This run destroyed data, as confirmed:", fg="yellow", err=True)
            for line in self.destroyed:
                echo(f"  {line}", err=True)
            self.destroyed = []
        if self.locked_lines:
            echo("Steps outside a transaction ran with these lock findings:", fg="yellow", err=True)
            for line in self.locked_lines:
                echo(f"  {line}", err=True)
            self.locked_lines = []
