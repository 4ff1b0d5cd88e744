"""Commands import only what they need: the modules a command loads are behaviour worth keeping.

Start-up is paid on every run of ``apm`` (docs/performance.md): networkx alone
costs more than the rest of ``apm migrate --list``. Each check runs in a fresh
interpreter, because this test process has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules_after(args: list[str], cwd: Path) -> set[str]:
    """Run ``apm *args`` in a fresh interpreter and return the names of the modules it imported."""
    code = (
        "import json, sys\n"
        "from cli.main import apm\n"
        "try:\n"
        f"    apm({args!r}, prog_name='apm')\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=None, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def write_migration(folder: Path, version: str, depends_on: tuple[str, ...]) -> None:
    (folder / f"migration_{version}.py").write_text(
        f'"""Migration {version}: table {version}"""\n\n'
        f"depends_on = {depends_on!r}\n\n"
        f"def upgrade(conn):\n    conn.execute('CREATE TABLE t{version} (id INTEGER PRIMARY KEY)')\n"
    )


def test_help_imports_neither_sqlite3_nor_the_planner(tmp_path: Path) -> None:
    loaded = modules_after(["--help"], tmp_path)
    assert "networkx" not in loaded
    assert "sqlite3" not in loaded
    assert "tabulate" not in loaded
    assert "planner.loader" not in loaded


def test_list_on_a_monotone_catalog_does_not_import_networkx_or_tabulate(tmp_path: Path) -> None:
    # The shipped catalog: every dependency names a lower version.
    db = tmp_path / "aipm.db"
    subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "--db", str(db), "migrate", "--yes"],
        cwd=ROOT, check=True, capture_output=True,
    )
    loaded = modules_after(["--db", str(db), "migrate", "--list"], tmp_path)
    assert "planner.plan" in loaded  # it did plan
    assert "networkx" not in loaded
    assert "tabulate" not in loaded  # nothing pending: no table drawn


def test_list_with_a_dependency_on_a_higher_version_still_orders_by_dependency(tmp_path: Path) -> None:
    # 0002 needs 0003: number order is wrong, so networkx orders the plan.
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    write_migration(catalog, "0001", ())
    write_migration(catalog, "0002", ("0003",))
    write_migration(catalog, "0003", ("0001",))
    code = (
        "import sys\n"
        "from cli.main import apm\n"
        "try:\n"
        f"    apm(['--db', {str(tmp_path / 'x.db')!r}, '--migrations-dir', {str(catalog)!r},"
        " 'migrate', '--list', '--json'], prog_name='apm')\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print('networkx' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [row["version"] for row in json.loads(done.stdout)] == ["0001", "0003", "0002"]
    assert done.stderr.strip().splitlines()[-1] == "True"


def test_errors_still_map_to_their_exit_codes_without_eager_imports() -> None:
    import sqlite3

    from cli import options
    from cli.errors import exit_code_for
    from planner.errors import MigrationNotFound

    assert exit_code_for(sqlite3.OperationalError("database is locked")) == options.EXIT_DATABASE
    assert exit_code_for(MigrationNotFound("0042")) == options.EXIT_REFUSED
    assert exit_code_for(KeyError("bug")) == options.EXIT_INTERNAL


def test_settings_defaults() -> None:
    from cli.options import DEFAULT_DB, Settings, shipped_catalog

    settings = Settings()
    assert settings.db_path == DEFAULT_DB and settings.busy_timeout == 30.0 and settings.debug is False
    assert Settings(db=Path("a.db")).db_path == Path("a.db")
    assert Settings().catalog_dir == shipped_catalog()


def test_help_never_reads_the_config_file(tmp_path: Path) -> None:
    # Settings are resolved when a command asks for one; --help asks for none, even under a broken file.
    (tmp_path / "apm.toml").write_text('busy_timeout = "abc"\n')
    loaded = modules_after(["--help"], tmp_path)
    assert "tomllib" not in loaded


def test_the_console_script_leaves_exit_time_collection_nothing_to_walk(tmp_path: Path) -> None:
    # main() freezes what is alive as the command ends (docs/performance.md); atexit handlers still run after it.
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0, file=sys.stderr))\n"
        "from cli.main import main\n"
        "sys.argv = ['apm', '--help']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Usage: apm" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "frozen True"


def test_a_command_imports_no_other_commands_module(tmp_path: Path) -> None:
    # Subcommands are registered by name and imported when named (cli.lazy): `apm migrate` paid for every
    # command's module and the planner modules each pulls in (fleet, status, doctor, graph ...).
    db = tmp_path / "aipm.db"
    subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "--db", str(db), "migrate", "--yes"],
        cwd=ROOT, check=True, capture_output=True,
    )
    others = {"cli.fleet", "cli.fleet_output", "cli.status", "cli.safety", "cli.authoring", "cli.safety",
              "cli.authoring", "cli.authoring", "cli.safety"}
    loaded = modules_after(["--db", str(db), "migrate", "--yes"], tmp_path)
    assert "cli.migrate" in loaded
    assert not others & loaded, sorted(others & loaded)
    loaded = modules_after(["--db", str(db), "status"], tmp_path)
    assert "cli.status" in loaded
    assert not (others - {"cli.status"}) & loaded, sorted((others - {"cli.status"}) & loaded)


def test_every_lazily_registered_command_is_found_under_its_own_name() -> None:
    # A name registered in cli.main that differs from the command's own would run under one name and be
    # documented under another; the whole tree must also be there for --help and the docs checks.
    import click

    from cli.main import apm

    def walk(group: click.Group, path: str) -> list[str]:
        found = []
        for name, command in group.commands.items():
            assert command.name == name, f"{path} {name} is registered, but the command is named {command.name}"
            found.append(f"{path} {name}")
            if isinstance(command, click.Group):
                found.extend(walk(command, f"{path} {name}"))
        return found

    tree = walk(apm, "apm")
    for expected in ("apm migrate", "apm migrate plan", "apm migrate doctor", "apm migrate drift", "apm fleet migrate",
                     "apm fleet status", "apm status", "apm agents list", "apm config"):
        assert expected in tree


def test_an_apply_imports_no_backup_renumbering_socket_or_random(tmp_path: Path) -> None:
    # An apply takes no backup, renumbers nothing, runs no step outside a transaction (the host name) and retries
    # no lock (the jitter): `apm migrate` paid for importing each of them (docs/performance.md, the data migration).
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    write_migration(catalog, "0001", ())
    loaded = modules_after(["--db", str(tmp_path / "app.db"), "--migrations-dir", str(catalog), "migrate", "--yes"],
                           tmp_path)
    assert "planner.engines.sqlite.runner" in loaded  # it did run the plan
    unwanted = {"planner.engines.sqlite.backup", "planner.backups", "planner.renumber", "socket", "random"}
    assert not unwanted & loaded, sorted(unwanted & loaded)


def test_an_apply_of_ordinary_steps_imports_no_logging_no_outside_step_modules_and_no_schema_model(
        tmp_path: Path) -> None:
    # Only a step outside a transaction needs planner.outside (its ``started`` row, its statement checks), only
    # a failure to log a failure or an ignored PRAGMA logs anything, and a preview's changes are
    # ``planner.preview.SchemaChange``s, not snapshots (planner.schema's eight dataclasses): an ordinary apply paid
    # for importing all three (docs/performance.md, the data migration's start-up).
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    write_migration(catalog, "0001", ())
    loaded = modules_after(["--db", str(tmp_path / "app.db"), "--migrations-dir", str(catalog), "migrate", "--yes"],
                           tmp_path)
    assert "planner.engines.sqlite.runner" in loaded and "planner.session" in loaded  # it did run the plan
    unwanted = {"logging", "planner.outside", "planner.engines.sqlite.outside", "planner.schema"}
    assert not unwanted & loaded, sorted(unwanted & loaded)


def test_fleet_status_imports_no_run_events_and_no_archive_modules(tmp_path: Path) -> None:
    # Status reads ledgers: loading the catalog imported planner.events (a run's event dataclasses) for the
    # one context manager the loader uses, and cli.output imported shutil (zlib, bz2, lzma) for a progress
    # bar's width. Both were paid on every `apm fleet status` (docs/performance.md, "Many databases").
    db = tmp_path / "projects" / "p1" / "aipm.db"
    db.parent.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "--db", str(db), "migrate", "--yes"],
        cwd=ROOT, check=True, capture_output=True,
    )
    loaded = modules_after(["fleet", "status", "--glob", "projects/*/aipm.db"], tmp_path)
    assert "planner.fleet.status" in loaded and "planner.loader" in loaded  # it did load the catalog and read
    unwanted = {"planner.events", "shutil", "bz2", "lzma", "planner.fleet.run"}
    assert not unwanted & loaded, sorted(unwanted & loaded)


def test_the_progress_bar_still_fits_the_terminal_once_it_imports_shutil_itself(monkeypatch, capsys) -> None:
    # shutil moved into Progress (above): the bar must still take its width from the terminal (COLUMNS first).
    from cli.output import Progress

    monkeypatch.setenv("COLUMNS", "50")
    progress = Progress(3, keep_lines=False)
    assert progress.width == 49
    progress.current = "Applying 0001 " + "x" * 100
    progress.done("Applied 0001")
    drawn = capsys.readouterr().out
    assert drawn.startswith("\r[") and len(drawn) == 1 + 49
