"""Every benchmark of issue 7 in one command, each figure beside a baseline measured in the same run.

Run from the repository root:

    python tests/benchmarks/run_all.py            # the full suite (about 5 minutes on 2 cores)
    python tests/benchmarks/run_all.py --quick    # fewer runs, a 100,000-row rebuild (about 2 minutes)

Scenarios: start-up (real subprocesses of the installed ``apm``), loading
1,000 and 10,000 generated files cold and warm (with a profile of the 10,000
warm load), planning over generated DAGs of 100 to 100,000 migrations (with
the log-log exponent and the peak memory of 100,000), the networkx path
(dependencies pointing to higher versions), applying 1,000 trivial
migrations, a 1,000,000-row table rebuild, a cascade rollback of a
1,000-migration chain, what the preview costs (bench_preview.py), and
two long runs on the default path: rolling back 500 of 1,000 migrations
and a data migration of 50,000 single-row statements (``bench_preview.py
--long-runs`` runs those alone).

Each figure is a median of several runs; ratios are to a baseline measured in
the same run on the same machine, which is what makes them comparable across
noisy machines. The results are in docs/performance.md. This is a
measurement, not a test: pytest does not collect this folder, and nothing
here fails on time (the exit status is 0 whatever the figures).

The individual scripts (bench_startup.py, bench_planner.py,
bench_executor.py, bench_preview.py, bench_plugin.py) still run alone, with more detail.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_executor  # noqa: E402
import bench_planner  # noqa: E402
import bench_preview  # noqa: E402
import bench_startup  # noqa: E402


@dataclass
class Row:
    """One printed figure: what, how long, against what, and whether its target is met."""

    scenario: str
    figure: str
    value: str
    baseline: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None

    def line(self) -> str:
        ratio = f"x{self.ratio:.2f}" if self.ratio is not None else ""
        verdict = "" if self.met is None else ("met" if self.met else "MISSED")
        return (f"  {self.figure:<46} {self.value:>11}  {self.baseline:>11}  {ratio:>6}  "
                f"{self.target:<12} {verdict}")


ROWS: list[Row] = []


def add(row: Row) -> None:
    ROWS.append(row)
    print(row.line(), flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def heading(title: str) -> None:
    print(f"\n{title}", flush=True)
    print(f"  {'figure':<46} {'median':>11}  {'baseline':>11}  {'ratio':>6}  {'target':<12} verdict")


# --------------------------------------------------------------------------


def startup(runs: int) -> None:
    heading(f"Start-up: real subprocesses of {bench_startup.apm_script()}, medians of {runs} alternating runs")
    print(f"  (floor: python -c pass takes {ms(bench_startup.python_floor(runs))})")
    for c in bench_startup.measure(runs):
        add(Row("start-up", f"{c.label} vs {c.baseline_label.replace('python -c ', '')}", ms(c.subject),
                ms(c.baseline), c.ratio, f"<= {c.target}x", c.ratio <= c.target))


def loading(counts: list[int], repeats: int, cold_repeats: int) -> None:
    heading(f"Loading generated migration files (baseline: a plain importlib loop); warm medians of {repeats}, "
            f"cold of {cold_repeats}")
    for count in counts:
        profile_top = 12 if count == max(counts) else 0
        f = bench_planner.measure_loading(count, repeats, cold_repeats, profile_top=profile_top)
        add(Row("loading", f"{count:,} files, cold (no __pycache__)", ms(f.cold.median), ms(f.cold_baseline.median),
                f.cold.median / f.cold_baseline.median))
        warm_target = count == 10_000
        add(Row("loading", f"{count:,} files, warm (bytecode cached)", ms(f.warm.median), ms(f.warm_baseline.median),
                f.warm.median / f.warm_baseline.median, "< 2 s" if warm_target else "",
                f.warm.median < 2.0 if warm_target else None))
        if f.profile:
            print(f"\n  cProfile of one warm load of {count:,} files (top entries by own time):")
            lines = f.profile.strip().splitlines()
            start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), 0)
            for line in [lines[0], *lines[start:]]:
                print(f"    {line}")


def planning(sizes: list[int], repeats: int, with_memory: bool) -> None:
    heading(f"Planning (Catalog.build + apply from empty + apply to a target + cascade rollback), after loading;\n"
            f"baseline: nx.DiGraph of the same edges + topological_sort; medians of {repeats} (3 for 100,000)")
    targets = {10_000: 0.050, 100_000: 1.0}
    measured: dict[int, float] = {}
    for size in sizes:
        ours, theirs = bench_planner.measure_planning(size, repeats if size < 100_000 else 3)
        measured[size] = ours.median
        target = targets.get(size)
        add(Row("planning", f"{size:,} migrations", ms(ours.median), ms(theirs.median), ours.median / theirs.median,
                f"< {ms(target)}" if target else "", ours.median < target if target else None))
    fit = {s: t for s, t in measured.items() if s >= 1_000}
    if len(fit) >= 2:
        exponent = bench_planner.loglog_exponent(fit)
        add(Row("planning", f"log-log exponent, {min(fit):,} to {max(fit):,}", f"{exponent:.2f}", "1.00 linear",
                None, "<= ~1.0", exponent <= 1.1))
    if with_memory:
        size = max(sizes)
        memory = bench_planner.peak_memory(size)
        add(Row("planning", f"peak RSS, {size:,} migrations (fresh process)", f"{memory['peak_rss_mib']:.0f} MiB",
                f"{memory['rss_before_mib']:.0f} MiB", memory["peak_rss_mib"] / memory["rss_before_mib"],
                "< 500 MB", memory["peak_rss_mib"] * 2**20 < 500e6))
        add(Row("planning", f"tracemalloc peak of the work, {size:,}", f"{memory['traced_peak_mib']:.0f} MiB"))


def networkx_path(sizes: list[int], repeats: int) -> None:
    heading("Planning when dependencies also point to higher versions (versions renumbered at random):\n"
            "networkx's lexicographical_topological_sort orders the graph; baseline as above")
    for size in sizes:
        ours, theirs = bench_planner.measure_planning(size, repeats, shuffled=True)
        add(Row("networkx path", f"{size:,} migrations, renumbered", ms(ours.median), ms(theirs.median),
                ours.median / theirs.median))


def executing(runs: int, rows: int) -> None:
    heading(f"Running plans (baseline: the same SQL in a plain sqlite3 loop, same transactions); medians of {runs}")
    with tempfile.TemporaryDirectory(prefix="apm-bench-") as folder:
        work = Path(folder)
        (base, _), (ours, _) = bench_executor.bench_trivial(work, 1_000, runs)
        add(Row("applying", "1,000 trivial migrations", ms(ours), ms(base), ours / base, "<= 1.3x", ours / base <= 1.3))
        (base, _), (ours, _) = bench_executor.bench_rebuild(work, rows, runs)
        add(Row("applying", f"rebuild of a {rows:,}-row table", ms(ours), ms(base), ours / base, "<= 1.2x",
                ours / base <= 1.2))
        (base, _), (ours, _) = bench_executor.bench_rollback_cascade(work, 1_000, runs)
        add(Row("rollback", "cascade rollback of 0001 in a 1,000 chain", ms(ours), ms(base), ours / base,
                "<= 1.3x", ours / base <= 1.3))


def preview(repeats: int, rows: int) -> None:
    heading(f"The preview (the installed apm, whole processes); medians of {repeats}")
    for count in (1_000, 5_000):
        ours, base = bench_preview.trivial(count, repeats if count == 1_000 else max(3, repeats - 2))
        add(Row("preview", f"apm migrate, {count:,} trivial migrations", f"{ours:.2f} s", f"{base:.2f} s raw loop",
                ours / base, "<= 1.3x", ours / base <= 1.3))
    default, no_preview, largest, size = bench_preview.small_change(rows, repeats)
    add(Row("preview", f"add a table, {rows:,} rows ({size / 2**20:.0f} MiB)", f"{default:.2f} s",
            f"{no_preview:.2f} s --no-preview", default / no_preview, "<= 1.3x", default / no_preview <= 1.3))
    add(Row("preview", "largest temporary file during those runs", f"{largest[0] / 1024:.0f} KiB", "", None,
            "< 1024 KiB", largest[0] < 1024 * 1024))
    ours, base = bench_preview.shipped_cascade(100_000, repeats)
    add(Row("preview", "--dry-run of 0027 --cascade, 100,000 agents", f"{ours:.2f} s",
            f"{base:.2f} s the rollback", ours / base, "<= 1.2x", ours / base <= 1.2))
    long_runs(repeats + 2)


def long_runs(repeats: int) -> None:
    """A long cascade rollback and a data migration of single-row statements, default path."""
    heading(f"A long rollback and data migration, default path (installed apm, whole processes); medians of {repeats}")
    default, no_preview, raw = bench_preview.rollback_half(1_000, repeats)
    add(Row("rollback", "500 of 1,000, --cascade --yes, backup included", f"{default.wall:.2f} s",
            f"{raw.wall:.2f} s raw loop", default.wall / raw.wall, "<= 1.3x", default.wall / raw.wall <= 1.3))
    add(Row("rollback", "  the same, CPU seconds", f"{default.cpu:.2f} s", f"{raw.cpu:.2f} s", default.cpu / raw.cpu))
    add(Row("rollback", "  the same with --no-preview", f"{no_preview.wall:.2f} s", f"{raw.wall:.2f} s raw loop",
            no_preview.wall / raw.wall))
    for kind in ("insert", "update"):
        default, no_preview, plain = bench_preview.data_migration(kind, 50_000, repeats)
        add(Row("data", f"50,000 single-row {kind.upper()}s vs --no-preview", f"{default.wall:.2f} s",
                f"{no_preview.wall:.2f} s", default.wall / no_preview.wall, "<= 1.3x",
                default.wall / no_preview.wall <= 1.3))
        add(Row("data", "  the same, CPU seconds", f"{default.cpu:.2f} s", f"{no_preview.cpu:.2f} s",
                default.cpu / no_preview.cpu))
        add(Row("data", f"50,000 single-row {kind.upper()}s vs plain loop", f"{default.wall:.2f} s",
                f"{plain.wall:.2f} s", default.wall / plain.wall, "<= 2x", default.wall / plain.wall <= 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer runs, a 100,000-row rebuild, no 10,000-file cold baseline repeats")
    args = parser.parse_args(argv)
    quick = args.quick
    started = time.perf_counter()
    print(f"apm-migrate benchmark suite{' (--quick)' if quick else ''}: Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}, {platform.machine()}")

    startup(runs=9 if quick else 25)
    loading([1_000, 10_000], repeats=3 if quick else 5, cold_repeats=1 if quick else 3)
    planning([100, 1_000, 10_000, 100_000], repeats=3 if quick else 7, with_memory=True)
    networkx_path([1_000, 10_000], repeats=3 if quick else 5)
    executing(runs=3 if quick else 5, rows=100_000 if quick else 1_000_000)
    preview(repeats=3 if quick else 5, rows=200_000 if quick else 2_000_000)

    print("\nSummary of targets:")
    for row in ROWS:
        if row.met is not None:
            print(f"  {'met   ' if row.met else 'MISSED'} {row.scenario:<10} {row.figure:<46} {row.value:>11}  "
                  f"{row.target}")
    missed = [row for row in ROWS if row.met is False]
    print(f"\n{len(missed)} target(s) missed; suite took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
