"""Options shared by several commands, and the exit codes.

``--db`` and ``--migrations-dir`` work both before and after the subcommand
(``apm --db X migrate`` and ``apm migrate --db X``): every command carries the
same decorator, and each occurrence writes into one ``Settings`` object, so the
one nearest the subcommand wins. Environment variables are read at the top
level only, which makes an explicit option always beat the environment.

Below both comes the configuration file (``cli/config.py``), then the
built-in default. ``Settings`` reads the file only when a command first asks
for a setting that neither an option nor the environment gave, so
``apm --help`` never looks for it.

Where a command that writes files may write them: a project's catalog, never an installed package.

``apm migrate new``, ``squash``, ``check --fix`` and ``docs`` write into the
migrations folder. Without a named folder that is APM's shipped catalog,
which a wheel installs inside ``site-packages``: a file written there is lost
at the next upgrade, changes every other project's default catalog on the
machine, and is not the user's project at all. So these commands need a
catalog named by an option, an ``APM_*`` variable or the config file, and
refuse any path inside an installed package, named or not.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

DEFAULT_DB = Path(".aipm/data/aipm.db")
DEFAULT_BUSY_TIMEOUT = 30.0  # sqlite.database's default too; not imported from there, to keep start-up light

# Exit codes: documented in docs/commands.md; a test keeps the two in step.
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: please report it with --debug output
EXIT_USAGE = 2  # click's own code for a bad option or argument
EXIT_CATALOG = 3  # the migration files do not load (CatalogError)
EXIT_REFUSED = 4  # the plan was refused before anything ran (PlanError)
EXIT_FAILED = 5  # a migration failed while running; its step was rolled back (ExecutionError)
EXIT_DATABASE = 6  # the database cannot be opened, written or locked (DatabaseError)
EXIT_UNCONFIRMED = 7  # a plan that would destroy data was not confirmed (see --yes)
EXIT_TOOL = 8  # an outside tool the command needs (Graphviz's dot) is missing or failed
EXIT_PENDING = 9  # `apm migrate plan --exit-code`: there is something to do (nothing was written)
EXIT_DRIFT = 10  # `apm migrate drift` / `apm fleet status --drift`: the live schema differs from its migrations
EXIT_ATTENTION = 11  # `apm fleet status|migrate`: at least one database needs attention or failed
EXIT_LOCK_RISK = 12  # lock findings at or above the gating level, not accepted (docs/locks.md)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); SIGTERM gives 143. The open step was rolled back


#: Called with (settings, engine) once a command's engine is made; modules that set it up register here.
ENGINE_HOOKS: list = []


class VersionType(click.ParamType):
    """A version on the command line: digits, never empty (``--rollback ""`` must not become an apply)."""

    name = "VERSION"

    def convert(self, value, param, ctx):
        # start-up time: cli.options runs without planner.errors until convert() needs it
        from planner.errors import InvalidVersion

        # start-up time: cli.options runs without planner.versions until convert() needs it
        from planner.versions import parse

        try:
            return parse(value)
        except InvalidVersion as exc:
            self.fail(str(exc), param, ctx)


VERSION = VersionType()


class StateType(VersionType):
    """Where ``--to`` goes: a version, or ``base`` (before the first migration). Empty is a usage error."""

    name = "VERSION|base"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() == "base":
            return "base"
        return super().convert(value, param, ctx)


STATE = StateType()


def shipped_catalog() -> Path:
    """The folder of APM's own migrations (the default for --migrations-dir)."""
    # start-up time: cli.options runs without planner.catalog until shipped_catalog() needs it
    from planner.catalog import shipped_catalog_dir

    return shipped_catalog_dir()


