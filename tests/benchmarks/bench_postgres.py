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

6. Locks (issue 25), whole processes, interleaved rounds, each on a fresh
   database made outside the timing:
   a. apply N trivial migrations (``CREATE TABLE``, each with a
      ``DROP TABLE`` downgrade): ``apm migrate --yes`` (the default path,
      lock analysis included), the same with the analysis switched off
      (``pg_locks.MEASURING = False`` in a wrapper process, the default
      path run through the same wrapper beside it so both pay the same
      start-up), ``--no-preview``, and the raw psycopg loop (a process);
   b. roll back N/2 of them (``apm migrate --to <N/2> --yes --no-backup``,
      and ``--no-preview``) against a raw loop dropping each table and
      deleting its ledger row, one transaction each;
   c. the analysis's worst case: N migrations each altering one table that
      existed before the plan (``ALTER TABLE base ADD COLUMN``, every
      statement measured: a ``pg_locks`` reading after each), with and
      without the analysis.

   With ``--base DIR`` (a copy of an older tree, ``git archive``), each of
   a, b and c also runs that tree's default path through the same wrapper
   (``DIR`` first on ``PYTHONPATH``), so before and after are measured in
   one run, alternated, against the same raw loop.

Starts its own throwaway server (tests/pg_server.py). Run:
``python tests/benchmarks/bench_postgres.py [N]`` (N migrations, 1,000 by
default), or ``python tests/benchmarks/bench_postgres.py [N] --locks [ROUNDS]
[--base DIR] [--only apply|rollback|worst] [--fsync]`` for section 6 alone (or one of its parts; each process's
CPU time is printed beside its wall time; ``--fsync``: the server durable, as the targets are set, instead of
``fsync=off``). A measurement, not a test: it always exits 0.
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


def process(argv: list[str], cwd: Path, cpu: list[float] | None = None, tree: str | None = None):
    """A function running ``argv`` to completion (output captured, no APM_* settings), failing loudly.

    ``cpu`` collects the process's user + system CPU seconds, which other work on the machine disturbs
    less than the wall clock (but which leaves out the server's share). ``tree``: imported first (``--base``).
    """
    # Nor PYTHONDONTWRITEBYTECODE: a user's machine caches the catalog's bytecode, as apm does by default.
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_") and k != "PYTHONDONTWRITEBYTECODE"}
    if tree is not None:
        env["PYTHONPATH"] = tree

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


# apm run in a wrapper process that may switch the lock analysis off first. argv: "on"/"off", apm's arguments.
WRAPPED = ("import sys\n"
           "import planner.engines.postgresql.locks as pg_locks\n"
           "pg_locks.MEASURING = sys.argv.pop(1) == 'on'\n"
           "from cli.main import main\n"
           "sys.argv[0] = 'apm'\n"
           "sys.exit(main())\n")
# The raw loop rolling back: argv: URL, first version to keep + 1, last version.
RAW_ROLLBACK = ("import sys, psycopg\n"
                "url, low, high = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
                "with psycopg.connect(url, autocommit=True) as conn:\n"
                "    for i in range(high, low - 1, -1):\n"
                "        with conn.transaction():\n"
                "            conn.execute(f'DROP TABLE t{i}')\n"
                "            conn.execute('DELETE FROM schema_migrations WHERE version = %s', (f'{i:04d}',))\n")


