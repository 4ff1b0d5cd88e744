"""What a real run tells of its locks (the real server): findings shown and logged, apm's sessions named.

docs/locks.md says an accepted finding is still shown: a real run showed
none, and the run log kept no trace of them. A DBA looking at
``pg_stat_activity`` could not tell apm's session from the application's.
A ``CREATE INDEX CONCURRENTLY`` the preview passes over adds an index: it is
not said to change no schema or data.
"""

from __future__ import annotations

import pytest

from tests.conftest import write_migration
from tests.test_postgres import apm, query, run_sql

pytestmark = pytest.mark.postgres


def test_a_real_run_shows_and_logs_the_lock_findings_it_committed_with(pg_url, catalog_dir):
    run_sql(pg_url, "CREATE TABLE t (id INT, x INT); INSERT INTO t SELECT g, g FROM generate_series(1, 100) g")
    write_migration(catalog_dir, "0001", "Index t", depends_on=(), extra='allow = ["index-not-concurrent"]\n',
                    upgrade="conn.execute('CREATE INDEX t_x ON t (x)')\n"
                            "conn.execute(\"CREATE TABLE seen AS SELECT current_setting('application_name') AS name\")")
    result = apm(pg_url, "migrate", catalog=catalog_dir)
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.stderr.splitlines() if "index-not-concurrent" in line]
    assert shown and "0001 apply: lock error: index-not-concurrent" in shown[0], result.stderr
    assert "(accepted by the migration)" in shown[0]
    (detail,), = query(pg_url, "SELECT detail FROM schema_migrations_log WHERE version = '0001' AND outcome = 'ok'")
    assert "lock error: index-not-concurrent" in (detail or "") and "accepted by the migration" in detail, detail
    assert query(pg_url, "SELECT name FROM seen") == [("apm",)]  # the run's own session is named


def test_a_passed_over_concurrent_build_is_said_to_add_an_index(pg_url, catalog_dir):
    run_sql(pg_url, "CREATE TABLE t (id INT, x INT)")
    write_migration(catalog_dir, "0001", "Index t", depends_on=(), extra="transactional = False\n",
                    upgrade="conn.execute('CREATE INDEX CONCURRENTLY t_x ON t (x)')")
    result = apm(pg_url, "migrate", "--dry-run", catalog=catalog_dir)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "not run by the preview" in line)
    assert "adds an index when the step runs" in line and "changes no schema or data" not in line, line
    check = apm(pg_url, "migrate", "check", catalog=catalog_dir)
    note = next(line for line in check.stdout.splitlines() if line.startswith("locks:"))
    assert "adds an index when the step runs" in note and "changes no schema" not in note, note
