"""Drift says each difference in one line, both sides where both exist, crediting the migration that made (or
last changed) that very object or column (issue 24, tryout 7's D1-D7 and P5): real SQLite files and the suite's
PostgreSQL server, changed by hand after a catalog whose later migration alters an earlier table."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from planner.engines.sqlite import SQLiteEngine
from planner.engines.sqlite.ledger import read_ledger
from planner.fleet.members import member
from planner.fleet.status import DriftChecker
from planner.plan import apply_plan
from tests.conftest import run_apm, write_migration
from tests.test_fleet import PATTERN, load, migrate_to, project_db

PROJECTS = ("CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL COLLATE NOCASE, "
            "status TEXT DEFAULT 'active' CHECK (status IN ('active', 'done')), prio INTEGER DEFAULT 0)")
TASKS = ("CREATE TABLE tasks (id INTEGER PRIMARY KEY, project_id INTEGER REFERENCES projects (id) ON DELETE CASCADE, "
         "title TEXT, UNIQUE (project_id, title), CONSTRAINT title_set CHECK (title <> ''))")


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """0001 makes the tables (keys, CHECKs, a COLLATE, defaults), 0002 an index, 0005 only adds a column."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    write_migration(folder, "0001", "Tables", upgrade=f"conn.execute({PROJECTS!r}); conn.execute({TASKS!r}); "
                    "conn.execute('CREATE TABLE kv (k INTEGER, v INTEGER GENERATED ALWAYS AS (k + 1) VIRTUAL) STRICT')")
    write_migration(folder, "0002", "Index", depends_on=("0001",),
                    upgrade="conn.execute('CREATE INDEX tasks_open ON tasks (project_id) WHERE title IS NOT NULL')")
    write_migration(folder, "0005", "Token", depends_on=("0002",),
                    upgrade="conn.execute('ALTER TABLE projects ADD COLUMN token TEXT')")
    return folder


@pytest.fixture
def db(tmp_path: Path, catalog: Path) -> Path:
    path = project_db(tmp_path, "one")
    migrate_to(path, catalog)
    return path


def drift(catalog: Path, path: Path) -> list[tuple[str, str, str]]:
    return [(d.object, d.kind, d.line) for d in SQLiteEngine(path).drift(load(catalog), read_ledger(path), {})]


def lines(catalog: Path, path: Path) -> list[str]:
    return [line for _, _, line in drift(catalog, path)]


