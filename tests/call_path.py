"""Count the way one ``apm migrate`` takes through the modules: ``python tests/call_path.py``.

The command runs in this process (click's runner) on a fresh SQLite file
with the shipped catalog, under ``sys.settrace``. Every Python call (and
every resumption of a generator) is attributed to the project module that
holds the called code; it counts as an *entry* into that module when the
nearest project frame below it belongs to another module. An entry into
``cli/`` from ``planner/`` is a *climb*: the library calling back up into
the command. Calls between ``planner/session.py`` and an engine's
``session.py`` (either way) are the session's *crossings*. docs/architecture.md
quotes the figures; ``tests/test_call_path.py`` keeps the climbs down.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_PROJECT = (str(ROOT / "cli") + "/", str(ROOT / "planner") + "/")


@dataclass
class CallPath:
    """What one traced command did: entries per module, climbs into the CLI, session crossings."""

    entries: Counter = field(default_factory=Counter)
    climbs: Counter = field(default_factory=Counter)
    crossings: int = 0
    exit_code: int = 0


def _module(filename: str) -> str | None:
    if not filename.startswith(_PROJECT):
        return None
    return str(Path(filename).relative_to(ROOT))


def _session(module: str) -> bool:
    return module == "planner/session.py" or (module.startswith("planner/engines/") and module.endswith("/session.py"))


def trace(*args: str, db: Path) -> CallPath:
    """Run ``apm --db DB ARGS`` in this process, traced."""
    from click.testing import CliRunner

    from cli.main import apm

    found = CallPath()

    def tracer(frame, event, arg):
        if event != "call":
            return None
        callee = _module(frame.f_code.co_filename)
        if callee is None:
            return None
        caller_frame, caller = frame.f_back, None
        while caller_frame is not None and caller is None:
            caller = _module(caller_frame.f_code.co_filename)
            caller_frame = caller_frame.f_back
        if caller is not None and caller != callee:
            found.entries[callee] += 1
            if callee.startswith("cli/") and caller.startswith("planner/"):
                found.climbs[f"{caller} -> {callee}:{frame.f_code.co_name}"] += 1
            if _session(caller) and _session(callee):
                found.crossings += 1
        return None

    runner = CliRunner()
    sys.settrace(tracer)
    try:
        result = runner.invoke(apm, ["--db", str(db), *args], catch_exceptions=False)
    finally:
        sys.settrace(None)
    found.exit_code = result.exit_code
    return found


def report(title: str, found: CallPath) -> None:
    print(f"## {title} (exit {found.exit_code})")
    for module, count in sorted(found.entries.items(), key=lambda item: (-item[1], item[0])):
        if module.startswith("cli/") or any(part in module for part in ("session", "runner", "request")):
            print(f"  {count:5d}  {module}")
    print(f"  climbs from planner/ into cli/: {sum(found.climbs.values())}")
    for where, count in sorted(found.climbs.items()):
        print(f"    {count:4d}  {where}")
    print(f"  crossings between planner/session.py and the engine's session: {found.crossings}")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "apm.db"
        report("apm migrate (a previewed apply of the shipped catalog, 5 steps)", trace("migrate", db=db))
        report("apm migrate --rollback 0020 --cascade --yes (previewed, destroys data, backup)",
               trace("migrate", "--rollback", "0020", "--cascade", "--yes", db=db))


if __name__ == "__main__":
    main()
