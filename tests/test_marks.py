"""Manual marks: the refusals (pure) and the marks themselves on a real ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from planner.errors import (
    AlreadyApplied,
    MarkAppliedRefused,
    MarkRefused,
    MarkRolledBackRefused,
    MigrationNotFound,
    NotApplied,
    PlanError,
    UnknownAppliedMigration,
)
from planner.engines.sqlite.runner import Executor
from planner.engines.sqlite.ledger import Ledger, read_ledger
from planner.loader import load_catalog
from planner.engines import engine_for
from planner.marks import check_mark_applied, check_mark_rolled_back, mark


def mark_applied(db, catalog, version):
    return mark(engine_for(db), catalog, version, applied=True)


def mark_rolled_back(db, catalog, version):
    return mark(engine_for(db), catalog, version, applied=False)
from planner.plan import apply_plan


@pytest.fixture
def catalog(seed_chain):
    """0001 root, 0020 → 0027 → 0029, and 0030 on 0001."""
    return load_catalog(seed_chain)


# --------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------


def test_mark_applied_needs_the_dependencies_applied(catalog):
    with pytest.raises(MarkAppliedRefused) as refused:
        check_mark_applied(catalog, ["0001"], "0027")
    assert refused.value.version == "0027" and refused.value.blockers == ("0020",)
    assert "its dependencies 0020 are not applied; nothing was recorded" in str(refused.value)
    assert isinstance(refused.value, (MarkRefused, PlanError))
    assert check_mark_applied(catalog, ["0001", "0020"], "0027").version == "0027"


def test_a_root_can_be_marked_on_an_empty_ledger(catalog):
    assert check_mark_applied(catalog, [], "0001").version == "0001"


def test_mark_applied_refuses_what_is_applied_or_unknown(catalog):
    with pytest.raises(AlreadyApplied):
        check_mark_applied(catalog, ["0001", "20"], "0020")  # ledger spellings compare by number
    with pytest.raises(MigrationNotFound):
        check_mark_applied(catalog, [], "0099")


def test_mark_rolled_back_is_refused_while_applied_dependents_exist(catalog):
    applied = ["0001", "0020", "0027", "0029", "0030"]
    with pytest.raises(MarkRolledBackRefused) as refused:
        check_mark_rolled_back(catalog, applied, "0020")
    assert refused.value.blockers == ("0027", "0029")  # direct and indirect dependents, by version
    assert "applied migration(s) 0027, 0029 depend on it" in str(refused.value)
    with pytest.raises(MarkRolledBackRefused) as refused:
        check_mark_rolled_back(catalog, applied, "0001")
    assert refused.value.blockers == ("0020", "0027", "0029", "0030")
    assert check_mark_rolled_back(catalog, applied, "0029").version == "0029"


def test_dependents_that_are_not_applied_do_not_block(catalog):
    assert check_mark_rolled_back(catalog, ["0001", "0020"], "0020").version == "0020"


def test_mark_rolled_back_refuses_what_is_not_applied_or_unknown(catalog):
    with pytest.raises(NotApplied):
        check_mark_rolled_back(catalog, ["0001"], "0020")
    with pytest.raises(MigrationNotFound):
        check_mark_rolled_back(catalog, ["0001"], "0099")


def test_a_recorded_migration_without_its_file_can_be_marked_rolled_back(catalog):
    """Issue 22 point 4: the way out of a rollback refused because of a missing file (MissingFileInScope)."""
    stand_in = check_mark_rolled_back(catalog, ["0001", "0045"], "45")
    assert stand_in.version == "0045" and stand_in.downgrade is None and stand_in.depends_on == ()


# --------------------------------------------------------------------------
# The marks, on a real database
# --------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path, catalog) -> Path:
    path = tmp_path / "app.db"
    Executor(path, create=True).run(apply_plan(catalog, [], target="0001"))
    return path


def history(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return [(e.version, e.action, e.outcome) for e in Ledger(conn).history()]
    finally:
        conn.close()


def test_mark_applied_records_the_row_with_its_checksum_and_logs_it(db, catalog):
    migration = mark_applied(db, catalog, "0020")
    entry = read_ledger(db)["0020"]
    assert entry.checksum == migration.checksum == catalog["0020"].checksum
    assert history(db)[-1] == ("0020", "mark-applied", "ok")


def test_mark_rolled_back_removes_the_row_and_logs_it(db, catalog):
    mark_applied(db, catalog, "0030")
    mark_rolled_back(db, catalog, "0030")
    assert "0030" not in read_ledger(db)
    assert history(db)[-2:] == [("0030", "mark-applied", "ok"), ("0030", "mark-rolled-back", "ok")]


def test_a_refused_mark_changes_nothing(db, catalog):
    before = db.read_bytes()
    with pytest.raises(MarkAppliedRefused):
        mark_applied(db, catalog, "0029")
    mark_applied(db, catalog, "0020")
    mark_applied(db, catalog, "0027")
    with pytest.raises(MarkRolledBackRefused):
        mark_rolled_back(db, catalog, "0020")
    assert set(read_ledger(db)) == {"0001", "0020", "0027"}
    assert before != db.read_bytes()  # the successful marks did write


def test_mark_applied_does_not_run_the_migration(tmp_path, catalog_dir):
    from tests.conftest import write_migration

    write_migration(catalog_dir, "0001", depends_on=(), upgrade="conn.execute('CREATE TABLE made (x)')")
    catalog = load_catalog(catalog_dir)
    path = tmp_path / "m.db"
    sqlite3.connect(path).close()
    mark_applied(path, catalog, "0001")
    conn = sqlite3.connect(path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert "made" not in tables and "schema_migrations" in tables
