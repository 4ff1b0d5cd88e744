"""``apm migrate check`` and ``apm migrate doctor``: the lint for CI and the diagnosis for a database.

Both print one line per finding (``error  0029  unknown-dependency  <what it
means>  fix: <command>``), or ``--json``, and choose the exit status from the
findings rather than from an exception, because finding problems is their
job, not a failure: ``check`` exits 3 (EXIT_CATALOG) for catalog errors, else
4 (EXIT_REFUSED) for errors in the database's history; ``doctor`` exits 6
(EXIT_DATABASE) when anything is wrong with the database. The planner is
imported inside the commands so ``apm --help`` stays fast.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.options import DEFAULT_DB, EXIT_CATALOG, EXIT_DATABASE, EXIT_OK, EXIT_REFUSED, settings, shared_options
from cli.output import confirm, echo, emit_json

if TYPE_CHECKING:
    from planner.engines.base import Engine

_COLOURS = {"error": "red", "warning": "yellow", "info": None}


_APM = re.compile(r"\bapm (?=migrate\b|status\b|agents\b)")


def for_this_database(findings: list) -> list:
    """The findings, their ``apm`` commands naming the database and catalog this command was given by option.

    A database or folder from the environment or the config file is found
    again by a pasted command; one from an option is not, and ``apm migrate``
    alone would act on the default database. A URL's password is left out:
    libpq then finds it in ``PGPASSWORD`` or ``~/.pgpass``, not on the screen.
    """
    from dataclasses import replace

    from planner.engines.urls import without_password

    options = settings()
    chosen = []
    if options.sources.get("db", "").startswith("option"):
        db = without_password(options.db_url) if options.db_url else str(options.db_path)
        chosen.append(f"--db {shlex.quote(db)}")
    if options.sources.get("migrations_dir", "").startswith("option"):
        chosen.append(f"--migrations-dir {shlex.quote(str(options.catalog_dir))}")
    if options.sources.get("ledger_schema_option", "").startswith("option"):
        chosen.append(f"--ledger-schema {shlex.quote(options.ledger_schema)}")
    if not chosen:
        return findings
    prefix = f"apm {' '.join(chosen)} "
    return [replace(f, fix=_APM.sub(prefix, f.fix)) if f.fix else f for f in findings]


def _name_the_config(findings: list, options) -> list:
    """A missing catalog folder that the config file named says so, as an error about it would (``cli.config``)."""
    from dataclasses import replace

    from cli.config import from_config

    note = from_config(options, "migrations_dir") if any(f.code == "catalog-not-found" for f in findings) else None
    if not note:
        return findings
    return [replace(f, message=f.message + note) if f.code == "catalog-not-found" else f for f in findings]


def _print_findings(findings: list) -> None:
    for finding in findings:
        echo(finding.describe(), fg=_COLOURS.get(finding.severity))


def _summary(findings: list) -> str:
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = sum(1 for f in findings if f.severity == "warning")
    return f"{errors} error(s), {warnings} warning(s)"


def check_exit_code(findings: list, strict: bool = False) -> int:
    """3 when the catalog has errors, else 4 when the history has errors, else 0; ``strict`` counts warnings."""
    failing = {"error", "warning"} if strict else {"error"}
    scopes = {f.scope for f in findings if f.severity in failing}
    if "catalog" in scopes:
        return EXIT_CATALOG
    if scopes:
        return EXIT_REFUSED
    return EXIT_OK


@click.command("check")
@shared_options()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--strict", is_flag=True, help="Fail on warnings too (implied dependencies, missing downgrades).")
@click.option("--fix", is_flag=True, help="Renumber files that share a version, after showing the changes.")
@click.option("--yes", "-y", is_flag=True, help="With --fix: make the changes without asking (needed in scripts).")
def check_command(as_json: bool, strict: bool, fix: bool, yes: bool) -> None:
    """Lint the migrations: catalog errors, implied dependencies, missing downgrades, edited applied files.

    The database's history is checked too when --db is given, or when the
    default database exists. Exit status: 0 clean, 3 catalog errors, 4
    history errors (with --strict, warnings count as errors). With --fix,
    files sharing a version are renumbered first (shown, then asked; --yes
    in scripts), and the check runs on the result.
    """
    from planner.lint import check_catalog

    options = settings()
    catalog_dir = options.catalog_dir
    # The history is checked in the database named, or in the default one when it is there.
    # A default path that is there but no file is refused by the engine (exit 6), as a named one is.
    engine = options.engine if options.db_chosen is not None or DEFAULT_DB.exists() else None
    if yes and not fix:
        raise click.UsageError("--yes only makes sense with --fix")
    if fix:
        from cli.writable import catalog_to_write

        catalog_dir = catalog_to_write("apm migrate check --fix")
        _fix_shared_versions(catalog_dir, yes, engine)
    # A DatabaseError exits 6 through the root group (an unreachable server too; a missing database is empty).
    findings = for_this_database(check_catalog(catalog_dir, engine))
    findings = _name_the_config(findings, options)
    shown = engine.display if engine is not None else None
    code = check_exit_code(findings, strict)
    if as_json:
        emit_json({
            "catalog": str(catalog_dir),
            "database": shown,
            "strict": strict,
            "exit_code": code,
            "errors": sum(1 for f in findings if f.severity == "error"),
            "warnings": sum(1 for f in findings if f.severity == "warning"),
            "findings": [f.to_json() for f in findings],
        })
    else:
        _print_findings(findings)
        where = f"{catalog_dir}" + (f" and {shown}" if shown else "")
        echo(f"{where}: {_summary(findings)}" if findings else f"{where}: no problems found",
             fg="green" if code == EXIT_OK else None)
    click.get_current_context().exit(code)


@click.command("doctor")
@shared_options()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor_command(as_json: bool) -> None:
    """Diagnose the database: integrity, foreign keys, the ledger against the files, backups.

    Read-only: the database is opened with mode=ro and never changed. Each
    problem comes with the command that fixes it. Exit status 0 when healthy,
    6 when something is wrong with the database.
    """
    options = settings()
    findings = for_this_database(options.engine.diagnose(options.catalog_dir))
    shown = options.db_display
    healthy = not any(f.severity == "error" for f in findings)
    code = EXIT_OK if healthy else EXIT_DATABASE
    if as_json:
        emit_json({
            "database": shown,
            "catalog": str(options.catalog_dir),
            "healthy": healthy,
            "exit_code": code,
            "findings": [f.to_json() for f in findings],
        })
    else:
        _print_findings(findings)
        if healthy:
            echo(f"{shown}: healthy ({_summary(findings)})", fg="green")
        else:
            echo(f"{shown}: {_summary(findings)}", fg="red")
    click.get_current_context().exit(code)


def _fix_shared_versions(catalog_dir: Path, yes: bool, engine: Engine | None) -> None:
    """Show the renumbering ``check`` suggests for shared versions, ask (or need --yes), then make it.

    The file whose checksum the database's ledger holds keeps its version;
    when the ledger cannot tell, nothing is renamed (exit 4). The changes go
    to stderr, so ``--json`` still prints one document.
    """
    from cli.errors import CommandError
    from cli.options import EXIT_UNCONFIRMED
    from cli.running import stdin_is_terminal
    from planner.loader import migration_files
    from planner.renumber import apply_renumbering, plan_renumbering

    if not catalog_dir.is_dir():
        return  # the check reports the missing folder
    files, problems = migration_files(catalog_dir)
    taken = [*files, *(v for p in problems for v in p.versions)]
    ledger = engine.applied_if_exists() if engine is not None else None
    taken += list(ledger or ())  # the versions its ledger holds are taken too
    plan = plan_renumbering(problems, taken, ledger, engine.display if engine is not None else None)
    if plan.undecided:
        reasons = "; ".join(f"version {u.version}: {u.reason}" for u in plan.undecided)
        raise CommandError(f"check --fix cannot choose which file keeps a shared version: {reasons}. Nothing was "
                           f"changed: rename the file(s) that did not run yourself (`apm migrate check` shows the "
                           f"free versions)", EXIT_REFUSED)
    if not plan.changes:
        echo("Nothing to fix: no two files share a version", err=True)
        return
    echo("Files sharing a version will be renumbered; once renumbered they are pending and `apm migrate` WILL run "
         "them:", fg="yellow", err=True)
    for version, reason in plan.reasons.items():
        echo(f"  {version}: {reason}", err=True)
    for change in plan.changes:
        echo(f"  {change.describe()}", err=True)
    if not yes:
        if not stdin_is_terminal():
            raise CommandError("check --fix changes files: re-run with --yes to make these changes; nothing was "
                               "changed", EXIT_UNCONFIRMED)
        if not confirm("Make these changes?"):
            raise CommandError("not confirmed; nothing was changed", EXIT_UNCONFIRMED)
    apply_renumbering(plan.changes)
    echo(f"Renumbered {len(plan.changes)} file(s)", err=True)
