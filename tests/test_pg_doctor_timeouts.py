"""``apm migrate doctor`` reports the run log's lock and statement timeouts (tests/pg_server.py).

Each timed-out attempt is a ``failed`` row of the run log, rolled back whole.
The doctor said "healthy" and nothing else; now it names the migration, the
attempts, when, and who held the lock: a warning while the migration has not
succeeded since, an info once it has. Neither makes the database unhealthy:
nothing of the attempts was kept.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.conftest import write_migration
from tests.test_postgres import apm, run_sql

pytestmark = pytest.mark.postgres


def timeouts(url: str, catalog) -> tuple[int, list[dict]]:
    result = apm(url, "migrate", "doctor", "--json", catalog=catalog)
    report = json.loads(result.stdout)
    return result.returncode, [f for f in report["findings"] if f["code"] == "lock-timeouts"]


def test_failed_lock_attempts_are_reported_and_do_not_make_the_database_unhealthy(pg_url, catalog_dir):
    run_sql(pg_url, "CREATE TABLE t (id INT); INSERT INTO t VALUES (1)")
    write_migration(catalog_dir, "0001", "Add a column", upgrade="conn.execute('ALTER TABLE t ADD COLUMN c INT')")
    blocker = psycopg.connect(pg_url, application_name="nightly-report")
    blocker.execute("SELECT count(*) FROM t")  # holds ACCESS SHARE until it ends
    try:
        failed = apm(pg_url, "migrate", "--lock-timeout", "200ms", "--lock-retries", "1", catalog=catalog_dir)
    finally:
        blocker.close()
    assert failed.returncode == 6, failed.stderr
    code, found = timeouts(pg_url, catalog_dir)
    assert code == 0 and len(found) == 1, found
    assert found[0]["severity"] == "warning" and found[0]["version"] == "0001", found
    message = found[0]["message"]
    assert "0001's apply could not get a lock within the lock timeout in 2 attempt(s)" in message, message
    assert 'application "nightly-report"' in message and "has not succeeded since" in message, message
    assert "migrate" in found[0]["fix"]
    text = apm(pg_url, "migrate", "doctor", catalog=catalog_dir)
    assert text.returncode == 0 and "lock-timeouts" in text.stdout and ": healthy (" in text.stdout, text.stdout

    assert apm(pg_url, "migrate", catalog=catalog_dir).returncode == 0  # the blocker is gone
    code, found = timeouts(pg_url, catalog_dir)
    assert code == 0 and [f["severity"] for f in found] == ["info"], found
    assert "succeeded at" in found[0]["message"] and found[0]["fix"] is None, found


def test_a_statement_timeout_is_reported_the_same_way(pg_url, catalog_dir):
    write_migration(catalog_dir, "0001", "Slow", upgrade="conn.execute('SELECT pg_sleep(2)')")
    result = apm(pg_url, "migrate", "--statement-timeout", "100ms", catalog=catalog_dir)
    assert result.returncode == 6, result.stderr
    code, found = timeouts(pg_url, catalog_dir)
    assert code == 0 and [f["severity"] for f in found] == ["warning"], found
    assert "0001's apply ran past the statement timeout in 1 attempt(s)" in found[0]["message"], found
