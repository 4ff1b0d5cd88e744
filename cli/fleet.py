"""``apm fleet status|plan|migrate``: many databases at once (``planner.fleet`` does the work).

The databases are named by ``--glob PATTERN`` (repeatable), ``--list FILE``
or the config file's ``fleet = [...]``; the catalog is loaded once for all
of them. Each database keeps its own lock, ledger and backups: one
database's failure is a row in the report, never a reason to touch another.

In order: what the commands share (the fleet's options, the request, the
catalog), ``status`` and ``plan``, then ``migrate`` (and the rehearsals of
``plan --rehearse``): run, resume. The work is
``planner.fleet.run.FleetRun``; this module decides what a person is asked
(one question for every loss) and turns Ctrl-C into "start nothing new";
what they see (progress, the report, the failures with the command that
retries each alone) is ``cli.fleet_output``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from cli.options import (
    EXIT_ATTENTION,
    EXIT_DRIFT,
    EXIT_LOCK_RISK,
    EXIT_REFUSED,
    EXIT_UNCONFIRMED,
    STATE,
    VERSION,
    settings,
    shared_options,
)
from cli.fleet_output import (
    RunProgress,
    StatusProgress,
    catalog_options,
    clear_line,
    describe_outcome,
    line_per_database,
    loss_total,
    quote,
    report,
    summary_line,
    table,
    waiting,
)
from cli.output import echo, emit_json
from cli.running import lock_options


def fleet_options(command):
    """``--glob`` and ``--list``: which databases form the fleet."""
    command = click.option("--list", "lists", multiple=True, metavar="FILE",
                           help="A file naming one database a line (a path or a URL; # starts a comment). "
                                "Repeatable.")(command)
    command = click.option("--glob", "globs", multiple=True, metavar="PATTERN",
                           help="Databases matching PATTERN, relative to this folder (~ expanded, ** recursive; "
                                "quote it). Repeatable. Default: fleet = [...] in the config file.")(command)
    return command


def discover_members(globs: tuple[str, ...], lists: tuple[str, ...]):
    # start-up time: cli.fleet runs without planner.fleet.members until discover_members() needs it
    from planner.fleet.members import discover

    found = discover(globs=globs, lists=lists, configured=_configured(globs, lists), order=_given_order(globs, lists))
    schema, given = settings().ledger_schema, settings().ledger_schema_option
    tenant = next((m for m in found if given is not None and m.schema not in (None, given)), None)
    if tenant is not None:  # as `apm migrate --db URL#tenant --ledger-schema other` refuses it
        raise click.UsageError(f"--ledger-schema {given!r} cannot apply to {tenant.display}: a tenant keeps its "
                               f"ledger in its own schema ({tenant.schema!r}); drop --ledger-schema, or the tenant")
    return found if schema == "public" else [member.with_ledger(schema) for member in found]


def _configured(globs: tuple[str, ...], lists: tuple[str, ...]):
    """The config's ``fleet`` patterns, which name the fleet when neither --glob nor --list does."""
    return settings().config.get("fleet") or () if not (globs or lists) else ()


#: Where ``FleetGroup`` leaves the ``--glob``/``--list`` values in the order they were given.
_ORDER = "apm.fleet.sources"


class FleetGroup(click.Group):
    """``apm fleet``: remembers the order of ``--glob`` and ``--list`` on its command's line.

    click hands each option its values apart, so ``--list a.txt --glob 'p/*'``
    would reach the library as "globs, then lists"; the first spelling of a
    database given twice (a symlink, ``./a`` and ``a``) is the one its row
    shows, and that must be the first one the user gave.
    """

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta[_ORDER] = _scan_sources(rest)
        _refuse_expanded_glob(rest)
        return name, command, rest


def _refuse_expanded_glob(args: list[str]) -> None:
    """A pattern the shell expanded (``--glob projects/*/x.db`` unquoted) reaches us as one ``--glob`` followed by
    the other matches; click would only call them unexpected arguments. No fleet command takes an argument."""
    for index, token in enumerate(args[:-2]):
        if token == "--":
            return
        if token == "--glob" and not args[index + 2].startswith("-"):
            raise click.UsageError(f"--glob {args[index + 1]} is followed by {args[index + 2]}, which no option takes: "
                                   f"the shell expanded the pattern; quote it (--glob 'projects/*/.aipm/data/aipm.db')")


