"""The backup before a rollback, blocked by a lock another session holds (issue 25, tryout5 #7).

``pg_dump`` takes ACCESS SHARE on every table it dumps, so a session
holding ACCESS EXCLUSIVE on any table, even one the rollback never
touches, stops the backup. The failure must say what pg_dump could not
lock, within which limit, and who held it (as a step's lock timeout
does), and what to do: not pg_dump's last "Query was:" line and "Fix it".
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
