"""`apm fleet` over many SQLite files, against plain Python loops measured in the same run.

Run from the repository root:

    python tests/benchmarks/bench_fleet.py                 # 1,000 databases, 5 runs each
    python tests/benchmarks/bench_fleet.py --dbs 200 --runs 3   # quick
    python tests/benchmarks/bench_fleet.py --linear 10     # also status over 10 x --dbs databases
    python tests/benchmarks/bench_fleet.py --before /path/to/other/venv/bin/apm   # before/after, alternated
    python tests/benchmarks/bench_fleet.py --before BASE --after NEW   # two wrappers started the same way
    python tests/benchmarks/bench_fleet.py --no-migrate    # only (a) and (c): status and drift

Every figure is a whole process (the installed ``apm``, as a user runs it, and
``python`` for the baselines), alternated with its baseline, median of the runs:

(a) ``apm fleet status`` over N databases in project folders
    (``projects/pNNNN/.aipm/data/aipm.db``), each with APM's shipped catalog
    applied and nothing pending, against a plain loop that opens each file
    read-only and reads ``SELECT version FROM schema_migrations``.
    Target: at most 1.5x; peak RSS at most 200 MB; with ``--linear K``, K x N
    databases in at most 1.1 K times the time of N.
(b) ``apm fleet migrate --jobs 2`` of the N databases, each with one small
    pending migration, against a sequential raw sqlite3 loop that applies the
    same SQL and its ledger row to each file in one transaction each.
    Target: at most 1.3x. The files are copied afresh before each run, and synced to disk (not timed).
(c) ``apm fleet status --drift`` over the N databases against (a).
    Target: at most 2x.

With ``--before APM`` (the ``apm`` of another tree, such as the base
commit's in a second virtualenv), that command is timed too, alternated with
this tree's and the baseline in the same run, and both ratios are printed.

A measurement, not a test: nothing here fails on time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

APM = Path(sys.executable).parent / "apm"
PENDING = '''"""Migration 0031: Bench notes

Dependencies:
- Migration 0030 (prerequisite)
"""

depends_on = ("0030",)

SQL = "CREATE TABLE bench_notes (id INTEGER PRIMARY KEY, project_id INTEGER, note TEXT)"


def upgrade(conn):
    conn.execute(SQL)


def downgrade(conn):
    conn.execute("DROP TABLE bench_notes")
'''

STATUS_LOOP = """
import glob, sqlite3, sys
for path in sorted(glob.glob(sys.argv[1])):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.execute("SELECT version FROM schema_migrations").fetchall()
    conn.close()
"""

MIGRATE_LOOP = """
import glob, sqlite3, sys
SQL = "CREATE TABLE bench_notes (id INTEGER PRIMARY KEY, project_id INTEGER, note TEXT)"
for path in sorted(glob.glob(sys.argv[1])):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(SQL)
    conn.execute("INSERT INTO schema_migrations (version, description, applied_at, checksum, execution_ms) "
                 "VALUES ('0031', 'Bench notes', CURRENT_TIMESTAMP, 'x', 0)")
    conn.execute("COMMIT")
    conn.close()
"""

PATTERN = "projects/*/.aipm/data/aipm.db"


def run(command: list[str], cwd: Path) -> tuple[float, int, float]:
    """Seconds, peak RSS (KiB) and CPU seconds (user + system, its workers included) of one whole process."""
    # Bytecode is cached as an installed package has it: with PYTHONDONTWRITEBYTECODE set (as in some sandboxes)
    # every run would compile every module it imports again, and start-up would be most of what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_") and k != "PYTHONDONTWRITEBYTECODE"}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 10, 11):
        raise SystemExit(f"{' '.join(command)} exited {code}: {process.stderr.read().decode()[:500]}")
    return elapsed, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def make_fleet(folder: Path, template: Path, count: int) -> None:
    if (folder / "projects").exists():
        shutil.rmtree(folder / "projects")
    for n in range(count):
        target = folder / "projects" / f"p{n:05d}" / ".aipm" / "data" / "aipm.db"
        target.parent.mkdir(parents=True)
        shutil.copyfile(template, target)
    # On disk before anything is timed: a user's databases were written long ago, and the copies' dirty pages would
    # otherwise be written back inside the timed run (by its first fsync of each file, or by the kernel meanwhile),
    # as noise that weighs on a sequential loop and on two workers differently.
    os.sync()


def template_database(folder: Path) -> Path:
    """One database with APM's shipped catalog applied, made by the library."""
    from planner.catalog import shipped_catalog_dir
    from planner.engines import engine_for
    from planner.loader import load_catalog
    from planner.plan import apply_plan

    catalog = load_catalog(shipped_catalog_dir())
    path = folder / "template.db"
    with contextlib.redirect_stdout(io.StringIO()):  # the migrations' print()s
        engine_for(path).runner(catalog=catalog, create=True).migrate(lambda ledger: apply_plan(catalog, ledger))
    return path


def alternate(runs: int, *timed) -> list[list]:
    """``runs`` timings of each, alternated, after one untimed warm-up of each (caches, bytecode)."""
    for each in timed:
        each()
    samples: list[list] = [[] for _ in timed]
    for _ in range(runs):
        for each, found in zip(timed, samples):
            found.append(each())
    return samples


def median(samples: list[tuple[float, int, float]]) -> float:
    return statistics.median(s[0] for s in samples)


def cpu(samples: list[tuple[float, int, float]]) -> float:
    return statistics.median(s[2] for s in samples)