class Settings:
    """What the shared options resolved to, for the command that runs.

    A plain class rather than a dataclass: every ``apm`` run creates one, and
    importing ``dataclasses`` costs more start-up than the whole class.
    """

    def __init__(self, db: Path | str | None = None, migrations_dir: Path | None = None, debug: bool = False,
                 busy_timeout: float | None = None, keep_backups: int | None = None):
        # db, migrations_dir, busy_timeout, keep_backups: what an option or the environment gave, else None.
        self.db = db
        self.migrations_dir = migrations_dir
        self.debug = debug
        self.busy_timeout_option = busy_timeout
        self.keep_backups_option = keep_backups
        #: setting name -> "option --db" or "env APM_DB", for the ones an option or the environment gave.
        self.sources: dict[str, str] = {}
        self._config = None
        #: PostgreSQL only: --ledger-schema and --backup-dir, when an option or the environment gave them.
        self.ledger_schema_option: str | None = None
        self.backup_dir_option: Path | None = None
        #: The lock options of a run (``cli.running``): --lock-timeout, --statement-timeout (seconds), --lock-retries,
        #: --allow; ``None`` (or empty) when not given.
        self.lock_timeout_option: float | None = None
        self.statement_timeout_option: float | None = None
        self.lock_retries_option: int | None = None
        self.allow_option: tuple[str, ...] = ()
        self._engine = None

    @property
    def config(self):
        """The configuration file's settings (``cli.config.Config``), read on first use."""
        if self._config is None:
            # start-up time: cli.options runs without cli.config until config() needs it
            from cli.config import load_config

            self._config = load_config()
        return self._config

    @property
    def db_chosen(self) -> Path | str | None:
        """The database an option, the environment or the config named (a file, or a URL); ``None``: the default."""
        return self.db if self.db is not None else self.config.get("db")

    @property
    def db_path(self) -> Path:
        """The SQLite file, for the SQLite side of a command; every command reaches PostgreSQL through ``engine``."""
        chosen = self.db_chosen
        if isinstance(chosen, str):  # a command asked for a file where it should ask the engine: a bug, exit 1
            raise TypeError("a SQLite path was asked of a PostgreSQL connection string; use settings().engine")
        return chosen if chosen is not None else DEFAULT_DB

    # -- the engine (planner.engines): SQLite for a path, PostgreSQL for a URL ---------------

    @property
    def db_url(self) -> str | None:
        """The PostgreSQL connection string ``--db`` / ``APM_DB`` / the config gave; ``None`` for SQLite."""
        chosen = self.db_chosen
        if not isinstance(chosen, str):
            return None
        schema = self.tenant_schema
        if schema is None:
            return chosen
        # start-up time: cli.options runs without planner.urls until db_url() needs it
        from planner.urls import split_schema, tenant_url

        return tenant_url(split_schema(chosen)[0], schema)

    @property
    def tenant_schema(self) -> str | None:
        """The schema of ``url#schema`` (a tenant, as ``apm fleet`` prints it): its search_path and ledger schema."""
        chosen = self.db_chosen
        if not isinstance(chosen, str) or "#" not in chosen:
            return None
        # start-up time: cli.options runs without planner.engines until tenant_schema() needs it
        from planner.engines import on_server

        # start-up time: cli.options runs without planner.urls until tenant_schema() needs it
        from planner.urls import split_schema

        if not on_server(chosen):
            return None
        return split_schema(chosen)[1]  # a '#' inside a value (password=a#b) is no tenant

    @property
    def ledger_schema(self) -> str:
        tenant = self.tenant_schema
        if tenant is not None:
            if self.ledger_schema_option is not None and self.ledger_schema_option != tenant:
                raise click.UsageError(f"--db names tenant schema {tenant!r} (after '#') but --ledger-schema says "
                                       f"{self.ledger_schema_option!r}; a tenant keeps its ledger in its own schema: "
                                       f"drop --ledger-schema, or drop '#{tenant}' from --db")
            return tenant
        if self.ledger_schema_option is not None:
            return self.ledger_schema_option
        return self.config.get("ledger_schema") or "public"

    @property
    def backup_dir(self) -> Path | None:
        return self.backup_dir_option if self.backup_dir_option is not None else self.config.get("backup_dir")

    @property
    def engine(self):
        """The database as an ``planner.engines.Engine`` (made once per command)."""
        if self._engine is None:
            # start-up time: cli.options runs without planner until engine() needs it
            from planner import events as waiting

            # start-up time: cli.options runs without planner.engines until engine() needs it
            from planner.engines import engine_for

            self._engine = engine_for(self.db_url or self.db_path, busy_timeout=self.busy_timeout,
                                      ledger_schema=self.ledger_schema, backup_dir=self.backup_dir)
            waiting.listen(_tell_waiting)
            for hook in ENGINE_HOOKS:  # cli.running: PostgreSQL's lock_timeout, statement_timeout, retries
                hook(self, self._engine)
        return self._engine

    @property
    def db_display(self) -> str:
        """How messages name the database (a URL with its password masked)."""
        return self.engine.display if self.db_url is not None else str(self.db_path)

    @property
    def named_catalog_dir(self) -> Path | None:
        """The catalog an option or the config file named; ``None`` for APM's shipped one."""
        return self.migrations_dir if self.migrations_dir is not None else self.config.get("migrations_dir")

    @property
    def catalog_dir(self) -> Path:
        named = self.named_catalog_dir
        return named if named is not None else shipped_catalog()

    @property
    def busy_timeout(self) -> float:
        if self.busy_timeout_option is not None:
            return self.busy_timeout_option
        configured = self.config.get("busy_timeout")
        return configured if configured is not None else DEFAULT_BUSY_TIMEOUT

    @busy_timeout.setter
    def busy_timeout(self, value: float) -> None:
        self.busy_timeout_option = value

    @property
    def keep_backups(self) -> int | None:
        """How many backups to keep after writing one; ``None`` keeps them all."""
        if self.keep_backups_option is not None:
            return self.keep_backups_option
        return self.config.get("keep_backups")

    @keep_backups.setter
    def keep_backups(self, value: int) -> None:
        self.keep_backups_option = value

    def explain(self) -> list[tuple[str, object, str]]:
        """(setting, value, where it came from) for each setting, as ``apm config`` shows them."""
        config = self.config
        given = {"db": self.db, "migrations_dir": self.migrations_dir, "busy_timeout": self.busy_timeout_option,
                 "keep_backups": self.keep_backups_option, "ledger_schema": self.ledger_schema_option,
                 "backup_dir": self.backup_dir_option}
        defaults = {"db": (str(DEFAULT_DB), "default"),
                    "migrations_dir": (str(shipped_catalog()), "default (APM's catalog)"),
                    "busy_timeout": (DEFAULT_BUSY_TIMEOUT, "default"),
                    "keep_backups": (None, "default (keep all)"),
                    "ledger_schema": ("public", "default (PostgreSQL only)"),
                    "backup_dir": (None, "default (SQLite: beside the file; PostgreSQL: this folder)")}
        rows: list[tuple[str, object, str]] = []
        # start-up time: cli.options runs without planner.urls until explain() needs it
        from planner.urls import redact

        if isinstance(given["db"], str) or isinstance(config.get("db"), str):  # never show a password
            given["db"] = redact(given["db"]) if isinstance(given["db"], str) else given["db"]
            if given["db"] is None:
                given["db"] = redact(config.get("db"))
                self.sources.setdefault("db", f"config {config.path}")
        for name, value in given.items():
            if value is not None:
                source = self.sources.get(name) or self.sources.get(f"{name}_option", "option")
                rows.append((name, str(value) if isinstance(value, Path) else value, source))
            elif config.get(name) is not None:
                shown = config.get(name)
                rows.append((name, str(shown) if isinstance(shown, Path) else shown, f"config {config.path}"))
            else:
                rows.append((name, *defaults[name]))
        fleet = config.get("fleet")  # only the file sets it: `apm fleet` takes --glob/--list otherwise
        if fleet:
            rows.append(("fleet", ", ".join(redact(pattern) for pattern in fleet), f"config {config.path}"))
        else:
            rows.append(("fleet", None, "default (none: apm fleet needs --glob or --list)"))
        return rows


