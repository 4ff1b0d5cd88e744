"""Benchmark of start-up: what a person waits for before ``apm`` does anything.

Run from the repository root:

    python tests/benchmarks/bench_startup.py            # 25 runs of each command
    python tests/benchmarks/bench_startup.py --quick    # 9 runs

Each command runs as a real subprocess of the installed ``apm`` console
script (found next to ``sys.executable``), alternating with its baseline so a
load that comes and goes hits both alike; the median of the runs is reported:

- ``apm --help`` against ``python -c "import click"`` (target: at most 1.3x);
- ``apm migrate --list`` on the shipped catalog with an up-to-date database
  (in a temporary folder, at the default ``.aipm/data/aipm.db``) against
  ``python -c "import click, networkx, tabulate, sqlite3"`` (target: at most 1.3x).

Bytecode caching is switched on for these processes even where
PYTHONDONTWRITEBYTECODE is set (as it is in this project's sandbox): an
installed package has its ``.pyc`` files, and a warm-up run writes them, so
the figures measure importing, not compiling.

This is a measurement, not a test: pytest does not collect this folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

HELP_TARGET = 1.3
LIST_TARGET = 1.3


class Comparison(NamedTuple):
    """Median wall-clock seconds of a command and of its baseline, over the same alternating runs."""

    label: str
    subject: float
    baseline: float
    baseline_label: str
    target: float

    @property
    def ratio(self) -> float:
        return self.subject / self.baseline


def apm_script() -> Path:
    """The console script pip installed beside this interpreter (not whatever ``apm`` is first on PATH)."""
    script = Path(sys.executable).with_name("apm")
    if not script.exists():
        raise SystemExit(f"no apm console script next to {sys.executable}; run `pip install -e .` first")
    return script


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["NO_COLOR"] = "1"
    return env


def run_once(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.decode()}")
    return elapsed


def compare(subject: list[str], baseline: list[str], runs: int, cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Medians of both commands, run alternately after one warm-up each (which also writes bytecode)."""
    run_once(subject, cwd, env)
    run_once(baseline, cwd, env)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(runs):
        theirs.append(run_once(baseline, cwd, env))
        ours.append(run_once(subject, cwd, env))
    return statistics.median(ours), statistics.median(theirs)


def measure(runs: int = 25) -> list[Comparison]:
    """Both start-up figures, each beside its baseline."""
    apm = str(apm_script())
    python = sys.executable
    env = environment()
    with tempfile.TemporaryDirectory(prefix="apm-bench-startup-") as folder:
        cwd = Path(folder)
        # An up-to-date database at the default path: the catalog applied in full.
        subprocess.run([apm, "migrate", "--yes"], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
        help_ours, help_base = compare([apm, "--help"], [python, "-c", "import click"], runs, cwd, env)
        list_ours, list_base = compare(
            [apm, "migrate", "--list"], [python, "-c", "import click, networkx, tabulate, sqlite3"], runs, cwd, env
        )
    return [
        Comparison("apm --help", help_ours, help_base, 'python -c "import click"', HELP_TARGET),
        Comparison(
            "apm migrate --list (up to date)",
            list_ours,
            list_base,
            'python -c "import click, networkx, tabulate, sqlite3"',
            LIST_TARGET,
        ),
    ]


def python_floor(runs: int) -> float:
    """``python -c pass``: the part of every figure no project can remove."""
    env = environment()
    run_once([sys.executable, "-c", "pass"], Path.cwd(), env)
    return statistics.median(run_once([sys.executable, "-c", "pass"], Path.cwd(), env) for _ in range(runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="9 runs of each command instead of 25")
    args = parser.parse_args(argv)
    runs = 9 if args.quick else 25
    print(f"Python {sys.version.split()[0]}; medians of {runs} alternating runs")
    print(f"  floor: python -c pass {python_floor(runs) * 1000:8.1f} ms")
    all_met = True
    for c in measure(runs):
        met = c.ratio <= c.target
        all_met &= met
        print(f"  {c.label:<34} {c.subject * 1000:8.1f} ms   baseline {c.baseline * 1000:8.1f} ms "
              f"({c.baseline_label})   x{c.ratio:.2f}  target <= {c.target}x: {'met' if met else 'MISSED'}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
