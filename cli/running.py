"""Running a plan from the command: parse into a request, one library call, one result told to a person.

``apm migrate`` (an apply, ``--rollback``, ``--to``) takes one way: the
options become a ``planner.request.Request`` (``request_for``), the plan is
made and refused first (``run_request``), the library runs it and returns one
``RunOutcome`` (``planner.request.run``; each fleet database takes the same
call), and this module tells it: lines or JSON, the advice for what stopped
it, or the question a person answers before the library is called again.

The lock options of a run (``--lock-timeout``, ``--statement-timeout``, ``--lock-retries``, ``--allow``).

Each option stores into the command's ``Settings`` (as the shared options
do), so the commands' own signatures stay as they are; ``lock_settings``
resolves them against the configuration file (``lock_timeout``,
``statement_timeout``, ``lock_retries``) and the defaults of
``planner.locks``. SQLite has no lock timeout of this kind: its writer
waits ``--busy-timeout`` for the write lock, and in WAL mode its readers
never wait for a writer, so these settings are not used there
(docs/locks.md).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cli import errors as advice
from cli.errors import CommandError, exit_code_for, interrupted_exit_code
from cli.options import ENGINE_HOOKS, EXIT_LOCK_RISK, EXIT_UNCONFIRMED, Settings, settings
from cli.output import Progress, confirm, duration, echo, emit_json, plan_json, printed_lines


def load_catalog(code: bool = False):
    # start-up time: cli.running runs without planner.loader until load_catalog() needs it
    from planner.loader import load_catalog as load

    # Without code, a module runs when a run needs it, before anything runs (planner.plan.refuse_empty_upgrades);
    # with code (a replay, a fleet's forked workers) every one runs now, so a broken one stops the command here.
    return load(settings().catalog_dir, deferred=not code)


def ledger_entries() -> dict:
    """What the ledger records, read without creating the database or its tables (either engine)."""
    return settings().engine.applied()


def require_database() -> None:
    """Refuse, as a database problem (exit 6), a command that needs an existing database and has none."""
    settings().engine.require()


# --------------------------------------------------------------------------
# parse -> request -> library -> one result
# --------------------------------------------------------------------------


def request_for(*, target=None, to=None, rollback=None, cascade=False, dry_run=False, sql=False, yes=False,
                backup=True, previewed=True, atomic=False):
    """The ``Request`` of a run, with the lock settings and policy of this command (options, config, defaults)."""
    # start-up time: cli.running runs without planner.request until request_for() needs it
    from planner.request import Request

    options = settings()
    return Request(target=target, to=to, rollback=rollback, cascade=cascade, dry_run=dry_run, sql=sql, yes=yes,
                   backup=backup, busy_timeout=options.busy_timeout, ledger_schema=options.ledger_schema,
                   backup_dir=str(options.backup_dir) if options.backup_dir else None,
                   keep_backups=options.keep_backups, locks=lock_settings(options), lock_policy=lock_policy(options),
                   previewed=previewed, atomic=atomic)


def run_request(request, *, as_json: bool) -> None:
    """``apm migrate``, ``--rollback V``, ``--to V``: the plan and its refusals first, then the run or the dry run."""
    # start-up time: cli.running runs without planner.plan until run_request() needs it
    from planner.plan import refuse_empty_upgrades, refuse_non_transactional

    catalog = load_catalog()
    if request.rollback is not None:
        require_database()  # a rollback on a database that is not there is a database problem (6), not "not applied"
    entries = ledger_entries()
    if request.rollback is None and request.to is None:
        warn_about_edited_files(catalog, entries)
        warn_about_missing_files(catalog, entries)
    plan = request.plan(catalog, entries)
    refuse_empty_upgrades(plan)  # before the database is opened: refused means nothing created either
    if request.atomic:
        refuse_non_transactional(plan)
    if request.dry_run:
        dry_run_report(catalog, plan, request, as_json)  # an empty plan too: the same shape
        return
    keeps_backup = request.rollback is not None or request.to is not None  # an apply takes none
    if not plan:
        if as_json:
            emit_json({**plan_json(plan), **({"backup": None} if keeps_backup else {}), "results": []})
        else:
            echo(f"Nothing to do: already at {request.to}" if request.to is not None else "Nothing to apply")
        return
    outcome = run_plan(catalog, plan, request, as_json=as_json)
    if as_json:
        told: dict[str, Any] = {"results": [row.to_json() for row in outcome.steps]}
        if request.previewed:
            told.update({"previews": [p.to_json() for p in outcome.previews]} if outcome.in_parts
                        else {"preview": outcome.previews[0].to_json()})
        if keeps_backup:
            told["backup"] = str(outcome.backup) if outcome.backup is not None else None
        emit_json({**plan_json(plan), **told})


def run_plan(catalog, plan, request, *, as_json: bool):
    """Run ``plan`` (``planner.request.run``) until it commits, asking a person when the library stops for an answer.

    Data loss is committed only when confirmed: by ``--yes`` (printed, then
    committed in the same run), or by a person on a terminal (the run was
    rolled back; the loss is shown and confirmed, then the library runs the
    plan again and commits only what was confirmed). Without either, nothing
    is committed (exit 7); lock findings stop it the same way (exit 12, and
    ``--yes`` never accepts them). A failing step commits nothing (exit 5).
    A plan with ``transactional = False`` steps runs in parts, each committed
    on its own: a refusal keeps the parts before it, and says so.
    """
    # start-up time: cli.running runs without planner until run_plan() needs it
    from planner import request as requests

    # start-up time: cli.running runs without planner.errors until run_plan() needs it
    from planner.errors import Interrupted

    watch = _Watch(plan, request, as_json)
    confirmed: list[str] | None = None
    locks_accepted: list[str] = []  # lock findings a person accepted on the terminal (--yes never does)
    outcome = None
    while True:
        try:
            outcome = requests.run(settings().engine, catalog, request,
                                   plan if outcome is None or not outcome.in_parts else None,
                                   confirmed=confirmed, locks_accepted=locks_accepted, on_event=watch.event,
                                   ask_outside=lambda loss: _ask_outside(loss, as_json),
                                   ask_outside_locks=lambda locks: _ask_outside(
                                       locks, as_json, "takes locks that can hold a live database up"), after=outcome)
        except Interrupted as interrupt:
            watch.close(committed=False)
            raise _interrupted(plan, request, watch, interrupt) from None
        watch.close(committed=outcome.committed)
        if outcome.outside_locks:  # what steps outside a transaction ran with, accepted or below the gate
            _show("Steps outside a transaction ran with these lock findings:", outcome.outside_locks)
            outcome.outside_locks = []
        if outcome.committed:
            break
        if not outcome.first_part:  # an earlier part committed: the answers were for it
            confirmed, locks_accepted = None, []
        confirmed, locks_accepted = _answer(plan, outcome, as_json, confirmed, locks_accepted)
    found = [line for p in outcome.previews for s in p.steps if s.locks is not None and not s.skipped
             for line in s.locks.lines(f"{s.version} {s.direction}")]
    if found:  # accepted, or below the gate: shown all the same (docs/locks.md), and kept in the run log
        _show("Committed with these lock findings:", found)
    if request.previewed and not outcome.in_parts:
        _tell_committed(outcome.steps, outcome.destroyed, watch)
    watch.announce()  # a run in parts that committed only skipped steps, say
    for path in outcome.pruned:
        echo(f"Removed old backup {path} (--keep-backups {request.keep_backups})", err=True)  # as restore says it
    return outcome


def _answer(plan, outcome, as_json: bool, confirmed, locks_accepted) -> tuple[list[str] | None, list[str]]:
    """Why the run stopped, told as the command's error; or, on a terminal, a person's answer to run it again."""
    # start-up time: cli.running runs without planner until _answer() needs it
    from planner import request as requests

    verb_done = _past(plan)
    done = f"{verb_done} before it: {', '.join(outcome.done)}" if outcome.in_parts and outcome.done else ""
    error = outcome.error
    if outcome.status == requests.FAILED and outcome.stopped is None:  # --no-preview, or a step outside any transaction
        if done:  # the error names this step; what the parts before it committed stays
            echo(f"The parts before it were committed ({done})", fg="yellow", err=True)
        raise error
    if outcome.status == requests.FAILED:
        failed = outcome.stopped.steps[-1]
        if failed.output:  # what it printed helps explain the failure (stderr: --json stays clean)
            echo("\n".join([f"{failed.version} {failed.description} printed, before it failed:",
                            *printed_lines(failed.output)]), err=True)
        what = getattr(error, "failure", None) if done else None  # not "the whole plan": this part
        unchanged = f"{done}; this part was rolled back" if done else "nothing was committed"
        raise CommandError(f"{what}; this part was rolled back ({done})" if what else
                           f"{advice.message(error)} ({unchanged})", exit_code_for(error))
    if outcome.stopped is None and outcome.status == requests.REFUSED:  # its statement's lock findings
        raise CommandError(f"{advice.message(error)}; {done or f'no step before it was {verb_done} by this run'}. "
                           f"Accept them with allow = [\"code\"] in the migration or --allow CODE (--yes does not), "
                           f"run it on a terminal to be asked, or change the migration (docs/locks.md)",
                           EXIT_LOCK_RISK)
    if outcome.stopped is None:  # a step outside any transaction stopped before a statement nobody confirmed
        again = ("Re-run with --yes to let it (its statements run again from the start), or run it on a terminal "
                 "to be asked")
        raise CommandError(f"{advice.message(error)}; {done or f'no step before it was {verb_done} by this run'}. "
                           f"{again}", EXIT_UNCONFIRMED)
    unchanged = f"{done}; nothing else was changed" if done else "nothing was changed"
    findings, lines = outcome.lock_findings, outcome.loss
    scripted = as_json or not stdin_is_terminal()
    if outcome.status == requests.CHANGED:  # what a person accepted is not what the plan does now
        locks = not set(findings) <= set(locks_accepted)
        now = f"the plan's lock findings are now {'; '.join(findings)}" if locks else \
            f"the plan now destroys {'; '.join(lines)}"
        raise CommandError(f"the database changed while you decided: {now}; {unchanged}. Run the command again",
                           EXIT_LOCK_RISK if locks else EXIT_UNCONFIRMED)
    if outcome.status == requests.REFUSED:
        if scripted:
            raise CommandError(f"lock findings stop this plan ({'; '.join(findings)}); {unchanged}. Accept them with "
                               f"allow = [\"code\"] in the migration or --allow CODE (--yes does not), or change the "
                               f"migration (docs/locks.md)", EXIT_LOCK_RISK)
        _ask([line for step in outcome.stopped.steps for line in step.describe() if ": lock " in line], unchanged,
             heading="This plan takes locks that can hold a live database up:", code=EXIT_LOCK_RISK)
        return confirmed, list(findings)  # run again; data loss, if any, is asked about next
    if scripted:
        raise CommandError(f"this plan destroys data ({'; '.join(lines)}); {unchanged}. "
                           f"Re-run with --yes to proceed, or with --dry-run to see the whole preview",
                           EXIT_UNCONFIRMED)
    _ask(lines, unchanged)
    return list(lines), locks_accepted


def _show(heading: str, lines) -> None:
    """A heading and its lines on stderr, so --json stays one document on stdout."""
    echo(heading, fg="yellow", err=True)
    for line in lines:
        echo(f"  {line}", err=True)


def _ask(lines: list[str], unchanged: str = "nothing was changed", heading: str = "This plan destroys data:",
         code: int = EXIT_UNCONFIRMED) -> None:
    """Show what the plan destroys and ask; anything but yes refuses (exit 7), Ctrl-C exits 130."""
    _show(heading, lines)
    if not confirm("Proceed?"):  # Ctrl-C: Interrupted, exit 130
        raise CommandError(f"not confirmed; {unchanged}", code)


def _ask_outside(found, as_json: bool, what: str = "destroys data") -> bool:
    """A statement of a step outside any transaction destroys data (or takes locks that gate): a person on a
    terminal is asked, never a script (and ``--yes`` never accepts the locks)."""
    if as_json or not stdin_is_terminal():
        return False
    _show(f"{found.version} runs outside a transaction (transactional = False); its next statement, "
          f"`{found.statement}`, {what}:", found.lines)
    return bool(confirm("Proceed?"))  # Ctrl-C: Interrupted, exit 130


def _interrupted(plan, request, watch: _Watch, interrupt: BaseException) -> BaseException:
    """Ctrl-C: the stop told from the ledger (``interrupted_summary``), or the interrupt itself (nothing committed)."""
    code = interrupted_exit_code(interrupt)
    if not request.previewed or watch.outside:
        return CommandError(interrupted_summary(plan, request.atomic and not watch.outside, watch.running), code)
    if watch.parts_done:
        return CommandError(interrupted_summary(plan).replace("the step that was running", "the part that was running"),
                            code)
    return interrupt


def _tell_committed(rows, destroyed: list[str], watch: _Watch) -> None:
    """What a committed preview did: the loss it was allowed first (on stderr), the backup, then one line a step."""
    if destroyed:
        _show("This run destroyed data, as confirmed:", destroyed)
    watch.announce()
    if watch.as_json:
        return
    for row in rows:
        if row.status == "skipped":
            echo(f"Skipped {row.version} {row.description}: {row.reason}", fg="yellow")
        else:
            echo("\n".join([f"{verb(row.direction)} {row.version} {row.description} ({duration(row.duration_ms)})",
                            *printed_lines(row.output)]))


class _Watch:
    """The library's events as a person sees them: a progress bar on a terminal, a line a step, the backup line.

    A previewed part reports nothing until it commits (a ``PartEnded``, or the
    outcome); a step committed on its own (``--no-preview``, a step outside
    any transaction) is told as it ends. ``--atomic`` holds its lines until
    the one COMMIT. What is running is kept for the Ctrl-C summary.
    """

    def __init__(self, plan, request, as_json: bool, *, rehearsal: bool = False):
        self.as_json, self.previewed, self.atomic, self.rehearsal = as_json, request.previewed, request.atomic, rehearsal
        self.tty = not as_json and sys.stdout.isatty()
        wanted = not self.previewed and len(plan) > 10 and self.tty
        self.progress = Progress(len(plan), keep_lines=not self.atomic) if wanted else None
        self.held: list[tuple[str, bool]] = []  # --atomic: nothing is applied until the one COMMIT
        self.running: Any = None  # the step under way (a planner.plan.Step), for the message when Ctrl-C stops it
        self.outside = False  # a step outside any transaction is under way (in a plan in parts)
        self.parts_done = False
        self.backup: Any = None  # a Path written, not yet told (told once something committed)

    def announce(self) -> None:
        if self.backup is not None and not self.as_json:
            echo(f"Backup written to {self.backup}")
        self.backup = None

    def event(self, event) -> None:
        # start-up time: cli.running runs without planner.events until event() needs it
        from planner.events import Replanned, StepStarted

        # start-up time: cli.running runs without planner.request until event() needs it
        from planner.request import BackupTaken, PartEnded

        if isinstance(event, BackupTaken):
            self.backup = event.path
            if not self.previewed:  # a step-by-step run keeps its copy, whatever happens next
                self.announce()
        elif isinstance(event, PartEnded):
            self._part(event)
        elif isinstance(event, Replanned):
            self._replanned(event)
        else:
            self.running = event.step if isinstance(event, StepStarted) else None
            if self.previewed and (self.rehearsal or event.step.migration.transactional):
                self._previewed(event)
            else:
                self.outside = self.previewed
                self._stepwise(event)

    def _part(self, event) -> None:
        """A part ended: a previewed one is told now; a step outside any transaction was told as it ran."""
        self.outside = False
        self.parts_done = self.parts_done or event.preview is not None or any(r.status != "skipped" for r in event.steps)
        _tell_committed(event.steps if event.preview is not None else [], event.destroyed, self)

    def _replanned(self, event) -> None:
        if self.previewed:
            echo(f"The ledger changed meanwhile (another process); planned again inside the lock: "
                 f"{len(event.plan)} step(s)", fg="yellow", err=True)
            return
        if self.atomic:  # the attempt's one transaction was rolled back: what it reported never happened
            self.held.clear()
        echo(f"The ledger changed meanwhile (another process); planned again: {len(event.plan)} step(s) left",
             fg="yellow", err=True)
        if self.progress is not None:
            self.progress.grow(len(event.plan))

    def _previewed(self, event) -> None:
        """A bar while a preview runs on a terminal, so a long plan never sits silent."""
        # start-up time: cli.running runs without planner.events until _previewed() needs it
        from planner.events import StepFinished, StepSkipped, StepStarted

        if isinstance(event, StepStarted) and self.tty:
            if self.progress is None:
                self.progress = Progress(event.total, keep_lines=False)
            self.progress.total = max(self.progress.total, event.total)
            self.progress.show(event.step)
        elif isinstance(event, (StepFinished, StepSkipped)) and self.progress is not None:
            self.progress.done("")
            if event.index == event.total:
                self.progress.close()
                self.progress = None

    def _stepwise(self, event) -> None:
        # start-up time: cli.running runs without planner.events until _stepwise() needs it
        from planner.events import StepFailed, StepFinished, StepSkipped, StepStarted

        migration = event.step.migration
        if isinstance(event, StepStarted):
            if self.progress is not None:
                self.progress.show(event.step)
            return
        if isinstance(event, StepFinished):
            line = "\n".join([f"{verb(event.step.direction)} {migration.label} ({duration(event.duration_ms)})",
                              *printed_lines(event.output)])  # what the migration printed
        elif isinstance(event, StepSkipped):
            line = f"Skipped {migration.label}: {event.reason}"
        else:
            if isinstance(event, StepFailed) and event.output:  # its output helps explain the failure
                echo("\n".join([f"{migration.label} printed, before it failed:", *printed_lines(event.output)]),
                     err=True)
            return
        if self.atomic:
            self.held.append((line, isinstance(event, StepSkipped)))
        if self.progress is not None:
            self.progress.done(line)
        elif not self.atomic and not self.as_json:
            self.announce()  # a backup, before the first line of what it is a copy from before
            echo(line, fg="yellow" if isinstance(event, StepSkipped) else None)

    def close(self, *, committed: bool) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        for line, skipped in self.held if committed and not self.as_json else ():
            echo(line, fg="yellow" if skipped else None)
        self.held = []


# --------------------------------------------------------------------------
# The dry run (--dry-run, plan --rehearse)
# --------------------------------------------------------------------------


def preview_plan(catalog, plan, request, *, as_json: bool = True):
    """The plan run in one watched transaction and rolled back, planned again inside the lock (``request``)."""
    # start-up time: cli.running runs without planner until preview_plan() needs it
    from planner import request as requests

    watch = _Watch(plan, request, as_json, rehearsal=True)
    preview = requests.run(settings().engine, catalog, request, plan, on_event=watch.event).stopped
    watch.close(committed=False)
    return preview


def dry_run_report(catalog, plan, request, as_json: bool, *, exit_on_loss: bool = True):
    """Preview and roll back: exit 7 when the plan would destroy data, 5 (or the error's code) when a step fails."""
    sql = request.sql
    preview = preview_plan(catalog, plan, request, as_json=as_json)
    report_preview(preview, plan, as_json=as_json, sql=sql)
    if preview.error is not None:
        raise CommandError(f"{preview.error} (found by the preview: nothing was committed)",
                           exit_code_for(preview.error)) from preview.error
    if (preview.loses_data or preview.unchecked) and exit_on_loss:
        click.get_current_context().exit(EXIT_UNCONFIRMED)  # a step nobody could check is not a safe plan
    # start-up time: cli.running runs without planner.request until dry_run_report() needs it
    from planner.request import gating_lines

    if exit_on_loss and gating_lines(request.lock_policy, preview):
        click.get_current_context().exit(EXIT_LOCK_RISK)  # a CI gate: lock findings not accepted
    return preview


def verb(direction: str) -> str:
    return "Applied" if direction == "apply" else "Rolled back"


def _past(plan) -> str:
    return "applied" if plan.direction == "apply" else "rolled back" if plan.direction == "rollback" else "done"


def interrupted_summary(plan, atomic: bool = False, running=None) -> str:
    """What an interrupted run left, read back from the ledger (exact even if Ctrl-C came right after a COMMIT).

    A ``transactional = False`` step has no transaction to roll back: what it did before the stop stays,
    and the message says so instead of calling the database consistent.
    """
    recorded = ledger_entries()
    applying = plan.direction == "apply"
    done = [s.version for s in plan.steps if (s.version in recorded) == (s.direction == "apply")]
    verb = _past(plan)
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


def stdin_is_terminal() -> bool:
    """Whether a person can answer a question (tests replace this to play one)."""
    return sys.stdin.isatty()


def warn_about_edited_files(catalog, entries: dict) -> None:
    """One stderr line per applied migration whose file changed since it was applied (`check --strict` fails)."""
    # start-up time: cli.running runs without planner.lint until warn_about_edited_files() needs it
    from planner.lint import CHANGED, file_states

    for version, state in file_states(catalog, entries).items():
        if state == CHANGED:
            migration = catalog.get(version)
            echo(f"Warning: {migration.path.name} changed since {migration.version} was applied; the database "
                 f"holds what the old text did (see `apm migrate check`)", fg="yellow", err=True)


def warn_about_missing_files(catalog, entries: dict) -> None:
    """One stderr line per applied version with no file in the catalog: it cannot be rolled back from here."""
    # start-up time: cli.running runs without planner.plan until warn_about_missing_files() needs it
    from planner.plan import unknown_applied

    # start-up time: cli.running runs without planner.versions until warn_about_missing_files() needs it
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


class DurationType(click.ParamType):
    """``300ms``, ``5s``, ``2min``, ``1h``; ``0`` or ``off`` for no limit (a bare number is refused)."""

    name = "DURATION"

    def convert(self, value, param, ctx):
        # start-up time: cli.running runs without planner.locks until convert() needs it
        from planner.locks import parse_duration

        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


def _store(name: str):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is not None and value != ():
            settings = ctx.ensure_object(Settings)
            if name == "allow":
                value = tuple(getattr(settings, "allow_option", ()) or ()) + tuple(value)
            setattr(settings, f"{name}_option", value)
            settings.sources[name] = f"option {param.opts[0]}"
        return value

    return callback


def _allowed(ctx: click.Context, param: click.Parameter, value):
    # start-up time: cli.running runs without planner.locks until _allowed() needs it
    from planner.locks import CODES

    for code in value or ():
        if code not in CODES:
            raise click.BadParameter(f"{code!r} is no finding code; the codes are {', '.join(CODES)}")
    return _store("allow")(ctx, param, value)


def lock_options(*, timeouts: bool = True, allow: bool = True):
    """The options of a command that runs migrations (``timeouts``), or only checks them (``--allow``); a
    restore takes the timeouts alone (it has no findings to accept)."""

    def decorate(command):
        options = []
        if timeouts:
            options += [
                click.option("--lock-timeout", type=DURATION, expose_value=False, callback=_store("lock_timeout"),
                             help="PostgreSQL: how long a step may wait for a lock before it is rolled back and "
                                  "tried again, e.g. 300ms, 5s; off for no limit [default: 2s; config lock_timeout]."),
                click.option("--statement-timeout", type=DURATION, expose_value=False,
                             callback=_store("statement_timeout"),
                             help="PostgreSQL: the longest a statement of a migration may run [default: off; "
                                  "config statement_timeout]."),
                click.option("--lock-retries", type=click.IntRange(0, 100), metavar="N", expose_value=False,
                             callback=_store("lock_retries"),
                             help="PostgreSQL: how many times a step that hit the lock timeout is tried again "
                                  "[default: 3; config lock_retries]."),
            ]
        options += [] if not allow else [
            click.option("--allow", "allow", metavar="CODE", multiple=True, expose_value=False, callback=_allowed,
                         help="Accept lock findings with this code for this run (repeatable; see docs/locks.md). "
                              "--yes never accepts them.")]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def lock_settings(settings: Settings):
    """The run's ``LockSettings``: an option, else the config file, else the default (``planner.locks``)."""
    # start-up time: cli.running runs without planner.locks until lock_settings() needs it
    from planner.locks import DEFAULT_LOCK_RETRIES, DEFAULT_LOCK_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT, LockSettings

    statement_timeout, source = _lock_setting(settings, "statement_timeout", DEFAULT_STATEMENT_TIMEOUT)
    return LockSettings(lock_timeout=_lock_setting(settings, "lock_timeout", DEFAULT_LOCK_TIMEOUT)[0],
                        statement_timeout=statement_timeout, statement_timeout_from=source,
                        retries=_lock_setting(settings, "lock_retries", DEFAULT_LOCK_RETRIES)[0])


def _lock_setting(settings: Settings, key: str, default) -> tuple[Any, str]:
    """(value, where it came from) of one lock setting: an option, else the config file, else ``default``."""
    given = getattr(settings, f"{key}_option", None)
    if given is not None:
        return given, settings.sources.get(key, "option")
    if settings.config.get(key) is not None:
        return settings.config.get(key), f"config {settings.config.path}"
    return default, "default (PostgreSQL only)"


def lock_policy(settings: Settings):
    """Which lock findings stop a run: the config file's levels and threshold, and the run's ``--allow``."""
    # start-up time: cli.running runs without planner.locks until lock_policy() needs it
    from planner.locks import DEFAULT_GATE, DEFAULT_LARGE_TABLE_ROWS, LockPolicy

    config = settings.config
    return LockPolicy(gate=config.get("lock_gate") or DEFAULT_GATE, levels=config.get("lock_levels") or {},
                      large_table_rows=config.get("large_table_rows") or DEFAULT_LARGE_TABLE_ROWS,
                      allowed=tuple(getattr(settings, "allow_option", None) or ()), advice=LOCK_ADVICE)


#: The safer way for the lock findings this command has an option for (the library's ``ADVICE`` names none).
LOCK_ADVICE = {
    # Added to the advice fitted to what ran under the lock (planner.locks.LockPolicy.accept).
    "access-exclusive-held": "what later migrations run under it waits with it: apply it in a run of its own (apm "
                             "migrate --target VERSION), or with --no-preview (each step commits on its own)",
    "validate-same-run": "VALIDATE in a later migration than the NOT VALID one, and apply that one in a run of its "
                         "own first (apm migrate --target VERSION), then apm migrate; or run with --no-preview",
    "no-lock-timeout": "set a lock timeout (--lock-timeout, lock_timeout in the config or the migration), so the "
                       "step gives up instead of queueing every reader behind it",
}


def explain_locks(settings: Settings) -> list[tuple[str, object, str]]:
    """``apm config``'s rows for the lock keys: (key, value, where it came from), as ``Settings.explain``.

    Durations are shown as the file spells them (``"2s"``, ``"off"``);
    ``lock_levels`` as a table of code = level. PostgreSQL only: SQLite
    waits ``busy_timeout`` for its write lock instead.
    """
    # start-up time: cli.running runs without planner.locks until explain_locks() needs it
    from planner.locks import (
        DEFAULT_GATE,
        DEFAULT_LARGE_TABLE_ROWS,
        DEFAULT_LOCK_RETRIES,
        DEFAULT_LOCK_TIMEOUT,
        DEFAULT_STATEMENT_TIMEOUT,
        shown_duration,
    )

    defaults = {"lock_timeout": DEFAULT_LOCK_TIMEOUT, "statement_timeout": DEFAULT_STATEMENT_TIMEOUT,
                "lock_retries": DEFAULT_LOCK_RETRIES, "lock_gate": DEFAULT_GATE, "lock_levels": {},
                "large_table_rows": DEFAULT_LARGE_TABLE_ROWS}
    rows = []
    for key, default in defaults.items():
        value, source = _lock_setting(settings, key, default)
        if key in ("lock_timeout", "statement_timeout"):
            value = shown_duration(value)
        rows.append((key, dict(value) if key == "lock_levels" else value, source))
    return rows


def configure(settings: Settings, engine) -> None:
    """Give the engine the run's lock settings (one whose statements do not queue for locks ignores them), and
    tell each retry on stderr."""
    # start-up time: cli.running runs without planner.locks until configure() needs it
    from planner.locks import listen, shown_duration

    engine.lock_settings = lock_settings(settings)
    engine.lock_policy = lock_policy(settings)

    def tell(version: str, attempt: int, attempts: int, pause: float, blocker, waited: float, note: str) -> None:
        held = f"held by {blocker.describe()}" if blocker is not None else "held by another session"
        click.echo(f"{version}: waited {shown_duration(waited)} for a lock {held}; {note}; trying again in "
                   f"{pause:.1f} s (attempt {attempt + 1} of {attempts})", err=True)

    listen(tell)


def check_locks(catalog_dir, engine, findings: list, *, measures_locks: bool) -> tuple[list, bool, dict]:
    """``apm migrate check`` on PostgreSQL: the pending plan previewed and rolled back, for its lock findings.

    The findings are measured, not guessed, so the plan has to run: as
    ``--dry-run`` runs it, in one transaction under the migration lock,
    rolled back whatever it finds. Only when there is something to measure:
    a database of an engine that ``measures_locks`` (the registry's ``EngineKind``) that exists, a catalog and history without errors
    (a plan that would be refused is not run), and pending migrations.
    Returns the findings (``scope = "locks"``), whether one gates (exit 12),
    and what was done, for the output (``previewed``, ``note``).
    """
    # start-up time: cli.running runs without planner.errors until check_locks() needs it
    from planner.errors import CatalogError, PlanError

    # start-up time: cli.running runs without planner.loader until check_locks() needs it
    from planner.loader import load_catalog

    # start-up time: cli.running runs without planner.locks until check_locks() needs it
    from planner.locks import check_findings, gating

    # start-up time: cli.running runs without planner.plan until check_locks() needs it
    from planner.plan import apply_plan, refuse_empty_upgrades

    done: dict = {"previewed": [], "passed_over": [], "note": None}
    if engine is None or not measures_locks:  # the registry's EngineKind.measures_locks
        return [], False, done
    blocking = [f for f in findings if (f.severity == "error" and f.scope == "catalog") or f.code == "no-database"]
    if blocking:
        done["note"] = f"locks not previewed: {blocking[0].code} (only a plan that would run is previewed)"
        return [], False, done
    try:
        catalog = load_catalog(catalog_dir)
        plan = apply_plan(catalog, engine.applied())
        refuse_empty_upgrades(plan)
    except (CatalogError, PlanError) as exc:
        done["note"] = f"locks not previewed: {advice.message(exc)}"
        return [], False, done
    if not plan:
        done["note"] = "locks: nothing pending, nothing previewed"
        return [], False, done
    preview = engine.runner(catalog=catalog).preview(plan, make_plan=lambda ledger: apply_plan(catalog, ledger))
    if preview.error is not None:
        raise CommandError(f"{preview.error} (found by check's lock preview: nothing was committed)",
                           exit_code_for(preview.error)) from preview.error
    # A step whose statements the preview passed over (VACUUM: it runs only outside a transaction) was not
    # measured there: counting it as previewed would claim a lock check that did not happen.
    ran = [s.version for s in preview.steps if s.locks is not None and not s.passed_over]
    passed = [f"{s.version} `{statement}`" for s in preview.steps if s.locks is not None
              for statement in s.passed_over]
    done["previewed"] = ran
    done["passed_over"] = passed
    # start-up time: cli.running runs without planner.preview until check_locks() needs it
    from planner.preview import passed_over_why

    why = " or ".join(sorted({passed_over_why(st) for s in preview.steps for st in s.passed_over}))
    left = f"; passed over (it runs only outside a transaction and {why}): {', '.join(passed)}" if passed else ""
    left += f"; not previewed (transactional = False): {', '.join(preview.not_previewed)}" \
        if preview.not_previewed else ""
    of = f" of {len(preview.plan)}" if len(ran) < len(preview.plan) else ""
    done["note"] = (f"locks: previewed {len(ran)}{of} pending step(s) in one transaction, rolled back "
                    f"({engine.display} is unchanged){left}")
    done["note"] += "".join(f"; {held['text']}" for held in preview.held_exclusive)  # it blocked readers
    return check_findings(preview.steps), bool(gating(engine.lock_policy, preview.steps)), done


ENGINE_HOOKS.append(configure)
