"""The preview's per-step readings are planned once per preview, whatever its steps drop or alter.

psycopg forgets every statement it prepared when a statement it has not
seen before reports DROP or ALTER, and every step of a rollback is one: the
server parsed and planned the step's catalog reading (5 kB) and the lock
reading again at each step, over half of a rollback preview's server time.
The readings are now prepared by name for the preview
(planner/engines/postgresql/step_catalog.py). A migration reads
``pg_prepared_statements`` (PostgreSQL 14+: how often each ran) to see it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_apm, write_migration
from tests.test_postgres import run_sql

pytestmark = pytest.mark.postgres

STEPS = 8
REPORT = ("for name, runs in conn.execute(\"SELECT regexp_replace(name, '_[0-9_]+$', ''), generic_plans + "
          "custom_plans FROM pg_prepared_statements ORDER BY 1\").fetchall():\n"
          "    print(name, runs)")


def _dry_run(url: str, catalog_dir: Path) -> list[str]:
    result = run_apm("--db", url, "--migrations-dir", str(catalog_dir), "migrate", "--dry-run", "--json")
    assert result.returncode in (0, 7), result.stderr
    return json.loads(result.stdout)["steps"][-1]["output"].split("\n")


def test_the_readings_stay_prepared_through_steps_that_drop_and_alter(pg_url: str, catalog_dir: Path):
    run_sql(pg_url, "CREATE TABLE base (id INT)" + "".join(f"; CREATE TABLE t{i} (id INT)" for i in range(STEPS)))
    for i in range(STEPS):  # each step a statement psycopg has not seen, reporting DROP or ALTER
        statement = f"DROP TABLE t{i}" if i % 2 else f"ALTER TABLE base ADD COLUMN c{i} INT"
        write_migration(catalog_dir, f"{i + 1:04d}", f"Step {i}", depends_on=(f"{i:04d}",) if i else (),
                        upgrade=f"conn.execute({statement!r})")
    write_migration(catalog_dir, f"{STEPS + 1:04d}", "Report", depends_on=(f"{STEPS:04d}",), upgrade=REPORT)
    lines = _dry_run(pg_url, catalog_dir)
    runs = {name: int(count) for name, count in (line.rsplit(" ", 1) for line in lines if line)}
    # Some statement was planned once and run at every step before the last (the report runs inside the last).
    assert max(runs.values(), default=0) >= STEPS, lines
    assert runs["apm_step_reading"] >= STEPS, lines
    assert runs["apm_lock_reading"] >= STEPS // 2, lines  # after each ALTER (a DROP TABLE alone is not read)


def test_a_migration_that_deallocates_everything_does_not_break_the_preview(pg_url: str, catalog_dir: Path):
    run_sql(pg_url, "CREATE TABLE base (id INT); INSERT INTO base VALUES (1), (2)")
    write_migration(catalog_dir, "0001", "One", depends_on=(), upgrade="conn.execute('ALTER TABLE base ADD c1 INT')")
    write_migration(catalog_dir, "0002", "Deallocate", depends_on=("0001",),
                    upgrade="conn.execute('DEALLOCATE ALL')\nconn.execute('ALTER TABLE base ADD c2 INT')")
    write_migration(catalog_dir, "0003", "Raw", depends_on=("0002",),
                    upgrade="conn.raw.execute('DEALLOCATE ALL')\nconn.execute('ALTER TABLE base ADD c3 INT')")
    write_migration(catalog_dir, "0004", "Drop", depends_on=("0003",), upgrade="conn.execute('DROP TABLE base')")
    result = run_apm("--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate", "--dry-run", "--json")
    assert result.returncode == 7, result.stderr  # the drop's loss: every step was previewed to the end
    steps = json.loads(result.stdout)["steps"]
    assert [s["error"] for s in steps] == [None] * 4
    assert [i["text"] for i in steps[-1]["impact"]] == ["drops table base holding 2 rows"]
