"""Migration 0001: Schema app and projects

Dependencies:
- None
"""

depends_on = ()


def upgrade(conn):
    conn.executescript("""
        CREATE SCHEMA app;
        CREATE TABLE app.projects (
            id BIGSERIAL PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
    """)


def downgrade(conn):
    conn.execute("DROP SCHEMA app CASCADE")