def _scan_sources(args: list[str]) -> list[tuple[str, str]]:
    found = []
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            break
        for kind in ("glob", "list"):
            if token == f"--{kind}":
                value = next(tokens, None)
                if value is not None:
                    found.append((kind, value))
            elif token.startswith(f"--{kind}="):
                found.append((kind, token.split("=", 1)[1]))
    return found


def _given_order(globs: tuple[str, ...], lists: tuple[str, ...]) -> list[tuple[str, str]] | None:
    """The command line's order of ``globs`` and ``lists``; ``None`` (globs first) when it cannot be told."""
    context = click.get_current_context(silent=True)
    order = context.meta.get(_ORDER) if context is not None else None
    if order is None:
        return None
    wanted = sorted([("glob", g) for g in globs] + [("list", str(item)) for item in lists])
    return order if sorted(order) == wanted else None  # a value the scan misread: the options decide


def load_fleet_catalog(code: bool = True):
    # start-up time: cli.fleet runs without cli.running until load_fleet_catalog() needs it
    from cli.running import load_catalog

    # With code, every module runs now, before any database is read or a worker forked (each inherits them).
    return load_catalog(code=code)


def jobs_of(jobs: int | None) -> int:
    """``--jobs`` or the number of cores this process may use."""
    if jobs:
        return jobs
    # start-up time: cli.fleet runs without os until jobs_of() needs it
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------
# apm fleet plan


def request_options(command):
    """What ``apm migrate`` takes to choose a plan: ``--target``, ``--to``, ``--rollback V --cascade``."""
    for option in reversed([
        click.option("--target", type=VERSION, help="Apply only VERSION and the migrations it needs."),
        click.option("--to", "to", type=STATE, help="Bring each database to VERSION's state (both ways; `base`)."),
        click.option("--rollback", type=VERSION, help="Roll back VERSION where it is applied."),
        click.option("--cascade", is_flag=True, help="With --rollback: roll back the applied dependents first."),
        click.option("--sql", is_flag=True, help="Also show the SQL each step ran (`fleet plan`: rehearses the plan to see it)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document (see docs/commands.md)."),
    ]):
        command = option(command)
    return command


def check_request(target, to, rollback, cascade) -> None:
    if cascade and rollback is None:
        raise click.UsageError("--cascade only makes sense with --rollback VERSION")
    if sum(v is not None for v in (target, rollback, to)) > 1:
        raise click.UsageError("--target, --rollback and --to cannot be used together; choose one")


def make_request(*, target=None, to=None, rollback=None, cascade=False, dry_run=False, sql=False, yes=False,
                 backup=True):
    """The request every database runs, as `apm migrate` makes its own (``cli.running.request_for``)."""
    # start-up time: cli.fleet runs without cli.running until make_request() needs it
    from cli.running import request_for

    return request_for(target=target, to=to, rollback=rollback, cascade=cascade, dry_run=dry_run, sql=sql, yes=yes,
                       backup=backup)


@click.group("fleet", cls=FleetGroup)
@shared_options()
def fleet() -> None:
    """Many databases at once: status, plan and staged, parallel, resumable runs.

    \b
    apm fleet status --glob '~/projects/*/.aipm/data/aipm.db'
    apm fleet status --drift --json
    apm fleet plan --list databases.txt
    apm fleet migrate --canary 2 --jobs 4
    apm fleet migrate --resume

    Each database keeps its own lock, ledger and backups; one database's
    failure never changes another. See docs/many-databases.md.
    """


# --------------------------------------------------------------------------
# apm fleet status
# --------------------------------------------------------------------------


@fleet.command("status")
@shared_options()
@fleet_options
@click.option("--drift", is_flag=True,
              help="Also compare each schema with its applied migrations, replayed in a scratch database.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Read N ledgers at a time (SQLite reads are quick; helps most for PostgreSQL servers).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (see docs/commands.md).")
