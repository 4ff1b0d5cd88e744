"""Previews on real databases: the plan runs in one transaction on the real file, watched, then rolled back.

The shipped catalog's rollbacks, failures, renames, overwritten values, and
the file left exactly as it was (a dry run never commits).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from planner.errors import ForeignKeyViolation, MigrationFailed, ValidationFailed
from planner.engines.sqlite.runner import Executor
from planner.engines.sqlite.ledger import read_ledger
from planner.loader import load_catalog
from planner.plan import apply_plan, rollback_plan
from tests.conftest import write_migration

SHIPPED = Path(__file__).resolve().parent.parent / "migrations"
CUSTOM_METADATA = 37


def fingerprint(path: Path) -> str:
    """The file's bytes: what "unchanged" means (SQLite may touch the mtime when it takes a lock)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def preview(db: Path, plan, catalog, **kwargs):
    return Executor(db, create=plan.direction == "apply", catalog=catalog).preview(plan, **kwargs)


@pytest.fixture(scope="module")
def shipped():
    return load_catalog(SHIPPED)


@pytest.fixture
def apm_db(tmp_path: Path, shipped) -> Path:
    """APM's database with every shipped migration applied, 100 agents of which 37 carry real metadata."""
    db = tmp_path / "aipm.db"
    Executor(db, create=True).run(apply_plan(shipped, []))
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO projects (name) VALUES ('second')")
    conn.executemany(
        "INSERT INTO agents (project_id, role, display_name, metadata) VALUES (?, ?, ?, ?)",
        [(2, f"role-{i}", f"Agent {i}", '{"rules": ["x"]}' if i < CUSTOM_METADATA else "{}") for i in range(100)],
    )
    conn.execute("INSERT INTO agents (project_id, role, display_name, metadata) VALUES (2, 'no-meta', 'N', NULL)")
    conn.execute("INSERT INTO feature_flags (project_id, flag_name) VALUES (2, 'beta')")
    conn.commit()
    conn.close()
    return db


def step(result, version):
    return next(s for s in result.steps if s.version == version)


def test_cascade_rollback_of_0027_reports_the_metadata_it_drops(apm_db, shipped):
    before = fingerprint(apm_db)
    plan = rollback_plan(shipped, read_ledger(apm_db), "0027", cascade=True)
    result = preview(apm_db, plan, shipped)

    assert result.ok and [s.version for s in result.steps] == ["0029", "0027"]
    dropped = next(i for i in step(result, "0027").impact if i.kind == "dropped-column")
    assert (dropped.table, dropped.column, dropped.count) == ("agents", "metadata", CUSTOM_METADATA)
    assert dropped.non_null == 100  # 37 real values, 63 '{}' defaults; the NULL counts in neither
    assert "0027 rollback: drops column agents.metadata holding 37 non-default values (100 non-null)" in (
        result.describe()
    )
    assert result.loses_data and step(result, "0027").loses_data and not result.committed
    assert fingerprint(apm_db) == before


def test_rollback_of_0029_reports_the_rows_it_deletes(apm_db, shipped):
    before = fingerprint(apm_db)
    result = preview(apm_db, rollback_plan(shipped, read_ledger(apm_db), "0029"), shipped)
    rows = step(result, "0029").impact
    # The five utility agents, and the 'APM' project 0029 created to own them once nothing else uses it.
    assert [(i.kind, i.table, i.count, i.before, i.after) for i in rows] == [
        ("deleted-rows", "agents", 5, 106, 101), ("deleted-rows", "projects", 1, 2, 1)
    ]
    assert result.describe() == [
        "0029 rollback: deletes 5 rows of agents (106 → 101)",
        "0029 rollback: deletes 1 row of projects (2 → 1)",
    ]
    assert result.loses_data
    assert fingerprint(apm_db) == before


