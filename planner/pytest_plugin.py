"""apm-migrate's pytest plugin: every migration of a catalog applies, rolls back and re-applies.

Registered through the ``pytest11`` entry point as ``apm``, so every pytest
run on a machine with apm-migrate installed loads this module, and it stays
inert until asked: ``pytest --apm-migrations DIR`` or ``apm_migrations = DIR``
in the pytest configuration. Until then it adds two options and a few
fixtures, and imports nothing of the planner (no networkx, no sqlite3).

Switched on, it adds one test item per check, ahead of the collected tests
(see docs/testing.md): ``catalog``, ``upgrade``, ``stairway[V]`` for every
version in the graph's topological order (``no-downgrade[V]``, an expected
failure, for a migration without ``downgrade`` or declared irreversible, see
``planner.migration``), and ``downgrade-all``. The
checks live in ``planner.testing.runner``; this module only turns them into
items, outcomes and messages.

``--apm-db`` says where the tests' databases go: SQLite files (the default),
or a PostgreSQL server on which each test gets a database of its own,
dropped when the test is over (``planner.testing.databases``).

The items are added in ``pytest_collection_modifyitems`` (first, so ``-k``,
``-m`` and ``--lf`` see them) through ``Session.genitems``, so they are
counted and reported like collected ones, and appear under
``--collect-only``. They are not reached from the command line's paths: the
catalog is a folder of migrations, not of tests, and it may live anywhere.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from planner.catalog import Catalog
    from planner.testing.databases import TestDatabase
    from planner.testing.databases import DatabaseProvider
    from planner.testing.runner import Migrator, Seed, Stairway


@dataclass
class ApmSettings:
    """The plugin's configuration for one pytest run, once switched on."""

    directory: Path
    #: Where the catalog was named: the command line or the configuration file (for messages).
    source: str
    stairway: Stairway | None = None
    catalog: Catalog | None = None


_SETTINGS = pytest.StashKey[ApmSettings]()
#: ``--apm-db`` / ``apm_db`` as given (``None``: files under pytest's temporary folder).
_TEMPLATE = pytest.StashKey["str | None"]()
_PROVIDER = pytest.StashKey["DatabaseProvider"]()
_BASE = pytest.StashKey[Path]()
#: The items of the stairway walk: one database carries the walk from one to the next.
_STAIRS = ("stairway", "no-downgrade")


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


class SeedHook:
    """The hook this plugin adds (``pytest_addhooks``): seed data for migration tests."""

    @pytest.hookspec
    def pytest_apm_seed(self, version: str, connection: Any) -> None:
        """Insert rows right after ``version`` was applied, so later migrations (and rollbacks) meet data.

        Called in the ``upgrade`` test and the stairway every time a version is
        applied, with an open transaction on ``connection`` that is committed
        when every implementation has returned (and rolled back if one raises,
        which fails the test naming the version). Ignore the versions you do not
        seed. In the stairway a version is applied twice (before and after its
        rollback) and rows in tables the rollback kept are still there the
        second time, so write ``INSERT OR IGNORE`` or check first. Insert rows
        only: a table created here is reported as something a rollback left.

        On SQLite ``connection`` is a ``sqlite3`` connection; on PostgreSQL it is
        the connection migrations receive (``execute`` with ``?`` or ``%s``
        parameters, ``fetchval``...). Both say ``connection.engine``
        (``"sqlite"`` or ``"postgresql"``), so one conftest can seed either;
        ``INSERT ... ON CONFLICT DO NOTHING`` works on both.

        Declare it with ``@pytest.hookimpl(optionalhook=True)`` so the conftest
        still loads when the plugin is disabled (``-p no:apm``).
        """


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(SeedHook)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("apm", "apm-migrate: generated migration tests")
    group.addoption("--apm-migrations", metavar="DIR", dest="apm_migrations", default=None,
                    help="test every migration of the catalog in DIR: catalog, upgrade, stairway[V], downgrade-all")
    group.addoption("--apm-db", metavar="TEMPLATE", dest="apm_db", default=None,
                    help="where the migration tests' databases go: a SQLite path template containing {name}, "
                         "e.g. /tmp/apm/{name}.db, or a PostgreSQL URL, e.g. postgresql://me@localhost/app, on which "
                         "each test creates (and drops) the database app_<test> (default: a fresh SQLite file per test "
                         "under pytest's temporary folder)")
    parser.addini("apm_migrations", "the catalog folder whose migrations pytest should test (like --apm-migrations)")
    parser.addini("apm_db", "a SQLite path template containing {name}, or a PostgreSQL URL, for the migration "
                            "tests' databases (like --apm-db)")


