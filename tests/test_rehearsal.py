"""Rehearsals on real databases: the shipped catalog's rollbacks, failures, and the untouched original."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import write_migration
from planner import rehearsal as rehearsal_module
from planner.errors import ForeignKeyViolation, MigrationFailed, ValidationFailed
from planner.executor import Executor
from planner.ledger import read_ledger
from planner.loader import load_catalog
from planner.plan import apply_plan, rollback_plan
from planner.rehearsal import rehearse

SHIPPED = Path(__file__).resolve().parent.parent / "migrations"
CUSTOM_METADATA = 37


def fingerprint(path: Path) -> tuple[str, int]:
    """The file's bytes and mtime: what "untouched" means."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


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
    result = rehearse(apm_db, plan, catalog=shipped)

    assert result.ok and [s.version for s in result.steps] == ["0029", "0027"]
    dropped = next(i for i in step(result, "0027").impact if i.kind == "dropped-column")
    assert (dropped.table, dropped.column, dropped.count) == ("agents", "metadata", CUSTOM_METADATA)
    assert dropped.non_null == 100  # 37 real values, 63 '{}' defaults; the NULL counts in neither
    assert "0027 rollback: drops column agents.metadata holding 37 non-default values (100 non-null)" in (
        result.describe()
    )
    assert result.loses_data and step(result, "0027").loses_data
    assert fingerprint(apm_db) == before


def test_rollback_of_0029_reports_the_rows_it_deletes(apm_db, shipped):
    before = fingerprint(apm_db)
    result = rehearse(apm_db, rollback_plan(shipped, read_ledger(apm_db), "0029"), catalog=shipped)
    rows = step(result, "0029").impact
    # The five utility agents, and the 'APM' project 0029 created to own them once nothing else uses it.
    assert [(i.kind, i.table, i.before, i.after) for i in rows] == [
        ("rows", "agents", 106, 101), ("rows", "projects", 2, 1)
    ]
    assert result.describe() == [
        "0029 rollback: deletes 5 rows of agents (106 → 101)",
        "0029 rollback: deletes 1 row of projects (2 → 1)",
    ]
    assert result.loses_data
    assert fingerprint(apm_db) == before


def test_every_shipped_rollback_leaves_the_file_untouched(apm_db, shipped):
    before = fingerprint(apm_db)
    applied = read_ledger(apm_db)
    for version in shipped.versions:
        result = rehearse(apm_db, rollback_plan(shipped, applied, version, cascade=True), catalog=shipped)
        assert result.ok, result.error
        assert fingerprint(apm_db) == before, version
    assert not list(apm_db.parent.glob("aipm.db-*"))  # no journal or WAL left beside it


def test_full_cascade_names_every_dropped_table_with_its_rows(apm_db, shipped):
    result = rehearse(apm_db, rollback_plan(shipped, read_ledger(apm_db), "0001", cascade=True), catalog=shipped)
    lines = result.describe()
    assert "0030 rollback: drops table feature_flags holding 1 row" in lines
    assert "0001 rollback: drops table agents holding 101 rows" in lines
    assert "0001 rollback: drops table agent_tools (it was empty)" in lines
    assert "0001 rollback: drops index idx_agents_project_role" in lines


def test_a_plan_that_loses_nothing_says_so(apm_db, shipped):
    conn = sqlite3.connect(apm_db)
    conn.execute("DELETE FROM feature_flags")
    conn.commit()
    conn.close()
    result = rehearse(apm_db, rollback_plan(shipped, read_ledger(apm_db), "0030"), catalog=shipped)
    assert result.describe() == ["0030 rollback: drops table feature_flags (it was empty)"]
    assert not result.loses_data


def test_an_apply_on_a_database_that_does_not_exist_creates_nothing(tmp_path, shipped):
    db = tmp_path / "new.db"
    result = rehearse(db, apply_plan(shipped, []), catalog=shipped)
    assert result.ok and [s.version for s in result.steps] == ["0001", "0020", "0027", "0029", "0030"]
    assert "0001 apply: adds table agents" in result.describe()
    assert "0029 apply: inserts 5 rows into agents (0 → 5)" in result.describe()
    # 0020 really rebuilt agents without metadata: the rehearsal shows the column going, holding nothing.
    assert "0020 apply: drops column agents.metadata (it held only NULL or default values)" in result.describe()
    assert not result.loses_data
    assert not db.exists()


def test_an_empty_plan_copies_nothing(apm_db, shipped):
    result = rehearse(apm_db, apply_plan(shipped, read_ledger(apm_db)))
    assert result.steps == [] and result.storage is None and result.ok


# --------------------------------------------------------------------------
# Failures: reported as the real run would raise them
# --------------------------------------------------------------------------


