"""
Migration 0030: Add feature_flags table

Adds the feature_flags table for per-project feature toggles (the seed's
example of a new migration). It needs only the projects table, so it depends
on 0001 alone and can be rolled back without touching the agents chain.

Dependencies:
- Migration 0001 (projects table exists)

Author: WI-110
Date: 2025-10-20
"""

import sqlite3

depends_on = ("0001",)


def upgrade(conn: sqlite3.Connection) -> None:
    """Create feature_flags."""
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS feature_flags (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            project_id INTEGER NOT NULL,
            flag_name TEXT NOT NULL,
            enabled INTEGER DEFAULT 0,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE,
            UNIQUE(project_id, flag_name)
        )
        """
    )


def downgrade(conn: sqlite3.Connection) -> None:
    """Remove feature_flags and the flags stored in it."""
    conn.execute("DROP TABLE IF EXISTS feature_flags")