def test_every_shipped_rollback_leaves_the_file_unchanged_and_nothing_beside_it(apm_db, shipped):
    before = fingerprint(apm_db)
    applied = read_ledger(apm_db)
    for version in shipped.versions:
        result = preview(apm_db, rollback_plan(shipped, applied, version, cascade=True), shipped)
        assert result.ok, result.error
        assert fingerprint(apm_db) == before, version
    assert sorted(p.name for p in apm_db.parent.iterdir()) == ["aipm.db"]  # no journal, WAL or copy


def test_full_cascade_names_every_dropped_table_with_its_rows(apm_db, shipped):
    result = preview(apm_db, rollback_plan(shipped, read_ledger(apm_db), "0001", cascade=True), shipped)
    lines = result.describe()
    assert "0030 rollback: drops table feature_flags holding 1 row" in lines
    assert "0001 rollback: drops table agents holding 101 rows" in lines
    assert "0001 rollback: drops table agent_tools (it was empty)" in lines


def test_a_plan_that_loses_nothing_says_so(apm_db, shipped):
    conn = sqlite3.connect(apm_db)
    conn.execute("DELETE FROM feature_flags")
    conn.commit()
    conn.close()
    result = preview(apm_db, rollback_plan(shipped, read_ledger(apm_db), "0030"), shipped)
    assert result.describe() == ["0030 rollback: drops table feature_flags (it was empty)"]
    assert not result.loses_data


def test_an_apply_on_a_new_database_commits_nothing_in_a_dry_run(tmp_path, shipped):
    db = tmp_path / "new.db"
    result = preview(db, apply_plan(shipped, []), shipped)
    assert result.ok and [s.version for s in result.steps] == ["0001", "0020", "0027", "0029", "0030"]
    lines = result.describe()
    assert "0001 apply: adds table agents" in lines
    assert "0029 apply: inserts 5 rows into agents" in lines
    # 0020 really rebuilt agents without metadata: the preview shows the column going, holding nothing.
    assert "0020 apply: drops column agents.metadata (it held only NULL or default values)" in lines
    assert "0020 apply: rebuilds table agents (copies its rows into the new shape)" in lines
    assert not result.loses_data and not result.committed
    assert read_ledger(db) == {}


def test_accepting_commits_in_the_same_run(tmp_path, shipped):
    db = tmp_path / "new.db"
    result = preview(db, apply_plan(shipped, []), shipped, accept=lambda p: not p.loses_data)
    assert result.committed
    assert list(read_ledger(db)) == ["0001", "0020", "0027", "0029", "0030"]


def test_an_empty_plan_runs_nothing(apm_db, shipped):
    result = preview(apm_db, apply_plan(shipped, read_ledger(apm_db)), shipped)
    assert result.steps == [] and result.ok


# --------------------------------------------------------------------------
# Renames are renames; overwritten values are loss
# --------------------------------------------------------------------------


@pytest.fixture
def people(catalog_dir: Path, tmp_path: Path):
    write_migration(catalog_dir, "0001", "People", depends_on=(), upgrade="""
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, z TEXT, c TEXT, keep TEXT DEFAULT 'k')")
        conn.executemany("INSERT INTO t (z, c, keep) VALUES (?, ?, ?)", [("a", "x", "k"), ("b", None, "k2"), ("c", "y", "k")])
    """)
    db = tmp_path / "people.db"
    return catalog_dir, db


def _run_second(catalog_dir: Path, db: Path, upgrade: str, extra: str = ""):
    write_migration(catalog_dir, "0002", "Change", depends_on=("0001",), upgrade=upgrade, extra=extra)
    catalog = load_catalog(catalog_dir)
    Executor(db, create=True, catalog=catalog).run(apply_plan(catalog, [], target="0001"))
    return preview(db, apply_plan(catalog, read_ledger(db)), catalog)


def test_rename_column_is_a_rename(people):
    result = _run_second(*people, 'conn.execute("ALTER TABLE t RENAME COLUMN z TO w")')
    assert result.describe() == ["0002 apply: renames column t.z to w"]
    assert not result.loses_data


