"""Backups of a PostgreSQL database before a rollback: ``pg_dump`` in its custom format.

The file is named after the database (the one libpq connects to, ``database_of``:
a URL's ``?dbname=`` over its path; checked against ``current_database()``
before a dump), the ledger's schema when it is not
``public``, and the time (``<dbname>[.<schema>].<YYYYmmdd_HHMMSS>[_N].dump``),
never after the connection string, so no password can end up in a file
name, and each ledger (each tenant) of one database lists, prunes and
restores its own dumps only. The password, if the URL holds
one, reaches ``pg_dump`` through ``PGPASSWORD`` rather than its command line
(which other users can read in ``ps``). ``pg_dump`` writes into
``<name>.partial.<pid>`` (never listed), created with ``O_EXCL``, and the
finished file is published by a hard link to the first free name, which
never replaces another writer's dump; a dump killed half-way leaves that
partial behind until the next dump, restore or listing of its ledger
removes it, once its process is gone (``planner.backups``). On Linux the client
tools die with ``apm`` (``run_client``), so a killed ``apm`` leaves no
``pg_dump`` writing on, nor a ``pg_restore`` committing after the lock is
gone. Restoring a dump is below, in this module.

Reading and restoring ``pg_dump`` archives: the ledger a dump holds, and putting a dump back.

**Reading a dump's ledger** needs no server: ``pg_restore --data-only
--schema=S --table=schema_migrations -f -`` prints that one table's rows as
a ``COPY ... FROM stdin`` block, which is parsed here. It reads the
archive's table of contents and one table's data, so listing the backups
stays cheap; a file that is not a ``pg_dump`` custom archive fails here,
before anything is asked or changed.

**Restoring** runs ``pg_restore --clean --if-exists --single-transaction
--exit-on-error --no-owner`` into the database while this process holds
the ledger's advisory lock (``PostgresEngine.locked``), so concurrent
``apm migrate`` runners wait instead of migrating a half-restored schema.
A safety dump of the database as it was comes first, as SQLite's restore
keeps a copy; if ``pg_restore`` fails, its single transaction rolls back,
the database is as it was, and the safety dump is deleted again.

``--clean`` drops only what the archive holds: a table created after the
dump was taken is left in place. ``objects_left_in_place`` names them so
the command can say so before asking.

**A tenant** (``engine.tenant``: its ledger schema is where its tables go)
restores its own schema alone (``pg_restore --schema``), from its own
schema-only dumps or from a whole-database dump, under its own lock, and
its safety dump is of its schema: another tenant of the database is never
put back by it. ``all_schemas`` (``--all-schemas``) restores everything
the dump holds instead, for whoever asks for the whole database.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from planner import versions
from planner.backups import BackupInfo, RestoreResult, ledger_difference, partial_path, remove_abandoned
from planner.engines.postgresql.connection import database_of
from planner.engines.postgresql.ledger import PgLedger
from planner.engines.postgresql.lock_timeout import BlockerWatch
from planner.errors import BackupFailed, BackupToolMissing, RestoreFailed, UnusableBackup
from planner.ledger import LedgerEntry, TABLE
from planner.locks import shown_duration
from planner.urls import redact

#: The ``version`` of a restore's run log row: no migration's (versions are digits).
RESTORE_VERSION = "-"


def _without_password(url: str) -> tuple[str, str | None]:
    """The connection string without its password, and the password (for ``PGPASSWORD``)."""
    try:  # optional dependency: psycopg, the postgresql extra (the engine needs it before it gets here)
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
    except ImportError:  # pragma: no cover - the engine needs psycopg before it gets here
        return url, None
    params = conninfo_to_dict(url)
    password = cast("str | None", params.pop("password", None))  # parsed from a URL: text, never a number
    return make_conninfo("", **params), password


def client_environment(url: str) -> tuple[str, dict[str, str]]:
    """The connection string for a client tool's command line (no password) and its environment (the password)."""
    conninfo, password = _without_password(url)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    return conninfo, env


