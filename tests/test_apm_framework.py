"""Adopting APM's later framework (issue 17): its databases as they are, and a catalog with its real habits.

``tests/apm_framework.py`` is a reference runner of that framework (its
seven-column ledger, rollbacks that keep the row, the first file of each
version only, migrations writing the ledger straight through), so every
database here is made the way APM's users' databases were made.
``tests/fixtures/apm_later`` is the catalog, written with every habit the
issue lists. Tests that are about the command run the installed ``apm``.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from planner import versions
from planner.errors import CatalogInvalid
from planner.engines.sqlite.runner import Executor
from planner.engines.sqlite.ledger import Ledger
from planner.loader import load_catalog
from planner.plan import apply_plan, rollback_plan
from tests import apm_framework as old
from tests.conftest import write_migration
from tests.test_command_edge_cases import apm

FIXTURE = Path(__file__).parent / "fixtures" / "apm_later"
SEVEN = ["id", "version", "description", "applied_at", "rollback_at", "rollback_reason", "applied_by"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the catalog and the application package it imports (the fixture itself is never changed)."""
    shutil.copytree(FIXTURE, tmp_path / "project", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "project"


def run(project: Path, db: Path, *args: str):
    return apm("--db", str(db), "--migrations-dir", str(project / "migrations"), *args, cwd=project)


def ledger_rows(db: Path) -> list[tuple]:
    return old.rows(db, "SELECT id, version, rollback_at, applied_by FROM schema_migrations ORDER BY id")


# --------------------------------------------------------------------------
# A database made by APM's later framework
# --------------------------------------------------------------------------


def test_a_later_framework_database_is_adopted_as_it_is(project, tmp_path):
    db = tmp_path / "aipm.db"
    assert old.migrate(db, project / "migrations") == ["0018", "0019", "0020", "0021"]
    old.rollback(db, project / "migrations", "0021", "index slowed inserts")
    before = old.rows(db, "SELECT * FROM schema_migrations ORDER BY id")
    # Plain rows, the migrations' own suffixed rows, and a rolled-back row, as that framework leaves them.
    assert [(r[1], r[4] is not None) for r in before] == [
        ("0018_consolidated", False), ("0018", False), ("0019_expand_context_types", False), ("0019", False),
        ("0020", False), ("0021", True)]
    fix = run(project, db, "migrate", "check", "--fix", "--yes")  # the shared 0021: see the catalog test
    assert fix.returncode == 0, fix.stderr

    plan = run(project, db, "migrate", "plan", "--json")
    assert plan.returncode == 0, plan.stderr
    assert [s["version"] for s in json.loads(plan.stdout)["steps"]] == ["0021", "0022"]  # rolled back, never ran

    status = json.loads(run(project, db, "status", "--json").stdout)
    assert (status["applied"], status["pending"], status["applied_without_file"]) == (3, 2, [])
    assert status["schema_version"] == "0020"
    assert status["notes"] == ["0018_consolidated", "0019_expand_context_types"] and status["rolled_back"] == ["0021"]

    shown = json.loads(run(project, db, "migrate", "--show-applied", "--json").stdout)
    assert [(r["version"], r["file"]) for r in shown] == [
        ("0018", "unknown"), ("0019", "unknown"), ("0020", "unknown"),
        ("0018_consolidated", "note"), ("0019_expand_context_types", "note"), ("0021", "rolled-back")]
    assert shown[5]["rollback_reason"] == "index slowed inserts"
    text = run(project, db, "migrate", "--show-applied").stdout
    assert "note of 0018" in text and "rolled back" in text

    doctor = run(project, db, "migrate", "doctor", "--json")
    assert doctor.returncode == 0, doctor.stdout  # a healthy database: notes are no missing files
    codes = [f["code"] for f in json.loads(doctor.stdout)["findings"]]
    assert codes.count("ledger-note") == 2 and "rolled-back-row" in codes
    assert not {"missing-file", "not-a-version", "inconsistent-history"} & set(codes)
    assert db.read_bytes() and old.rows(db, "SELECT * FROM schema_migrations ORDER BY id") == before

    migrated = run(project, db, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "Applied 0021" in migrated.stdout and "Applied 0022" in migrated.stdout
    columns = [r[1] for r in old.rows(db, "PRAGMA table_info(schema_migrations)")]
    assert columns == SEVEN + ["checksum", "execution_ms"]  # upgraded in place: columns added, none dropped
    rows = ledger_rows(db)
    assert rows[:5] == [(r[0], r[1], r[4], r[6]) for r in before[:5]]  # every old row kept as it was
    assert rows[5][:3] == (6, "0021", None)  # the rolled-back row is applied again, the same row
    assert rows[6][1] == "0022"
    assert "idx_agents_role" in old.schema(db) and "work_item_tags" in old.schema(db)
    assert run(project, db, "migrate", "plan", "--json").stdout.count('"version"') == 0

    # Our rollback deletes the row (docs/coming-from-apm.md); re-applying adds it back.
    back = run(project, db, "migrate", "--rollback", "0022", "--yes")
    assert back.returncode == 0, back.stderr
    assert "0022" not in [r[1] for r in ledger_rows(db)] and "work_item_tags" not in old.schema(db)
    again = run(project, db, "migrate")
    assert again.returncode == 0 and "Applied 0022" in again.stdout
    assert [r[1] for r in ledger_rows(db)] == ["0018_consolidated", "0018", "0019_expand_context_types", "0019",
                                               "0020", "0021", "0022"]


def test_a_row_rolled_back_by_the_old_framework_is_pending_and_reapplied_in_place(tmp_path):
    db = tmp_path / "app.db"
    (tmp_path / "m").mkdir()
    write_migration(tmp_path / "m", "0001", upgrade="conn.execute('CREATE TABLE t (id INTEGER)')",
                    downgrade="conn.execute('DROP TABLE t')")
    conn = sqlite3.connect(db)
    conn.execute(old.LEDGER)
    conn.execute("INSERT INTO schema_migrations (version, description, rollback_at, rollback_reason, applied_by) "
                 "VALUES ('0001', 'old', '2025-01-01 00:00:00', 'broke prod', 'aipm-cli')")
    conn.commit()
    conn.close()
    catalog = load_catalog(tmp_path / "m")
    reader = Ledger(sqlite3.connect(db))
    assert reader.applied_migrations() == {} and reader.applied_versions() == []
    assert [(n.version, n.kind) for n in reader.notes()] == [("0001", "rolled-back")]
    plan = apply_plan(catalog, {})
    Executor(db, catalog=catalog).run(plan)
    assert old.rows(db, "SELECT id, version, rollback_at, rollback_reason, applied_by FROM schema_migrations") == [
        (1, "0001", None, None, "apm-migrate")]


# --------------------------------------------------------------------------
# A catalog written with APM's habits, on a fresh database
# --------------------------------------------------------------------------


def test_a_catalog_with_apm_habits_applies_to_a_fresh_database_as_the_old_framework_would(project, tmp_path):
    migrations = project / "migrations"
    reference = tmp_path / "reference.db"
    old.migrate(reference, migrations)  # what APM's framework makes of the catalog as it is

    check = run(project, tmp_path / "none.db", "migrate", "check", "--json")
    assert check.returncode == 3
    duplicate = next(f for f in json.loads(check.stdout)["findings"] if f["code"] == "duplicate-version")
    assert "migration_0021_agents_index.py" in duplicate["message"] and "WILL run" in duplicate["message"]
    assert duplicate["fix"].startswith("git mv migration_0021_work_item_tags.py migration_0022_work_item_tags.py; "
                                       'add to migration_0022_work_item_tags.py: depends_on = ("0021",)')
    refused = run(project, tmp_path / "none.db", "migrate", "check", "--fix")
    assert refused.returncode == 7 and "nothing was changed" in refused.stderr
    assert (migrations / "migration_0021_work_item_tags.py").exists()
    fixed = run(project, tmp_path / "none.db", "migrate", "check", "--fix", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert run(project, tmp_path / "none.db", "migrate", "check").returncode == 0

    db = tmp_path / "fresh.db"
    result = run(project, db, "migrate", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # one JSON document although every migration prints
    outputs = {r["version"]: r["output"] for r in report["results"]}
    assert "🔄 Consolidating schema" in outputs["0018"] and "✅ 5 context types" in outputs["0019"]
    assert "📦" not in result.stdout  # a top-level print() at import time is not on stdout either

    # The same schema the framework makes, plus the file it never ran, which now runs (after its partner).
    ours, theirs = old.schema(db), old.schema(reference)
    assert set(ours) - set(theirs) == {"work_item_tags"}
    assert {name: sql for name, sql in ours.items() if name != "work_item_tags"} == theirs
    assert old.rows(db, "SELECT * FROM agents") == old.rows(reference, "SELECT * FROM agents")
    again = tmp_path / "reference-fixed.db"
    old.migrate(again, migrations)  # and exactly what the framework makes of the renumbered catalog
    assert old.schema(again) == ours

    # The executor's rows survived the consolidation's DELETE; what the migrations wrote is kept as notes.
    assert [r[1] for r in ledger_rows(db)] == ["0018_consolidated", "0018", "0019_expand_context_types", "0019",
                                               "0020", "0021", "0022"]
    detail = old.rows(db, "SELECT detail FROM schema_migrations_log WHERE version = '0019' AND action = 'apply'")
    assert "inserted 0019_expand_context_types" in detail[0][0] and "updated 0018_consolidated" in detail[0][0]

    plain = run(project, tmp_path / "plain.db", "migrate")
    assert plain.returncode == 0
    lines = plain.stdout.splitlines()
    assert lines[0].startswith("Applied 0018") and lines[1] == "    │ 🔄 Consolidating schema (0001-0017)..."


@pytest.mark.parametrize("atomic", [False, True], ids=["stepwise", "atomic"])
def test_the_executors_rows_survive_a_migration_that_rewrites_the_ledger(tmp_path, atomic):
    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", upgrade="conn.execute('CREATE TABLE a (id INTEGER)')")
    write_migration(folder, "0002", upgrade="""
        conn.execute("DELETE FROM schema_migrations")
        conn.execute("INSERT INTO schema_migrations (version, applied_by) VALUES ('0002_consolidated', 'me')")
        conn.execute("INSERT INTO schema_migrations (version, description) VALUES ('0002', 'mine')")
    """)
    write_migration(folder, "0003", upgrade="""
        conn.execute("UPDATE schema_migrations SET description = 'hijacked', version = '0099' WHERE version = '0001'")
        conn.execute("UPDATE schema_migrations SET description = 'note edited' WHERE version = '0002_consolidated'")
    """)
    db = tmp_path / "app.db"
    catalog = load_catalog(folder)
    Executor(db, create=True, catalog=catalog).run(apply_plan(catalog, {}), atomic=atomic)
    rows = old.rows(db, "SELECT version, description, applied_by, checksum IS NOT NULL FROM schema_migrations")
    by_version = {r[0]: r[1:] for r in rows}
    assert by_version["0001"] == ("Migration number 0001", "apm-migrate", 1)  # restored, as it was
    assert by_version["0002"] == ("Migration number 0002", "apm-migrate", 1)  # its own row made ours
    assert by_version["0003"][1:] == ("apm-migrate", 1)
    assert by_version["0002_consolidated"] == ("note edited", "me", 0)  # what the migrations wrote is kept
    assert by_version["0099"] == ("hijacked", "apm-migrate", 1)  # a row it made of ours (renamed) stays, as a new row
    assert versions.ordered(Ledger(sqlite3.connect(db)).applied_versions()) == ["0001", "0002", "0003", "0099"]

    # A rollback of 0003 restores nothing it should not: the other rows stay. 0099 has no file, so the
    # rollback is refused unless the ledger shows it came first (issue 22 point 4): it was 0001's row.
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_migrations SET applied_at = '2000-01-01 00:00:00' WHERE version = '0099'")
    conn.commit()
    conn.close()
    catalog = load_catalog(folder)
    applied = Ledger(sqlite3.connect(db)).applied_migrations()
    Executor(db, catalog=catalog).run(rollback_plan(catalog, applied, "0003"))
    assert "0003" not in Ledger(sqlite3.connect(db)).applied_versions()


def test_a_migration_that_drops_the_ledger_fails_and_changes_nothing(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", upgrade="conn.execute('CREATE TABLE a (id INTEGER)')")
    write_migration(folder, "0002", upgrade="""
        conn.execute("DROP TABLE schema_migrations")
        conn.execute("CREATE TABLE schema_migrations (version TEXT)")
    """)
    db = tmp_path / "app.db"
    catalog = load_catalog(folder)
    with pytest.raises(Exception, match="dropped or replaced schema_migrations"):
        Executor(db, create=True, catalog=catalog).run(apply_plan(catalog, {}))
    assert Ledger(sqlite3.connect(db)).applied_versions() == ["0001"]


# --------------------------------------------------------------------------
# Imports of the application, print(), versions with a suffix
# --------------------------------------------------------------------------


def test_a_migration_importing_a_missing_application_names_it_and_says_where_to_run_apm(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", extra="from not_installed_app.enums import Tier\n")
    with pytest.raises(CatalogInvalid) as caught:
        load_catalog(folder)
    message = str(caught.value)
    assert "not_installed_app" in message and "run apm where the application is installed" in message
    result = apm("--db", str(tmp_path / "a.db"), "--migrations-dir", str(folder), "migrate", "plan")
    assert result.returncode == 3 and "not_installed_app" in result.stderr


def test_a_migration_that_prints_on_failure_shows_it_on_stderr_and_json_stays_clean(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", upgrade="print('\\U0001f680 starting')\nraise RuntimeError('boom')")
    result = apm("--db", str(tmp_path / "a.db"), "--migrations-dir", str(folder), "migrate", "--json", "--yes")
    assert result.returncode == 5
    assert result.stdout == ""  # the failure is on stderr; nothing the migration printed reaches stdout
    assert "printed, before it failed:\n    │ 🚀 starting" in result.stderr


def test_base_version_tells_notes_from_versions_and_junk():
    assert versions.base_version("0018_consolidated") == "0018"
    assert versions.base_version("0019_expand_context_types") == "0019"
    for text in ("0018", "abc", "²_x", "_x", "0018_", "", None):
        assert versions.base_version(text) is None, text
