"""What the preview costs, measured on the installed ``apm`` as whole processes, against baselines in the same run.

Run from the repository root:

    python tests/benchmarks/bench_preview.py            # full sizes (a 2,000,000-row database: a few minutes)
    python tests/benchmarks/bench_preview.py --quick    # 200,000 rows, fewer repeats
    python tests/benchmarks/bench_preview.py --long-runs # only (d) and (e), medians of 7
    python tests/benchmarks/bench_preview.py --data update --before /tmp/base  # (e) UPDATEs alone, with the
        # code in /tmp/base (e.g. ``git archive <commit> | tar -x -C /tmp/base``) timed in the same rounds

(a) Default ``apm migrate`` of 1,000 and 5,000 trivial migrations to a fresh
    file, against a raw sqlite3 loop in its own process doing the same work:
    one transaction per migration holding its DDL and its ledger row.
    Target: at most 1.3x, for both sizes (linear).
(b) A one-step plan adding a small table to a database with a 2,000,000-row
    table (about 400 MB): default ``apm migrate`` against ``apm migrate
    --no-preview``. Target: at most 1.3x, and no temporary file over 1 MB
    (the folder, /tmp and /dev/shm are watched while it runs).
(c) The shipped catalog's cascade rollback of 0027 on a database with 100,000
    agents: the preview alone (``--dry-run``) against the rollback itself
    without a preview (``--yes --no-preview``), both ``--no-backup``.
    Target: at most 1.2x.
(d) Rolling back 500 of 1,000 trivial migrations (a chain; ``--rollback 0501
    --cascade --yes``, the backup included) on the default path, against a
    raw sqlite3 loop in its own process (one transaction per migration: the
    DROP and the ledger delete), and the same command with ``--no-preview``.
    Target: the default path at most 1.3x the raw loop.
(e) A data migration running 50,000 single-row ``conn.execute(sql, params)``
    statements, ``INSERT`` and then ``UPDATE ... WHERE id = ?`` (which
    overwrites values, so ``--yes``): the default path against
    ``--no-preview`` and against the same loop in plain sqlite3, its own
    process, one transaction. Targets: at most 1.3x ``--no-preview`` and at
    most 2x the plain loop, for both. Every side runs in the scenario's own
    folder, where no config file is found (the plain loop reads none).

Every run starts from a fresh copy of the database (copying is not timed).
Medians of several runs, the sides taking turns; this is a measurement, not a
test (exit 0 always). The catalogs' bytecode is written once before timing,
as on a user's machine (this sandbox sets PYTHONDONTWRITEBYTECODE).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
APM = str(Path(sys.executable).parent / "apm")

RAW_LOOP = r'''
import sqlite3, sys
db, count = sys.argv[1], int(sys.argv[2])
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, description TEXT, "
             "applied_at TIMESTAMP, checksum TEXT, execution_ms INTEGER)")
for n in range(1, count + 1):
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"CREATE TABLE t{n} (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO schema_migrations VALUES (?, ?, CURRENT_TIMESTAMP, NULL, NULL)", (f"{n:04d}", f"table {n}"))
    conn.execute("COMMIT")
conn.close()
'''


def trivial_catalog(directory: Path, count: int) -> None:
    directory.mkdir()
    for n in range(1, count + 1):
        (directory / f"migration_{n:04d}.py").write_text(
            f'"""Migration {n:04d}: table {n}"""\n\n'
            f"def upgrade(conn):\n    conn.execute('CREATE TABLE t{n} (id INTEGER PRIMARY KEY, v TEXT)')\n"
            f"\ndef downgrade(conn):\n    conn.execute('DROP TABLE t{n}')\n"
        )


def run(argv: list[str], cwd: Path | None = None, pythonpath: str | None = None) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_") and k != "PYTHONDONTWRITEBYTECODE"}
    if pythonpath is not None:  # another tree's code, run as ``python -m cli.main``
        env["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def median(values: list[float]) -> float:
    return statistics.median(values)


def alternate(repeats: int, subject, baseline) -> tuple[float, float]:
    """Median seconds of subject and baseline, run alternately so load drifts hit both alike."""
    s, b = [], []
    for _ in range(repeats):
        b.append(baseline())
        s.append(subject())
    return median(s), median(b)


# -- (a) many trivial migrations ---------------------------------------------------------------


def trivial(count: int, repeats: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="apm-bench-preview-") as folder:
        work = Path(folder)
        catalog = work / "catalog"
        trivial_catalog(catalog, count)
        # Compile the catalog once, as a warm machine would have it.
        run([APM, "--db", str(work / "warm.db"), "--migrations-dir", str(catalog), "migrate", "plan"])
        counter = iter(range(10_000))

        def apm_default() -> float:
            db = work / f"a{next(counter)}.db"
            return run([APM, "--db", str(db), "--migrations-dir", str(catalog), "migrate"])

        def raw() -> float:
            db = work / f"r{next(counter)}.db"
            return run([sys.executable, "-c", RAW_LOOP, str(db), str(count)])

        return alternate(repeats, apm_default, raw)


# -- (b) a small change to a big database --------------------------------------------------------


class TempWatch:
    """Polls the database's folder, /tmp and /dev/shm for files that appear while a command runs."""

    def __init__(self, folders: list[Path], ignore: set[Path]):
        self.folders = [f for f in folders if f.is_dir()]
        self.ignore = ignore
        self.largest: tuple[int, str] = (0, "")
        self._stop = threading.Event()

    def __enter__(self) -> TempWatch:
        self._before = {p for f in self.folders for p in self._walk(f)}
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _walk(folder: Path):
        for root, _, files in os.walk(folder):
            for name in files:
                yield Path(root) / name

    def _poll(self) -> None:
        while not self._stop.is_set():
            for folder in self.folders:
                for path in self._walk(folder):
                    if path in self._before or path in self.ignore or "pytest-of-" in str(path) \
                            or "/apm-pg-" in str(path):
                        continue  # other programs' files (a test run, a throwaway PostgreSQL server) are not ours
                    try:
                        size = path.stat().st_size
                    except OSError:
                        continue
                    if size > self.largest[0]:
                        self.largest = (size, str(path))
            time.sleep(0.005)