def pytest_configure(config: pytest.Config) -> None:
    directory, source = config.getoption("apm_migrations"), "--apm-migrations"
    base = config.invocation_params.dir
    if not directory:
        directory, source = config.getini("apm_migrations"), "apm_migrations"
        base = config.inipath.parent if config.inipath else config.rootpath
    template = config.getoption("apm_db") or config.getini("apm_db") or None
    if template:
        # start-up time: every pytest run loads this plugin; the planner only once it is switched on
        from planner.testing.databases import DatabaseTemplateError, check_template, require_driver

        try:
            require_driver(check_template(template))
        except DatabaseTemplateError as exc:
            raise pytest.UsageError(str(exc)) from exc
    config.stash[_TEMPLATE] = template
    if not directory:
        return
    config.stash[_SETTINGS] = ApmSettings((base / os.path.expanduser(directory)).resolve(), source)


def pytest_report_header(config: pytest.Config) -> str | None:
    settings = config.stash.get(_SETTINGS, None)
    if settings is None:
        return None
    where = _provider(config).describe()
    return f"apm: testing the migrations of {settings.directory} (from {settings.source}); databases: {where}"


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the walk's last stair, its database is handed back (dropped, on PostgreSQL)."""
    if not isinstance(item, ApmItem) or item.check not in _STAIRS:
        return
    if isinstance(nextitem, ApmItem) and nextitem.check in _STAIRS:
        return
    stairway = item.settings.stairway
    if stairway is not None:
        stairway.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    provider = session.config.stash.get(_PROVIDER, None)
    if provider is not None:
        provider.close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    provider = config.stash.get(_PROVIDER, None)
    for problem in provider.problems if provider is not None else ():
        terminalreporter.write_line(f"apm: {problem}")


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
        # start-up time: every pytest run loads this plugin; the planner only once it is switched on
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
        # start-up time: every pytest run loads this plugin; the planner only once it is switched on
        from planner.testing.runner import (
            MigrationRunner,
            NoDowngrade,
            StairBlocked,
            check_catalog,
            check_downgrade_all,
            check_upgrade,
        )
        # start-up time: every pytest run loads this plugin; the planner only once it is switched on
        from planner.testing.databases import DatabaseUnavailable

        settings = self.settings
        if self.check == "catalog":
            for warning in check_catalog(settings.directory):
                self.add_report_section("call", "apm check warnings", warning)
            return
        catalog = settings.catalog
        assert catalog is not None
        database = None
        unavailable: DatabaseUnavailable | None = None
        try:
            if self.check in _STAIRS:
                assert self.version is not None
                _stairway(self.config).climb(self.version)
            else:
                database = _provider(self.config).new(self.check)
                check = check_upgrade if self.check == "upgrade" else check_downgrade_all
                check(MigrationRunner(catalog, database, _seed(self.config)))
        except StairBlocked as blocked:
            pytest.skip(str(blocked))
        except NoDowngrade as expected:
            pytest.xfail(str(expected))
        except DatabaseUnavailable as error:
            unavailable = error  # said outside the handler, so no chained traceback comes with it
        finally:
            _provider(self.config).release(database)
        if unavailable is not None:
            _unavailable(unavailable)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        # start-up time: every pytest run loads this plugin; the planner only once it is switched on
        from planner.testing.runner import MigrationTestFailure

        if isinstance(excinfo.value, MigrationTestFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"apm {self.name}"


def _unavailable(error: Exception) -> None:
    """The server cannot give databases: the first test fails saying why, every later one skips."""
    if getattr(error, "repeated", False):
        pytest.skip(f"apm: {error}")
    pytest.fail(f"apm: {error}", pytrace=False)


def _base_folder(config: pytest.Config) -> Path:
    if _BASE not in config.stash:
        # pytest's own temporary folder (basetemp, kept for the last runs) when the tmpdir plugin is loaded.
        factory = getattr(config, "_tmp_path_factory", None)
        if factory is not None:
            config.stash[_BASE] = factory.mktemp("apm", numbered=True)
        else:
            config.stash[_BASE] = Path(tempfile.mkdtemp(prefix="apm-"))
    return config.stash[_BASE]


def _provider(config: pytest.Config) -> DatabaseProvider:
    """The run's databases (``planner.testing.databases``), made on first use from ``--apm-db``."""
    if _PROVIDER not in config.stash:
        # start-up time: every pytest run loads this plugin; the planner only once it is switched on
        from planner.testing.databases import DatabaseProvider

        config.stash[_PROVIDER] = DatabaseProvider(config.stash.get(_TEMPLATE, None), lambda: _base_folder(config))
    return config.stash[_PROVIDER]


def _seed(config: pytest.Config) -> Seed:
    hook = config.hook.pytest_apm_seed
    return lambda version, connection: hook(version=version, connection=connection)


def _stairway(config: pytest.Config) -> Stairway:
    """The run's one stairway walker, shared by every ``stairway[V]`` item (see ``Stairway``)."""
    # start-up time: every pytest run loads this plugin; the planner only once it is switched on
    from planner.testing.runner import Stairway

    settings = config.stash[_SETTINGS]
    if settings.stairway is None:
        assert settings.catalog is not None
        provider = _provider(config)
        settings.stairway = Stairway(settings.catalog, lambda: provider.new("stairway"), _seed(config),
                                     release=provider.release)
    return settings.stairway


# --------------------------------------------------------------------------
# Fixtures for hand-written tests
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def apm_migrations_dir(pytestconfig: pytest.Config) -> Path:
    """The catalog folder under test: ``--apm-migrations`` or ``apm_migrations``; override it to test another."""
    settings = pytestconfig.stash.get(_SETTINGS, None)
    if settings is None:
        pytest.fail("no catalog to test: pass --apm-migrations DIR, set apm_migrations = DIR in the pytest "
                    "configuration, or override the apm_migrations_dir fixture", pytrace=False)
    return settings.directory


@pytest.fixture(scope="session")
def apm_catalog(apm_migrations_dir: Path) -> Catalog:
    """The loaded catalog (``planner.catalog.Catalog``): versions, migrations, and the graph."""
    # start-up time: every pytest run loads this plugin; the planner only once it is switched on
    from planner.loader import load_catalog

    return load_catalog(apm_migrations_dir)


@pytest.fixture
def apm_migrator(apm_catalog: Catalog, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Migrator]:
    """A fresh database for this test and a ``Migrator`` to move it: ``migrate_to``, ``rollback``, ``connection``.

    With ``--apm-db`` the database is made as the generated tests' are (a
    PostgreSQL URL: a database of its own, dropped after the test).
    """
    # start-up time: every pytest run loads this plugin; the planner only once it is switched on
    from planner.testing.databases import DatabaseUnavailable, database_at
    from planner.testing.runner import Migrator

    provider = _provider(request.config)
    database: TestDatabase = (provider.new(request.node.name) if provider.template is not None
                              else database_at(tmp_path / "apm.db"))
    unavailable: DatabaseUnavailable | None = None
    try:
        database.reset()
    except DatabaseUnavailable as error:
        unavailable = error
    if unavailable is not None:
        provider.release(database)
        _unavailable(unavailable)
    migrator = Migrator(apm_catalog, database)
    try:
        yield migrator
    finally:
        migrator.close()
        provider.release(database)
