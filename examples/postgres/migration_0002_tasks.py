"""Migration 0002: Tasks with a foreign key and an index

Dependencies:
- Migration 0001 (prerequisite)
"""

depends_on = ("0001",)


def upgrade(conn):
    conn.executescript("""
        CREATE TABLE app.tasks (
            id BIGSERIAL PRIMARY KEY,
            project_id BIGINT NOT NULL REFERENCES app.projects (id) ON DELETE CASCADE,
            title TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open',
            legacy_code TEXT
        );
        CREATE INDEX tasks_by_project ON app.tasks (project_id, status);
    """)
    project = conn.fetchval("INSERT INTO app.projects (name) VALUES (?) RETURNING id", ("seed",))
    conn.executemany("INSERT INTO app.tasks (project_id, title, legacy_code) VALUES (?, ?, ?)",
                     [(project, "Write the plan", "T-1"), (project, "Run it", "T-2"), (project, "Review", None)])


def downgrade(conn):
    conn.execute("DROP TABLE app.tasks")
    conn.execute("DELETE FROM app.projects WHERE name = ?", ("seed",))
