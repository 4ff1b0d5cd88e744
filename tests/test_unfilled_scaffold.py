"""An unfilled migration is one rule for Python and SQL files (issue 22 point 10).

An unfilled ``apm migrate new --sql`` file made every command exit 3, even
``status``; an unfilled Python scaffold passed ``check --strict`` and applied
as "no schema or data change". Now both load (every command that only reads
works), ``check`` flags a migration whose upgrade does nothing, and a run
refuses to apply it (exit 4, naming the file), before the database is touched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from planner.migration import does_nothing
from tests.conftest import run_apm, write_migration


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scaffolds(folder: Path) -> tuple[Path, Path]:
    """0001 (a real table), applied by the caller; then an unfilled Python and an unfilled SQL scaffold."""
    write_migration(folder, "0001", "Orders", depends_on=(),
                    upgrade="conn.execute('CREATE TABLE orders (id INTEGER PRIMARY KEY)')",
                    downgrade="conn.execute('DROP TABLE orders')")
    return folder / "migration_0002_add_wishlist.py", folder / "migration_0003_add_coupons.sql"


def new(folder: Path, *args: str) -> None:
    done = run_apm("--migrations-dir", str(folder), "migrate", "new", *args)
    assert done.returncode == 0, done.stderr


READERS = (("status",), ("migrate", "--list"), ("migrate", "--show-applied"), ("migrate", "graph"),
           ("migrate", "doctor"))
RUNS = (("migrate", "--yes"), ("migrate", "--no-preview", "--yes"), ("migrate", "--atomic", "--yes"),
        ("migrate", "--dry-run"), ("migrate", "--target", "0002", "--yes"), ("migrate", "--to", "0003", "--yes"),
        ("migrate", "plan"))


def test_unfilled_scaffolds_load_are_flagged_and_are_never_applied(catalog_dir: Path, tmp_path: Path):
    python_file, sql_file = scaffolds(catalog_dir)
    db = tmp_path / "shop.db"
    base = ("--db", str(db), "--migrations-dir", str(catalog_dir))
    assert run_apm(*base, "migrate", "--yes").returncode == 0
    new(catalog_dir, "Add wishlist")
    new(catalog_dir, "--sql", "Add coupons")
    assert python_file.exists() and sql_file.exists()
    before = digest(db)

    for args in READERS:  # reading commands work: the SQL file no longer breaks the catalog
        result = run_apm(*base, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    status = run_apm(*base, "status")
    assert "Pending:         2" in status.stdout

    for strict in ((), ("--strict",)):
        check = run_apm(*base, "migrate", "check", *strict)
        assert check.returncode == 3, check.stdout
        for path in (python_file, sql_file):
            assert f"empty-upgrade  {path.name}: its upgrade does nothing yet" in check.stdout, check.stdout
        assert f"empty-downgrade  {sql_file.name}" in check.stdout

    for args in RUNS:
        refused = run_apm(*base, *args)
        assert refused.returncode == 4, (args, refused.returncode, refused.stdout, refused.stderr)
        (line,) = refused.stderr.strip().splitlines()
        assert str(python_file) in line and "nothing yet" in line and "nothing was changed" in line, line
        assert "Traceback" not in refused.stdout
        assert digest(db) == before, args
    assert str(sql_file) in run_apm(*base, "migrate", "--yes").stderr

    # Written, both apply.
    python_file.write_text(python_file.read_text().replace(
        "    pass\n", "    conn.execute('CREATE TABLE wishlist (id INTEGER)')\n", 1))
    sql_file.write_text(sql_file.read_text().replace(
        "-- Write the forward change here", "CREATE TABLE coupons (id INTEGER);\n--", 1).replace(
        "-- Undo the upgrade here", "DROP TABLE coupons;\n--", 1))
    assert run_apm(*base, "migrate", "check", "--strict").returncode == 0
    done = run_apm(*base, "migrate", "--yes")
    assert done.returncode == 0 and "Applied 0003" in done.stdout, done.stderr


def test_an_unfilled_scaffold_on_an_empty_database_creates_nothing(catalog_dir: Path, tmp_path: Path):
    new(catalog_dir, "--root", "First")
    db = tmp_path / "new.db"
    refused = run_apm("--db", str(db), "--migrations-dir", str(catalog_dir), "migrate", "--yes")
    assert refused.returncode == 4 and "migration_0001_first.py" in refused.stderr
    assert not db.exists()


@pytest.mark.postgres
def test_postgres_refuses_an_unfilled_scaffold_too(pg_url: str, catalog_dir: Path):
    from tests.test_postgres import query

    python_file, sql_file = scaffolds(catalog_dir)
    base = ("--db", pg_url, "--migrations-dir", str(catalog_dir))
    assert run_apm(*base, "migrate", "--yes").returncode == 0
    new(catalog_dir, "Add wishlist")
    new(catalog_dir, "--sql", "Add coupons")
    assert run_apm(*base, "status").returncode == 0
    for args in (("migrate", "--yes"), ("migrate", "--no-preview", "--yes")):
        refused = run_apm(*base, *args)
        assert refused.returncode == 4 and str(python_file) in refused.stderr, refused.stderr
    assert query(pg_url, "SELECT version FROM schema_migrations") == [("0001",)]


def _pass(conn):
    pass


def _docstring(conn):
    """Nothing yet."""


def _ellipsis(conn): ...


def _returns(conn):
    return None


def _deliberate(conn):
    del conn  # a merge point: nothing to change, said in code


def _works(conn):
    conn.execute("CREATE TABLE t (id INTEGER)")


@pytest.mark.parametrize("function, empty", [(_pass, True), (_docstring, True), (_ellipsis, True), (_returns, True),
                                             (_deliberate, False), (_works, False)])
def test_what_counts_as_doing_nothing(function, empty):
    assert does_nothing(function) is empty