def test_rename_table_is_a_rename(people):
    result = _run_second(*people, 'conn.execute("ALTER TABLE t RENAME TO t2")')
    assert result.describe() == ["0002 apply: renames table t to t2"]
    assert not result.loses_data


def test_a_rebuild_whose_convert_carries_a_column_over_is_a_rename(people):
    result = _run_second(*people, extra="from planner import rebuild_table\n", upgrade="""
        rebuild_table(conn, "t", "CREATE TABLE t (id INTEGER PRIMARY KEY, z TEXT, b TEXT, keep TEXT DEFAULT 'k')",
                      convert={"b": "c"})
    """)
    lines = result.describe()
    assert "0002 apply: renames column t.c to b" in lines
    assert not result.loses_data, lines


def test_a_rebuild_that_drops_a_column_names_what_it_held(people):
    result = _run_second(*people, extra="from planner import rebuild_table\n", upgrade="""
        rebuild_table(conn, "t", "CREATE TABLE t (id INTEGER PRIMARY KEY, z TEXT, keep TEXT DEFAULT 'k')")
    """)
    assert "0002 apply: drops column t.c holding 2 non-default values" in result.describe()
    assert result.loses_data


def test_update_to_null_is_overwritten_values(people):
    result = _run_second(*people, 'conn.execute("UPDATE t SET c = NULL")')
    assert result.describe() == ["0002 apply: overwrites 2 values of t.c"]
    impact = step(result, "0002").impact[0]
    assert (impact.kind, impact.table, impact.column, impact.count) == ("overwritten-values", "t", "c", 2)
    assert result.loses_data


def test_update_that_changes_nothing_loses_nothing(people):
    result = _run_second(*people, 'conn.execute("UPDATE t SET keep = keep")')
    assert not result.loses_data
    assert result.describe() == ["0002 apply: no schema or data change"]


def test_drop_column_names_its_values(people):
    result = _run_second(*people, 'conn.execute("ALTER TABLE t DROP COLUMN keep")')
    # 'k' is the default: only 'k2' was real data.
    assert result.describe() == ["0002 apply: drops column t.keep holding 1 non-default value (3 non-null)"]


def test_a_hand_written_rebuild_is_a_rebuild(people):
    result = _run_second(*people, """
        conn.execute("CREATE TABLE t_new (id INTEGER PRIMARY KEY, z TEXT, c TEXT)")
        conn.execute("INSERT INTO t_new (id, z, c) SELECT id, z, c FROM t WHERE id < 3")
        conn.execute("DROP TABLE t")
        conn.execute("ALTER TABLE t_new RENAME TO t")
    """)
    lines = result.describe()
    assert "0002 apply: deletes 1 row of t (3 → 2)" in lines
    assert "0002 apply: drops column t.keep holding 1 non-default value (3 non-null)" in lines
    assert "0002 apply: rebuilds table t (copies its rows into the new shape)" in lines
    assert not any("t_new" in line for line in lines), lines


def test_rows_deleted_by_a_trigger_are_counted(people):
    catalog_dir, db = people
    write_migration(catalog_dir, "0002", "Audit", depends_on=("0001",), upgrade="""
        conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, t_id INTEGER)")
        conn.execute("INSERT INTO audit (t_id) VALUES (1), (1), (2)")
        conn.execute("CREATE TRIGGER t_gone AFTER DELETE ON t BEGIN DELETE FROM audit WHERE t_id = OLD.id; END")
    """)
    catalog = load_catalog(catalog_dir)
    Executor(db, create=True, catalog=catalog).run(apply_plan(catalog, []))
    write_migration(catalog_dir, "0003", "Purge", depends_on=("0002",), upgrade='conn.execute("DELETE FROM t WHERE id = 1")')
    catalog = load_catalog(catalog_dir)
    result = preview(db, apply_plan(catalog, read_ledger(db)), catalog)
    assert result.describe() == ["0003 apply: deletes 2 rows of audit (3 → 1)", "0003 apply: deletes 1 row of t (3 → 2)"]


