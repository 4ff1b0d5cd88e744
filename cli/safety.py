"""``apm migrate check`` and ``apm migrate doctor``: the lint for CI and the diagnosis for a database.

Both print one line per finding (``error  0029  unknown-dependency  <what it
means>  fix: <command>``), or ``--json``, and choose the exit status from the
findings rather than from an exception, because finding problems is their
job, not a failure: ``check`` exits 3 (EXIT_CATALOG) for catalog errors, else
4 (EXIT_REFUSED) for errors in the database's history; ``doctor`` exits 6
(EXIT_DATABASE) when anything is wrong with the database. The planner is
imported inside the commands so ``apm --help`` stays fast.

``apm migrate drift``: the live schema of one database against what its applied migrations make.

The work is the engine's ``drift`` (the replay and the comparison); this
command reads the ledger, calls it, and prints one line per difference.

``apm migrate backups`` and ``apm migrate restore``: the seed's manual restore as one command.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.options import (
    DEFAULT_DB,
    EXIT_CATALOG,
    EXIT_DATABASE,
    EXIT_DRIFT,
    EXIT_LOCK_RISK,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNCONFIRMED,
    catalog_to_write,
    settings,
    shared_options,
)
from cli.errors import CommandError
from cli.output import confirm, echo, emit_json, table
from cli import running
from cli.running import check_locks, load_catalog, lock_options

if TYPE_CHECKING:
    from planner.engines.base import Engine
    from planner.findings import Remedy


_COLOURS = {"error": "red", "warning": "yellow", "info": None}


def remedy_renderer() -> Callable[[Remedy], str]:
    """How this command spells a finding's remedy: each ``apm`` command naming the database and catalog it was
    given by option.

    A database or folder from the environment or the config file is found
    again by a pasted command; one from an option is not, and ``apm migrate``
    alone would act on the default database. A URL's password is left out:
    libpq then finds it in ``PGPASSWORD`` or ``~/.pgpass``, not on the screen.
    """
    # start-up time: cli.safety runs without planner.urls until remedy_renderer() needs it
    from planner.urls import without_password

    options = settings()
    chosen = []
    if options.sources.get("db", "").startswith("option"):
        # As given: a tenant stays ``url#schema``, which brings its ledger schema (its search_path alone would not).
        db = without_password(str(options.db_chosen)) if options.db_url else str(options.db_path)
        chosen.append(f"--db {shlex.quote(db)}")
    if options.sources.get("migrations_dir", "").startswith("option"):
        chosen.append(f"--migrations-dir {shlex.quote(str(options.catalog_dir))}")
    if options.sources.get("ledger_schema_option", "").startswith("option"):
        chosen.append(f"--ledger-schema {shlex.quote(options.ledger_schema)}")
    migrate = " ".join(["apm", *chosen, "migrate"])
    return lambda remedy: render_remedy(remedy, migrate)


def render_remedy(remedy: Remedy, migrate: str = "apm migrate") -> str:
    """The line a user pastes for ``remedy``; ``migrate`` is ``apm migrate`` with the options to repeat."""
    args = remedy.arguments
    if remedy.action == "line":
        return args[0]
    note = remedy.note
    if remedy.action == "restore" and remedy.database is not None:
        # The command must name the database to restore, however the user's was found.
        line = f"apm --db {shlex.quote(remedy.database)} migrate restore {shlex.quote(args[0])}"
    elif remedy.action == "one-run-at-a-time":
        return f"run one `{migrate}` at a time" + (f" ({note})" if note else "")
    elif remedy.action == "inspect-ledger":  # the other way out is an option of this command
        note = f"{note}; or choose another --ledger-schema" if note else "or choose another --ledger-schema"
        line = f"psql -c '\\d {args[0]}'"
    else:
        line = _REMEDIES[remedy.action](migrate, *args)
    return f"{line}  # {note}" if note else line


def _settle_outside_step(migrate: str, action: str, version: str) -> str:
    done, undo = ("--mark-applied", "upgrade") if action == "apply" else ("--mark-rolled-back", "downgrade")
    again = migrate if action == "apply" else f"{migrate} --rollback {version}"
    return (f"{migrate} {done} {version}  # only once the schema shows its whole {undo}; otherwise run `{again}` "
            f"again after undoing the partial change")


def _pg_dump(migrate: str, schema: str, file: str, url: str) -> str:
    only = f" --schema={shlex.quote(schema)}" if schema else ""  # a tenant's dump holds its schema alone
    return f"pg_dump --format=custom{only} --file {file} {shlex.quote(url)}"


#: Each action of ``planner.findings.Remedy`` (but ``line``) as this command's line, from ``apm migrate`` with
#: the options to repeat and the remedy's arguments.
_REMEDIES: dict[str, Callable[..., str]] = {
    "migrate": lambda m: m,
    "check": lambda m: f"{m} check",
    "doctor": lambda m: f"{m} doctor",
    "list": lambda m: f"{m} --list",
    "restore": lambda m, file: f"{m} restore {shlex.quote(file)}",
    "mark-applied": lambda m, version: f"{m} --mark-applied {version}",
    "baseline": lambda m, version: f"{m} --baseline {version}",
    "target": lambda m, version: f"{m} --target {version}",
    "mark-applied-or-cascade": lambda m, missing, applied: (
        f"{m} --mark-applied {missing}  # if its changes are in the schema; otherwise "
        f"{m} --rollback {applied} --cascade"),
    "settle-outside-step": _settle_outside_step,
    "renumber": lambda m, moves: f"{moves}  # or: {m} check --fix",
    "make-catalog": lambda m, folder: f"mkdir -p {folder}  # or pass --migrations-dir",
    "restore-file": lambda m, folder, version: (
        f"git log --all -- '{folder}/migration_{version}.*' '{folder}/migration_{version}_*'  # restore the file "
        f"from history"),
    "rebuild-invalid-index": lambda m, index: (
        f"psql -c 'DROP INDEX CONCURRENTLY {index}', then run the migration that builds it again ({m}; "
        f"first {m} --mark-rolled-back V only if the ledger records it as applied)"),
    "no-preview": lambda m: (f"{m} --no-preview, one DDL statement per migration; compare the ledger with the "
                             f"schema after a failure"),
    "pg-dump": _pg_dump,
}


def _name_the_config(findings: list, options) -> list:
    """A missing catalog folder that the config file named says so, as an error about it would (``cli.config``)."""
    # start-up time: cli.safety runs without dataclasses until _name_the_config() needs it
    from dataclasses import replace

    # start-up time: cli.safety runs without cli.config until _name_the_config() needs it
    from cli.config import from_config

    note = from_config(options, "migrations_dir") if any(f.code == "catalog-not-found" for f in findings) else None
    if not note:
        return findings
    return [replace(f, message=f.message + note) if f.code == "catalog-not-found" else f for f in findings]


def _print_findings(findings: list, render: Callable[[Remedy], str]) -> None:
    for finding in findings:
        echo(finding.describe(render), fg=_COLOURS.get(finding.severity))


def _summary(findings: list) -> str:
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = sum(1 for f in findings if f.severity == "warning")
    return f"{errors} error(s), {warnings} warning(s)"


def check_exit_code(findings: list, strict: bool = False, locks_gate: bool = False) -> int:
    """3 when the catalog has errors, else 4 when the history has errors, else 12 when a lock finding gates
    (``locks_gate``: the policy's ``lock_gate`` decides, not ``strict``), else 0; ``strict`` counts warnings."""
    failing = {"error", "warning"} if strict else {"error"}
    scopes = {f.scope for f in findings if f.severity in failing and f.scope != "locks"}
    if "catalog" in scopes:
        return EXIT_CATALOG
    if scopes:
        return EXIT_REFUSED
    return EXIT_LOCK_RISK if locks_gate else EXIT_OK


@click.command("check")
@shared_options()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--strict", is_flag=True, help="Fail on warnings too (implied dependencies, missing downgrades).")
@click.option("--fix", is_flag=True, help="Renumber files that share a version, after showing the changes.")
@click.option("--yes", "-y", is_flag=True, help="With --fix: make the changes without asking (needed in scripts).")
@lock_options()
def check_command(as_json: bool, strict: bool, fix: bool, yes: bool) -> None:
    """Lint the migrations: catalog errors, implied dependencies, missing downgrades, edited applied files.

    The database's history is checked too when --db is given, or when the
    default database exists. On PostgreSQL, pending migrations are previewed
    in one transaction that is rolled back, for their lock findings. Exit
    status: 0 clean, 3 catalog errors, 4 history errors (with --strict,
    warnings count as errors), 12 lock findings at or above lock_gate. With --fix,
    files sharing a version are renumbered first (shown, then asked; --yes
    in scripts), and the check runs on the result.
    """
    # start-up time: cli.safety runs without planner.lint until check_command() needs it
    from planner.lint import check_catalog

    options = settings()
    catalog_dir = options.catalog_dir
    # The history is checked in the database named, or in the default one when it is there.
    # A default path that is there but no file is refused by the engine (exit 6), as a named one is.
    engine = options.engine if options.db_chosen is not None or DEFAULT_DB.exists() else None
    if yes and not fix:
        raise click.UsageError("--yes only makes sense with --fix")
    if fix:
        catalog_dir = catalog_to_write("apm migrate check --fix")
        _fix_shared_versions(catalog_dir, yes, engine)
    # A DatabaseError exits 6 through the root group (an unreachable server too; a missing database is empty).
    findings = check_catalog(catalog_dir, engine)
    render = remedy_renderer()
    findings = _name_the_config(findings, options)
    # start-up time: cli.safety runs without planner.engines until check_command() needs it
    from planner.engines import kind_of

    measures = kind_of(options.db_url or options.db_path).measures_locks
    lock_findings, locks_gate, locks = check_locks(catalog_dir, engine, findings, measures_locks=measures)
    findings += lock_findings
    shown = engine.display if engine is not None else None
    code = check_exit_code(findings, strict, locks_gate)
    if as_json:
        emit_json({
            "catalog": str(catalog_dir),
            "database": shown,
            "strict": strict,
            "exit_code": code,
            "errors": sum(1 for f in findings if f.severity == "error"),
            "warnings": sum(1 for f in findings if f.severity == "warning"),
            "findings": [f.to_json(render) for f in findings],
            "locks": locks,
        })
    else:
        _print_findings(findings, render)
        if locks["note"]:
            echo(locks["note"])
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
    findings = options.engine.diagnose(options.catalog_dir)
    render = remedy_renderer()
    shown = options.db_display
    healthy = not any(f.severity == "error" for f in findings)
    code = EXIT_OK if healthy else EXIT_DATABASE
    if as_json:
        emit_json({
            "database": shown,
            "catalog": str(options.catalog_dir),
            "healthy": healthy,
            "exit_code": code,
            "findings": [f.to_json(render) for f in findings],
        })
    else:
        _print_findings(findings, render)
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
    # start-up time: cli.safety runs without planner.loader until _fix_shared_versions() needs it
    from planner.loader import migration_files

    # start-up time: cli.safety runs without planner.renumber until _fix_shared_versions() needs it
    from planner.renumber import apply_renumbering, plan_renumbering

    # start-up time: cli.safety runs without planner.errors until _fix_shared_versions() needs it
    from planner.errors import DuplicateVersion

    if not catalog_dir.is_dir():
        return  # the check reports the missing folder
    files, problems = migration_files(catalog_dir)
    taken = [*files, *(v for p in problems for v in p.versions)]
    ledger = engine.applied_if_exists() if engine is not None else None
    fleet = _fleet_ledgers() if engine is None and any(isinstance(p, DuplicateVersion) for p in problems) else None
    for applied in [ledger or {}, *(fleet or {}).values()]:
        taken += list(applied)  # the versions a ledger holds are taken too
    plan = plan_renumbering(problems, taken, ledger, engine.display if engine is not None else None, fleet=fleet)
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
        if not running.stdin_is_terminal():
            raise CommandError("check --fix changes files: re-run with --yes to make these changes; nothing was "
                               "changed", EXIT_UNCONFIRMED)
        if not confirm("Make these changes?"):
            raise CommandError("not confirmed; nothing was changed", EXIT_UNCONFIRMED)
    apply_renumbering(plan.changes)
    echo(f"Renumbered {len(plan.changes)} file(s)", err=True)


def _fleet_ledgers() -> dict[str, dict] | None:
    """Each ledger of the config file's ``fleet`` (name -> applied rows), when it names one and no --db was given:
    which file of a shared version ran is the fleet's to say, not the first file's by name."""
    patterns = settings().config.get("fleet")
    if not patterns:
        return None
    # start-up time: cli.safety runs without planner.fleet.members until a fleet is asked
    from planner.fleet.members import discover

    # start-up time: cli.safety runs without planner.errors until a fleet is asked
    from planner.errors import DatabaseError

    ledgers: dict[str, dict] = {}
    for member in discover(configured=patterns):
        try:
            ledgers[member.display] = member.engine(busy_timeout=settings().busy_timeout).applied_if_exists() or {}
        except DatabaseError as error:
            raise CommandError(f"check --fix asks every database of the config file's fleet which file of a shared "
                               f"version ran, and {member.display} cannot be read ({error}); nothing was changed: "
                               f"make it readable, or name the one database to ask with --db", EXIT_DATABASE) from None
    return ledgers


@click.command("drift")
@shared_options()
@click.option("--json", "as_json", is_flag=True, help='Print {"differences": [{"object", "kind", "detail"}]}.')
@click.pass_context
def drift_command(ctx: click.Context, as_json: bool) -> None:
    """Compare the schema with its applied migrations replayed in a scratch database. Writes nothing.

    Pending migrations are not drift: only what the ledger says is applied
    is replayed. Exit 0 when the schema is what its migrations make, 10 when
    it differs (one line per difference).
    """
    options = settings()
    engine = options.engine
    engine.require()  # no database: exit 6, nothing created
    catalog = load_catalog(code=True)  # the replay runs the code
    applied = engine.applied()
    differences = engine.drift(catalog, applied, {})
    if as_json:
        emit_json({"differences": [d.to_json() for d in differences]})
    elif differences:
        for difference in differences:
            echo(difference.line, fg="yellow")
        echo(f"{options.db_display}: {len(differences)} difference(s) from its {len(applied)} applied migration(s)")
    elif not applied:  # a tenant whose schema is not made yet has no objects: nothing to compare, not drift
        echo(f"{options.db_display}: nothing is applied yet, so there is nothing to compare")
    else:
        echo(f"{options.db_display}: the schema is what its {len(applied)} applied migration(s) make")
    if differences:
        ctx.exit(EXIT_DRIFT)


def _utc(moment) -> str | None:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if moment else None


@click.command("backups")
@shared_options()
@click.option("--json", "as_json", is_flag=True, help="Print the backups as JSON (see docs/commands.md).")
def backups_command(as_json: bool) -> None:
    """List the backups of the database, newest first, with size and ledger head."""
    # start-up time: cli.safety runs without planner.findings until backups_command() needs it
    from planner.findings import size_text

    engine = settings().engine
    infos = engine.backups.described()
    if as_json:
        emit_json([{"name": i.path.name, "path": str(i.path), "taken": _utc(i.taken), "size_bytes": i.size,
                    "head": i.head, "applied": None if i.applied is None else len(i.applied),
                    "problem": i.problem} for i in infos])
        return
    if not infos:
        echo(f"No backups of {engine.display} ({engine.backups.names})")
        return
    rows = [[i.path.name, i.taken.strftime("%Y-%m-%d %H:%M:%S") if i.taken else "-", size_text(i.size, ("bytes", "KiB", "MiB", "GiB")),
             (i.head or "-") if i.problem is None else f"unreadable: {i.problem}",
             "-" if i.applied is None else str(len(i.applied))] for i in infos]
    echo(table(rows, ["backup", "taken", "size", "ledger head", "applied"]))


@click.command("restore")
@shared_options()
@click.argument("backup", required=False)
@click.option("--yes", "-y", is_flag=True, help="Restore without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON (needs --yes).")
@click.option("--all-schemas", is_flag=True,
              help="PostgreSQL: restore everything the dump holds, other schemas' ledgers (other tenants, other "
                   "projects) too; without it a tenant restores its own schema alone, and a script refuses a "
                   "dump holding other ledgers (exit 7).")
@lock_options(allow=False)
def restore_command(backup: str | None, yes: bool, as_json: bool, all_schemas: bool) -> None:
    """Restore BACKUP (default: the newest backup of the database), keeping the current content as a backup first.

    \b
    apm migrate restore                  the newest backup (SQLite: <db>.backup.*; PostgreSQL: <dbname>.*.dump)
    apm migrate restore FILE             that file (any SQLite database; any pg_dump custom archive)
    apm migrate restore --yes            without asking (scripts)
    apm migrate restore --all-schemas    PostgreSQL: the whole dump, other ledgers' schemas too
    """
    if backup is not None and not backup.strip():
        raise click.UsageError("BACKUP is empty; name a backup file, or leave it out to restore the newest "
                               "backup of the database (`apm migrate backups` lists them)")
    options = settings()
    engine = options.engine
    db = engine.display
    source = Path(backup) if backup is not None else engine.backups.newest()
    restored = engine.backups.check(source)  # refuses an unusable file before anything is asked
    current = engine.applied()  # a missing SQLite file reads as {}; a missing server database is refused
    kept = engine.backups.left_in_place(source, all_schemas=all_schemas)
    others = engine.backups.other_ledgers(source, all_schemas=all_schemas)
    overwritten = [] if all_schemas else engine.backups.ledgers_in_backup(source)

    if not as_json:
        _describe_restore(engine, source, current, restored, kept)
        for schema in others:
            echo(f"  also puts back the ledger in schema {schema} (and that project's tables) as the backup has "
                 f"it; its runners are not locked out, so restore when none of them runs", fg="yellow")
    scripted = yes or as_json or not running.stdin_is_terminal()
    if overwritten and scripted:
        raise CommandError(f"{source.name} also holds the ledger in schema(s) {', '.join(overwritten)}, which "
                           f"restoring it would put back too; nothing was changed. Re-run with --all-schemas to "
                           f"restore the whole database", EXIT_UNCONFIRMED)
    if not yes:
        if scripted:
            raise CommandError(f"restoring replaces the content of {db} with {source}; nothing was changed. "
                               f"Re-run with --yes to restore", EXIT_UNCONFIRMED)
        if not confirm("Restore the whole database, those ledgers too?" if overwritten else "Restore?"):
            raise CommandError("not confirmed; nothing was changed", EXIT_UNCONFIRMED)

    result = engine.backups.restore(source, all_schemas=all_schemas)
    # Never the backup just restored from: it is the state the user chose, and the safety backup is the other one.
    pruned = (engine.backups.prune(options.keep_backups, options.backup_dir, spare=(source,))
              if options.keep_backups else [])
    if as_json:
        emit_json({"database": str(result.database), "backup": str(source), "safety_backup":
                   str(result.safety_backup) if result.safety_backup else None,
                   "unapplied": list(result.difference.unapplied), "reapplied": list(result.difference.reapplied),
                   "left_in_place": kept, "other_ledgers": others, "pruned": [str(p) for p in pruned]})
        return
    if result.safety_backup:
        echo(f"Kept the database as it was in {result.safety_backup}")
    echo(f"Restored {db} from {source}")
    for path in pruned:
        echo(f"Removed old backup {path} (--keep-backups {options.keep_backups})")


def _describe_restore(engine, source: Path, current: dict, restored: dict, kept: list[str]) -> None:
    """What the restore brings back and takes away, in ledger terms, before asking."""
    # start-up time: cli.safety runs without planner.backups until _describe_restore() needs it
    from planner.backups import ledger_difference

    # start-up time: cli.safety runs without planner.ledger until _describe_restore() needs it
    from planner.ledger import TABLE

    ledger_kept = any(name.split(".")[-1] == TABLE for name in kept)
    if ledger_kept:
        restored = current  # the backup has no ledger table: the restore leaves the database's as it is
    difference = ledger_difference(current, restored)
    heads = [v for v in restored if v.isdigit()]
    head = max(heads, key=int) if heads else "none"
    echo(f"Restoring {engine.display} from {source} (ledger head {head}, {len(restored)} applied)")
    echo("  replaces the data too: rows written since the backup was taken are lost from the database (the copy of "
         "it as it is now, taken first, holds them)", fg="yellow")
    if not engine.backups.is_own(source):
        echo(f"  note: {source.name} is not named as a backup of {engine.backups.short_name} ({engine.backups.names}); "
             f"it passed the backup check, so it can be restored")
    if not engine.exists():
        echo(f"  {engine.display} does not exist; it will be created from the backup")
    for version in difference.unapplied:
        entry = current[version]
        echo(f"  un-applies {version} {entry.description or ''}".rstrip() + " (applied now, not in the backup)")
    for version in difference.reapplied:
        entry = restored[version]
        echo(f"  brings back {version} {entry.description or ''}".rstrip() + " (in the backup, not applied now)")
    if ledger_kept:
        echo("  the ledger stays as it is (the backup has no ledger table); table contents may still differ")
    elif not difference:
        echo("  the ledger is the same in both; table contents may still differ")
    if kept:
        echo(f"  keeps {', '.join(kept)} (not in the backup, so the restore leaves them in place; drop them "
             f"yourself if they belong to the un-applied migrations)", fg="yellow")
