"""The generated catalog page: complete, deterministic, and safe to compare byte for byte."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import write_migration
from planner.diagram import REGENERATE_COMMAND, catalog_page
from planner.diagram import to_mermaid
from planner.loader import load_catalog


@pytest.fixture
def branching_dir(catalog_dir: Path) -> Path:
    """Two roots and a diamond, one irreversible migration, and docstrings that fight Markdown."""
    write_migration(catalog_dir, "0001", "Projects table", depends_on=())
    write_migration(catalog_dir, "0002", "Agents table", documented=("0001",))
    write_migration(catalog_dir, "0003", "Work items | tags", depends_on=("0001",), downgrade=None)
    write_migration(catalog_dir, "0004", "Link agents", depends_on=("0002", "0003"))
    write_migration(catalog_dir, "0010", "Audit log", depends_on=())
    # A docstring with a Markdown heading and a code fence of its own.
    (catalog_dir / "migration_0011.py").write_text(
        '"""Migration 0011: Audit indexes\n\n# not a heading\n\n```sql\nCREATE INDEX x ON audit(at)\n```\n"""\n'
        'depends_on = ("0010",)\n\ndef upgrade(conn):\n    pass\n'
    )
    return catalog_dir


def table_rows(page: str) -> dict[str, list[str]]:
    rows = {}
    for line in page.splitlines():
        match = re.match(r"^\| (\d{4}) ", line)
        if match:
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[match.group(1)] = cells
    return rows


@pytest.mark.parametrize("directory", ["seed_chain", "branching_dir"])
def test_page_lists_every_migration(directory: str, request: pytest.FixtureRequest) -> None:
    catalog = load_catalog(request.getfixturevalue(directory))
    page = catalog_page(catalog)
    assert page.startswith("# Migration catalog\n")
    assert f"`{REGENERATE_COMMAND}`" in page
    rows = table_rows(page)
    assert list(rows) == list(catalog.versions)
    for migration in catalog:
        version = migration.version
        _, description, depends_on, dependents, reversible, checksum = rows[version]
        assert description.replace("\\|", "|") == migration.description
        assert depends_on == (", ".join(catalog.graph.dependencies(version)) or "—")
        assert dependents == (", ".join(catalog.graph.dependents(version)) or "—")
        assert reversible == ("yes" if migration.reversible else "no")
        assert checksum == f"`{migration.checksum[:12]}`"
        assert f"\n## {migration.label}\n" in page
    assert "```mermaid\n" + to_mermaid(catalog) + "```\n" in page


def test_page_has_the_table_header_and_each_doc(branching_dir: Path) -> None:
    page = catalog_page(load_catalog(branching_dir))
    assert "| Version | Description | Depends on | Dependents | Can be rolled back | Checksum |" in re.sub(
        r" +", " ", page
    )
    assert "Work items \\| tags" in page  # a pipe must not split the table cell
    # The docstring keeps its layout inside a fence longer than its own, so it adds no heading.
    assert "\n````text\n# not a heading\n\n```sql\nCREATE INDEX x ON audit(at)\n```\n````\n" in page
    assert "\n# not a heading" not in page.replace("````text\n# not a heading", "")
    assert "- Can be rolled back: no (it defines no downgrade)" in page
    assert "- Depends on: 0001 (from the docstring's `Dependencies:` section)" in page
    assert "[migration_0011.py](migration_0011.py)" in page


def test_page_is_deterministic_and_location_free(branching_dir: Path, tmp_path: Path) -> None:
    page = catalog_page(load_catalog(branching_dir))
    assert page == catalog_page(load_catalog(branching_dir))
    copy = tmp_path / "elsewhere" / "migrations"
    shutil.copytree(branching_dir, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert catalog_page(load_catalog(copy)) == page  # the folder's location is not in the page
    assert str(branching_dir) not in page and str(tmp_path) not in page
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", page)  # no dates
    assert page.endswith("\n") and not page.endswith("\n\n")


def test_page_changes_when_a_migration_changes(seed_chain: Path) -> None:
    before = catalog_page(load_catalog(seed_chain))
    write_migration(seed_chain, "0031", "Agent roles", depends_on=("0029",))
    after = catalog_page(load_catalog(seed_chain))
    assert before != after
    assert "| 0031 " in after and "m0029 --> m0031" in after


def test_page_for_an_empty_folder(catalog_dir: Path) -> None:
    page = catalog_page(load_catalog(catalog_dir))
    assert "There are no migrations yet." in page and REGENERATE_COMMAND in page
