"""A throwaway PostgreSQL server for the test session: initdb and pg_ctl into a temporary folder.

The server listens on a Unix socket only (no TCP port to collide with
another run), trusts local connections (no password to leak), and is
stopped and removed when the session ends. Each test gets a fresh database
made with ``CREATE DATABASE ... TEMPLATE template0``, so tests never see each
other's ledgers. Without the server binaries (or psycopg) every test marked
``postgres`` is skipped with the command that installs them.

As root, ``initdb`` refuses to run; the server then runs as the ``postgres``
system user (which the Debian package creates) in folders it owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = "PostgreSQL server binaries not found: apt-get install postgresql (and pip install -e '.[postgres]')"


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: PATH first, then Debian's versioned folders."""
    initdb = shutil.which("initdb")
    if initdb:
        folder = Path(os.path.realpath(initdb)).parent
        if (folder / "pg_ctl").exists() and (folder / "postgres").exists():
            return folder
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all((Path(folder) / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


#: The server's files in memory where the machine has room for them: each test's database is a copy of template0
#: (7.5 MB), and on a disk mounted with ``discard`` removing a session's worth of them took seconds.
_IN_MEMORY = Path("/dev/shm")
_ROOM = 2 << 30


def _scratch_folder() -> str | None:
    """``/dev/shm`` when it is a folder with at least 2 GiB free, else the usual temporary folder."""
    try:
        if _IN_MEMORY.is_dir() and os.access(_IN_MEMORY, os.W_OK) and shutil.disk_usage(_IN_MEMORY).free >= _ROOM:
            return str(_IN_MEMORY)
    except OSError:
        pass
    return None


class PgServer:
    """One running server: its socket folder, and URLs for the databases made on it."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="apm-pg-", dir=_scratch_folder()))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.user = "apm"
        self._run_as: list[str] = []
        self._counter = 0

    def _cmd(self, *args: str) -> list[str]:
        return [*self._run_as, *args]

    def start(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            # initdb refuses root: run the server as the postgres user, in folders it owns.
            self._run_as = ["runuser", "-u", "postgres", "--"]
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        subprocess.run(self._cmd(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", self.user,
                                 "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"),
                       check=True, capture_output=True)
        options = f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off -c max_connections=60 -c dynamic_shared_memory_type=mmap"
        subprocess.run(self._cmd(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options,
                                 "-l", str(self.root / "server.log"), "-w", "start"),
                       check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(self._cmd(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"),
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str) -> str:
        """A libpq URL over the Unix socket (``host`` is the socket folder)."""
        return f"postgresql://{self.user}@/{dbname}?host={self.socket_dir}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """A new empty database; its URL."""
        self._counter += 1
        name = f"t{os.getpid()}_{self._counter}_{int(time.time() * 1000) % 100000}"
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database ``create_database`` made, whoever is still connected (a test's leftover process)."""
        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        try:
            self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception:  # noqa: BLE001 (a test that stopped the server, or dropped it itself: nothing to keep)
            pass