def test_sql_of_a_python_migration_is_captured_with_its_parameters(people):
    catalog_dir, db = people
    write_migration(catalog_dir, "0002", "Insert", depends_on=("0001",), upgrade="""
        conn.execute("INSERT INTO t (z) VALUES (?)", ("o'neil",))
        row = conn.execute("SELECT COUNT(*) FROM t").fetchone()
        conn.execute("UPDATE t SET keep = ? WHERE id = ?", ("n" + str(row[0]), 1))
    """)
    catalog = load_catalog(catalog_dir)
    Executor(db, create=True, catalog=catalog).run(apply_plan(catalog, [], target="0001"))
    result = preview(db, apply_plan(catalog, read_ledger(db)), catalog, capture_sql=True)
    # What the code computed from a live read is in the SQL; the read itself is not.
    assert step(result, "0002").sql == ["INSERT INTO t (z) VALUES ('o''neil')", "UPDATE t SET keep = 'n4' WHERE id = 1"]


# --------------------------------------------------------------------------
# Failures: everything is rolled back, and the error is the one a run would raise
# --------------------------------------------------------------------------


@pytest.fixture
def failing_catalog(catalog_dir: Path) -> Path:
    write_migration(catalog_dir, "0001", "Items", depends_on=(),
                    upgrade="conn.execute('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)')",
                    downgrade="conn.execute('DROP TABLE items')")
    write_migration(catalog_dir, "0002", "Seed items", depends_on=("0001",),
                    upgrade="conn.execute(\"INSERT INTO items (name) VALUES ('a'), ('b')\")",
                    downgrade="conn.execute('DELETE FROM items')")
    write_migration(catalog_dir, "0003", "Broken", depends_on=("0002",),
                    upgrade="conn.execute('INSERT INTO items (nope) VALUES (1)')")
    write_migration(catalog_dir, "0004", "After the break", depends_on=("0003",))
    return catalog_dir


def test_a_failing_migration_rolls_back_the_whole_plan(tmp_path, failing_catalog):
    catalog = load_catalog(failing_catalog)
    db = tmp_path / "app.db"
    sqlite3.connect(db).close()
    result = preview(db, apply_plan(catalog, []), catalog, accept=lambda p: True)
    assert not result.ok and not result.committed
    assert [s.status for s in result.steps] == ["ok", "ok", "failed"]
    assert isinstance(result.error, MigrationFailed) and "no column named nope" in str(result.error)
    assert result.not_run == ["0004"]
    assert read_ledger(db) == {}
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'items'").fetchone() is None
    # The failure itself is in the log, in its own transaction.
    assert conn.execute("SELECT version, outcome FROM schema_migrations_log").fetchall() == [("0003", "failed")]


def test_a_broken_foreign_key_fails_the_preview(tmp_path, catalog_dir):
    write_migration(catalog_dir, "0001", "Parents", depends_on=(), upgrade="""
        conn.execute('CREATE TABLE parents (id INTEGER PRIMARY KEY)')
        conn.execute('CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parents(id))')
        conn.execute('INSERT INTO parents VALUES (1)')
        conn.execute('INSERT INTO children VALUES (10, 1)')
    """)
    write_migration(catalog_dir, "0002", "Orphan children", depends_on=("0001",),
                    upgrade="conn.execute('DELETE FROM parents')")
    catalog = load_catalog(catalog_dir)
    db = tmp_path / "fk.db"
    Executor(db, create=True).run(apply_plan(catalog, [], target="0001"))
    result = preview(db, apply_plan(catalog, read_ledger(db)), catalog, accept=lambda p: True)
    assert isinstance(result.error, ForeignKeyViolation) and not result.committed


def test_validate_post_failing_is_reported(tmp_path, catalog_dir):
    write_migration(catalog_dir, "0001", "Checked", depends_on=(),
                    extra="def validate_post(conn):\n    return False\n")
    catalog = load_catalog(catalog_dir)
    db = tmp_path / "v.db"
    sqlite3.connect(db).close()
    result = preview(db, apply_plan(catalog, []), catalog)
    assert isinstance(result.error, ValidationFailed)
    assert result.to_json()["steps"][0]["error"] == {"type": "ValidationFailed", "message": str(result.error)}


