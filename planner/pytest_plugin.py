"""apm-migrate's pytest plugin: every migration of a catalog applies, rolls back and re-applies.

Registered through the ``pytest11`` entry point as ``apm``, so every pytest
run on a machine with apm-migrate installed loads this module, and it stays
inert until asked: ``pytest --apm-migrations DIR`` or ``apm_migrations = DIR``
in the pytest configuration. Until then it adds two options and a few
fixtures, and imports nothing of the planner (no networkx, no sqlite3).

Switched on, it adds one test item per check, ahead of the collected tests
(see docs/testing.md): ``catalog``, ``upgrade``, ``stairway[V]`` for every
version in the graph's topological order (``no-downgrade[V]``, an expected
failure, for a migration without ``downgrade``), and ``downgrade-all``. The
checks live in ``planner.testing.runner``; this module only turns them into
items, outcomes and messages.

The items are added in ``pytest_collection_modifyitems`` (first, so ``-k``,
``-m`` and ``--lf`` see them) through ``Session.genitems``, so they are
counted and reported like collected ones, and appear under
``--collect-only``. They are not reached from the command line's paths: the
catalog is a folder of migrations, not of tests, and it may live anywhere.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from planner.catalog import Catalog
    from planner.testing.databases import SQLiteDatabase
    from planner.testing.migrator import Migrator
    from planner.testing.stairway import Stairway


@dataclass
class ApmSettings:
    """The plugin's configuration for one pytest run, once switched on."""

    directory: Path
    db_template: str | None
    #: Where the catalog was named: the command line or the configuration file (for messages).
    source: str
    stairway: Stairway | None = None
    catalog: Catalog | None = None
    _base: Path | None = None
    _names: dict[str, itertools.count] = field(default_factory=dict)


_SETTINGS = pytest.StashKey[ApmSettings]()


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from planner.testing import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("apm", "apm-migrate: generated migration tests")
    group.addoption(
        "--apm-migrations", metavar="DIR", dest="apm_migrations", default=None,
        help="test every migration of the catalog in DIR: catalog, upgrade, stairway[V], downgrade-all",
    )
    group.addoption(
        "--apm-db", metavar="TEMPLATE", dest="apm_db", default=None,
        help="where the migration tests' databases go: a SQLite path template containing {name}, "
             "e.g. /tmp/apm/{name}.db (default: a fresh file per test under pytest's temporary folder)",
    )
    parser.addini("apm_migrations", "the catalog folder whose migrations pytest should test (like --apm-migrations)")
    parser.addini("apm_db", "a SQLite path template containing {name} for the migration tests (like --apm-db)")


def pytest_configure(config: pytest.Config) -> None:
    directory, source = config.getoption("apm_migrations"), "--apm-migrations"
    base = config.invocation_params.dir
    if not directory:
        directory, source = config.getini("apm_migrations"), "apm_migrations"
        base = config.inipath.parent if config.inipath else config.rootpath
    template = config.getoption("apm_db") or config.getini("apm_db") or None
    if template:
        from planner.testing.databases import DatabaseTemplateError, check_template

        try:
            check_template(template)
        except DatabaseTemplateError as exc:
            raise pytest.UsageError(str(exc)) from exc
    if not directory:
        return
    config.stash[_SETTINGS] = ApmSettings((base / os.path.expanduser(directory)).resolve(), template, source)


def pytest_report_header(config: pytest.Config) -> str | None:
    settings = config.stash.get(_SETTINGS, None)
    if settings is None:
        return None
    where = settings.db_template or "a fresh SQLite file per test under pytest's temporary folder"
    return f"apm: testing the migrations of {settings.directory} (from {settings.source}); databases: {where}"


# --------------------------------------------------------------------------
# Generated items
# --------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash.get(_SETTINGS, None)
    if settings is None:
        return
    catalog_node = ApmCatalog.from_parent(
        session, name=_node_name(settings.directory, config), path=settings.directory, settings=settings
    )
    items[:0] = list(session.genitems(catalog_node))


def _node_name(directory: Path, config: pytest.Config) -> str:
    try:
        return directory.relative_to(config.rootpath).as_posix() or "."
    except ValueError:
        return directory.as_posix()


class ApmCatalog(pytest.Collector):
    """The generated tests of one catalog; its node id is the catalog folder."""

    def __init__(self, *, settings: ApmSettings, **kwargs: Any):
        super().__init__(nodeid=kwargs["name"], **kwargs)
        self.settings = settings

    def collect(self) -> list[ApmItem]:
        from planner.errors import CatalogError
        from planner.loader import load_catalog

        items = [ApmItem.from_parent(self, name="catalog", check="catalog")]
        try:
            catalog = load_catalog(self.settings.directory)
        except CatalogError:
            return items  # the catalog item says what is wrong; nothing else can run
        self.settings.catalog = catalog
        items.append(ApmItem.from_parent(self, name="upgrade", check="upgrade"))
        for version in catalog.graph.topological_order():
            check = "stairway" if catalog.get(version).reversible else "no-downgrade"
            items.append(ApmItem.from_parent(self, name=f"{check}[{version}]", check=check, version=version))
        items.append(ApmItem.from_parent(self, name="downgrade-all", check="downgrade-all"))
        return items


