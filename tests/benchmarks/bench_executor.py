"""How much the executor costs over plain sqlite3 doing the same work.

Run: ``python tests/benchmarks/bench_executor.py [--quick] [--runs N]``

(a) 1,000 trivial migrations (one CREATE TABLE each) through ``Executor.run``
    against a plain loop doing the same work the same way: one transaction per
    migration, holding the DDL and the ledger insert. Target: at most 1.3x.
(b) One migration rebuilding a 1,000,000-row table (create new, copy, drop,
    rename) against the same SQL run directly in one transaction. Target: at
    most 1.2x. ``--quick`` uses 100,000 rows.
(c) A cascade rollback of the first migration of a 1,000-migration chain
    (ledger read, plan and run) against the same downgrades in a plain loop,
    one transaction each with the ledger delete. Target: at most 1.3x.

Both sides start from an identical copy of the database file, and only the
run itself is timed (catalog loading and plan making are not). Medians of
several runs are printed with the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from planner.engines.sqlite.runner import Executor  # noqa: E402
from planner.loader import load_catalog  # noqa: E402
from planner.engines.sqlite.ledger import read_ledger  # noqa: E402
from planner.plan import apply_plan, rollback_plan  # noqa: E402

LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version TEXT PRIMARY KEY, description TEXT, applied_at TIMESTAMP, checksum TEXT, execution_ms INTEGER)"""

REBUILD = """
CREATE TABLE items_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL, status TEXT DEFAULT 'active');
INSERT INTO items_new (id, name, price) SELECT id, name, CAST(price AS INTEGER) FROM items;
DROP TABLE items;
ALTER TABLE items_new RENAME TO items;
CREATE INDEX items_name ON items (name);
"""


def write(path: Path, text: str) -> None:
    path.write_text(text)


def trivial_catalog(directory: Path, count: int) -> None:
    directory.mkdir()
    for n in range(1, count + 1):
        write(
            directory / f"migration_{n:04d}.py",
            f'"""Migration {n:04d}: table {n}"""\n\n'
            f"def upgrade(conn):\n    conn.execute('CREATE TABLE t{n} (id INTEGER PRIMARY KEY, v TEXT)')\n",
        )


def rebuild_catalog(directory: Path) -> None:
    directory.mkdir()
    write(
        directory / "migration_0001.py",
        '"""Migration 0001: Rebuild items"""\n\n'
        f"SQL = '''{REBUILD}'''\n\n"
        "def upgrade(conn):\n    conn.executescript(SQL)\n",
    )


