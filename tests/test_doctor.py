"""``apm migrate doctor``: each finding from a database made to have that fault; the file never changes."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import apm
from cli.options import EXIT_DATABASE, EXIT_OK
from planner.engines.sqlite.backup import backup
from planner.engines.sqlite.doctor import diagnose
from planner.errors import DatabaseNotFound, NotADatabase
from planner.engines.sqlite.runner import Executor
from planner.loader import load_catalog
from planner.plan import apply_plan
from tests.conftest import fix_of

SHIPPED = Path(__file__).resolve().parent.parent / "migrations"


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def codes(findings) -> set[str]:
    return {f.code for f in findings}


def only(findings, code):
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, [(f.code, f.message) for f in findings]
    return matching[0]


def execute(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


@pytest.fixture
def apm_db(tmp_path: Path) -> Path:
    db = tmp_path / "aipm.db"
    Executor(db, create=True).run(apply_plan(load_catalog(SHIPPED), []))
    return db


def diagnose_untouched(db: Path, catalog: Path = SHIPPED):
    """Diagnose, and check the diagnosis changed nothing on disk."""
    before = fingerprint(db)
    findings = diagnose(db, catalog)
    assert fingerprint(db) == before
    assert not list(db.parent.glob(db.name + "-*"))  # no journal or WAL created either
    return findings


def test_a_healthy_database_with_a_backup_has_only_the_backup_to_show(apm_db):
    copy = backup(apm_db)
    findings = diagnose_untouched(apm_db)
    finding = only(findings, "backup")
    assert finding.severity == "info"
    assert finding.message.startswith(f"backup {copy.name}, ") and " old, " in finding.message
    assert fix_of(finding) == f"apm --db {apm_db} migrate restore {copy}"
    assert codes(findings) == {"backup"}


def test_no_backups_is_a_warning(apm_db):
    finding = only(diagnose_untouched(apm_db), "no-backups")
    assert finding.severity == "warning" and ".backup" in fix_of(finding)


def test_backups_are_listed_newest_first_with_their_age(apm_db):
    old = backup(apm_db)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    new = backup(apm_db)
    listed = [f for f in diagnose_untouched(apm_db) if f.code == "backup"]
    assert [f.path for f in listed] == [new, old]
    assert "2 days old" in listed[1].message


def test_a_broken_foreign_key_names_table_row_column_and_parent(apm_db):
    execute(apm_db, "INSERT INTO tasks (project_id, title, assigned_agent_id) VALUES (1, 'orphan', 999)")
    finding = only(diagnose_untouched(apm_db), "foreign-key")
    assert finding.severity == "error" and finding.scope == "database"
    assert finding.message.startswith("tasks row 1 has assigned_agent_id = 999, but agents(id) has no such row")
    assert fix_of(finding) == ('DELETE FROM "tasks" WHERE rowid = 1;  -- or: UPDATE "tasks" SET '
                           '"assigned_agent_id" = NULL WHERE rowid = 1;')


def test_a_damaged_page_fails_the_integrity_check(tmp_path):
    db = tmp_path / "damaged.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("CREATE INDEX idx_notes_body ON notes(body)")
    conn.executemany("INSERT INTO notes (body) VALUES (?)", [("x" * 60,) for _ in range(2000)])
    conn.commit()
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'idx_notes_body'").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:  # overwrite the index's root page header with garbage
        f.seek((root - 1) * page_size)
        f.write(b"\x00" + b"\xff" * 40)
    backup_path = tmp_path / "damaged.db.backup.20250101_000000"
    backup_path.write_bytes(b"")  # a (pretend) backup: the fix restores the newest one
    finding = only(diagnose_untouched(db), "integrity")
    assert finding.severity == "error"
    assert "PRAGMA integrity_check reports" in finding.message and "damaged" in finding.message
    assert fix_of(finding).startswith(f"apm --db {db} migrate restore {backup_path}")


def test_an_edited_applied_file_is_found(apm_db, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for source in SHIPPED.glob("migration_*.py"):
        (catalog / source.name).write_text(source.read_text())
    (catalog / "migration_0030.py").write_text((SHIPPED / "migration_0030.py").read_text() + "\n# edited\n")
    finding = only(diagnose_untouched(apm_db, catalog), "edited-after-apply")
    assert finding.version == "0030" and finding.severity == "error"


def test_a_missing_file_is_found(apm_db, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for source in SHIPPED.glob("migration_*.py"):
        if source.name != "migration_0030.py":
            (catalog / source.name).write_text(source.read_text())
    finding = only(diagnose_untouched(apm_db, catalog), "missing-file")
    assert finding.version == "0030" and "restore the file" in fix_of(finding)


def test_an_inconsistent_ledger_row_is_found(apm_db):
    execute(apm_db, "DELETE FROM schema_migrations WHERE version = '0027'")
    finding = only(diagnose_untouched(apm_db), "inconsistent-history")
    assert finding.version == "0029"
    assert "apm migrate --mark-applied 0027" in fix_of(finding)


def test_a_legacy_three_column_ledger_is_found(tmp_path):
    db = tmp_path / "legacy.db"
    execute(db, "CREATE TABLE projects (id INTEGER PRIMARY KEY)",
            "CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, applied_at TIMESTAMP)",
            "INSERT INTO schema_migrations VALUES ('0001', 'Initial schema', '2025-06-02 10:00:00')")
    findings = diagnose_untouched(db)
    legacy = only(findings, "legacy-ledger")
    assert legacy.severity == "warning" and "checksum" in legacy.message
    assert "missing-log" not in codes(findings)


def test_a_missing_log_table_is_found(apm_db):
    execute(apm_db, "DROP TABLE schema_migrations_log")
    assert only(diagnose_untouched(apm_db), "missing-log").severity == "warning"


def test_tables_without_a_ledger_are_found(tmp_path):
    db = tmp_path / "unmanaged.db"
    execute(db, "CREATE TABLE projects (id INTEGER PRIMARY KEY)")
    finding = only(diagnose_untouched(db), "no-ledger")
    assert "--mark-applied" in fix_of(finding)


def test_a_broken_catalog_is_one_finding(apm_db, tmp_path):
    catalog = tmp_path / "nope"
    finding = only(diagnose_untouched(apm_db, catalog), "catalog-invalid")
    assert fix_of(finding).startswith("apm migrate check")


def test_there_must_be_a_database(tmp_path):
    with pytest.raises(DatabaseNotFound):
        diagnose(tmp_path / "missing.db", SHIPPED)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(NotADatabase):
        diagnose(junk, SHIPPED)


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------


def run_doctor(*args: str):
    return CliRunner().invoke(apm, ["migrate", "doctor", *args, "--migrations-dir", str(SHIPPED)])


def test_doctor_exits_0_when_healthy_and_6_when_not(apm_db):
    healthy = run_doctor("--db", str(apm_db))
    assert healthy.exit_code == EXIT_OK, healthy.output
    assert "warning  -     no-backups" in healthy.output and "healthy" in healthy.output

    execute(apm_db, "INSERT INTO tasks (project_id, title, assigned_agent_id) VALUES (1, 'orphan', 999)")
    sick = run_doctor("--db", str(apm_db))
    assert sick.exit_code == EXIT_DATABASE
    assert "error    -     foreign-key  tasks row 1" in sick.output


def test_doctor_json_and_a_missing_database(apm_db, tmp_path):
    data = json.loads(run_doctor("--db", str(apm_db), "--json").output)
    assert data["healthy"] is True and data["exit_code"] == 0
    assert [f["code"] for f in data["findings"]] == ["no-backups"]
    missing = run_doctor("--db", str(tmp_path / "none.db"))
    assert missing.exit_code == EXIT_DATABASE and "does not exist" in missing.output


def test_fix_commands_name_the_database_given_by_option_so_a_pasted_one_acts_on_it(apm_db, tmp_path, monkeypatch):
    execute(apm_db, "DROP TABLE schema_migrations_log")
    given = run_doctor("--db", str(apm_db))  # and --migrations-dir
    assert f"fix: apm --db {apm_db} --migrations-dir {SHIPPED} migrate  # recreates it" in given.output
    found = json.loads(CliRunner().invoke(apm, ["--db", str(apm_db), "migrate", "doctor", "--json"]).output)
    assert [f["fix"] for f in found["findings"] if f["code"] == "missing-log"] == [
        f"apm --db {apm_db} migrate  # recreates it when it next applies, rolls back or marks a migration; "
        f"with nothing to do, it waits"]
    # From the environment, the pasted command finds the same database by itself: nothing is added.
    monkeypatch.setenv("APM_DB", str(apm_db))
    environment = CliRunner().invoke(apm, ["migrate", "doctor", "--migrations-dir", str(SHIPPED)])
    assert f"fix: apm --migrations-dir {SHIPPED} migrate  # recreates it" in environment.output
    # A path that needs quoting is quoted.
    spaced = tmp_path / "my project" / "aipm.db"
    spaced.parent.mkdir()
    spaced.write_bytes(apm_db.read_bytes())
    assert f"fix: apm --db '{spaced}' --migrations-dir" in run_doctor("--db", str(spaced)).output
