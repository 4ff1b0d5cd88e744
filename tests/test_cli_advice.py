"""The command's advice for each library error: the line a person reads is the library's fact plus what to do.

Each expected line is the text the library's error said itself before its
advice moved to ``cli.errors`` (issue 23): what a person sees did not change,
while ``str(error)``, what a program embedding the planner reads, names no
``apm`` command and no option.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli.errors import message
from planner import errors as E
from planner import errors as G
from planner.errors import StepLocked
from planner.locks import LockSettings

d = Path("/tmp")
f = Path("/tmp/nope.db")

CASES = [
    (E.DatabaseLocked(f, 5),
     "database /tmp/nope.db stayed locked by another process for 5 s; nothing was changed. Wait for it to finish and retry, or raise --busy-timeout"),
    (E.DatabaseLocked("postgresql://h/db", 2.5, migration_lock=True),
     "another apm process has held the migration lock on postgresql://h/db for more than 2.5s; nothing was changed. Wait for it to finish and retry, or raise --busy-timeout"),
    (E.DatabaseNotFound(f),
     "database /tmp/nope.db does not exist; run `apm migrate` to create it, or pass --db"),
    (E.DatabaseDirectoryMissing(Path("/nope/x.db")),
     "folder /nope for database x.db does not exist; create it or pass another --db"),
    (E.NotADatabase(d),
     "/tmp is a folder, not a database file; pass the database file's path with --db"),
    (E.NotADatabase(f),
     "/tmp/nope.db is not a SQLite database; check the --db path"),
    (E.DatabaseDamaged(f, "malformed"),
     "database /tmp/nope.db is damaged (malformed); the transaction that met it was rolled back and nothing after it ran. Restore it from a backup with `apm migrate restore` (`apm migrate backups` lists them), or see `apm migrate doctor`"),
    (E.DatabaseDamaged(f, "x", checked_first=True),
     "database /tmp/nope.db is damaged (x); found before anything ran; nothing was changed. Restore it from a backup with `apm migrate restore` (`apm migrate backups` lists them), or see `apm migrate doctor`"),
    (E.ForeignLedger(f, ["a", "b"], ["v1", "v2"]),
     "/tmp/nope.db has a schema_migrations table made by another tool (columns: a, b; apm knows v1, v2); nothing was changed. Point --db at APM's database, or move that table aside (ALTER TABLE schema_migrations RENAME TO ...) if you mean to switch tools"),
    (E.ForeignLedger("pg://x", ["a"], [], reason="why", table="t"),
     "pg://x has a t table made by another tool (columns: a; why); nothing was changed. Point --db at APM's database, or move that table aside (ALTER TABLE t RENAME TO ...) if you mean to switch tools"),
    (E.NoAgentsTable(f),
     "database /tmp/nope.db has no agents table yet; run `apm migrate` first"),
    (E.StepUnderWay(f, "0003", "pid 5", 3),
     "migration 0003 runs outside a transaction in another process (pid 5), still after 3 s; nothing of it was run here. Wait for that process to finish and retry, or raise --busy-timeout; if it is gone, `apm migrate doctor` says what to check"),
    (E.UnusableBackup(f, "bad", database=f),
     "cannot restore /tmp/nope.db: bad; nothing was changed. Choose another backup (`apm migrate backups` lists them)"),
    (E.NoBackups(f),
     "no backup of /tmp/nope.db exists (nope.db.backup.*); nothing was changed. Name a backup file: apm migrate restore FILE"),
    (E.NoBackups(f, "x.*"),
     "no backup of /tmp/nope.db exists (x.*); nothing was changed. Name a backup file: apm migrate restore FILE"),
    (E.MigrationNotFound("0009"),
     "migration 0009 is not in the catalog; see `apm migrate --list` for versions"),
    (E.RollbackRefused("0001", ["0002", "0003"], ["0003", "0002", "0001"]),
     "cannot roll back 0001: applied migration(s) 0002, 0003 depend on it; nothing was changed. To roll back 0003 then 0002 then 0001, run `apm migrate --rollback 0001 --cascade`"),
    (E.RollbackRefused("0001", ["0002"], ["0002", "0001"], ["0002"]),
     "cannot roll back 0001: applied migration(s) 0002 depend on it; nothing was changed. A cascade cannot help: migration(s) 0002 define no downgrade(conn). Restore from a backup instead, or add a downgrade"),
    (E.RollbackRefused("0001", ["0002"], ["0002", "0001"], ["0002"], {"0002": "lossy"}),
     "cannot roll back 0001: applied migration(s) 0002 depend on it; nothing was changed. A cascade cannot help: 0002 is irreversible (\"lossy\"). Restore from a backup instead"),
    (E.MissingFileInScope("0002", ["0005"], d),
     "cannot roll back 0002: 0005 is recorded as applied, not before it, but its file is missing from /tmp (migration_0005_*), so apm cannot tell whether it depends on what this rollback removes; nothing was changed. Restore the file from version control (git log --diff-filter=D -- /tmp), or, if its changes are already undone by hand, `apm migrate --mark-rolled-back 0005`"),
    (E.MissingFileInScope("0002", ["0005", "0006"], d, to=True),
     "cannot move to 0002 (--to): 0005, 0006 are recorded as applied, not before what that rolls back, but their files are missing from /tmp (migration_0005_*, migration_0006_*), so apm cannot tell whether they depend on what this rollback removes; nothing was changed. Restore the file from version control (git log --diff-filter=D -- /tmp), or, if its changes are already undone by hand, `apm migrate --mark-rolled-back 0005` and `apm migrate --mark-rolled-back 0006`"),
    (E.DependenciesNotApplied("0004", ["0002", "0003"]),
     "cannot apply 0004: its dependencies 0002, 0003 are not applied; nothing was changed. Apply them first, or run `apm migrate --target 0004`"),
    (E.InconsistentHistory([("0029", "0027"), ("1", "2")]),
     "inconsistent history: 0029 is applied but its dependency 0027 is not (and 1 more); nothing was changed. Either roll back 0029 (`apm migrate --rollback 0029 --cascade`), or, if 0027's changes are already in the schema, record it with `apm migrate --mark-applied 0027`"),
    (E.MarkAppliedRefused("0004", ["0002", "0003"]),
     "cannot mark 0004 as applied: its dependencies 0002, 0003 are not applied; nothing was recorded. Apply them first (`apm migrate --target 0002`), or mark them applied first if their changes are already in the schema"),
    (E.BaselineRefused("0004", ["0001"]),
     "cannot baseline at 0004: the ledger already records 0001; nothing was recorded. A baseline is for a database apm has not migrated yet; here use `apm migrate --mark-applied V` for what is missing (see `apm migrate --show-applied`)"),
    (E.NonTransactionalInAtomic(["0003"]),
     "cannot run this plan with --atomic: migration(s) 0003 declare transactional = False and must run outside any transaction; nothing was changed. Run without --atomic (each step then commits on its own)"),
    (E.NonTransactionalFailed("0003", "upgrade", ValueError("x")),
     "migration 0003 (transactional = False) failed during upgrade: x; it ran outside a transaction, so statements before the failure may have taken effect, and it is not recorded. See `apm migrate doctor` for what to check"),
    (E.OutsideStepStopped("0003", "upgrade", "DROP TABLE t", ["0003 upgrade: drops t"], ["CREATE TABLE u"]),
     "migration 0003 (transactional = False) stopped before `DROP TABLE t` during upgrade: drops t, which was not confirmed. It runs outside a transaction: its 1 statement(s) before it ran and stay (`CREATE TABLE u`), and it is not recorded (`apm migrate doctor` shows what to check)"),
    (E.OutsideStepStopped("0003", "upgrade", "DROP TABLE t", ["0003 upgrade: drops t"], []),
     "migration 0003 (transactional = False) stopped before `DROP TABLE t` during upgrade: drops t, which was not confirmed. It runs outside a transaction: none of its statements ran, and it is not recorded (run it again once confirmed)"),
    (E.PartiallyAppliedSquash("0010", ["0001", "0002"], ["0003", "0004"]),
     "migration 0010 replaces 0001, 0002, 0003, 0004, but only 0001, 0002 of them are applied here; nothing was changed. Finish the chain first: move 0010's file out of the folder, run `apm migrate --target 0004`, and put it back (0010 then counts as applied); or roll back 0001, 0002 with the same file moved out"),
    (E.SquashRefused("cannot squash 0001..0003: 0003 does not depend on 0001, so there is no range between them; "
                     "nothing was written", kind="no-range"),
     "cannot squash 0001..0003: 0003 does not depend on 0001, so there is no range between them; nothing was written. See `apm migrate graph`"),
    (E.SquashRefused("cannot squash 0001..0003: 0002 change(s) rows (a data migration), which a squash of the schema "
                     "would drop; nothing was written", versions=["0002"], kind="data"),
     "cannot squash 0001..0003: 0002 change(s) rows (a data migration), which a squash of the schema would drop; nothing was written. Pass --schema-only if that data is not needed on a fresh database"),
    (E.SquashRefused("cannot squash 0001..0003: the database has applied 0001 but not 0002, 0003, and a partly applied "
                     "squash cannot be migrated; nothing was written", versions=["0002", "0003"],
                     kind="partly-applied", target="0003"),
     "cannot squash 0001..0003: the database has applied 0001 but not 0002, 0003, and a partly applied squash cannot be migrated; apply the rest (apm migrate --target 0003) or roll them back first; nothing was written"),
    (StepLocked("0004", LockSettings(lock_timeout=0.3, retries=1), 2, []),
     "migration 0004 could not get its lock within the lock timeout (300ms) in 2 attempts: held by a session the watch did not see (it may have ended); its step was rolled back, so nothing waits behind it. Try again when that session is done (or end it), or raise --lock-timeout / --lock-retries"),
    (StepLocked("0004", LockSettings(lock_timeout=0.3, retries=1), 1, [], final=False, pause=0.5),
     "lock timeout (300ms) on attempt 1 of 2: held by a session the watch did not see (it may have ended); rolled back, trying again in 0.5 s"),
    (E.ConflictingDependencyOptions(["0001"]),
     "a root migration depends on nothing, but dependencies 0001 were given; pass either --root or --depends-on"),
    (E.EmptyPattern("glob pattern", "x/*.db", "matches no database (relative to /srv)"),
     "--glob 'x/*.db' matches no database (relative to /srv); check the pattern, and quote it so the shell does not expand it; nothing was changed"),
    (E.EmptyPattern("list file", "/dev/null", "names no database (only blank lines and comments)"),
     "--list '/dev/null' names no database (only blank lines and comments); write one database a line in it (a path or a URL; # starts a comment); nothing was changed"),
    (E.EmptyPattern("list file", "dbs.txt", "cannot be read (No such file or directory)"),
     "--list 'dbs.txt' cannot be read (No such file or directory); check the file's path; nothing was changed"),
    (E.EmptyPattern("fleet pattern", "/srv/x/*.db"),
     "fleet pattern '/srv/x/*.db' matches no database; check fleet = [...] in the config file (shown made absolute: a relative pattern there is relative to that file's folder, wherever apm runs); nothing was changed"),
    (E.NoFleet(),
     "no databases named: give --glob PATTERN or --list FILE, or set fleet = [...] in apm.toml"),
    (E.NoJournal(d),
     "nothing to resume: no fleet run journal (run-*.jsonl) in /tmp; run `apm fleet migrate` first, or pass the folder it used with --journal-dir"),
    (E.UnreadableJournal(f, "bad"),
     "cannot resume from /tmp/nope.db: bad; start a new run instead (without --resume)"),
    (E.CatalogNotFound(Path("/nope")),
     "migrations directory /nope does not exist; pass --migrations-dir or set APM_MIGRATIONS_DIR"),
    (E.CatalogNotFound(Path("/etc/passwd")),
     "migrations directory /etc/passwd is a file, not a directory; pass --migrations-dir or set APM_MIGRATIONS_DIR"),
    (E.CatalogInvalid(d, [E.SelfDependency("0001")]),
     "migration catalog /tmp is invalid: 0001 depends on itself; remove 0001 from its dependencies"),
    (E.CatalogInvalid(d, [E.SelfDependency("0001"), E.DependencyCycle(["1", "2", "1"])]),
     "migration catalog /tmp has 2 problems; nothing was run. Fix each of these (`apm migrate check` shows the fix for each):\n  - 0001 depends on itself; remove 0001 from its dependencies\n  - dependency cycle 1 → 2 → 1; remove one of these dependencies"),
    (G.BackupToolMissing("pg://x"),
     "cannot back up pg://x before rolling back: pg_dump is not installed (apt-get install postgresql-client); nothing was changed. Install it, or pass --no-backup"),
    (G.BackupToolMissing("pg://x", tool="pg_restore", task="restore {shown}", advice="Install it, then restore again"),
     "cannot restore pg://x: pg_restore is not installed (apt-get install postgresql-client); nothing was changed. Install it, then restore again"),
    (G.BackupFailed("pg://x", "boom"),
     "pg_dump could not back up pg://x: boom; nothing was changed. Fix what pg_dump reports, or pass --no-backup"),
    (G.BackupFailed("pg://x", "boom", "Fix it, then restore again"),
     "pg_dump could not back up pg://x: boom; nothing was changed. Fix it, then restore again"),
]

COMMAND_OR_OPTION = re.compile(r"\bapm (migrate|fleet|status|agents|config)\b|(?<![\w-])--[a-z]")


@pytest.mark.parametrize("error, shown", CASES, ids=[f"{type(e).__name__}-{i}" for i, (e, _) in enumerate(CASES)])
def test_the_command_shows_the_fact_and_its_advice(error: Exception, shown: str) -> None:
    assert message(error) == shown
    fact = str(error)
    assert not COMMAND_OR_OPTION.search(fact), fact
