"""``apm migrate backups`` and ``apm migrate restore``: the seed's manual restore as one command."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import settings, shared_options
from cli.output import confirm, echo, emit_json, table


def _size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"  # pragma: no cover


def _utc(moment) -> str | None:
    from datetime import timezone

    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if moment else None


@click.command("backups")
@shared_options()
@click.option("--json", "as_json", is_flag=True, help="Print the backups as JSON (see docs/commands.md).")
def backups_command(as_json: bool) -> None:
    """List the backups of the database, newest first, with size and ledger head."""
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
    rows = [[i.path.name, i.taken.strftime("%Y-%m-%d %H:%M:%S") if i.taken else "-", _size(i.size),
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
def restore_command(backup: str | None, yes: bool, as_json: bool, all_schemas: bool) -> None:
    """Restore BACKUP (default: the newest backup of the database), keeping the current content as a backup first.

    \b
    apm migrate restore                  the newest backup (SQLite: <db>.backup.*; PostgreSQL: <dbname>.*.dump)
    apm migrate restore FILE             that file (any SQLite database; any pg_dump custom archive)
    apm migrate restore --yes            without asking (scripts)
    apm migrate restore --all-schemas    PostgreSQL: the whole dump, other ledgers' schemas too
    """
    from cli import running
    from cli.errors import CommandError
    from cli.options import EXIT_UNCONFIRMED

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
    from planner.backups import ledger_difference
    from planner.ledger import TABLE

    ledger_kept = any(name.split(".")[-1] == TABLE for name in kept)
    if ledger_kept:
        restored = current  # the backup has no ledger table: the restore leaves the database's as it is
    difference = ledger_difference(current, restored)
    heads = [v for v in restored if v.isdigit()]
    head = max(heads, key=int) if heads else "none"
    echo(f"Restoring {engine.display} from {source} (ledger head {head}, {len(restored)} applied)")
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
