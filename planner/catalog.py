"""A catalog: the migrations of one folder, by version, with their dependency graph.

Versions are strings as written in file names (``"0027"``) but compare by
number, so a dependency written ``"27"`` or ``"0027"`` names the same file and
a ledger row recorded as ``"27"`` still matches. ``canonical`` does that
translation once, here, so nothing downstream has to.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from planner.errors import CatalogError, MigrationNotFound, UnknownDependency
from planner.migration import Migration

if TYPE_CHECKING:  # networkx is imported only by commands that plan
    from planner.graph import MigrationGraph


def is_version(text: str) -> bool:
    """Whether ``text`` spells a version: ASCII digits only (``str.isdigit`` also accepts ``"²"``, which ``int`` rejects)."""
    return text.isascii() and text.isdigit()


class Catalog:
    """The loaded migrations of one folder, in numeric order, and the DAG they form."""

    def __init__(self, directory: Path, migrations: Iterable[Migration], graph: "MigrationGraph"):
        self.directory = directory
        self._migrations = {m.version: m for m in sorted(migrations, key=lambda m: m.number)}
        self._by_number = {m.number: m.version for m in self._migrations.values()}
        self.graph = graph

    @classmethod
    def build(
        cls, directory: Path, migrations: Iterable[Migration], unloadable: Collection[str] = ()
    ) -> tuple[Catalog, list[CatalogError]]:
        """Resolve each migration's dependencies to catalog versions and build the graph.

        ``unloadable`` are versions whose files failed to load: depending on
        them is not reported again as an unknown dependency.
        """
        from planner.graph import MigrationGraph

        migrations = list(migrations)
        by_number = {m.number: m.version for m in migrations}
        skip = {int(v) for v in unloadable}
        problems: list[CatalogError] = []
        resolved: list[Migration] = []
        for migration in migrations:
            needs: list[str] = []
            for dependency in migration.depends_on:
                canonical = by_number.get(int(dependency))
                if canonical is not None:
                    if canonical not in needs:
                        needs.append(canonical)
                elif int(dependency) not in skip:
                    problems.append(UnknownDependency(migration.version, dependency, migration.path))
            needs_tuple = tuple(needs)
            # replace() costs microseconds per migration; most already name canonical versions.
            resolved.append(migration if needs_tuple == migration.depends_on else replace(migration, depends_on=needs_tuple))
        graph, graph_problems = MigrationGraph.build({m.version: m.depends_on for m in resolved})
        paths = {m.version: m.path for m in resolved}
        for problem in graph_problems:
            if problem.path is None and problem.versions:
                problem.path = paths.get(problem.versions[0])
        problems.extend(graph_problems)
        return cls(directory, resolved, graph), problems

    def __iter__(self) -> Iterator[Migration]:
        return iter(self._migrations.values())

    def __len__(self) -> int:
        return len(self._migrations)

    def __contains__(self, version: object) -> bool:
        return isinstance(version, str) and self.canonical(version) is not None

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version, in numeric order."""
        return tuple(self._migrations)

    def canonical(self, version: str) -> str | None:
        """The catalog's spelling of ``version`` (``"27"`` → ``"0027"``), or ``None`` if it has none."""
        if version in self._migrations:
            return version
        if not is_version(version):
            return None
        return self._by_number.get(int(version))

    def get(self, version: str) -> Migration:
        """The migration for ``version`` in any spelling; ``MigrationNotFound`` if there is none."""
        canonical = self.canonical(version)
        if canonical is None:
            raise MigrationNotFound(version)
        return self._migrations[canonical]

    __getitem__ = get

    def split_applied(self, recorded: Iterable[str]) -> tuple[set[str], set[str]]:
        """Split versions recorded in a ledger into (known catalog versions, versions with no file)."""
        known: set[str] = set()
        unknown: set[str] = set()
        for version in recorded:
            canonical = self.canonical(version)
            if canonical is None:
                unknown.add(version)
            else:
                known.add(canonical)
        return known, unknown


