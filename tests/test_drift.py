"""Drift: real SQLite files changed by hand, against their applied migrations replayed in memory."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from planner.fleet.members import discover
from planner.fleet.status import fleet_status
from planner.engines.sqlite import SQLiteEngine
from planner.fleet.status import DriftChecker
from tests.conftest import run_apm, write_migration
from tests.test_fleet import PATTERN, load, migrate_to, project_db, tree_digest


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """projects (a default), its unique index, tasks with a foreign key and a trigger, and a view."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    write_migration(folder, "0001", "Projects", upgrade="conn.execute(\"CREATE TABLE projects (id INTEGER PRIMARY "
                    "KEY, name TEXT NOT NULL, status TEXT DEFAULT 'active')\")",
                    downgrade="conn.execute('DROP TABLE projects')")
    write_migration(folder, "0002", "Unique names", depends_on=("0001",),
                    upgrade="conn.execute('CREATE UNIQUE INDEX projects_by_name ON projects (name)')",
                    downgrade="conn.execute('DROP INDEX projects_by_name')")
    write_migration(folder, "0003", "Tasks", depends_on=("0001",), upgrade="""
        conn.execute('CREATE TABLE tasks (id INTEGER PRIMARY KEY, project_id INTEGER REFERENCES projects (id), '
                     'title TEXT, touched TEXT)')
        conn.execute("INSERT INTO tasks (title) SELECT name FROM projects")  # moves data: replays on empty tables
        conn.execute('CREATE TRIGGER tasks_touch AFTER UPDATE ON tasks BEGIN '
                     "UPDATE tasks SET touched = 'now' WHERE id = NEW.id; END")
        conn.execute('CREATE VIEW open_tasks AS SELECT id, title FROM tasks')
        """, downgrade="conn.execute('DROP VIEW open_tasks'); conn.execute('DROP TABLE tasks')")
    return folder


@pytest.fixture
def db(tmp_path: Path, catalog: Path) -> Path:
    path = project_db(tmp_path, "one")
    migrate_to(path, catalog)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO projects (name) VALUES ('kept')")
    return path


def lines(catalog: Path, path: Path) -> list[str]:
    from planner.engines.sqlite.ledger import read_ledger

    return [d.line for d in SQLiteEngine(path).drift(load(catalog), read_ledger(path), {})]


def by_hand(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)


def test_an_untouched_database_has_no_drift(catalog: Path, db: Path) -> None:
    assert lines(catalog, db) == []


def test_a_column_added_by_hand(catalog: Path, db: Path) -> None:
    by_hand(db, "ALTER TABLE projects ADD COLUMN archived_at TEXT")
    assert lines(catalog, db) == ["table projects: column archived_at is in the database, not in its migrations"]


def test_an_index_dropped_by_hand(catalog: Path, db: Path) -> None:
    by_hand(db, "DROP INDEX projects_by_name")
    assert lines(catalog, db) == ["index projects_by_name (0002) is missing from the database"]


def test_a_default_changed_by_hand(catalog: Path, db: Path) -> None:
    by_hand(db, "PRAGMA foreign_keys = OFF",
            "CREATE TABLE new_projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT DEFAULT 'done')",
            "INSERT INTO new_projects SELECT * FROM projects", "DROP TABLE projects",
            "ALTER TABLE new_projects RENAME TO projects",
            "CREATE UNIQUE INDEX projects_by_name ON projects (name)")
    assert lines(catalog, db) == ["table projects: column status is TEXT DEFAULT 'done' in the database, "
                                  "TEXT DEFAULT 'active' in its migrations (0001)"]


def test_an_extra_table_and_a_removed_trigger(catalog: Path, db: Path) -> None:
    by_hand(db, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", "DROP TRIGGER tasks_touch")
    assert lines(catalog, db) == ["table notes is in the database, not in its migrations",
                                  "trigger tasks_touch (0003) is missing from the database"]


def test_a_lost_foreign_key_and_a_changed_view(catalog: Path, db: Path) -> None:
    by_hand(db, "PRAGMA foreign_keys = OFF", "DROP VIEW open_tasks",
            "CREATE TABLE t2 (id INTEGER PRIMARY KEY, project_id INTEGER, title TEXT, touched TEXT)",
            "DROP TABLE tasks", "ALTER TABLE t2 RENAME TO tasks",
            "CREATE TRIGGER tasks_touch AFTER UPDATE ON tasks BEGIN "
            "UPDATE tasks SET touched = 'now' WHERE id = NEW.id; END",
            "CREATE VIEW open_tasks AS SELECT id FROM tasks")
    found = lines(catalog, db)
    assert found[0] == ("table tasks: foreign key tasks(project_id) → projects(id) (0003) is missing "
                        "from the database")
    assert found[1].startswith("view open_tasks differs from its migrations (0003): the database has CREATE VIEW")
    assert len(found) == 2


def test_pending_migrations_are_not_drift(tmp_path: Path, catalog: Path) -> None:
    path = project_db(tmp_path, "behind")
    migrate_to(path, catalog, target="0001")
    assert lines(catalog, path) == []


def test_apm_migrate_drift_exit_codes_json_and_nothing_written(tmp_path: Path, catalog: Path, db: Path) -> None:
    clean = run_apm("--migrations-dir", str(catalog), "migrate", "drift", "--db", str(db))
    assert clean.returncode == 0, clean.stderr
    assert "the schema is what its 3 applied migration(s) make" in clean.stdout
    by_hand(db, "ALTER TABLE projects ADD COLUMN archived_at TEXT")
    before = tree_digest(tmp_path / "projects")
    result = run_apm("--migrations-dir", str(catalog), "migrate", "drift", "--db", str(db), "--json")
    assert result.returncode == 10, result.stderr
    assert json.loads(result.stdout) == {"differences": [{
        "object": "column projects.archived_at", "kind": "extra",
        "detail": "table projects: column archived_at is in the database, not in its migrations"}]}
    assert tree_digest(tmp_path / "projects") == before


def test_a_fleet_costs_one_replay_per_distinct_state(tmp_path: Path, catalog: Path) -> None:
    paths = [project_db(tmp_path, f"p{i}") for i in range(6)]
    for path in paths[:4]:
        migrate_to(path, catalog)
    for path in paths[4:]:
        migrate_to(path, catalog, target="0002")
    by_hand(paths[1], "DROP INDEX projects_by_name")
    checker = DriftChecker(load(catalog))
    result = fleet_status(discover(globs=[PATTERN], cwd=tmp_path), load(catalog), drift=checker.differences)
    assert [s.state for s in result.members] == ["up to date", "drifted", "up to date", "up to date", "behind",
                                                 "behind"]
    assert len(checker.replays) == 2


def test_fleet_status_drift_reports_and_exits_10(tmp_path: Path, catalog: Path) -> None:
    for name in ("a", "b"):
        migrate_to(project_db(tmp_path, name), catalog)
    by_hand(project_db(tmp_path, "b"), "CREATE TABLE notes (id INTEGER)")
    result = run_apm("--migrations-dir", str(catalog), "fleet", "status", "--glob", PATTERN, "--drift", "--json",
                     cwd=tmp_path)
    assert result.returncode == 10, result.stderr
    document = json.loads(result.stdout)
    assert [row["state"] for row in document["databases"]] == ["up_to_date", "drifted"]
    assert document["databases"][1]["differences"] == [
        {"object": "table notes", "kind": "extra", "detail": "table notes is in the database, not in its migrations"}]
    assert document["summary"] == {"up_to_date": 1, "drifted": 1}
    text = run_apm("--migrations-dir", str(catalog), "fleet", "status", "--glob", PATTERN, "--drift", cwd=tmp_path)
    assert "projects/b/.aipm/data/aipm.db: table notes is in the database, not in its migrations" in text.stdout
    assert text.stdout.strip().splitlines()[-1] == "1 up to date, 1 drifted"


def test_fleet_status_drift_says_when_an_ahead_database_was_not_compared(tmp_path: Path, catalog: Path) -> None:
    """A database holding a version the catalog lacks cannot be replayed: its row says drift was not checked,
    never a silent ``differences: null`` that reads as compared and clean (a hand-made column stays unknown)."""
    path = project_db(tmp_path, "a")
    migrate_to(path, catalog)
    by_hand(path, "ALTER TABLE projects ADD COLUMN extra TEXT",
            "INSERT INTO schema_migrations (version, description, applied_at, checksum, execution_ms) "
            "VALUES ('0099', 'From another branch', CURRENT_TIMESTAMP, 'x', 0)")
    result = run_apm("--migrations-dir", str(catalog), "fleet", "status", "--glob", PATTERN, "--drift", "--json",
                     cwd=tmp_path)
    assert result.returncode == 11, result.stderr
    row = json.loads(result.stdout)["databases"][0]
    assert row["state"] == "ahead" and "differences" not in row
    assert row["error"] == ("applied but not in the catalog: 0099; drift not checked: the versions the catalog "
                            "lacks cannot be replayed without their files")
    text = run_apm("--migrations-dir", str(catalog), "fleet", "status", "--glob", PATTERN, "--drift", cwd=tmp_path)
    assert "drift not checked" in text.stdout
    plain = run_apm("--migrations-dir", str(catalog), "fleet", "status", "--glob", PATTERN, "--json", cwd=tmp_path)
    assert json.loads(plain.stdout)["databases"][0]["error"] == "applied but not in the catalog: 0099"


def test_a_step_outside_a_transaction_replays_and_a_failed_replay_is_not_healthy(tmp_path: Path,
                                                                                   catalog: Path) -> None:
    write_migration(catalog, "0004", "Vacuum", depends_on=("0003",), extra="transactional = False\n",
                    upgrade="conn.execute('VACUUM')")
    clean, moved = project_db(tmp_path, "clean"), project_db(tmp_path, "moved")
    migrate_to(clean, catalog)
    assert lines(catalog, clean) == []  # the VACUUM replays outside the replay's transaction
    single = run_apm("--migrations-dir", str(catalog), "migrate", "drift", "--db", str(clean), cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    write_migration(catalog, "0005", "Needs a project", depends_on=("0004",), upgrade=(
        "if conn.execute('SELECT count(*) FROM projects').fetchone()[0] == 0:\n"
        "    raise RuntimeError('no project to move')"))
    migrate_to(moved, catalog, target="0004")
    by_hand(moved, "INSERT INTO projects (name) VALUES ('kept')")
    migrate_to(moved, catalog)  # it ran here; on the replay's empty tables it fails
    result = run_apm("--migrations-dir", str(catalog), "fleet", "status", "--glob", PATTERN, "--drift", "--json",
                     cwd=tmp_path)
    document = json.loads(result.stdout)
    assert [row["state"] for row in document["databases"]] == ["behind", "drift_unchecked"]
    assert "drift not checked" in document["databases"][1]["error"]
    assert document["summary"] == {"behind": 1, "drift_unchecked": 1}
    assert result.returncode == 11


# --------------------------------------------------------------------------
# PostgreSQL: what a member's drift compares, and the same words on both engines
# --------------------------------------------------------------------------


@pytest.fixture
def portable(tmp_path: Path) -> Path:
    """SQL both engines run: projects, its unique index, tasks with a foreign key."""
    folder = tmp_path / "portable"
    folder.mkdir()
    write_migration(folder, "0001", "Projects", upgrade="conn.execute(\"CREATE TABLE projects (id INTEGER PRIMARY "
                    "KEY, name TEXT NOT NULL)\")", downgrade="conn.execute('DROP TABLE projects')")
    write_migration(folder, "0002", "Unique names", depends_on=("0001",),
                    upgrade="conn.execute('CREATE UNIQUE INDEX projects_by_name ON projects (name)')",
                    downgrade="conn.execute('DROP INDEX projects_by_name')")
    write_migration(folder, "0003", "Tasks", depends_on=("0001",), upgrade="conn.execute('CREATE TABLE tasks (id "
                    "INTEGER PRIMARY KEY, project_id INTEGER REFERENCES projects (id), title TEXT)')",
                    downgrade="conn.execute('DROP TABLE tasks')")
    return folder


def pg_migrate(url: str, folder: Path) -> None:
    from planner.fleet.members import member
    from planner.plan import apply_plan

    catalog = load(folder)
    member(url).engine(busy_timeout=30).runner(catalog=catalog, create=True).migrate(
        lambda ledger: apply_plan(catalog, ledger))


def pg_lines(url: str, folder: Path) -> list[str]:
    from planner.fleet.members import member

    found = member(url)
    applied = found.engine(busy_timeout=30).applied()
    return [d.line for d in DriftChecker(load(folder)).of(found, applied)]


def pg_by_hand(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url.split("#")[0], autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_a_plain_postgresql_database_is_not_drifted_by_its_tenants_schemas(pg_url: str, tmp_path: Path,
                                                                              portable: Path) -> None:
    """Tryout finding 12: the tenants' schemas, tables and ledgers are not the plain database's migrations'."""
    for where in (pg_url, f"{pg_url}#tenant_a", f"{pg_url}#tenant_b"):
        pg_migrate(where, portable)
    pg_by_hand(pg_url, "ALTER TABLE tenant_a.projects ADD COLUMN archived_at text",
               "CREATE TABLE tenant_b.notes (id integer)")
    assert pg_lines(pg_url, portable) == []
    single = run_apm("--migrations-dir", str(portable), "migrate", "drift", "--db", pg_url, cwd=tmp_path)
    assert single.returncode == 0, single.stdout + single.stderr
    assert "the schema is what its 3 applied migration(s) make" in single.stdout
    # Each tenant is compared on its own schema only, its own ledger left out too.
    assert pg_lines(f"{pg_url}#tenant_a", portable) == [
        "table tenant_a.projects: column archived_at is in the database, not in its migrations"]
    assert pg_lines(f"{pg_url}#tenant_b", portable) == ["table tenant_b.notes is in the database, not in its "
                                                        "migrations"]
    # A ledger table in a schema no migration made is not the plain database's either; its own changes still are.
    pg_by_hand(pg_url, "CREATE SCHEMA archive", "CREATE TABLE archive.schema_migrations (version text)",
               "CREATE TABLE public.schema_migrations_log_copy (id integer)")
    assert pg_lines(pg_url, portable) == ["table schema_migrations_log_copy is in the database, not in its "
                                          "migrations"]


def test_the_same_hand_change_reads_the_same_on_sqlite_and_postgresql(pg_url: str, tmp_path: Path,
                                                                       portable: Path) -> None:
    """Tryout finding 20: one wording for drift whatever the engine."""
    path = project_db(tmp_path, "same")
    migrate_to(path, portable)
    pg_migrate(pg_url, portable)
    change = ("ALTER TABLE projects ADD COLUMN archived_at TEXT", "ALTER TABLE tasks DROP COLUMN title",
              "DROP INDEX projects_by_name", "CREATE TABLE notes (id INTEGER)")
    by_hand(path, *change)
    pg_by_hand(pg_url, *change)
    expected = ["index projects_by_name (0002) is missing from the database",
                "table notes is in the database, not in its migrations",
                "table projects: column archived_at is in the database, not in its migrations",
                "table tasks: column title (0003) is missing from the database"]
    assert sorted(lines(portable, path)) == expected
    assert sorted(pg_lines(pg_url, portable)) == expected


def test_a_lost_key_and_a_changed_index_read_the_same_on_sqlite_and_postgresql(pg_url: str, tmp_path: Path,
                                                                                portable: Path) -> None:
    """One schema model, one wording: a foreign key dropped by hand and an index made again on other columns
    are said in SQLite's words on PostgreSQL too (it said ``REFERENCES`` and ``is ... in the database``)."""
    path = project_db(tmp_path, "keys")
    migrate_to(path, portable)
    pg_migrate(pg_url, portable)
    by_hand(path, "CREATE TABLE t2 (id INTEGER PRIMARY KEY, project_id INTEGER, title TEXT)", "DROP TABLE tasks",
            "ALTER TABLE t2 RENAME TO tasks", "DROP INDEX projects_by_name",
            "CREATE UNIQUE INDEX projects_by_name ON projects (name, id)")
    pg_by_hand(pg_url, "ALTER TABLE tasks DROP CONSTRAINT tasks_project_id_fkey", "DROP INDEX projects_by_name",
               "CREATE UNIQUE INDEX projects_by_name ON projects (name, id)")
    lost = "table tasks: foreign key tasks(project_id) → projects(id) (0003) is missing from the database"
    changed = "index projects_by_name differs from its migrations (0002): the database has CREATE UNIQUE INDEX"
    for found in (lines(portable, path), pg_lines(pg_url, portable)):
        assert len(found) == 2, found
        assert found[0] == lost
        assert found[1].startswith(changed) and found[1].endswith("(name)"), found  # both sides said
        assert "(name, id); its migrations make CREATE UNIQUE INDEX projects_by_name ON " in found[1], found


def test_the_library_exports_every_name_its_docs_give_drift_included() -> None:
    """``planner.fleet`` is what APM calls without the CLI: each public name resolves (imported on first use),
    ``DriftChecker`` among them, and an unknown name is an AttributeError, not an import of anything."""
    import planner.fleet as fleet

    assert "DriftChecker" in fleet.__all__ and fleet.DriftChecker is DriftChecker
    for name in fleet.__all__:
        assert getattr(fleet, name) is not None, name
    with pytest.raises(AttributeError):
        fleet.no_such_name  # noqa: B018
