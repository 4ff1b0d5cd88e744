"""Backups of a PostgreSQL database before a rollback: ``pg_dump`` in its custom format.

The file is named after the database and the time
(``<dbname>.<YYYYmmdd_HHMMSS>.dump``), never after the connection string,
so no password can end up in a file name. The password, if the URL holds
one, reaches ``pg_dump`` through ``PGPASSWORD`` rather than its command line
(which other users can read in ``ps``). Restore with
``pg_restore --clean --if-exists -d URL FILE``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

from planner.engines.errors import BackupFailed, BackupToolMissing
from planner.engines.urls import database_name, redact


def _without_password(url: str) -> tuple[str, str | None]:
    """The connection string without its password, and the password (for ``PGPASSWORD``)."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
    except ImportError:  # pragma: no cover - the engine needs psycopg before it gets here
        return url, None
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    return make_conninfo(**params), password


def dump(url: str, folder: Path) -> Path:
    """``pg_dump -Fc`` of the database into ``folder``; the path written."""
    tool = shutil.which("pg_dump")
    if tool is None:
        raise BackupToolMissing(redact(url))
    folder.mkdir(parents=True, exist_ok=True)
    safe = dump_stem(url)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    path = folder / f"{safe}.{stamp}.dump"
    counter = 1
    while path.exists():
        counter += 1
        path = folder / f"{safe}.{stamp}_{counter}.dump"
    partial = path.with_name(path.name + ".partial")
    conninfo, password = _without_password(url)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    result = subprocess.run([tool, "--format=custom", "--file", str(partial), "--dbname", conninfo],
                            capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        lines = (result.stderr or "").strip().splitlines()
        raise BackupFailed(redact(url), redact(lines[-1] if lines else f"exit status {result.returncode}"))
    partial.replace(path)
    return path


def dump_stem(url: str) -> str:
    """The start of this database's dump file names: its name, with anything unsafe in a file name as ``_``."""
    return re.sub(r"[^\w.-]", "_", database_name(url)) or "postgres"


def list_dumps(url: str, folder: Path) -> list[Path]:
    """This database's ``<dbname>.<YYYYmmdd_HHMMSS>[_N].dump`` files in ``folder``, oldest first (by name)."""
    pattern = re.compile(rf"^{re.escape(dump_stem(url))}\.(\d{{8}}_\d{{6}})(?:_(\d+))?\.dump$")
    found = []
    for path in folder.glob("*.dump") if folder.is_dir() else ():
        match = pattern.match(path.name)
        if match and path.is_file():
            found.append(((match.group(1), int(match.group(2) or 1)), path))
    return [path for _, path in sorted(found)]


def prune_dumps(url: str, folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` dumps of this database in ``folder``; what was deleted, oldest first."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    dumps = list_dumps(url, folder)
    doomed = dumps[: max(0, len(dumps) - keep)]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed
