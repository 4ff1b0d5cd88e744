"""``apm migrate check``: each finding from a catalog (or database) made to have that fault."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import apm
from cli.options import EXIT_CATALOG, EXIT_OK, EXIT_REFUSED
from planner.engines.sqlite.runner import Executor
from planner.engines import engine_for
from planner.lint import check_catalog
from planner.loader import load_catalog
from planner.plan import apply_plan
from tests.conftest import fix_of, write_migration

SHIPPED = Path(__file__).resolve().parent.parent / "migrations"


def codes(findings) -> list[tuple[str, str, str | None]]:
    return [(f.severity, f.code, f.version) for f in findings]


def only(findings, code):
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, codes(findings)
    return matching[0]


def test_the_shipped_catalog_is_clean():
    assert check_catalog(SHIPPED) == []


def test_a_clean_explicit_catalog_has_no_findings(seed_chain):
    # seed_chain's 0020 has no declared dependencies: that is the one warning.
    assert codes(check_catalog(seed_chain)) == [("warning", "implied-dependency", "0020")]


def test_unknown_dependency_is_an_error_with_its_fix(catalog_dir):
    write_migration(catalog_dir, "0001", depends_on=())
    write_migration(catalog_dir, "0029", depends_on=("0028",))
    finding = only(check_catalog(catalog_dir), "unknown-dependency")
    assert (finding.severity, finding.version, finding.scope) == ("error", "0029", "catalog")
    assert "0029 depends on 0028, which does not exist" in finding.message
    assert fix_of(finding) == "remove '0028' from 0029's depends_on, or add migration_0028.py"
    assert finding.describe().startswith("error    0029  unknown-dependency  0029 depends on 0028")


def test_docstring_dependencies_that_disagree_are_an_error(catalog_dir):
    write_migration(catalog_dir, "0001", depends_on=())
    write_migration(catalog_dir, "0020", depends_on=("0001",))
    write_migration(catalog_dir, "0027", depends_on=("0020",), documented=("0001",))
    finding = only(check_catalog(catalog_dir), "docstring-dependencies")
    assert finding.severity == "error" and finding.version == "0027"
    assert 'depends_on = ("0001",)' in fix_of(finding)


def test_implied_dependency_is_a_warning_with_the_line_to_add(catalog_dir):
    write_migration(catalog_dir, "0001", depends_on=())
    write_migration(catalog_dir, "0019", depends_on=("0001",))
    write_migration(catalog_dir, "0020")  # neither depends_on nor a Dependencies: section
    finding = only(check_catalog(catalog_dir), "implied-dependency")
    assert (finding.severity, finding.version) == ("warning", "0020")
    assert fix_of(finding) == 'add to migration_0020.py: depends_on = ("0019",)'
    assert "only because that file comes before it" in finding.message


def test_an_implicit_root_is_told_to_say_so(catalog_dir):
    write_migration(catalog_dir, "0001")
    assert fix_of(only(check_catalog(catalog_dir), "implied-dependency")) == "add to migration_0001.py: depends_on = ()"


def test_missing_downgrade_is_a_warning(catalog_dir):
    write_migration(catalog_dir, "0001", depends_on=(), downgrade=None)
    finding = only(check_catalog(catalog_dir), "no-downgrade")
    assert finding.severity == "warning" and "def downgrade(conn" in fix_of(finding)


def test_docstring_version_differing_from_the_file_name_is_an_error(catalog_dir):
    path = write_migration(catalog_dir, "0027", "Add metadata", depends_on=())
    path.write_text(path.read_text().replace("Migration 0027:", "Migration 0026:"))
    finding = only(check_catalog(catalog_dir), "docstring-version")
    assert finding.severity == "error"
    assert fix_of(finding) == "in migration_0027.py, make the first docstring line 'Migration 0027: Add metadata'"


def test_the_same_number_spelled_differently_is_not_a_docstring_mismatch(catalog_dir):
    path = write_migration(catalog_dir, "0027", depends_on=())
    path.write_text(path.read_text().replace("Migration 0027:", "Migration 27:"))
    assert check_catalog(catalog_dir) == []


def test_every_loader_problem_is_reported_at_once(catalog_dir):
    write_migration(catalog_dir, "0001", depends_on=())
    (catalog_dir / "migration_7a.py").write_text("def upgrade(conn): pass\n")
    write_migration(catalog_dir, "0002", depends_on=("0001",))
    write_migration(catalog_dir, "2", depends_on=("0001",), slug="again")
    (catalog_dir / "migration_0003.py").write_text('"""Migration 0003: x"""\ndepends_on = ("0001",)\n')
    (catalog_dir / "migration_0004.py").write_text("def upgrade(conn)\n")
    write_migration(catalog_dir, "0005", depends_on=("0005",))
    write_migration(catalog_dir, "0006", depends_on=("0007",))
    write_migration(catalog_dir, "0007", depends_on=("0006",))
    found = {f.code for f in check_catalog(catalog_dir)}
    assert {"malformed-file-name", "duplicate-version", "missing-upgrade", "unreadable-migration",
            "self-dependency", "dependency-cycle"} <= found
    duplicate = next(f for f in check_catalog(catalog_dir) if f.code == "duplicate-version")
    assert fix_of(duplicate).startswith("git mv migration_2_again.py migration_0008_again.py")


def test_a_missing_folder_is_one_error(tmp_path):
    assert codes(check_catalog(tmp_path / "nope")) == [("error", "catalog-not-found", None)]


# --------------------------------------------------------------------------
# With a database: the ledger against the files
# --------------------------------------------------------------------------


@pytest.fixture
def applied_db(tmp_path, seed_chain) -> Path:
    db = tmp_path / "app.db"
    Executor(db, create=True).run(apply_plan(load_catalog(seed_chain), []))
    return db


def test_a_consistent_database_adds_nothing(applied_db, seed_chain):
    assert codes(check_catalog(seed_chain, engine_for(applied_db))) == codes(check_catalog(seed_chain))


def test_an_applied_file_edited_since_is_an_error(applied_db, seed_chain):
    path = seed_chain / "migration_0027.py"
    path.write_text(path.read_text() + "\n# edited\n")
    finding = only(check_catalog(seed_chain, engine_for(applied_db)), "edited-after-apply")
    assert (finding.severity, finding.version, finding.scope) == ("error", "0027", "history")
    assert "changed since 0027 was applied" in finding.message


def test_an_applied_version_missing_from_the_catalog_is_an_error(applied_db, seed_chain):
    (seed_chain / "migration_0030.py").unlink()
    finding = only(check_catalog(seed_chain, engine_for(applied_db)), "missing-file")
    assert finding.version == "0030" and finding.scope == "history"


def test_a_deleted_sql_file_is_named_as_the_ledger_knows_it_not_as_a_py_file(tmp_path):
    """Issue 22, point 17: the ledger keeps the version (and description), never the file's name or extension."""
    from tests.conftest import run_apm

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "migration_0001.sql").write_text("-- upgrade\nCREATE TABLE a (id INTEGER);\n")
    (folder / "migration_0002_wishlist.sql").write_text(
        "-- Migration 0002: Add wishlist\n-- depends_on: 0001\n-- upgrade\nCREATE TABLE w (id INTEGER);\n")
    db = tmp_path / "app.db"
    base = ("--db", str(db), "--migrations-dir", str(folder))
    assert run_apm(*base, "migrate").returncode == 0
    (folder / "migration_0002_wishlist.sql").unlink()
    finding = only(check_catalog(folder, engine_for(db)), "missing-file")
    assert "migration_0002.py" not in finding.message and "migration_0002 file (.py or .sql)" in finding.message
    assert "'Add wishlist'" in finding.message  # what the ledger does know, to find the file by
    assert f"'{folder}/migration_0002.*' '{folder}/migration_0002_*'" in fix_of(finding)  # matches the .sql; not 00021
    # `apm migrate` warns about a missing file as it does about an edited one, and still applies what is pending.
    (folder / "migration_0003.sql").write_text("-- depends_on: 0001\n-- upgrade\nCREATE TABLE c (id INTEGER);\n")
    # `apm migrate plan` warns as the run it previews would: the same plan, the same warnings, on stderr.
    (folder / "migration_0001.sql").write_text("-- upgrade\nCREATE TABLE a (id INTEGER, edited TEXT);\n")
    for preview in (("migrate", "plan"), ("migrate", "plan", "--json")):
        shown = run_apm(*base, *preview)
        assert shown.returncode == 0, shown.stderr
        assert "Warning: 0002 is recorded as applied but no migration_0002 file" in shown.stderr, preview
        assert "Warning: migration_0001.sql changed since 0001 was applied" in shown.stderr, preview
    (folder / "migration_0001.sql").write_text("-- upgrade\nCREATE TABLE a (id INTEGER);\n")
    run = run_apm(*base, "migrate")
    assert run.returncode == 0, run.stderr
    assert "Warning: 0002 is recorded as applied but no migration_0002 file (.py or .sql) is in" in run.stderr
    assert "Applied 0003" in run.stdout


def test_an_inconsistent_history_is_an_error_with_both_fixes(applied_db, seed_chain):
    conn = sqlite3.connect(applied_db)
    conn.execute("DELETE FROM schema_migrations WHERE version = '0020'")
    conn.commit()
    conn.close()
    finding = only(check_catalog(seed_chain, engine_for(applied_db)), "inconsistent-history")
    assert finding.version == "0027"
    assert "apm migrate --mark-applied 0020" in fix_of(finding)
    assert "apm migrate --rollback 0027 --cascade" in fix_of(finding)


def test_a_database_that_does_not_exist_is_an_empty_history(seed_chain, tmp_path):
    findings = check_catalog(seed_chain, engine_for(tmp_path / "missing.db"))
    assert [(f.severity, f.code) for f in findings if f.scope == "history"] == [("info", "no-database")]
    assert not (tmp_path / "missing.db").exists()


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------


def run_check(*args: str):
    return CliRunner().invoke(apm, ["migrate", "check", *args])


def test_check_exit_codes(seed_chain, applied_db, catalog_dir, tmp_path):
    clean = run_check("--migrations-dir", str(SHIPPED))
    assert clean.exit_code == EXIT_OK, clean.output
    assert "no problems found" in clean.output

    warned = run_check("--migrations-dir", str(seed_chain))
    assert warned.exit_code == EXIT_OK
    assert "warning  0020  implied-dependency" in warned.output
    assert run_check("--migrations-dir", str(seed_chain), "--strict").exit_code == EXIT_CATALOG

    (seed_chain / "migration_0030.py").unlink()
    history = run_check("--migrations-dir", str(seed_chain), "--db", str(applied_db))
    assert history.exit_code == EXIT_REFUSED, history.output
    assert "missing-file" in history.output

    write_migration(seed_chain, "0031", depends_on=("0099",))
    broken = run_check("--migrations-dir", str(seed_chain), "--db", str(applied_db))
    assert broken.exit_code == EXIT_CATALOG  # catalog errors win: the history check rests on the files

    missing = run_check("--migrations-dir", str(SHIPPED), "--db", str(tmp_path / "nope.db"))
    # A lint: a database not made yet is an empty history, not a failure (issue 12, defect 12).
    assert missing.exit_code == 0 and "does not exist yet" in missing.output


def test_check_json(seed_chain):
    result = run_check("--migrations-dir", str(seed_chain), "--json")
    data = json.loads(result.output)
    assert data["exit_code"] == 0 and data["warnings"] == 1 and data["errors"] == 0
    assert data["findings"][0] == {
        "severity": "warning", "code": "implied-dependency", "version": "0020",
        "message": data["findings"][0]["message"], "fix": 'add to migration_0020.py: depends_on = ("0001",)',
        "scope": "catalog", "path": str(seed_chain / "migration_0020.py"),
    }
