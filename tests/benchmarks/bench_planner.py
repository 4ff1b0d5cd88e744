"""Benchmark of the planner core: graph building, planning and loading.

Run from the repository root:

    python tests/benchmarks/bench_planner.py            # full run (about a minute)
    python tests/benchmarks/bench_planner.py --quick    # fewer repeats, no 100,000-node run

It prints the median of several runs for each figure and, beside it, the
ratio to a baseline measured in the same run on the same machine, so the
figures mean something on any machine:

- graph + plan over a generated 10,000-migration DAG (after loading; target
  under 50 ms): ``Catalog.build`` and an apply plan from empty, an apply plan
  to a target, and a cascade rollback of an early migration. Baseline: a bare
  networkx ``DiGraph`` of the same edges and ``topological_sort``.
- loading 1,000 migration files on a warm second run (bytecode cached;
  target under 0.5 s). Baseline: importing the same files with a plain
  ``importlib`` loop.
- scaling of graph + plan over 100 to 100,000 nodes, with the exponent of a
  log-log fit from 1,000 to 100,000 (1.0 is linear).

This is a measurement, not a test: pytest does not collect this folder.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import math
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import networkx as nx  # noqa: E402

from planner.catalog import Catalog  # noqa: E402
from planner.loader import load_catalog  # noqa: E402
from planner.migration import DECLARED, Migration  # noqa: E402
from planner.plan import apply_plan, rollback_plan  # noqa: E402

GRAPH_TARGET_S = 0.050
LOAD_TARGET_S = 0.5


def generate_dag(size: int, seed: int = 2025) -> dict[str, tuple[str, ...]]:
    """Each migration depends on its predecessor and, with probability 0.3, on one random earlier one."""
    rng = random.Random(seed)
    versions = [f"{n:06d}" for n in range(1, size + 1)]
    needs: dict[str, tuple[str, ...]] = {}
    for i, version in enumerate(versions):
        deps = [versions[i - 1]] if i else []
        if i > 1 and rng.random() < 0.3:
            extra = versions[rng.randrange(0, i - 1)]
            deps.append(extra)
        needs[version] = tuple(deps)
    return needs


def shuffled_numbers(needs: dict[str, tuple[str, ...]], seed: int = 11) -> dict[str, tuple[str, ...]]:
    """The same graph with versions renumbered by a random permutation."""
    old = list(needs)
    new = old[:]
    random.Random(seed).shuffle(new)
    rename = dict(zip(old, new))
    return {rename[v]: tuple(rename[d] for d in deps) for v, deps in needs.items()}


def _noop(conn: object) -> None:
    return None


def migrations_of(needs: dict[str, tuple[str, ...]]) -> list[Migration]:
    """What loading would hand to ``Catalog.build``: the migration values, without the files."""
    return [
        Migration(v, f"m{v}", Path(f"migration_{v}.py"), v, d, DECLARED, "", _noop, _noop) for v, d in needs.items()
    ]


class Timing(NamedTuple):
    """Median and best of several runs, in seconds."""

    median: float
    best: float


def median_time(function: Callable[[], object], repeats: int) -> Timing:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times))


def compare(subject: Callable[[], object], baseline: Callable[[], object], repeats: int) -> tuple[Timing, Timing]:
    """Time both, alternating runs, so that a load that comes and goes on the machine hits both alike."""
    mine: list[float] = []
    theirs: list[float] = []
    for _ in range(repeats):
        for function, times in ((baseline, theirs), (subject, mine)):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
    return (
        Timing(statistics.median(mine), min(mine)),
        Timing(statistics.median(theirs), min(theirs)),
    )


def graph_and_plan(migrations: list[Migration]) -> tuple[int, int, int]:
    """Build the catalog's graph, then the three plans the benchmark names."""
    catalog, problems = Catalog.build(Path("."), migrations)
    assert not problems
    everything = apply_plan(catalog, [])
    # Positions in dependency order, so that "the first quarter applied" is a consistent history.
    versions = catalog.graph.topological_order()
    quarter = versions[: len(versions) // 4]
    target = apply_plan(catalog, quarter, target=versions[len(versions) // 2])
    cascade = rollback_plan(catalog, versions, versions[len(versions) // 100], cascade=True)
    return len(everything), len(target), len(cascade)


def networkx_baseline(needs: dict[str, tuple[str, ...]]) -> int:
    graph = nx.DiGraph()
    graph.add_nodes_from(needs)
    graph.add_edges_from((d, v) for v, deps in needs.items() for d in deps)
    return len(list(nx.topological_sort(graph)))


def write_files(directory: Path, needs: dict[str, tuple[str, ...]]) -> None:
    """Migration files as APM writes them: docstring, depends_on, upgrade and downgrade."""
    for version, deps in needs.items():
        (directory / f"migration_{version}.py").write_text(
            f'"""\nMigration {version}: generated migration {version}\n\nAdds table t{version}.\n"""\n\n'
            f"import sqlite3\n\ndepends_on = {deps!r}\n\n\n"
            f"def upgrade(conn: sqlite3.Connection) -> None:\n"
            f'    conn.execute("CREATE TABLE IF NOT EXISTS t{version} (id INTEGER PRIMARY KEY, name TEXT)")\n\n\n'
            f"def downgrade(conn: sqlite3.Connection) -> None:\n"
            f'    conn.execute("DROP TABLE IF EXISTS t{version}")\n'
        )


def importlib_baseline(directory: Path) -> int:
    count = 0
    for path in sorted(directory.glob("migration_*.py")):
        spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        count += 1
    return count


def remove_bytecode(directory: Path) -> None:
    """Make the next load cold: no cached bytecode for any file of the folder."""
    shutil.rmtree(directory / "__pycache__", ignore_errors=True)


class LoadFigures(NamedTuple):
    """Loading one generated folder: cold and warm, each beside a plain importlib loop."""

    count: int
    cold: Timing
    cold_baseline: Timing
    warm: Timing
    warm_baseline: Timing
    profile: str


def measure_loading(count: int, repeats: int, cold_repeats: int = 3, profile_top: int = 0) -> LoadFigures:
    """Load ``count`` generated files cold (no ``__pycache__``) and warm, alternating with the baseline.

    Bytecode caching is switched on for the measurement (and restored after),
    since PYTHONDONTWRITEBYTECODE would make every load cold. With
    ``profile_top``, one more warm load runs under cProfile and the top entries
    by own time come back as text.
    """
    told_not_to = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    try:
        with tempfile.TemporaryDirectory(prefix="apm-bench-load-") as folder:
            directory = Path(folder)
            write_files(directory, generate_dag(count, seed=7))

            def cold_ours() -> None:
                remove_bytecode(directory)
                start = time.perf_counter()
                load_catalog(directory)
                return time.perf_counter() - start

            def cold_theirs() -> None:
                remove_bytecode(directory)
                start = time.perf_counter()
                importlib_baseline(directory)
                return time.perf_counter() - start

            ours, theirs = [], []
            for _ in range(cold_repeats):
                theirs.append(cold_theirs())
                ours.append(cold_ours())
            cold = Timing(statistics.median(ours), min(ours))
            cold_base = Timing(statistics.median(theirs), min(theirs))
            # The last cold run was ours, so the cache holds the loader's hash-based
            # .pyc files, which the importlib loop also reads (checking the hash).
            warm, warm_base = compare(lambda: load_catalog(directory), lambda: importlib_baseline(directory), repeats)
            text = ""
            if profile_top:
                profiler = cProfile.Profile()
                profiler.enable()
                load_catalog(directory)
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(profile_top)
                text = out.getvalue()
    finally:
        sys.dont_write_bytecode = told_not_to
    return LoadFigures(count, cold, cold_base, warm, warm_base, text)


def measure_planning(size: int, repeats: int, *, shuffled: bool = False) -> tuple[Timing, Timing]:
    """Build + the three plans over a generated DAG of ``size``, and the networkx baseline of the same edges.

    ``shuffled`` renumbers the versions at random, so dependencies also point
    to higher versions and the graph orders with networkx instead of a sort.
    """
    needs = generate_dag(size)
    if shuffled:
        needs = shuffled_numbers(needs)
    migrations = migrations_of(needs)
    return compare(lambda: graph_and_plan(migrations), lambda: networkx_baseline(needs), repeats)


def loglog_exponent(measured: dict[int, float]) -> float:
    """Slope of a least-squares fit of log(time) against log(size): 1.0 is linear."""
    xs = [math.log(s) for s in measured]
    ys = [math.log(t) for t in measured.values()]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def peak_memory(size: int) -> dict[str, float]:
    """Peak memory of generating, building and planning ``size`` migrations, measured in a fresh process.

    A fresh interpreter, so that what earlier scenarios allocated does not
    count: ``ru_maxrss`` (the whole process, interpreter included) and the
    tracemalloc peak of the work alone, beside the process's size before it.
    """
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--peak-memory", str(size)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _high_water_mib() -> float:
    """This process's peak resident memory so far, in MiB.

    Linux's VmHWM belongs to the address space, so it starts afresh at exec;
    ``ru_maxrss`` would still hold the parent's peak from before the exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_memory_here(size: int) -> dict[str, float]:
    before = _high_water_mib()
    migrations = migrations_of(generate_dag(size))
    graph_and_plan(migrations)
    rss = _high_water_mib()
    del migrations
    # Then once more under tracemalloc (which has its own overhead) for the peak of the work alone.
    tracemalloc.start()
    graph_and_plan(migrations_of(generate_dag(size)))
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"size": size, "rss_before_mib": before, "peak_rss_mib": rss, "traced_peak_mib": traced / 2**20}


def report(label: str, timing: Timing, baseline: Timing, target: float | None = None) -> bool:
    verdict = ""
    met = True
    if target is not None:
        met = timing.median < target
        verdict = f"  target < {target * 1000:g} ms: {'met' if met else 'MISSED'}"
    print(
        f"  {label:<48} {timing.median * 1000:9.2f} ms (best {timing.best * 1000:8.2f})"
        f"   x{timing.median / baseline.median:5.2f} baseline{verdict}"
    )
    return met


def show_baseline(label: str, timing: Timing) -> None:
    print(f"  {label:<48} {timing.median * 1000:9.2f} ms (best {timing.best * 1000:8.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and no 100,000-node run")
    parser.add_argument("--peak-memory", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_memory:
        print(json.dumps(_peak_memory_here(args.peak_memory)))
        return 0
    repeats = 3 if args.quick else 7
    all_met = True

    # "Warm" means bytecode cached, as on a developer's machine; an environment
    # with PYTHONDONTWRITEBYTECODE=1 would otherwise compile every file every run.
    told_not_to = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    print(f"Python {sys.version.split()[0]}, networkx {nx.__version__}; medians of {repeats} runs")
    if told_not_to:
        print("(PYTHONDONTWRITEBYTECODE is set; bytecode caching is switched back on for this run)")
    # A machine yardstick, to compare absolute figures across machines.
    yardstick = median_time(lambda: sum(range(1_000_000)), repeats)
    print(f"Machine yardstick: sum(range(10**6)) takes {yardstick.median * 1000:.1f} ms here")

    # -- graph + plan over 10,000 migrations -----------------------------------
    needs = generate_dag(10_000)
    migrations = migrations_of(needs)
    edges = sum(len(d) for d in needs.values())
    print(f"\nGraph and plans over 10,000 migrations ({edges} dependencies), after loading:")
    base = median_time(lambda: networkx_baseline(needs), repeats)
    show_baseline("baseline: nx.DiGraph + topological_sort", base)
    catalog, _ = Catalog.build(Path("."), migrations)
    versions = catalog.graph.topological_order()
    steps = [
        ("Catalog.build (graph, cycle check, order)", lambda: Catalog.build(Path("."), migrations)),
        ("apply plan from empty", lambda: apply_plan(catalog, [])),
        (
            "apply plan to a target (1/4 applied)",
            lambda: apply_plan(catalog, versions[:2500], target=versions[5000]),
        ),
        ("cascade rollback of an early migration", lambda: rollback_plan(catalog, versions, versions[100], True)),
    ]
    for label, step in steps:
        # On the built catalog, each line shows the plan alone; the total below includes the build.
        report(label, median_time(step, repeats), base)
    total, base = compare(lambda: graph_and_plan(migrations), lambda: networkx_baseline(needs), repeats)
    all_met &= report("total: build + the three plans", total, base, GRAPH_TARGET_S)
    # The same DAG with its versions renumbered at random, so dependencies also
    # name higher versions: the graph must then order with a heap, not a sort.
    shuffled = shuffled_numbers(needs)
    shuffled_migrations = migrations_of(shuffled)
    total, base = compare(lambda: graph_and_plan(shuffled_migrations), lambda: networkx_baseline(shuffled), repeats)
    report("same, versions renumbered at random (heap path)", total, base)

    # -- loading 1,000 files ---------------------------------------------------------
    print("\nLoading 1,000 migration files (warm: second and later runs, bytecode cached):")
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        write_files(directory, generate_dag(1_000, seed=7))
        cold_start = time.perf_counter()
        load_catalog(directory)
        cold = time.perf_counter() - cold_start
        importlib_baseline(directory)  # reads the same __pycache__ files
        warm, base = compare(lambda: load_catalog(directory), lambda: importlib_baseline(directory), repeats)
        show_baseline("baseline: plain importlib loop", base)
        print(f"  {'load_catalog, cold first run':<48} {cold * 1000:9.2f} ms")
        all_met &= report("load_catalog, warm", warm, base, LOAD_TARGET_S)

    # -- scaling ---------------------------------------------------------------------
    sizes = [100, 1_000, 10_000] + ([] if args.quick else [100_000])
    print("\nScaling of build + plans (baseline: nx.DiGraph + topological_sort of the same size):")
    measured: dict[int, float] = {}
    for size in sizes:
        needs = generate_dag(size)
        migrations = migrations_of(needs)
        runs = repeats if size < 100_000 else 3
        timing, base = compare(lambda: graph_and_plan(migrations), lambda: networkx_baseline(needs), runs)
        measured[size] = timing.median
        report(f"{size:>7,} migrations", timing, base)
    fit = [s for s in measured if s >= 1_000]
    if len(fit) >= 2:
        xs = [math.log(s) for s in fit]
        ys = [math.log(measured[s]) for s in fit]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        print(f"  log-log exponent from {fit[0]:,} to {fit[-1]:,}: {slope:.2f} (1.0 is linear)")

    print("\nAll targets met." if all_met else "\nSome target was MISSED.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