def run_client(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``pg_dump`` or ``pg_restore``, which gets SIGTERM if ``apm`` dies first (Linux), SIGKILL included."""
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False,
                          preexec_fn=_dies_with(os.getpid()))


def _dies_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel for SIGTERM when ``parent`` ends (``PR_SET_PDEATHSIG``); Linux only."""
    if not sys.platform.startswith("linux"):
        return None
    try:  # start-up time: ctypes is loaded only to ask the kernel, in the child about to run a client tool
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # apm died before the request was made
            os._exit(1)

    return arm


def dump(url: str, folder: Path, *, advice: str | None = None, lock_wait: float | None = None,
         schema: str = "public", only_schema: bool = False, connect: Callable[[], Any] | None = None) -> Path:
    """``pg_dump -Fc`` of the database into ``folder``; the path written.

    ``advice`` ends the message of a failure: what the caller that wanted
    the dump lets the user do about it (``None``: the command adds its own). ``lock_wait`` (``--busy-timeout``)
    bounds how long pg_dump waits for a table another session has locked;
    past it the dump fails, and so does the command, with nothing changed.
    ``schema`` is the ledger's: the name says which ledger a dump backs up
    when it is not ``public``, so tenants of one database never list, prune
    or restore each other's dumps. ``only_schema`` (a tenant) dumps that
    schema alone: restoring one tenant must not put the others back.
    ``connect`` (the engine's) lets a ``BlockerWatch`` see, while pg_dump
    waits, which session holds what it waits for, so a dump that gives up
    on a lock names the table, the limit and the blocker, as a step's lock
    timeout does. The wait is ``--busy-timeout``, not the lock timeout:
    pg_dump asks for ACCESS SHARE only, which queues no reader or writer
    behind it, so waiting longer costs the application nothing.
    """
    tool = shutil.which("pg_dump")
    if tool is None:
        raise BackupToolMissing(redact(url))
    if folder.exists() and not folder.is_dir():
        raise BackupFailed(redact(url), f"the backup folder {folder} is a file, not a folder", advice)
    stem = dump_stem(url, schema)
    if connect is not None:
        _check_named(url, stem, connect, advice)
    folder.mkdir(parents=True, exist_ok=True)
    remove_abandoned_dumps(url, folder, schema)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    partial = claim_partial(folder, stem, stamp)
    conninfo, env = client_environment(url)
    waiting = [f"--lock-wait-timeout={max(1, int(lock_wait * 1000))}"] if lock_wait and lock_wait > 0 else []
    only = [f"--schema={_quoted_pattern(schema)}"] if only_schema else []
    env["PGAPPNAME"] = application = f"apm backup {os.getpid()}"  # the watch finds pg_dump's session by it
    watch = (BlockerWatch(connect, application, min(1.0, max(0.02, lock_wait / 3)))
             if connect is not None and lock_wait and lock_wait > 0 else None)
    try:
        result = run_client([tool, "--format=custom", *waiting, *only, "--file", str(partial), "--dbname", conninfo],
                            env)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        if watch is not None:
            watch.close()
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        locked = _LOCKED.search(result.stderr or "")
        if locked is None:
            raise BackupFailed(redact(url), _first_error(result.stderr, result.returncode), advice)
        blockers = watch.since(0.0) if watch is not None else []
        held = f"held by {blockers[0].describe()}" if blockers else "held by another session (not identified)"
        raise BackupFailed(redact(url), f"within {shown_duration(lock_wait or 0)} (the busy timeout) to back up "
                           f"{redact(url)}: {held}", advice, locked=locked.group(1) or locked.group(2))
    return publish(partial, folder, stem, stamp)


def _check_named(url: str, stem: str, connect: Callable[[], Any], advice: str | None) -> None:
    """Refuse a dump whose file name would name another database than the one connected (a service file's
    ``dbname`` the connection string does not show): ``restore`` would put its data into that other one."""
    named = database_of(url)
    conn = connect()
    try:
        reached = conn.execute("SELECT current_database()").fetchone()[0]
    finally:
        conn.close()
    if reached != named:
        raise BackupFailed(redact(url), f"its backups are named {stem}.* after database {named}, but the "
                           f"connection reaches database {reached}; name the database in the connection string "
                           f"(dbname={reached})", advice)


#: What pg_dump says when it could not lock a table in time (``--lock-wait-timeout``): the table it asked for.
_LOCKED = re.compile(r'LOCK TABLE (\S+) IN ACCESS SHARE MODE|could not obtain lock on relation "([^"]+)"')


def _quoted_pattern(schema: str) -> str:
    """A schema name as pg_dump's ``--schema`` pattern: quoted, so case, ``*`` and ``.`` mean themselves."""
    return '"' + schema.replace('"', '""') + '"'


def _candidate(folder: Path, stem: str, stamp: str, counter: int) -> Path:
    return folder / (f"{stem}.{stamp}.dump" if counter == 1 else f"{stem}.{stamp}_{counter}.dump")


def claim_partial(folder: Path, stem: str, stamp: str) -> Path:
    """An empty partial file created for this writer alone (``O_CREAT|O_EXCL``): the name no other writer has.

    Two processes differ by pid; two threads of one process would share a
    partial name, and the exclusive create sends the second to the next name.
    """
    counter = 1
    while True:
        candidate = _candidate(folder, stem, stamp, counter)
        if not candidate.exists():
            partial = partial_path(candidate)
            try:
                os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                return partial
            except FileExistsError:
                pass
        counter += 1


def publish(partial: Path, folder: Path, stem: str, stamp: str) -> Path:
    """Give the finished partial the first free ``<stem>.<stamp>[_N].dump`` name; the name it got.

    A hard link never replaces an existing file, so two writers that chose the
    same name in the same second cannot both get it (a rename would let the
    second overwrite the first's dump).
    """
    counter = 1
    while True:
        final = _candidate(folder, stem, stamp, counter)
        try:
            os.link(partial, final)
        except FileExistsError:
            counter += 1
            continue
        partial.unlink(missing_ok=True)
        return final


def dump_stem(url: str, schema: str = "public") -> str:
    """The start of this ledger's dump file names: the database's name, then the ledger's schema unless it is
    ``public``, with anything unsafe in a file name (or a dot, which separates the two) as ``_``."""
    base = re.sub(r"[^\w.-]", "_", database_of(url)) or "postgres"
    if schema == "public":
        return base
    return f"{base}." + (re.sub(r"[^\w-]", "_", schema) or "_")


def remove_abandoned_dumps(url: str, folder: Path, schema: str = "public") -> list[Path]:
    """Delete this ledger's partial dumps whose ``apm`` was killed mid-dump (never a live writer's); what was
    deleted."""
    pattern = _dump_name(url, schema)
    return remove_abandoned(folder, f"{dump_stem(url, schema)}.", owns=lambda head: bool(pattern.match(head)))


def _dump_name(url: str, schema: str = "public") -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(dump_stem(url, schema))}\.(\d{{8}}_\d{{6}})(?:_(\d+))?\.dump$")