def line(name: str, figure: float, baseline: float, target: float | None, before: float | None = None) -> None:
    ratio = figure / baseline
    verdict = "" if target is None else ("met" if ratio <= target else "MISSED")
    shown = f" (target <= {target}x: {verdict})" if target is not None else ""
    if before is not None:
        shown += f"; before {before * 1000:.0f} ms, ratio {before / baseline:.2f}x"
    print(f"{name:58} {figure * 1000:8.0f} ms  baseline {baseline * 1000:8.0f} ms  ratio {ratio:5.2f}x{shown}")


def cpu_line(ours: list, base: list, before: list | None) -> None:
    """The CPU seconds of the same runs (a loaded machine moves wall clock more than CPU)."""
    shown = f"; before {cpu(before) * 1000:.0f} ms, {cpu(before) / cpu(base):.2f}x" if before else ""
    print(f"{'    CPU (user + system, workers included)':58} {cpu(ours) * 1000:8.0f} ms  baseline "
          f"{cpu(base) * 1000:8.0f} ms  ratio {cpu(ours) / cpu(base):5.2f}x{shown}")


def compared(command: list[str], before: str | None) -> list[list[str]]:
    """``command``, and the same command run by the ``--before`` apm when one is given."""
    return [command] + ([[before, *command[1:]]] if before else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dbs", type=int, default=1000, help="databases in the fleet [1000]")
    parser.add_argument("--runs", type=int, default=5, help="runs of each figure [5]")
    parser.add_argument("--linear", type=int, default=0, metavar="K",
                        help="also time status over K x --dbs databases (disk: about 60 KB each)")
    parser.add_argument("--before", metavar="APM", help="also time this apm (another tree's), alternated")
    parser.add_argument("--after", metavar="APM", default=str(APM),
                        help="the apm timed as this tree's [the installed one]; a wrapper such as "
                             "'PYTHONPATH=tree python -m cli.main' starts as --before's does")
    parser.add_argument("--no-migrate", action="store_true", help="skip (b), the longest: status and drift only")
    args = parser.parse_args()
    if not APM.exists():
        raise SystemExit("the apm console script is not installed next to this Python (pip install -e .)")
    with tempfile.TemporaryDirectory(prefix="apm-bench-fleet-") as scratch:
        folder = Path(scratch)
        template = template_database(folder)
        make_fleet(folder, template, args.dbs)
        print(f"{args.dbs} databases, {args.runs} runs each, {os.cpu_count()} cores, Python "
              f"{sys.version.split()[0]}")

        def timed(command: list[str], fresh: bool = False):
            def once():
                if fresh:  # the files copied afresh (not timed)
                    make_fleet(folder, template, args.dbs)
                return run(command, folder)
            return once

        # (a) status
        status = [args.after, "fleet", "status", "--glob", PATTERN]
        loop = [sys.executable, "-c", STATUS_LOOP, PATTERN]
        base, ours, *before = alternate(args.runs, timed(loop), *map(timed, compared(status, args.before)))
        status_time = median(ours)
        line(f"(a) fleet status, {args.dbs} databases", status_time, median(base), 1.5,
             median(before[0]) if before else None)
        cpu_line(ours, base, before[0] if before else None)
        print(f"    peak RSS: apm {max(s[1] for s in ours) / 1024:.0f} MiB, loop "
              f"{max(s[1] for s in base) / 1024:.0f} MiB (target <= 200 MB)")

        # (c) drift, against (a)
        drift = [args.after, "fleet", "status", "--drift", "--glob", PATTERN]
        samples = alternate(args.runs, *map(timed, compared(drift, args.before) + compared(status, args.before)))
        drifts, statuses = samples[0], samples[1 + bool(args.before)]
        line("(c) fleet status --drift vs fleet status", median(drifts), median(statuses), 2.0)
        if args.before:
            line("    before: --drift vs status", median(samples[1]), median(samples[3]), 2.0)

        # (b) migrate --jobs 2, one small pending migration each
        if args.no_migrate:
            print(f"    load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        catalog = folder / "catalog"
        from planner.catalog import shipped_catalog_dir

        shutil.copytree(shipped_catalog_dir(), catalog, ignore=shutil.ignore_patterns("__pycache__", "README.md"))
        (catalog / "migration_0031_bench_notes.py").write_text(PENDING)
        fleet = [args.after, "--migrations-dir", str(catalog), "fleet", "migrate", "--glob", PATTERN, "--jobs", "2",
                 "--journal-dir", str(folder / "journals")]
        raw = [sys.executable, "-c", MIGRATE_LOOP, PATTERN]
        if not args.no_migrate:
            base, ours, *before = alternate(args.runs, timed(raw, fresh=True),
                                            *(timed(c, fresh=True) for c in compared(fleet, args.before)))
            line(f"(b) fleet migrate --jobs 2, {args.dbs} databases, 1 pending", median(ours), median(base), 1.3,
                 median(before[0]) if before else None)
            cpu_line(ours, base, before[0] if before else None)
            print(f"    load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")

        if args.linear > 1:
            make_fleet(folder, template, args.dbs)
            small = [run(status, folder) for _ in range(args.runs + 1)][1:]
            make_fleet(folder, template, args.dbs * args.linear)
            big = [run(status, folder) for _ in range(args.runs + 1)][1:]
            ratio = median(big) / median(small)
            print(f"(a) linearity: {args.dbs * args.linear} databases {median(big) * 1000:.0f} ms, {args.dbs} "
                  f"{median(small) * 1000:.0f} ms: {ratio:.2f}x for {args.linear}x the databases (target <= "
                  f"{1.1 * args.linear:.1f}x: {'met' if ratio <= 1.1 * args.linear else 'MISSED'}); peak RSS "
                  f"{max(s[1] for s in big) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
