"""The preview through the installed ``apm``: each migration runs once, nothing is copied, kills leave nothing.

Issue 13's acceptance, end to end: a migration with a side effect outside
the database runs exactly once per real run; ``--yes`` in a script runs a
plan that destroys data and prints the loss; ``--dry-run`` exits 7 on loss
and 0 otherwise; ``--sql`` shows a Python migration's statements; a run
killed at random moments leaves a consistent database and no file of ours
anywhere; ``doctor`` reports copies that older versions left in RAM.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import fix_of, write_migration

APM = Path(sys.executable).parent / "apm"
pytestmark = pytest.mark.skipif(not APM.exists(), reason="the apm console script is not installed (pip install -e .)")


def apm(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    env.update(kwargs.pop("env", {}))
    return subprocess.run([str(APM), *args], capture_output=True, text=True, env=env, timeout=120, **kwargs)


def ledger(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").fetchone() is None:
            return []  # killed before its first commit (a loaded machine is slow to get there): nothing applied
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        conn.close()


@pytest.fixture
def side_effects(catalog_dir: Path, tmp_path: Path):
    """Three migrations, each appending its version to a file outside the database when it runs."""
    log = tmp_path / "side-effects.txt"
    for n, depends in ((1, ()), (2, ("0001",)), (3, ("0002",))):
        version = f"{n:04d}"
        write_migration(catalog_dir, version, depends_on=depends, upgrade=f"""
            with open({str(log)!r}, "a") as f:
                f.write("{version}\\n")
            conn.execute("CREATE TABLE t{n} (id INTEGER PRIMARY KEY, v TEXT)")
            conn.execute("INSERT INTO t{n} (v) VALUES ('kept')")
        """, downgrade=f"conn.execute('DROP TABLE t{n}')")
    return catalog_dir, log


def test_each_migration_runs_once_in_a_real_run(side_effects, tmp_path):
    catalog, log = side_effects
    db = tmp_path / "app.db"
    result = apm("--db", str(db), "--migrations-dir", str(catalog), "migrate")
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["0001", "0002", "0003"]
    assert ledger(db) == ["0001", "0002", "0003"]
    # A dry run runs each migration once too, and commits nothing.
    apm("--db", str(db), "--migrations-dir", str(catalog), "migrate", "--rollback", "0001", "--cascade", "--yes")
    log.write_text("")
    dry = apm("--db", str(db), "--migrations-dir", str(catalog), "migrate", "--dry-run")
    assert dry.returncode == 0 and log.read_text().splitlines() == ["0001", "0002", "0003"]
    assert ledger(db) == []


def test_yes_in_a_script_runs_a_destructive_plan_and_prints_the_loss(side_effects, tmp_path):
    catalog, _ = side_effects
    db = tmp_path / "app.db"
    apm("--db", str(db), "--migrations-dir", str(catalog), "migrate")
    base = ["--db", str(db), "--migrations-dir", str(catalog), "migrate", "--rollback", "0002", "--cascade"]
    refused = apm(*base)
    assert refused.returncode == 7 and "drops table t3 holding 1 row" in refused.stderr
    assert ledger(db) == ["0001", "0002", "0003"]
    assert not list(db.parent.glob("app.db.backup.*"))  # nothing changed, so no backup is kept
    done = apm(*base, "--yes")
    assert done.returncode == 0, done.stderr
    assert "This run destroyed data, as confirmed:" in done.stderr
    assert "0003 rollback: drops table t3 holding 1 row" in done.stderr
    assert "Rolled back 0003" in done.stdout and "Rolled back 0002" in done.stdout
    assert ledger(db) == ["0001"]
    assert len(list(db.parent.glob("app.db.backup.*"))) == 1


def test_dry_run_exit_codes_gate_ci(side_effects, tmp_path):
    catalog, _ = side_effects
    db = tmp_path / "app.db"
    harmless = apm("--db", str(db), "--migrations-dir", str(catalog), "migrate", "--dry-run")
    assert harmless.returncode == 0 and "This plan loses no data." in harmless.stdout
    assert not db.exists()
    apm("--db", str(db), "--migrations-dir", str(catalog), "migrate")
    destructive = apm("--db", str(db), "--migrations-dir", str(catalog), "migrate", "--rollback", "0003",
                      "--dry-run", "--json")
    assert destructive.returncode == 7
    report = json.loads(destructive.stdout)
    assert report["loses_data"] is True and report["committed"] is False
    assert ledger(db) == ["0001", "0002", "0003"]


def test_sql_shows_what_a_python_migration_ran(side_effects, tmp_path):
    catalog, _ = side_effects
    db = tmp_path / "app.db"
    result = apm("--db", str(db), "--migrations-dir", str(catalog), "migrate", "plan", "--sql")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = lines.index("  -- 0002 apply: the SQL it ran")
    assert lines[at + 1:at + 3] == ["    CREATE TABLE t2 (id INTEGER PRIMARY KEY, v TEXT);",
                                    "    INSERT INTO t2 (v) VALUES ('kept');"]
    assert not db.exists()


def test_busy_database_fails_in_about_the_busy_timeout(side_effects, tmp_path):
    catalog, _ = side_effects
    db = tmp_path / "app.db"
    apm("--db", str(db), "--migrations-dir", str(catalog), "migrate", "--target", "0001")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        result = apm("--db", str(db), "--migrations-dir", str(catalog), "--busy-timeout", "2", "migrate")
        elapsed = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 6 and "locked" in result.stderr
    assert elapsed < 15, elapsed  # 2 s asked; the default would be 30


def test_doctor_reports_copies_older_versions_left_in_ram(tmp_path, monkeypatch):
    from planner.engines.sqlite import doctor as doctor

    shm = tmp_path / "shm"
    (shm / "apm-rehearsal-abc123").mkdir(parents=True)
    (shm / "apm-rehearsal-abc123" / "rehearsal.db").write_bytes(b"x" * 4096)
    monkeypatch.setattr(doctor, "REHEARSAL_FOLDERS", (shm,))
    db = tmp_path / "app.db"
    sqlite3.connect(db).close()
    findings = doctor.diagnose(db, Path(__file__).resolve().parent.parent / "migrations")
    leftover = [f for f in findings if f.code == "leftover-rehearsal-copy"]
    assert len(leftover) == 1 and "apm-rehearsal-abc123" in leftover[0].message
    assert fix_of(leftover[0]).startswith("rm -rf ")


# --------------------------------------------------------------------------
# Kills at random moments during a default run
# --------------------------------------------------------------------------

KILLS = int(os.environ.get("APM_PREVIEW_KILLS", "8"))


def slow_catalog(directory: Path, rows: int = 20_000) -> None:
    write_migration(directory, "0001", depends_on=(), upgrade='conn.execute("CREATE TABLE root (x)")',
                    downgrade='conn.execute("DROP TABLE root")')
    for n in range(2, 7):
        version = f"{n:04d}"
        write_migration(directory, version, depends_on=("0001",), upgrade=f"""
            conn.execute("CREATE TABLE t{version} (id INTEGER PRIMARY KEY, payload TEXT)")
            conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "
                         "INSERT INTO t{version} (payload) SELECT printf('%0100d', i) FROM n")
            conn.execute("UPDATE t{version} SET payload = payload || 'x' WHERE id % 2 = 0")
        """, downgrade=f'conn.execute("DROP TABLE t{version}")')


def ours(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_kills_at_random_moments_leave_a_consistent_database_and_no_files(catalog_dir, tmp_path):
    slow_catalog(catalog_dir)
    data = tmp_path / "data"
    data.mkdir()
    db = data / "app.db"
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    tmp_before = set(os.listdir("/tmp"))
    rng = random.Random(1234)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    outcomes = []
    for _ in range(KILLS):
        apm("--db", str(db), "--migrations-dir", str(catalog_dir), "migrate", "--rollback", "0001", "--cascade",
            "--yes", "--no-backup")
        process = subprocess.Popen([str(APM), "--db", str(db), "--migrations-dir", str(catalog_dir), "migrate"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(rng.uniform(0.05, 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        # The next reader (here: apm status) recovers the journal a kill leaves; afterwards only the database is left.
        status = apm("--db", str(db), "--migrations-dir", str(catalog_dir), "status", "--json")
        assert status.returncode == 0, status.stderr
        # Killed before the first run's one transaction committed (a loaded machine), the new file has no ledger
        # table yet: nothing was applied, as when the table is there and empty.
        check = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        started = check.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").fetchone()
        check.close()
        applied = ledger(db) if started else []
        assert applied in ([], ["0001", "0002", "0003", "0004", "0005", "0006"]), applied  # all or nothing
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        conn.close()
        assert ("t0006" in tables) == bool(applied)
        # SQLite may leave its journal, header zeroed (not hot), when the kill lands as a transaction opens;
        # the next command that writes (here a dry run) takes it away. Nothing else is ever there.
        assert set(ours(data)) <= {"app.db", "app.db-journal"}, ours(data)
        dry = apm("--db", str(db), "--migrations-dir", str(catalog_dir), "migrate", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert ours(data) == ["app.db"], ours(data)
        outcomes.append(bool(applied))
    # No copy of the database anywhere (older versions rehearsed on one, in RAM or in the temporary folder).
    if os.path.isdir("/dev/shm"):
        assert not {n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith("apm-rehearsal")}
    assert not {n for n in set(os.listdir("/tmp")) - tmp_before if n.startswith("apm-rehearsal")}
    assert len(outcomes) == KILLS