def big_database(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload TEXT, at TEXT)")
    conn.execute("CREATE INDEX events_kind ON events (kind)")
    batch = 100_000
    payload = "x" * 150
    for start in range(0, rows, batch):
        conn.executemany(
            "INSERT INTO events (kind, payload, at) VALUES (?, ?, '2026-12-01 00:00:00')",
            ((f"kind-{i % 50}", payload) for i in range(start, min(rows, start + batch))),
        )
    conn.commit()
    conn.close()


def small_change(rows: int, repeats: int) -> tuple[float, float, tuple[int, str], int]:
    with tempfile.TemporaryDirectory(prefix="apm-bench-preview-", dir=str(ROOT.parent)) as folder:
        work = Path(folder)
        catalog = work / "catalog"
        catalog.mkdir()
        (catalog / "migration_0001.py").write_text(
            '"""Migration 0001: Events (made before apm)"""\n\ndef upgrade(conn):\n'
            "    conn.execute('CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
            "payload TEXT, at TEXT)')\n"
        )
        (catalog / "migration_0002.py").write_text(
            '"""Migration 0002: Add a small table"""\n\ndepends_on = ("0001",)\n\ndef upgrade(conn):\n'
            "    conn.execute('CREATE TABLE labels (id INTEGER PRIMARY KEY, name TEXT NOT NULL)')\n"
            "    conn.execute(\"INSERT INTO labels (name) VALUES ('a'), ('b')\")\n"
        )
        original = work / "original.db"
        big_database(original, rows)
        run([APM, "--db", str(original), "--migrations-dir", str(catalog), "migrate", "--mark-applied", "0001"])
        size = original.stat().st_size
        db = work / "big.db"
        watch_result: list[tuple[int, str]] = []

        def once(extra: list[str]) -> float:
            shutil.copyfile(original, db)
            with TempWatch([work, Path(tempfile.gettempdir()), Path("/dev/shm")], {original, db}) as watch:
                elapsed = run([APM, "--db", str(db), "--migrations-dir", str(catalog), "migrate", *extra])
            watch_result.append(watch.largest)
            return elapsed

        default, no_preview = alternate(repeats, lambda: once([]), lambda: once(["--no-preview"]))
        largest = max(watch_result[1::2])  # the default runs' temporary files
        return default, no_preview, largest, size


# -- (c) the shipped cascade rollback on 100,000 agents ---------------------------------------


