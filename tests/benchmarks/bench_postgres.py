"""PostgreSQL targets, as ratios measured in one run (docs/postgresql.md).

1. Apply 1,000 trivial migrations to a fresh database with the PostgreSQL
   engine (advisory lock, one transaction per migration with its ledger and
   log rows) against a raw psycopg loop doing the same work (one
   transaction per migration with its ledger row): target <= 1.3x.
2. The default ``apm migrate`` path: the same 1,000 migrations previewed
   (the whole plan in one watched transaction, then committed), against the
   unwatched step-by-step run of 1 (``--no-preview``). Reported, no target.
3. Plan with 1,000 applied (read the ledger, make the apply plan) on
   PostgreSQL against the same on SQLite: target <= 1.2x.

Starts its own throwaway server (tests/pg_server.py). Run:
``python tests/benchmarks/bench_postgres.py [N]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import write_migration  # noqa: E402
from tests.pg_server import PgServer, find_bin_dir  # noqa: E402


def best(function, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main(n: int = 1000) -> None:
    import psycopg

    from planner.engines import engine_for
    from planner.loader import load_catalog
    from planner.plan import apply_plan

    server = PgServer(find_bin_dir())
    server.start()
    try:
        folder = Path(tempfile.mkdtemp()) / "migrations"
        folder.mkdir()
        for i in range(1, n + 1):
            write_migration(folder, f"{i:04d}", f"Table {i}", depends_on=(f"{i - 1:04d}",) if i > 1 else (),
                            upgrade=f"conn.execute('CREATE TABLE t{i} (id INT)')")
        catalog = load_catalog(folder)

        # 1. the engine against a raw loop, each on a fresh database.
        url = server.create_database()
        engine = engine_for(url)
        started = time.perf_counter()
        engine.runner(catalog=catalog).migrate(lambda ledger: apply_plan(catalog, ledger))
        engine_s = time.perf_counter() - started

        raw_url = server.create_database()
        started = time.perf_counter()
        with psycopg.connect(raw_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, "
                         "applied_at TIMESTAMP, checksum TEXT, execution_ms INTEGER)")
            for i in range(1, n + 1):
                with conn.transaction():
                    conn.execute(f"CREATE TABLE t{i} (id INT)")
                    conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, now(), %s, %s)",
                                 (f"{i:04d}", f"Table {i}", "x" * 64, 1))
        raw_s = time.perf_counter() - started

        # 2. the default run: previewed (watched, one transaction), then committed.
        preview_engine = engine_for(server.create_database())
        started = time.perf_counter()
        preview = preview_engine.runner(catalog=catalog).preview(apply_plan(catalog, {}), accept=lambda _p: True)
        preview_s = time.perf_counter() - started
        assert preview.committed and len(preview_engine.applied()) == n

        # 3. planning with n applied: PostgreSQL against SQLite.
        sqlite_db = Path(tempfile.mkdtemp()) / "bench.db"
        engine_for(str(sqlite_db)).runner(catalog=catalog, create=True).run(apply_plan(catalog, {}))
        sqlite_engine = engine_for(sqlite_db)
        pg_plan = best(lambda: apply_plan(catalog, engine.applied()))
        sqlite_plan = best(lambda: apply_plan(catalog, sqlite_engine.applied()))
    finally:
        server.stop()
    print(f"apply {n}: engine {engine_s:.2f}s, raw psycopg loop {raw_s:.2f}s, ratio {engine_s / raw_s:.2f} "
          f"(target <= 1.3)")
    print(f"apply {n} previewed (default apm migrate): {preview_s:.2f}s, {preview_s / engine_s:.2f}x the "
          f"unwatched run")
    print(f"plan with {n} applied: PostgreSQL {pg_plan * 1000:.1f} ms, SQLite {sqlite_plan * 1000:.1f} ms, "
          f"ratio {pg_plan / sqlite_plan:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
