"""Lock timeouts with retries on the real server: a migration never waits in a lock queue without limit.

A blocker session holds a lock on a table the migration alters. The run
waits ``--lock-timeout``, rolls back (so a reader queued behind it runs),
and tries again ``--lock-retries`` times; after the last attempt it fails
(exit 6) naming the blocker; once the blocker commits, a retry succeeds.
Each attempt is a row of the run log.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import run_apm, write_migration
from tests.test_postgres import apm, query, run_sql

pytestmark = pytest.mark.postgres

PATHS = {"previewed": (), "step by step": ("--no-preview",)}


def blocker(url: str) -> psycopg.Connection:
    """A session with an open transaction holding ACCESS SHARE on ``t`` (as a long report query would)."""
    conn = psycopg.connect(url, application_name="nightly-report")
    conn.execute("SELECT count(*) FROM t")  # the transaction stays open: the lock is held
    return conn


def wait_for_waiter(url: str, limit: float = 10.0) -> None:
    """Until some session waits for a lock on ``t`` (the migration, queued behind the blocker)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if query(url, "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 't'::regclass")[0][0]:
            return
        time.sleep(0.01)
    raise AssertionError("the migration never waited for the lock")


def failures(url: str) -> list[str]:
    if query(url, "SELECT to_regclass('schema_migrations_log')") == [(None,)]:
        return []  # made by the run, in its first transaction that commits
    return [r[0] for r in query(url, "SELECT detail FROM schema_migrations_log WHERE version = '0001' "
                                     "AND outcome = 'failed' ORDER BY id")]


@pytest.fixture
def altering(pg_url: str, catalog_dir: Path) -> str:
    run_sql(pg_url, "CREATE TABLE t (id INT); INSERT INTO t VALUES (1)")
    write_migration(catalog_dir, "0001", "Add a column", upgrade="conn.execute('ALTER TABLE t ADD COLUMN c INT')")
    return pg_url


@pytest.mark.parametrize("path", PATHS)
def test_the_run_gives_up_after_the_retries_naming_the_blocker_and_readers_never_wait_long(altering, catalog_dir,
                                                                                          path):
    held = blocker(altering)
    waits: list[float] = []

    def reader() -> None:  # comes after the migration in the lock queue
        wait_for_waiter(altering)
        with psycopg.connect(altering) as conn:
            started = time.monotonic()
            conn.execute("SELECT count(*) FROM t").fetchone()
            waits.append(time.monotonic() - started)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        result = apm(altering, "migrate", *PATHS[path], "--lock-timeout", "300ms", "--lock-retries", "2",
                     catalog=catalog_dir)
        thread.join(10)
        pid = held.info.backend_pid
    finally:
        held.close()
    assert result.returncode == 6, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "could not get its lock within the lock timeout (300ms) in 3 attempts" in error
    assert f"pid {pid} (application \"nightly-report\", transaction open" in error
    assert 'query "SELECT count(*) FROM t"' in error and "Traceback" not in result.stderr
    assert error.endswith("or raise --lock-timeout / --lock-retries (nothing was committed)") if path == "previewed" \
        else error.endswith("or raise --lock-timeout / --lock-retries"), error  # the advice on both paths
    assert result.stderr.count("trying again in") == 2  # told before each retry
    told = [line for line in result.stderr.splitlines() if "trying again in" in line]
    assert all(line.startswith("0001: waited 300ms for a lock held by pid") for line in told), told  # not "?"
    # Without the timeout the reader would wait for the blocker (the whole test); it waited one timeout at most.
    assert len(waits) == 1 and waits[0] < 1.5, waits
    logged = failures(altering)
    assert len(logged) == 3, logged  # each attempt is a row of the run log
    assert "attempt 1 of 3" in logged[0] and "attempt 2 of 3" in logged[1] and f"pid {pid}" in logged[0]
    assert "in 3 attempts" in logged[2]
    assert query(altering, "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' "
                           "AND column_name = 'c'") == [(0,)]
    assert query(altering, "SELECT count(*) FROM schema_migrations") == [(0,)]


