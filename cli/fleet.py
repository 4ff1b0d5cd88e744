"""``apm fleet status|plan|migrate``: many databases at once (``planner.fleet`` does the work).

The databases are named by ``--glob PATTERN`` (repeatable), ``--list FILE``
or the config file's ``fleet = [...]``; the catalog is loaded once for all
of them. Each database keeps its own lock, ledger and backups: one
database's failure is a row in the report, never a reason to touch another.
``apm fleet migrate`` is in ``cli.fleet_run``; the shared options in
``cli.fleet_options``.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cli.locking import lock_options
from cli.options import EXIT_ATTENTION, EXIT_DRIFT, EXIT_REFUSED, settings, shared_options
from cli.output import echo, emit_json
from cli.fleet_options import (
    FleetGroup,
    check_request,
    discover_members,
    fleet_options,
    jobs_of,
    load_fleet_catalog,
    make_request,
    request_options,
    table,
)


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
    from planner.fleet.status import DRIFTED, fleet_status

    members = discover_members(globs, lists)
    catalog = load_fleet_catalog()
    options = settings()
    checker = None
    if drift:
        from planner.schema_drift import DriftChecker

        checker = DriftChecker(catalog, busy_timeout=options.busy_timeout, ledger_schema=options.ledger_schema)
    progress = _StatusProgress(len(members)) if not as_json and sys.stderr.isatty() and len(members) > 20 else None
    result = fleet_status(members, catalog, busy_timeout=options.busy_timeout, ledger_schema=options.ledger_schema,
                          drift=checker.differences if checker else None,
                          on_member=progress.tick if progress else None, jobs=jobs)
    if progress is not None:
        progress.close()
    if as_json:
        emit_json(result.to_json())
    else:
        read = lambda s, count: count if s.applied_versions is not None else "-"  # noqa: E731 (unread: unknown, not 0)
        rows = [[s.member.display, s.shown_state, read(s, s.applied), read(s, s.pending), ", ".join(s.heads) or "-",
                 s.last_applied_at or "-", s.error or ""] for s in result.members]
        echo(table(rows, ["database", "state", "applied", "pending", "head", "last applied at", "note"]))
        if checker is not None:
            for s in result.members:
                for difference in s.differences or ():
                    echo(f"{s.member.display}: {difference.line}", fg="yellow")
        echo(result.summary_line())
    if result.needs_attention:
        only_drift = all(s.state in (DRIFTED,) for s in result.members if s.needs_attention)
        ctx.exit(EXIT_DRIFT if only_drift else EXIT_ATTENTION)


class _StatusProgress:
    """``read 120 of 1000`` on stderr, rewritten in place, for long fleets on a terminal."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def tick(self, _status) -> None:
        self.done += 1
        if self.done % 25 == 0 or self.done == self.total:
            click.echo(f"\rread {self.done} of {self.total}", nl=False, err=True)

    def close(self) -> None:
        click.echo("\r" + " " * 30 + "\r", nl=False, err=True)


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
    catalog = load_fleet_catalog()
    request = make_request(target=target, to=to, rollback=rollback, cascade=cascade, dry_run=True, sql=sql)
    if rehearse or sql:
        from cli.fleet_run import rehearse as rehearse_plans

        rehearse_plans(ctx, catalog, request, members, jobs=jobs_of(jobs), as_json=as_json)
        return
    from planner.errors import MigrationError, NotApplied, PlanError
    from planner.fleet.ledgers import Unreadable, read_ledger

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
            from planner.fleet.run import one_line

            rows.append((candidate, None, one_line(error)))
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
