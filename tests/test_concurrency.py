"""Several real processes migrating one database at once: every migration runs exactly once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_migration

WORKER = Path(__file__).with_name("crash_worker.py")


def counter_catalog(directory: Path, count: int) -> None:
    """``count`` migrations in a line; each creates a table and adds one row to a shared counter."""
    write_migration(
        directory,
        "0001",
        upgrade='conn.execute("CREATE TABLE counter (version TEXT, pid INTEGER)")\n'
        'conn.execute("INSERT INTO counter VALUES (\'0001\', ?)", (os.getpid(),))\n'
        "time.sleep(0.01)",
        extra="import os, time\n",
    )
    for n in range(2, count + 1):
        version = f"{n:04d}"
        write_migration(
            directory,
            version,
            upgrade=f'conn.execute("CREATE TABLE t{version} (x)")\n'
            f'conn.execute("INSERT INTO counter VALUES (\'{version}\', ?)", (os.getpid(),))\n'
            "time.sleep(0.01)",
            extra="import os, time\n",
        )


def run_workers(db: Path, catalog: Path, go: Path, count: int, *extra: str) -> list[subprocess.CompletedProcess]:
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "migrate", str(db), str(catalog), "--go", str(go), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    time.sleep(0.8)  # let every worker import and wait at the start line
    go.touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


@pytest.mark.parametrize("atomic", [False, True], ids=["per-step", "atomic"])
def test_four_processes_apply_each_migration_exactly_once(tmp_path, catalog_dir, atomic):
    counter_catalog(catalog_dir, 20)
    db = tmp_path / "shared.db"
    results = run_workers(db, catalog_dir, tmp_path / "go", 4, *(["--atomic"] if atomic else []))

    for result in results:
        assert result.returncode == 0, result.stderr
    applied = [int(r.stdout.split()[0].split("=")[1]) for r in results]
    assert sum(applied) == 20

    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT version) FROM counter").fetchone() == (20, 20)
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone() == (20,)
    assert conn.execute(
        "SELECT COUNT(*) FROM schema_migrations_log WHERE action = 'apply' AND outcome = 'ok'"
    ).fetchone() == (20,)
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations_log WHERE outcome = 'failed'").fetchone() == (0,)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
