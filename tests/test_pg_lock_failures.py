"""Failures a live database's locks and limits cause, said so a person can act (issue 25, tryout5 #7, #8).

The backup before a rollback: ``pg_dump`` takes ACCESS SHARE on every
table it dumps, so a session holding ACCESS EXCLUSIVE on any table, even
one the rollback never touches, stops the backup. The failure must say
what pg_dump could not lock, within which limit, and who held it (as a
step's lock timeout does), and what to do: not pg_dump's last "Query
was:" line and "Fix it". A statement timeout names the statement, the
limit and where it came from, and is not reported as a bug in the
migration.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.conftest import run_apm, write_migration
from tests.test_postgres import applied, run_sql

pytestmark = pytest.mark.postgres


def test_a_backup_blocked_by_a_lock_names_the_table_the_limit_and_the_blocker(pg_url: str, catalog_dir: Path,
                                                                              tmp_path: Path):
    run_sql(pg_url, "CREATE TABLE customers (id INT); INSERT INTO customers VALUES (1)")
    write_migration(catalog_dir, "0001", "Events", upgrade="conn.execute('CREATE TABLE events (id INT)')",
                    downgrade="conn.execute('DROP TABLE events')")
    assert run_apm("--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate").returncode == 0
    folder = tmp_path / "backups"
    with psycopg.connect(pg_url, application_name="billing job") as holder:
        holder.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")  # an unrelated table, held open
        blocked = run_apm("--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate", "--rollback", "0001",
                          "--yes", "--busy-timeout", "1", "--backup-dir", str(folder))
        pid = holder.info.backend_pid
    assert blocked.returncode == 6, blocked.stderr
    line = blocked.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "pg_dump could not lock public.customers within 1s (the busy timeout)" in line, line
    assert f'held by pid {pid} (application "billing job"' in line, line
    assert "--busy-timeout" in line and "--no-backup" in line and "Fix it" not in line, line
    assert "nothing was changed" in line
    assert applied(pg_url) == ["0001"] and not [p for p in folder.iterdir()] if folder.exists() else True


@pytest.mark.parametrize("path", [(), ("--no-preview",)], ids=["previewed", "step-by-step"])
def test_a_statement_timeout_names_the_statement_the_limit_and_where_it_came_from(pg_url: str, catalog_dir: Path,
                                                                                  tmp_path: Path, path):
    """tryout5 #8: a statement that runs past --statement-timeout is a limit met on this data, not a bug in the
    migration (exit 5): exit 6, naming the statement, the limit and its source, and how to raise it."""
    run_sql(pg_url, "CREATE TABLE t (id INT)")
    write_migration(catalog_dir, "0001", "Slow", upgrade="conn.execute('SELECT 1')\n"
                    "conn.execute('UPDATE t SET id = id WHERE pg_sleep(0.5) IS NULL OR true')\n"
                    "conn.execute('SELECT pg_sleep(1)')")
    args = ("--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate", *path)
    for source, extra in (("option --statement-timeout", ("--statement-timeout", "300ms")), ("config", ())):
        (tmp_path / "apm.toml").write_text('statement_timeout = "300ms"\n')
        result = run_apm(*args, *extra, "--yes", cwd=tmp_path)
        assert result.returncode == 6, result.stderr
        line = next(line for line in result.stderr.splitlines() if "statement timeout" in line)
        assert "Traceback" not in result.stderr and "QueryCanceled" not in line, result.stderr
        assert "migration 0001's statement `SELECT pg_sleep(1)` ran past the statement timeout (300ms" in line, line
        assert f"from {source}" in line and "raise --statement-timeout" in line.lower(), line
        assert applied_or_none(pg_url) == []
    # The dry run says the same (its exit code too).
    if path:
        return
    dry = run_apm(*args, "--dry-run", "--statement-timeout", "300ms", cwd=tmp_path)
    assert dry.returncode == 6 and "ran past the statement timeout (300ms" in dry.stdout + dry.stderr, dry.stderr


def applied_or_none(url: str) -> list[str]:
    from tests.test_postgres import query

    if not query(url, "SELECT to_regclass('schema_migrations') IS NOT NULL")[0][0]:
        return []
    return applied(url)


@pytest.mark.parametrize("command", [("migrate", "check"), ("migrate", "--dry-run")], ids=["check", "dry-run"])
def test_a_preview_never_waits_in_a_lock_queue_longer_than_the_lock_timeout(pg_url: str, catalog_dir: Path, command):
    """tryout5 #1: a check or dry run pointed at a live database takes the run's locks, so it runs under the run's
    lock timeout: behind a long transaction it gives up (exit 6, the blocker named), never queueing readers."""
    from tests.test_pg_lock_timeout import blocker

    run_sql(pg_url, "CREATE TABLE t (id INT); INSERT INTO t VALUES (1)")
    write_migration(catalog_dir, "0001", "Add a column", upgrade="conn.execute('ALTER TABLE t ADD COLUMN c INT')")
    holder = blocker(pg_url)
    try:
        # The blocker's transaction never ends by itself: that the command returns at all is the point.
        result = run_apm(*command, "--db", pg_url, "--migrations-dir", str(catalog_dir), "--lock-timeout", "300ms",
                         "--lock-retries", "0")
    finally:
        holder.close()
    assert result.returncode == 6, result.stdout + result.stderr
    assert "could not get its lock within the lock timeout (300ms)" in result.stderr and "nightly-report" in \
        result.stderr, result.stderr
