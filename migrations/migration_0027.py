"""
Migration 0027: Add metadata

Adds back the metadata column that 0020's rebuild of agents dropped:
ALTER TABLE agents ADD COLUMN metadata TEXT DEFAULT '{}'. A database whose
agents table already has the column is left alone, so re-running is harmless.

Rolling back drops the column and every value stored in it: the agents table
is rebuilt as 0020 left it, keeping every other column, row, index, trigger
and the foreign keys of agent_tools and tasks.

Dependencies:
- Migration 0020 (agents table exists with tier as INTEGER)

Author: WI-108
Date: 2025-10-17
"""

import sqlite3

from planner.rebuild import rebuild_table

depends_on = ("0020",)

AGENTS_WITHOUT_METADATA = """
CREATE TABLE agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL,
    role TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT,
    sop_content TEXT,
    capabilities TEXT DEFAULT '[]',
    is_active INTEGER DEFAULT 1,
    agent_type TEXT DEFAULT NULL,
    file_path TEXT DEFAULT NULL,
    generated_at TIMESTAMP DEFAULT NULL,
    tier INTEGER CHECK(tier IN (1, 2, 3)),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE
)
"""


def _has_metadata(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "metadata" for row in conn.execute("PRAGMA table_info(agents)"))


def upgrade(conn: sqlite3.Connection) -> None:
    """Add agents.metadata unless it is already there."""
    if not _has_metadata(conn):
        conn.execute("ALTER TABLE agents ADD COLUMN metadata TEXT DEFAULT '{}'")


def downgrade(conn: sqlite3.Connection) -> None:
    """Rebuild agents without metadata (this deletes the stored metadata)."""
    if _has_metadata(conn):
        rebuild_table(conn, "agents", AGENTS_WITHOUT_METADATA)

