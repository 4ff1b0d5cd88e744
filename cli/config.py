"""The configuration file: ``apm.toml``, or ``[tool.apm]`` in ``pyproject.toml`` (``apm config`` shows it).

A project writes its database path and catalog once instead of passing
``--db`` to every command. Precedence, highest first: a command-line option,
an ``APM_*`` environment variable, the configuration file, the built-in
default.

Where it is found: the current folder, then each parent in turn. In each
folder ``apm.toml`` wins over ``pyproject.toml``; a ``pyproject.toml``
without a ``[tool.apm]`` table is not a configuration, and the search goes
on upward (as Ruff does, rather than stopping at the first ``pyproject.toml``
as Black does): a Python project's packaging file says nothing about apm, so
it should not hide an ``apm.toml`` higher up. ``apm config`` shows which file
was used and where every setting came from, so the search is never a mystery.

Relative paths in the file resolve against the file's folder, so the same
file works from any subfolder.

Reading it costs two ``stat`` calls per folder, and ``tomllib`` is imported
only when a file is found: ``apm --help`` reads nothing at all, because the
settings are resolved only when a command asks for one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

CONFIG_FILE = "apm.toml"
PYPROJECT = "pyproject.toml"

#: Each key the file may set, and what its value must be (said in the error message).
KEYS = {
    "db": "a path to the SQLite database, or a PostgreSQL URL",
    "migrations_dir": "a path to the folder of migration files",
    "busy_timeout": "a number of seconds from 0 to 86400 (a day)",
    "keep_backups": "a whole number of backups to keep (1 or more)",
    "ledger_schema": "the PostgreSQL schema for the ledger tables",
    "backup_dir": "a path to the folder for PostgreSQL backups",
    "lock_timeout": 'a duration such as "300ms" or "5s" ("off": no limit)',
    "statement_timeout": 'a duration such as "30s" or "10min" ("off": no limit)',
    "lock_retries": "a whole number of retries from 0 to 100",
    "lock_gate": 'the lowest level of lock finding that stops a run: "info", "warning" or "error"',
    "lock_levels": 'a table of finding codes and levels, e.g. { table-rewrite = "warning" }',
    "large_table_rows": "a whole number of rows (1 or more) from which a table is large",
    "fleet": "a list of glob patterns or URLs naming the databases of `apm fleet` (a non-empty list of strings)",
}


class ConfigError(click.ClickException):
    """A configuration file that cannot be used: one line naming the file and the key, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class Config:
    """The settings one configuration file gives, already checked and converted (paths made absolute)."""

    def __init__(self, path: Path | None = None, values: dict[str, Any] | None = None,
                 raw: dict[str, Any] | None = None, where: str | None = None):
        self.path = path
        self.values = values or {}
        #: The values as the file spells them, and how messages name the file (``pyproject.toml: [tool.apm]``).
        self.raw = raw or {}
        self.where = where

    def get(self, key: str) -> Any:
        return self.values.get(key)


def _display(path: Path) -> str:
    """The file as a person would name it: relative to the current folder when it is inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def find_config(start: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The nearest configuration file from ``start`` upward, with its raw table; ``None`` if there is none."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        own = candidate / CONFIG_FILE
        if os.path.isfile(own):
            return own, _parse(own)
        project = candidate / PYPROJECT
        if os.path.isfile(project):
            try:
                with open(project, "rb") as file:
                    data = file.read()
            except OSError:
                continue  # an unreadable packaging file is not ours to complain about
            if b"apm" not in data:  # no [tool.apm] in it: not worth a TOML parse
                continue
            table = _parse(project, data).get("tool", {})
            if isinstance(table, dict) and "apm" in table:
                if not isinstance(table["apm"], dict):
                    raise ConfigError(f"{_display(project)}: tool.apm must be a table ([tool.apm]), "
                                      f"not {_shown(table['apm'])}")
                return project, table["apm"]
    return None


def _parse(path: Path, data: bytes | None = None) -> dict[str, Any]:
    # Imported only when a file exists: start-up stays cheap. A version check, not try/except, so mypy follows it.
    if sys.version_info >= (3, 11):
        # start-up time: cli.config runs without tomllib until _parse() needs it
        import tomllib
    else:  # Python 3.10: the same parser, from PyPI (a dependency there)
        # start-up time: cli.config runs without tomli until _parse() needs it
        import tomli as tomllib

    try:
        if data is None:
            with open(path, "rb") as file:
                data = file.read()
        return tomllib.loads(data.decode("utf-8-sig"))  # a BOM (Notepad, PowerShell) is no TOML error
    except OSError as exc:
        raise ConfigError(f"{_display(path)}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{_display(path)}: is not UTF-8 text; TOML files must be") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{_display(path)}: is not valid TOML: {exc}") from exc


def _shown(value: Any) -> str:
    if isinstance(value, str):
        # start-up time: cli.config runs without planner.urls until _shown() needs it
        from planner.urls import redact

        return f'"{redact(value)}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)


def load_config(start: Path | None = None) -> Config:
    """The checked configuration for commands run in ``start`` (the current folder by default)."""
    found = find_config(start)
    if found is None:
        return Config()
    path, table = found
    where = _display(path) + (": [tool.apm]" if path.name == PYPROJECT else "")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(f'{where}: unknown key "{unknown[0]}"; the known keys are {", ".join(sorted(KEYS))}')
    values: dict[str, Any] = {}
    for key, value in table.items():
        values[key] = _convert(where, path.parent, key, value)
    return Config(path, values, dict(table), where)


def _fleet_pattern(folder: Path, pattern: str) -> str:
    """A ``fleet`` pattern made absolute against the file's folder (a URL stays as it is)."""
    # start-up time: cli.config runs without planner.engines until _fleet_pattern() needs it
    from planner.engines import on_server

    if on_server(pattern):
        return pattern
    expanded = os.path.expanduser(pattern)
    return expanded if os.path.isabs(expanded) else str(folder / expanded)


#: The keys whose value is a whole number, with its bounds (``None``: no upper bound).
_WHOLE = {"keep_backups": (1, None), "large_table_rows": (1, None), "lock_retries": (0, 100)}


def _convert(where: str, folder: Path, key: str, value: Any) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"{where}: {key} must be {KEYS[key]}, got {_shown(value)}")

    if key == "ledger_schema":
        if not isinstance(value, str) or not value.strip():
            raise bad()
        return value.strip()
    if key in ("db", "migrations_dir", "backup_dir"):
        if not isinstance(value, str) or not value.strip():
            raise bad()
        if key == "db":
            # start-up time: cli.config runs without planner.urls until _convert() needs it
            # start-up time: cli.config runs without planner.engines until _convert() needs it
            from planner.engines import on_server
            from planner.urls import misspelled_url

            start = misspelled_url(value)
            if start is not None:  # shown by its scheme only: the rest may hold a password
                raise ConfigError(f"{where}: db {start!r} starts like a URL but is not a PostgreSQL one: write "
                                  f"postgresql://... or postgres://..., or a file path")
            if on_server(value):
                return value.strip()  # a connection string, not a path relative to the file
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else folder / path
    if key == "fleet":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise bad()
        return [_fleet_pattern(folder, pattern.strip()) for pattern in value]
    if key == "busy_timeout":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 86400:
            raise bad()  # NaN and infinity fail the range too: SQLite's timeout is a C int of milliseconds
        return float(value)
    if key in _WHOLE:
        low, high = _WHOLE[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            raise bad()
        return value
    if key in ("lock_timeout", "statement_timeout"):
        # start-up time: cli.config runs without planner.locks until _convert() needs it
        from planner.locks import parse_duration

        try:
            return parse_duration(value)
        except ValueError:
            raise bad() from None
    if key == "lock_gate":
        # start-up time: cli.config runs without planner.locks until _convert() needs it
        from planner.locks import LEVELS

        if value not in LEVELS:
            raise bad()
        return value
    if key == "lock_levels":
        # start-up time: cli.config runs without planner.locks until _convert() needs it
        from planner.locks import CODES, LEVELS

        if not isinstance(value, dict):
            raise bad()
        for code, level in value.items():  # the entry that is wrong, and what would be right
            if code not in CODES:
                raise ConfigError(f"{where}: {key}: {_shown(code)} is no finding code; the codes are "
                                  f"{', '.join(CODES)}")
            if level not in LEVELS:
                raise ConfigError(f"{where}: {key}: {code} = {_shown(level)} is no level; the levels are "
                                  f"{', '.join(LEVELS)}")
        return dict(value)
    raise bad()  # pragma: no cover - KEYS and this function list the same keys


def config_origin(error: BaseException, settings: Any) -> str | None:
    """`` (migrations_dir = "nope" in apm.toml: ...)`` when ``error`` is about a setting the config file gave.

    An error names the path it could not use, but a person looks for that
    path where they typed it: if it came from the file, the message must
    say which file and which key, or they search the command line in vain.
    Only errors about the value itself count (not there, not a folder, not
    a database, cannot connect), and only when no option or variable
    overrode the file's value.
    """
    # start-up time: cli.config runs without planner until config_origin() needs it
    from planner import errors as E

    config = settings.config
    key = None
    if isinstance(error, E.CatalogNotFound):
        key = "migrations_dir"
    elif isinstance(error, (E.DatabaseNotFound, E.DatabaseDirectoryMissing, E.NotADatabase, E.DatabaseReadOnly,
                            E.DatabaseUnreachable, E.DriverMissing)):
        key = "db"
    elif (isinstance(error, (E.BackupFailed, E.RestoreFailed))
          and config.get("backup_dir") is not None and str(config.get("backup_dir")) in str(error)):
        key = "backup_dir"
    return from_config(settings, key) if key is not None else None


def from_config(settings: Any, key: str) -> str | None:
    """`` (db = "x" is set in apm.toml; ...)`` when setting ``key`` came from the config file, else ``None``."""
    config = settings.config
    given = {"db": settings.db, "migrations_dir": settings.migrations_dir,
             "backup_dir": settings.backup_dir_option, "ledger_schema": settings.ledger_schema_option}
    if config.path is None or key not in config.raw or given.get(key) is not None:
        return None
    option = "--" + key.replace("_", "-")
    return f" ({key} = {_shown(config.raw[key])} is set in {config.where}; fix it there, or override it with {option})"
