"""Schema snapshots and diffs on real SQLite databases."""

from __future__ import annotations

import sqlite3

import pytest

from planner.engines.sqlite.schema import read_schema
from planner.schema import Schema, SchemaChange, diff
from planner.sql import quote_identifier


def snapshot(conn: sqlite3.Connection, *, count_rows: bool = True) -> Schema:
    return read_schema(conn, count_rows=count_rows)


@pytest.fixture
def conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(
        """
        CREATE TABLE projects (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE);
        CREATE TABLE agents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            project_id INTEGER NOT NULL REFERENCES projects(id),
            role TEXT NOT NULL,
            metadata TEXT DEFAULT '{}',
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
        );
        CREATE INDEX idx_agents_role ON agents(role);
        CREATE TRIGGER agents_touch AFTER UPDATE OF role ON agents BEGIN SELECT 1; END;
        CREATE VIEW active AS SELECT * FROM agents;
        CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, applied_at TIMESTAMP);
        CREATE TABLE schema_migrations_log (id INTEGER PRIMARY KEY AUTOINCREMENT, version TEXT);
        CREATE INDEX idx_log_version ON schema_migrations_log(version);
        INSERT INTO projects (name) VALUES ('apm');
        INSERT INTO agents (project_id, role) VALUES (1, 'a'), (1, 'b');
        INSERT INTO schema_migrations VALUES ('0001', 'x', NULL);
        """
    )
    yield conn
    conn.close()


def test_snapshot_reads_user_objects_only(conn):
    snap = snapshot(conn)
    assert set(snap.tables) == {"projects", "agents"}  # no sqlite_sequence, no ledger tables
    assert set(snap.indexes) == {"idx_agents_role"}  # no autoindex for UNIQUE, no ledger index
    assert set(snap.triggers) == {"agents_touch"}
    assert set(snap.views) == {"active"}
    assert snap.views["active"].startswith("CREATE VIEW")


def test_snapshot_columns_come_from_table_xinfo(conn):
    agents = snapshot(conn).tables["agents"]
    assert [c.name for c in agents.columns] == ["id", "project_id", "role", "metadata", "created_at"]
    role, metadata, created = agents.column("role"), agents.column("METADATA"), agents.column("created_at")
    assert (role.type, role.notnull, role.default, role.pk) == ("TEXT", True, None, 0)
    assert metadata.default == "'{}'" and not metadata.notnull
    assert created.default == "CURRENT_TIMESTAMP"
    assert agents.column("id").pk == 1
    assert metadata.definition() == "TEXT DEFAULT '{}'"


def test_snapshot_counts_rows_unless_told_not_to(conn):
    assert snapshot(conn).tables["agents"].rows == 2
    assert snapshot(conn, count_rows=False).tables["agents"].rows is None


def test_snapshot_leaves_no_transaction_open(conn):
    snapshot(conn)
    assert not conn.in_transaction
    conn.execute("BEGIN")
    snapshot(conn)  # inside the caller's transaction it neither commits nor ends it
    assert conn.in_transaction
    conn.execute("COMMIT")


def test_identical_snapshots_have_no_diff(conn):
    assert diff(snapshot(conn), snapshot(conn)) == []


def test_ledger_writes_are_not_changes(conn):
    before = snapshot(conn)
    conn.execute("INSERT INTO schema_migrations VALUES ('0002', 'y', NULL)")
    conn.execute("INSERT INTO schema_migrations_log (version) VALUES ('0002')")
    assert diff(before, snapshot(conn)) == []


def test_diff_reports_each_kind_of_object(conn):
    before = snapshot(conn)
    conn.executescript(
        """
        CREATE TABLE feature_flags (id INTEGER PRIMARY KEY, flag TEXT);
        ALTER TABLE agents DROP COLUMN metadata;
        ALTER TABLE agents ADD COLUMN tier INTEGER;
        DROP INDEX idx_agents_role;
        CREATE INDEX idx_agents_tier ON agents(tier);
        DROP TRIGGER agents_touch;
        CREATE TRIGGER agents_touch AFTER UPDATE OF tier ON agents BEGIN SELECT 2; END;
        DROP VIEW active;
        INSERT INTO agents (project_id, role) VALUES (1, 'c');
        """
    )
    changes = diff(before, snapshot(conn))
    described = [c.describe() for c in changes]
    assert described == [
        "adds table feature_flags",
        "drops column agents.metadata (TEXT DEFAULT '{}')",
        "adds column agents.tier (INTEGER)",
        "drops index idx_agents_role",
        "adds index idx_agents_tier",
        "changes trigger agents_touch (its SQL differs)",
        "drops view active",
        "inserts 1 row of agents (2 → 3)",
    ]
    removed = changes[1]
    assert (removed.kind, removed.action, removed.table, removed.name) == ("column", "removed", "agents", "metadata")
    assert removed.qualified_name == "agents.metadata"
    assert removed.to_json()["text"] == removed.describe()


