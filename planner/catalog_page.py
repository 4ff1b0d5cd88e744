"""The catalog page of a migrations folder: a Markdown README generated from the files.

The seed kept a hand-written "Migration catalog" beside the files, and it
went stale. This page is computed from the catalog alone (no database, no
clock, no absolute path), so the same files always give the same bytes: a
test can compare the committed page with a fresh one and fail when someone
adds a migration without running ``apm migrate docs``.
"""

from __future__ import annotations

import re

from tabulate import tabulate

from planner.catalog import Catalog
from planner.diagram_formats import to_mermaid
from planner.migration import DECLARED, DOCUMENTED, IMPLIED, Migration

#: The command that writes this page; the page names it so a reader knows how to refresh it.
REGENERATE_COMMAND = "apm migrate docs"

#: How many hex digits of a checksum the table shows: enough to spot an edited file.
CHECKSUM_DIGITS = 12

_NONE = "—"

_SOURCE = {
    DECLARED: "declared in `depends_on`",
    DOCUMENTED: "from the docstring's `Dependencies:` section",
    IMPLIED: "implied: the previous version in numeric order",
}


def catalog_page(catalog: Catalog, title: str = "Migration catalog") -> str:
    """The Markdown page for ``catalog``: summary table, mermaid diagram and each migration's doc text.

    Deterministic by construction: it reads only versions, descriptions,
    dependencies, checksums, file names and docstrings.
    """
    graph = catalog.graph
    lines = [
        f"# {title}",
        "",
        f"This page is generated from the migration files in this folder; "
        f"run `{REGENERATE_COMMAND}` to regenerate it after adding or changing a migration, "
        f"rather than editing it by hand.",
        "",
    ]
    if len(catalog) == 0:
        lines += ["There are no migrations yet.", ""]
        return "\n".join(lines)

    rows = []
    for migration in catalog:
        rows.append(
            [
                migration.version,
                _cell(migration.description),
                _versions(graph.dependencies(migration.version)),
                _versions(graph.dependents(migration.version)),
                "yes" if migration.reversible else "no",
                f"`{migration.checksum[:CHECKSUM_DIGITS]}`",
            ]
        )
    headers = ["Version", "Description", "Depends on", "Dependents", "Can be rolled back", "Checksum"]
    lines += [
        "## Migrations",
        "",
        tabulate(rows, headers, tablefmt="github", disable_numparse=True),
        "",
        "## Dependency graph",
        "",
        "An arrow runs from a migration to a migration that depends on it.",
        "",
        "```mermaid",
        to_mermaid(catalog).rstrip("\n"),
        "```",
        "",
    ]
    for migration in catalog:
        lines += _section(catalog, migration)
    return "\n".join(lines)


def _section(catalog: Catalog, migration: Migration) -> list[str]:
    graph = catalog.graph
    needs = graph.dependencies(migration.version)
    source = f" ({_SOURCE[migration.dependency_source]})" if needs and migration.dependency_source in _SOURCE else ""
    lines = [
        f"## {_heading(migration.label)}",
        "",
        f"- File: [{migration.path.name}]({migration.path.name})",
        f"- Depends on: {_versions(needs)}{source}",
        f"- Dependents: {_versions(graph.dependents(migration.version))}",
        f"- Can be rolled back: {_rollback(migration)}",
        f"- Checksum (sha256): `{migration.checksum}`",
        "",
    ]
    body = _doc_body(migration)
    if body:
        # Docstrings are plain text, not Markdown: a fence keeps their layout and
        # stops a line such as "# notes" from becoming a heading of this page.
        fence = "`" * max(3, _longest_backtick_run(body) + 1)
        lines += [f"{fence}text", body, fence, ""]
    return lines


def _rollback(migration: Migration) -> str:
    if migration.reversible:
        return "yes"
    if migration.irreversible_reason is not None:
        return f"no (it is irreversible: {migration.irreversible_reason})"
    return "no (it defines no downgrade)"


def _doc_body(migration: Migration) -> str:
    """The docstring without its title line, which the section heading already shows."""
    lines = migration.doc.splitlines()
    if lines and migration.docstring_version is not None:
        lines = lines[1:]
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _versions(versions: list[str]) -> str:
    return ", ".join(versions) if versions else _NONE


def _cell(text: str) -> str:
    # A pipe would end the table cell early; GitHub reads \| as a literal pipe.
    return text.replace("|", "\\|")


def _heading(text: str) -> str:
    # Headings are one line; a stray # or leading/trailing space would change their meaning.
    return text.replace("\n", " ").strip()
