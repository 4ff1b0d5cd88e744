"""Backups of a PostgreSQL database before a rollback: ``pg_dump`` in its custom format.

The file is named after the database and the time
(``<dbname>.<YYYYmmdd_HHMMSS>.dump``), never after the connection string,
so no password can end up in a file name. The password, if the URL holds
one, reaches ``pg_dump`` through ``PGPASSWORD`` rather than its command line
(which other users can read in ``ps``). ``pg_dump`` writes into
``<name>.partial.<pid>`` (never listed) and the finished file is renamed;
a dump killed half-way leaves that partial behind until the next dump,
restore or listing removes it (``planner.partials``). On Linux the client
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
from planner.engines.urls import database_name, redact
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
         lock_wait: float | None = None) -> Path:
    """``pg_dump -Fc`` of the database into ``folder``; the path written.

    ``advice`` ends the message of a failure: what the caller that wanted
    the dump lets the user do about it (``None``: the command adds its own). ``lock_wait`` (``--busy-timeout``)
    bounds how long pg_dump waits for a table another session has locked;
    past it the dump fails, and so does the command, with nothing changed.
    """
    tool = shutil.which("pg_dump")
    if tool is None:
        raise BackupToolMissing(redact(url))
    if folder.exists() and not folder.is_dir():
        raise BackupFailed(redact(url), f"the backup folder {folder} is a file, not a folder", advice)
    folder.mkdir(parents=True, exist_ok=True)
    remove_abandoned_dumps(url, folder)
    safe = dump_stem(url)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    path = folder / f"{safe}.{stamp}.dump"
    counter = 1
    while path.exists():
        counter += 1
        path = folder / f"{safe}.{stamp}_{counter}.dump"
    partial = partial_path(path)
    conninfo, env = client_environment(url)
    waiting = [f"--lock-wait-timeout={max(1, int(lock_wait * 1000))}"] if lock_wait and lock_wait > 0 else []
    result = run_client([tool, "--format=custom", *waiting, "--file", str(partial), "--dbname", conninfo], env)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        lines = (result.stderr or "").strip().splitlines()
        raise BackupFailed(redact(url), redact(lines[-1] if lines else f"exit status {result.returncode}"), advice)
    partial.replace(path)
    return path


def dump_stem(url: str) -> str:
    """The start of this database's dump file names: its name, with anything unsafe in a file name as ``_``."""
    return re.sub(r"[^\w.-]", "_", database_name(url)) or "postgres"


def remove_abandoned_dumps(url: str, folder: Path) -> list[Path]:
    """Delete this database's partial dumps whose ``apm`` was killed mid-dump; what was deleted."""
    return remove_abandoned(folder, f"{dump_stem(url)}.")


def _dump_name(url: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(dump_stem(url))}\.(\d{{8}}_\d{{6}})(?:_(\d+))?\.dump$")


def dump_time(url: str, path: Path) -> datetime | None:
    """When a dump of this database was taken, from its name (local time); ``None`` for another name."""
    match = _dump_name(url).match(path.name)
    return datetime.strptime(match.group(1), "%Y%m%d_%H%M%S") if match else None


def list_dumps(url: str, folder: Path) -> list[Path]:
    """This database's ``<dbname>.<YYYYmmdd_HHMMSS>[_N].dump`` files in ``folder``, oldest first (by name)."""
    pattern = _dump_name(url)
    found = []
    for path in folder.glob("*.dump") if folder.is_dir() else ():
        match = pattern.match(path.name)
        if match and path.is_file():
            found.append(((match.group(1), int(match.group(2) or 1)), path))
    return [path for _, path in sorted(found)]


def prune_dumps(url: str, folder: Path, keep: int, spare: Iterable[Path] = ()) -> list[Path]:
    """Delete all but the newest ``keep`` dumps of this database in ``folder``; what was deleted, oldest first.

    ``spare`` is never deleted (a restore spares the dump it restored from).
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    dumps = list_dumps(url, folder)
    spared = {Path(p).resolve() for p in spare}
    doomed = [p for p in dumps[: max(0, len(dumps) - keep)] if p.resolve() not in spared]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed
