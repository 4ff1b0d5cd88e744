"""Indexes built outside a transaction (``CREATE INDEX CONCURRENTLY``) on the real server.

Such a build waits for older transactions without blocking any reader or
writer, so it waits with no lock timeout unless its migration declares one
(a timeout would only leave an invalid index). An index left invalid (a
failed build, or ``IF NOT EXISTS`` finding the remains of one) fails the
step, unrecorded, naming the index and ``DROP INDEX CONCURRENTLY``; the run
log never says such a step was rolled back or will be tried again.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import write_migration
from tests.test_postgres import apm, applied, query, run_sql

pytestmark = pytest.mark.postgres


def build(catalog_dir: Path, sql: str, declared: str | None = None) -> None:
    extra = "transactional = False\n" + (f"lock_timeout = {declared!r}\n" if declared else "")
    write_migration(catalog_dir, "0001", "Index t", depends_on=(), extra=extra, upgrade=f"conn.execute({sql!r})")


def writer(url: str) -> psycopg.Connection:
    """An idle-in-transaction session that wrote to ``t``: a concurrent build waits for it to end."""
    conn = psycopg.connect(url, application_name="nightly-report")
    conn.execute("UPDATE t SET x = x WHERE id = 1")
    return conn


def valid(url: str, name: str) -> list[tuple]:
    return query(url, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,))


def test_a_concurrent_build_waits_for_an_open_transaction_past_the_lock_timeout(pg_url, catalog_dir):
    run_sql(pg_url, "CREATE TABLE t (id INT, x INT); INSERT INTO t SELECT g, g FROM generate_series(1, 100) g")
    build(catalog_dir, "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_x ON t (x)")
    held = writer(pg_url)
    timer = threading.Timer(1.5, held.commit)  # five lock timeouts: the build would have given up long before
    timer.start()
    try:
        started = time.monotonic()
        result = apm(pg_url, "migrate", "--lock-timeout", "300ms", catalog=catalog_dir)
        took = time.monotonic() - started
    finally:
        timer.join()
        held.close()
    assert result.returncode == 0, result.stderr
    assert took >= 1.2, took  # it did wait for the writer
    assert valid(pg_url, "t_x") == [(True,)] and applied(pg_url) == ["0001"]


def test_a_build_with_its_own_lock_timeout_names_the_blocker_and_the_invalid_index_it_left(pg_url, catalog_dir):
    run_sql(pg_url, "CREATE TABLE t (id INT, x INT); INSERT INTO t SELECT g, g FROM generate_series(1, 100) g")
    build(catalog_dir, "CREATE INDEX CONCURRENTLY t_x ON t (x)", declared="300ms")
    held = writer(pg_url)
    try:
        result = apm(pg_url, "migrate", "--lock-retries", "2", catalog=catalog_dir)
        pid = held.info.backend_pid
    finally:
        held.close()
    assert result.returncode == 5, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "lock timeout (300ms, the migration's own): held by pid " + str(pid) in error, error
    assert "the index t_x is left invalid" in error and "DROP INDEX CONCURRENTLY t_x" in error, error
    assert "trying again" not in result.stderr
    logged = [r[0] for r in query(pg_url, "SELECT detail FROM schema_migrations_log WHERE outcome = 'failed'")]
    assert len(logged) == 1 and "neither rolled back nor tried again" in logged[0], logged  # what doctor quotes
    assert "trying again" not in logged[0] and f"pid {pid}" in logged[0]
    assert valid(pg_url, "t_x") == [(False,)] and applied(pg_url) == []


def test_an_index_left_invalid_is_never_recorded_as_built(pg_url, catalog_dir):
    run_sql(pg_url, "CREATE TABLE t (id INT, x INT); INSERT INTO t VALUES (1, 1), (2, 1)")  # x is not unique
    build(catalog_dir, "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_x ON t (x)")
    first = apm(pg_url, "migrate", catalog=catalog_dir)  # the build fails, and leaves t_x invalid
    assert first.returncode == 5, first.stderr
    assert "the index t_x is left invalid" in first.stderr and "DROP INDEX CONCURRENTLY t_x" in first.stderr
    second = apm(pg_url, "migrate", catalog=catalog_dir)  # IF NOT EXISTS skips the broken index
    assert second.returncode == 5, second.stdout + second.stderr
    assert "the index t_x is left invalid" in second.stderr and "Traceback" not in second.stderr
    assert applied(pg_url) == [] and valid(pg_url, "t_x") == [(False,)]
    run_sql(pg_url, "DELETE FROM t WHERE id = 2")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP INDEX CONCURRENTLY t_x")  # as the error says
    third = apm(pg_url, "migrate", catalog=catalog_dir)
    assert third.returncode == 0, third.stderr
    assert applied(pg_url) == ["0001"] and valid(pg_url, "t_x") == [(True,)]
