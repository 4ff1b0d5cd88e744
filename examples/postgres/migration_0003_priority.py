"""Migration 0003: Task priority, filled from the title (a data migration)

Dependencies:
- Migration 0002 (prerequisite)
"""

depends_on = ("0002",)


def upgrade(conn):
    conn.execute("ALTER TABLE app.tasks ADD COLUMN priority INTEGER")
    # Parameters in SQLite's style (?) work on PostgreSQL too; so does psycopg's %s.
    conn.execute("UPDATE app.tasks SET priority = CASE WHEN title LIKE ? THEN 1 ELSE 2 END", ("Run%",))


def downgrade(conn):
    conn.execute("ALTER TABLE app.tasks DROP COLUMN priority")
