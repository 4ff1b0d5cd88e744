"""A catalog: the migrations of one folder, by version, with their dependency graph.

Versions are strings as written in file names (``"0027"``) but compare by
number (``planner.versions``), so a dependency written ``"27"`` or ``"0027"``
names the same file and a ledger row recorded as ``"27"`` still matches.
``canonical`` does that translation once, here, so nothing downstream has to.

Pausing Python's cyclic garbage collector while a large, long-lived structure is built.

Loading a catalog, building its graph and making a plan each create one
object per migration (or per dependency) and keep all of them. The cyclic
collector's passes over those new objects find nothing to free, yet on a
100,000-migration catalog they cost about a third of planning time and make it
grow faster than linearly (docs/performance.md). Reference counting still frees
everything as usual; only cycle detection waits until the block ends.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import ParamSpec, TypeVar

import apm_migrations

from planner.errors import CatalogError, MigrationNotFound, SquashConflict, UnknownDependency
from planner.graph import MigrationGraph
from planner.migration import Migration
from planner.versions import number


P = ParamSpec("P")
R = TypeVar("R")


class collector_paused:  # noqa: N801 (used as a function: ``with collector_paused():``)
    """Disable the cyclic collector for the block; restore it as it was found, even on error.

    A class, not a ``contextmanager`` generator: a planner call pauses it once per database of a fleet, and
    the generator's machinery cost a third of a small plan's making.
    """

    def __enter__(self) -> None:
        self.collecting = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.collecting:
            gc.enable()


def without_collector(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` with the cyclic collector paused (see ``collector_paused``)."""

    @functools.wraps(function)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        with collector_paused():
            return function(*args, **kwargs)

    return paused


def shipped_catalog_dir() -> Path:
    """The folder of APM's own migrations, wherever they were installed (the package ``apm_migrations``).

    The repository keeps them in ``migrations/``; the wheel installs that folder
    under a name no other project will use. Migrations are loaded by path, so
    only the folder is needed, never an import of its modules.
    """
    return Path(next(iter(apm_migrations.__path__)))


class Catalog:
    """The loaded migrations of one folder, in numeric order, and the DAG they form."""

    directory: Path
    graph: MigrationGraph
    #: Migrations a squash replaces, by version: loaded, but outside the graph while their squash is there.
    replaced: dict[str, Migration] = {}  # noqa: RUF012 (read only; build() sets the instance's own)
    _squash_of: dict[int | None, str] = {}  # noqa: RUF012
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
        migrations = list(migrations)
        migrations, squash_of, replaced, squash_problems = _apply_squashes(migrations)
        numbers = {m.version: m.number for m in migrations}
        by_number: dict[int | None, str] = {number: version for version, number in numbers.items()}
        # Usually every dependency is already spelled as its file is; only the
        # migrations naming some other spelling (or nothing at all) need resolving.
        named = set(chain.from_iterable(m.depends_on for m in migrations))
        odd = named - numbers.keys()
        problems: list[CatalogError] = list(squash_problems)
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
        catalog.replaced = replaced
        catalog._squash_of = {number(v): s for v, s in squash_of.items()}
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
        if self._squash_of and unknown:
            # Rows of replaced migrations stand for their squash: applied once all of them are.
            for squash, (applied, missing) in self.squash_states(unknown).items():
                unknown.difference_update(applied)
                if not missing:
                    known.add(squash)
        return known, unknown

    @property
    def has_squashes(self) -> bool:
        """Whether some migration ``replaces`` others (only then do ledgers need translating)."""
        return bool(self._squash_of)

    def squash_of(self, version: str) -> str | None:
        """The squash that replaces ``version`` (any spelling), or ``None``."""
        return self._squash_of.get(number(version)) if self._squash_of else None

    def squash_states(self, recorded: Iterable[str]) -> dict[str, tuple[list[str], list[str]]]:
        """For each squash some of whose replaced migrations are in ``recorded``: (those rows, the replaced
        versions missing from it). A squash with rows missing is partially applied, which plans refuse."""
        found: dict[str, list[str]] = {}
        for version in recorded:
            squash = self.squash_of(version)
            if squash is not None:
                found.setdefault(squash, []).append(version)
        states = {}
        for squash, rows in found.items():
            have = {number(v) for v in rows}
            missing = [v for v in self._migrations[squash].replaces if number(v) not in have]
            states[squash] = (rows, missing)
        return states


def _apply_squashes(
    migrations: list[Migration],
) -> tuple[list[Migration], dict[str, str], dict[str, Migration], list[CatalogError]]:
    """Take the migrations a squash ``replaces`` out of the graph and point their dependents at the squash.

    Django's rule: the replaced files may stay (until every database has
    moved past them), but the graph holds the squash alone, so a fresh
    database applies it instead of the chain. Returns (the migrations of the
    graph, replaced version → squash, the replaced migrations, problems).
    """
    squashes = [m for m in migrations if m.replaces]
    if not squashes:
        return migrations, {}, {}, []

    problems: list[CatalogError] = []
    by_number: dict[int | None, str] = {m.number: m.version for m in migrations}  # looked up with number(), maybe None
    squash_of: dict[str, str] = {}
    for squash in squashes:
        for version in squash.replaces:
            canonical = by_number.get(number(version), version)
            if canonical in squash_of or canonical == squash.version:
                problems.append(SquashConflict(squash.version, canonical, squash.path))
                continue
            squash_of[canonical] = squash.version
    kept: list[Migration] = []
    replaced: dict[str, Migration] = {}
    for migration in migrations:
        if migration.version in squash_of:
            replaced[migration.version] = migration
            continue
        needs = tuple(dict.fromkeys(squash_of.get(by_number.get(number(d), d), d) for d in migration.depends_on))
        kept.append(migration if needs == migration.depends_on else replace(migration, depends_on=needs))
    return kept, squash_of, replaced, problems
