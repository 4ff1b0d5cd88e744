"""Plain SQL migrations (issue 14, point 4): loaded, planned, checksummed, applied and rolled back like Python ones."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import apm
from planner import errors as E
from planner.diagram import catalog_page
from planner.loader import load_catalog, scan_catalog
from tests.conftest import fix_of, run_apm, write_migration

INDEX_SQL = """\
-- Migration 0002: Add index on tasks.status
--
-- Listing tasks by status got slow.
-- depends_on: 0001
-- upgrade
CREATE INDEX idx_tasks_status ON tasks(status);
INSERT INTO tasks(status) VALUES ('a;b');  -- a semicolon inside a string does not split the statement
-- downgrade
DELETE FROM tasks WHERE status = 'a;b';
DROP INDEX idx_tasks_status;
"""


@pytest.fixture
def mixed(catalog_dir: Path) -> Path:
    """0001 in Python (creates tasks), 0002 in SQL on top of it."""
    write_migration(catalog_dir, "0001", "Base", depends_on=(), slug="base",
                    upgrade="conn.execute('CREATE TABLE tasks (id INTEGER PRIMARY KEY, status TEXT)')",
                    downgrade="conn.execute('DROP TABLE tasks')")
    (catalog_dir / "migration_0002_add_index.sql").write_text(INDEX_SQL)
    return catalog_dir


def run(*args: str):
    return CliRunner().invoke(apm, list(args))


def schema(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}
    finally:
        conn.close()


def test_a_sql_file_becomes_the_same_migration_value(mixed: Path) -> None:
    migration = load_catalog(mixed).get("0002")
    path = mixed / "migration_0002_add_index.sql"
    assert migration.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert migration.description == "Add index on tasks.status"
    assert migration.depends_on == ("0001",) and migration.dependency_source == "depends_on"
    assert migration.reversible and migration.docstring_version == "0002"
    assert "Listing tasks by status got slow." in migration.doc


def test_sql_migration_applies_and_rolls_back_with_its_ledger_row(mixed: Path, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    base = ["--db", str(db), "--migrations-dir", str(mixed), "migrate"]
    applied = run(*base)
    assert applied.exit_code == 0 and "Applied 0002 Add index on tasks.status" in applied.output
    assert "idx_tasks_status" in schema(db)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT status FROM tasks").fetchall() == [("a;b",)]
    checksum = conn.execute("SELECT checksum FROM schema_migrations WHERE version = '0002'").fetchone()[0]
    conn.close()
    assert checksum == load_catalog(mixed).get("0002").checksum
    assert "ok" in run(*base, "--show-applied").output.splitlines()[-1]
    rolled = run(*base, "--rollback", "0002", "--no-backup", "--yes")
    assert rolled.exit_code == 0, rolled.output
    assert "idx_tasks_status" not in schema(db)


def test_a_failing_statement_rolls_back_the_whole_sql_step(catalog_dir: Path, tmp_path: Path) -> None:
    (catalog_dir / "migration_0001_bad.sql").write_text(
        "-- Migration 0001: Half a change\n-- depends_on:\n-- upgrade\n"
        "CREATE TABLE kept_only_if_committed (id INTEGER);\nINSERT INTO nowhere VALUES (1);\n"
    )
    db = tmp_path / "app.db"
    # Step by step (--no-preview), so the ledger is made while the failing step is rolled back alone.
    result = run("--db", str(db), "--migrations-dir", str(catalog_dir), "migrate", "--no-preview")
    assert result.exit_code == 5 and "no such table: nowhere" in result.output
    assert "kept_only_if_committed" not in schema(db)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone() == (0,)
    conn.close()


@pytest.mark.parametrize(
    ("text", "error", "line", "words"),
    [
        ("-- depend_on: 0001\n-- upgrade\nSELECT 1;\n", E.UnknownSqlDirective, 1, "unknown header directive"),
        ("-- upgrade\nSELECT 1;\n-- upgrade\nSELECT 2;\n", E.DuplicateSqlSection, 3, "second `-- upgrade`"),
        ("-- upgrade\nSELECT 1;\n-- downgrade\nSELECT 1;\n-- DOWNGRADE\nSELECT 2;\n", E.DuplicateSqlSection, 5,
         "second `-- downgrade`"),
        ("-- depends_on: 0001\n-- depends_on: 0002\n-- upgrade\nSELECT 1;\n", E.DuplicateSqlSection, 2, "depends_on"),
        ("-- Migration 0005: x\nCREATE TABLE t (id);\n", E.MissingUpgradeSection, 2, "before the `-- upgrade`"),
        ("-- Migration 0005: x\n-- nothing\n", E.MissingUpgradeSection, 2, "no `-- upgrade` marker"),
        ("-- downgrade\nSELECT 1;\n-- upgrade\nSELECT 1;\n", E.MissingUpgradeSection, 1, "comes before"),
        ("-- depends_on: 0001, abc\n-- upgrade\nSELECT 1;\n", E.MalformedSqlDependencies, 1, "'abc'"),
    ],
)
def test_a_malformed_sql_file_is_a_catalog_error_naming_file_and_line(
    catalog_dir: Path, text: str, error: type, line: int, words: str
) -> None:
    write_migration(catalog_dir, "0001", depends_on=())
    (catalog_dir / "migration_0005_x.sql").write_text(text)
    migrations, problems = scan_catalog(catalog_dir)
    assert [m.version for m in migrations] == ["0001"]
    (problem,) = problems
    assert isinstance(problem, error) and isinstance(problem, E.CatalogError)
    assert problem.line == line and problem.path.name == "migration_0005_x.sql"
    assert str(problem).startswith(f"migration_0005_x.sql, line {line}: ") and words in str(problem)


def test_dependency_rules_and_no_downgrade(catalog_dir: Path, tmp_path: Path) -> None:
    write_migration(catalog_dir, "0001", depends_on=())
    (catalog_dir / "migration_0002.sql").write_text("-- upgrade\nCREATE TABLE two (id INTEGER);\n")
    (catalog_dir / "migration_0003_root.sql").write_text(
        "-- Migration 0003: Another root\n-- Note: prose with a colon is fine.\n-- depends_on:\n"
        "-- upgrade\nCREATE TABLE three (id INTEGER);\n")
    catalog = load_catalog(catalog_dir)
    two, three = catalog.get("0002"), catalog.get("0003")
    assert two.depends_on == ("0001",) and two.dependency_source == "implied" and not two.reversible
    assert two.description == ""
    assert three.depends_on == () and three.description == "Another root"
    db = tmp_path / "app.db"
    base = ["--db", str(db), "--migrations-dir", str(catalog_dir), "migrate"]
    assert run(*base).exit_code == 0
    refused = run(*base, "--rollback", "0002", "--no-backup")
    assert refused.exit_code == 4 and "downgrade" in refused.output
    assert "two" in schema(db)


def test_a_python_and_a_sql_file_with_one_version_are_a_duplicate(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", depends_on=())
    (catalog_dir / "migration_0001_again.sql").write_text("-- upgrade\nSELECT 1;\n")
    with pytest.raises(E.CatalogInvalid) as raised:
        load_catalog(catalog_dir)
    assert isinstance(raised.value.problems[0], E.DuplicateVersion)
    assert "migration_0001.py" in str(raised.value) and "migration_0001_again.sql" in str(raised.value)


def test_new_sql_scaffolds_a_file_that_runs_once_filled(seed_chain: Path, tmp_path: Path) -> None:
    created = run("--migrations-dir", str(seed_chain), "migrate", "new", "--sql", "Add index")
    assert created.exit_code == 0, created.output
    path = seed_chain / "migration_0031_add_index.sql"
    assert created.output.strip() == f"Created {path}"
    text = path.read_text()
    assert text.startswith("-- Migration 0031: Add index\n") and "-- depends_on: 0029, 0030\n" in text
    # Unfilled, check flags it and a run refuses it (issue 22 point 10): it cannot be applied by accident.
    check = run("--migrations-dir", str(seed_chain), "migrate", "check")
    assert check.exit_code == 3 and "migration_0031_add_index.sql: its upgrade does nothing yet" in check.output
    text = text.replace("-- Write the forward change here", "CREATE TABLE idx_demo (id INTEGER);\n--", 1)
    text = text.replace("-- Undo the upgrade here", "DROP TABLE idx_demo;\n--", 1)
    path.write_text(text)
    migration = load_catalog(seed_chain).get("0031")
    assert migration.depends_on == ("0029", "0030") and migration.reversible
    db = tmp_path / "app.db"
    base = ["--db", str(db), "--migrations-dir", str(seed_chain), "migrate"]
    assert "Applied 0031 Add index" in run(*base).output
    assert "Rolled back 0031" in run(*base, "--rollback", "0031", "--no-backup", "--yes").output


def test_catalog_page_and_graph_show_sql_migrations(mixed: Path) -> None:
    page = catalog_page(load_catalog(mixed))
    assert "## 0002 Add index on tasks.status" in page and "migration_0002_add_index.sql" in page
    assert "Listing tasks by status got slow." in page
    graph = run("--migrations-dir", str(mixed), "migrate", "graph", "--format", "mermaid")
    assert graph.exit_code == 0 and 'm0002["0002 Add index on tasks.status"]' in graph.output


def test_installed_apm_applies_a_sql_migration(mixed: Path, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    done = run_apm("--db", str(db), "--migrations-dir", str(mixed), "migrate")
    assert done.returncode == 0, done.stderr
    assert "Applied 0002 Add index on tasks.status" in done.stdout and "idx_tasks_status" in schema(db)


def test_check_gives_sql_fixes_for_sql_files(catalog_dir: Path) -> None:
    from planner.lint import check_catalog

    write_migration(catalog_dir, "0001", depends_on=())
    (catalog_dir / "migration_0002.sql").write_text("-- upgrade\nCREATE TABLE two (id INTEGER);\n")
    fixes = {f.code: fix_of(f) for f in check_catalog(catalog_dir)}
    assert fixes["implied-dependency"] == "add to migration_0002.sql: -- depends_on: 0001"
    assert "`-- downgrade` section" in fixes["no-downgrade"]