@click.pass_context
def status_command(ctx: click.Context, globs: tuple[str, ...], lists: tuple[str, ...], drift: bool, jobs: int,
                   as_json: bool) -> None:
    """One row per database: its state, applied and pending counts, head, last applied at. Writes nothing.

    Exit 0 when every database is up to date, 11 when any needs attention
    (behind, ahead, failed, locked, unreadable...), 10 with --drift when a
    schema differs from its migrations and nothing else needs attention.
    """
    # start-up time: cli.fleet runs without planner.fleet.status until status_command() needs it
    from planner.fleet.status import DriftChecker, fleet_status

    members = discover_members(globs, lists)
    catalog = load_fleet_catalog(code=drift)  # the replay runs the code
    options = settings()
    checker = None
    if drift:
        checker = DriftChecker(catalog, busy_timeout=options.busy_timeout, ledger_schema=options.ledger_schema)
    progress = StatusProgress(len(members)) if not as_json and sys.stderr.isatty() and len(members) > 20 else None
    result = fleet_status(members, catalog, busy_timeout=options.busy_timeout, ledger_schema=options.ledger_schema,
                          drift=checker.differences if checker else None,
                          on_member=progress.tick if progress else None, jobs=jobs, on_wait=waiting)
    if progress is not None:
        progress.close()
    if as_json:
        emit_json(result.to_json())
    else:
        rows = [[s.member.display, s.shown_state, *((str(s.applied), str(s.pending)) if s.applied_versions is not None
                                                     else ("-", "-")),  # unread: unknown, not 0
                 ", ".join(s.heads) or "-", s.last_applied_at or "-", _note(s)] for s in result.members]
        echo(table(rows, ["database", "state", "applied", "pending", "head", "last applied at", "note"]))
        if checker is not None:
            for s in result.members:
                for difference in s.differences or ():
                    echo(f"{s.member.display}: {difference.line}", fg="yellow")
        echo(result.summary_line())
        edited = sum(bool(s.edited) for s in result.members)
        if edited:
            echo(f"Warning: {edited} database(s) applied migrations whose file changed since; each holds what the "
                 f"old text did (their notes name the versions; `apm migrate check --db DB` says more)",
                 fg="yellow", err=True)
    if result.needs_attention:
        ctx.exit(EXIT_DRIFT if result.only_drift else EXIT_ATTENTION)


def _note(status) -> str:
    """The row's note: why it is in its state, and the applied files edited since they ran."""
    edited = status.edited and f"file changed since applied: {', '.join(status.edited)}"
    return f"{status.error}; {edited}" if status.error and edited else status.error or edited or ""


# --------------------------------------------------------------------------
# apm fleet plan
# --------------------------------------------------------------------------


@fleet.command("plan")
@shared_options()
@fleet_options
@request_options
@click.option("--rehearse", "--preview", "rehearse", is_flag=True,
              help="Also run each plan in a transaction, report what it changes and destroys, roll back.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --rehearse: databases at a time [default: the number of cores].")
@lock_options(timeouts=False)
@click.pass_context
def plan_command(ctx: click.Context, globs, lists, target, to, rollback, cascade, sql, as_json, rehearse,
                 jobs) -> None:
    """What `apm fleet migrate` would run on each database, changing nothing.

    Databases with the same plan are shown together. With --rehearse (or
    --sql) each plan runs in a transaction that is rolled back, and what it
    would destroy is shown per database and in total (exit 7 when any plan
    destroys data), with the lock findings that would stop it (exit 12; --allow
    CODE accepts them). Exit 11 when a database cannot be planned, 4 when every
    one that cannot is refused by the planner (as `apm migrate plan` is).
    """
    check_request(target, to, rollback, cascade)
    members = discover_members(globs, lists)
    catalog = load_fleet_catalog(code=rehearse or sql)  # a rehearsal runs the code
    request = make_request(target=target, to=to, rollback=rollback, cascade=cascade, dry_run=True, sql=sql)
    if rehearse or sql:

        rehearse_plans(ctx, catalog, request, members, jobs=jobs_of(jobs), as_json=as_json)
        return
    # start-up time: cli.fleet runs without planner.errors until plan_command() needs it
    from planner.errors import MigrationError, NotApplied, PlanError

    # start-up time: cli.fleet runs without planner.fleet.status until plan_command() needs it
    from planner.fleet.status import Unreadable, read_ledger

    rows: list[tuple[Any, list[tuple[str, str, str]] | None, str | None]] = []  # (member, its steps, why not)
    refused: set = set()  # the members whose plan the planner refuses (`apm migrate plan`: exit 4)
    for candidate in members:
        try:
            reading = read_ledger(candidate, request.busy_timeout, request.ledger_schema)
            steps = [(s.version, s.direction, s.migration.description)
                     for s in request.plan(catalog, reading.entries)]
            rows.append((candidate, steps, None))
        except NotApplied:
            rows.append((candidate, [], None))
        except (Unreadable, MigrationError) as error:
            if isinstance(error, PlanError):
                refused.add(candidate)
            # start-up time: cli.fleet runs without planner.fleet.run until plan_command() needs it
            from planner.fleet.run import one_line

            rows.append((candidate, None, candidate.named(one_line(error))))
    if as_json:
        emit_json({"databases": [{"db": m.display, "steps": [{"version": v, "direction": d, "description": t}
                                                              for v, d, t in steps] if steps is not None else None,
                                  "error": error, "refused": m in refused} for m, steps, error in rows]})
    else:
        groups: dict[tuple, list] = {}
        for candidate, found, problem in rows:
            if problem is None and found is not None:  # a member planned without error has its steps
                groups.setdefault(tuple(found), []).append(candidate)
        for planned, group in groups.items():
            what = ", ".join(f"{'apply' if d == 'apply' else 'roll back'} {v}" for v, d, _ in planned) or \
                "nothing to do"
            echo(f"{len(group)} database(s): {what}")
            for candidate in group[:10]:
                echo(f"  {candidate.display}")
            if len(group) > 10:
                echo(f"  ... and {len(group) - 10} more")
        for candidate, _steps, problem in rows:
            if problem is not None:
                why = "refused" if candidate in refused else "cannot be planned"
                echo(f"{candidate.display}: {why}: {problem}", fg="yellow")
    problems = [m for m, _s, error in rows if error is not None]
    if problems:
        ctx.exit(EXIT_REFUSED if all(m in refused for m in problems) else EXIT_ATTENTION)