def dump_time(url: str, path: Path, schema: str = "public") -> datetime | None:
    """When a dump of this ledger was taken, from its name (local time); ``None`` for another name."""
    match = _dump_name(url, schema).match(path.name)
    return datetime.strptime(match.group(1), "%Y%m%d_%H%M%S") if match else None


def list_dumps(url: str, folder: Path, schema: str = "public") -> list[Path]:
    """This ledger's ``<dbname>[.<schema>].<YYYYmmdd_HHMMSS>[_N].dump`` files in ``folder``, oldest first."""
    pattern = _dump_name(url, schema)
    found = []
    for path in folder.glob("*.dump") if folder.is_dir() else ():
        match = pattern.match(path.name)
        if match and path.is_file():
            found.append(((match.group(1), int(match.group(2) or 1)), path))
    return [path for _, path in sorted(found)]


def prune_dumps(url: str, folder: Path, keep: int, spare: Iterable[Path] = (), schema: str = "public") -> list[Path]:
    """Delete all but the newest ``keep`` dumps of this ledger in ``folder``; what was deleted, oldest first.

    ``spare`` is never deleted (a restore spares the dump it restored from).
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    dumps = list_dumps(url, folder, schema)
    spared = {Path(p).resolve() for p in spare}
    doomed = [p for p in dumps[: max(0, len(dumps) - keep)] if p.resolve() not in spared]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


#: How every custom-format archive begins (pg_backup_archiver.c).
_MAGIC = b"PGDMP"
_COPY = re.compile(r"^COPY (?P<table>.+) \((?P<columns>[^)]*)\) FROM stdin;$")  # a quoted name may hold spaces
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
#: What ``pg_restore --list`` calls a table: ``<id>; <tableoid> <oid> TABLE <schema> <name> <owner>``, names
#: unquoted (so a name may hold spaces: lines are matched against the names the database has, not split).
_TOC_TABLE = re.compile(r"^\d+; \d+ \d+ (?P<rest>TABLE (?!DATA ).*)$")  # not its TABLE DATA entry


def _restore_within_lock_timeout(engine: Any, argv: list[str], env: dict[str, str], backup: Path) -> None:
    """Run ``pg_restore`` under the run's lock timeout, tried again as a step is (``postgresql.lock_timeout``).

    Its one transaction drops and locks table after table: queued behind one idle transaction on the next
    table, it would keep every table it already has from every reader. The archive's own script sets
    ``lock_timeout = 0`` (an option or ``PGOPTIONS`` cannot win), so a watch, finding pg_restore's backend by
    the ``application_name`` it runs under, cancels its statement once it has waited the lock timeout for a
    lock (give or take a quarter of it), and names the session it waited for. The single transaction rolls
    back (nothing changed); after a pause the restore starts over. ``--statement-timeout`` is not applied:
    restoring a big table may rightly take long.
    """
    # start-up time: planner.engines.postgresql.backup runs without the lock timeouts until a restore needs them
    from planner.engines.postgresql.lock_timeout import BlockerWatch
    from planner.locks import LockSettings, shown_duration, tell_retry

    settings = getattr(engine, "lock_settings", None) or LockSettings()
    name = f"apm restore {os.getpid()}"
    env = {**env, "PGAPPNAME": name}
    for attempt in range(1, settings.attempts + 1):
        started = time.monotonic()
        # The archive's script sets lock_timeout = 0 itself: the watch cancels a wait that lasts longer.
        watch = BlockerWatch(engine.connect, name, min(1.0, max(0.02, settings.lock_timeout / 4)),
                             cancel_after=settings.lock_timeout) if settings.lock_timeout > 0 else None
        try:
            result = run_client(argv, env)
        finally:
            if watch is not None:
                watch.close()
        if result.returncode == 0:
            return
        blockers = watch.since(started) if watch is not None else []
        if watch is None or not watch.cancelled:
            raise RestoreFailed(engine.display, backup, _first_error(result.stderr, result.returncode))
        if attempt == settings.attempts:
            who = "; ".join(b.describe() for b in blockers) or "a session the watch did not see (it may have ended)"
            tries = "1 attempt" if attempt == 1 else f"{attempt} attempts"
            raise RestoreFailed(engine.display, backup,
                                f"could not get its locks within the lock timeout ({shown_duration(settings.lock_timeout)}) "
                                f"in {tries}: held by {who}. Try again when that session is done (or end it), or raise "
                                f"the lock timeout or the retries")
        pause = settings.backoff(attempt)
        tell_retry("restore", attempt, settings.attempts, pause, blockers[0] if blockers else None,
                   settings.lock_timeout, "pg_restore's one transaction was rolled back, so nothing changed")
        time.sleep(pause)


def tool(name: str, shown: str) -> str:
    """The path of ``pg_restore`` or ``pg_dump``; missing, a refusal naming the Debian package."""
    found = shutil.which(name)
    if found is None:
        raise BackupToolMissing(shown, tool=name, task="restore {shown}", advice="Install it, then restore again")
    return found


def _first_error(stderr: str, returncode: int) -> str:
    """The line of a client tool's output that says what went wrong (its "Command was:" lines do not)."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line.lower()]
    line = (errors or lines or [f"exit status {returncode}"])[0]
    return redact(re.sub(r"^pg_(restore|dump): (error: )?", "", line))


