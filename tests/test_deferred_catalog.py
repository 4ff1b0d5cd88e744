"""A catalog described without running its modules: each runs only when a command calls its code.

Reading commands (``apm fleet status``, ``apm status``, ``apm migrate --list``)
need versions, dependencies, docstrings and checksums, never the code; a run
needs the code of its steps only, and a module that cannot be imported still
refuses it before anything runs (``planner.migration.plain_bindings``,
``planner.migration.DeferredFunction``).
"""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest

from planner.catalog import shipped_catalog_dir
from planner.loader import load_catalog, load_migration
from planner.migration import DeferredFunction
from tests.conftest import run_apm, write_migration

#: Every field that describes a migration without its functions.
DESCRIBED = ("version", "description", "checksum", "depends_on", "dependency_source", "doc", "docstring_version",
             "documented_dependencies", "transactional", "replaces", "irreversible_reason", "unwritten",
             "lock_timeout", "allow")
FUNCTIONS = ("upgrade", "downgrade", "validate_pre", "validate_post")

PLAIN = {
    "docstring dependencies": '"""Migration 0002: Two\n\nDependencies:\n- Migration 0001 (x)\n"""\nimport sqlite3\n'
                              "def upgrade(conn: sqlite3.Connection) -> None:\n    conn.execute('SELECT 1')\n",
    "declared, not transactional, validators": '"""Migration 0002: Two"""\ndepends_on = ("0001",)\n'
                                              "transactional = False\nSQL = 'VACUUM'\n"
                                              "def upgrade(conn):\n    conn.execute(SQL)\n"
                                              "def validate_pre(conn):\n    return True\n"
                                              "def validate_post(conn):\n    return True\n",
    "irreversible": '"""Migration 0002: Two"""\ndef upgrade(conn):\n    conn.execute("SELECT 1")\n'
                    'def downgrade(conn):\n    raise NotImplementedError("data is gone " "for good")\n',
    "unfilled, no docstring": "def upgrade(conn):\n    pass\n",
    "lock declarations, replaces, a lambda": '"""Migration 0002: Two"""\nreplaces = ("0001",)\n'
                                             'lock_timeout = "5s"\nupgrade = lambda conn: None\n',
    "redefined": '"""Migration 0002: Two"""\ndepends_on = ()\ndepends_on = ("0001",)\n'
                 "def upgrade(conn):\n    pass\ndef upgrade(conn):\n    conn.execute('SELECT 2')\n",
}

#: Files whose declarations only running them can tell: loaded by running them, deferred or not.
NOT_PLAIN = {
    "computed dependencies": 'depends_on = tuple(["0001"])\ndef upgrade(conn):\n    pass\n',
    "decorated": "import functools\n@functools.lru_cache\ndef upgrade(conn):\n    pass\n",
    "conditional": "import sys\nif sys:\n    depends_on = ('0001',)\ndef upgrade(conn):\n    pass\n",
    "star import": "from os.path import *\ndef upgrade(conn):\n    pass\n",
    "imported function": "from os.path import join as upgrade\n",
    "a call": "print('loading')\ndef upgrade(conn):\n    pass\n",
    "a list": "depends_on = ['0001']\ndef upgrade(conn):\n    pass\n",
}


def _loaded_both_ways(path: Path):
    return load_migration(path, "0002"), load_migration(path, "0002", deferred=True)


@pytest.mark.parametrize("text", PLAIN.values(), ids=PLAIN.keys())
def test_a_plain_file_is_described_as_running_it_would_describe_it(catalog_dir: Path, text: str) -> None:
    path = catalog_dir / "migration_0002.py"
    path.write_text(text)
    ran, read = _loaded_both_ways(path)
    assert [getattr(read, f) for f in DESCRIBED] == [getattr(ran, f) for f in DESCRIBED]
    for name in FUNCTIONS:
        if getattr(ran, name) is None:
            assert getattr(read, name) is None, name
        else:
            deferred = getattr(read, name)
            assert isinstance(deferred, DeferredFunction), name
            assert deferred.load().__code__.co_code == getattr(ran, name).__code__.co_code, name


@pytest.mark.parametrize("text", NOT_PLAIN.values(), ids=NOT_PLAIN.keys())
def test_a_file_only_running_tells_is_run_even_when_deferred(catalog_dir: Path, text: str) -> None:
    path = catalog_dir / "migration_0002.py"
    path.write_text(text)
    ran, read = _loaded_both_ways(path)
    assert not isinstance(read.upgrade, DeferredFunction)
    assert [getattr(read, f) for f in DESCRIBED] == [getattr(ran, f) for f in DESCRIBED]


def test_the_shipped_catalog_reads_the_same_without_running_a_module() -> None:
    ran, read = load_catalog(shipped_catalog_dir()), load_catalog(shipped_catalog_dir(), deferred=True)
    assert [[getattr(m, f) for f in DESCRIBED] for m in read] == [[getattr(m, f) for f in DESCRIBED] for m in ran]
    assert all(isinstance(m.upgrade, DeferredFunction) for m in read)
    assert read.graph.topological_order() == ran.graph.topological_order()


def test_a_deferred_module_runs_once_for_all_its_functions(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", downgrade="conn.execute('DROP TABLE t')",
                    upgrade="conn.execute('CREATE TABLE t (x)')")
    migration = load_migration(catalog_dir / "migration_0001.py", "0001", deferred=True)
    upgrade = migration.upgrade.load()
    assert migration.downgrade.load().__globals__ is upgrade.__globals__
    assert migration.upgrade.load() is upgrade