def test_diff_reports_dropped_tables_and_deleted_rows(conn):
    conn.execute("CREATE TABLE flags (id INTEGER PRIMARY KEY)")
    before = snapshot(conn)
    conn.execute("DROP TABLE flags")
    conn.execute("DELETE FROM agents WHERE role = 'a'")
    changes = diff(before, snapshot(conn))
    assert [c.describe() for c in changes] == ["drops table flags", "deletes 1 row of agents (2 → 1)"]
    assert changes[1] == SchemaChange("rows", "changed", "agents", table="agents", before=2, after=1)


def test_a_rebuild_that_changes_a_column_type_is_a_column_change(conn):
    before = snapshot(conn)
    conn.executescript(
        """
        CREATE TABLE new_projects (id INTEGER PRIMARY KEY AUTOINCREMENT, name INTEGER NOT NULL UNIQUE);
        INSERT INTO new_projects SELECT * FROM projects;
        DROP TABLE projects;
        ALTER TABLE new_projects RENAME TO projects;
        """
    )
    assert [c.describe() for c in diff(before, snapshot(conn))] == [
        "changes column projects.name: TEXT NOT NULL → INTEGER NOT NULL"
    ]


def test_a_rebuild_that_only_changes_constraints_is_a_table_change(conn):
    """A CHECK is a constraint of its own (read from the SQL); what no part of the model says (AUTOINCREMENT
    dropped) is the table's SQL changed, said with both sides."""
    before = snapshot(conn)
    conn.executescript(
        """
        CREATE TABLE new_projects (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
                                   CHECK (length(name) > 0));
        INSERT INTO new_projects SELECT * FROM projects;
        DROP TABLE projects;
        ALTER TABLE new_projects RENAME TO projects;
        """
    )
    changes = diff(before, snapshot(conn))
    assert [(c.kind, c.action, c.name) for c in changes] == [
        ("key", "added", "check constraint on projects: CHECK (length(name) > 0)")]
    before = snapshot(conn)
    conn.executescript(
        """
        CREATE TABLE new_projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, CHECK (length(name) > 0));
        INSERT INTO new_projects SELECT * FROM projects;
        DROP TABLE projects;
        ALTER TABLE new_projects RENAME TO projects;
        """
    )
    changes = diff(before, snapshot(conn))
    assert [(c.kind, c.action, c.name) for c in changes] == [("table", "changed", "projects")]
    assert "AUTOINCREMENT" in str(changes[0].before) and "AUTOINCREMENT" not in str(changes[0].after)


def test_whitespace_only_differences_are_not_changes(conn):
    before = snapshot(conn)
    conn.executescript(
        """
        DROP INDEX idx_agents_role;
        CREATE INDEX   idx_agents_role   ON agents(role);
        """
    )
    assert diff(before, snapshot(conn)) == []


def test_odd_table_names_are_quoted():
    name = 'we"ird name'
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE TABLE {quote_identifier(name)} (x)")
    conn.execute(f"INSERT INTO {quote_identifier(name)} VALUES (1)")
    assert snapshot(conn).tables[name].rows == 1


def test_a_table_is_described_whether_or_not_its_sql_was_seen_before(conn, monkeypatch):
    """The reader keeps each table's columns and keys by its SQL; a full store is emptied, never half-used."""
    from planner.engines.sqlite import schema as reader

    first = snapshot(conn, count_rows=False)
    conn.execute("ALTER TABLE agents ADD COLUMN tier INTEGER")  # new SQL: read again, not taken from the store
    assert [c.name for c in snapshot(conn).tables["agents"].columns][-1] == "tier"
    monkeypatch.setattr(reader, "_DETAILS_KEPT", 0)
    conn.execute("CREATE TABLE flags (id INTEGER PRIMARY KEY, project_id INTEGER REFERENCES projects (id))")
    again = snapshot(conn, count_rows=False)
    assert again.tables["projects"] == first.tables["projects"]
    assert again.tables["projects"].constraints and again.tables["flags"].foreign_keys
