"""A catalog: the migrations of one folder, by version, with their dependency graph.

Versions are strings as written in file names (``"0027"``) but compare by
number (``planner.versions``), so a dependency written ``"27"`` or ``"0027"``
names the same file and a ledger row recorded as ``"27"`` still matches.
``canonical`` does that translation once, here, so nothing downstream has to.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from planner.errors import CatalogError, MigrationNotFound, UnknownDependency
from planner.gcpause import without_collector
from planner.migration import Migration
from planner.versions import number

if TYPE_CHECKING:  # networkx is imported only by commands that plan
    from planner.graph import MigrationGraph


def shipped_catalog_dir() -> Path:
    """The folder of APM's own migrations, wherever they were installed (the package ``apm_migrations``).

    The repository keeps them in ``migrations/``; the wheel installs that folder
    under a name no other project will use. Migrations are loaded by path, so
    only the folder is needed, never an import of its modules.
    """
    import apm_migrations

    return Path(next(iter(apm_migrations.__path__)))


class Catalog:
    """The loaded migrations of one folder, in numeric order, and the DAG they form."""

    directory: Path
    graph: MigrationGraph
    _migrations: dict[str, Migration]
    _by_number: dict[int, str]

    @classmethod
    @without_collector
    def build(
        cls, directory: Path, migrations: Iterable[Migration], unloadable: Collection[str] = ()
    ) -> tuple[Catalog, list[CatalogError]]:
        """Resolve each migration's dependencies to catalog versions and build the graph.

        ``unloadable`` are versions whose files failed to load: depending on
        them is not reported again as an unknown dependency.
        """
        from planner.graph import MigrationGraph

        migrations = list(migrations)
        numbers = {m.version: m.number for m in migrations}
        by_number = {number: version for version, number in numbers.items()}
        # Usually every dependency is already spelled as its file is; only the
        # migrations naming some other spelling (or nothing at all) need resolving.
        named = set(chain.from_iterable(m.depends_on for m in migrations))
        odd = named - numbers.keys()
        problems: list[CatalogError] = []
        if odd:
            skip = {number(v) for v in unloadable}
            resolved: list[Migration] = []
            for migration in migrations:
                if odd.isdisjoint(migration.depends_on):
                    resolved.append(migration)
                    continue
                needs: list[str] = []
                for dependency in migration.depends_on:
                    canonical = by_number.get(number(dependency))
                    if canonical is not None:
                        if canonical not in needs:
                            needs.append(canonical)
                    elif number(dependency) not in skip:
                        problems.append(UnknownDependency(migration.version, dependency, migration.path))
                resolved.append(replace(migration, depends_on=tuple(needs)))
            migrations = resolved
        by_version = {m.version: m for m in migrations}
        ordered = sorted(by_version, key=numbers.__getitem__)
        graph, graph_problems = MigrationGraph.build(
            {v: by_version[v].depends_on for v in ordered}, numbers, in_number_order=True
        )
        if graph_problems:
            paths = {m.version: m.path for m in migrations}
            for problem in graph_problems:
                if problem.path is None and problem.versions:
                    problem.path = paths.get(problem.versions[0])
            problems.extend(graph_problems)
        # Built here, once, from numbers already parsed: there is no other constructor.
        catalog = cls.__new__(cls)
        catalog.directory = directory
        catalog._migrations = {v: by_version[v] for v in ordered}
        catalog._by_number = {numbers[v]: v for v in ordered}
        catalog.graph = graph
        return catalog, problems

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
        value = number(version)
        return None if value is None else self._by_number.get(value)

    def get(self, version: str) -> Migration:
        """The migration for ``version`` in any spelling; ``MigrationNotFound`` if there is none."""
        migration = self._migrations.get(version)
        if migration is not None:
            return migration
        canonical = self.canonical(version)
        if canonical is None:
            raise MigrationNotFound(version)
        return self._migrations[canonical]

    __getitem__ = get

    def in_order(self, versions: Iterable[str]) -> list[Migration]:
        """The migrations of catalog versions, in the order given: how plans turn an order into steps.

        Versions must be spelled as the catalog spells them (what the graph
        returns); it is a plain lookup because plans call it for every step.
        """
        migrations = self._migrations
        return [migrations[v] for v in versions]

    def split_applied(self, recorded: Iterable[str]) -> tuple[set[str], set[str]]:
        """Split versions recorded in a ledger into (known catalog versions, versions with no file)."""
        recorded = set(recorded)
        known = recorded & self._migrations.keys()
        unknown: set[str] = set()
        for version in recorded - known:
            canonical = self.canonical(version)
            if canonical is None:
                unknown.add(version)
            else:
                known.add(canonical)
        return known, unknown