# -- the commands: which modules run ---------------------------------------------------------------------------


def _tracked_catalog(tmp_path: Path, catalog_dir: Path, broken: str | None = None) -> None:
    """0001 and 0002, each importing a module of its own (``ran_000N``) that leaves a file when imported."""
    for version in ("0001", "0002"):
        (tmp_path / f"ran_{version}.py").write_text(
            f"import pathlib\npathlib.Path({str(tmp_path)!r}, 'ran_{version}.txt').write_text('ran')\n")
        module = broken if broken and version == "0002" else f"ran_{version}"
        write_migration(catalog_dir, version, depends_on=("0001",) if version == "0002" else (),
                        extra=f"import {module}\n", upgrade=f"conn.execute('CREATE TABLE t{version} (x)')",
                        downgrade=f"conn.execute('DROP TABLE t{version}')")


def _ran(tmp_path: Path) -> set[str]:
    found = {path.stem.removeprefix("ran_") for path in tmp_path.glob("ran_*.txt")}
    for path in tmp_path.glob("ran_*.txt"):
        path.unlink()
    return found


def test_reading_commands_run_no_migration_module(tmp_path: Path, catalog_dir: Path) -> None:
    _tracked_catalog(tmp_path, catalog_dir)
    db = tmp_path / "project" / "aipm.db"
    db.parent.mkdir()
    base = ["--migrations-dir", str(catalog_dir)]
    applied = run_apm(*base, "--db", str(db), "migrate", "--yes")
    assert applied.returncode == 0, applied.stderr
    assert _ran(tmp_path) == {"0001", "0002"}
    for command in (["--db", str(db), "status"], ["--db", str(db), "migrate", "--list"],
                    ["--db", str(db), "migrate", "--show-applied"], ["--db", str(db), "migrate", "graph"],
                    ["fleet", "status", "--glob", str(tmp_path / "project" / "*.db")],
                    ["fleet", "plan", "--rollback", "0002", "--glob", str(tmp_path / "project" / "*.db")]):
        result = run_apm(*base, *command, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert _ran(tmp_path) == set(), command


def test_a_rollback_runs_only_the_modules_it_calls(tmp_path: Path, catalog_dir: Path) -> None:
    _tracked_catalog(tmp_path, catalog_dir)
    db = tmp_path / "aipm.db"
    base = ["--migrations-dir", str(catalog_dir), "--db", str(db)]
    assert run_apm(*base, "migrate", "--yes").returncode == 0
    _ran(tmp_path)
    result = run_apm(*base, "migrate", "--rollback", "0002", "--yes")
    assert result.returncode == 0, result.stderr
    assert _ran(tmp_path) == {"0002"}
    with sqlite3.connect(db) as conn:
        assert [v for (v,) in conn.execute("SELECT version FROM schema_migrations")] == ["0001"]


def test_a_module_that_cannot_be_imported_still_stops_every_command_that_runs_code(tmp_path: Path,
                                                                                   catalog_dir: Path) -> None:
    _tracked_catalog(tmp_path, catalog_dir, broken="no_such_module_for_apm")
    db = tmp_path / "project" / "aipm.db"
    db.parent.mkdir()
    base = ["--migrations-dir", str(catalog_dir)]
    glob = str(tmp_path / "project" / "*.db")
    expected = "migration 0002 imports no_such_module_for_apm, which cannot be imported"
    for command in (["--db", str(db), "migrate", "--yes"], ["--db", str(db), "migrate", "plan"],
                    ["--db", str(db), "migrate", "--target", "0002", "--yes"],
                    ["fleet", "migrate", "--glob", glob, "--yes", "--journal-dir", str(tmp_path / "journals")]):
        result = run_apm(*base, *command, cwd=tmp_path)
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, command
        assert not db.exists() or sqlite3.connect(db).execute(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 't0%'").fetchone() == (0,), command
    assert _ran(tmp_path) <= {"0001"}  # 0001's module may run (its code is checked too); no table was made
    # What needs only 0001's code runs it alone; `check` reports the broken file as before.
    assert run_apm(*base, "--db", str(db), "migrate", "--target", "0001", "--yes").returncode == 0
    checked = run_apm(*base, "migrate", "check")
    assert checked.returncode != 0 and "no_such_module_for_apm" in checked.stdout + checked.stderr
    for command in (["--db", str(db), "migrate", "drift"], ["fleet", "status", "--drift", "--glob", glob]):
        result = run_apm(*base, *command, cwd=tmp_path)
        assert result.returncode == 3 and expected in result.stderr, (command, result.stdout, result.stderr)


def test_a_module_read_without_running_that_rebinds_its_declarations_is_refused(tmp_path: Path,
                                                                                catalog_dir: Path) -> None:
    """Only an import reaching back into the module can make it bind otherwise than its bytecode said."""
    (tmp_path / "rebinds.py").write_text(textwrap.dedent("""
        import sys
        sys.modules["apm_migration_0001"].depends_on = ("0007",)
    """))
    write_migration(catalog_dir, "0001", depends_on=(), extra="import rebinds\n")
    db = tmp_path / "aipm.db"
    result = run_apm("--migrations-dir", str(catalog_dir), "--db", str(db), "migrate", "--yes")
    assert result.returncode == 3, result.stderr
    assert "depends_on changed while its top level ran" in result.stderr
    assert not db.exists() or sqlite3.connect(db).execute("SELECT count(*) FROM sqlite_master "
                                                          "WHERE name = 't'").fetchone() == (0,)
