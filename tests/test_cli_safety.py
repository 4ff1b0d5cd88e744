"""The safety net through `apm`: dry runs, the confirmation rules, marks, check and doctor."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli.running
from cli.main import apm


def invoke(db: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(apm, ["--db", str(db), *args], input=input)


@pytest.fixture
def applied_db(tmp_path: Path) -> Path:
    """APM's catalog applied, with one agent of the user's own holding metadata."""
    db = tmp_path / "aipm.db"
    assert invoke(db, "migrate").exit_code == 0
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO agents (project_id, role, display_name, metadata) VALUES (1, 'dev', 'Dev', '{\"a\": 1}')")
    conn.commit()
    conn.close()
    return db


def test_dry_run_reports_and_touches_nothing(applied_db: Path) -> None:
    before = applied_db.read_bytes()
    result = invoke(applied_db, "migrate", "--rollback", "0027", "--cascade", "--dry-run")
    assert result.exit_code == 7, result.output  # a dry run of a plan that destroys data fails CI
    assert "0029 rollback: deletes 5 rows of agents (6 → 1)" in result.output
    assert "0027 rollback: drops column agents.metadata holding 1 non-default value" in result.output
    assert "This plan destroys data." in result.output
    report = json.loads(invoke(applied_db, "migrate", "--rollback", "0027", "--cascade", "--dry-run",
                               "--json").output)
    assert report["loses_data"] is True and [s["version"] for s in report["steps"]] == ["0029", "0027"]
    planned = json.loads(invoke(applied_db, "migrate", "plan", "--rollback", "0030", "--rehearse", "--json").output)
    assert planned["preview"]["steps"][0]["changes"][0]["name"] == "feature_flags"
    assert applied_db.read_bytes() == before
    assert not list(applied_db.parent.glob("*.backup.*"))


def test_confirmation_rules(applied_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = applied_db.read_bytes()
    args = ("migrate", "--rollback", "0027", "--cascade", "--no-backup")
    # No terminal: refused with exit 7, nothing changed.
    refused = invoke(applied_db, *args)
    assert refused.exit_code == 7 and "Re-run with --yes" in refused.output
    assert invoke(applied_db, *args, "--json").exit_code == 7
    assert applied_db.read_bytes() == before
    # A terminal that answers no: exit 7, nothing changed.
    monkeypatch.setattr(cli.running, "stdin_is_terminal", lambda: True)
    declined = invoke(applied_db, *args, input="n\n")
    assert declined.exit_code == 7 and "This plan destroys data" in declined.output
    assert applied_db.read_bytes() == before
    # A terminal that answers yes: it runs.
    accepted = invoke(applied_db, *args, input="y\n")
    assert accepted.exit_code == 0 and "Rolled back 0027" in accepted.output


def test_plans_that_lose_nothing_never_ask(applied_db: Path) -> None:
    # Dropping the empty feature_flags table loses nothing: no question, no --yes needed.
    result = invoke(applied_db, "migrate", "--rollback", "0030", "--no-backup")
    assert result.exit_code == 0 and "Proceed" not in result.output
    assert invoke(applied_db, "migrate").exit_code == 0


def test_yes_runs_without_rehearsal(applied_db: Path) -> None:
    result = invoke(applied_db, "migrate", "--rollback", "0027", "--cascade", "--yes", "--no-backup")
    assert result.exit_code == 0 and "Rolled back 0029" in result.output


def test_marks(applied_db: Path) -> None:
    refused = invoke(applied_db, "migrate", "--mark-rolled-back", "0027")
    assert refused.exit_code == 4 and "0029" in refused.output
    done = invoke(applied_db, "migrate", "--mark-rolled-back", "0030")
    assert done.exit_code == 0 and "nothing was run" in done.output
    conn = sqlite3.connect(applied_db)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'feature_flags'").fetchone()
    assert conn.execute("SELECT 1 FROM schema_migrations WHERE version = '0030'").fetchone() is None
    conn.close()
    marked = json.loads(invoke(applied_db, "migrate", "--mark-applied", "0030", "--json").output)
    assert marked == {"action": "mark-applied", "version": "0030", "description": "Add feature_flags table"}
    again = invoke(applied_db, "migrate", "--mark-applied", "0030")
    assert again.exit_code == 4 and "already applied" in again.output
    conn = sqlite3.connect(applied_db)
    actions = [a for (a,) in conn.execute("SELECT action FROM schema_migrations_log WHERE version = '0030'")]
    conn.close()
    assert actions == ["apply", "mark-rolled-back", "mark-applied"]


def test_check_and_doctor_are_commands(applied_db: Path) -> None:
    assert invoke(applied_db, "migrate", "check").exit_code == 0
    doctor = invoke(applied_db, "migrate", "doctor", "--json")
    assert doctor.exit_code == 0
    conn = sqlite3.connect(applied_db)
    conn.execute("INSERT INTO agent_tools (agent_id, tool_name) VALUES (999, 'ghost')")
    conn.commit()
    conn.close()
    sick = invoke(applied_db, "migrate", "doctor")
    assert sick.exit_code == 6 and "agent_tools" in sick.output


# --------------------------------------------------------------------------
# check --fix: the file the ledger applied keeps its version (issue 22, point 3)
# --------------------------------------------------------------------------


def _table_migration(folder: Path, version: str, table: str, suffix: str) -> Path:
    """A migration creating ``table``, as a .sql or a .py file, depending on 0001."""
    if suffix == ".sql":
        path = folder / f"migration_{version}_{table}.sql"
        path.write_text(f"-- depends_on: 0001\n-- upgrade\nCREATE TABLE {table} (id INTEGER PRIMARY KEY);\n"
                        f"-- downgrade\nDROP TABLE {table};\n")
        return path
    from tests.conftest import write_migration

    return write_migration(folder, version, f"Add {table}", depends_on=("0001",), slug=table,
                           upgrade=f"conn.execute('CREATE TABLE {table} (id INTEGER PRIMARY KEY)')",
                           downgrade=f"conn.execute('DROP TABLE {table}')")


def _project(tmp_path: Path, suffix: str, applied: str = "0002") -> tuple[Path, Path]:
    """0001 and ``migration_<applied>_wishlist`` applied; the folder and the database."""
    from tests.conftest import write_migration

    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", "Products", documented=(),
                    upgrade="conn.execute('CREATE TABLE products (id INTEGER PRIMARY KEY)')",
                    downgrade="conn.execute('DROP TABLE products')")
    _table_migration(folder, applied, "wishlist", suffix)
    db = tmp_path / "app.db"
    done = _apm(db, folder, "migrate")
    assert done.returncode == 0, done.stderr
    return folder, db


def _apm(db: Path | None, folder: Path, *args: str):
    from tests.conftest import run_apm

    return run_apm(*(["--db", str(db)] if db is not None else []), "--migrations-dir", str(folder), *args)


def _tables(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


@pytest.mark.parametrize("suffix,applied,other", [
    (".sql", "0002", "0002"),  # the reported case
    (".py", "0002", "0002"),
    (".py", "2", "0002"),  # one version spelled two ways: the ledger records "2"
    (".sql", "0002", "2"),
])
def test_check_fix_keeps_the_version_of_the_file_the_ledger_applied(tmp_path, suffix, applied, other):
    folder, db = _project(tmp_path, suffix, applied)
    # A second branch adds a file on the same version; it sorts before the applied one.
    _table_migration(folder, other, "coupons", suffix)
    check = _apm(db, folder, "migrate", "check", "--json")
    finding = next(f for f in json.loads(check.stdout)["findings"] if f["code"] == "duplicate-version")
    assert f"holds the checksum of migration_{applied}_wishlist{suffix}" in finding["message"]
    assert finding["fix"].startswith(f"git mv migration_{other}_coupons{suffix} migration_0003_coupons{suffix}")

    fixed = _apm(db, folder, "migrate", "check", "--fix", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "old loader" not in fixed.stderr + check.stdout  # this project's ledger, not another tool's history
    assert (folder / f"migration_{applied}_wishlist{suffix}").exists()
    assert (folder / f"migration_0003_coupons{suffix}").exists()
    assert not (folder / f"migration_{other}_coupons{suffix}").exists()
    migrated = _apm(db, folder, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "Applied 0003" in migrated.stdout and "coupons" in _tables(db)  # it ran: nothing counted unrun


def test_check_fix_with_three_files_on_one_version_keeps_the_applied_one(tmp_path):
    folder, db = _project(tmp_path, ".py", "0002")
    _table_migration(folder, "0002", "alpha", ".py")
    _table_migration(folder, "0002", "zebra", ".sql")
    fixed = _apm(db, folder, "migrate", "check", "--fix", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    names = sorted(p.name for p in folder.glob("migration_*"))
    assert names == ["migration_0001.py", "migration_0002_wishlist.py", "migration_0003_alpha.py",
                     "migration_0004_zebra.sql"]
    migrated = _apm(db, folder, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert {"alpha", "zebra", "wishlist"} <= _tables(db)


def _forget_checksum(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_migrations SET checksum = NULL WHERE version = '0002'")
    conn.commit()
    conn.close()


def _edit(folder: Path) -> None:
    path = folder / "migration_0002_wishlist.sql"
    path.write_text(path.read_text() + "-- edited after it was applied\n")


def _copy(folder: Path) -> None:
    (folder / "migration_0002_acopy.sql").write_bytes((folder / "migration_0002_wishlist.sql").read_bytes())


@pytest.mark.parametrize("damage,said", [
    (lambda folder, db: _forget_checksum(db), "without a checksum"),
    (lambda folder, db: _edit(folder), "a checksum that none of"),
    (lambda folder, db: _copy(folder), "byte for byte"),
], ids=["no-checksum", "none-match", "both-match"])
def test_check_fix_refuses_when_the_ledger_cannot_tell_which_file_ran(tmp_path, damage, said):
    folder, db = _project(tmp_path, ".sql")
    _table_migration(folder, "0002", "coupons", ".sql")
    damage(folder, db)
    before = sorted(p.name for p in folder.iterdir())
    refused = _apm(db, folder, "migrate", "check", "--fix", "--yes")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert said in refused.stderr and "Nothing was changed" in refused.stderr
    assert sorted(p.name for p in folder.iterdir()) == before
    check = _apm(db, folder, "migrate", "check", "--json")
    finding = next(f for f in json.loads(check.stdout)["findings"] if f["code"] == "duplicate-version")
    assert said in finding["message"] and finding["fix"].startswith("sha256sum ")


def test_check_fix_without_a_ledger_keeps_the_first_by_name_and_says_so(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for table in ("wishlist", "coupons"):
        _table_migration(folder, "0002", table, ".sql")
    (folder / "migration_0001.sql").write_text("-- upgrade\nCREATE TABLE products (id INTEGER);\n")
    for db, said in ((None, "no database was given"), (tmp_path / "new.db", "new.db does not exist yet")):
        check = _apm(db, folder, "migrate", "check", "--json")
        finding = next(f for f in json.loads(check.stdout)["findings"] if f["code"] == "duplicate-version")
        assert said in finding["message"] and "keeps 0002 as the first by name" in finding["message"]
    fixed = _apm(tmp_path / "new.db", folder, "migrate", "check", "--fix", "--yes")
    assert fixed.returncode == 0, fixed.stderr
    assert "first by name" in fixed.stderr and "old loader" not in fixed.stderr
    assert (folder / "migration_0002_coupons.sql").exists() and (folder / "migration_0003_wishlist.sql").exists()
    assert not (tmp_path / "new.db").exists()  # checking never creates the database


def test_check_fix_asks_every_database_of_the_config_files_fleet(tmp_path):
    """With no --db and a fleet in the config file, the file every member that applied the version applied keeps
    it (not the first by name); members that applied different files are refused, nothing renamed."""
    from tests.conftest import run_apm

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "migration_0001.sql").write_text("-- upgrade\nCREATE TABLE products (id INTEGER);\n")
    _table_migration(folder, "0002", "wishlist", ".sql")
    (tmp_path / "apm.toml").write_text('migrations_dir = "m"\nfleet = ["projects/*/app.db"]\n')
    dbs = [tmp_path / "projects" / name / "app.db" for name in ("a", "b", "fresh")]
    for db in dbs[:2]:
        db.parent.mkdir(parents=True)
        assert run_apm("migrate", "--db", str(db), cwd=tmp_path).returncode == 0
    dbs[2].parent.mkdir(parents=True)
    assert run_apm("migrate", "--db", str(dbs[2]), "--target", "0001", cwd=tmp_path).returncode == 0
    _table_migration(folder, "0002", "coupons", ".sql")  # a second branch's file, first by name

    fixed = run_apm("migrate", "check", "--fix", "--yes", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "of the fleet's 3 database(s) hold the checksum of migration_0002_wishlist.sql" in fixed.stderr
    assert (folder / "migration_0002_wishlist.sql").exists() and (folder / "migration_0003_coupons.sql").exists()

    # Another branch's file applied on one member under the same version: no renumbering fits both.
    (folder / "migration_0003_coupons.sql").rename(folder / "migration_0002_coupons.sql")
    other = tmp_path / "projects" / "c" / "app.db"
    other.parent.mkdir(parents=True)
    (folder / "migration_0002_wishlist.sql").rename(tmp_path / "aside.sql")
    assert run_apm("migrate", "--db", str(other), cwd=tmp_path).returncode == 0  # c applies coupons as 0002
    (tmp_path / "aside.sql").rename(folder / "migration_0002_wishlist.sql")
    before = sorted(p.name for p in folder.iterdir())
    refused = run_apm("migrate", "check", "--fix", "--yes", cwd=tmp_path)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "the fleet's databases disagree" in refused.stderr and "applied migration_0002_coupons.sql" in refused.stderr
    assert sorted(p.name for p in folder.iterdir()) == before
