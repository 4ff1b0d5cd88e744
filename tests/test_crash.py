"""SIGKILL at random moments during real migrations: the ledger and the schema always agree.

A worker process applies a catalog of slow migrations, rolls it all back, and
applies it again, forever; the test kills it at a random moment, checks the
database, and starts the next worker on the same file. The first read after
each kill goes through ``read_ledger`` (read-only), so a hot journal left by
the kill is exercised too.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_migration
from planner.engines.sqlite.ledger import read_ledger

WORKER = Path(__file__).with_name("crash_worker.py")
ROWS = 20_000
SLOW = 6  # migrations after the root, each filling a table


def slow_catalog(directory: Path) -> None:
    write_migration(
        directory,
        "0001",
        upgrade='conn.execute("CREATE TABLE root (x)")',
        downgrade='conn.execute("DROP TABLE root")',
    )
    for n in range(2, SLOW + 2):
        version = f"{n:04d}"
        write_migration(
            directory,
            version,
            depends_on=("0001",),
            upgrade=f"""
            conn.execute("CREATE TABLE t{version} (id INTEGER PRIMARY KEY, payload TEXT)")
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) "
                "INSERT INTO t{version} (payload) SELECT printf('%0100d', i) FROM n"
            )
            conn.execute("CREATE INDEX t{version}_payload ON t{version} (payload)")
            """,
            downgrade=f'conn.execute("UPDATE t{version} SET payload = payload || \'x\'")\n'
            f'conn.execute("DROP TABLE t{version}")',
        )


def check_consistent(db: Path) -> set[str]:
    """Integrity ok, and every migration's table exists exactly when the ledger says it is applied."""
    applied = set(read_ledger(db))  # first, read-only: must cope with a hot journal
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert ("root" in tables) == ("0001" in applied)
        for n in range(2, SLOW + 2):
            version = f"{n:04d}"
            assert (f"t{version}" in tables) == (version in applied), (version, applied)
            if version in applied:
                count = conn.execute(f"SELECT COUNT(*), MIN(payload NOT LIKE '%x') FROM t{version}").fetchone()
                assert count == (ROWS, 1)
        if "schema_migrations_log" in tables:
            for version in applied:
                last = conn.execute(
                    "SELECT action FROM schema_migrations_log WHERE version = ? AND outcome = 'ok' "
                    "AND action IN ('apply', 'rollback') ORDER BY id DESC LIMIT 1",
                    (version,),
                ).fetchone()
                assert last == ("apply",)
    finally:
        conn.close()
    return applied


def kill_repeatedly(tmp_path: Path, catalog_dir: Path, kills: int, seed: int) -> set[int]:
    """Kill a migrating worker ``kills`` times, checking the database after each; return the states seen."""
    slow_catalog(catalog_dir)
    db = tmp_path / "crash.db"
    rng = random.Random(seed)
    seen_states: set[int] = set()
    for round_ in range(kills):
        args = [sys.executable, str(WORKER), "cycle", str(db), str(catalog_dir)]
        if round_ % 3 == 2:
            args.append("--atomic")
        worker = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Wait for the worker to be ready (start-up time varies with the machine's load), then kill
        # it at a random moment of its work.
        ready, _, _ = select.select([worker.stdout], [], [], 60)
        if not ready or worker.stdout.readline() != b"ready\n":
            worker.kill()
            pytest.fail(f"worker did not start: {worker.stderr.read().decode()}")
        time.sleep(rng.uniform(0.0, 1.0))
        if worker.poll() is not None:
            pytest.fail(f"worker exited by itself: {worker.stderr.read().decode()}")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        worker.stdout.close()
        worker.stderr.close()
        if db.exists():
            seen_states.add(len(check_consistent(db)))
    return seen_states


def test_sigkill_during_migrations_leaves_ledger_and_schema_in_agreement(tmp_path, catalog_dir):
    # kill_repeatedly asserts integrity_check and ledger/schema agreement after every kill.
    states = kill_repeatedly(tmp_path, catalog_dir, kills=10, seed=20251018)
    # The kills landed at different points of the cycle (numbers of applied migrations), not always the same one.
    assert len(states) >= 3, states


@pytest.mark.stress
@pytest.mark.skipif(os.environ.get("APM_STRESS") != "1", reason="set APM_STRESS=1 for the long run")
def test_sigkill_stress(tmp_path, catalog_dir):
    states = kill_repeatedly(tmp_path, catalog_dir, kills=200, seed=int(time.time()))
    assert len(states) >= 3, states


_CREATE_AND_DIE = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size = 1")  # spill pages into the new file before the commit
conn.execute("BEGIN")
conn.execute("CREATE TABLE filler (x)")
conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) "
             "INSERT INTO filler SELECT randomblob(200) FROM n")
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_while_created(db: Path) -> None:
    """A database file killed during its very first transaction: SQLite has written pages, but not yet the
    header of page 1, and its journal says the file was empty. Opening it rolls that back to an empty file."""
    subprocess.run([sys.executable, "-c", _CREATE_AND_DIE, str(db)], check=False)
    assert db.read_bytes()[:16] != b"SQLite format 3\x00" and db.stat().st_size > 4096
    assert Path(f"{db}-journal").read_bytes()[:8] == bytes.fromhex("d9d505f920a163d7")