def test_json_has_the_documented_shape(apm_db, shipped):
    result = preview(apm_db, rollback_plan(shipped, read_ledger(apm_db), "0027", cascade=True), shipped)
    data = json.loads(json.dumps(result.to_json()))
    assert set(data) == {"format", "direction", "target", "cascade", "committed", "duration_ms", "ok",
                         "loses_data", "unchecked", "steps", "not_run", "lines", "write_lock_ms", "held_exclusive"}
    assert (data["format"], data["direction"], data["target"], data["cascade"]) == (2, "rollback", "0027", True)
    first = data["steps"][0]
    assert set(first) == {"version", "description", "direction", "status", "duration_ms", "loses_data",
                          "changes", "impact", "sql", "output", "lines", "error", "skipped", "locks", "rewrites",
                          "findings", "rebuilds", "passed_over"}
    column = next(i for i in data["steps"][1]["impact"] if i["kind"] == "dropped-column")
    assert column == {"kind": "dropped-column", "table": "agents", "column": "metadata", "count": 37,
                      "non_null": 100, "before": None, "after": None, "loses_data": True, "counted": True,
                      "text": "drops column agents.metadata holding 37 non-default values (100 non-null)"}
    change = next(c for c in data["steps"][1]["changes"] if c["kind"] == "column")
    assert set(change) == {"kind", "action", "name", "table", "before", "after", "text"}


def test_replace_that_deletes_rows_is_loss(people):
    catalog_dir, db = people
    write_migration(catalog_dir, "0002", "Unique", depends_on=("0001",),
                    upgrade='conn.execute("CREATE UNIQUE INDEX t_z ON t (z)")')
    catalog = load_catalog(catalog_dir)
    Executor(db, create=True, catalog=catalog).run(apply_plan(catalog, []))
    write_migration(catalog_dir, "0003", "Replace", depends_on=("0002",), upgrade="""
        conn.execute("INSERT OR REPLACE INTO t (id, z) VALUES (1, 'a2')")
        conn.execute("REPLACE INTO t (z) VALUES ('b')")
    """)
    catalog = load_catalog(catalog_dir)
    result = preview(db, apply_plan(catalog, read_ledger(db)), catalog)
    assert result.loses_data
    assert "0003 apply: deletes 2 rows of t (3 → 3)" in result.describe()


def test_an_upsert_overwrites_and_inserts_only_what_it_adds(people):
    catalog_dir, db = people
    write_migration(catalog_dir, "0002", "Upsert", depends_on=("0001",), upgrade="""
        conn.execute("INSERT INTO t (id, z) VALUES (1, 'new'), (9, 'nine') ON CONFLICT (id) DO UPDATE SET z = excluded.z")
    """)
    catalog = load_catalog(catalog_dir)
    Executor(db, create=True, catalog=catalog).run(apply_plan(catalog, [], target="0001"))
    result = preview(db, apply_plan(catalog, read_ledger(db)), catalog)
    assert result.describe() == ["0002 apply: overwrites 1 value of t.z", "0002 apply: inserts 1 row into t"]


def test_an_upsert_of_default_values_overwrites_them(people):
    """Issue 22 point 5: 'k' is keep's default, and the rows held it before the plan: replacing it is loss."""
    result = _run_second(*people, """
        conn.execute("INSERT INTO t (id, keep) VALUES (1, 'x'), (3, 'k') ON CONFLICT (id) DO UPDATE SET keep = excluded.keep")
    """)
    assert result.describe() == ["0002 apply: overwrites 1 value of t.keep"]
    assert result.loses_data


