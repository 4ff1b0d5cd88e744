"""``create_migration``: numbering, default dependencies, refusals, and a file that runs once filled in."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import pytest

from cli.errors import message as command_message
from tests.conftest import write_migration
from planner.errors import (
    CatalogInvalid,
    CatalogNotFound,
    ConflictingDependencyOptions,
    InvalidDescription,
    MigrationError,
    MigrationFileExists,
    MigrationNotFound,
)
from planner.engines.sqlite.runner import Executor
from planner.loader import load_catalog
from planner.plan import apply_plan, rollback_plan
from planner.scaffold import DOWNGRADE_PLACEHOLDER, UPGRADE_PLACEHOLDER, create_migration, slugify


def files(directory: Path) -> list[str]:
    """The folder's files, without Python's own bytecode cache (written when a catalog is imported, unless
    PYTHONDONTWRITEBYTECODE is set)."""
    return sorted(p.name for p in directory.iterdir() if p.name != "__pycache__")


def loaded(path: Path):
    """The migration ``path`` defines, as the strict loader sees it with the rest of its catalog."""
    return next(m for m in load_catalog(path.parent) if m.path == path)


# -- numbering ------------------------------------------------------------------------------------


def test_first_migration_of_an_empty_catalog(catalog_dir):
    path = create_migration(catalog_dir, "Initial schema", author="WI-1", today=date(2025, 10, 18))
    assert path == catalog_dir / "migration_0001_initial_schema.py"
    text = path.read_text()
    assert text.startswith('"""\nMigration 0001: Initial schema\n')
    assert "Dependencies:\n- None\n" in text and "depends_on = ()\n" in text
    assert "Author: WI-1\nDate: 2025-10-18\n" in text
    migration = loaded(path)
    assert (migration.version, migration.description, migration.depends_on) == ("0001", "Initial schema", ())
    assert migration.documented_dependencies == () and migration.reversible


def test_numbering_continues_after_a_gap(catalog_dir):
    write_migration(catalog_dir, "0001", depends_on=())
    write_migration(catalog_dir, "0005", depends_on=("0001",))
    path = create_migration(catalog_dir, "Add feature_flags table")
    assert path.name == "migration_0006_add_feature_flags_table.py"
    assert loaded(path).depends_on == ("0005",)


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (["001"], "002"),
        (["1", "2"], "3"),
        (["0098", "0099"], "0100"),
        (["998", "999"], "1000"),
        (["7", "0010"], "0011"),
    ],
)
def test_numbering_keeps_the_catalogs_width(catalog_dir, existing, expected):
    for version in existing:
        write_migration(catalog_dir, version)
    path = create_migration(catalog_dir, "next")
    assert path.name == f"migration_{expected}_next.py"
    assert loaded(path).version == expected


@pytest.mark.parametrize(
    ("description", "slug"),
    [
        ("Add feature_flags table", "add_feature_flags_table"),
        ("  Fix agents.tier (TEXT -> INTEGER)!  ", "fix_agents_tier_text_integer"),
        ("Ünïcode names", "n_code_names"),
        ("0027 downgrade", "0027_downgrade"),
    ],
)
def test_slug(description, slug):
    assert slugify(description) == slug


# -- dependencies ---------------------------------------------------------------------------------


def test_default_dependencies_are_the_leaves_of_a_branching_catalog(seed_chain):
    # 0001 → 0020 → 0027 → 0029 and 0001 → 0030: two leaves, 0029 and 0030.
    path = create_migration(seed_chain, "Join both branches")
    assert path.name == "migration_0031_join_both_branches.py"
    text = path.read_text()
    assert "- Migration 0029 (Utility agents)\n- Migration 0030 (Feature flags)\n" in text
    assert 'depends_on = ("0029", "0030")' in text
    assert loaded(path).depends_on == ("0029", "0030")
    assert load_catalog(seed_chain).graph.leaf_nodes() == ["0031"]


def test_depends_on_overrides_the_leaves(seed_chain):
    path = create_migration(seed_chain, "Agent skills", depends_on=["27", "0020", "0027"])
    text = path.read_text()
    assert 'depends_on = ("0020", "0027")' in text  # catalog spelling, version order, no repeats
    assert "- Migration 0020 (Fix agents.tier)\n- Migration 0027 (Add metadata)\n" in text
    assert loaded(path).depends_on == ("0020", "0027")
    assert load_catalog(seed_chain).graph.leaf_nodes() == ["0029", "0030", "0031"]


def test_a_single_dependency_is_written_as_a_one_element_tuple(seed_chain):
    path = create_migration(seed_chain, "After 0027", depends_on=["0027"])
    assert 'depends_on = ("0027",)\n' in path.read_text()


def test_root_depends_on_nothing(seed_chain):
    path = create_migration(seed_chain, "Independent audit log", root=True)
    assert "Dependencies:\n- None\n" in path.read_text()
    assert loaded(path).depends_on == ()
    assert load_catalog(seed_chain).graph.root_nodes() == ["0001", "0031"]