@pytest.mark.parametrize("path", PATHS)
def test_the_step_succeeds_on_a_retry_once_the_blocker_commits(altering, catalog_dir, path):
    held = blocker(altering)

    def release() -> None:  # after the first attempt failed (its log row is committed), end the blocker
        deadline = time.monotonic() + 10
        while not failures(altering) and time.monotonic() < deadline:
            time.sleep(0.02)
        held.commit()

    thread = threading.Thread(target=release)
    thread.start()
    try:
        result = apm(altering, "migrate", *PATHS[path], "--lock-timeout", "300ms", "--lock-retries", "2",
                     catalog=catalog_dir)
        thread.join(10)
    finally:
        held.close()
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("trying again in") == 1 and "nightly-report" in result.stderr
    assert len(failures(altering)) == 1
    assert query(altering, "SELECT version FROM schema_migrations") == [("0001",)]
    assert query(altering, "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' "
                           "AND column_name = 'c'") == [(1,)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("run_timeout", ["20s", "off"])
def test_a_migration_declares_its_own_lock_timeout(altering, catalog_dir, path, run_timeout):
    """``lock_timeout = "..."`` in the file beats the run's: here a short one, so the run's long one (or none)
    never counts; the retries and the error say the 200 ms that applied and name the blocker, whom a watch paced
    by the run's own timeout (or started only for it) never saw."""
    migration = next(catalog_dir.glob("migration_0001*.py"))
    migration.write_text(migration.read_text() + '\nlock_timeout = "200ms"\n')
    held = blocker(altering)
    started = time.monotonic()
    try:
        result = apm(altering, "migrate", *PATHS[path], "--lock-timeout", run_timeout, "--lock-retries", "1",
                     catalog=catalog_dir)
        pid = held.info.backend_pid
    finally:
        held.close()
    assert result.returncode == 6 and "in 2 attempts" in result.stderr, result.stderr
    assert time.monotonic() - started < 15  # the run's 20 s (or no limit) never applied
    error = result.stderr.strip().splitlines()[-1]
    assert "within the lock timeout (200ms)" in error and f"held by pid {pid}" in error, error
    told = [line for line in result.stderr.splitlines() if "trying again in" in line]
    assert len(told) == 1 and told[0].startswith(f"0001: waited 200ms for a lock held by pid {pid}"), told
    # The pause follows the timeout that fired (0.1 to 0.2 s here, not 1 to 2 s as for the run's 2 s), and
    # the advice names what can raise it: the run's --lock-timeout does not change a migration's own.
    assert float(told[0].split("trying again in ")[1].split(" s")[0]) <= 0.2, told
    assert "raise the lock_timeout its migration declares / --lock-retries" in error, error
    assert "--lock-timeout /" not in error


def test_a_timeout_that_is_no_duration_is_a_usage_error(altering, catalog_dir, tmp_path):
    result = apm(altering, "migrate", "--lock-timeout", "5", catalog=catalog_dir)
    assert result.returncode == 2 and '"300ms"' in result.stderr and "Traceback" not in result.stderr
    (catalog_dir / "migration_0002_bad.py").write_text('"""Migration 0002: Bad"""\nlock_timeout = 5\n'
                                                        'allow = ["no-such-code"]\ndef upgrade(conn):\n    pass\n')
    result = apm(altering, "migrate", catalog=catalog_dir)
    assert result.returncode == 3 and "migration_0002_bad.py: migration 0002: lock_timeout must be" in result.stderr
    (catalog_dir / "migration_0002_bad.py").unlink()
    (tmp_path / "apm.toml").write_text(f'db = "{altering}"\nlock_timeout = "soon"\n')
    result = run_apm("migrate", "--migrations-dir", str(catalog_dir), cwd=tmp_path)
    assert result.returncode == 2 and 'apm.toml: lock_timeout must be a duration such as "300ms"' in result.stderr


def test_the_config_file_sets_the_timeout_and_retries(altering, catalog_dir, tmp_path):
    (tmp_path / "apm.toml").write_text(f'db = "{altering}"\nlock_timeout = "100ms"\nlock_retries = 1\n')
    held = blocker(altering)
    try:
        result = run_apm("migrate", "--migrations-dir", str(catalog_dir), cwd=tmp_path)
    finally:
        held.close()
    assert result.returncode == 6 and "lock timeout (100ms) in 2 attempts" in result.stderr, result.stderr