def rehearse_plans(ctx, catalog, request, members, *, jobs: int, as_json: bool) -> None:
    # start-up time: cli.fleet runs without planner.fleet.run until rehearse_plans() needs it
    from planner.fleet.run import FleetRun

    runner = FleetRun(catalog, request, jobs=jobs, continue_on_error=True)
    progress = RunProgress(len(members)) if not as_json and sys.stderr.isatty() else None
    runner.on_event = progress.event if progress else None
    result = runner.run(members)
    if progress:
        progress.close()
    if as_json:
        emit_json(result.to_json())
    else:
        for outcome in result.outcomes:
            describe_outcome(outcome, show_sql=request.sql)
        loss_total(result.outcomes)
        echo(summary_line(result))
    trouble = exit_code(result)
    if trouble:  # a database that could not be rehearsed: why, before what the others would do
        ctx.exit(trouble)
    if any(o.loss for o in result.outcomes):
        ctx.exit(EXIT_UNCONFIRMED)
    if any(o.lock_findings for o in result.outcomes):
        ctx.exit(EXIT_LOCK_RISK)  # as `apm migrate --dry-run`: lock findings not accepted


# --------------------------------------------------------------------------
# apm fleet migrate
# --------------------------------------------------------------------------


@click.command("migrate")
@shared_options()
@fleet_options
@request_options
@click.option("--dry-run", is_flag=True, help="Run each plan in a transaction, report, roll back (exit 7 on loss).")
@click.option("--yes", "-y", is_flag=True, help="Confirm plans that destroy data (what they destroy is printed).")
@click.option("--no-backup", is_flag=True, help="With --rollback or --to: skip each database's backup.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="Databases at a time [default: the number of cores].")
@click.option("--canary", metavar="K|PATTERN",
              help="Run the first K databases (or those matching PATTERN) alone first; the rest only if all "
                   "succeeded (0: no canary).")
@click.option("--continue-on-error", is_flag=True, help="Keep starting databases after one failed.")
@click.option("--resume", is_flag=True,
              help="Run only what the last run (its journal) did not finish, with that run's request and options "
                   "(--yes may be added).")
@click.option("--journal-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Folder of the run journals [default: .apm-fleet beside the config file, or here].")
@click.option("--journal", "journal_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --resume: the run file to continue [default: the newest of this fleet].")
@lock_options()
@click.pass_context
def migrate_command(ctx: click.Context, globs, lists, target, to, rollback, cascade, sql, as_json, dry_run, yes,
                    no_backup, jobs, canary, continue_on_error, resume, journal_dir, journal_file) -> None:
    """Apply (or roll back) on every database: N at a time, canaries first, journaled, resumable.

    Each database runs as `apm migrate` runs it: its plan from its own
    ledger, previewed in one transaction, committed only if it destroys no
    data or what it destroys is confirmed (--yes, or one answer on a
    terminal covering exactly what was shown), a backup before a rollback.
    After a failure no further database starts (--continue-on-error). Each
    outcome is appended to a journal as it ends; --resume runs only what did
    not succeed. Ctrl-C starts no further database and lets the running
    ones finish. Lock findings stop a database as they stop `apm migrate`
    (--allow CODE accepts them; --yes does not); a plan `apm migrate` refuses
    is `refused`, and stops no other database. Exit 0 when every database
    succeeded, 11 otherwise (7 when the only reason is a loss not confirmed,
    4 when it is the planner's refusal, 12 when it is lock findings).
    """
    # start-up time: cli.fleet runs without planner.fleet.journal until migrate_command() needs it
    from planner.fleet import journal as journals

    # start-up time: cli.fleet runs without planner.fleet.members until migrate_command() needs it
    from planner.fleet.members import identity, resolve_keys

    # start-up time: cli.fleet runs without planner.fleet.run until migrate_command() needs it
    from planner.fleet.run import FleetRun, canaries

    check_request(target, to, rollback, cascade)
    if journal_file and not resume:
        raise click.UsageError("--journal names the run file --resume continues; give --resume with it")
    folder = Path(journal_dir) if journal_dir else _journal_folder()
    catalog = load_fleet_catalog()
    fleet_named = identity(catalog.directory, globs=globs, lists=lists, configured=_configured(globs, lists))
    past, waive_canaries = None, False
    if resume:
        given = [name for name, value in (("--target", target), ("--to", to), ("--rollback", rollback),
                                          ("--cascade", cascade), ("--no-backup", no_backup), ("--dry-run", dry_run),
                                          ("--sql", sql), ("--jobs", jobs), ("--canary", canary))
                 if value not in (None, False)]
        given += [source.removeprefix("option ") for name, source in settings().sources.items()
                  if source.startswith("option ") and name in _RECORDED]
        if given:
            raise click.UsageError(f"--resume repeats the request the journal recorded; give no {', '.join(given)} "
                                   f"with it (only --yes and --continue-on-error may be added)")
        named = discover_members(globs, lists) if fleet_named["named_by"] else None
        past = journals.read(Path(journal_file)) if journal_file else \
            journals.resumable(folder, fleet_named, {m.key for m in named} if named is not None else None)
        recorded = past.header.get("request", {})
        target, to, rollback = recorded.get("target"), recorded.get("to"), recorded.get("rollback")
        cascade, no_backup = bool(recorded.get("cascade")), not recorded.get("backup", True)
        yes, sql = yes or bool(recorded.get("yes")), bool(recorded.get("sql"))
        run = past.header.get("options", {})
        # --continue-on-error may be added: without it, a database that fails every time would stop every resume.
        jobs, canary = run.get("jobs"), run.get("canary")
        waive_canaries = continue_on_error  # added now: run them all, no canary stage
        continue_on_error = continue_on_error or bool(run.get("continue_on_error"))
        _restore_settings(recorded)
        members = _resumed_members(past, named)
    else:
        members = discover_members(globs, lists)
    resolve_keys(members)  # the journal names each by its key: resolved together, each shared folder asked once
    request = make_request(target=target, to=to, rollback=rollback, cascade=cascade, dry_run=dry_run, sql=sql,
                           yes=yes, backup=not no_backup)
    jobs = jobs_of(jobs)
    if dry_run:
        rehearse_plans(ctx, catalog, request, members, jobs=jobs, as_json=as_json)
        return
    if canary is not None and not canary.strip():  # an empty value (a script's unset variable) is never "no canary"
        raise click.UsageError("--canary is empty; give a number of databases (0: no canary) or a pattern")
    if past is not None:
        # The first run's canaries, by key: those not yet succeeded run first again. Chosen afresh from the
        # unfinished databases, whichever failed first would be a canary of every resume and stop the rest.
        first_run = canaries([_recorded(m) for m in past.header.get("members", [])], canary)
        keys = set() if waive_canaries else {m.key for m in first_run}
        first = [m for m in members if m.key in keys]
    else:
        first = canaries(members, canary)
        if canary and not first and not canary.isdigit():  # --canary 0: no canary phase
            raise click.UsageError(f"--canary {canary!r} names no database of the fleet")
    if past is not None:
        journal = journals.Journal(past.path)
        journal.write({"type": "resume", "at": journals.now(), "skipping": len(past.succeeded()),
                       "members": len(members)})
    else:
        before = journals.runs(folder)
        journal = journals.Journal.start(folder, {"request": request.to_json(), "catalog": str(catalog.directory),
                                                  "fleet": fleet_named,
                                                  "options": {"jobs": jobs, "canary": canary,
                                                              "continue_on_error": continue_on_error},
                                                  "members": [_journal_member(m) for m in members]})
        journals.prune(folder, spare=before[-1] if before else None)
    # start-up time: cli.fleet runs without cli.running until a run asks whether a person answers
    from cli.running import stdin_is_terminal

    asking = not (yes or as_json or not stdin_is_terminal())
    runner = FleetRun(catalog, request, jobs=jobs, continue_on_error=continue_on_error, journal=journal,
                      confirm=_confirm_loss if asking else None)
    progress = RunProgress(len(members), asking=asking) if not as_json and sys.stderr.isatty() else None
    runner.on_event = progress.event if progress else (None if as_json else line_per_database)
    try:
        with _stopping_on_interrupt(runner) as stopping:
            result = runner.run(members, canary=first)
    finally:
        if progress:
            progress.close()
        journal.close(interrupted=runner.interrupted)
    # A new run in which every database had nothing to do leaves nothing to resume or to read: no journal.
    kept = past is not None or runner.interrupted or not journals.idle([o.outcome for o in result.outcomes],
                                                                       len(members))
    if not kept:
        journal.discard()
    # This run's file, and this folder (its relative patterns, lists and config): pasted anywhere, it continues
    # this run only, never that folder's newest run of the catalog (docs/many-databases.md, Resuming).
    resume_hint = " ".join([f"cd {quote(str(Path.cwd()))} && apm", *catalog_options(), "fleet migrate --resume",
                            f"--journal {quote(str(journal.path.absolute()))}",
                            *(f"--glob {quote(g)}" for g in globs), *(f"--list {quote(f)}" for f in lists)])
    shown = False  # the resume command, on the report's Not started line
    if as_json:
        emit_json({**result.to_json(), "journal": str(journal.path.absolute()) if kept else None})
    else:
        shown = report(result, request, resume_hint)
        # Absolute, as the resume command names it: a --journal given relative is printed as every run's is.
        echo(f"Journal: {journal.path.absolute()}" if kept else "Journal: none kept (every database had nothing "
             "to do)")
    if result.interrupted:
        # start-up time: cli.fleet runs without cli.errors until migrate_command() needs it
        from cli.errors import CommandError

        # The command once: the report's Not started line names it already, where there is one.
        rest = "the command on the Not started line above finishes the rest" if shown else \
            f"run `{resume_hint}` to finish"
        raise CommandError(f"interrupted: no further database was started; the running ones finished and are "
                           f"recorded; {rest}", 128 + stopping.signum)  # 130, 143: SIGTERM
    ctx.exit(exit_code(result))


def exit_code(result) -> int:
    """0 when every database succeeded (or was rehearsed); when every one that did not has the same one problem,
    the code `apm migrate` gives it: 7 it only lacks a confirmation, 4 the planner refused it (a rollback
    through a migration without a downgrade...), 12 lock findings stopped it; 11 otherwise (a failure, a
    database not started, or different problems: commands.md)."""
    trouble = [o for o in result.outcomes if not (o.succeeded or o.outcome == "rehearsed")]
    if not trouble:
        return 0
    if all(o.unconfirmed for o in trouble):
        return EXIT_UNCONFIRMED
    if all(o.plan_refused for o in trouble):
        return EXIT_REFUSED
    if all(o.outcome == "refused" and o.lock_findings for o in trouble):
        return EXIT_LOCK_RISK
    return EXIT_ATTENTION


#: The settings a journal records with the request: given again with --resume, they conflict with it.
_RECORDED = ("busy_timeout", "lock_timeout", "statement_timeout", "lock_retries", "allow")


def _restore_settings(recorded: dict) -> None:
    """The journal's busy timeout and lock options, as if given again (``make_request`` reads the settings)."""
    options = settings()
    if recorded.get("busy_timeout") is not None:
        options.busy_timeout = recorded["busy_timeout"]
    for name in ("lock_timeout", "statement_timeout", "lock_retries"):
        if recorded.get(name) is not None:
            setattr(options, f"{name}_option", recorded[name])
    if recorded.get("allow"):
        options.allow_option = tuple(recorded["allow"])


def _journal_folder() -> Path:
    # start-up time: cli.fleet runs without planner.fleet.journal until _journal_folder() needs it
    from planner.fleet.journal import FOLDER

    config = settings().config
    return (config.path.parent if config.path is not None else Path.cwd()) / FOLDER


def _journal_member(candidate) -> dict:
    """A member as the journal keeps it: never a password (a URL's key is the URL without it)."""
    return {"db": candidate.display, "key": candidate.key, "open": candidate.key if candidate.on_server else
            candidate.real}


def _recorded(entry: dict):
    """A journal's member as ``canaries`` matches it: its spelling as shown, the path or URL it opened, its key."""
    # start-up time: cli.fleet runs without types until _recorded() needs it
    from types import SimpleNamespace

    return SimpleNamespace(display=entry["db"], real=entry["open"], key=entry["key"])


def _resumed_members(past, named) -> list:
    """The members of the journal's run that did not succeed; of ``named`` (--glob/--list, the config) when the
    fleet was named (passwords)."""
    # start-up time: cli.fleet runs without planner.fleet.members until _resumed_members() needs it
    from planner.fleet.members import member

    done = past.succeeded()
    if named is not None:
        wanted = {m["key"] for m in past.header.get("members", [])}
        candidates = [m for m in named if m.key in wanted]
    else:
        # start-up time: cli.fleet runs without dataclasses until _resumed_members() needs it
        from dataclasses import replace

        recorded = past.header.get("members", [])  # a file keeps the spelling it was given
        candidates = [replace(found, db=m["db"]) if not found.on_server else found
                      for m in recorded for found in [member(m["open"])]]
    return [m for m in candidates if m.key not in done]


def _confirm_loss(outcomes) -> bool:
    """One question for every database whose plan destroys data: each one's loss, then the total."""
    # start-up time: cli.fleet runs without cli.output until _confirm_loss() needs it
    from cli.output import confirm

    clear_line()  # the progress line, not left in front of the question
    echo(f"These plans destroy data ({len(outcomes)} database(s)); the others run so far are done:", fg="yellow", err=True)
    for outcome in outcomes:
        echo(f"  {outcome.member.display}:", err=True)
        for line in outcome.loss:
            echo(f"    {line}", err=True)
    echo(f"  in total: {sum(o.lost for o in outcomes)} row(s) or value(s) in {len(outcomes)} database(s)", err=True)
    return confirm("Proceed on these databases?")


class _stopping_on_interrupt:
    """Ctrl-C (or SIGTERM) during a fleet run: start no further database, let the running ones finish.

    With ``--jobs 1`` a second Ctrl-C interrupts the database running in this process (its open
    transaction is rolled back); with workers, the command keeps waiting: a worker ignores Ctrl-C and
    finishing its database is what keeps that database's record.
    """

    def __init__(self, runner) -> None:
        self.runner = runner
        self.previous: dict = {}
        #: The first signal that stopped the run (the exit code is 128 + it, as the shell counts).
        self.signum = 2  # SIGINT, for a stop that came another way (a KeyboardInterrupt in the pool's wait)

    def __enter__(self):
        # start-up time: cli.fleet runs without signal until __enter__() needs it
        import signal

        alone = self.runner.jobs == 1

        def handler(signum, frame):
            if self.runner.interrupted and alone:
                # start-up time: cli.fleet runs without planner.errors until handler() needs it
                from planner.errors import Interrupted

                raise Interrupted(signum)  # the step running here is rolled back
            # On a terminal the line takes the progress line's place (and the ^C the terminal echoed there); the
            # progress goes on below it. Elsewhere it starts a line of its own.
            start = "\r\033[K" if sys.stderr.isatty() else "\n"
            if self.runner.interrupted:
                click.echo(f"{start}Still waiting for the running databases: each is one transaction in its own "
                           "process, and finishing it is what keeps its record", err=True)
                return
            self.signum = int(signum)
            self.runner.stop()
            click.echo(f"{start}Stopping: no further database will be started; the running ones finish"
                       + (" (Ctrl-C again to interrupt it: its open transaction is rolled back)" if alone else ""),
                       err=True)

        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread
            pass
        return self

    def __exit__(self, *exc):
        # start-up time: cli.fleet runs without signal until __exit__() needs it
        import signal

        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False


