"""``access-exclusive-held`` fires for work done under the lock, not for instant statements (tests/pg_server.py).

ACCESS EXCLUSIVE on a large table costs readers what runs while it is held:
a backfill, a scan, an index build, a rewrite, a slow statement. Metadata-only
statements (``ADD COLUMN``, ``RENAME``, ``SET DEFAULT``, ``DROP COLUMN``...)
run in a millisecond and keep nobody waiting, so a migration made only of
them has no finding; the advice names what did run.
"""

from __future__ import annotations

import pytest

from tests.test_pg_locks import TABLES, dry_run, large, migration  # noqa: F401 (large: a fixture)
from tests.test_postgres import run_sql

pytestmark = pytest.mark.postgres

INSTANT = ("ALTER TABLE t ADD COLUMN x INT", "ALTER TABLE t ADD COLUMN y INT DEFAULT 0 NOT NULL",
           "ALTER TABLE t RENAME COLUMN x TO x2", "ALTER TABLE t ALTER COLUMN c SET DEFAULT 'q'",
           "ALTER TABLE t DROP COLUMN x2", "COMMENT ON TABLE t IS 'orders'", "ALTER TABLE t ALTER COLUMN c DROP NOT NULL",
           "CREATE TABLE other (id INT)", "INSERT INTO other VALUES (1)")


def held(report: dict) -> dict[str, dict]:
    return {step["version"]: finding for step in report["steps"] for finding in step["findings"]
            if finding["code"] == "access-exclusive-held"}


def test_instant_statements_under_the_lock_are_no_finding(pg_url, catalog_dir, large):
    """Before: the second ADD COLUMN (and every instant statement after it, here or in a later migration of the
    same run) made ``access-exclusive-held`` with the backfill advice."""
    run_sql(pg_url, TABLES + "; ANALYZE t")
    migration(catalog_dir, "0001", *INSTANT)
    migration(catalog_dir, "0002", "ALTER TABLE t ADD COLUMN z INT", "ALTER TABLE t RENAME TO t2",
              depends_on=("0001",))
    status, report, _ = dry_run(pg_url, catalog_dir, cwd=large)
    assert status == 0 and held(report) == {}, report["steps"]


@pytest.mark.parametrize("work, what, advice", [
    ("UPDATE t SET c = 'y'", "wrote 200 rows", "run backfills in their own steps"),
    ("SELECT count(*) FROM t", "read 200 rows", "run what reads its rows"),
    ("CREATE INDEX t_c ON t (c)", "built 1 index(es)", "CREATE INDEX CONCURRENTLY"),
    ("ALTER TABLE t ALTER COLUMN id TYPE BIGINT", "1 rewrite(s)", "avoid the rewrite under it"),
    ("SELECT pg_sleep(0.3)", "1 slow statement(s)", "move the slow statements to their own steps"),
], ids=["backfill", "scan", "index", "rewrite", "slow"])
def test_work_under_the_lock_is_a_finding_whose_advice_fits_it(pg_url, catalog_dir, large, work, what, advice):
    run_sql(pg_url, TABLES + "; ANALYZE t")
    migration(catalog_dir, "0001", "ALTER TABLE t ADD COLUMN x INT", "ALTER TABLE t ADD COLUMN y INT", work)
    _, report, _ = dry_run(pg_url, catalog_dir, "--allow", "table-rewrite", "--allow", "index-not-concurrent",
                           cwd=large)
    finding = held(report)["0001"]
    assert f"while 1 later statement(s) do work under it ({what}" in finding["text"], finding["text"]
    assert f"e.g. {work}" in finding["text"] and advice in finding["advice"], finding
    assert "apm migrate --target VERSION" in finding["advice"]  # the command's own words, added


def test_work_in_a_later_migration_is_the_first_ones_finding(pg_url, catalog_dir, large):
    run_sql(pg_url, TABLES + "; ANALYZE t")
    migration(catalog_dir, "0001", "ALTER TABLE t ADD COLUMN x INT")
    migration(catalog_dir, "0002", "ALTER TABLE t ADD COLUMN y INT", depends_on=("0001",))
    migration(catalog_dir, "0003", "UPDATE t SET x = id", depends_on=("0002",))
    _, report, _ = dry_run(pg_url, catalog_dir, cwd=large)
    found = held(report)
    assert list(found) == ["0001"], report["steps"]
    assert "1 of them in later migrations of the same run (0003)" in found["0001"]["text"], found["0001"]["text"]
