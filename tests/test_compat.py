"""The seed's programmatic examples run as written, apart from the import line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import write_migration
from planner import DatabaseService, MigrationManager
from planner.compat import shipped_catalog_dir
from planner.errors import DependenciesNotApplied, RollbackRefused
from planner.engines.sqlite.ledger import read_ledger


@pytest.fixture
def seed_catalog(catalog_dir: Path) -> Path:
    """0001 → 0020 → 0027 → 0029, each creating a table, as in the seed's story."""
    for version, depends in [("0001", None), ("0020", ("0001",)), ("0027", ("0020",)), ("0029", ("0027",))]:
        write_migration(
            catalog_dir,
            version,
            depends_on=depends,
            upgrade=f'conn.execute("CREATE TABLE t{version} (x)")',
            downgrade=f'conn.execute("DROP TABLE t{version}")',
        )
    return catalog_dir


def test_database_service_migrate_returns_the_number_applied(tmp_path, seed_catalog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The seed's example, with the catalog passed explicitly:
    db = DatabaseService(".aipm/data/aipm.db", seed_catalog)
    result = db.migrate()  # Runs all pending migrations
    assert result == 4
    assert db.migrate() == 0
    conn = sqlite3.connect(".aipm/data/aipm.db")
    assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == ("0029",)
    conn.close()


def test_the_manager_example_runs_as_written(tmp_path, seed_catalog):
    db = DatabaseService(tmp_path / "aipm.db", seed_catalog)
    manager = MigrationManager(db)

    # Discover available migrations
    all_migrations = manager.discover_migrations()

    # Get pending migrations
    pending = manager.get_pending_migrations()

    # Run all pending migrations
    for migration in pending:
        manager.run_migration(migration)

    assert [m.version for m in all_migrations] == ["0001", "0020", "0027", "0029"]
    assert [m.version for m in pending] == ["0001", "0020", "0027", "0029"]
    assert list(read_ledger(tmp_path / "aipm.db")) == ["0001", "0020", "0027", "0029"]
    assert manager.get_pending_migrations() == []


def test_run_migration_refuses_to_skip_dependencies_and_is_idempotent(tmp_path, seed_catalog):
    manager = MigrationManager(tmp_path / "aipm.db", seed_catalog)
    with pytest.raises(DependenciesNotApplied) as info:
        manager.run_migration(manager.catalog["0029"])
    assert info.value.missing == ("0001", "0020", "0027")
    assert read_ledger(tmp_path / "aipm.db") == {}
    assert manager.run_migration("0001") is True
    assert manager.run_migration("0001") is False


def test_rollback_with_and_without_cascade(tmp_path, seed_catalog):
    path = tmp_path / "aipm.db"
    DatabaseService(path, seed_catalog).migrate()
    manager = MigrationManager(str(path), seed_catalog)
    with pytest.raises(RollbackRefused):
        manager.rollback("0027")
    assert manager.rollback("0029") == ["0029"]
    assert manager.rollback("0020", cascade=True) == ["0027", "0020"]
    assert list(read_ledger(path)) == ["0001"]
    assert [m.version for m in manager.get_pending_migrations()] == ["0020", "0027", "0029"]


def test_the_default_catalog_is_the_shipped_one(tmp_path):
    import apm_migrations

    assert shipped_catalog_dir() == Path(apm_migrations.__path__[0])
    assert DatabaseService(tmp_path / "x.db").migrations_dir == shipped_catalog_dir()
