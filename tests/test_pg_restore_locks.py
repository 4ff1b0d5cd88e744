"""``apm migrate restore`` on a database that serves traffic (the real server).

pg_restore's one transaction drops and locks table after table; queued
behind one idle transaction on the next table, it kept every table it
already had from every reader, without limit. It now runs under the lock
timeout and retries of a run, gives up with the blocker named and nothing
changed, and its confirmation says that rows written since the dump are
lost. Right after a restore, doctor never offers restoring its safety dump
(which would undo it) as a fix.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest

from tests.conftest import run_apm, write_migration
from tests.test_pg_lock_ahead import read_again_and_again
from tests.test_postgres import query, run_sql

pytestmark = pytest.mark.postgres


@pytest.fixture
def dumped(pg_url: str, tmp_path: Path) -> Path:
    """``accounts`` and ``orders`` with a row each, dumped; then a row written to ``orders`` since the dump."""
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed")
    (tmp_path / "migrations").mkdir()
    write_migration(tmp_path / "migrations", "0001", "Accounts and orders", depends_on=(),
                    upgrade="conn.executescript('CREATE TABLE accounts (id INT); CREATE TABLE orders (id INT); "
                            "INSERT INTO accounts VALUES (1); INSERT INTO orders VALUES (1)')")
    (tmp_path / "apm.toml").write_text(f'db = "{pg_url}"\nbackup_dir = "dumps"\nmigrations_dir = "migrations"\n')
    assert run_apm("migrate", cwd=tmp_path).returncode == 0  # the dump holds the ledger and the run log too
    dump = tmp_path / "before.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), "--dbname", pg_url], check=True, capture_output=True)
    run_sql(pg_url, "INSERT INTO orders VALUES (2)")
    return dump


def restore(dump: Path, *args: str):
    return run_apm("migrate", "restore", str(dump), *args, cwd=dump.parent)


def test_restore_gives_up_within_the_lock_timeout_naming_the_blocker_and_readers_never_wait_long(pg_url, dumped):
    config = dumped.parent / "apm.toml"  # the config file's lock settings, as a run reads them
    config.write_text(config.read_text() + 'lock_timeout = "300ms"\nlock_retries = 1\n')
    held = psycopg.connect(pg_url, application_name="nightly-report")
    held.execute("SELECT count(*) FROM accounts")  # an idle transaction: ACCESS SHARE on accounts
    pid = held.info.backend_pid
    release = threading.Timer(8, held.commit)  # without a lock timeout the restore waits for this
    release.start()
    done, waits = threading.Event(), []

    # orders is dropped (and locked) before pg_restore reaches accounts
    thread = threading.Thread(target=read_again_and_again, args=(pg_url, "orders", done, waits))
    thread.start()
    try:
        result = restore(dumped, "--yes")
    finally:
        done.set()
        thread.join(10)
        release.cancel()
        held.close()
    # About one lock timeout (0.3 s, the watch cancels within a quarter more) with room for a loaded machine; the
    # blocker holds for 8 s, which a restore without a lock timeout waited out.
    assert waits and max(waits) < 2.0, (waits, result.stderr)
    assert result.returncode == 6, result.stdout + result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "could not get its locks within the lock timeout (300ms) in 2 attempts" in error, error
    assert f'held by pid {pid} (application "nightly-report"' in error and "nothing was changed" in error, error
    assert result.stderr.count("restore: waited 300ms for a lock held by pid") == 1, result.stderr
    assert query(pg_url, "SELECT count(*) FROM orders") == [(2,)]  # as it was: the row written since is there
    assert not list((dumped.parent / "dumps").glob("*.dump"))  # the safety dump of an unchanged database: gone


def test_the_confirmation_says_rows_written_since_are_lost_and_doctor_does_not_offer_to_undo(pg_url, dumped):
    asked = restore(dumped)
    assert asked.returncode == 7
    assert "rows written since the backup was taken are lost from the database" in asked.stdout, asked.stdout
    assert query(pg_url, "SELECT count(*) FROM orders") == [(2,)]
    done = restore(dumped, "--yes", "--lock-timeout", "5s", "--lock-retries", "0")  # a restore takes them too
    assert done.returncode == 0, done.stderr
    assert query(pg_url, "SELECT count(*) FROM orders") == [(1,)]
    (safety,) = (dumped.parent / "dumps").glob("*.dump")
    doctor = run_apm("migrate", "doctor", cwd=dumped.parent)
    assert safety.name in doctor.stdout, doctor.stdout  # still named: it is there if wanted
    assert "apm migrate restore" not in doctor.stdout, doctor.stdout  # but not as a fix: it undoes the restore
    (row,) = query(pg_url, "SELECT version, action, outcome, detail FROM schema_migrations_log ORDER BY id DESC "
                           "LIMIT 1")  # the restore's trace in the run log, which doctor read
    assert row == ("-", "restore", "ok", f"restored from before.dump; the database as it was is in {safety.name}")
    assert run_apm("migrate", cwd=dumped.parent).returncode == 0  # the log's restore row troubles no run
