"""A retry after a lock timeout does not hold again, for the length of a backfill, what the attempt locked first.

The lock timeout bounds a wait, not a hold: a plan that takes ACCESS
EXCLUSIVE on ``a`` and runs a long statement under it (the backfill, here a
``pg_sleep``) before it times out on ``b`` (held by a blocker) kept readers of
``a`` out for the whole backfill, on every attempt. A retry now first takes
the locks the attempt was seen to need, within the lock timeout, before it
runs anything: a reader of ``a`` started during the retries waits about one
lock timeout at most, and the run still succeeds once the blocker ends.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import write_migration
from tests.test_postgres import apm, query, run_sql

pytestmark = pytest.mark.postgres

BACKFILL = 3.5  # seconds the plan holds ACCESS EXCLUSIVE on a before it needs b
#: How long a reader of a may wait during the retries: about the lock timeout (0.3 s) twice, with room for a loaded
#: machine (the suite's other workers), and well below the backfill every retry held before.
READER_BOUND = 2.0
PATHS = {"previewed": (), "step by step": ("--no-preview",)}


@pytest.fixture
def plan(pg_url: str, catalog_dir: Path, request) -> str:
    """Lock ``a``, hold it through a backfill, then alter ``b``: in two migrations (one transaction on the
    previewed path) or in one (a step of its own on either path)."""
    run_sql(pg_url, "CREATE TABLE a (id INT); INSERT INTO a VALUES (1); CREATE TABLE b (id INT)")
    first = f"conn.execute('ALTER TABLE a ADD COLUMN c INT')\nconn.execute('SELECT pg_sleep({BACKFILL})')"
    second = "conn.execute('ALTER TABLE b ADD COLUMN c INT')"
    if request.param == "previewed":
        write_migration(catalog_dir, "0001", "Backfill a", upgrade=first)
        write_migration(catalog_dir, "0002", "Alter b", upgrade=second, depends_on=("0001",))
    else:
        write_migration(catalog_dir, "0001", "Backfill a, alter b", upgrade=f"{first}\n{second}")
    return pg_url


def failed_attempts(url: str) -> int:
    if query(url, "SELECT to_regclass('schema_migrations_log')") == [(None,)]:
        return 0
    return query(url, "SELECT count(*) FROM schema_migrations_log WHERE outcome = 'failed'")[0][0]


def read_again_and_again(url: str, table: str, until: threading.Event, waits: list[float]) -> None:
    """Read ``table`` every 50 ms (each read its own transaction) until ``until``, noting how long each waited."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not until.is_set():
            started = time.monotonic()
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            waits.append(time.monotonic() - started)
            time.sleep(0.05)


def readers_of_a(url: str, until: threading.Event, waits: list[float]) -> None:
    """Once the first attempt failed, read ``a`` again and again."""
    while failed_attempts(url) < 1 and not until.is_set():
        time.sleep(0.02)
    read_again_and_again(url, "a", until, waits)


def run_with_blocker(url: str, catalog: Path, path: str, release_after: int | None) -> tuple:
    """The run with a blocker on ``b`` (ended after ``release_after`` failed attempts, or kept), and the
    readers of ``a``; returns (result, their waits, the blocker's pid)."""
    held = psycopg.connect(url, application_name="nightly-report")
    held.execute("SELECT count(*) FROM b")  # its transaction stays open: ACCESS SHARE on b
    pid = held.info.backend_pid
    done, waits = threading.Event(), []
    reader = threading.Thread(target=readers_of_a, args=(url, done, waits))
    reader.start()

    def release() -> None:
        while release_after is not None and failed_attempts(url) < release_after and not done.is_set():
            time.sleep(0.02)
        held.commit()

    releaser = threading.Thread(target=release) if release_after is not None else None
    if releaser is not None:
        releaser.start()
    try:
        result = apm(url, "migrate", *PATHS[path], "--lock-timeout", "300ms", "--lock-retries", "2", catalog=catalog)
    finally:
        done.set()
        reader.join(10)
        if releaser is not None:
            releaser.join(10)
        held.close()
    return result, waits, pid


@pytest.mark.parametrize("plan", list(PATHS), indirect=True)
def test_retries_keep_readers_of_what_the_plan_locked_first_out_one_lock_timeout_at_most(plan, catalog_dir,
                                                                                       request):
    path = request.node.callspec.params["plan"]
    result, waits, pid = run_with_blocker(plan, catalog_dir, path, release_after=None)
    # Without the locks taken ahead, each retry held a for the whole backfill (2.5 s) again.
    assert waits and max(waits) < READER_BOUND, waits
    assert result.returncode == 6, result.stderr
    assert "in 3 attempts" in result.stderr and f"pid {pid}" in result.stderr and "Traceback" not in result.stderr
    told = [line for line in result.stderr.splitlines() if "trying again in" in line]
    assert len(told) == 2, result.stderr
    # The first attempt held a through the backfill, and says so; the second ran nothing.
    assert "it held ACCESS EXCLUSIVE on a for " in told[0] and "first takes its locks on a, b" in told[0], told[0]
    assert "taking its locks ahead, it ran nothing" in told[1], told[1]
    assert failed_attempts(plan) == 3  # each attempt is a row of the run log, the ones that ended ahead too
    assert query(plan, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'c'") == [(0,)]


@pytest.mark.parametrize("plan", list(PATHS), indirect=True)
def test_the_run_succeeds_once_the_blocker_ends_during_the_retries(plan, catalog_dir, request):
    path = request.node.callspec.params["plan"]
    result, waits, _ = run_with_blocker(plan, catalog_dir, path, release_after=2)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("trying again in") == 2, result.stderr
    assert waits and max(waits) < READER_BOUND + BACKFILL, waits  # the last attempt holds a through the backfill, once
    assert query(plan, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'c'") == [(2,)]
