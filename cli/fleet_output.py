"""What a fleet command prints while it runs and after: the line of progress on a terminal (``status``'s count of
files read, ``migrate``'s databases done and in flight), a line per database without one, and a run's report:
the SQL each database ran, what it destroyed as confirmed, the summary, and the failures with the command that
retries each database alone (``apm migrate``, no password, pasted anywhere)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.options import settings
from cli.output import echo, terminal_columns


def table(rows: list[list], headers: list[str]) -> str:
    """tabulate's ``simple`` layout, written directly: a thousand rows through tabulate cost more than reading
    a thousand ledgers (docs/performance.md)."""
    cells = [list(map(str, row)) for row in rows]
    widths = [max(map(len, column)) for column in zip(headers, *cells)]
    line = "  ".join(f"{{:<{width}}}" for width in widths).format  # one format per row, not a join of ljusts
    return "\n".join([line(*headers).rstrip(), "  ".join("-" * w for w in widths), *(line(*r).rstrip() for r in cells)])


def clear_line() -> None:
    """On a terminal, the progress line erased (``\\r`` and erase-line), so the next text starts at its left."""
    if sys.stderr.isatty():
        click.echo("\r\033[K", nl=False, err=True)


def waiting(locked: list, seconds: float) -> None:
    """Said once, as `apm migrate` says a wait over a second: which databases are waited for, and how long."""
    names = ", ".join(m.display for m in locked[:3]) + (f" and {len(locked) - 3} more" if len(locked) > 3 else "")
    clear_line()
    echo(f"Waiting for {len(locked)} database(s) another process holds locked, all at once (up to {seconds:g} s; "
         f"--busy-timeout): {names}", err=True)


def fitted(counts: str, names: list[str]) -> str:
    """``counts: a.db, b.db and 2 more``, cut to the terminal's width: a line that wraps is not rewritten in
    place (``\\r`` goes back to the start of its last row only), and stale rows would pile up."""
    # start-up time: cli.fleet runs without shutil until a progress line needs it
    import shutil

    width = shutil.get_terminal_size().columns - 1  # the last column would wrap on some terminals
    for shown in range(len(names), 0, -1):  # as many names as fit, the rest counted
        more = f" and {len(names) - shown} more" if shown < len(names) else ""
        line = f"{counts}: {', '.join(names[:shown])}{more}"
        if len(line) <= width:
            return line
    return counts[:width]


class StatusProgress:
    """``read 120 of 1000`` on stderr, rewritten in place, for long fleets on a terminal."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def tick(self, _status) -> None:
        self.done += 1
        if self.done % 25 == 0 or self.done == self.total:
            click.echo(f"\rread {self.done} of {self.total}", nl=False, err=True)

    def close(self) -> None:
        click.echo("\r" + " " * 30 + "\r", nl=False, err=True)


def line_per_database(event) -> None:
    """Without a terminal: one line per database as it ends (a log reads well)."""
    # start-up time: cli.fleet runs without planner.fleet.run until line_per_database() needs it
    from planner.fleet.run import MemberFinished

    if isinstance(event, MemberFinished):
        describe_outcome(event.outcome, show_sql=False, brief=True)


def describe_outcome(outcome, *, show_sql: bool, brief: bool = False) -> None:
    # start-up time: cli.fleet runs without cli.output until describe_outcome() needs it
    from cli.output import duration

    shown = [s for s in outcome.steps if s.get("status") != "skipped"]
    if outcome.outcome == "failed":  # the step that failed, not every step of its plan (the others were fine)
        shown = [s for s in shown if s.get("status") == "failed"] or shown
    steps = ", ".join(("" if s.get("direction", "apply") == "apply" or outcome.outcome == "rolled back" else
                       "roll back ") + s["version"] for s in shown)
    line = f"{outcome.member.display}: {outcome.outcome}" + (f" {steps}" if steps else "")
    if outcome.error:
        line += f": {outcome.error}"
    elif outcome.duration_ms and outcome.outcome != "nothing to do":
        line += f" ({duration(outcome.duration_ms)})"
    echo(line, fg="yellow" if outcome.outcome in ("failed", "skipped", "refused") else None)
    if brief:
        return
    for loss in outcome.loss:
        echo(f"  {loss}", fg="yellow")
    for finding in outcome.lock_findings:
        echo(f"  lock finding that stops this plan: {finding}", fg="yellow")
    if show_sql:
        for step, statements in outcome.sql.items():
            echo(f"  -- {step}: the SQL it ran")
            for statement in statements:
                echo("    " + " ".join(statement.split()).rstrip(";") + ";")


def loss_total(outcomes) -> None:
    """The loss of the plans that would commit; a plan that fails on its database commits nothing there."""
    losing = [o for o in outcomes if o.loss and o.outcome == "rehearsed"]
    failing = sum(bool(o.loss) and o.outcome != "rehearsed" for o in outcomes)
    besides = f"{failing} more whose plan fails, not counted" if failing else ""
    if losing:
        echo(f"In total: {len(losing)} database(s) would lose data ({sum(o.lost for o in losing)} row(s) or "
             f"value(s){'; ' + besides if besides else ''}).", fg="yellow")
    elif besides:
        echo(f"No plan that would commit loses data ({besides}).")
    else:
        echo("No plan loses data.")


def summary_line(result) -> str:
    return ", ".join(f"{count} {outcome}" for outcome, count in result.summary().items()) or "no databases"


def quote(text: str) -> str:
    # start-up time: cli.fleet runs without shlex until quote() needs it
    import shlex

    return shlex.quote(text)