def _tell_waiting(database: str, limit: float) -> None:
    """A wait for another process's lock, said once it lasts (``planner.events``), on stderr."""
    click.echo(f"Waiting for {database}: another process holds its lock (up to {limit:g} s; --busy-timeout)",
               err=True)


def _store(name: str, convert=lambda v: v):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is not None and value is not False:
            settings = ctx.ensure_object(Settings)
            setattr(settings, name, convert(value))
            source = ctx.get_parameter_source(param.name) if param.name else None  # click sets it before callbacks
            from_env = param.envvar and source is not None and source.name == "ENVIRONMENT"
            settings.sources[name] = f"env {param.envvar}" if from_env else f"option {param.opts[0]}"
        return value

    return callback


def _path(value: str) -> Path:
    """A path option's value; empty is refused rather than read as the current folder."""
    if not value.strip():
        raise click.BadParameter("an empty path; give the path this option names "
                                 "(a database file for --db, a folder for --migrations-dir)")
    return Path(value)


def _db(value: str) -> Path | str:
    """``--db``: a PostgreSQL connection string stays a string (a Path would fold its ``//``), else a path."""
    # start-up time: cli.options runs without planner.engines until _db() needs it
    from planner.engines import on_server

    refuse_misspelled_url(value)
    return value.strip() if on_server(value) else _path(value)


def refuse_misspelled_url(value: str) -> None:
    """A URL whose scheme is not PostgreSQL's is a typo to fix, not a file to create (exit 2)."""
    # start-up time: cli.options runs without planner.urls until refuse_misspelled_url() needs it
    from planner.urls import misspelled_url

    start = misspelled_url(value)
    if start is not None:
        raise click.BadParameter(
            f"{start!r} starts like a URL but is not a PostgreSQL one: write postgresql://... or postgres://... "
            f"(or host=... dbname=...), or give a file path; nothing was changed")


def _schema(value: str) -> str:
    if not value.strip():
        raise click.BadParameter("an empty schema name")
    return value.strip()


def _debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """--debug shows tracebacks and the library's log (which is silent otherwise)."""
    if value:
        # start-up time: cli.options runs without logging until _debug() needs it
        import logging

        ctx.ensure_object(Settings).debug = True
        logging.basicConfig(level=logging.DEBUG, format="apm: %(name)s: %(message)s")
    return value


