"""Writing a new migration file: the library behind ``apm migrate new``.

The seed's guide had authors find the next number with ``ls | tail -1`` and
paste a template. Here the number comes from the loaded catalog, and the
dependencies default to the graph's current leaves, so a new migration lands
after everything that exists rather than beside an unrelated branch. The file
it writes loads as it is: its ``depends_on`` and its docstring's
``Dependencies:`` section are written from the same list, so they agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

from planner import versions
from planner.catalog import Catalog
from planner.errors import ConflictingDependencyOptions, InvalidDescription, MigrationFileExists
from planner.loader import FILE_PREFIX, load_catalog, sql_migration_source

__all__ = ["create_migration", "migration_source", "next_version", "slugify"]

DEFAULT_WIDTH = 4
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# The placeholders a test or an author replaces: one line each, unique in the file.
UPGRADE_PLACEHOLDER = "    # Write the forward change here, e.g. conn.execute(\"CREATE TABLE ...\").\n    pass\n"
DOWNGRADE_PLACEHOLDER = (
    "    # Undo upgrade() here, e.g. conn.execute(\"DROP TABLE ...\"); delete downgrade() if it cannot be undone.\n"
    "    pass\n"
)


def slugify(description: str) -> str:
    """The file-name part of a description: ``Add feature_flags table`` → ``add_feature_flags_table``.

    Only ASCII letters and digits survive, because the loader accepts no
    other characters in a migration's file name.
    """
    return _NOT_SLUG.sub("_", description.lower()).strip("_")


def next_version(catalog: Catalog, recorded: Iterable[str] = ()) -> str:
    """One above the highest version in the catalog *and* the ledger, as wide as the catalog writes them.

    ``recorded`` is what a ledger holds: a deleted file's version is still
    recorded as applied there, and a new file reusing that number would be
    taken for applied and never run.
    """
    digits = versions.width(catalog.versions) if catalog.versions else DEFAULT_WIDTH
    return versions.next_free([*catalog.versions, *recorded], digits)


def _docstring_text(text: str) -> str:
    """``text`` escaped so that it reads back unchanged inside a triple-quoted docstring."""
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def migration_source(
    version: str, description: str, dependencies: Sequence[tuple[str, str]], author: str, today: date
) -> str:
    """The text of a new migration file; ``dependencies`` are (version, description) pairs."""
    listed = [f"- Migration {v} ({_docstring_text(d)})" if d else f"- Migration {v}" for v, d in dependencies]
    versions = [v for v, _ in dependencies]
    depends_on = "(" + ", ".join(f'"{v}"' for v in versions) + ("," if len(versions) == 1 else "") + ")"
    return (
        f'"""\n'
        f"Migration {version}: {_docstring_text(description)}\n"
        f"\n"
        f"Explain what this migration changes and why (replace this line).\n"
        f"\n"
        f"Dependencies:\n"
        + "".join(line + "\n" for line in listed or ["- None"])
        + f"\n"
        f"Author: {_docstring_text(author)}\n"
        f"Date: {today.isoformat()}\n"
        f'"""\n'
        f"\n"
        f"import sqlite3\n"
        f"\n"
        f"depends_on = {depends_on}\n"
        f"\n"
        f"\n"
        f"def upgrade(conn: sqlite3.Connection) -> None:\n"
        f'    """Apply the change (say what it does)."""\n'
        f"{UPGRADE_PLACEHOLDER}"
        f"\n"
        f"\n"
        f"def downgrade(conn: sqlite3.Connection) -> None:\n"
        f'    """Undo upgrade() (say what is lost, if anything)."""\n'
        f"{DOWNGRADE_PLACEHOLDER}"
    )


def create_migration(
    directory: Path | str,
    description: str,
    *,
    depends_on: Sequence[str] | None = None,
    root: bool = False,
    author: str | None = None,
    today: date | None = None,
    recorded: Iterable[str] = (),
    sql: bool = False,
) -> Path:
    """Write the next migration file of the catalog in ``directory`` and return its path.

    Refuses (``CatalogInvalid``) a catalog that does not load: numbering or
    attaching a migration to a broken graph would hide the problem.
    ``depends_on`` overrides the default of the graph's leaves, and each
    version must exist (``MigrationNotFound``); ``root`` makes a migration
    that depends on nothing. ``recorded`` (the ledger's versions) keeps the
    new number above any version applied somewhere. ``sql`` writes
    ``migration_<version>_<slug>.sql`` (planner.loader) instead,
    numbered and wired the same way. Never overwrites a file.
    """
    description = description.strip()
    if "\n" in description or "\r" in description:
        raise InvalidDescription(description, "a description is one line (the docstring's title)")
    slug = slugify(description)
    if not slug:
        raise InvalidDescription(description, "it has no letters or digits to make a file name from")
    if root and depends_on:
        raise ConflictingDependencyOptions(depends_on)

    catalog = load_catalog(directory)
    if root:
        needs: list[str] = []
    elif depends_on is not None:
        needs = versions.ordered({catalog.get(v).version for v in depends_on})
    else:
        needs = catalog.graph.leaf_nodes()

    version = next_version(catalog, recorded)
    if sql:
        source = sql_migration_source(version, description, [(v, catalog.get(v).description) for v in needs])
        return _write_new(Path(directory) / f"{FILE_PREFIX}{version}_{slug}.sql", source)
    source = migration_source(
        version,
        description,
        [(v, catalog.get(v).description) for v in needs],
        author or "WI-XXX",
        today or date.today(),
    )
    return _write_new(Path(directory) / f"{FILE_PREFIX}{version}_{slug}.py", source)


def _write_new(path: Path, source: str) -> Path:
    try:
        with path.open("x", encoding="utf-8") as file:  # "x": another author's file is never overwritten
            file.write(source)
    except FileExistsError as exc:
        raise MigrationFileExists(path) from exc
    return path
