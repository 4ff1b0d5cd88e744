"""What the ``apm fleet`` commands share: the fleet's options, the request, the catalog, and a table.

Kept apart from the commands so ``cli.fleet`` (status, plan) and
``cli.fleet_run`` (migrate) use one definition without importing each other.
"""

from __future__ import annotations

import click

from cli.options import STATE, VERSION, settings


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
    from planner.fleet.members import discover

    configured = settings().config.get("fleet") or () if not (globs or lists) else ()
    return discover(globs=globs, lists=lists, configured=configured, order=_given_order(globs, lists))


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
        return name, command, rest


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


def load_fleet_catalog():
    from cli.running import load_catalog

    return load_catalog()


def jobs_of(jobs: int | None) -> int:
    """``--jobs`` or the number of cores this process may use."""
    if jobs:
        return jobs
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def table(rows: list[list], headers: list[str]) -> str:
    """tabulate's ``simple`` layout, written directly: a thousand rows through tabulate cost more than reading
    a thousand ledgers (docs/performance.md)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in cells)])


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
    from cli.running import request_for

    return request_for(target=target, to=to, rollback=rollback, cascade=cascade, dry_run=dry_run, sql=sql, yes=yes,
                       backup=backup)