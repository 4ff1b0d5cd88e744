"""The way one ``apm migrate`` takes: the library is handed a request and hands back one result.

Traced on a real run (``tests/call_path.py``, ``sys.settrace`` on the command
run in this process against a real SQLite file). The library may tell the
command about progress (the one ``on_event`` listener); it must not climb
back into the command to plan (``make_plan``), to decide (``accept``) or to
take the backup: those are the request's data and the library's own rules.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from call_path import trace


def _climbs_other_than_events(found) -> list[str]:
    return [where for where in found.climbs if not where.endswith(":event")]


def test_a_previewed_apply_calls_back_into_the_command_only_to_report_progress(tmp_path: Path):
    db = tmp_path / "app.db"
    found = trace("migrate", db=db)
    assert found.exit_code == 0
    assert sqlite3.connect(db).execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == 5
    assert _climbs_other_than_events(found) == []
    assert sum(found.climbs.values()) == 10  # StepStarted and StepFinished of each of the 5 steps, nothing else
    assert "cli/previewed.py" not in found.entries  # one module runs a plan from the command


def test_a_confirmed_rollback_with_its_backup_calls_back_only_to_report_progress(tmp_path: Path):
    db = tmp_path / "app.db"
    assert trace("migrate", db=db).exit_code == 0
    found = trace("migrate", "--rollback", "0020", "--cascade", "--yes", db=db)
    assert found.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if ".backup." in p.name) != []  # the backup was taken
    assert _climbs_other_than_events(found) == []  # ... by the library itself, told to the command as an event
