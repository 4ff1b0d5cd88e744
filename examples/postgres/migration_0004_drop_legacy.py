"""Migration 0004: Drop tasks.legacy_code

Dependencies:
- Migration 0003 (prerequisite)
"""

depends_on = ("0003",)


def upgrade(conn):
    conn.execute("ALTER TABLE app.tasks DROP COLUMN legacy_code")


def downgrade(conn):
    conn.execute("ALTER TABLE app.tasks ADD COLUMN legacy_code TEXT")
