"""A previewed rollback on PostgreSQL in three round trips per step, with what each step did still its own.

Issue 25's target (docs/performance.md, PostgreSQL): a rolled back step
wrote its ledger row's deletion and its log row in two statements, and
opened its savepoint in a round trip of its own. Now the deletion and the
log row are one statement (``PgLedger.record_unapplied_and_log``), and
the step's savepoint rides with the count before its first drop
(``PgObserver.open_step``). The savepoint still comes before anything the
step writes, so every step's lines and counts are its own, including a
step that runs nothing, one whose drop of a missing table fails its count,
one under its own ``lock_timeout``, and one rehearsed outside a transaction.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_migration
from tests.test_postgres import applied, apm, query, run_sql

pytestmark = pytest.mark.postgres


def test_the_combined_ledger_statement_finds_every_spelling_and_writes_one_log_row(pg_url):
    import psycopg

    from planner.engines.postgresql.ledger import PgLedger
    from planner.migration import Migration

    with psycopg.connect(pg_url, autocommit=True) as conn:
        ledger = PgLedger(conn)
        ledger.ensure_schema()
        conn.execute("INSERT INTO schema_migrations (version) VALUES ('27'), ('0030'), ('²'), ('0100')")
        for version in ("0027", "0030", "0031"):  # another spelling, the exact one, none at all
            migration = Migration(version=version, description="", path=Path(f"migration_{version}.py"),
                                  checksum="c" + version, depends_on=(), dependency_source="declared", doc="",
                                  upgrade=lambda c: None)
            ledger.record_unapplied_and_log(migration, 7, "rollback", "why")
        assert sorted(ledger.applied_migrations()) == ["0100", "²"]
        assert conn.execute("SELECT version, action, checksum, execution_ms, outcome, detail "
                            "FROM schema_migrations_log ORDER BY id").fetchall() == [
            ("0027", "rollback", "c0027", 7, "ok", "why"), ("0030", "rollback", "c0030", 7, "ok", "why"),
            ("0031", "rollback", "c0031", 7, "ok", "why")]


def test_each_rolled_back_step_reports_its_own_work(pg_url, catalog_dir):
    steps = {  # version: (upgrade, downgrade)
        "0001": ("conn.execute('CREATE TABLE t1 (id INT)')", "conn.execute('DROP TABLE t1')"),
        "0002": ("conn.execute('CREATE TABLE t2 (id INT)')", "print('nothing to undo')"),
        "0003": ("conn.execute('CREATE TABLE t3 (id INT)')",
                 "conn.execute('DROP TABLE IF EXISTS gone')\nconn.execute('DROP TABLE t3')"),
        "0004": ("conn.execute('CREATE TABLE t4 (id INT)')", "conn.execute('DROP TABLE t4')"),
        "0005": ("conn.execute('CREATE TABLE t5 (id INT)')", "conn.execute('DROP TABLE t5')"),
    }
    for n, (version, (upgrade, downgrade)) in enumerate(steps.items()):
        write_migration(catalog_dir, version, f"Step {version}", depends_on=(f"{n:04d}",) if n else (),
                        upgrade=upgrade, downgrade=downgrade,
                        extra='lock_timeout = "5s"' if version == "0004" else "")
    assert apm(pg_url, "migrate", "--yes", catalog=catalog_dir).returncode == 0
    run_sql(pg_url, "INSERT INTO t1 VALUES (1), (2); INSERT INTO t3 VALUES (1); INSERT INTO t5 VALUES (1), (2), (3)")
    dry = apm(pg_url, "migrate", "--rollback", "0001", "--cascade", "--dry-run", "--json", catalog=catalog_dir)
    assert dry.returncode == 7, dry.stderr
    report = json.loads(dry.stdout)
    assert [line for line in report["lines"] if ": lock " not in line] == [
        "0005 rollback: drops table t5 holding 3 rows",
        "0004 rollback: drops table t4 (it was empty)",
        "0003 rollback: drops table t3 holding 1 row",
        "0002 rollback: no schema or data change",
        "0001 rollback: drops table t1 holding 2 rows"], report["lines"]
    assert report["unchecked"] == []
    done = apm(pg_url, "migrate", "--rollback", "0001", "--cascade", "--yes", "--no-backup", catalog=catalog_dir)
    assert done.returncode == 0, done.stderr
    assert applied(pg_url) == [] and query(pg_url, "SELECT to_regclass('t2') IS NOT NULL") == [(True,)]
    assert query(pg_url, "SELECT version FROM schema_migrations_log WHERE action = 'rollback' AND outcome = 'ok' "
                         "ORDER BY id") == [("0005",), ("0004",), ("0003",), ("0002",), ("0001",)]