def lock_figures(server: PgServer, work: Path, n: int, rounds: int, base: str | None = None,
                 only: str | None = None, cpu: dict[str, dict[str, list[float]]] | None = None,
                 ) -> dict[str, dict[str, list[float]]]:
    """Section 6: wall seconds per variant, for the apply, the rollback and the worst case (see the docstring);
    ``only``: that section alone; ``cpu``: filled with each process's CPU seconds, per section and variant."""
    from planner.engines import engine_for
    from planner.loader import load_catalog
    from planner.plan import apply_plan

    apm = apm_script()
    trivial, altering = work / "trivial", work / "altering"
    trivial.mkdir()
    altering.mkdir()
    for i in range(1, n + 1):
        after = (f"{i - 1:04d}",) if i > 1 else ()
        write_migration(trivial, f"{i:04d}", f"Table {i}", depends_on=after,
                        upgrade=f"conn.execute('CREATE TABLE t{i} (id INT)')",
                        downgrade=f"conn.execute('DROP TABLE t{i}')")
        write_migration(altering, f"{i:04d}", f"Column {i}", depends_on=after,
                        upgrade=f"conn.execute('ALTER TABLE base ADD COLUMN c{i} INT')")
    catalog = load_catalog(trivial)

    def apm_run(folder: Path, *args: str):
        return lambda url: [apm, "--db", url, "--migrations-dir", str(folder), *args]

    def wrapped(switch: str, folder: Path, *args: str):
        return lambda url: [sys.executable, "-c", WRAPPED, switch, "--db", url, "--migrations-dir", str(folder),
                            *args]

    def fresh() -> str:
        return server.create_database()

    def applied() -> str:
        url = server.create_database()
        engine_for(url).runner(catalog=catalog).migrate(lambda ledger: apply_plan(catalog, ledger))
        return url

    def with_base() -> str:
        url = server.create_database()
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE base (id INT); INSERT INTO base SELECT generate_series(1, 100); ANALYZE base")
        return url

    keep = f"{n // 2:04d}"
    sections = {
        "apply": (fresh, {
            "raw loop": lambda url: [sys.executable, "-c", RAW_LOOP, url, str(n)],
            "apm migrate --yes": apm_run(trivial, "migrate", "--yes"),
            "apm migrate --yes --no-preview": apm_run(trivial, "migrate", "--yes", "--no-preview"),
            "wrapped, analysis on": wrapped("on", trivial, "migrate", "--yes"),
            "wrapped, analysis off": wrapped("off", trivial, "migrate", "--yes"),
        }),
        "rollback": (applied, {
            "raw loop": lambda url: [sys.executable, "-c", RAW_ROLLBACK, url, str(n // 2 + 1), str(n)],
            "apm migrate --to --yes --no-backup": apm_run(trivial, "migrate", "--to", keep, "--yes", "--no-backup"),
            "apm migrate --to --yes --no-backup --no-preview": apm_run(trivial, "migrate", "--to", keep, "--yes",
                                                                        "--no-backup", "--no-preview"),
            "wrapped, analysis on": wrapped("on", trivial, "migrate", "--to", keep, "--yes", "--no-backup"),
            "wrapped, analysis off": wrapped("off", trivial, "migrate", "--to", keep, "--yes", "--no-backup"),
        }),
        "worst case": (with_base, {
            "wrapped, analysis on": wrapped("on", altering, "migrate", "--yes"),
            "wrapped, analysis off": wrapped("off", altering, "migrate", "--yes"),
            "apm migrate --yes --no-preview": apm_run(altering, "migrate", "--yes", "--no-preview"),
        }),
    }
    if base is not None:  # the older tree's default path, through the same wrapper
        sections["apply"][1]["base, wrapped, analysis on"] = wrapped("on", trivial, "migrate", "--yes")
        sections["rollback"][1]["base, wrapped, analysis on"] = wrapped("on", trivial, "migrate", "--to", keep,
                                                                         "--yes", "--no-backup")
        sections["worst case"][1]["base, wrapped, analysis on"] = wrapped("on", altering, "migrate", "--yes")
    figures: dict[str, dict[str, list[float]]] = {}
    for section, (prepare, commands) in sections.items():
        if only is not None and section != only:
            continue
        times: dict[str, list[float]] = {name: [] for name in commands}
        used = {name: [] for name in commands} if cpu is None else cpu.setdefault(section, {n: [] for n in commands})
        for _ in range(rounds):
            for name, argv in commands.items():
                run = process(argv(prepare()), work, used[name], tree=base if name.startswith("base") else None)
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
        figures[section] = times
    return figures


def print_lock_figures(figures: dict[str, dict[str, list[float]]], n: int, rounds: int,
                       cpu: dict[str, dict[str, list[float]]] | None = None) -> None:
    what = {"apply": f"6a. apply {n} trivial migrations", "rollback": f"6b. roll back {n // 2} of {n}",
            "worst case": f"6c. apply {n} migrations each altering a table older than the plan"}
    for section, times in figures.items():
        print(f"{what[section]}, whole processes, {rounds} interleaved rounds:")
        baseline = times.get("raw loop")
        used = (cpu or {}).get(section, {})
        for name, seconds in times.items():
            against = f"; against the raw loop: {paired(seconds, baseline)}" if baseline and name != "raw loop" else ""
            print(f"    {name}: {spread(seconds)}{against}")
            if used.get(name):  # the client's CPU, which the machine's load disturbs less than the wall clock
                raw_cpu = used.get("raw loop")
                versus = f"; against the raw loop: {paired(used[name], raw_cpu)}" if raw_cpu and name != "raw loop" \
                    else ""
                print(f"        CPU: {spread(used[name])}{versus}")
        on, off = times["wrapped, analysis on"], times["wrapped, analysis off"]
        print(f"    lock analysis cost (on against off): {paired(on, off)} (target <= 1.10)")
        if "base, wrapped, analysis on" in times:
            print(f"    this tree against the base (both wrapped): {paired(on, times['base, wrapped, analysis on'])}")
            if used.get("base, wrapped, analysis on"):
                print(f"        CPU: {paired(used['wrapped, analysis on'], used['base, wrapped, analysis on'])}")


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

        # 6. locks: the analysis's cost, the default path's apply and rollback against raw loops.
        locks = lock_figures(server, work, n, APPLY_ROUNDS)
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
    print_lock_figures(locks, n, APPLY_ROUNDS)


def durable(server: PgServer) -> None:
    """The server restarted with ``fsync=on`` (``--fsync``), as the targets are set: each commit waits for its
    WAL to reach the disk, so the raw loop's 1,000 commits cost what they cost a user."""
    options = f"-k {server.socket_dir} -c listen_addresses='' -c fsync=on -c max_connections=60"
    subprocess.run(server._cmd(str(server.bin_dir / "pg_ctl"), "-D", str(server.data), "-o", options,
                               "-l", str(server.root / "server.log"), "-w", "restart"), check=True, capture_output=True)


def locks_only(n: int, rounds: int = APPLY_ROUNDS, base: str | None = None, only: str | None = None,
               fsync: bool = False) -> None:
    """Section 6 alone (``--locks``): what the lock analysis costs, and the default path against the raw loop."""
    server = PgServer(find_bin_dir())
    server.start()
    if fsync:
        durable(server)
    import psycopg

    with psycopg.connect(server.url("postgres")) as conn:  # what the server runs with, not what was asked
        print(f"server: fsync={conn.execute('SHOW fsync').fetchone()[0]}")
    cpu: dict[str, dict[str, list[float]]] = {}
    try:
        figures = lock_figures(server, Path(tempfile.mkdtemp(prefix="apm-bench-locks-")), n, rounds, base, only, cpu)
    finally:
        server.stop()
    print_lock_figures(figures, n, rounds, cpu)


if __name__ == "__main__":
    given = sys.argv[1:]
    if {"-h", "--help"} & set(given):
        print(__doc__)
        raise SystemExit(0)
    base_tree = given[given.index("--base") + 1] if "--base" in given[:-1] else None
    section = given[given.index("--only") + 1] if "--only" in given[:-1] else None
    arguments = [a for a in given if not a.startswith("--") and a not in (base_tree, section)]
    count = int(arguments[0]) if arguments else 1000
    if "--locks" in sys.argv:
        locks_only(count, int(arguments[1]) if len(arguments) > 1 else APPLY_ROUNDS, base_tree,
                   {"worst": "worst case"}.get(section or "", section), "--fsync" in given)
    else:
        main(count)