def test_an_update_after_a_rebuild_in_the_same_step_is_counted(people):
    """The rebuilt table holds the rows it had: changing or deleting them afterwards in the same step is loss."""
    result = _run_second(*people, extra="from planner import rebuild_table\n", upgrade="""
        rebuild_table(conn, "t", "CREATE TABLE t (id INTEGER PRIMARY KEY, z TEXT, c TEXT, keep TEXT DEFAULT 'k', "
                                 "n TEXT DEFAULT 'new')")
        conn.execute("UPDATE t SET keep = 'gone', n = 'set' WHERE id = 1")
        conn.execute("DELETE FROM t WHERE id = 2")
    """)
    lines = result.describe()
    assert "0002 apply: overwrites 1 value of t.keep" in lines
    assert "0002 apply: deletes 1 row of t (3 → 2)" in lines
    assert "0002 apply: sets 1 value of t.n (none held data from before this plan)" in lines


def test_create_if_not_exists_of_a_table_there_already_adds_nothing_and_its_values_still_count(people):
    """The authorizer reports CREATE TABLE IF NOT EXISTS even when the table is there: it is not the plan's."""
    result = _run_second(*people, """
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY)")
        conn.execute("UPDATE t SET keep = 'x' WHERE id = 1")
    """)
    assert result.describe() == ["0002 apply: overwrites 1 value of t.keep"]


def test_a_rebuild_recreates_the_views_over_its_table_without_adding_them(people):
    """Issue 22 point 22: rebuild_table drops and recreates the views over its table: they were there before."""
    catalog_dir, db = people
    write_migration(catalog_dir, "0002", "Views", depends_on=("0001",), upgrade="""
        conn.execute("CREATE VIEW named AS SELECT id, z FROM t")
        conn.execute("CREATE TABLE log (id INTEGER)")
        conn.execute("CREATE TRIGGER t_log AFTER INSERT ON log BEGIN DELETE FROM t WHERE id = NEW.id; END")
    """)
    catalog = load_catalog(catalog_dir)
    Executor(db, create=True, catalog=catalog).run(apply_plan(catalog, []))
    write_migration(catalog_dir, "0003", "Rebuild", depends_on=("0002",), extra="from planner import rebuild_table\n",
                    upgrade="""
        rebuild_table(conn, "t", "CREATE TABLE t (id INTEGER PRIMARY KEY, z TEXT NOT NULL, c TEXT, keep TEXT)")
    """)
    catalog = load_catalog(catalog_dir)
    result = preview(db, apply_plan(catalog, read_ledger(db)), catalog)
    assert result.describe() == ["0003 apply: rebuilds table t (copies its rows into the new shape)"]


def test_a_rebuild_conversion_that_changes_values_overwrites_them(people):
    """Issue 22 point 8: a convert that clamps or cuts values changes them, as an ALTER COLUMN TYPE on
    PostgreSQL does; one that only renames or re-encodes identical values does not."""
    catalog_dir, db = people
    write_migration(catalog_dir, "0002", "Reviews", depends_on=("0001",), upgrade="""
        conn.execute("CREATE TABLE reviews (id INTEGER PRIMARY KEY, rating INTEGER, price REAL, label TEXT)")
        conn.execute("INSERT INTO reviews VALUES (1, 9, 19.99, 'hello'), (2, -3, 20.0, 'wo'), (3, 4, NULL, NULL), "
                     "(4, NULL, 3.0, 'ab')")
    """)
    catalog = load_catalog(catalog_dir)
    Executor(db, create=True, catalog=catalog).run(apply_plan(catalog, []))
    write_migration(catalog_dir, "0003", "Clamp", depends_on=("0002",), extra="from planner import rebuild_table\n",
                    upgrade="""
        rebuild_table(conn, "reviews", "CREATE TABLE reviews (id INTEGER PRIMARY KEY, "
                      "rating INTEGER CHECK (rating BETWEEN 1 AND 5), price INTEGER, code TEXT)",
                      convert={"rating": "MIN(MAX(rating, 1), 5)", "price": "CAST(price AS INTEGER)",
                               "code": "substr(label, 1, 2)"})
    """)
    catalog = load_catalog(catalog_dir)
    result = preview(db, apply_plan(catalog, read_ledger(db)), catalog)
    lines = result.describe()
    assert "0003 apply: overwrites 2 values of reviews.rating" in lines
    assert "0003 apply: overwrites 1 value of reviews.price" in lines  # 19.99; 20.0 and 3.0 come back the same
    assert "0003 apply: overwrites 1 value of reviews.label" in lines  # 'hello' became 'he'
    assert "0003 apply: renames column reviews.label to code" in lines
    assert result.loses_data and "This plan loses no data" not in lines


