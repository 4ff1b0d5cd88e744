"""Migration 0006: Index task titles without blocking writes

CREATE INDEX CONCURRENTLY cannot run inside a transaction, so this
migration declares transactional = False: it runs on its own, between a
`started` log row and its ledger row.

Dependencies:
- Migration 0002 (prerequisite)
"""

depends_on = ("0002",)
transactional = False


def upgrade(conn):
    conn.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_by_title ON app.tasks (lower(title))")


def downgrade(conn):
    conn.execute("DROP INDEX CONCURRENTLY IF EXISTS app.tasks_by_title")
