"""The executor: one migration, one transaction, against real SQLite files."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from conftest import write_migration
from planner.engines.sqlite import runner as executor_module
from planner.errors import (
    AlreadyApplied,
    DatabaseDirectoryMissing,
    DatabaseLocked,
    DatabaseNotFound,
    DatabaseReadOnly,
    ForeignKeyViolation,
    LedgerChanged,
    MigrationFailed,
    NotADatabase,
    NotApplied,
    TransactionTampered,
    ValidationFailed,
)
from planner.engines.sqlite.runner import (
    Executor,
    RunResult,
    StepFinished,
    StepSkipped,
    StepStarted,
    foreign_keys_off,
)
from planner.engines.sqlite.ledger import Ledger, read_ledger
from planner.loader import load_catalog
from planner.plan import apply_plan, rollback_plan


def create(version: str, table: str, **kwargs) -> dict:
    """Arguments for write_migration: a migration that creates ``table`` and drops it on rollback."""
    return dict(
        upgrade=f'conn.execute("CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT)")\n'
        f'conn.execute("INSERT INTO {table} (v) VALUES (\'{version}\')")',
        downgrade=f'conn.execute("DROP TABLE {table}")',
        **kwargs,
    )


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "data" / "app.db"


def run_all(db: Path, catalog_dir: Path, **kwargs) -> tuple[RunResult, list]:
    catalog = load_catalog(catalog_dir)
    executor = Executor(db, create=True, catalog=catalog)
    events: list = []
    result = executor.run(apply_plan(catalog, executor.applied()), events.append, **kwargs)
    return result, events


def dump(db: Path) -> list[str]:
    """Schema and data, except the log, which is meant to grow."""
    conn = sqlite3.connect(db)
    try:
        return [line for line in conn.iterdump() if "schema_migrations_log" not in line]
    finally:
        conn.close()


def names(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def history(db: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(db)
    try:
        return [(e.version, e.action, e.outcome) for e in Ledger(conn).history()]
    finally:
        conn.close()


# --------------------------------------------------------------------------
# The happy path
# --------------------------------------------------------------------------


def test_applies_a_plan_in_order_with_events_ledger_and_log(db, catalog_dir):
    write_migration(catalog_dir, "0001", "First", **create("0001", "a"))
    write_migration(catalog_dir, "0002", "Second", **create("0002", "b"))
    result, events = run_all(db, catalog_dir)

    assert [s.version for s in result.done] == ["0001", "0002"] and result.skipped == []
    assert [(type(e).__name__, e.step.version, e.index, e.total) for e in events] == [
        ("StepStarted", "0001", 1, 2), ("StepFinished", "0001", 1, 2),
        ("StepStarted", "0002", 2, 2), ("StepFinished", "0002", 2, 2),
    ]
    assert all(e.duration_ms >= 0 for e in events if isinstance(e, StepFinished))
    entries = read_ledger(db)
    assert list(entries) == ["0001", "0002"]
    assert entries["0002"].description == "Second"
    assert entries["0002"].checksum == load_catalog(catalog_dir)["0002"].checksum
    assert entries["0002"].execution_ms is not None
    assert history(db) == [("0001", "apply", "ok"), ("0002", "apply", "ok")]
    assert {"a", "b"} <= names(db)


def test_rollback_deletes_the_row_and_the_log_keeps_the_history(db, catalog_dir):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    write_migration(catalog_dir, "0002", **create("0002", "b"))
    run_all(db, catalog_dir)
    catalog = load_catalog(catalog_dir)
    executor = Executor(db, catalog=catalog)
    result = executor.run(rollback_plan(catalog, executor.applied(), "0001", cascade=True))
    assert [s.version for s in result.done] == ["0002", "0001"]
    assert read_ledger(db) == {}
    assert not {"a", "b"} & names(db)
    assert history(db)[-2:] == [("0002", "rollback", "ok"), ("0001", "rollback", "ok")]


def test_events_can_be_iterated(db, catalog_dir):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    catalog = load_catalog(catalog_dir)
    executor = Executor(db, create=True)
    kinds = [type(e) for e in executor.events(apply_plan(catalog, {}))]
    assert kinds == [StepStarted, StepFinished]


def test_an_empty_plan_touches_nothing(db, catalog_dir):
    catalog = load_catalog(catalog_dir)
    result = Executor(db, create=True).run(apply_plan(catalog, {}))
    assert result.done == [] and not db.exists()


# --------------------------------------------------------------------------
# Failures roll back exactly one step
# --------------------------------------------------------------------------


FAILS_WITH_EXECUTE = """
conn.execute("CREATE TABLE half (x)")
conn.execute("INSERT INTO a (v) VALUES ('changed by 0002')")
conn.execute("UPDATE a SET v = 'overwritten'")
conn.execute("INSERT INTO no_such_table VALUES (1)")
"""

FAILS_WITH_EXECUTESCRIPT = """
conn.executescript('''
    CREATE TABLE half (x);
    INSERT INTO a (v) VALUES ('changed by 0002');
    UPDATE a SET v = 'overwritten';
    CREATE INDEX half_x ON half (x);
    INSERT INTO no_such_table VALUES (1);
    CREATE TABLE never (y);
''')
"""


@pytest.mark.parametrize("body", [FAILS_WITH_EXECUTE, FAILS_WITH_EXECUTESCRIPT], ids=["execute", "executescript"])
def test_failure_halfway_leaves_the_database_as_before_that_step(db, catalog_dir, body):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    write_migration(catalog_dir, "0002", "Breaks halfway", upgrade=body)
    write_migration(catalog_dir, "0003", **create("0003", "c"))
    catalog = load_catalog(catalog_dir)
    executor = Executor(db, create=True, catalog=catalog)
    executor.run(apply_plan(catalog, {}, target="0001"))
    before = dump(db)

    events: list = []
    with pytest.raises(MigrationFailed) as info:
        executor.run(apply_plan(catalog, executor.applied()), events.append)

    error = info.value
    assert error.version == "0002" and error.direction == "apply"
    assert "migration 0002" in str(error) and "no such table: no_such_table" in str(error)
    assert isinstance(error.cause, sqlite3.OperationalError) and error.__cause__ is error.cause
    assert dump(db) == before
    assert list(read_ledger(db)) == ["0001"]
    assert "c" not in names(db)  # nothing after the failure ran
    assert [type(e).__name__ for e in events] == ["StepStarted", "StepFailed"]
    assert events[-1].error is error
    assert history(db)[-1] == ("0002", "apply", "failed")
    conn = sqlite3.connect(db)
    assert "no such table" in Ledger(conn).history("0002")[-1].detail
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_a_python_exception_is_wrapped_with_its_message(db, catalog_dir):
    write_migration(catalog_dir, "0001", upgrade='raise ValueError("bad data in row 7")')
    with pytest.raises(MigrationFailed, match=r"migration 0001 failed during apply: ValueError: bad data in row 7"):
        run_all(db, catalog_dir)


def test_a_migration_calling_commit_stays_atomic(db, catalog_dir):
    write_migration(
        catalog_dir,
        "0001",
        upgrade="""
        conn.execute("CREATE TABLE early (x)")
        conn.commit()
        conn.executescript("CREATE TABLE later (y); INSERT INTO later VALUES (1);")
        conn.commit()
        raise RuntimeError("after the commits")
        """,
    )
    with pytest.raises(MigrationFailed):
        run_all(db, catalog_dir)
    assert not {"early", "later"} & names(db)
    assert read_ledger(db) == {}


@pytest.mark.parametrize(
    "statement",
    ['conn.execute("COMMIT")', 'conn.execute("BEGIN")',
     'conn.executescript("CREATE TABLE x2 (a); END TRANSACTION;")', "conn.rollback()"],
)
def test_managing_the_transaction_is_refused(db, catalog_dir, statement):
    write_migration(catalog_dir, "0001", upgrade=f'conn.execute("CREATE TABLE x1 (a)")\n{statement}')
    with pytest.raises(TransactionTampered) as info:
        run_all(db, catalog_dir)
    assert info.value.version == "0001"
    assert not {"x1", "x2"} & names(db)
    assert read_ledger(db) == {}


def test_a_swallowed_refusal_still_fails_the_step(db, catalog_dir):
    write_migration(
        catalog_dir,
        "0001",
        upgrade="""
        conn.execute("CREATE TABLE x1 (a)")
        try:
            conn.execute("COMMIT")
        except Exception:
            pass
        """,
    )
    with pytest.raises(TransactionTampered):
        run_all(db, catalog_dir)
    assert "x1" not in names(db)


VALIDATORS = """
def validate_pre(conn):
    return {pre}