def timed(setup, action) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one run (CPU time shows overhead that fsync noise hides)."""
    state = setup()
    wall, cpu = time.perf_counter(), time.process_time()
    action(state)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(runs: int, setup, baseline, ours) -> tuple[tuple[float, float], tuple[float, float]]:
    """Medians (wall, CPU) of both sides, alternating runs so that drift in disk speed favours neither."""
    baseline_runs, our_runs = [], []
    for _ in range(runs):
        baseline_runs.append(timed(setup, baseline))
        our_runs.append(timed(setup, ours))

    def medians(runs_: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(r[0] for r in runs_), statistics.median(r[1] for r in runs_)

    return medians(baseline_runs), medians(our_runs)


# -- (a) ---------------------------------------------------------------------


def bench_trivial(work: Path, count: int, runs: int) -> tuple[float, float]:
    catalog_dir = work / "trivial"
    trivial_catalog(catalog_dir, count)
    catalog = load_catalog(catalog_dir)
    plan = apply_plan(catalog, {})
    migrations = list(catalog)
    counter = iter(range(10**6))

    def fresh() -> Path:
        path = work / f"trivial_{next(counter)}.db"
        sqlite3.connect(path).close()
        return path

    def plain(path: Path) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(LEDGER)
        for m in migrations:
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"CREATE TABLE t{m.number} (id INTEGER PRIMARY KEY, v TEXT)")
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, CURRENT_TIMESTAMP, ?, ?)",
                (m.version, m.description, m.checksum, round((time.perf_counter() - started) * 1000)),
            )
            conn.execute("COMMIT")
        conn.close()

    def executor(path: Path) -> None:
        Executor(path).run(plan)

    return interleaved(runs, fresh, plain, executor)


# -- (b) ---------------------------------------------------------------------


def bench_rebuild(work: Path, rows: int, runs: int) -> tuple[float, float]:
    catalog_dir = work / "rebuild"
    rebuild_catalog(catalog_dir)
    plan = apply_plan(load_catalog(catalog_dir), {})
    template = work / "template.db"
    conn = sqlite3.connect(template)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price TEXT)")
    conn.execute(
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "
        "INSERT INTO items (name, price) SELECT 'item ' || i, CAST(i % 1000 AS TEXT) FROM n"
    )
    conn.commit()
    conn.close()
    counter = iter(range(10**6))

    def fresh() -> Path:
        path = work / f"rebuild_{next(counter)}.db"
        shutil.copyfile(template, path)
        return path

    def direct(path: Path) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        for statement in REBUILD.strip().split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("COMMIT")
        conn.close()

    def executor(path: Path) -> None:
        Executor(path).run(plan)

    return interleaved(runs, fresh, direct, executor)


# -- (c) ---------------------------------------------------------------------


def chain_catalog(directory: Path, count: int) -> None:
    """A chain: each migration creates a table, depends on the one before, and can drop it again."""
    directory.mkdir()
    for n in range(1, count + 1):
        write(
            directory / f"migration_{n:04d}.py",
            f'"""Migration {n:04d}: table {n}"""\n\n'
            + (f"depends_on = ('{n - 1:04d}',)\n\n" if n > 1 else "")
            + f"def upgrade(conn):\n    conn.execute('CREATE TABLE t{n} (id INTEGER PRIMARY KEY, v TEXT)')\n\n"
            f"def downgrade(conn):\n    conn.execute('DROP TABLE t{n}')\n",
        )


def bench_rollback_cascade(work: Path, count: int, runs: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Roll back the first migration of a ``count``-migration chain with ``--cascade``, against a plain loop.

    Our side reads the ledger, makes the rollback plan and runs it (what
    ``apm migrate --rollback 0001 --cascade --yes --no-backup`` does after
    loading); the plain loop runs the same downgrades newest first, one
    transaction each holding the DROP and the ledger delete.
    """
    catalog_dir = work / "chain"
    chain_catalog(catalog_dir, count)
    catalog = load_catalog(catalog_dir)
    template = work / "chain.db"
    Executor(template, create=True).run(apply_plan(catalog, {}))
    versions = [m.version for m in catalog]
    counter = iter(range(10**6))

    def fresh() -> Path:
        path = work / f"chain_{next(counter)}.db"
        shutil.copyfile(template, path)
        return path

    def plain(path: Path) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        for version in reversed(versions):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"DROP TABLE t{int(version)}")
            conn.execute("DELETE FROM schema_migrations WHERE version = ?", (version,))
            conn.execute("COMMIT")
        conn.close()

    def executor(path: Path) -> None:
        plan = rollback_plan(catalog, read_ledger(path), versions[0], cascade=True)
        assert len(plan) == count
        Executor(path, catalog=catalog).run(plan)

    return interleaved(runs, fresh, plain, executor)


def report(label: str, baseline: tuple[float, float], ours: tuple[float, float], target: float) -> bool:
    ratio = ours[0] / baseline[0]
    verdict = "ok" if ratio <= target else "MISSED"
    print(f"{label}\n"
          f"  plain sqlite3: {baseline[0] * 1000:9.1f} ms wall {baseline[1] * 1000:9.1f} ms CPU\n"
          f"  executor:      {ours[0] * 1000:9.1f} ms wall {ours[1] * 1000:9.1f} ms CPU\n"
          f"  ratio:         {ratio:9.2f}x wall {ours[1] / baseline[1]:6.2f}x CPU  (target <= {target}x: {verdict})")
    return ratio <= target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="rebuild 100,000 rows instead of 1,000,000")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median is reported)")
    parser.add_argument("--migrations", type=int, default=1000)
    args = parser.parse_args(argv)
    rows = 100_000 if args.quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="apm-bench-") as tmp:
        work = Path(tmp)
        print(f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, {args.runs} runs each, medians")
        ok_a = report(f"(a) {args.migrations} trivial migrations, one transaction each",
                      *bench_trivial(work, args.migrations, args.runs), 1.3)
        ok_b = report(f"(b) rebuild of a {rows:,}-row table", *bench_rebuild(work, rows, args.runs), 1.2)
        ok_c = report(f"(c) rollback --cascade of the first of a {args.migrations}-migration chain",
                      *bench_rollback_cascade(work, args.migrations, args.runs), 1.3)
    return 0 if ok_a and ok_b and ok_c else 1


if __name__ == "__main__":
    sys.exit(main())
