"""SQLite's part of the lock analysis (issue 25, point 5): the tables a plan rebuilt, with their rows, and how
long the plan held the write lock, in the preview's JSON and its text.

SQLite has one lock for the whole file: what costs other writers is how long
the plan holds it, and a rebuild (a new table, every row copied, the old one
dropped) is where a migration spends that time.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run_apm, write_migration

ROWS = 37


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with ``t`` (37 rows) and ``u`` (2 rows), made before the plan."""
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, c TEXT)")
        conn.executemany("INSERT INTO t (c) VALUES (?)", [(f"v{i}",) for i in range(ROWS)])
        conn.execute("CREATE TABLE u (id INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO u VALUES (?)", [(1,), (2,)])
    conn.close()
    return path


def dry_run(db: Path, catalog_dir: Path, *options: str):
    return run_apm("--db", str(db), "--migrations-dir", str(catalog_dir), "migrate", "--dry-run", *options)


def report(db: Path, catalog_dir: Path) -> dict:
    result = dry_run(db, catalog_dir, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


BY_HAND_NEW_FIRST = """
    conn.execute("CREATE TABLE t_new (id INTEGER PRIMARY KEY, c TEXT NOT NULL DEFAULT '')")
    conn.execute("INSERT INTO t_new (id, c) SELECT id, coalesce(c, '') FROM t")
    conn.execute("DROP TABLE t")
    conn.execute("ALTER TABLE t_new RENAME TO t")
"""
BY_HAND_OLD_AWAY_FIRST = """
    conn.execute("ALTER TABLE t RENAME TO t_old")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, c TEXT NOT NULL DEFAULT '')")
    conn.execute("INSERT INTO t (id, c) SELECT id, coalesce(c, '') FROM t_old")
    conn.execute("DROP TABLE t_old")
"""
WITH_REBUILD_TABLE = """
    rebuild_table(conn, "t", "CREATE TABLE t (id INTEGER PRIMARY KEY, c TEXT NOT NULL DEFAULT '')")
"""


@pytest.mark.parametrize("upgrade", [WITH_REBUILD_TABLE, BY_HAND_NEW_FIRST, BY_HAND_OLD_AWAY_FIRST],
                         ids=["rebuild_table", "new-table-first", "old-table-away-first"])
def test_each_way_of_rebuilding_is_reported_with_its_rows(db, catalog_dir, upgrade):
    write_migration(catalog_dir, "0001", "Rebuild t", depends_on=(), upgrade=upgrade,
                    extra="from planner import rebuild_table\n")
    write_migration(catalog_dir, "0002", "Add to u", depends_on=("0001",),
                    upgrade='conn.execute("ALTER TABLE u ADD COLUMN note TEXT")')
    data = report(db, catalog_dir)
    first, second = data["steps"]
    assert first["rebuilds"] == [{"table": "t", "rows": ROWS}] and first["rewrites"] == ["t"], first
    assert second["rebuilds"] == [] and second["rewrites"] == []  # ADD COLUMN rebuilds nothing

    text = dry_run(db, catalog_dir).stdout
    line = next(line for line in text.splitlines() if "held the write lock" in line)
    assert "BEGIN IMMEDIATE to ROLLBACK" in line and line.endswith(f"; rebuilt t ({ROWS} rows)"), line


def test_the_rows_are_those_the_table_held_when_rebuilt(db, catalog_dir):
    """Rows the same step adds after the rebuild were not copied by it."""
    write_migration(catalog_dir, "0001", "Rebuild then fill", depends_on=(), extra="from planner import rebuild_table\n",
                    upgrade=WITH_REBUILD_TABLE + '    conn.execute("INSERT INTO t (c) SELECT c FROM t")\n')
    assert report(db, catalog_dir)["steps"][0]["rebuilds"] == [{"table": "t", "rows": ROWS}]


def test_write_lock_time_spans_the_plan_from_begin_to_rollback(db, catalog_dir):
    write_migration(catalog_dir, "0001", "Slow", depends_on=(), extra="import time\n",
                    upgrade='\n    time.sleep(0.15)\n    conn.execute("CREATE TABLE w (id INTEGER)")\n')
    write_migration(catalog_dir, "0002", "Slow too", depends_on=("0001",), extra="import time\n",
                    upgrade='\n    time.sleep(0.15)\n    conn.execute("DROP TABLE w")\n')
    data = report(db, catalog_dir)
    held, steps = data["write_lock_ms"], [s["duration_ms"] for s in data["steps"]]
    assert held >= sum(steps) >= 300, (held, steps)  # both steps ran under the one lock
    assert held <= data["duration_ms"]  # and it is part of the preview, not the whole command
    assert all(step["rebuilds"] == [] for step in data["steps"])
    assert "rebuilt no table" in dry_run(db, catalog_dir).stdout


def test_a_real_run_reports_them_in_its_json_and_the_rows_are_kept(db, catalog_dir):
    write_migration(catalog_dir, "0001", "Rebuild t", depends_on=(), upgrade=WITH_REBUILD_TABLE,
                    extra="from planner import rebuild_table\n")
    result = run_apm("--db", str(db), "--migrations-dir", str(catalog_dir), "migrate", "--json")
    assert result.returncode == 0, result.stderr
    preview = json.loads(result.stdout)["preview"]
    assert preview["steps"][0]["rebuilds"] == [{"table": "t", "rows": ROWS}]
    assert preview["committed"] and preview["write_lock_ms"] > 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (ROWS,)
    conn.close()
