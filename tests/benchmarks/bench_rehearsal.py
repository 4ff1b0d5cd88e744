"""Benchmark: what a rehearsal adds to a plan, on APM's database with 100,000 agents.

Run from the repository root:

    python tests/benchmarks/bench_rehearsal.py            # 100,000 agents, 5 repeats
    python tests/benchmarks/bench_rehearsal.py --quick    # 3 repeats
    python tests/benchmarks/bench_rehearsal.py --agents 1000000

The database is the shipped catalog applied in full, then 100,000 agents (a
third with non-default metadata) and 10,000 tasks assigned to them. The plan
is the seed's risky one: ``apm migrate --rollback 0027 --cascade`` (0029's
rows deleted, then agents rebuilt without metadata).

Figures (medians):
- the real rollback, run with ``Executor`` on a fresh copy of the file (the
  copy is made outside the timing): the baseline;
- ``rehearse`` with the copy in memory (tmpfs) and on a temporary file: its
  total, what it adds over the real rollback, and the ratio to it;
- the backup-API copy alone, to show where the added time goes.

This is a measurement, not a test: pytest does not collect this folder.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from planner.executor import Executor  # noqa: E402
from planner.ledger import read_ledger  # noqa: E402
from planner.loader import load_catalog  # noqa: E402
from planner.plan import apply_plan, rollback_plan  # noqa: E402
from planner.rehearsal import rehearse  # noqa: E402


def build_database(path: Path, catalog, agents: int) -> None:
    Executor(path, create=True).run(apply_plan(catalog, []))
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO projects (name) VALUES ('bench')")
    conn.executemany(
        "INSERT INTO agents (project_id, role, display_name, description, tier, metadata) VALUES (?, ?, ?, ?, ?, ?)",
        (
            (2, f"role-{i}", f"Agent {i}", "a benchmark agent", 1 + i % 3,
             f'{{"rules": ["rule {i}"]}}' if i % 3 == 0 else "{}")
            for i in range(agents)
        ),
    )
    conn.executemany(
        "INSERT INTO tasks (project_id, title, assigned_agent_id) VALUES (2, ?, ?)",
        ((f"task {i}", 10 + i * 7 % agents) for i in range(agents // 10)),
    )
    conn.commit()
    conn.close()


def median_ms(function: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(agents: int = 100_000, repeats: int = 5) -> dict:
    """The figures of this benchmark, as a dict (milliseconds, medians of ``repeats``)."""
    catalog = load_catalog(ROOT / "migrations")
    with tempfile.TemporaryDirectory(prefix="apm-bench-rehearsal-") as folder:
        db = Path(folder) / "aipm.db"
        build_database(db, catalog, agents)
        plan = rollback_plan(catalog, read_ledger(db), "0027", cascade=True)
        size_mib = db.stat().st_size / 2**20
        copy = Path(folder) / "copy.db"
        real = median_ms(lambda: Executor(copy, catalog=catalog).run(plan), repeats,
                         setup=lambda: shutil.copyfile(db, copy))
        # The same real rollback where the in-memory rehearsal runs (tmpfs, WAL), which isolates what
        # the rehearsal itself adds from what the storage saves (no fsync on tmpfs).
        ram = Path("/dev/shm")
        real_ram = None
        if ram.is_dir():
            with tempfile.TemporaryDirectory(prefix="apm-bench-", dir=ram) as shm:
                ram_copy = Path(shm) / "copy.db"

                def fresh_ram_copy() -> None:
                    for leftover in Path(shm).iterdir():
                        leftover.unlink()
                    shutil.copyfile(db, ram_copy)
                    sqlite3.connect(ram_copy).execute("PRAGMA journal_mode = WAL").fetchone()

                real_ram = median_ms(lambda: Executor(ram_copy, catalog=catalog).run(plan), repeats,
                                     setup=fresh_ram_copy)

        def backup_only() -> None:
            source = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
            target = sqlite3.connect(":memory:")
            source.backup(target)
            target.close()
            source.close()

        copy_ms = median_ms(backup_only, repeats)
        results: dict[str, float] = {}
        overheads: dict[str, float] = {}
        for label, limit in (("memory", 2**40), ("file", 0)):
            last = []
            results[label] = median_ms(
                lambda: last.append(rehearse(db, plan, catalog=catalog, memory_limit_bytes=limit)), repeats
            )
            steps_ms = sum(step.duration_ms for step in last[-1].steps)
            overheads[label] = last[-1].duration_ms - steps_ms
            storage = last[-1].storage
            lines = last[-1].describe()

    return {"agents": agents, "repeats": repeats, "size_mib": size_mib, "plan": list(plan.versions),
            "real": real, "real_ram": real_ram, "results": results, "overheads": overheads,
            "copy_ms": copy_ms, "storage": storage, "lines": lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 5")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    figures = measure(args.agents, repeats)
    real, real_ram, results, overheads = (figures[k] for k in ("real", "real_ram", "results", "overheads"))
    size_mib, copy_ms, storage, lines = (figures[k] for k in ("size_mib", "copy_ms", "storage", "lines"))

    print(f"database: {args.agents:,} agents, {args.agents // 10:,} tasks, {size_mib:.1f} MiB; "
          f"plan: rollback 0027 --cascade ({', '.join(figures['plan'])}); median of {repeats}")
    print(f"  real rollback on a file copy (Executor.run): {real:8.1f} ms   1.00x")
    if real_ram is not None:
        print(f"  real rollback on a tmpfs copy in WAL mode:   {real_ram:8.1f} ms   {real_ram / real:.2f}x")
    for label, ms in results.items():
        print(f"  rehearsal, copy in {label:<6}                    {ms:8.1f} ms   {ms / real:.2f}x  "
              f"(adds {ms - real:+.1f} ms; outside the migrations' own time: {overheads[label]:.1f} ms)")
    if real_ram is not None:
        print(f"  rehearsal in memory over the same rollback on tmpfs: {results['memory'] / real_ram:.2f}x "
              f"(adds {results['memory'] - real_ram:+.1f} ms)")
    print(f"  the backup-API copy alone (file -> :memory:): {copy_ms:8.1f} ms")
    print(f"  last rehearsal stored its copy in: {storage}; it reported:")
    for line in lines:
        print(f"    {line}")


if __name__ == "__main__":
    main()
