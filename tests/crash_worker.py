"""A separate process that migrates a database, for the concurrency and SIGKILL tests.

Run as ``python tests/crash_worker.py MODE DB CATALOG [--go FILE] [--atomic]``:

- ``migrate``: apply everything pending once (waiting for ``--go`` to exist
  first, so several workers start at the same moment), then print
  ``applied=<n> skipped=<m>`` and exit 0.
- ``cycle``: forever apply everything, then roll everything back, then
  apply again: the parent kills it with SIGKILL at a random moment.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.engines.sqlite.runner import Executor  # noqa: E402
from planner.loader import load_catalog  # noqa: E402
from planner.plan import apply_plan, rollback_plan  # noqa: E402


def main(argv: list[str]) -> int:
    mode, db, catalog_dir = argv[:3]
    atomic = "--atomic" in argv
    go = Path(argv[argv.index("--go") + 1]) if "--go" in argv else None
    catalog = load_catalog(catalog_dir)
    executor = Executor(db, create=True, catalog=catalog, busy_timeout=60)
    if go is not None:
        deadline = time.monotonic() + 30
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
    if mode == "migrate":
        result = executor.run(apply_plan(catalog, executor.applied()), atomic=atomic)
        print(f"applied={len(result.done)} skipped={len(result.skipped)}", flush=True)
        return 0
    if mode == "cycle":
        root = catalog.graph.root_nodes()[0]
        print("ready", flush=True)  # the parent times its kill from here, not from process start
        while True:
            applied = executor.applied()
            plan = apply_plan(catalog, applied)
            if not plan:
                plan = rollback_plan(catalog, applied, root, cascade=True)
            executor.run(plan, atomic=atomic)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