@pytest.mark.parametrize("upgrade", [
    "conn.execute('UPDATE parents SET id = 2')",                      # a parent's key changes under its child
    "conn.execute('INSERT INTO children VALUES (11, 99)')",           # a child points at nothing
    "conn.execute('DROP TABLE parents')",                             # the parent goes
])
def test_the_scoped_foreign_key_check_still_catches_every_breakage(tmp_path, catalog_dir, upgrade):
    write_migration(catalog_dir, "0001", "Parents", depends_on=(), upgrade="""
        conn.execute('CREATE TABLE parents (id INTEGER PRIMARY KEY)')
        conn.execute('CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parents(id))')
        conn.execute('CREATE TABLE bystander (id INTEGER PRIMARY KEY)')
        conn.execute('INSERT INTO parents VALUES (1)')
        conn.execute('INSERT INTO children VALUES (10, 1)')
    """)
    write_migration(catalog_dir, "0002", "Break", depends_on=("0001",), upgrade=upgrade)
    catalog = load_catalog(catalog_dir)
    db = tmp_path / "fk.db"
    Executor(db, create=True).run(apply_plan(catalog, [], target="0001"))
    result = preview(db, apply_plan(catalog, read_ledger(db)), catalog, accept=lambda p: True)
    assert isinstance(result.error, ForeignKeyViolation), result.describe()
    assert not result.committed


def test_a_new_table_whose_foreign_key_cannot_work_fails_the_preview(tmp_path, catalog_dir):
    # Its parent's column is not unique: every insert would fail once foreign keys are on ("foreign key mismatch").
    write_migration(catalog_dir, "0001", "Parents", depends_on=(),
                    upgrade="conn.execute('CREATE TABLE parents (id INTEGER, name TEXT)')")
    write_migration(catalog_dir, "0002", "Children", depends_on=("0001",), upgrade="""
        conn.execute('CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parents(id))')
    """)
    catalog = load_catalog(catalog_dir)
    db = tmp_path / "fk.db"
    Executor(db, create=True).run(apply_plan(catalog, [], target="0001"))
    result = preview(db, apply_plan(catalog, read_ledger(db)), catalog, accept=lambda p: True)
    assert result.error is not None and "foreign key mismatch" in str(result.error), result.describe()
    assert not result.committed and list(read_ledger(db)) == ["0001"]


def test_a_step_that_only_creates_tables_without_foreign_keys_checks_none(tmp_path, catalog_dir, monkeypatch):
    # A new table has no rows, and without REFERENCES no foreign key: nothing for foreign_key_check to find.
    write_migration(catalog_dir, "0001", "Notes", depends_on=(), upgrade="""
        conn.execute('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)')
        conn.execute('CREATE TABLE tags AS SELECT 1 AS id, "x" AS name')
    """)
    write_migration(catalog_dir, "0002", "Links", depends_on=("0001",), upgrade="""
        conn.execute('CREATE TABLE links (id INTEGER PRIMARY KEY, note_id INTEGER REFERENCES notes(id))')
    """)
    catalog = load_catalog(catalog_dir)
    db = tmp_path / "notes.db"
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)
    result = preview(db, apply_plan(catalog, []), catalog, accept=lambda p: True)
    monkeypatch.undo()
    assert result.committed and result.error is None
    checks = [s for s in statements if s.startswith("PRAGMA foreign_key_check")]
    assert checks == ['PRAGMA foreign_key_check("links")'], checks  # 0002's table, which has a foreign key