@pytest.mark.parametrize("command", [("status", "--json"), ("migrate", "--dry-run"), ("migrate", "--list"),
                                     ("migrate",), ("migrate", "doctor")])
def test_a_database_killed_while_being_created_is_recovered_not_called_foreign(tmp_path, catalog_dir, command):
    """A kill during the first migrate of a new database leaves a header-less file and a hot journal; the next
    command must let SQLite roll the journal back (an empty database) instead of calling the file foreign."""
    from conftest import run_apm

    write_migration(catalog_dir, "0001", upgrade='conn.execute("CREATE TABLE a (x)")')
    db = tmp_path / "app.db"
    _killed_while_created(db)
    result = run_apm("--db", str(db), "--migrations-dir", str(catalog_dir), *command)
    assert "not a SQLite database" not in result.stderr and "read-only" not in result.stderr, result.stderr
    if command[-1] == "doctor":  # a diagnosis changes nothing: it names the journal, and the file stays as it was
        assert result.returncode != 0 and "hot-journal" in result.stdout, result.stdout + result.stderr
        assert Path(f"{db}-journal").exists()
        result = run_apm("--db", str(db), "--migrations-dir", str(catalog_dir), "status")
    assert result.returncode in (0, 7), result.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_fleet_status_reads_a_database_killed_while_being_created_as_a_database(tmp_path, catalog_dir):
    from conftest import run_apm

    write_migration(catalog_dir, "0001", upgrade='conn.execute("CREATE TABLE a (x)")')
    db = tmp_path / "p1" / "app.db"
    db.parent.mkdir()
    _killed_while_created(db)
    result = run_apm("--migrations-dir", str(catalog_dir), "fleet", "status", "--glob", str(tmp_path / "*/app.db"),
                     "--json")
    import json

    rows = json.loads(result.stdout)["databases"]
    assert [row["state"] for row in rows] != ["not_a_database"], rows


def test_a_database_created_by_another_process_between_two_questions_is_read_not_called_foreign(tmp_path,
                                                                                                 monkeypatch):
    """``open_read_only`` asks whether the file is a file, then whether it exists: a runner that creates it in
    between (four processes applying at once) made the reader call the new database "not a SQLite database"."""
    from planner.engines.sqlite import database

    db = tmp_path / "app.db"
    real_is_file = Path.is_file
    asked = []

    def is_file(self: Path) -> bool:
        if self == db and not asked:
            asked.append(True)
            sqlite3.connect(db).close()  # another process creates the file right after the first answer
            return False
        return real_is_file(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    conn = database.open_read_only(db)
    assert conn is not None and asked
    conn.close()