def catalog_options() -> list[str]:
    """``--migrations-dir DIR`` (absolute) for a command printed to be pasted anywhere: a catalog the config
    file named is not found from another folder, and there the shipped catalog would be planned instead."""
    named = settings().named_catalog_dir
    return ["--migrations-dir", quote(str(Path(named).resolve()))] if named is not None else []  # no `..`


def retry_command(outcome, request) -> str:
    """The exact command that runs this one database alone, as `apm migrate` (no password in it)."""
    candidate = outcome.member
    options = settings()
    parts = ["apm", *catalog_options()]
    # A tenant as the fleet names it (``url#schema``: its search_path and its ledger schema), never a password; a
    # file by its absolute path: pasted in another folder, a relative one would name (and create) another file.
    parts += ["migrate", "--db", quote(candidate.key if candidate.on_server else candidate.real)]
    if candidate.on_server and not candidate.schema and options.ledger_schema != "public":
        parts += ["--ledger-schema", quote(options.ledger_schema)]  # given here or by the config file
    parts += [quote(flag) for flag in flags(request)]
    if outcome.unconfirmed:
        parts.append("--yes")
    return " ".join(parts)


def flags(request) -> list[str]:
    """The fleet's request as ``apm migrate`` options, for the command that retries one database alone."""
    flags: list[str] = []
    if request.to is not None:
        flags += ["--to", request.to]
    elif request.rollback is not None:
        flags += ["--rollback", request.rollback] + (["--cascade"] if request.cascade else [])
    elif request.target is not None:
        flags += ["--target", request.target]
    if not request.backup:
        flags.append("--no-backup")
    for code in request.lock_policy.allowed if request.lock_policy else ():
        flags += ["--allow", code]
    return flags


def report(result, request, resume_hint: str) -> bool:
    """The run's report after its progress; whether it showed ``resume_hint`` (on its Not started line)."""
    for outcome in result.outcomes if request.sql else ():
        if outcome.sql:
            echo(f"{outcome.member.display}: the SQL it ran")
            for step, statements in outcome.sql.items():
                echo(f"  -- {step}")
                for statement in statements:
                    echo("    " + " ".join(statement.split()).rstrip(";") + ";")
    for outcome in result.outcomes:
        if outcome.destroyed:  # as `apm migrate --yes` says it, on stderr (--json keeps it in "destroyed")
            echo(f"{outcome.member.display}: this run destroyed data, as confirmed:", fg="yellow", err=True)
            for line in outcome.destroyed:
                echo(f"  {line}", err=True)
    echo(summary_line(result))
    if result.stopped and not result.interrupted:
        # start-up time: cli.fleet runs without planner.fleet.run until report() needs it
        from planner.fleet.run import STOPPED_BY_FAILURE

        hint = " (--continue-on-error runs them all)" if result.stopped.endswith(STOPPED_BY_FAILURE) else ""
        echo(f"Stopped: {result.stopped}{hint}", fg="yellow")
    trouble = [o for o in result.outcomes if o.outcome in ("failed", "skipped", "refused")]
    if trouble:
        echo()
        # Each error's first line, cut to what the terminal leaves it: a libpq message made the table 450 columns
        # wide (--json and the journal keep it whole).
        cells = [[o.member.display, o.outcome, (o.error or "").split("\n")[0], retry_command(o, request)] for o in trouble]
        room = max(60, (terminal_columns() or 10**9) - sum(max(len(c[i]) for c in cells) for i in (0, 1, 3)) - 6)
        echo(table([c[:2] + [c[2] if len(c[2]) <= room else c[2][:room - 1] + "…", c[3]] for c in cells],
                   ["database", "outcome", "error", "retry alone with"]))
    if any(o.lock_findings for o in trouble if o.outcome == "refused"):  # not a failure that had findings too
        echo("Lock findings: accept them with allow = [\"code\"] in the migration or --allow CODE (--yes does not), "
             "or change the migration (docs/locks.md)", fg="yellow")
    not_started = sum(o.outcome == "not started" for o in result.outcomes)
    if not_started:
        echo(f"Not started: {not_started} database(s); `{resume_hint}` runs what did not succeed")
    return bool(not_started)


class RunProgress:
    """On a terminal: ``done 12, failed 1, running 2 of 50: a.db, b.db``, rewritten in place on stderr."""

    def __init__(self, total: int, asking: bool = False):
        self.total, self.done, self.failed, self.refused = total, 0, 0, 0
        self.running: list[str] = []
        #: Whether a database whose plan destroys data is asked about at the end (a person at a terminal).
        self.asking = asking

    def event(self, event) -> None:
        # start-up time: cli.fleet runs without planner.fleet.run until event() needs it
        from planner.fleet.run import MemberFinished, MemberStarted

        if isinstance(event, MemberStarted):
            self.running.append(event.member.display)
        elif isinstance(event, MemberFinished):
            name = event.outcome.member.display
            if name in self.running:
                self.running.remove(name)
            self.done += event.outcome.outcome != "not started"  # handed to a worker, never started: not done
            self.failed += event.outcome.outcome == "failed"
            self.refused += event.outcome.outcome == "refused"
            if self.asking and event.outcome.unconfirmed:  # not an outcome yet: the question at the end decides
                clear_line()
                echo(f"{name}: its plan destroys data; you are asked about it at the end, with the others: "
                     f"{'; '.join(event.outcome.loss)}", fg="yellow", err=True)
            elif event.outcome.outcome in ("failed", "skipped", "refused"):
                clear_line()
                echo(f"{name}: {event.outcome.outcome}: {event.outcome.error}", fg="yellow", err=True)
        refused = f", refused {self.refused}" if self.refused else ""
        counts = f"done {self.done}, failed {self.failed}{refused}, running {len(self.running)} of {self.total}"
        click.echo("\r\033[K" + fitted(counts, self.running), nl=False, err=True)

    def close(self) -> None:
        clear_line()