def rebuild(path: Path, table: str, sql: str, *after: str) -> None:
    """``table`` (empty) made again by hand from ``sql`` (a CREATE TABLE of ``new_<table>``)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(sql)
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE new_{table} RENAME TO {table}")
        for statement in after:
            conn.execute(statement)
    conn.close()


def test_a_column_is_credited_to_the_migration_that_made_it_not_the_last_that_altered_its_table(
        catalog: Path, db: Path) -> None:
    """D1: ``name`` came from 0001; 0005 only added ``token`` (the line said 0005, irreversible and unrelated)."""
    rebuild(db, "projects", "CREATE TABLE new_projects (id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE, "
            "status TEXT DEFAULT 'active' CHECK (status IN ('active', 'done')), prio INTEGER DEFAULT 0, token TEXT)")
    assert lines(catalog, db) == ["table projects: column name is TEXT COLLATE NOCASE in the database, "
                                  "TEXT COLLATE NOCASE NOT NULL in its migrations (0001)"]
    rebuild(db, "projects", "CREATE TABLE new_projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL COLLATE NOCASE, "
            "status TEXT DEFAULT 'active', prio INTEGER DEFAULT 0)")
    assert lines(catalog, db) == [  # the column 0005 made is 0005's; the CHECK 0001 made is 0001's
        "table projects: column token (0005) is missing from the database",
        "table projects: check constraint on projects(status) CHECK (status IN ('active', 'done')) (0001) is missing "
        "from the database"]


def test_a_changed_collate_and_check_are_said_with_both_sides(catalog: Path, db: Path) -> None:
    """D4: it was one ``its SQL differs beyond columns and keys (CHECK or COLLATE clauses?)`` line."""
    rebuild(db, "projects", "CREATE TABLE new_projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL COLLATE RTRIM, "
            "status TEXT DEFAULT 'active' CHECK (status IN ('active', 'done', 'gone')), prio INTEGER DEFAULT 0, "
            "token TEXT)")
    assert drift(catalog, db) == [
        ("column projects.name", "changed", "table projects: column name is TEXT COLLATE RTRIM NOT NULL in the "
         "database, TEXT COLLATE NOCASE NOT NULL in its migrations (0001)"),
        ("check constraint on projects(status)", "changed", "table projects: check constraint on projects(status) is "
         "CHECK (status IN ('active', 'done', 'gone')) in the database, CHECK (status IN ('active', 'done')) in its "
         "migrations (0001)")]


def test_the_same_table_spelled_otherwise_is_no_drift(catalog: Path, db: Path) -> None:
    """D7: ``DEFAULT (0)`` for ``DEFAULT 0`` (another tool's spelling), quoting, case, spacing and an explicit
    ``COLLATE BINARY`` are the same table; an untouched database has no drift either."""
    assert lines(catalog, db) == []
    rebuild(db, "projects", 'CREATE TABLE new_projects ("id" integer primary key, [name] text not null collate '
            "nocase, status TEXT DEFAULT ('active') CHECK(status in ('active','done')), prio INTEGER DEFAULT (0), "
            "token TEXT COLLATE BINARY)")
    assert lines(catalog, db) == []
    rebuild(db, "projects", "CREATE TABLE new_projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL COLLATE NOCASE, "
            "status TEXT DEFAULT 'active' CHECK (status IN ('Active', 'done')), prio INTEGER DEFAULT (1), token TEXT)")
    assert lines(catalog, db) == [  # a string's case is its meaning, and 1 is not 0
        "table projects: column prio is INTEGER DEFAULT 1 in the database, INTEGER DEFAULT 0 in its migrations (0001)",
        "table projects: check constraint on projects(status) is CHECK (status IN ('Active', 'done')) in the "
        "database, CHECK (status IN ('active', 'done')) in its migrations (0001)"]


def test_a_changed_key_is_one_changed_line_named_by_its_columns(catalog: Path, db: Path) -> None:
    """D3: a foreign key's action or a CHECK changed was a ``missing`` and an ``extra`` line, the JSON object a
    bare ``table tasks``; an index changed showed the database's SQL alone."""
    rebuild(db, "tasks", "CREATE TABLE new_tasks (id INTEGER PRIMARY KEY, project_id INTEGER REFERENCES projects (id) "
            "ON DELETE SET NULL, title TEXT, CONSTRAINT title_set CHECK (length(title) > 0))",
            "CREATE INDEX tasks_open ON tasks (project_id) WHERE title IS NULL")
    assert sorted(drift(catalog, db)) == sorted([
        ("unique constraint tasks(project_id, title)", "missing",
         "table tasks: unique constraint tasks(project_id, title) (0001) is missing from the database"),
        ("foreign key tasks(project_id) → projects(id)", "changed",
         "table tasks: foreign key tasks(project_id) → projects(id) is ON DELETE SET NULL in the database, "
         "ON DELETE CASCADE in its migrations (0001)"),
        ("check constraint title_set", "changed", "table tasks: check constraint title_set is CHECK (length(title) "
         "> 0) in the database, CHECK (title <> '') in its migrations (0001)"),
        ("index tasks_open", "changed", "index tasks_open differs from its migrations (0002): the database has "
         "CREATE INDEX tasks_open ON tasks (project_id) WHERE title IS NULL; its migrations make CREATE INDEX "
         "tasks_open ON tasks (project_id) WHERE title IS NOT NULL")])


def test_a_foreign_key_referencing_other_columns_says_them() -> None:
    """A paired foreign key whose referenced columns (or MATCH) changed says them, not only its actions (which
    here are the same on both sides and would read ``is X in the database, X in its migrations``)."""
    from planner.schema import Column, ForeignKey, Replay, Schema, Table, compare

    columns = (Column("id", "INTEGER", False, None, 1), Column("project_id", "INTEGER", False, None, 0))
    made = ForeignKey(("project_id",), "projects", ("id",), on_delete="CASCADE")
    live = ForeignKey(("project_id",), "projects", ("code",), on_delete="CASCADE", match="FULL")
    expected = Replay(Schema({"tasks": Table("tasks", "", columns, foreign_keys=frozenset({made}))}),
                      {("key", "tasks: foreign key (project_id) → projects"): "0003"})
    found = compare(expected, Schema({"tasks": Table("tasks", "", columns, foreign_keys=frozenset({live}))}))
    assert [(d.object, d.kind, d.line) for d in found] == [(
        "foreign key tasks(project_id) → projects(id)", "changed", "table tasks: foreign key tasks(project_id) → "
        "projects(id) is → projects(code) ON DELETE CASCADE MATCH FULL in the database, → projects(id) ON DELETE "
        "CASCADE in its migrations (0003)")]


def test_what_no_part_of_the_model_says_is_shown_from_both_sides(catalog: Path, db: Path) -> None:
    """The rest of a table's SQL, by part: STRICT dropped (the table's migration named, as what follows the column
    list is tracked), a generated column's expression changed (none named: any rebuild of the table may have
    made it)."""
    rebuild(db, "kv", "CREATE TABLE new_kv (k INTEGER, v INTEGER GENERATED ALWAYS AS (k + 1) VIRTUAL)")
    assert lines(catalog, db) == ["table kv differs from its migrations (0001): the database lacks STRICT, which its "
                                  "migrations make"]
    rebuild(db, "kv", "CREATE TABLE new_kv (k INTEGER, v INTEGER GENERATED ALWAYS AS (k + 2) VIRTUAL) STRICT")
    assert lines(catalog, db) == ["table kv differs from its migrations: the database has v INTEGER GENERATED ALWAYS "
                                  "AS (k + 2) VIRTUAL where its migrations make v INTEGER GENERATED ALWAYS AS (k + 1) "
                                  "VIRTUAL"]


def test_a_failed_replay_is_said_once_as_the_scratch_replay_failing(tmp_path: Path, catalog: Path) -> None:
    """D5: the note said ``drift of X cannot be checked: ...; the whole plan was rolled back; nothing was
    changed``, as if the user's database had been rolled back."""
    write_migration(catalog, "0006", "Needs a project", depends_on=("0005",), upgrade=(
        "if conn.execute('SELECT count(*) FROM projects').fetchone()[0] == 0:\n"
        "    raise RuntimeError('no project to move')"))
    path = project_db(tmp_path, "moved")
    migrate_to(path, catalog, target="0005")
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO projects (name) VALUES ('kept')")
    conn.close()
    migrate_to(path, catalog)
    cause = ("the replay of its applied migrations in a scratch database failed: migration 0006 failed during "
             "apply: RuntimeError: no project to move")
    fleet = run_apm("--migrations-dir", str(catalog), "fleet", "status", "--glob", PATTERN, "--drift", "--json",
                    cwd=tmp_path)
    assert fleet.returncode == 11, fleet.stderr
    assert json.loads(fleet.stdout)["databases"][0]["error"] == f"drift not checked: {cause}"
    single = run_apm("--migrations-dir", str(catalog), "migrate", "drift", "--db", str(path), cwd=tmp_path)
    assert single.returncode == 4, single.stderr
    error = single.stderr.strip()
    assert cause in error and "rolled back" not in error and error.count("nothing was changed") == 1, error
    assert len(single.stderr.strip().splitlines()) == 1


@pytest.mark.postgres
def test_a_postgresql_replays_failure_is_said_once_as_the_scratch_replay_failing(pg_url: str, tmp_path: Path,
                                                                               pg_catalog: Path) -> None:
    """D5 on PostgreSQL: its drift said ``replaying the applied migrations failed: ...; its changes were rolled
    back``, the runner's words about the scratch database, read as if the user's database had been touched."""
    import psycopg

    write_migration(pg_catalog, "0006", "Needs a project", depends_on=("0005",), upgrade=(
        "if conn.execute('SELECT count(*) FROM projects').fetchone()[0] == 0:\n"
        "    raise RuntimeError('no project to move')"))
    catalog = load(pg_catalog)
    found = member(pg_url)
    runner = found.engine(busy_timeout=30).runner(catalog=catalog, create=True)
    runner.migrate(lambda ledger: apply_plan(catalog, ledger, target="0005"))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO projects (id, name) VALUES (1, 'kept')")
    found.engine(busy_timeout=30).runner(catalog=catalog).migrate(lambda ledger: apply_plan(catalog, ledger))
    cause = ("the replay of its applied migrations in a scratch database failed: migration 0006 failed during "
             "apply: RuntimeError: no project to move")
    single = run_apm("--migrations-dir", str(pg_catalog), "migrate", "drift", "--db", pg_url, cwd=tmp_path)
    assert single.returncode == 4, single.stderr
    error = single.stderr.strip()
    assert cause in error and "rolled back" not in error and error.count("nothing was changed") == 1, error
    assert len(error.splitlines()) == 1


# --------------------------------------------------------------------------
# PostgreSQL: the same words, and sequences, routines and a table's kind compared
# --------------------------------------------------------------------------

PG = {
    "0001": ["CREATE TABLE projects (id integer PRIMARY KEY, name text COLLATE \"C\" NOT NULL UNIQUE, "
             "status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'done')))",
             "CREATE TABLE tasks (id integer PRIMARY KEY, project_id integer REFERENCES projects (id) "
             "ON DELETE CASCADE, title text)",
             "CREATE SEQUENCE ticket_seq",
             "CREATE FUNCTION add_one(i integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT i + 1'",
             "CREATE FUNCTION tasks_audit_fn() RETURNS trigger LANGUAGE plpgsql AS "
             "'BEGIN NEW.title := coalesce(NEW.title, ''''); RETURN NEW; END'",
             "CREATE TRIGGER tasks_audit BEFORE INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION tasks_audit_fn()",
             "CREATE VIEW open_tasks AS SELECT id, title FROM tasks",
             "CREATE TABLE moods (id integer)"],
    "0005": ["ALTER TABLE projects ADD COLUMN token text"],
}


@pytest.fixture
def pg_catalog(tmp_path: Path) -> Path:
    folder = tmp_path / "pg_migrations"
    folder.mkdir()
    previous: tuple[str, ...] = ()
    for version, statements in PG.items():
        write_migration(folder, version, f"Step {version}", depends_on=previous,
                        upgrade="; ".join(f"conn.execute({s!r})" for s in statements))
        previous = (version,)
    return folder


@pytest.mark.postgres
def test_postgresql_drift_says_each_difference_in_words(pg_url: str, tmp_path: Path, pg_catalog: Path) -> None:
    """D1 (collation, UNIQUE and CHECK credited to 0005), D2 (a body said as ``trigger <md5>``), D3 (a foreign
    key's action and a CHECK as missing + extra, the table named twice, a view as a bare SELECT), P5 (sequence
    and routine attributes not compared, UNLOGGED said in SQLite's words) and D6 (another schema of a plain
    database is not its drift, as both pages now say)."""
    import psycopg

    catalog = load(pg_catalog)
    found = member(pg_url)
    found.engine(busy_timeout=30).runner(catalog=catalog, create=True).migrate(
        lambda ledger: apply_plan(catalog, ledger))
    checker = DriftChecker(catalog)
    assert checker.of(found, found.engine(busy_timeout=30).applied()) == []
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in (
                'ALTER TABLE projects ALTER COLUMN name TYPE text COLLATE "POSIX"',
                "ALTER TABLE projects DROP CONSTRAINT projects_name_key",
                "ALTER TABLE projects DROP CONSTRAINT projects_status_check",
                "ALTER TABLE projects ADD CONSTRAINT projects_status_check CHECK (status <> '')",
                "ALTER TABLE tasks DROP CONSTRAINT tasks_project_id_fkey",
                "ALTER TABLE tasks ADD FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE SET NULL",
                "CREATE OR REPLACE FUNCTION tasks_audit_fn() RETURNS trigger LANGUAGE plpgsql AS "
                "'BEGIN RETURN NEW; END'",
                "ALTER FUNCTION add_one(integer) VOLATILE",
                "ALTER SEQUENCE ticket_seq INCREMENT 5",
                "ALTER TABLE moods SET UNLOGGED",
                "CREATE OR REPLACE VIEW open_tasks AS SELECT id, title, project_id FROM tasks",
                "CREATE SCHEMA other", "CREATE TABLE other.t (id integer)"):
            conn.execute(statement)
    differences = checker.of(found, found.engine(busy_timeout=30).applied())
    said = {d.line for d in differences}
    assert said == {
        'table projects: column name is text COLLATE "POSIX" NOT NULL in the database, text COLLATE "C" NOT NULL '
        "in its migrations (0001)",
        "table projects: unique constraint projects(name) (0001) is missing from the database",
        "table projects: check constraint projects_status_check is CHECK ((status <> ''::text)) in the database, "
        "CHECK ((status = ANY (ARRAY['active'::text, 'done'::text]))) in its migrations (0001)",
        "table tasks: foreign key tasks(project_id) → projects(id) is ON DELETE SET NULL in the database, "
        "ON DELETE CASCADE in its migrations (0001)",
        "table moods differs from its migrations (0001): it is unlogged in the database, an ordinary table in its "
        "migrations",
        "view open_tasks differs from its migrations (0001): the database has CREATE VIEW open_tasks AS SELECT "
        "tasks.id, tasks.title, tasks.project_id FROM tasks; its migrations make CREATE VIEW open_tasks AS SELECT "
        "tasks.id, tasks.title FROM tasks",
        "sequence ticket_seq differs from its migrations (0001): its increment is 5 in the database, 1 in its "
        "migrations",
        "function add_one(i integer) differs from its migrations (0001): it is VOLATILE in the database, IMMUTABLE "
        "in its migrations",
        "function tasks_audit_fn() differs from its migrations (0001): its body differs"}, said
    assert len(differences) == len(said)
    objects = {d.object for d in differences}
    assert {"foreign key tasks(project_id) → projects(id)", "check constraint projects_status_check"} <= objects
