"""Backups of a PostgreSQL database before a rollback: ``pg_dump`` in its custom format.

The file is named after the database, the ledger's schema when it is not
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
removes it, once its process is gone (``planner.partials``). On Linux the client
tools die with ``apm`` (``run_client``), so a killed ``apm`` leaves no
``pg_dump`` writing on, nor a ``pg_restore`` committing after the lock is
gone. Restoring is ``planner.engines.postgresql.restore``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import cast

from planner.engines.errors import BackupFailed, BackupToolMissing
from planner.urls import database_name, redact
from planner.partials import partial_path, remove_abandoned


def _without_password(url: str) -> tuple[str, str | None]:
    """The connection string without its password, and the password (for ``PGPASSWORD``)."""
    try:
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
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # apm died before the request was made
            os._exit(1)

    return arm


def dump(url: str, folder: Path, *, advice: str | None = None,
         lock_wait: float | None = None, schema: str = "public", only_schema: bool = False) -> Path:
    """``pg_dump -Fc`` of the database into ``folder``; the path written.

    ``advice`` ends the message of a failure: what the caller that wanted
    the dump lets the user do about it (``None``: the command adds its own). ``lock_wait`` (``--busy-timeout``)
    bounds how long pg_dump waits for a table another session has locked;
    past it the dump fails, and so does the command, with nothing changed.
    ``schema`` is the ledger's: the name says which ledger a dump backs up
    when it is not ``public``, so tenants of one database never list, prune
    or restore each other's dumps. ``only_schema`` (a tenant) dumps that
    schema alone: restoring one tenant must not put the others back.
    """
    tool = shutil.which("pg_dump")
    if tool is None:
        raise BackupToolMissing(redact(url))
    if folder.exists() and not folder.is_dir():
        raise BackupFailed(redact(url), f"the backup folder {folder} is a file, not a folder", advice)
    folder.mkdir(parents=True, exist_ok=True)
    remove_abandoned_dumps(url, folder, schema)
    stem = dump_stem(url, schema)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    partial = claim_partial(folder, stem, stamp)
    conninfo, env = client_environment(url)
    waiting = [f"--lock-wait-timeout={max(1, int(lock_wait * 1000))}"] if lock_wait and lock_wait > 0 else []
    only = [f"--schema={_quoted_pattern(schema)}"] if only_schema else []
    try:
        result = run_client([tool, "--format=custom", *waiting, *only, "--file", str(partial), "--dbname", conninfo],
                            env)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        lines = (result.stderr or "").strip().splitlines()
        raise BackupFailed(redact(url), redact(lines[-1] if lines else f"exit status {result.returncode}"), advice)
    return publish(partial, folder, stem, stamp)


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
    base = re.sub(r"[^\w.-]", "_", database_name(url)) or "postgres"
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
