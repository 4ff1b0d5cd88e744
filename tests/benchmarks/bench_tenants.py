"""A tenant's run in a database of many tenants, against the same run in a database holding that tenant alone.

Run from the repository root (psycopg and the PostgreSQL server binaries installed):

    python tests/benchmarks/bench_tenants.py                    # 150 other tenants of 10 tables, 5 rounds
    python tests/benchmarks/bench_tenants.py --before /tmp/base # also another source tree's apm, alternated

A throwaway server (tests/pg_server.py) holds two databases: ``many``, with
``tenant_0`` and N other tenant schemas (each the catalog's 10 tables and a
view, its ledger in its schema), and ``alone``, with ``tenant_0`` only.
Timed, as whole processes (``python -m cli.main``, the tree on
``PYTHONPATH``), alternated, median of the rounds: ``apm migrate --db
url#tenant_0 --dry-run`` of one pending migration (it pauses 0.5 s, then adds
a column), in ``many`` and in ``alone``; the ratio says what the other
tenants cost a run (target: about 1, whatever N). Also shown: the relation
locks the run holds during its pause (from ``pg_locks``), which the other
tenants' relations must not be among. CPU time is the child processes'.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import write_migration  # noqa: E402
from tests.pg_server import PgServer, find_bin_dir  # noqa: E402

_PAUSE = "pg_sleep(0.5)"


def catalog(folder: Path) -> None:
    tables = "\n".join(f"conn.execute('CREATE TABLE t{i} (id INTEGER PRIMARY KEY, a TEXT DEFAULT \\'x\\', b INTEGER)')"
                       for i in range(10))
    write_migration(folder, "0001", "Tables", upgrade=tables + "\nconn.execute('CREATE VIEW v0 AS SELECT t0.id "
                                                            "FROM t0 JOIN t1 ON t1.id = t0.id')")
    write_migration(folder, "0002", "Column", depends_on=("0001",),
                    upgrade=f"conn.execute('SELECT {_PAUSE}')\nconn.execute('ALTER TABLE t3 ADD COLUMN c INTEGER')",
                    downgrade="conn.execute('ALTER TABLE t3 DROP COLUMN c')")


def apm(tree: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "--migrations-dir", str(folder), *args],
                          env={**os.environ, "PYTHONPATH": str(tree), "NO_COLOR": "1"}, capture_output=True,
                          text=True, cwd=tree, check=False)


def tenants(tree: Path, folder: Path, url: str, count: int, work: Path) -> None:
    """``tenant_0`` .. ``tenant_<count>`` at 0001, by one fleet run."""
    listing = work / f"tenants-{count}.txt"
    listing.write_text("".join(f"{url}#tenant_{k}\n" for k in range(count + 1)))
    done = apm(tree, folder, "fleet", "migrate", "--list", str(listing), "--to", "0001", "--yes", "--jobs", "2",
               "--journal-dir", str(work))
    if done.returncode != 0:
        sys.exit(done.stdout + done.stderr)


def timed(tree: Path, folder: Path, url: str) -> tuple[float, float, int | None]:
    """Wall and CPU seconds of the dry run, and the relation locks it held during its pause."""
    import psycopg

    held: list[int] = []

    def watch() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(200):
                row = conn.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                                   "WHERE a.query LIKE %s AND l.locktype = 'relation' "
                                   "AND a.pid <> pg_backend_pid()", (f"%{_PAUSE}%",)).fetchone()[0]
                if row:
                    held.append(row)
                    return
                time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = apm(tree, folder, "migrate", "--db", f"{url}#tenant_0", "--dry-run")
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    watcher.join()
    if done.returncode != 0:
        sys.exit(done.stdout + done.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, held[0] if held else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=150, help="other tenants in the large database [150]")
    parser.add_argument("--rounds", type=int, default=5, help="rounds [5]")
    parser.add_argument("--before", metavar="TREE", type=Path, help="also time this source tree's apm, alternated")
    args = parser.parse_args()
    import psycopg

    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL server binaries not found")
    server = PgServer(bin_dir)
    server.start()
    try:
        with tempfile.TemporaryDirectory() as temporary:
            work = Path(temporary)
            folder = work / "migrations"
            folder.mkdir()
            catalog(folder)
            many, alone = server.create_database(), server.create_database()
            tenants(ROOT, folder, many, args.tenants, work)
            tenants(ROOT, folder, alone, 0, work)
            with psycopg.connect(many) as conn:
                relations = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON "
                                         "n.oid = c.relnamespace WHERE n.nspname LIKE 'tenant%'").fetchone()[0]
            trees = {"this tree": ROOT, **({"before": args.before} if args.before else {})}
            samples: dict[tuple[str, str], list[tuple[float, float, int | None]]] = {}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    for where, url in (("alone", alone), ("many", many)):
                        samples.setdefault((name, where), []).append(timed(tree, folder, url))
            print(f"{args.tenants} other tenants ({relations} relations in tenant schemas), {args.rounds} rounds, "
                  f"load average {os.getloadavg()[0]:.1f}")
            for name in trees:
                rows = {where: samples[name, where] for where in ("alone", "many")}
                wall = {where: statistics.median(r[0] for r in rows[where]) for where in rows}
                cpu = {where: statistics.median(r[1] for r in rows[where]) for where in rows}
                locks = {where: sorted({r[2] for r in rows[where] if r[2] is not None}) for where in rows}
                print(f"{name}: alone {wall['alone']:.3f} s (CPU {cpu['alone']:.3f} s, {locks['alone']} relation "
                      f"locks), among the others {wall['many']:.3f} s (CPU {cpu['many']:.3f} s, {locks['many']} "
                      f"relation locks): {wall['many'] / wall['alone']:.2f}x (CPU {cpu['many'] / cpu['alone']:.2f}x)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
