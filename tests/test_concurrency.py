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


def test_a_runner_waiting_for_the_lock_says_so_once(catalog_dir: Path, tmp_path: Path):
    """A wait for another writer would look like a hang: past a second, apm says what it waits for."""
    apm = Path(sys.executable).with_name("apm")
    db = tmp_path / "app.db"
    write_migration(catalog_dir, "0001", upgrade="conn.execute('CREATE TABLE a (id INT)')")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer, holding the lock
    runner = subprocess.Popen([str(apm), "--db", str(db), "--migrations-dir", str(catalog_dir),
                               "--busy-timeout", "20", "migrate"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    holder.execute("ROLLBACK")
    holder.close()
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 0, err
    assert f"Waiting for {db}: another process holds its lock (up to 20 s; --busy-timeout)" in err
    assert err.count("Waiting for") == 1 and "Applied 0001" in out
    quick = subprocess.run([str(apm), "--db", str(db), "--migrations-dir", str(catalog_dir), "migrate"],
                           capture_output=True, text=True, timeout=60)
    assert quick.returncode == 0 and "Waiting" not in quick.stderr  # no wait, no line


def test_a_step_outside_any_transaction_runs_once_when_two_runners_reach_it(catalog_dir: Path, tmp_path: Path):
    """SQLite's lock lasts one transaction; a step outside any runs between two. A second runner must wait for it,
    not run it again at the same time (its ``started`` row names the process running it)."""
    apm = Path(sys.executable).with_name("apm")
    db, runs, started = tmp_path / "app.db", tmp_path / "runs.txt", tmp_path / "started"
    write_migration(catalog_dir, "0001", upgrade="conn.execute('CREATE TABLE a (id INT)')")
    write_migration(catalog_dir, "0002", "Compact", depends_on=("0001",),
                    extra="transactional = False\nimport os, pathlib, time\n",
                    upgrade=f"pathlib.Path({str(runs)!r}).open('a').write(f'{{os.getpid()}}\\n')\n"
                            f"pathlib.Path({str(started)!r}).touch()\ntime.sleep(3)\nconn.execute('VACUUM')")
    command = [str(apm), "--db", str(db), "--migrations-dir", str(catalog_dir), "migrate", "--yes"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(300):
        if started.exists() or first.poll() is not None:
            break
        time.sleep(0.05)
    second = subprocess.run(command, capture_output=True, text=True, timeout=60)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    assert len(runs.read_text().splitlines()) == 1  # the migration's code ran once
    assert "Waiting for" in second.stderr and "Skipped 0002" in second.stdout