class ApmItem(pytest.Item):
    """One generated migration test; its name carries the version it is about."""

    def __init__(self, *, check: str, version: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.check = check
        self.version = version

    @property
    def settings(self) -> ApmSettings:
        return self.config.stash[_SETTINGS]

    def runtest(self) -> None:
        from planner.testing.runner import (
            MigrationRunner,
            NoDowngrade,
            StairBlocked,
            check_catalog,
            check_downgrade_all,
            check_upgrade,
        )

        settings = self.settings
        if self.check == "catalog":
            for warning in check_catalog(settings.directory):
                self.add_report_section("call", "apm check warnings", warning)
            return
        catalog = settings.catalog
        assert catalog is not None
        try:
            if self.check == "upgrade":
                check_upgrade(MigrationRunner(catalog, _database(self.config, "upgrade"), _seed(self.config)))
            elif self.check == "downgrade-all":
                check_downgrade_all(
                    MigrationRunner(catalog, _database(self.config, "downgrade-all"), _seed(self.config))
                )
            else:
                assert self.version is not None
                _stairway(self.config).climb(self.version)
        except StairBlocked as blocked:
            pytest.skip(str(blocked))
        except NoDowngrade as expected:
            pytest.xfail(str(expected))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from planner.testing.runner import MigrationTestFailure

        if isinstance(excinfo.value, MigrationTestFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"apm {self.name}"


def _base_folder(config: pytest.Config) -> Path:
    settings = config.stash[_SETTINGS]
    if settings._base is None:
        # pytest's own temporary folder (basetemp, kept for the last runs) when the tmpdir plugin is loaded.
        factory = getattr(config, "_tmp_path_factory", None)
        if factory is not None:
            settings._base = factory.mktemp("apm", numbered=True)
        else:
            import tempfile

            settings._base = Path(tempfile.mkdtemp(prefix="apm-"))
    return settings._base


def _database(config: pytest.Config, name: str) -> SQLiteDatabase:
    """A database for the test ``name``, never one an earlier test of this run used."""
    from planner.testing.databases import SQLiteDatabase, safe_name

    settings = config.stash[_SETTINGS]
    counter = settings._names.setdefault(name, itertools.count(1))
    number = next(counter)
    unique = name if number == 1 else f"{name}-{number}"
    if settings.db_template:
        return SQLiteDatabase.from_template(settings.db_template, unique)
    return SQLiteDatabase(_base_folder(config) / f"{safe_name(unique)}.db")


def _seed(config: pytest.Config):
    hook = config.hook.pytest_apm_seed

    def seed(version: str, connection: Any) -> None:
        hook(version=version, connection=connection)

    return seed


def _stairway(config: pytest.Config) -> Stairway:
    """The run's one stairway walker, shared by every ``stairway[V]`` item (see ``Stairway``)."""
    from planner.testing.stairway import Stairway

    settings = config.stash[_SETTINGS]
    if settings.stairway is None:
        assert settings.catalog is not None
        settings.stairway = Stairway(settings.catalog, lambda: _database(config, "stairway"), _seed(config))
    return settings.stairway


# --------------------------------------------------------------------------
# Fixtures for hand-written tests
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def apm_migrations_dir(pytestconfig: pytest.Config) -> Path:
    """The catalog folder under test: ``--apm-migrations`` or ``apm_migrations``; override it to test another."""
    settings = pytestconfig.stash.get(_SETTINGS, None)
    if settings is None:
        pytest.fail(
            "no catalog to test: pass --apm-migrations DIR, set apm_migrations = DIR in the pytest "
            "configuration, or override the apm_migrations_dir fixture",
            pytrace=False,
        )
    return settings.directory


@pytest.fixture(scope="session")
def apm_catalog(apm_migrations_dir: Path) -> Catalog:
    """The loaded catalog (``planner.catalog.Catalog``): versions, migrations, and the graph."""
    from planner.loader import load_catalog

    return load_catalog(apm_migrations_dir)


@pytest.fixture
def apm_migrator(apm_catalog: Catalog, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Migrator]:
    """A fresh database for this test and a ``Migrator`` to move it: ``migrate_to``, ``rollback``, ``connection``."""
    from planner.testing.databases import SQLiteDatabase
    from planner.testing.migrator import Migrator

    settings = request.config.stash.get(_SETTINGS, None)
    if settings is not None and settings.db_template:
        database = SQLiteDatabase.from_template(settings.db_template, request.node.name)
    else:
        database = SQLiteDatabase(tmp_path / "apm.db")
    database.reset()
    migrator = Migrator(apm_catalog, database)
    yield migrator
    migrator.close()