def read_dump_ledger(backup: Path, schema: str, shown: str) -> dict[str, LedgerEntry]:
    """The ``schema_migrations`` rows a dump holds (``{}`` when it has no ledger); ``UnusableBackup`` if unreadable."""
    if not backup.is_file():
        raise UnusableBackup(backup, "no such file", database=shown)
    with backup.open("rb") as file:
        if file.read(len(_MAGIC)) != _MAGIC:
            raise UnusableBackup(backup, "it is not a pg_dump custom-format archive (pg_dump --format=custom)",
                                 database=shown)
    result = subprocess.run([tool("pg_restore", shown), "--data-only", f"--schema={schema}", f"--table={TABLE}",
                             "--file=-", str(backup)], capture_output=True, text=True, check=False)
    if result.returncode != 0:  # a damaged or truncated archive, or one newer than this pg_restore
        raise UnusableBackup(backup, _first_error(result.stderr, result.returncode), database=shown)
    return parse_ledger_copy(result.stdout)


def parse_ledger_copy(script: str) -> dict[str, LedgerEntry]:
    """The ledger rows of the ``COPY ... FROM stdin`` block in a SQL script, ordered as the ledger orders them."""
    entries: list[LedgerEntry] = []
    columns: list[str] | None = None
    for line in script.splitlines():
        if columns is None:
            match = _COPY.match(line)
            if match:
                columns = [c.strip().strip('"') for c in match.group("columns").split(",")]
            continue
        if line == "\\.":
            break
        row = dict(zip(columns, (_unescape(field) for field in line.split("\t")), strict=False))
        applied_at = row.get("applied_at")
        execution_ms = row.get("execution_ms")
        entries.append(LedgerEntry(str(row.get("version")), row.get("description"),
                                   applied_at[:19] if applied_at else None, row.get("checksum"),
                                   int(execution_ms) if execution_ms and execution_ms.isdigit() else None))
    return {e.version: e for e in sorted(entries, key=lambda e: versions.sort_key(e.version))}


