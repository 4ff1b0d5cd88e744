"""What a previewed step costs on PostgreSQL: round trips counted in libpq's own trace, and the reading's rows.

Issue 25's targets (docs/performance.md, PostgreSQL): per step the raw loop
makes four round trips (BEGIN, the statement, the ledger row, COMMIT). The
preview made three per applied step: the step's savepoint, the migration's
statement, the ledger and log rows. A step whose catalog reading waits for
a later one (``PgObserver.close_step``) now sends the next step's savepoint
behind its ledger row: two. A rolled back step stays at three (the count
before the drop carries the savepoint, then the drop, then the ledger row).
What each step reports is unchanged (tests/test_postgres_step_catalog.py,
tests/test_pg_rollback_steps.py); here: the count, and that a step that
cannot share its reading, or is rehearsed outside a transaction, still
closes its own savepoint.

The catalog reading (``postgresql.step_catalog``) repeated its arrays (the
oids written, all oids after a drop, the objects) on every row, one row
per column read: the reading that closed a preview of 1,000 new tables sent
those 1,000 oids 1,000 times. They now come on the first row only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import write_migration

pytestmark = pytest.mark.postgres


def _trips(trace: Path) -> int:
    """Round trips the client started: each simple ``Query``, and each ``Sync`` ending an extended query."""
    sent = [line.split("\t") for line in trace.read_text(errors="replace").splitlines()]
    return sum(1 for fields in sent if len(fields) > 2 and fields[0] == "F" and fields[2] in ("Query", "Sync"))


def _previewed(url: str, folder: Path, trace: Path, *, rollback_to: str | None = None) -> None:
    """The default path's preview, committed, with the run's connection traced into ``trace``."""
    from psycopg import pq

    from planner.engines import engine_for
    from planner.loader import load_catalog
    from planner.plan import apply_plan, rollback_plan

    catalog = load_catalog(folder)
    engine = engine_for(url)
    connect, opened = engine.connect, []

    def traced():
        conn = connect()
        if not opened:  # the run's locked connection; the blocker watch's, opened after it, is not traced
            descriptor = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            opened.append(descriptor)
            conn.pgconn.trace(descriptor)
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        return conn

    plan = (apply_plan(catalog, {}) if rollback_to is None else
            rollback_plan(catalog, engine.applied(), rollback_to, cascade=True))
    engine.connect = traced
    runner = engine.runner(catalog=catalog)
    try:
        preview = runner.preview(plan, accept=lambda _preview: True)
    finally:
        for descriptor in opened:
            os.close(descriptor)
    assert preview.error is None and preview.committed, preview.error


def _chain(folder: Path, count: int, first: int = 1, **extra: str) -> None:
    for i in range(first, first + count):
        write_migration(folder, f"{i:04d}", f"Table {i}", depends_on=(f"{i - 1:04d}",) if i > 1 else (),
                        upgrade=f"conn.execute('CREATE TABLE t{i} (id INT)')",
                        downgrade=f"conn.execute('DROP TABLE t{i}')", **extra)


def _per_step(pg_server, tmp_path: Path, few: int, many: int, *, rollback: bool = False) -> float:
    """Round trips per step: the difference between a plan of ``many`` steps and one of ``few``, so what a run
    sends once (the lock, the ledger's tables, the first readings, the commit) cancels out."""
    counts = []
    for n in (few, many):
        folder = tmp_path / f"m{n}"
        folder.mkdir()
        _chain(folder, n)
        url = pg_server.create_database()
        trace = tmp_path / f"trace{n}"
        if rollback:
            _previewed(url, folder, tmp_path / f"applied{n}")
        _previewed(url, folder, trace, rollback_to="0001" if rollback else None)
        counts.append(_trips(trace))
    return (counts[1] - counts[0]) / (many - few)


def test_an_applied_step_whose_reading_waits_takes_two_round_trips(pg_server, tmp_path: Path):
    assert _per_step(pg_server, tmp_path, 4, 24) == 2  # the statement; the ledger row with the next savepoint


def test_a_rolled_back_step_takes_three_round_trips(pg_server, tmp_path: Path):
    assert _per_step(pg_server, tmp_path, 4, 24, rollback=True) == 3  # the count; the drop; the ledger row


def test_steps_that_read_at_once_or_run_rehearsed_keep_their_own_savepoints(pg_url: str, catalog_dir: Path,
                                                                           tmp_path: Path):
    """A step whose reading cannot wait (it writes rows), then quiet steps, one rehearsed outside a transaction
    among them: each still reports its own work, and the ledger holds every step."""
    import psycopg

    _chain(catalog_dir, 2)
    write_migration(catalog_dir, "0003", "Rows", depends_on=("0002",),
                    upgrade="conn.execute('INSERT INTO t1 VALUES (1), (2)')")
    _chain(catalog_dir, 2, first=4)
    write_migration(catalog_dir, "0006", "Index", depends_on=("0005",), extra="transactional = False",
                    upgrade="conn.execute('CREATE INDEX CONCURRENTLY t5_id ON t5 (id)')")
    write_migration(catalog_dir, "0007", "Table 7", depends_on=("0006",),
                    upgrade="conn.execute('CREATE TABLE t7 (id INT)')")
    from planner.engines import engine_for
    from planner.loader import load_catalog
    from planner.plan import apply_plan

    catalog = load_catalog(catalog_dir)
    preview = engine_for(pg_url).runner(catalog=catalog).preview(apply_plan(catalog, {}), accept=lambda _p: False)
    lines = preview.describe()
    assert lines[:5] == ["0001 apply: adds table t1", "0002 apply: adds table t2", "0003 apply: inserts 2 rows into t1",
                         "0004 apply: adds table t4", "0005 apply: adds table t5"], lines
    assert lines[5].startswith("0006 apply: `CREATE INDEX CONCURRENTLY t5_id ON t5 (id)` not run by the preview"), lines
    assert lines[6:] == ["0007 apply: adds table t7"], lines
    with psycopg.connect(pg_url, autocommit=True) as conn:  # not accepted: nothing of it stayed
        assert conn.execute("SELECT to_regclass('t1') IS NULL").fetchone() == (True,)


def test_the_reading_sends_its_arrays_on_its_first_row_only(pg_url: str):
    import psycopg

    from planner.engines.postgresql.ledger import PgLedger
    from planner.engines.postgresql.step_catalog import _WIDTH, PreparedSet, _prepared_step

    tables = 30
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.prepare_threshold = None  # as in the preview: prepared by name only
        ledger = PgLedger(conn)
        ledger.ensure_schema()
        conn.execute("BEGIN")
        ledger.log("0000", "apply", "ok", None)
        step = conn.execute("SELECT xmin::text FROM schema_migrations_log").fetchone()[0]
        conn.execute("SAVEPOINT s; " + "; ".join(f"CREATE TABLE t{i} (id INT, name TEXT)" for i in range(tables)))
        conn.execute("DROP TABLE t0")  # so the reading lists every relation's oid too
        ledger.log("0001", "apply", "ok", None)
        prepared, statement = PreparedSet(), _prepared_step(ledger.log_table)
        parameters = dict.fromkeys(statement.order, 0) | {"step": step}
        for _ in range(7):  # past the server's switch to a generic plan (after five runs)
            rows = prepared.execute(conn, statement, parameters).fetchall()
            assert len(rows) == (tables - 1) * 2  # one row per column of each new table
            written, present = rows[0][_WIDTH:_WIDTH + 2]
            assert len(written) >= tables - 1 and len(present) >= tables - 1  # toast tables and indexes too
            assert all(row[_WIDTH:_WIDTH + 4] == (None,) * 4 for row in rows[1:])
            assert {row[_WIDTH + 7] for row in rows} == {f"t{i}" for i in range(1, tables)}
        conn.execute("ROLLBACK")
