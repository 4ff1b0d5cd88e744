"""The safety net through `apm`: dry runs, the confirmation rules, marks, check and doctor."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli.running
from cli.main import apm


def invoke(db: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(apm, ["--db", str(db), *args], input=input)


@pytest.fixture
def applied_db(tmp_path: Path) -> Path:
    """APM's catalog applied, with one agent of the user's own holding metadata."""
    db = tmp_path / "aipm.db"
    assert invoke(db, "migrate").exit_code == 0
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO agents (project_id, role, display_name, metadata) VALUES (1, 'dev', 'Dev', '{\"a\": 1}')")
    conn.commit()
    conn.close()
    return db


def test_dry_run_reports_and_touches_nothing(applied_db: Path) -> None:
    before = applied_db.read_bytes()
    result = invoke(applied_db, "migrate", "--rollback", "0027", "--cascade", "--dry-run")
    assert result.exit_code == 7, result.output  # a dry run of a plan that destroys data fails CI
    assert "0029 rollback: deletes 5 rows of agents (6 → 1)" in result.output
    assert "0027 rollback: drops column agents.metadata holding 1 non-default value" in result.output
    assert "This plan destroys data." in result.output
    report = json.loads(invoke(applied_db, "migrate", "--rollback", "0027", "--cascade", "--dry-run",
                               "--json").output)
    assert report["loses_data"] is True and [s["version"] for s in report["steps"]] == ["0029", "0027"]
    planned = json.loads(invoke(applied_db, "migrate", "plan", "--rollback", "0030", "--rehearse", "--json").output)
    assert planned["preview"]["steps"][0]["changes"][0]["name"] == "feature_flags"
    assert applied_db.read_bytes() == before
    assert not list(applied_db.parent.glob("*.backup.*"))


def test_confirmation_rules(applied_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = applied_db.read_bytes()
    args = ("migrate", "--rollback", "0027", "--cascade", "--no-backup")
    # No terminal: refused with exit 7, nothing changed.
    refused = invoke(applied_db, *args)
    assert refused.exit_code == 7 and "Re-run with --yes" in refused.output
    assert invoke(applied_db, *args, "--json").exit_code == 7
    assert applied_db.read_bytes() == before
    # A terminal that answers no: exit 7, nothing changed.
    monkeypatch.setattr(cli.running, "stdin_is_terminal", lambda: True)
    declined = invoke(applied_db, *args, input="n\n")
    assert declined.exit_code == 7 and "This plan destroys data" in declined.output
    assert applied_db.read_bytes() == before
    # A terminal that answers yes: it runs.
    accepted = invoke(applied_db, *args, input="y\n")
    assert accepted.exit_code == 0 and "Rolled back 0027" in accepted.output


def test_plans_that_lose_nothing_never_ask(applied_db: Path) -> None:
    # Dropping the empty feature_flags table loses nothing: no question, no --yes needed.
    result = invoke(applied_db, "migrate", "--rollback", "0030", "--no-backup")
    assert result.exit_code == 0 and "Proceed" not in result.output
    assert invoke(applied_db, "migrate").exit_code == 0


def test_yes_runs_without_rehearsal(applied_db: Path) -> None:
    result = invoke(applied_db, "migrate", "--rollback", "0027", "--cascade", "--yes", "--no-backup")
    assert result.exit_code == 0 and "Rolled back 0029" in result.output


def test_marks(applied_db: Path) -> None:
    refused = invoke(applied_db, "migrate", "--mark-rolled-back", "0027")
    assert refused.exit_code == 4 and "0029" in refused.output
    done = invoke(applied_db, "migrate", "--mark-rolled-back", "0030")
    assert done.exit_code == 0 and "nothing was run" in done.output
    conn = sqlite3.connect(applied_db)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'feature_flags'").fetchone()
    assert conn.execute("SELECT 1 FROM schema_migrations WHERE version = '0030'").fetchone() is None
    conn.close()
    marked = json.loads(invoke(applied_db, "migrate", "--mark-applied", "0030", "--json").output)
    assert marked == {"action": "mark-applied", "version": "0030", "description": "Add feature_flags table"}
    again = invoke(applied_db, "migrate", "--mark-applied", "0030")
    assert again.exit_code == 4 and "already applied" in again.output
    conn = sqlite3.connect(applied_db)
    actions = [a for (a,) in conn.execute("SELECT action FROM schema_migrations_log WHERE version = '0030'")]
    conn.close()
    assert actions == ["apply", "mark-rolled-back", "mark-applied"]


def test_check_and_doctor_are_commands(applied_db: Path) -> None:
    assert invoke(applied_db, "migrate", "check").exit_code == 0
    doctor = invoke(applied_db, "migrate", "doctor", "--json")
    assert doctor.exit_code == 0
    conn = sqlite3.connect(applied_db)
    conn.execute("INSERT INTO agent_tools (agent_id, tool_name) VALUES (999, 'ghost')")
    conn.commit()
    conn.close()
    sick = invoke(applied_db, "migrate", "doctor")
    assert sick.exit_code == 6 and "agent_tools" in sick.output
