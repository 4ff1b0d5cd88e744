"""Migration 0005: Project labels (a branch beside the tasks line)

Dependencies:
- Migration 0001 (prerequisite)
"""

depends_on = ("0001",)


def upgrade(conn):
    # conn.engine lets a catalog branch where the engines differ (here: PostgreSQL's array type).
    tags = "TEXT[] NOT NULL DEFAULT '{}'" if conn.engine == "postgresql" else "TEXT NOT NULL DEFAULT ''"
    conn.execute(f"CREATE TABLE app.labels (project_id BIGINT REFERENCES app.projects (id), tags {tags})")
    conn.execute("INSERT INTO app.labels (project_id) SELECT id FROM app.projects")


def downgrade(conn):
    conn.execute("DROP TABLE app.labels")