def real_failure(db: Path, plan, tmp_path: Path) -> Exception:
    """Run ``plan`` for real on a byte copy of ``db`` and return what it raised."""
    copy = tmp_path / "real-copy.db"
    copy.write_bytes(db.read_bytes())
    with pytest.raises(Exception) as caught:
        Executor(copy).run(plan)
    return caught.value


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


def test_a_failing_migration_is_reported_with_the_executors_error(tmp_path, failing_catalog):
    catalog = load_catalog(failing_catalog)
    db = tmp_path / "app.db"
    sqlite3.connect(db).close()
    before = fingerprint(db)
    plan = apply_plan(catalog, [])
    result = rehearse(db, plan, catalog=catalog)
    expected = real_failure(db, plan, tmp_path)

    assert not result.ok
    assert [s.status for s in result.steps] == ["ok", "ok", "failed"]
    assert type(result.error) is type(expected) is MigrationFailed
    assert str(result.error) == str(expected)
    assert "no column named nope" in str(result.error)
    assert result.not_run == ["0004"]
    assert result.describe()[-2] == f"0003 apply: fails: {expected}"
    assert fingerprint(db) == before


def test_a_broken_foreign_key_fails_the_rehearsal_like_the_real_run(tmp_path, catalog_dir):
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
    plan = apply_plan(catalog, read_ledger(db))
    result = rehearse(db, plan, catalog=catalog)
    expected = real_failure(db, plan, tmp_path)
    assert isinstance(result.error, ForeignKeyViolation) and str(result.error) == str(expected)


def test_validate_post_failing_is_reported(tmp_path, catalog_dir):
    write_migration(catalog_dir, "0001", "Checked", depends_on=(),
                    extra="def validate_post(conn):\n    return False\n")
    catalog = load_catalog(catalog_dir)
    db = tmp_path / "v.db"
    sqlite3.connect(db).close()
    result = rehearse(db, apply_plan(catalog, []), catalog=catalog)
    assert isinstance(result.error, ValidationFailed)
    assert result.to_json()["steps"][0]["error"] == {"type": "ValidationFailed", "message": str(result.error)}


# --------------------------------------------------------------------------
# Where the copy lives, and the JSON shape
# --------------------------------------------------------------------------


def test_a_database_over_the_memory_limit_is_copied_to_a_temporary_file_that_is_removed(
    apm_db, shipped, tmp_path, monkeypatch
):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    plan = rollback_plan(shipped, read_ledger(apm_db), "0027", cascade=True)
    on_file = rehearse(apm_db, plan, catalog=shipped, memory_limit_bytes=0)
    assert on_file.storage == "file"
    assert on_file.describe() == rehearse(apm_db, plan, catalog=shipped).describe()
    assert list(scratch.iterdir()) == []


def test_the_memory_copy_is_removed_too(apm_db, shipped, tmp_path, monkeypatch):
    ram = tmp_path / "ram"
    ram.mkdir()
    monkeypatch.setattr(rehearsal_module, "MEMORY_DIRECTORIES", (ram,))
    result = rehearse(apm_db, rollback_plan(shipped, read_ledger(apm_db), "0029"), catalog=shipped)
    assert result.storage == "memory"
    assert list(ram.iterdir()) == []


def test_without_a_memory_folder_the_copy_goes_to_a_file(apm_db, shipped, tmp_path, monkeypatch):
    monkeypatch.setattr(rehearsal_module, "MEMORY_DIRECTORIES", (tmp_path / "absent",))
    result = rehearse(apm_db, rollback_plan(shipped, read_ledger(apm_db), "0029"), catalog=shipped)
    assert result.storage == "file" and result.ok


def test_json_has_the_documented_shape(apm_db, shipped):
    result = rehearse(apm_db, rollback_plan(shipped, read_ledger(apm_db), "0027", cascade=True), catalog=shipped)
    data = json.loads(json.dumps(result.to_json()))
    assert set(data) == {"format", "direction", "target", "cascade", "storage", "database_bytes", "duration_ms",
                         "ok", "loses_data", "steps", "not_run", "lines"}
    assert (data["format"], data["direction"], data["target"], data["cascade"]) == (1, "rollback", "0027", True)
    assert data["database_bytes"] == os.path.getsize(apm_db)
    first = data["steps"][0]
    assert set(first) == {"version", "description", "direction", "status", "duration_ms", "loses_data",
                          "changes", "impact", "lines", "error", "skipped"}
    column = next(i for i in data["steps"][1]["impact"] if i["kind"] == "dropped-column")
    assert column == {"kind": "dropped-column", "table": "agents", "column": "metadata", "count": 37,
                      "non_null": 100, "before": None, "after": None, "loses_data": True,
                      "text": "drops column agents.metadata holding 37 non-default values (100 non-null)"}
    change = next(c for c in data["steps"][1]["changes"] if c["kind"] == "column")
    assert set(change) == {"kind", "action", "name", "table", "before", "after", "text"}
    assert data["lines"] == result.describe()