def shipped_cascade(agents: int, repeats: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="apm-bench-preview-") as folder:
        work = Path(folder)
        original = work / "original.db"
        run([APM, "--db", str(original), "migrate"])
        conn = sqlite3.connect(original)
        conn.execute("INSERT INTO projects (name) VALUES ('bench')")
        conn.executemany(
            "INSERT INTO agents (project_id, role, display_name, metadata) VALUES (?, ?, ?, ?)",
            ((1, f"role-{i}", f"Agent {i}", '{"rules": ["r"]}' if i % 3 else "{}") for i in range(agents)),
        )
        conn.commit()
        conn.close()
        db = work / "aipm.db"
        common = ["--db", str(db), "migrate", "--rollback", "0027", "--cascade", "--no-backup"]

        def dry_run() -> float:
            shutil.copyfile(original, db)
            env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
            started = time.perf_counter()
            done = subprocess.run([APM, *common, "--dry-run"], env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
            if done.returncode != 7:  # 7: the plan destroys data, as it should here
                raise SystemExit(f"dry run failed ({done.returncode}): {done.stderr}")
            return elapsed

        def rollback() -> float:
            shutil.copyfile(original, db)
            return run([APM, *common, "--yes", "--no-preview"])

        return alternate(repeats, dry_run, rollback)


# -- (d) rolling back half of a long chain -------------------------------------------------------

RAW_ROLLBACK = r'''
import sqlite3, sys
db, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = sqlite3.connect(db, isolation_level=None)
for n in range(last, first - 1, -1):
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"DROP TABLE t{n}")
    conn.execute("DELETE FROM schema_migrations WHERE version = ?", (f"{n:04d}",))
    conn.execute("COMMIT")
conn.close()
'''


def chain_catalog(directory: Path, count: int) -> None:
    """Each migration makes a table, depends on the one before, and drops its table again."""
    directory.mkdir()
    for n in range(1, count + 1):
        (directory / f"migration_{n:04d}.py").write_text(
            f'"""Migration {n:04d}: table {n}"""\n\n'
            + (f"depends_on = ('{n - 1:04d}',)\n\n" if n > 1 else "")
            + f"def upgrade(conn):\n    conn.execute('CREATE TABLE t{n} (id INTEGER PRIMARY KEY, v TEXT)')\n\n"
            f"def downgrade(conn):\n    conn.execute('DROP TABLE t{n}')\n"
        )


def rollback_half(count: int, repeats: int) -> tuple[Timing, Timing, Timing]:
    """Medians: the default ``--rollback --cascade --yes`` (backup included), ``--no-preview``, the raw loop."""
    first = count // 2 + 1
    with tempfile.TemporaryDirectory(prefix="apm-bench-preview-") as folder:
        work = Path(folder)
        catalog = work / "chain"
        chain_catalog(catalog, count)
        original = work / "original.db"
        run([APM, "--db", str(original), "--migrations-dir", str(catalog), "migrate"])
        db = work / "chain.db"
        command = [APM, "--db", str(db), "--migrations-dir", str(catalog), "migrate", "--rollback", f"{first:04d}",
                   "--cascade", "--yes"]

        def fresh() -> None:
            for backup in work.glob("chain.db.backup.*"):
                backup.unlink()
            shutil.copyfile(original, db)

        def default() -> float:
            fresh()
            return run(command)

        def no_preview() -> float:
            fresh()
            return run([*command, "--no-preview"])

        def raw() -> float:
            fresh()
            return run([sys.executable, "-c", RAW_ROLLBACK, str(db), str(first), str(count)])

        return rounds(repeats, default, no_preview, raw)


# -- (e) a data migration of many single-row statements ------------------------------------------

DATA_SETUP = '''"""Migration 0001: items"""

def upgrade(conn):
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL DEFAULT 0)")
'''
DATA_FILL = '''"""Migration 0002: fill items"""

depends_on = ("0001",)

def upgrade(conn):
    conn.executemany("INSERT INTO items (id, name, qty) VALUES (?, ?, ?)",
                     ((i, f"item {i}", i % 7) for i in range({rows})))
'''
#: The loop each data migration runs, the same text in the plain baseline.
DATA_LOOPS = {
    "insert": '''for i in range({rows}):
        conn.execute("INSERT INTO items (id, name, qty) VALUES (?, ?, ?)", (i, f"item {{i}}", i % 7))''',
    "update": '''for i in range({rows}):
        conn.execute("UPDATE items SET qty = ? WHERE id = ?", (i % 11, i))''',
}
PLAIN_DATA = '''
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
if True:
    {loop}
conn.execute("COMMIT")
conn.close()
'''


def data_migration(kind: str, rows: int, repeats: int, before: str | None = None) -> tuple[Timing, ...]:
    """Medians: default ``apm migrate --yes``, ``--no-preview``, the plain loop, and with ``before`` (a source tree)
    that tree's default path; ``kind`` is insert or update."""
    loop = DATA_LOOPS[kind].format(rows=rows)
    with tempfile.TemporaryDirectory(prefix="apm-bench-preview-") as folder:
        work = Path(folder)
        catalog = work / "catalog"
        catalog.mkdir()
        (catalog / "migration_0001.py").write_text(DATA_SETUP)
        # Not ``before``: that names the other tree (reusing the name once made that side run this tree's code).
        setup = "0001"
        if kind == "update":
            (catalog / "migration_0002.py").write_text(DATA_FILL.replace("{rows}", str(rows)))
            setup = "0002"
        (catalog / "migration_0003.py").write_text(
            f'"""Migration 0003: {kind} {rows} rows one at a time"""\n\ndepends_on = ("{setup}",)\n\n'
            f"def upgrade(conn):\n    {loop}\n")
        original = work / "original.db"
        run([APM, "--db", str(original), "--migrations-dir", str(catalog), "migrate", "--target", setup])
        db = work / "data.db"

        # Every side runs in the work folder, which has no configuration file: run from the repository, ``apm``
        # would also read its pyproject.toml (about 16 M instructions, 3 % of a one-statement run), which the
        # plain loop does not, and which a user passing --db and --migrations-dir has no reason to have.
        def default() -> float:
            shutil.copyfile(original, db)
            return run([APM, "--db", str(db), "--migrations-dir", str(catalog), "migrate", "--yes"], cwd=work)

        def no_preview() -> float:
            shutil.copyfile(original, db)
            return run([APM, "--db", str(db), "--migrations-dir", str(catalog), "migrate", "--no-preview"], cwd=work)

        def plain() -> float:
            shutil.copyfile(original, db)
            return run([sys.executable, "-c", PLAIN_DATA.format(loop=loop), str(db)], cwd=work)

        def old_default() -> float:
            shutil.copyfile(original, db)
            # What the console script runs (not ``-m cli.main``, which would import cli.main twice), the other tree
            # first on the path.
            return run([sys.executable, "-c", OTHER_TREE, "--db", str(db), "--migrations-dir", str(catalog), "migrate",
                        "--yes"], cwd=work, pythonpath=before)

        if before is None:
            return rounds(repeats, default, no_preview, plain)
        old_default()  # its bytecode written once, as the installed side's was
        return rounds(repeats, default, no_preview, plain, old_default)


#: The console script's own lines, for a tree run from ``PYTHONPATH``: it checks that the tree's code is what runs.
OTHER_TREE = (
    "import os, sys\n"
    "import cli.main\n"
    "assert cli.main.__file__.startswith(os.environ['PYTHONPATH']), cli.main.__file__\n"
    "sys.argv[0] = 'apm'\n"
    "sys.exit(cli.main.main())\n"
)


class Timing(NamedTuple):
    """Median seconds of one side: wall clock, and CPU (user + system) of the process it ran."""

    wall: float
    cpu: float


def rounds(repeats: int, *sides) -> tuple[Timing, ...]:
    """Each side's medians, the sides taking turns within each round so load drifts hit all alike.

    CPU time is the child processes' (``RUSAGE_CHILDREN``), so copying the
    database beforehand in this process is not counted. On a machine shared
    with other work the wall clock also measures waiting (for the CPU, and
    for the disk: a loop that commits 500 times waits for 500 fsyncs), so
    both are printed.
    """
    walls: list[list[float]] = [[] for _ in sides]
    cpus: list[list[float]] = [[] for _ in sides]
    for _ in range(repeats):
        for wall, cpu, measure in zip(walls, cpus, sides):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall.append(measure())
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return tuple(Timing(median(w), median(c)) for w, c in zip(walls, cpus))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows, fewer repeats")
    parser.add_argument("--long-runs", action="store_true", help="only scenarios (d) and (e)")
    parser.add_argument("--data", choices=("insert", "update"), help="only scenario (e), for these statements")
    parser.add_argument("--before", metavar="TREE", help="with --data: also time the default path of the code in TREE "
                        "(a source tree, run as python -m cli.main), in the same rounds")
    args = parser.parse_args(argv)
    if args.before is not None:
        if not (Path(args.before) / "cli" / "main.py").is_file():
            parser.error(f"--before {args.before}: no cli/main.py there; give a source tree of this project")
        args.before = str(Path(args.before).resolve())
    if args.data:
        data_only(args.data, 7 if not args.quick else 5, args.before)
        return 0
    if args.long_runs:
        long_runs(7 if not args.quick else 5)
        return 0
    repeats = 3 if args.quick else 5
    rows = 200_000 if args.quick else 2_000_000
    print("What the preview costs (the installed apm, whole processes; medians)")
    for count in (1000, 5000):
        subject, baseline = trivial(count, repeats if count == 1000 else max(3, repeats - 2))
        print(f"(a) {count:>5} trivial migrations: apm migrate {subject:7.2f} s   raw loop {baseline:7.2f} s   "
              f"x{subject / baseline:.2f}   target <= 1.3")
    default, no_preview, largest, size = small_change(rows, repeats)
    print(f"(b) add a table to a {rows:,}-row database ({size / 2**20:.0f} MiB): default {default:6.2f} s   "
          f"--no-preview {no_preview:6.2f} s   x{default / no_preview:.2f}   target <= 1.3")
    print(f"    largest temporary file seen during the default runs: {largest[0] / 1024:.0f} KiB "
          f"{largest[1] or '(none)'}   target < 1024 KiB")
    preview, real = shipped_cascade(100_000, repeats)
    print(f"(c) cascade rollback of 0027, 100,000 agents: preview (--dry-run) {preview:6.2f} s   "
          f"rollback itself {real:6.2f} s   x{preview / real:.2f}   target <= 1.2")
    long_runs(repeats + 2)
    return 0


def data_only(kind: str, repeats: int, before: str | None) -> None:
    """Scenario (e) for one kind of statement, and the same with the code in ``before`` if given."""
    timings = data_migration(kind, 50_000, repeats, before)
    default, no_preview, plain = timings[:3]
    print(f"(e) 50,000 single-row {kind.upper()}s, medians of {repeats}, wall clock and (CPU seconds):")
    for name, t in (("default", default), ("--no-preview", no_preview), ("plain loop", plain)) + (
            (("before: default", timings[3]),) if before else ()):
        print(f"    {name:16} {t.wall:5.3f} s ({t.cpu:5.3f})   x{t.wall / plain.wall:.2f} of the plain loop "
              f"(CPU x{t.cpu / plain.cpu:.2f}), x{t.wall / no_preview.wall:.2f} of --no-preview "
              f"(CPU x{t.cpu / no_preview.cpu:.2f})")
    print("    targets: default <= 1.3x --no-preview and <= 2x the plain loop")


def long_runs(repeats: int) -> None:
    """Scenarios (d) and (e), printed with their ratios."""
    print(f"(d) and (e), medians of {repeats}: wall clock, and in brackets CPU seconds of the process")

    def both(t: Timing) -> str:
        return f"{t.wall:5.2f} s ({t.cpu:4.2f})"

    def ratio(a: Timing, b: Timing) -> str:
        return f"x{a.wall / b.wall:.2f} (CPU x{a.cpu / b.cpu:.2f})"

    default, no_preview, raw = rollback_half(1000, repeats)
    print(f"(d) roll back 500 of 1,000 (--cascade --yes, backup included): default {both(default)}   "
          f"--no-preview {both(no_preview)}   raw loop {both(raw)}\n"
          f"    default {ratio(default, raw)} of the raw loop (target <= 1.3); "
          f"--no-preview {ratio(no_preview, raw)}")
    for kind in ("insert", "update"):
        default, no_preview, plain = data_migration(kind, 50_000, repeats)
        print(f"(e) 50,000 single-row {kind.upper()}s: default {both(default)}   --no-preview {both(no_preview)}   "
              f"plain loop {both(plain)}\n"
              f"    default {ratio(default, no_preview)} of --no-preview (target <= 1.3), "
              f"{ratio(default, plain)} of the plain loop (target <= 2)")


if __name__ == "__main__":
    raise SystemExit(main())
