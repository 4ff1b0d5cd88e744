"""What the pytest plugin's stairway costs, against applying the same catalog once.

Run: ``python tests/benchmarks/bench_plugin.py [--sizes 50 100 200] [--runs N] [--no-pytest]``

For each size, a branched catalog is generated (seeded, so every run tests
the same one): each migration creates a table with an index and a foreign
key to a table of a dependency, or adds a column to one; a third of them
depend on two earlier migrations, so the graph has branches and merges.

(a) baseline: applying the whole catalog once from an empty file with the
    executor (``apply_plan`` + ``Executor.run``), as ``apm migrate`` does;
(b) the stairway alone (``planner.testing.runner.Stairway``, every version
    climbed in topological order on one database: apply, snapshot, roll
    back, compare, re-apply, compare);
(c) the whole generated test run as a user runs it, a real
    ``python -m pytest --apm-migrations DIR`` subprocess: catalog, upgrade,
    every stairway item, downgrade-all, and pytest's own start-up.

Medians of ``--runs`` runs, with (b) and (c) as ratios to (a). Target
(issue 16): (c) under 30 s for 200 migrations on a 2-core machine. This is a
measurement, not a test: nothing fails on time.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from planner.engines.sqlite.runner import Executor  # noqa: E402
from planner.loader import load_catalog  # noqa: E402
from planner.plan import apply_plan  # noqa: E402
from planner.engines.sqlite import SQLiteDatabase  # noqa: E402
from planner.testing.runner import Stairway  # noqa: E402


def generate(directory: Path, count: int, seed: int = 16) -> None:
    """A branched catalog of ``count`` migrations, each with a correct downgrade."""
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    tables: dict[int, str] = {}  # version number -> the table it created (only creators are listed)
    for n in range(1, count + 1):
        earlier = list(range(1, n))
        needs = sorted(set(rng.sample(earlier, min(len(earlier), 2 if rng.random() < 1 / 3 else 1))))
        parent_tables = [tables[v] for v in needs if v in tables]
        if n == 1 or not parent_tables or rng.random() < 0.7:
            table = f"t{n:04d}"
            tables[n] = table
            reference = f", parent_id INTEGER REFERENCES {parent_tables[0]}(id)" if parent_tables else ""
            upgrade = (
                f"    conn.execute('CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT \\'\\', "
                f"created_at TEXT DEFAULT CURRENT_TIMESTAMP{reference})')\n"
                f"    conn.execute('CREATE INDEX {table}_by_name ON {table} (name)')\n"
            )
            downgrade = f"    conn.execute('DROP TABLE {table}')\n"
        else:
            table = parent_tables[0]
            upgrade = f"    conn.execute('ALTER TABLE {table} ADD COLUMN c{n:04d} INTEGER DEFAULT 0')\n"
            downgrade = f"    conn.execute('ALTER TABLE {table} DROP COLUMN c{n:04d}')\n"
        depends = ", ".join(f'"{v:04d}"' for v in needs)
        (directory / f"migration_{n:04d}.py").write_text(
            f'"""Migration {n:04d}: step {n}"""\n\n'
            f"depends_on = ({depends}{',' if len(needs) == 1 else ''})\n\n"
            f"def upgrade(conn):\n{upgrade}\n\n"
            f"def downgrade(conn):\n{downgrade}"
        )


def apply_once(catalog, folder: Path) -> float:
    path = folder / "apply.db"
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    Executor(path, create=True, catalog=catalog).run(apply_plan(catalog, set()))
    return time.perf_counter() - started


def stairway(catalog, folder: Path) -> float:
    names = itertools.count()
    walker = Stairway(catalog, lambda: SQLiteDatabase(folder / f"stairway-{next(names)}.db"))
    started = time.perf_counter()
    for version in walker.order:
        walker.climb(version)
    return time.perf_counter() - started


def pytest_run(directory: Path, folder: Path) -> float:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
         "--apm-migrations", str(directory), "--basetemp", str(folder / "basetemp"), "--rootdir", str(folder)],
        cwd=folder, capture_output=True, text=True, env=env, check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the generated catalog failed its own tests:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-pytest", action="store_true", help="skip (c), the pytest subprocess")
    args = parser.parse_args(argv)
    print(f"{'migrations':>10}  {'(a) apply once':>14}  {'(b) stairway':>12}  {'b/a':>6}  "
          f"{'(c) pytest run':>14}  {'c/a':>6}  per migration (c)")
    with tempfile.TemporaryDirectory(prefix="apm-bench-plugin-") as work:
        for size in args.sizes:
            folder = Path(work) / f"n{size}"
            directory = folder / "migrations"
            generate(directory, size)
            catalog = load_catalog(directory)
            once = statistics.median(apply_once(catalog, folder) for _ in range(args.runs))
            walk = statistics.median(stairway(catalog, folder) for _ in range(args.runs))
            line = f"{size:>10}  {once * 1000:>11.0f} ms  {walk * 1000:>9.0f} ms  x{walk / once:>5.2f}"
            if not args.no_pytest:
                whole = statistics.median(pytest_run(directory, folder) for _ in range(args.runs))
                line += f"  {whole:>12.2f} s  x{whole / once:>5.1f}  {whole / size * 1000:.1f} ms"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