def shared_options(top_level: bool = False):
    """The options every command accepts; ``top_level`` also reads the ``APM_*`` environment variables."""

    def shared(name: str, env: str, callback, help: str, **kwargs):
        # Eager and stored into Settings rather than passed: the commands' own signatures stay as they are.
        return click.option(name, envvar=env if top_level else None, show_envvar=False,  # the help text names it
                            expose_value=False, is_eager=True, callback=callback, help=help, **kwargs)

    def decorate(command):
        options = [
            # A folder or an unreadable path is the library's to report (a database problem, exit 6).
            shared("--db", "APM_DB", _store("db", _db), type=str, metavar="PATH",
                   help=f"SQLite database file, or a PostgreSQL URL (postgresql://user@host:port/dbname) "
                        f"[default: {DEFAULT_DB}; env APM_DB]."),
            shared("--migrations-dir", "APM_MIGRATIONS_DIR", _store("migrations_dir", _path), type=str, metavar="DIR",
                   help="Folder of migration_*.py and .sql files [default: APM's shipped catalog; env "
                        "APM_MIGRATIONS_DIR]."),
            # At most a day: SQLite takes milliseconds as a C int, and a larger wait would silently be none.
            shared("--busy-timeout", "APM_BUSY_TIMEOUT", _store("busy_timeout"),
                   type=click.FloatRange(min=0, max=86400),
                   help="Seconds (0 to 86400) to wait for another process's lock [default: 30; env APM_BUSY_TIMEOUT]."),
            shared("--keep-backups", "APM_KEEP_BACKUPS", _store("keep_backups"), type=click.IntRange(min=1),
                   metavar="N",
                   help="After writing a backup, delete all but the newest N [default: keep all; "
                        "env APM_KEEP_BACKUPS]."),
            shared("--ledger-schema", "APM_LEDGER_SCHEMA", _store("ledger_schema_option", _schema), type=str,
                   metavar="SCHEMA",
                   help="PostgreSQL: the schema holding the ledger tables [default: public; env APM_LEDGER_SCHEMA]."),
            shared("--backup-dir", "APM_BACKUP_DIR", _store("backup_dir_option", _path), type=str, metavar="DIR",
                   help="PostgreSQL: the folder for pg_dump backups taken before a rollback [default: .; "
                        "env APM_BACKUP_DIR]."),
            click.option("--debug", is_flag=True, default=False, expose_value=False, is_eager=True, callback=_debug,
                         help="Show the full traceback of an error."),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def settings() -> Settings:
    """The resolved settings of the command being run."""
    return click.get_current_context().ensure_object(Settings)


def use_color() -> bool | None:
    """Colour only on a terminal, never when NO_COLOR is set (https://no-color.org)."""
    return False if os.environ.get("NO_COLOR") else None


#: How to name a project's catalog, for every refusal below.
NAME_ONE = ("name your project's folder with --migrations-dir DIR, the APM_MIGRATIONS_DIR variable, "
            "or migrations_dir = \"DIR\" in apm.toml")


def installed_package_roots() -> list[Path]:
    """The folders Python installs packages into (site-packages, dist-packages, the user's), resolved."""
    # start-up time: cli.options runs without site until installed_package_roots() needs it
    import site

    # start-up time: cli.options runs without sysconfig until installed_package_roots() needs it
    import sysconfig

    roots = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    roots.update(getattr(site, "getsitepackages", list)())
    user = getattr(site, "getusersitepackages", lambda: None)()
    if user:
        roots.add(user)
    return [Path(root).resolve() for root in sorted(roots)]


def inside_installed_package(path: Path) -> bool:
    """Whether ``path`` (which may not exist yet) lies inside a folder Python installs packages into."""
    resolved = Path(path).resolve()
    return any(resolved == root or root in resolved.parents for root in installed_package_roots())


def catalog_to_write(what: str) -> Path:
    """The catalog ``what`` (e.g. ``apm migrate new``) may write into, or a usage error (exit 2) saying how to name one.

    The default catalog is APM's shipped one: never a place to write, even in
    an editable checkout, because the same command run anywhere else would
    write into site-packages.
    """
    options = settings()
    named = options.named_catalog_dir
    if named is None:
        raise click.UsageError(f"{what} writes into a project's migrations folder, and none is named (the default is "
                               f"APM's installed catalog, which is never written); {NAME_ONE}")
    refuse_installed(named, what)
    return named


def refuse_installed(path: Path, what: str) -> None:
    """A usage error (exit 2) when ``path`` is inside an installed package; nothing has been written."""
    if inside_installed_package(path):
        raise click.UsageError(f"{what} would write into {path}, inside an installed package; nothing was "
                               f"written. {NAME_ONE[0].upper()}{NAME_ONE[1:]}")