def validate_post(conn):
    return {post}
"""


@pytest.mark.parametrize("pre, post, check", [(False, True, "validate_pre"), (True, False, "validate_post")])
def test_validation_returning_false_aborts_the_step(db, catalog_dir, pre, post, check):
    write_migration(catalog_dir, "0001", extra=VALIDATORS.format(pre=pre, post=post), **create("0001", "a"))
    with pytest.raises(ValidationFailed) as info:
        run_all(db, catalog_dir)
    assert info.value.check == check and check in str(info.value)
    assert "a" not in names(db) and read_ledger(db) == {}


def test_validation_sees_the_migration_s_changes(db, catalog_dir):
    extra = """
def validate_pre(conn):
    return conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'a'").fetchone()[0] == 0

def validate_post(conn):
    return conn.execute("SELECT COUNT(*) FROM a").fetchone()[0] == 1
"""
    write_migration(catalog_dir, "0001", extra=extra, **create("0001", "a"))
    result, _ = run_all(db, catalog_dir)
    assert len(result.done) == 1


# --------------------------------------------------------------------------
# Foreign keys
# --------------------------------------------------------------------------

PARENT_AND_CHILD = """
conn.executescript('''
    CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT);
    CREATE TABLE agents (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        role TEXT
    );
    INSERT INTO projects VALUES (1, 'apm'), (2, 'other');
    INSERT INTO agents VALUES (10, 1, 'planner'), (11, 1, 'coder'), (12, 2, 'tester');
''')
"""

# SQLite's own procedure (lang_altertable.html): create new, copy, drop old, rename.
REBUILD_PARENT = """
    CREATE TABLE projects_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT DEFAULT 'active');
    INSERT INTO projects_new (id, name) SELECT id, name FROM projects;
    DROP TABLE projects;
    ALTER TABLE projects_new RENAME TO projects;
