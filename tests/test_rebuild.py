"""Table rebuilds on real SQLite files, run the way the executor runs a migration.

The executor turns foreign key enforcement off before BEGIN and checks
``PRAGMA foreign_key_check`` before COMMIT; ``in_migration`` does the same so
that each test sees what a migration author would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from planner.errors import MigrationError, RebuildFailed, RebuildRefused, TableNotFound
from planner.engines.sqlite.rebuild import drop_columns, rebuild_table, table_sql

AGENTS_0019 = """
CREATE TABLE agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    role TEXT NOT NULL,
    display_name TEXT NOT NULL, -- shown in `apm agents list`, with a comma
    tier TEXT,
    legacy_flags TEXT DEFAULT '',
    metadata TEXT DEFAULT '{}',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)
"""

AGENTS_0020 = """
CREATE TABLE agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    role TEXT NOT NULL,
    display_name TEXT NOT NULL,
    tier INTEGER CHECK(tier IN (1, 2, 3)),
    legacy_flags TEXT DEFAULT '',
    metadata TEXT DEFAULT '{}',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)
"""

TIER = "CASE tier WHEN 'core' THEN 1 WHEN 'specialist' THEN 2 ELSE 3 END"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """An agents table with an index, a trigger, two views and a child table, all with rows."""
    conn = sqlite3.connect(tmp_path / "apm.db", isolation_level=None)
    conn.executescript(
        AGENTS_0019
        + """;
        CREATE INDEX idx_agents_role ON agents(role);
        CREATE UNIQUE INDEX idx_agents_display ON agents(display_name);
        CREATE TABLE agent_log (agent_id INTEGER, note TEXT);
        CREATE TRIGGER agents_created AFTER INSERT ON agents
        BEGIN INSERT INTO agent_log VALUES (new.id, 'created ' || new.role); END;
        CREATE VIEW agent_roles AS SELECT id, role, metadata FROM agents;
        CREATE VIEW core_roles AS SELECT role FROM agent_roles WHERE role LIKE 'c%';
        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY,
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            title TEXT
        );
        INSERT INTO agents (role, display_name, tier, legacy_flags) VALUES
            ('coder', 'Coder', 'core', 'x'),
            ('critic', 'Critic', 'specialist', 'y'),
            ('helper', 'Helper', 'utility', 'z'),
            ('gone', 'Gone', 'core', '');
        DELETE FROM agents WHERE role = 'gone';
        INSERT INTO tasks (agent_id, title) VALUES (1, 'write'), (1, 'test'), (2, 'review');
        PRAGMA foreign_keys = ON;
        """
    )
    yield conn
    conn.close()


@contextmanager
def in_migration(conn: sqlite3.Connection) -> Iterator[None]:
    """One executor step: enforcement off, BEGIN, the migration, foreign_key_check, COMMIT, enforcement on."""
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN")
    try:
        yield
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def schema(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()


def snapshot(conn: sqlite3.Connection) -> tuple:
    """Everything a refused rebuild must leave alone: the schema, every row, the AUTOINCREMENT counters."""
    tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    rows = {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    return schema(conn), rows


def objects(conn: sqlite3.Connection, kind: str) -> set[str]:
    return {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))}


# -- rebuilds that succeed ----------------------------------------------------------------------


def test_drop_column_keeps_rows_indexes_triggers_and_views(db):
    before_objects = {k: objects(db, k) for k in ("index", "trigger", "view")}
    with in_migration(db):
        drop_columns(db, "agents", "legacy_flags")

    columns = [row[1] for row in db.execute("PRAGMA table_info(agents)")]
    assert columns == ["id", "role", "display_name", "tier", "metadata", "created_at"]
    assert db.execute("SELECT id, role, display_name, tier, metadata FROM agents ORDER BY id").fetchall() == [
        (1, "coder", "Coder", "core", "{}"),
        (2, "critic", "Critic", "specialist", "{}"),
        (3, "helper", "Helper", "utility", "{}"),
    ]
    assert {k: objects(db, k) for k in ("index", "trigger", "view")} == before_objects
    assert "shown in `apm agents list`, with a comma" in table_sql(db, "agents")  # comments survive

    # The index still enforces, the trigger still fires, the views (one through the other) still read.
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO agents (role, display_name) VALUES ('dup', 'Coder')")
    db.execute("INSERT INTO agents (role, display_name) VALUES ('curator', 'Curator')")
    notes = [note for (note,) in db.execute("SELECT note FROM agent_log ORDER BY rowid")]
    assert notes == ["created coder", "created critic", "created helper", "created gone", "created curator"]
    assert db.execute("SELECT role FROM core_roles ORDER BY role").fetchall() == [
        ("coder",), ("critic",), ("curator",)
    ]
    plan = db.execute("EXPLAIN QUERY PLAN SELECT * FROM agents WHERE role = 'coder'").fetchall()
    assert any("idx_agents_role" in row[-1] for row in plan)


def test_change_type_with_a_conversion_expression_0020(db):
    with in_migration(db):
        rebuild_table(db, "agents", AGENTS_0020, convert={"tier": TIER})

    assert db.execute("SELECT role, tier, typeof(tier), metadata FROM agents ORDER BY id").fetchall() == [
        ("coder", 1, "integer", "{}"),
        ("critic", 2, "integer", "{}"),
        ("helper", 3, "integer", "{}"),
    ]
    # Unlike the hand-written 0020, nothing the new statement names is lost.
    assert "metadata" in [row[1] for row in db.execute("PRAGMA table_info(agents)")]
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        db.execute("INSERT INTO agents (role, display_name, tier) VALUES ('x', 'X', 7)")


def test_rebuild_of_a_parent_table_keeps_foreign_keys_from_children(db):
    with in_migration(db):  # asserts PRAGMA foreign_key_check is empty before COMMIT
        rebuild_table(db, "agents", AGENTS_0020, convert={"tier": TIER})

    assert db.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert db.execute(
        "SELECT t.title, a.role FROM tasks AS t JOIN agents AS a ON a.id = t.agent_id ORDER BY t.id"
    ).fetchall() == [("write", "coder"), ("test", "coder"), ("review", "critic")]
    assert db.execute("SELECT \"table\" FROM pragma_foreign_key_list('tasks')").fetchall() == [("agents",)]
    # Enforcement is back on and still points at agents: a dangling task is refused, a cascade still works.
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO tasks (agent_id, title) VALUES (99, 'orphan')")
    db.execute("DELETE FROM agents WHERE id = 1")
    assert db.execute("SELECT title FROM tasks").fetchall() == [("review",)]


def test_a_rebuild_that_orphans_children_is_left_to_foreign_key_check(db):
    # Renumbering the parent is allowed by the helper; the executor's check is what refuses it.
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("BEGIN")
    rebuild_table(db, "agents", AGENTS_0020, convert={"tier": TIER, "id": "id + 100"})
    assert db.execute("PRAGMA foreign_key_check").fetchall() == [
        ("tasks", 1, "agents", 0), ("tasks", 2, "agents", 0), ("tasks", 3, "agents", 0)
    ]
    db.execute("ROLLBACK")
    db.execute("PRAGMA foreign_keys = ON")


def test_autoincrement_counter_survives(db):
    # 'gone' took id 4 and was deleted: AUTOINCREMENT promises 4 is never handed out again.
    with in_migration(db):
        rebuild_table(db, "agents", AGENTS_0020, convert={"tier": TIER})
    assert db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'agents'").fetchone() == (4,)
    db.execute("INSERT INTO agents (role, display_name) VALUES ('new', 'New')")
    assert db.execute("SELECT max(id) FROM agents").fetchone() == (5,)
    assert db.execute("SELECT name FROM sqlite_sequence").fetchall() == [("agents",)]


def test_reorder_columns(db):
    reordered = """CREATE TABLE agents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        metadata TEXT DEFAULT '{}',
        tier TEXT,
        display_name TEXT NOT NULL,
        role TEXT NOT NULL,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        legacy_flags TEXT DEFAULT ''
    )"""
    before = db.execute("SELECT id, role, display_name, tier, legacy_flags FROM agents ORDER BY id").fetchall()
    with in_migration(db):
        rebuild_table(db, "agents", reordered)
    assert [row[1] for row in db.execute("PRAGMA table_info(agents)")][:5] == [
        "id", "metadata", "tier", "display_name", "role"
    ]
    assert db.execute("SELECT id, role, display_name, tier, legacy_flags FROM agents ORDER BY id").fetchall() == before


def test_add_a_check_constraint(db):
    checked = AGENTS_0019.replace("tier TEXT,", "tier TEXT CHECK (tier IN ('core', 'specialist', 'utility')),")
    with in_migration(db):
        rebuild_table(db, "agents", checked)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        db.execute("INSERT INTO agents (role, display_name, tier) VALUES ('x', 'X', 'boss')")
    assert db.execute("SELECT count(*) FROM agents").fetchone() == (3,)


def test_a_check_that_existing_rows_break_fails_and_changes_nothing(db):
    before = snapshot(db)
    checked = AGENTS_0019.replace("tier TEXT,", "tier TEXT CHECK (tier IN ('core', 'specialist')),")
    with pytest.raises(RebuildFailed, match="copying the rows.*CHECK constraint failed") as caught:
        with in_migration(db):
            rebuild_table(db, "agents", checked)
    assert caught.value.table == "agents"
    assert isinstance(caught.value.cause, sqlite3.IntegrityError)
    assert snapshot(db) == before


def test_a_new_column_takes_its_default_or_a_conversion(db):
    wider = AGENTS_0019.replace("tier TEXT,", "tier TEXT, is_active INTEGER NOT NULL DEFAULT 1, slug TEXT NOT NULL,")
    with in_migration(db):
        rebuild_table(db, "agents", wider, convert={"slug": "lower(display_name) || '-' || id"})
    assert db.execute("SELECT is_active, slug FROM agents ORDER BY id").fetchall() == [
        (1, "coder-1"), (1, "critic-2"), (1, "helper-3")
    ]


def test_rowids_of_a_table_without_integer_primary_key_are_kept(db):
    db.executescript(
        "CREATE TABLE notes (body TEXT, extra TEXT);"
        "INSERT INTO notes VALUES ('a', 1), ('b', 2), ('c', 3); DELETE FROM notes WHERE body = 'a';"
    )
    with in_migration(db):
        drop_columns(db, "notes", "extra")
    assert db.execute("SELECT rowid, body FROM notes").fetchall() == [(2, "b"), (3, "c")]


def test_drop_columns_keeps_each_comment_with_its_column(db):
    db.executescript(
        """CREATE TABLE flags (
            id INTEGER PRIMARY KEY, -- the key, (with) a comma
            name TEXT, -- what the flag is called
            legacy TEXT -- set by 0012, unused
        );
        INSERT INTO flags (name, legacy) VALUES ('dark_mode', 'x');"""
    )
    with in_migration(db):
        drop_columns(db, "flags", "legacy")
    sql = table_sql(db, "flags")
    assert "-- the key, (with) a comma" in sql and "-- what the flag is called" in sql
    assert "unused" not in sql
    assert db.execute("SELECT id, name FROM flags").fetchall() == [(1, "dark_mode")]
    with in_migration(db):
        drop_columns(db, "flags", "id")
    assert "-- the key" not in table_sql(db, "flags") and "-- what the flag is called" in table_sql(db, "flags")


def test_without_rowid_table_with_a_generated_column(db):
    db.executescript(
        """CREATE TABLE settings (
            key TEXT PRIMARY KEY, value TEXT, old TEXT, label TEXT GENERATED ALWAYS AS (key || '=' || value)
        ) WITHOUT ROWID;
        INSERT INTO settings (key, value, old) VALUES ('theme', 'dark', 'x');"""
    )
    with in_migration(db):
        drop_columns(db, "settings", "old")
    assert db.execute("SELECT * FROM settings").fetchall() == [("theme", "dark", "theme=dark")]
    assert "WITHOUT ROWID" in table_sql(db, "settings")
    error = refused(db, drop_columns, "settings", "value")  # the generated column needs it
    assert error.object_name == "column label"


def test_triggers_on_other_tables_and_instead_of_triggers_are_recreated(db):
    db.executescript(
        """
        CREATE TRIGGER log_to_agents AFTER INSERT ON agent_log WHEN new.note = 'touch'
        BEGIN UPDATE agents SET metadata = '{"touched": 1}' WHERE id = new.agent_id; END;
        CREATE TRIGGER agent_roles_insert INSTEAD OF INSERT ON agent_roles
        BEGIN INSERT INTO agents (role, display_name) VALUES (new.role, upper(new.role)); END;
        """
    )
    with in_migration(db):
        drop_columns(db, "agents", "legacy_flags")
    assert {"log_to_agents", "agent_roles_insert", "agents_created"} <= objects(db, "trigger")
    db.execute("INSERT INTO agent_log VALUES (2, 'touch')")
    db.execute("INSERT INTO agent_roles (role) VALUES ('scribe')")
    assert db.execute("SELECT metadata FROM agents WHERE id = 2").fetchone() == ('{"touched": 1}',)
    assert db.execute("SELECT display_name FROM agents WHERE role = 'scribe'").fetchone() == ("SCRIBE",)


def test_a_view_that_only_mentions_the_name_in_a_string_is_left_alone(db):
    db.execute("CREATE VIEW labels AS SELECT 'agents' AS word, note FROM agent_log")
    rowid = db.execute("SELECT rowid FROM sqlite_master WHERE name = 'labels'").fetchone()
    with in_migration(db):
        drop_columns(db, "agents", "legacy_flags")
    assert db.execute("SELECT rowid FROM sqlite_master WHERE name = 'labels'").fetchone() == rowid


def test_works_through_the_executors_migration_connection(db):
    connection = pytest.importorskip("planner.engines.sqlite.connection")
    with in_migration(db):
        rebuild_table(connection.MigrationConnection(db, "0020"), "agents", AGENTS_0020, convert={"tier": TIER})
    assert db.execute("SELECT tier FROM agents ORDER BY id").fetchall() == [(1,), (2,), (3,)]


def test_table_sql_returns_the_stored_statement(db):
    assert table_sql(db, "tasks").startswith("CREATE TABLE tasks (")
    assert table_sql(db, "AGENTS") == table_sql(db, "agents")
    with pytest.raises(TableNotFound):
        table_sql(db, "nope")


# -- refusals: each names what blocks it and changes nothing ---------------------------------------


def refused(db, call, *args, **kwargs) -> RebuildRefused:
    before = snapshot(db)
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("BEGIN")
    with pytest.raises(RebuildRefused) as caught:
        call(db, *args, **kwargs)
    assert db.in_transaction  # the caller's transaction is still there, only the rebuild was undone
    db.execute("ROLLBACK")
    db.execute("PRAGMA foreign_keys = ON")
    assert snapshot(db) == before
    assert isinstance(caught.value, (MigrationError, ValueError))
    return caught.value


def test_refuses_dropping_a_column_an_index_uses(db):
    error = refused(db, drop_columns, "agents", "role")
    assert error.object_name == "index idx_agents_role"
    assert "idx_agents_role" in str(error) and "nothing was changed" in str(error)


def test_refuses_dropping_a_column_a_trigger_uses(db):
    db.execute("DROP INDEX idx_agents_role")
    error = refused(db, drop_columns, "agents", "role")
    assert error.object_name == "trigger agents_created"


def test_refuses_dropping_a_column_a_view_uses(db):
    error = refused(db, rebuild_table, "agents", AGENTS_0020.replace("metadata TEXT DEFAULT '{}',", ""))
    assert error.object_name == "view agent_roles"
    assert "metadata" in error.reason


def test_refuses_a_convert_key_that_is_not_a_new_column(db):
    error = refused(db, rebuild_table, "agents", AGENTS_0020, convert={"tiers": TIER})
    assert error.object_name == "convert key tiers"


def test_refuses_a_new_not_null_column_without_default_or_conversion(db):
    wider = AGENTS_0019.replace("tier TEXT,", "tier TEXT, owner TEXT NOT NULL,")
    error = refused(db, rebuild_table, "agents", wider)
    assert error.object_name == "new column owner"
    assert "convert=" in str(error)


def test_refuses_a_missing_table(db):
    error = refused(db, rebuild_table, "nope", "CREATE TABLE nope (id INTEGER)")
    assert isinstance(error, TableNotFound) and isinstance(error, LookupError)
    assert error.table == "nope"


@pytest.mark.parametrize(
    "create_sql",
    [
        "CREATE TABLE agent (id INTEGER)",
        "CREATE TABLE other.agents (id INTEGER)",
        "CREATE TEMP TABLE agents (id INTEGER)",
        "CREATE TABLE agents AS SELECT * FROM tasks",
        "DROP TABLE agents",
    ],
)
def test_refuses_a_statement_that_does_not_create_the_table(db, create_sql):
    error = refused(db, rebuild_table, "agents", create_sql)
    assert error.object_name == "the new CREATE TABLE statement"


def test_refuses_dropping_a_column_a_table_constraint_uses(db):
    db.execute("CREATE TABLE pairs (a TEXT, b TEXT, c TEXT, UNIQUE (a, b), CHECK (c <> a))")
    error = refused(db, drop_columns, "pairs", "b")
    assert error.object_name == "table constraint 'UNIQUE (a, b)'"
    error = refused(db, drop_columns, "pairs", "a")
    assert error.object_name.startswith("table constraint")


def test_refuses_dropping_an_unknown_column(db):
    error = refused(db, drop_columns, "agents", "legacy_flags", "nope")
    assert error.object_name == "column nope"


def test_refuses_a_parent_rebuild_while_foreign_keys_are_enforced(db):
    before = snapshot(db)
    with pytest.raises(RebuildRefused) as caught:
        rebuild_table(db, "agents", AGENTS_0020, convert={"tier": TIER})  # enforcement is on, no executor
    assert caught.value.object_name == "table tasks"
    assert snapshot(db) == before


def test_a_quoted_and_mixed_case_name_is_the_same_table(db):
    with in_migration(db):
        rebuild_table(db, "Agents", AGENTS_0020.replace("CREATE TABLE agents", 'CREATE TABLE "AGENTS"'),
                      convert={"tier": TIER})
    assert db.execute("SELECT count(*) FROM agents").fetchone() == (3,)


# -- inside the real executor -------------------------------------------------------------------


def test_a_migration_that_rebuilds_applies_and_rolls_back_through_the_executor(tmp_path):
    from planner.engines.sqlite.runner import Executor
    from planner.loader import load_catalog
    from planner.plan import apply_plan, rollback_plan
    from tests.conftest import write_migration

    catalog_dir = tmp_path / "migrations"
    catalog_dir.mkdir()
    schema_0001 = AGENTS_0019 + ";" + (
        "CREATE TABLE tasks (id INTEGER PRIMARY KEY, agent_id INTEGER NOT NULL REFERENCES agents(id));"
        "CREATE INDEX idx_agents_role ON agents(role);"
        "INSERT INTO agents (role, display_name, tier) VALUES ('coder', 'Coder', 'core'), ('critic', 'Critic', 'x');"
        "INSERT INTO tasks (agent_id) VALUES (1), (2), (2);"
    )
    write_migration(catalog_dir, "0001", depends_on=(), upgrade=f"conn.executescript({schema_0001!r})",
                    downgrade="conn.executescript('DROP TABLE tasks; DROP TABLE agents')")
    back = "CASE tier WHEN 1 THEN 'core' WHEN 2 THEN 'specialist' ELSE 'utility' END"
    write_migration(
        catalog_dir, "0020", "Fix agents.tier", depends_on=("0001",),
        extra="from planner.rebuild import rebuild_table\n",
        upgrade=f"rebuild_table(conn, 'agents', {AGENTS_0020!r}, convert={{'tier': {TIER!r}}})",
        downgrade=f"rebuild_table(conn, 'agents', {AGENTS_0019!r}, convert={{'tier': {back!r}}})",
    )
    catalog = load_catalog(catalog_dir)
    database = tmp_path / "apm.db"
    executor = Executor(database, create=True)

    executor.run(apply_plan(catalog, ()))
    with sqlite3.connect(database) as conn:
        joined = conn.execute("SELECT a.tier FROM tasks JOIN agents AS a ON a.id = agent_id ORDER BY tasks.id")
        assert joined.fetchall() == [(1,), (3,), (3,)]
        assert "idx_agents_role" in objects(conn, "index")

    executor.run(rollback_plan(catalog, executor.applied(), "0020"))
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT role, tier FROM agents ORDER BY id").fetchall() == [
            ("coder", "core"), ("critic", "utility")
        ]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert "idx_agents_role" in objects(conn, "index")
