"""PostgreSQL targets, as ratios measured in one run (docs/performance.md, PostgreSQL section).

1. Apply 1,000 trivial migrations to a fresh database with the PostgreSQL
   engine (advisory lock, one transaction per migration with its ledger and
   log rows) against a raw psycopg loop doing the same work (one
   transaction per migration with its ledger row), three rounds in turn:
   target <= 1.3x.
2. Plan with 1,000 applied on PostgreSQL against the same on SQLite:
   target <= 1.2x. Measured twice:
   a. the library call (read the ledger on a new connection, make the
      apply plan), interleaved;
   b. what users run: the installed ``apm`` as a whole process on its
      default path (``apm migrate plan``, ``apm migrate --show-applied``,
      ``apm status``) with ``--db`` naming the server's Unix socket, against
      the same command on a SQLite file holding the same 1,000 rows. Runs
      are interleaved (PostgreSQL, SQLite, PostgreSQL, ...); wall time and
      the process's CPU time, best, median and worst, and the ratios of
      each round's pair.
3. The floor of ``apm migrate plan`` on PostgreSQL: the SQLite command run
   in a process that first imports psycopg, opens one connection (a
   backend forked on the server) and sends ``SELECT 1``. No psycopg-based
   command can be faster than that; the ratio floor/SQLite is the best 2b
   can reach. Beside it, ``import psycopg`` timed inside a fresh
   interpreter and connect + ``SELECT 1`` + close in this one.
4. The default ``apm migrate`` path: the same 1,000 migrations previewed
   (the whole plan in one watched transaction, then committed), one round
   after each round of 1, against the unwatched engine run of 1
   (``--no-preview``) and against the raw loop.
5. The apply target as users run it: the installed ``apm migrate`` as a
   whole process on a fresh database, on its default path (previewed) and
   with ``--no-preview``, against the raw loop of 1 run as a process of
   its own (a Python interpreter that imports psycopg), interleaved.

Starts its own throwaway server (tests/pg_server.py). Run:
``python tests/benchmarks/bench_postgres.py [N]`` (N migrations, 1,000 by
default). A measurement, not a test: it always exits 0.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import write_migration  # noqa: E402
from tests.pg_server import PgServer, find_bin_dir  # noqa: E402

ROUNDS = 15  # whole processes per command and engine
APPLY_ROUNDS = 3
COMMANDS = {"apm migrate plan": ["migrate", "plan"], "apm migrate --show-applied": ["migrate", "--show-applied"],
            "apm status": ["status"]}
FLOORED = "apm migrate plan"
# The raw loop of 1 as a process of its own: argv: URL, N.
RAW_LOOP = ("import sys, psycopg\n"
            "url, n = sys.argv[1], int(sys.argv[2])\n"
            "with psycopg.connect(url, autocommit=True) as conn:\n"
            "    conn.execute('CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, '\n"
            "                 'applied_at TIMESTAMP, checksum TEXT, execution_ms INTEGER)')\n"
            "    for i in range(1, n + 1):\n"
            "        with conn.transaction():\n"
            "            conn.execute(f'CREATE TABLE t{i} (id INT)')\n"
            "            conn.execute('INSERT INTO schema_migrations VALUES (%s, %s, now(), %s, %s)',\n"
            "                         (f'{i:04d}', f'Table {i}', 'x' * 64, 1))\n")
IMPORT_PSYCOPG = "import time; t = time.perf_counter(); import psycopg; print(time.perf_counter() - t)"
# The floor of ``apm migrate plan`` on PostgreSQL: the SQLite command's own process, plus what no psycopg
# command avoids (importing the driver, forking one backend, one round trip). argv: URL, then apm's arguments.
FLOOR = ("import sys, psycopg\n"
         "with psycopg.connect(sys.argv.pop(1), autocommit=True) as conn:\n"
         "    conn.execute('SELECT 1').fetchall()\n"
         "from cli.main import main\n"
         "sys.argv[0] = 'apm'\n"
         "main()\n")


def best(function, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def interleaved(functions: dict[str, object], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each function, called in turn ``rounds`` times so load drifts hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return times


def spread(times: list[float]) -> str:
    return (f"best {min(times) * 1000:.1f} ms, median {statistics.median(times) * 1000:.1f}, "
            f"worst {max(times) * 1000:.1f}")


def paired(subject: list[float], baseline: list[float]) -> str:
    """The ratio of bests, and the median of the per-round ratios and differences (each round ran both)."""
    ratios = [s / b for s, b in zip(subject, baseline)]
    differences = [(s - b) * 1000 for s, b in zip(subject, baseline)]
    return (f"ratio of bests {min(subject) / min(baseline):.2f}, median of paired ratios "
            f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}), "
            f"median difference {statistics.median(differences):.0f} ms")


def apm_script() -> str:
    """The console script pip installed beside this interpreter (not whatever ``apm`` is first on PATH)."""
    script = Path(sys.executable).with_name("apm")
    if not script.exists():
        raise SystemExit(f"no apm console script next to {sys.executable}; run `pip install -e .` first")
    return str(script)


def process(argv: list[str], cwd: Path, cpu: list[float] | None = None):
    """A function running ``argv`` to completion (output captured, no APM_* settings), failing loudly.

    ``cpu`` collects the process's user + system CPU seconds, which other work on the machine disturbs
    less than the wall clock (but which leaves out the server's share).
    """
    # Nor PYTHONDONTWRITEBYTECODE: a user's machine caches the catalog's bytecode, as apm does by default.
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_") and k != "PYTHONDONTWRITEBYTECODE"}

    def run() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:6])} ... failed ({done.returncode}): {done.stderr.strip()}")
        if cpu is not None:
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)

    return run


def whole_processes(url: str, sqlite_db: Path, folder: Path, cwd: Path,
                    rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds of each command on each engine, and of the floor of ``FLOORED``."""
    apm = apm_script()
    functions, cpu = {}, {}
    for label, args in COMMANDS.items():
        for engine, db in (("PostgreSQL", url), ("SQLite", str(sqlite_db))):
            cpu[f"{label} | {engine}"] = []
            functions[f"{label} | {engine}"] = process([apm, "--db", db, "--migrations-dir", str(folder), *args],
                                                        cwd, cpu[f"{label} | {engine}"])
    cpu["floor"] = []
    functions["floor"] = process([sys.executable, "-c", FLOOR, url, "--db", str(sqlite_db), "--migrations-dir",
                                  str(folder), *COMMANDS[FLOORED]], cwd, cpu["floor"])
    for function in functions.values():
        function()  # compile the catalog's __pycache__ and warm the page cache, as a used machine has them
    for figures in cpu.values():
        figures.clear()
    return interleaved(functions, rounds), cpu


def whole_applies(server: PgServer, folder: Path, cwd: Path, n: int, rounds: int) -> dict[str, list[float]]:
    """Wall seconds of ``apm migrate`` (default, and ``--no-preview``) and of the raw loop as processes,
    each on a fresh database made outside the timing, in turn."""
    apm = apm_script()
    commands = {"apm migrate": ["migrate"], "apm migrate --no-preview": ["migrate", "--no-preview"]}
    times: dict[str, list[float]] = {name: [] for name in [*commands, "raw loop"]}
    for _ in range(rounds):
        for name in times:
            url = server.create_database()
            argv = ([sys.executable, "-c", RAW_LOOP, url, str(n)] if name == "raw loop" else
                    [apm, "--db", url, "--migrations-dir", str(folder), *commands[name]])
            run = process(argv, cwd)
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return times


def import_times(cwd: Path, rounds: int) -> list[float]:
    """``import psycopg`` alone, timed inside a fresh interpreter (start-up and exit left out)."""
    return [float(subprocess.run([sys.executable, "-c", IMPORT_PSYCOPG], cwd=cwd, capture_output=True, text=True,
                                 check=True).stdout) for _ in range(rounds)]


def connect_times(url: str, rounds: int) -> list[float]:
    """Connect + ``SELECT 1`` + close in this process (psycopg already imported): a backend forked and ended."""
    import psycopg

    def connect() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT 1").fetchall()

    return interleaved({"connect": connect}, rounds)["connect"]


def main(n: int = 1000) -> None:
    import psycopg

    from planner.engines import engine_for
    from planner.loader import load_catalog
    from planner.plan import apply_plan

    server = PgServer(find_bin_dir())
    server.start()
    try:
        work = Path(tempfile.mkdtemp(prefix="apm-bench-pg-"))
        folder = work / "migrations"
        folder.mkdir()
        for i in range(1, n + 1):
            write_migration(folder, f"{i:04d}", f"Table {i}", depends_on=(f"{i - 1:04d}",) if i > 1 else (),
                            upgrade=f"conn.execute('CREATE TABLE t{i} (id INT)')")
        catalog = load_catalog(folder)

        # 1. the engine against a raw loop, each on a fresh database (made outside the timing), in turn.
        def apply_engine(url: str) -> None:
            engine_for(url).runner(catalog=catalog).migrate(lambda ledger: apply_plan(catalog, ledger))

        def apply_raw(url: str) -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, "
                             "applied_at TIMESTAMP, checksum TEXT, execution_ms INTEGER)")
                for i in range(1, n + 1):
                    with conn.transaction():
                        conn.execute(f"CREATE TABLE t{i} (id INT)")
                        conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, now(), %s, %s)",
                                     (f"{i:04d}", f"Table {i}", "x" * 64, 1))

        def apply_previewed(url: str) -> None:
            preview = engine_for(url).runner(catalog=catalog).preview(apply_plan(catalog, {}), accept=lambda _p: True)
            assert preview.committed and len(preview.steps) == n

        applies: dict[str, list[float]] = {"engine": [], "raw": [], "previewed": []}
        urls = {}
        for _ in range(APPLY_ROUNDS):
            for name, apply in (("engine", apply_engine), ("raw", apply_raw), ("previewed", apply_previewed)):
                urls[name] = server.create_database()
                started = time.perf_counter()
                apply(urls[name])
                applies[name].append(time.perf_counter() - started)
        url = urls["engine"]  # n applied by the engine: the database the plans below read
        engine = engine_for(url)

        # 2a. planning with n applied, the library call: PostgreSQL against SQLite.
        sqlite_db = work / "bench.db"
        engine_for(str(sqlite_db)).runner(catalog=catalog, create=True).run(apply_plan(catalog, {}))
        sqlite_engine = engine_for(sqlite_db)
        library = interleaved({"PostgreSQL": lambda: apply_plan(catalog, engine.applied()),
                               "SQLite": lambda: apply_plan(catalog, sqlite_engine.applied())}, 25)

        # 2b. the same, and two other readers of the ledger, as whole processes; and the floor (3).
        processes, cpu = whole_processes(url, sqlite_db, folder, work, ROUNDS)

        # 5. the apply target as whole processes.
        applies_whole = whole_applies(server, folder, work, n, APPLY_ROUNDS)

        # 3. what the floor is made of: importing the driver, and one connection.
        imports = import_times(work, ROUNDS)
        connects = connect_times(url, ROUNDS * 3)
    finally:
        server.stop()

    print(f"1. apply {n}, {APPLY_ROUNDS} interleaved rounds: engine {spread(applies['engine'])}; raw psycopg loop "
          f"{spread(applies['raw'])}; {paired(applies['engine'], applies['raw'])} (target <= 1.3)")
    pg, lite = library["PostgreSQL"], library["SQLite"]
    print(f"2a. plan with {n} applied, library call, {len(pg)} interleaved rounds (a new connection each): "
          f"PostgreSQL {spread(pg)}; SQLite {spread(lite)}; {paired(pg, lite)} (target <= 1.2)")
    print(f"2b. whole processes with {n} applied, {ROUNDS} interleaved rounds (target <= 1.2):")
    for label in COMMANDS:
        pg, lite = processes[f"{label} | PostgreSQL"], processes[f"{label} | SQLite"]
        print(f"    {label}: PostgreSQL {spread(pg)}; SQLite {spread(lite)}")
        print(f"        wall: {paired(pg, lite)}")
        print(f"        CPU of the apm process: {paired(cpu[f'{label} | PostgreSQL'], cpu[f'{label} | SQLite'])}")
    floor, lite, pg = processes["floor"], processes[f"{FLOORED} | SQLite"], processes[f"{FLOORED} | PostgreSQL"]
    print(f"3. floor of {FLOORED}: the SQLite command plus import psycopg, one connection and SELECT 1 in its "
          f"process: {spread(floor)}")
    print(f"        floor against SQLite: {paired(floor, lite)}")
    print(f"        PostgreSQL against the floor: {paired(pg, floor)}")
    print(f"        CPU, floor against SQLite: {paired(cpu['floor'], cpu[f'{FLOORED} | SQLite'])}")
    print(f"   in one interpreter: import psycopg {spread(imports)}; connect + SELECT 1 + close {spread(connects)}")
    print(f"4. apply {n} previewed (the default apm migrate): {spread(applies['previewed'])}; against the "
          f"unwatched engine run: {paired(applies['previewed'], applies['engine'])}; against the raw loop: "
          f"{paired(applies['previewed'], applies['raw'])} (target <= 1.3)")
    print(f"5. apply {n} to a fresh database, whole processes, {APPLY_ROUNDS} interleaved rounds (target <= 1.3):")
    raw = applies_whole["raw loop"]
    print(f"    raw loop (python -c, psycopg): {spread(raw)}")
    for name in ("apm migrate", "apm migrate --no-preview"):
        print(f"    {name}: {spread(applies_whole[name])}; against the raw loop: {paired(applies_whole[name], raw)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