"""


def test_a_rebuild_of_a_referenced_table_keeps_the_child_rows(db, catalog_dir):
    write_migration(catalog_dir, "0001", "Projects and agents", upgrade=PARENT_AND_CHILD)
    write_migration(catalog_dir, "0002", "Rebuild projects", upgrade=f"conn.executescript('''{REBUILD_PARENT}''')")
    result, _ = run_all(db, catalog_dir)
    assert len(result.done) == 2
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM agents").fetchone() == (3,)
    assert [r[1] for r in conn.execute("PRAGMA table_info(projects)")] == ["id", "name", "status"]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


def test_the_same_rebuild_with_enforcement_on_would_have_cascaded(tmp_path):
    """Why the executor switches enforcement off *before* BEGIN: inside, the PRAGMA does nothing."""
    conn = sqlite3.connect(tmp_path / "raw.db", isolation_level=None)
    conn.executescript(PARENT_AND_CHILD.split("'''")[1])
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN")
    conn.execute("PRAGMA foreign_keys = OFF")  # the seed's advice: silently ignored in a transaction
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    for statement in REBUILD_PARENT.strip().split(";")[:-1]:
        conn.execute(statement)
    conn.execute("COMMIT")
    assert conn.execute("SELECT COUNT(*) FROM agents").fetchone() == (0,)  # DROP TABLE deleted every agent
    conn.close()


def test_rebuild_works_even_on_a_connection_with_enforcement_on(db, catalog_dir, monkeypatch):
    """A build or caller with foreign keys on by default: switched off per step, then restored."""
    real_connect = executor_module.connect
    seen: list[int] = []

    def connect_with_foreign_keys(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.execute("PRAGMA foreign_keys = ON")
        seen.append(conn)
        return conn

    monkeypatch.setattr(executor_module, "connect", connect_with_foreign_keys)
    write_migration(catalog_dir, "0001", upgrade=PARENT_AND_CHILD)
    write_migration(
        catalog_dir,
        "0002",
        upgrade=f"assert conn.execute('PRAGMA foreign_keys').fetchone()[0] == 0\n"
        f"conn.executescript('''{REBUILD_PARENT}''')",
    )
    states: list[int] = []
    catalog = load_catalog(catalog_dir)
    executor = Executor(db, create=True)
    executor.run(
        apply_plan(catalog, {}),
        lambda e: states.append(seen[-1].execute("PRAGMA foreign_keys").fetchone()[0])
        if isinstance(e, StepFinished) else None,
    )
    assert states == [1, 1]  # restored after each step
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM agents").fetchone() == (3,)
    conn.close()


def test_foreign_keys_off_restores_the_previous_value_even_on_failure(tmp_path):
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(RuntimeError):
        with foreign_keys_off(conn):
            assert conn.execute("PRAGMA foreign_keys").fetchone() == (0,)
            raise RuntimeError
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    conn.execute("PRAGMA foreign_keys = OFF")
    with foreign_keys_off(conn):
        pass
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (0,)
    conn.close()


def test_a_broken_foreign_key_is_found_and_rolled_back(db, catalog_dir):
    write_migration(catalog_dir, "0001", upgrade=PARENT_AND_CHILD)
    write_migration(
        catalog_dir, "0002", upgrade='conn.execute("DELETE FROM projects WHERE id = 2")\n'
        'conn.execute("CREATE TABLE unrelated (x)")'
    )
    catalog = load_catalog(catalog_dir)
    executor = Executor(db, create=True)
    executor.run(apply_plan(catalog, {}, target="0001"))
    before = dump(db)
    with pytest.raises(ForeignKeyViolation) as info:
        executor.run(apply_plan(catalog, executor.applied()))
    assert info.value.violations[0][:3] == ("agents", 12, "projects")
    assert "agents row 12 references a missing row of projects" in str(info.value)
    assert dump(db) == before


# --------------------------------------------------------------------------
# Atomic mode
# --------------------------------------------------------------------------


def test_atomic_mode_is_all_or_nothing(db, catalog_dir):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    write_migration(catalog_dir, "0002", **create("0002", "b"))
    write_migration(catalog_dir, "0003", upgrade='conn.execute("CREATE TABLE c (x)")\nraise RuntimeError("no")')
    with pytest.raises(MigrationFailed) as info:
        run_all(db, catalog_dir, atomic=True)
    assert info.value.version == "0003" and "the whole plan was rolled back" in str(info.value)
    assert read_ledger(db) == {}
    assert not {"a", "b", "c"} & names(db)
    assert history(db) == [("0003", "apply", "failed")]


def test_atomic_mode_applies_everything_and_checks_foreign_keys_after_each_step(db, catalog_dir):
    write_migration(catalog_dir, "0001", upgrade=PARENT_AND_CHILD)
    write_migration(catalog_dir, "0002", upgrade='conn.execute("DELETE FROM projects WHERE id = 2")')
    write_migration(catalog_dir, "0003", upgrade='conn.execute("INSERT INTO projects VALUES (2, \'back\')")')
    with pytest.raises(ForeignKeyViolation) as info:  # 0003 would repair it, but 0002 alone is broken
        run_all(db, catalog_dir, atomic=True)
    assert info.value.version == "0002"
    assert read_ledger(db) == {}

    (catalog_dir / "migration_0002.py").unlink()
    (catalog_dir / "migration_0003.py").unlink()
    write_migration(catalog_dir, "0002", **create("0002", "b"))
    result, events = run_all(db, catalog_dir, atomic=True)
    assert [s.version for s in result.done] == ["0001", "0002"]
    assert [type(e).__name__ for e in events] == ["StepStarted", "StepFinished"] * 2
    assert list(read_ledger(db)) == ["0001", "0002"]


# --------------------------------------------------------------------------
# Re-reading the ledger inside the lock
# --------------------------------------------------------------------------


def test_a_step_another_process_did_meanwhile_is_skipped(db, catalog_dir):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    write_migration(catalog_dir, "0002", **create("0002", "b"))
    catalog = load_catalog(catalog_dir)
    stale_plan = apply_plan(catalog, {})
    Executor(db, create=True).run(apply_plan(catalog, {}, target="0001"))  # "another process"

    events: list = []
    result = Executor(db).run(stale_plan, events.append)
    assert [s.version for s in result.skipped] == ["0001"] and [s.version for s in result.done] == ["0002"]
    skipped = [e for e in events if isinstance(e, StepSkipped)]
    assert len(skipped) == 1 and "already applied" in skipped[0].reason
    assert history(db) == [("0001", "apply", "ok"), ("0001", "apply", "skipped"), ("0002", "apply", "ok")]


def test_a_rollback_another_process_did_meanwhile_is_skipped(db, catalog_dir):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    run_all(db, catalog_dir)
    catalog = load_catalog(catalog_dir)
    stale_plan = rollback_plan(catalog, read_ledger(db), "0001")
    Executor(db).run(stale_plan)
    result = Executor(db).run(stale_plan)
    assert [s.version for s in result.skipped] == ["0001"]


def test_a_dependency_rolled_back_meanwhile_stops_the_plan(db, catalog_dir):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    write_migration(catalog_dir, "0002", **create("0002", "b"))
    catalog = load_catalog(catalog_dir)
    executor = Executor(db, create=True, catalog=catalog)
    executor.run(apply_plan(catalog, {}, target="0001"))
    stale_plan = apply_plan(catalog, executor.applied())
    executor.run(rollback_plan(catalog, executor.applied(), "0001"))
    with pytest.raises(LedgerChanged) as info:
        executor.run(stale_plan)
    assert info.value.conflicts == ("0001",) and "no longer applied" in str(info.value)
    assert "b" not in names(db)


def test_a_dependent_applied_meanwhile_stops_a_rollback(db, catalog_dir):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    write_migration(catalog_dir, "0002", **create("0002", "b"))
    catalog = load_catalog(catalog_dir)
    executor = Executor(db, create=True, catalog=catalog)
    executor.run(apply_plan(catalog, {}, target="0001"))
    stale_plan = rollback_plan(catalog, executor.applied(), "0001")
    executor.run(apply_plan(catalog, executor.applied()))
    with pytest.raises(LedgerChanged) as info:
        executor.run(stale_plan)
    assert info.value.conflicts == ("0002",)
    assert list(read_ledger(db)) == ["0001", "0002"]


def test_old_framework_spellings_count_as_applied(db, catalog_dir):
    write_migration(catalog_dir, "0027", **create("0027", "a"))
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, applied_at TIMESTAMP)")
    conn.execute("INSERT INTO schema_migrations VALUES ('27', 'Add metadata', '2025-10-17 00:00:00')")
    conn.commit()
    conn.close()
    catalog = load_catalog(catalog_dir)
    result = Executor(db).run(apply_plan(catalog, {}))  # a plan that wrongly thinks 0027 is pending
    assert [s.version for s in result.skipped] == ["0027"]
    assert list(read_ledger(db)) == ["27"]


# --------------------------------------------------------------------------
# Marks
# --------------------------------------------------------------------------


def test_marks_write_only_the_ledger_and_the_log(db, catalog_dir):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    write_migration(catalog_dir, "0002", **create("0002", "b"))
    catalog = load_catalog(catalog_dir)
    executor = Executor(db, create=True, catalog=catalog)
    executor.mark_applied(catalog["0001"])
    assert list(read_ledger(db)) == ["0001"] and "a" not in names(db)
    with pytest.raises(AlreadyApplied):
        executor.mark_applied(catalog["0001"])
    executor.mark_applied(catalog["0002"])
    with pytest.raises(LedgerChanged):  # 0002 depends on it
        executor.mark_rolled_back(catalog["0001"])
    executor.mark_rolled_back(catalog["0002"])
    executor.mark_rolled_back(catalog["0001"])
    with pytest.raises(NotApplied):
        executor.mark_rolled_back(catalog["0001"])
    assert read_ledger(db) == {}
    assert history(db) == [
        ("0001", "mark-applied", "ok"), ("0002", "mark-applied", "ok"),
        ("0002", "mark-rolled-back", "ok"), ("0001", "mark-rolled-back", "ok"),
    ]


def test_mark_applied_rechecks_dependencies(db, catalog_dir):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    write_migration(catalog_dir, "0002", **create("0002", "b"))
    catalog = load_catalog(catalog_dir)
    with pytest.raises(LedgerChanged):
        Executor(db, create=True).mark_applied(catalog["0002"])
    assert read_ledger(db) == {}


# --------------------------------------------------------------------------
# The database file itself
# --------------------------------------------------------------------------


def test_locked_past_the_timeout_changes_nothing(db, catalog_dir):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    catalog = load_catalog(catalog_dir)
    db.parent.mkdir()
    sqlite3.connect(db).execute("CREATE TABLE existing (x)").connection.close()
    before = dump(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    events: list = []
    try:
        with pytest.raises(DatabaseLocked) as info:
            Executor(db, busy_timeout=0.2).run(apply_plan(catalog, {}), events.append)
        assert info.value.timeout == 0.2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [type(e).__name__ for e in events] == ["StepStarted", "StepFailed"]
    assert dump(db) == before


def test_each_file_problem_has_its_own_error_and_changes_nothing(tmp_path, catalog_dir):
    write_migration(catalog_dir, "0001", **create("0001", "a"))
    plan = apply_plan(load_catalog(catalog_dir), {})

    with pytest.raises(DatabaseNotFound):
        Executor(tmp_path / "missing.db").run(plan)
    with pytest.raises(DatabaseDirectoryMissing):
        Executor(tmp_path / "nowhere" / "app.db").run(plan)
    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n" * 100)
    with pytest.raises(NotADatabase):
        Executor(text, create=True).run(plan)
    assert text.read_text() == "just some notes\n" * 100

    readonly = tmp_path / "ro.db"
    sqlite3.connect(readonly).execute("CREATE TABLE t (x)").connection.close()
    content = readonly.read_bytes()
    os.chmod(readonly, 0o444)
    try:
        with pytest.raises(DatabaseReadOnly):
            Executor(readonly).run(plan)
    finally:
        os.chmod(readonly, 0o644)
    assert readonly.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["migrations", "notes.txt", "ro.db"]


def test_applied_of_a_database_not_created_yet(tmp_path):
    assert Executor(tmp_path / "new.db", create=True).applied() == {}
    assert not (tmp_path / "new.db").exists()
    with pytest.raises(DatabaseNotFound):
        Executor(tmp_path / "new.db").applied()


def test_a_migration_s_row_factory_does_not_leak_into_the_ledger(db, catalog_dir):
    write_migration(catalog_dir, "0001", upgrade="import sqlite3\nconn.row_factory = sqlite3.Row")
    write_migration(catalog_dir, "0002", upgrade="conn.text_factory = bytes")
    result, _ = run_all(db, catalog_dir)
    assert len(result.done) == 2