def _unescape(field: str) -> str | None:
    """One field of COPY's text format: ``\\N`` is NULL, backslash escapes as the server writes them."""
    if field == "\\N":
        return None

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "x" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8))
        return _ESCAPES.get(code, code)

    return _ESCAPE.sub(one, field)


def describe_dump(engine: Any, backup: Path) -> BackupInfo:
    """Size, time (from the name) and ledger of one dump, for ``apm migrate backups``."""
    size = backup.stat().st_size
    taken = dump_time(engine.url, backup, engine.ledger_schema)
    try:
        return BackupInfo(backup, size, taken, read_dump_ledger(backup, engine.ledger_schema, engine.display))
    except UnusableBackup as exc:
        return BackupInfo(backup, size, taken, None, exc.reason)


def _archived_tables(engine: Any, backup: Path) -> list[str]:
    """The dump's tables as ``TABLE <schema> <name> <owner> `` lines of its table of contents."""
    listing = subprocess.run([tool("pg_restore", engine.display), "--list", str(backup)], capture_output=True,
                             text=True, check=False)
    if listing.returncode != 0:
        raise UnusableBackup(backup, _first_error(listing.stderr, listing.returncode),
                             database=engine.display)
    return [m.group("rest") + " " for m in map(_TOC_TABLE.match, listing.stdout.splitlines()) if m]


def _only_own_schema(engine: Any, all_schemas: bool) -> bool:
    """Whether a restore touches the engine's schema alone: a tenant's, unless the whole dump is asked for."""
    return not all_schemas and engine.tenant


