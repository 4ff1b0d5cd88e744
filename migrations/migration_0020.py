"""
Migration 0020: Fix agents.tier

Rebuilds agents so that tier is INTEGER CHECK(tier IN (1, 2, 3)) instead of
free TEXT, converting the stored values ('1'/'core' -> 1, '2'/'specialist'
-> 2, '3'/'utility' -> 3, anything else -> NULL).

Faithful to history, the new table omits the metadata column: that mistake
is what migration 0027 repairs, and why 0029 must depend on 0027. The rebuild
uses planner.rebuild.rebuild_table, which keeps the rows, the index, the
trigger and the foreign keys from agent_tools and tasks.

Dependencies:
- Migration 0001 (agents table exists)

Author: WI-087
Date: 2025-10-09
"""

import sqlite3

from planner.rebuild import rebuild_table

depends_on = ("0001",)

AGENTS_WITH_INTEGER_TIER = """
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

AGENTS_WITH_TEXT_TIER = """
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
    tier TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    metadata TEXT DEFAULT '{}',
    FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE
)
"""

TIER_TO_INTEGER = """
CASE lower(trim(tier))
    WHEN '1' THEN 1 WHEN 'core' THEN 1
    WHEN '2' THEN 2 WHEN 'specialist' THEN 2
    WHEN '3' THEN 3 WHEN 'utility' THEN 3
    ELSE NULL
END
"""


def _tier_type(conn: sqlite3.Connection) -> str:
    rows = conn.execute("PRAGMA table_info(agents)").fetchall()
    return next((row[2].upper() for row in rows if row[1] == "tier"), "")


def upgrade(conn: sqlite3.Connection) -> None:
    """Rebuild agents with an INTEGER tier; a table that already has one is left alone."""
    if _tier_type(conn) == "INTEGER":
        return
    rebuild_table(conn, "agents", AGENTS_WITH_INTEGER_TIER, convert={"tier": TIER_TO_INTEGER})


def downgrade(conn: sqlite3.Connection) -> None:
    """Rebuild agents as 0001 made it: tier as TEXT ('1', '2', '3') and an empty metadata column."""
    if _tier_type(conn) == "TEXT":
        return
    rebuild_table(conn, "agents", AGENTS_WITH_TEXT_TIER, convert={"tier": "CAST(tier AS TEXT)"})
