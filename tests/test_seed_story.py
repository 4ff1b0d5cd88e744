"""The seed's whole story, through the `apm` command, on APM's shipped catalog.

Fresh database → plan → apply → the agents columns are exactly the seed's →
rolling back 0027 is refused because 0029 needs it → a cascade rolls back 0029
then 0027, with a backup on disk and every other row and foreign key intact →
apply again → roll back 0030 alone.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import apm

SEED_AGENT_COLUMNS = [
    (0, "id", "INTEGER", 0, None, 1),
    (1, "project_id", "INTEGER", 1, None, 0),
    (2, "role", "TEXT", 1, None, 0),
    (3, "display_name", "TEXT", 1, None, 0),
    (4, "description", "TEXT", 0, None, 0),
    (5, "sop_content", "TEXT", 0, None, 0),
    (6, "capabilities", "TEXT", 0, "'[]'", 0),
    (7, "is_active", "INTEGER", 0, "1", 0),
    (8, "agent_type", "TEXT", 0, "NULL", 0),
    (9, "file_path", "TEXT", 0, "NULL", 0),
    (10, "generated_at", "TIMESTAMP", 0, "NULL", 0),
    (11, "tier", "INTEGER", 0, None, 0),
    (12, "created_at", "TIMESTAMP", 0, "CURRENT_TIMESTAMP", 0),
    (13, "updated_at", "TIMESTAMP", 0, "CURRENT_TIMESTAMP", 0),
    (14, "metadata", "TEXT", 0, "'{}'", 0),
]


def run(db: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(apm, ["--db", str(db), *args])
    assert result.exit_code == code, f"apm {' '.join(args)} exited {result.exit_code}:\n{result.output}"
    return result.output


def query(db: Path, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_seed_story(tmp_path: Path) -> None:
    db = tmp_path / ".aipm" / "data" / "aipm.db"

    # Preview changes nothing and creates nothing.
    plan = json.loads(run(db, "migrate", "plan", "--json"))
    assert [s["version"] for s in plan["steps"]] == ["0001", "0020", "0027", "0029", "0030"]
    assert not db.exists()

    out = run(db, "migrate")
    for version in ("0001", "0020", "0027", "0029", "0030"):
        assert f"Applied {version}" in out
    assert query(db, "PRAGMA table_info(agents)") == SEED_AGENT_COLUMNS
    assert query(db, "SELECT COUNT(*) FROM agents WHERE agent_type = 'utility'") == [(5,)]
    assert "Nothing to apply" in run(db, "migrate")

    # Data the operator cares about: an agent of their own with tools, a task and metadata.
    conn = sqlite3.connect(db)
    project = conn.execute("SELECT id FROM projects").fetchone()[0]
    agent = conn.execute(
        "INSERT INTO agents (project_id, role, display_name, tier, metadata) VALUES (?, 'developer', 'Dev', 2, "
        "'{\"rules\": [\"test first\"]}')",
        (project,),
    ).lastrowid
    conn.execute("INSERT INTO agent_tools (agent_id, tool_name) VALUES (?, 'git')", (agent,))
    conn.execute("INSERT INTO tasks (project_id, title, assigned_agent_id) VALUES (?, 'Ship', ?)", (project, agent))
    conn.commit()
    conn.close()

    # Rolling back 0027 alone is refused: 0029 depends on it. Nothing changes.
    before = db.read_bytes()
    result = CliRunner().invoke(apm, ["--db", str(db), "migrate", "--rollback", "0027"])
    assert result.exit_code == 4
    assert "0029" in result.output and "apm migrate --rollback 0027 --cascade" in result.output
    assert db.read_bytes() == before
    assert not list(db.parent.glob("aipm.db.backup.*"))

    db.chmod(0o640)
    # The cascade destroys the utility agents and every agent's metadata: without a terminal it needs --yes.
    result = CliRunner().invoke(apm, ["--db", str(db), "migrate", "--rollback", "0027", "--cascade"])
    assert result.exit_code == 7, result.output
    assert "0029 rollback: deletes 5 rows of agents" in result.output
    assert "drops column agents.metadata holding 1 non-default value" in result.output
    assert db.read_bytes() == before
    out = run(db, "migrate", "--rollback", "0027", "--cascade", "--yes")
    assert out.index("Rolled back 0029") < out.index("Rolled back 0027")
    backups = list(db.parent.glob("aipm.db.backup.*"))
    assert len(backups) == 1 and str(backups[0]) in out
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o640
    assert query(backups[0], "SELECT COUNT(*) FROM agents") == [(6,)]

    columns = [row[1] for row in query(db, "PRAGMA table_info(agents)")]
    assert "metadata" not in columns and columns == [c[1] for c in SEED_AGENT_COLUMNS[:-1]]
    assert query(db, "SELECT role FROM agents") == [("developer",)]
    assert query(db, "SELECT tool_name FROM agent_tools WHERE agent_id = ?", agent) == [("git",)]
    assert query(db, "SELECT title, assigned_agent_id FROM tasks") == [("Ship", agent)]
    assert query(db, "PRAGMA foreign_key_check") == []
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert {name for (name,) in query(db, "SELECT name FROM sqlite_master WHERE tbl_name = 'agents'")} >= {
        "agents", "idx_agents_project_role", "agents_touch_updated_at"}
    applied = [v for (v,) in query(db, "SELECT version FROM schema_migrations ORDER BY version")]
    assert applied == ["0001", "0020", "0030"]

    # Apply again: 0027 and 0029 come back, the developer keeps everything but its metadata.
    out = run(db, "migrate")
    assert "Applied 0027" in out and "Applied 0029" in out
    assert query(db, "PRAGMA table_info(agents)") == SEED_AGENT_COLUMNS
    assert query(db, "SELECT metadata FROM agents WHERE role = 'developer'") == [("{}",)]

    # 0030 depends on 0001 only: it rolls back on its own.
    out = run(db, "migrate", "--rollback", "0030", "--no-backup")
    assert "Rolled back 0030" in out and "Backup" not in out
    assert query(db, "SELECT name FROM sqlite_master WHERE name = 'feature_flags'") == []
    assert query(db, "SELECT COUNT(*) FROM agents") == [(6,)]


@pytest.mark.parametrize("tier, expected", [("1", 1), ("core", 1), ("specialist", 2), ("3", 3), ("junk", None)])
def test_0020_converts_text_tiers(tmp_path: Path, tier: str, expected: int | None) -> None:
    db = tmp_path / "aipm.db"
    run(db, "migrate", "--target", "0001")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO projects (name) VALUES ('p')")
    conn.execute("INSERT INTO agents (project_id, role, display_name, tier) VALUES (1, 'r', 'R', ?)", (tier,))
    conn.commit()
    conn.close()
    if str(expected) != tier:  # 'core' becomes 1, 'junk' NULL: the conversion changes a value (issue 22 point 8)
        out = run(db, "migrate", "--target", "0020", code=7)
        assert "0020 apply: overwrites 1 value of agents.tier" in out
        assert query(db, "SELECT tier FROM agents") == [(tier,)]  # nothing changed
        run(db, "migrate", "--target", "0020", "--yes")
    else:  # '1' is 1 stored as an INTEGER: no value changes
        run(db, "migrate", "--target", "0020")
    assert query(db, "SELECT tier FROM agents") == [(expected,)]
    assert "metadata" not in [row[1] for row in query(db, "PRAGMA table_info(agents)")]