def ledgers_in_dump(engine: Any, backup: Path, *, all_schemas: bool = False) -> list[str]:
    """Schemas other than the engine's whose ledger the dump holds and the restore would put back."""
    if _only_own_schema(engine, all_schemas):
        return []
    marker = f" {TABLE} "
    schemas = {line[len("TABLE "):line.index(marker)] for line in _archived_tables(engine, backup) if marker in line}
    return sorted(schemas - {engine.ledger_schema})


def ledgers_besides(engine: Any, backup: Path, *, all_schemas: bool = False) -> list[str]:
    """Schemas other than the engine's holding a ledger, in the dump or the database: a restore puts the
    whole database back, those ledgers too, while only the engine's ledger is locked and compared. None for
    a tenant's restore, which replaces its own schema alone."""
    if _only_own_schema(engine, all_schemas):
        return []
    schemas = set(ledgers_in_dump(engine, backup, all_schemas=all_schemas))
    with engine.session() as conn:
        schemas.update(name for (name,) in conn.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = %s AND c.relkind IN ('r', 'p')", (TABLE,)).fetchall())
    return sorted(schemas - {engine.ledger_schema})


def objects_left_in_place(engine: Any, backup: Path, *, all_schemas: bool = False) -> list[str]:
    """Tables the database has and the dump does not: ``--clean`` leaves them, so the restore keeps them.
    A tenant's restore touches its own schema alone, so only that schema's are named."""
    archived = _archived_tables(engine, backup)
    with engine.session() as conn:
        rows = conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                            "('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
    if _only_own_schema(engine, all_schemas):
        rows = [row for row in rows if row[0] == engine.ledger_schema]
    return [f"{schema}.{name}" for schema, name in rows
            if not any(line.startswith(f"TABLE {schema} {name} ") for line in archived)]


def restore_dump(engine: Any, backup: Path, folder: Path, *, all_schemas: bool = False) -> RestoreResult:
    """Replace the database's content with the dump's, under the advisory lock, after a safety dump into ``folder``.

    A tenant's restore replaces its own schema alone, after a safety dump of that schema (``all_schemas``: all).
    """
    shown = engine.display
    restorer = tool("pg_restore", shown)
    tool("pg_dump", shown)  # the safety dump needs it: refuse before taking the lock
    restored = read_dump_ledger(backup, engine.ledger_schema, shown)
    kept = objects_left_in_place(engine, backup, all_schemas=all_schemas)
    own = _only_own_schema(engine, all_schemas)
    only = [f"--schema={engine.ledger_schema}"] if own else []
    conninfo, env = client_environment(engine.url)
    with engine.locked() as conn:
        current = PgLedger(conn, engine.ledger_schema).applied_migrations()
        safety = dump(engine.url, folder, advice="Fix it, then restore again", schema=engine.ledger_schema,
                      connect=engine.connect,
                      only_schema=own)
        try:
            _restore_within_lock_timeout(engine, [restorer, "--clean", "--if-exists", "--single-transaction",
                                                  "--exit-on-error", "--no-owner", *only, "--dbname", conninfo,
                                                  str(backup)], env, backup)
        except BaseException:  # interrupted or failed: pg_restore's one transaction rolled back
            safety.unlink(missing_ok=True)  # the database is unchanged, so its fresh copy is only clutter
            raise
        # The run log's trace of it (when the dump brought one back): doctor reads it, and never offers the
        # safety dump, whose restore would undo this one, as a fix.
        with contextlib.suppress(Exception):
            PgLedger(conn, engine.ledger_schema).log(RESTORE_VERSION, "restore", "ok",
                                                     detail=f"restored from {backup.name}; the database as it "
                                                            f"was is in {safety.name}")
    if f"{engine.ledger_schema}.{TABLE}" in kept:
        restored = current  # the dump has no ledger table: --clean leaves the database's in place
    return RestoreResult(shown, backup, safety, ledger_difference(current, restored))
