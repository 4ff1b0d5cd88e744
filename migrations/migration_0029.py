"""
Migration 0029: Utility agents

Inserts the five utility agents every APM project ships with, each with its
behavioural rules in agents.metadata. They belong to the project with the
lowest id; on a database with no project yet, the migration creates one
named 'APM' to own them.

This is the migration that once failed with "table agents has no column
named metadata" when it ran before 0027: it depends on 0027 explicitly.

Dependencies:
- Migration 0027 (agents.metadata exists)

Author: WI-109
Date: 2025-10-18
"""

import json
import sqlite3

depends_on = ("0027",)

SOURCE = "migration_0029"
OWNER_DESCRIPTION = "Created by migration 0029 to own the utility agents"

UTILITY_AGENTS = (
    ("context-assembler", "Context Assembler", "Gathers the context a task needs", ["read_files", "search"]),
    ("workflow-updater", "Workflow Updater", "Moves work items through their workflow", ["update_status"]),
    ("evidence-writer", "Evidence Writer", "Records evidence for decisions", ["write_evidence"]),
    ("audit-logger", "Audit Logger", "Keeps the audit trail of agent actions", ["append_log"]),
    ("information-gatherer", "Information Gatherer", "Researches open questions", ["search", "summarise"]),
)


def _owner_project(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT id FROM projects ORDER BY id LIMIT 1").fetchone()
    if row is not None:
        return row[0]
    cursor = conn.execute(
        "INSERT INTO projects (name, description, path) VALUES ('APM', ?, '.')", (OWNER_DESCRIPTION,)
    )
    return cursor.lastrowid


def upgrade(conn: sqlite3.Connection) -> None:
    """Insert the utility agents that are not there yet (re-running adds nothing)."""
    project_id = _owner_project(conn)
    for role, name, description, capabilities in UTILITY_AGENTS:
        metadata = {"source": SOURCE, "rules": [f"{role} acts only through its declared capabilities"]}
        conn.execute(
            """
            INSERT OR IGNORE INTO agents
                (project_id, role, display_name, description, capabilities, agent_type, tier, metadata)
            VALUES (?, ?, ?, ?, ?, 'utility', 3, ?)
            """,
            (project_id, role, name, description, json.dumps(capabilities), json.dumps(metadata)),
        )


def downgrade(conn: sqlite3.Connection) -> None:
    """Delete exactly the agents this migration inserted, and the project it created, if it did."""
    roles = [agent[0] for agent in UTILITY_AGENTS]
    marks = ",".join("?" * len(roles))
    ours = f"role IN ({marks}) AND json_extract(metadata, '$.source') = ?"
    # Foreign key actions do not fire while the executor checks keys itself: clear references by hand.
    conn.execute(f"DELETE FROM agent_tools WHERE agent_id IN (SELECT id FROM agents WHERE {ours})", (*roles, SOURCE))
    conn.execute(
        f"UPDATE tasks SET assigned_agent_id = NULL WHERE assigned_agent_id IN (SELECT id FROM agents WHERE {ours})",
        (*roles, SOURCE),
    )
    conn.execute(f"DELETE FROM agents WHERE {ours}", (*roles, SOURCE))
    conn.execute(
        "DELETE FROM projects WHERE description = ? AND NOT EXISTS (SELECT 1 FROM agents WHERE project_id = projects.id)"
        " AND NOT EXISTS (SELECT 1 FROM tasks WHERE project_id = projects.id)",
        (OWNER_DESCRIPTION,),
    )


def validate_post(conn: sqlite3.Connection) -> bool:
    """After the upgrade, all five utility agents must be present with their metadata."""
    count = conn.execute(
        "SELECT COUNT(*) FROM agents WHERE json_extract(metadata, '$.source') = ?", (SOURCE,)
    ).fetchone()[0]
    return count >= len(UTILITY_AGENTS)
