"""
Migration 0001: Initial schema

Creates the tables APM starts with: projects, agents (tier stored as TEXT,
with a metadata column), the tools each agent may use, and tasks assigned to
agents. agent_tools and tasks reference agents(id) by foreign key, so every
later rebuild of agents has to keep those references valid.

Dependencies:
- None

Author: WI-001
Date: 2025-06-02
"""

import sqlite3

depends_on = ()

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    path TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS agents (
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
);

CREATE UNIQUE INDEX IF NOT EXISTS idx_agents_project_role ON agents(project_id, role);

CREATE TRIGGER IF NOT EXISTS agents_touch_updated_at
AFTER UPDATE OF display_name, description, sop_content, capabilities, is_active ON agents
BEGIN
    UPDATE agents SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id;
END;

CREATE TABLE IF NOT EXISTS agent_tools (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id INTEGER NOT NULL,
    tool_name TEXT NOT NULL,
    FOREIGN KEY (agent_id) REFERENCES agents(id) ON DELETE CASCADE,
    UNIQUE (agent_id, tool_name)
);

CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL,
    title TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    assigned_agent_id INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE,
    FOREIGN KEY (assigned_agent_id) REFERENCES agents(id) ON DELETE SET NULL
);

CREATE INDEX IF NOT EXISTS idx_tasks_agent ON tasks(assigned_agent_id);
"""


def upgrade(conn: sqlite3.Connection) -> None:
    """Create the initial tables (IF NOT EXISTS keeps a re-run harmless)."""
    conn.executescript(SCHEMA)


def downgrade(conn: sqlite3.Connection) -> None:
    """Drop every table 0001 created, children first."""
    for table in ("tasks", "agent_tools", "agents", "projects"):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