# -- refusals: each writes nothing ----------------------------------------------------------------


def refused(directory: Path, error: type[Exception], description: str = "Add things", **kwargs) -> Exception:
    before = files(directory) if directory.is_dir() else None
    with pytest.raises(error) as caught:
        create_migration(directory, description, **kwargs)
    assert (files(directory) if directory.is_dir() else None) == before
    assert isinstance(caught.value, MigrationError)
    return caught.value


def test_refuses_a_catalog_that_does_not_load(seed_chain):
    (seed_chain / "migration_0031_broken.py").write_text('"""Migration 0031: broken"""\ndef upgrade(conn:\n')
    error = refused(seed_chain, CatalogInvalid)
    assert "migration_0031_broken.py" in str(error)


def test_refuses_a_catalog_with_an_unknown_dependency(seed_chain):
    write_migration(seed_chain, "0031", depends_on=("0028",))
    error = refused(seed_chain, CatalogInvalid)
    assert "0031 depends on 0028, which does not exist" in str(error)


def test_refuses_a_missing_folder(tmp_path):
    error = refused(tmp_path / "nowhere", CatalogNotFound)
    assert "nowhere does not exist" in str(error)


@pytest.mark.parametrize("description", ["!!!", "", "   ", "—"])
def test_refuses_a_description_without_a_slug(catalog_dir, description):
    error = refused(catalog_dir, InvalidDescription, description)
    assert isinstance(error, ValueError) and "no letters or digits" in str(error)


def test_refuses_a_description_of_several_lines(catalog_dir):
    error = refused(catalog_dir, InvalidDescription, "Add things\nand more")
    assert "one line" in str(error)


def test_refuses_an_unknown_dependency(seed_chain):
    error = refused(seed_chain, MigrationNotFound, depends_on=["0028"])
    assert error.version == "0028"


def test_refuses_root_with_dependencies(seed_chain):
    error = refused(seed_chain, ConflictingDependencyOptions, root=True, depends_on=["0001"])
    assert "dependencies 0001 were given" in str(error) and "--root" not in str(error)  # the fact
    assert command_message(error).endswith("pass either --root or --depends-on")  # the command's advice


def test_refuses_to_overwrite_an_existing_path(seed_chain):
    # Not a migration the loader sees (a folder), yet exactly the path the next file would take.
    (seed_chain / "migration_0031_add_things.py").mkdir()
    error = refused(seed_chain, MigrationFileExists)
    assert isinstance(error, FileExistsError)
    assert error.path == seed_chain / "migration_0031_add_things.py"
    assert (seed_chain / "migration_0031_add_things.py").is_dir()


# -- the created file runs once its body is written -------------------------------------------------


def fill(path: Path, upgrade: str, downgrade: str) -> None:
    """Do what the author does: replace the two placeholders, nothing else."""
    text = path.read_text()
    assert text.count(UPGRADE_PLACEHOLDER) == 1 and text.count(DOWNGRADE_PLACEHOLDER) == 1
    path.write_text(text.replace(UPGRADE_PLACEHOLDER, upgrade).replace(DOWNGRADE_PLACEHOLDER, downgrade))


def test_created_file_applies_and_rolls_back_with_the_executor(seed_chain, tmp_path):
    path = create_migration(seed_chain, "Add feature_flags table")
    fill(
        path,
        '    conn.execute("CREATE TABLE feature_flags (id INTEGER PRIMARY KEY, flag_name TEXT NOT NULL)")\n',
        '    conn.execute("DROP TABLE feature_flags")\n',
    )
    catalog = load_catalog(seed_chain)
    database = tmp_path / "apm.db"
    executor = Executor(database, create=True)

    executor.run(apply_plan(catalog, executor.applied()))
    applied = set(executor.applied())
    assert {int(v) for v in applied} == {1, 20, 27, 29, 30, 31}
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'feature_flags'").fetchone()

    executor.run(rollback_plan(catalog, applied, "0031"))
    assert {int(v) for v in executor.applied()} == {1, 20, 27, 29, 30}
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'feature_flags'").fetchone() is None


def test_an_unfilled_file_loads_but_the_executor_refuses_to_apply_it(catalog_dir, tmp_path):
    """Issue 22 point 10: an unfilled scaffold applied as "no schema or data change"; now the library refuses it."""
    from planner.errors import EmptyUpgrade

    path = create_migration(catalog_dir, "Placeholder only")
    catalog = load_catalog(catalog_dir)
    assert catalog.get("0001").unwritten == ("upgrade",)
    executor = Executor(tmp_path / "apm.db", create=True)
    for run in (executor.run, lambda plan: executor.run(plan, atomic=True)):
        with pytest.raises(EmptyUpgrade) as refused:
            run(apply_plan(catalog, ()))
        assert refused.value.paths == (path,)
    assert executor.applied() == {}
