"""A downgrade that only raises is read as "irreversible" when the catalog loads, and refused up front.

APM's own catalog says "this cannot be undone" with a downgrade whose whole
body is ``raise NotImplementedError("...")``. Such a migration must be treated
exactly like one without ``downgrade``: every rollback plan through it is
refused before anything runs, quoting the reason, on both engines, and the
pytest plugin expects its stair to fail. A downgrade that raises only on some
path is ordinary and runs.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest

# Loaded once here, so the inner pytest sessions (pytester restores sys.modules after each) do not import them again.
import planner.engines.sqlite.runner  # noqa: F401
import planner.graph  # noqa: F401
import planner.lint  # noqa: F401
from planner.errors import CatalogInvalid, IrreversibleWithDowngrade
from planner.loader import load_catalog
from tests.conftest import run_apm
from tests.test_pytest_plugin import outcomes, report_of, without_hypothesis  # noqa: F401

pytest_plugins = ["pytester"]

REASON_0002 = ("Downgrade not supported for migration 0002. This migration fixes a critical security "
               "vulnerability (agents could read every project's tasks); restore from a backup instead.")
REASON_0003 = "Downgrade not supported for migration 0003. The notes were merged into tasks and the originals are gone."
REASON_0006 = "the old tier values are not kept"

#: The catalog in APM's style: docstrings with a Dependencies: section, depends_on, real SQL in both directions.
APM_STYLE = {
    "migration_0001_projects.py": '''
        """Migration 0001: Projects

        Dependencies:
        - None
        """
        depends_on = ()


        def upgrade(conn):
            conn.execute("CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")


        def downgrade(conn):
            conn.execute("DROP TABLE projects")
        ''',
    "migration_0002_security_fix.py": f'''
        """Migration 0002: Security fix

        Dependencies:
        - Migration 0001 (projects)
        """
        depends_on = ("0001",)


        def upgrade(conn):
            conn.execute("CREATE TABLE security_audit (id INTEGER PRIMARY KEY, project_id INTEGER)")


        def downgrade(conn):
            raise NotImplementedError("{REASON_0002}")
        ''',
    "migration_0003_merge_notes.py": '''
        """Migration 0003: Merge notes into tasks"""
        depends_on = ("0002",)


        def upgrade(conn):
            conn.execute("CREATE TABLE task_notes (id INTEGER PRIMARY KEY, body TEXT)")


        def downgrade(conn: "sqlite3.Connection") -> None:
            """No way back: see the message."""
            raise NotImplementedError(
                "Downgrade not supported for migration 0003. "
                "The notes were merged into tasks and the originals are gone."
            )
        ''',
    "migration_0004_agent_flags.py": '''
        """Migration 0004: Agent flags"""
        depends_on = ("0003",)


        def upgrade(conn):
            conn.execute("CREATE TABLE agent_flags (id INTEGER PRIMARY KEY, flag TEXT)")


        def downgrade(conn):
            if conn.execute("SELECT count(*) FROM agent_flags").fetchone()[0]:
                raise NotImplementedError("agent_flags holds rows; empty it before rolling back 0004")
            conn.execute("DROP TABLE agent_flags")
        ''',
    "migration_0005_legacy_import.py": '''
        """Migration 0005: Legacy import"""
        depends_on = ("0001",)


        def upgrade(conn):
            conn.execute("CREATE TABLE legacy_import (id INTEGER PRIMARY KEY)")
        ''',
    "migration_0006_tiers.sql": f'''
        -- Migration 0006: Tiers
        -- depends_on: 0001
        -- irreversible: {REASON_0006}
        -- upgrade
        CREATE TABLE tiers (id INTEGER PRIMARY KEY, name TEXT);
        ''',
}
TABLES = {"projects", "security_audit", "task_notes", "agent_flags", "legacy_import", "tiers"}


def apm_style(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in APM_STYLE.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    return folder


def quoted(version: str, reason: str) -> str:
    return f'{version} is irreversible ("{reason}")'


# -- reading the declaration -------------------------------------------------------------------------

#: downgrade body -> the reason read from it, or None for an ordinary downgrade that runs.
BODIES = {
    'raise NotImplementedError("Cannot undo: data lost")': "Cannot undo: data lost",
    "raise NotImplementedError": "downgrade raises NotImplementedError",
    "raise NotImplementedError()": "downgrade raises NotImplementedError",
    'raise NotImplementedError("")': "downgrade raises NotImplementedError",
    '"""Docstring first."""\nraise NotImplementedError("after a docstring")': "after a docstring",
    'raise NotImplementedError(\n    "one "\n    "two"\n)': "one two",
    'raise NotImplementedError("""first line\n    second line""")': "first line second line",
    'raise NotImplementedError("a" + "b")': "ab",
    'raise NotImplementedError(f"no way back from {conn!r}")': 'downgrade raises NotImplementedError(f"no way back from {conn!r}")',
    'raise IrreversibleError("Django says no")': "Django says no",
    'raise errors.Irreversible("the project says no")': "the project says no",
    "raise errors.Irreversible": "downgrade raises errors.Irreversible",
    "raise RuntimeError(REASON)": "downgrade raises RuntimeError(REASON)",
    "raise": "downgrade raises",
    # Ordinary downgrades: they may succeed, so they run.
    "pass": None,
    '"""Only a docstring."""': None,
    'if conn is None:\n    raise NotImplementedError("only sometimes")': None,
    'conn.execute("SELECT 1")\nraise NotImplementedError("after a statement")': None,
    'try:\n    raise NotImplementedError("caught")\nexcept NotImplementedError:\n    pass': None,
}


@pytest.mark.parametrize("body", list(BODIES))
def test_the_loader_reads_a_downgrade_that_only_raises_as_irreversible(catalog_dir: Path, body: str) -> None:
    source = ("class IrreversibleError(Exception):\n    pass\n\nclass errors:\n    Irreversible = IrreversibleError\n\n"
              "REASON = 'x'\n\ndef upgrade(conn):\n    pass\n\ndef downgrade(conn):\n" + textwrap.indent(body, "    ") + "\n")
    (catalog_dir / "migration_0001_a.py").write_text(source)

    migration = load_catalog(catalog_dir).get("0001")

    assert migration.irreversible_reason == BODIES[body]
    assert migration.reversible is (BODIES[body] is None)
    assert (migration.downgrade is None) is (BODIES[body] is not None)


@pytest.mark.parametrize("tail", [
    "downgrade = other",  # rebound after the def: the function that runs is another one
    "def decorate(function):\n    return lambda conn: None\n\n@decorate\ndef downgrade(conn):\n    raise NotImplementedError('x')",
])
def test_only_the_raising_def_that_is_the_modules_downgrade_counts(catalog_dir: Path, tail: str) -> None:
    (catalog_dir / "migration_0001_a.py").write_text(
        "def upgrade(conn):\n    pass\n\ndef other(conn):\n    pass\n\n"
        "def downgrade(conn):\n    raise NotImplementedError('never the module downgrade')\n\n" + tail + "\n")
    migration = load_catalog(catalog_dir).get("0001")
    assert migration.reversible and migration.irreversible_reason is None


def test_sql_files_say_irreversible_in_the_header_or_as_the_downgrade_section(catalog_dir: Path) -> None:
    (catalog_dir / "migration_0001_a.sql").write_text(
        "-- depends_on:\n-- irreversible:   the old   rows are gone\n-- upgrade\nCREATE TABLE a (id INTEGER);\n")
    (catalog_dir / "migration_0002_b.sql").write_text(
        "-- depends_on: 0001\n-- upgrade\nCREATE TABLE b (id INTEGER);\n-- downgrade\n-- irreversible: b is forever\n")
    (catalog_dir / "migration_0003_c.sql").write_text(
        "-- depends_on: 0001\n-- irreversible:\n-- upgrade\nCREATE TABLE c (id INTEGER);\n")
    catalog = load_catalog(catalog_dir)
    assert [(m.version, m.reversible, m.irreversible_reason) for m in catalog] == [
        ("0001", False, "the old rows are gone"), ("0002", False, "b is forever"), ("0003", False, "declared irreversible"),
    ]

    # Saying both "irreversible" and giving a downgrade is a contradiction, refused with its line.
    for name, text, line in [
        ("migration_0004_d.sql", "-- depends_on: 0001\n-- irreversible: x\n-- upgrade\nSELECT 1;\n-- downgrade\nSELECT 2;\n", 5),
        ("migration_0005_e.sql", "-- depends_on: 0001\n-- upgrade\nSELECT 1;\n-- downgrade\n-- irreversible: y\nSELECT 2;\n", 5),
    ]:
        (catalog_dir / name).write_text(text)
        with pytest.raises(CatalogInvalid) as info:
            load_catalog(catalog_dir)
        (problem,) = info.value.problems
        assert isinstance(problem, IrreversibleWithDowngrade) and problem.line == line, problem
        assert "irreversible" in str(problem) and "downgrade" in str(problem)
        (catalog_dir / name).unlink()


# -- refusing before anything runs, on both engines ------------------------------------------------


class Database:
    """One database to run ``apm`` against, and how to read back its ledger, its log and its tables."""

    def __init__(self, engine: str, target: str, catalog: Path):
        self.engine, self.target, self.catalog = engine, target, catalog

    def apm(self, *args: str):
        return run_apm(*args, "--db", self.target, "--migrations-dir", str(self.catalog))

    def rows(self, sql: str) -> list[tuple]:
        if self.engine == "sqlite":
            conn = sqlite3.connect(self.target)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.target) as conn:
            return conn.execute(sql).fetchall()

    def state(self) -> tuple[list[str], int, set[str]]:
        """The applied versions, the number of log rows, and the catalog's tables that exist."""
        ledger = [r[0] for r in self.rows("SELECT version FROM schema_migrations ORDER BY version")]
        log = self.rows("SELECT count(*) FROM schema_migrations_log")[0][0]
        if self.engine == "sqlite":
            names = {r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
        else:
            names = {r[0] for r in self.rows("SELECT table_name FROM information_schema.tables "
                                              "WHERE table_schema = 'public'")}
        return ledger, log, names & TABLES


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    catalog = apm_style(tmp_path / "migrations")
    target = str(tmp_path / "app.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    return Database(request.param, target, catalog)


def test_every_rollback_through_an_irreversible_migration_is_refused_before_anything_runs(database: Database) -> None:
    applied = database.apm("migrate", "--yes")
    assert applied.returncode == 0, applied.stderr
    before = database.state()
    assert before[0] == ["0001", "0002", "0003", "0004", "0005", "0006"] and before[2] == TABLES

    # The cascade would roll back 0004 (ordinary) before reaching 0003 and 0002: nothing may run at all.
    for args in (["migrate", "--rollback", "0002", "--cascade", "--yes"],
                 ["migrate", "--rollback", "0002", "--cascade", "--yes", "--no-preview"],
                 ["migrate", "plan", "--rollback", "0002", "--cascade"]):
        refused = database.apm(*args)
        assert refused.returncode == 4, (args, refused.stdout, refused.stderr)
        assert quoted("0002", REASON_0002) in refused.stderr and quoted("0003", REASON_0003) in refused.stderr
        assert "0004" not in refused.stderr and "nothing was changed" in refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert database.state() == before

    # Every kind of irreversibility in one refusal: two raising downgrades, a missing one, a SQL declaration.
    for args in (["migrate", "--rollback", "0001", "--cascade", "--yes", "--no-preview"],
                 ["migrate", "--to", "0001", "--yes"],
                 ["migrate", "plan", "--to", "base"]):
        refused = database.apm(*args)
        assert refused.returncode == 4, (args, refused.stdout, refused.stderr)
        for version, reason in (("0002", REASON_0002), ("0003", REASON_0003), ("0006", REASON_0006)):
            assert quoted(version, reason) in refused.stderr, (args, refused.stderr)
        assert "0005 define no downgrade(conn)" in refused.stderr
        assert database.state() == before

    # Without --cascade, the refusal does not advise a cascade that would be refused too.
    alone = database.apm("migrate", "--rollback", "0003", "--yes")
    assert alone.returncode == 4 and "A cascade cannot help" in alone.stderr
    assert quoted("0003", REASON_0003) in alone.stderr and "--cascade`" not in alone.stderr
    assert database.state() == before


def test_a_downgrade_that_raises_only_on_some_path_runs(database: Database) -> None:
    assert database.apm("migrate", "--yes").returncode == 0
    listed = json.loads(database.apm("migrate", "plan", "--rollback", "0004", "--json").stdout)
    assert [(s["version"], s["reversible"], s["irreversible"]) for s in listed["steps"]] == [("0004", True, None)]

    rolled_back = database.apm("migrate", "--rollback", "0004", "--yes", "--no-backup")
    assert rolled_back.returncode == 0, rolled_back.stderr
    ledger, _, tables = database.state()
    assert "0004" not in ledger and "agent_flags" not in tables

    # Its raise is real code, reached at run time: a failed step (5), rolled back, as any failing downgrade.
    assert database.apm("migrate", "--yes").returncode == 0
    database.rows("SELECT 1")  # the engine is reachable for the write below
    if database.engine == "sqlite":
        conn = sqlite3.connect(database.target)
        conn.execute("INSERT INTO agent_flags (flag) VALUES ('beta')")
        conn.commit()
        conn.close()
    else:
        import psycopg

        with psycopg.connect(database.target) as conn:
            conn.execute("INSERT INTO agent_flags (id, flag) VALUES (1, 'beta')")
    failed = database.apm("migrate", "--rollback", "0004", "--yes", "--no-backup")
    assert failed.returncode == 5 and "agent_flags holds rows" in failed.stderr, failed.stderr
    assert "0004" in database.state()[0]


# -- what the other commands show ------------------------------------------------------------------


def test_check_list_graph_and_the_catalog_page_show_each_irreversible_migration(tmp_path: Path) -> None:
    catalog = apm_style(tmp_path / "migrations")

    def apm(*args: str) -> str:
        done = run_apm(*args, "--db", str(tmp_path / "none.db"), "--migrations-dir", str(catalog))
        assert done.returncode == 0, done.stderr
        return done.stdout

    findings = json.loads(apm("migrate", "check", "--json"))
    check = {(f["version"], f["code"]): f for f in findings["findings"]}
    for version, reason in (("0002", REASON_0002), ("0003", REASON_0003), ("0006", REASON_0006)):
        finding = check[(version, "irreversible")]
        assert finding["severity"] == "info" and quoted(version, reason) in finding["message"]
    assert check[("0005", "no-downgrade")]["severity"] == "warning"
    assert not any(v == "0004" and c in ("irreversible", "no-downgrade") for v, c in check)

    listed = apm("migrate", "--list")
    rows = {line.split()[0]: line for line in listed.splitlines() if line[:4].isdigit() and " is irreversible" not in line}
    assert "rollback" in listed.splitlines()[0]
    assert rows["0002"].endswith("no: irreversible") and rows["0005"].endswith("no: no downgrade")
    assert "no:" not in rows["0004"]
    assert quoted("0003", REASON_0003) in listed
    listed_json = {m["version"]: m for m in json.loads(apm("migrate", "--list", "--json"))}
    assert listed_json["0002"]["irreversible"] == REASON_0002 and listed_json["0004"]["reversible"] is True

    mermaid = apm("migrate", "graph", "--format", "mermaid")
    assert 'm0002["0002 Security fix (irreversible)"]' in mermaid
    assert 'm0005["0005 Legacy import (no downgrade)"]' in mermaid
    assert "class m0002,m0003,m0005,m0006 irreversible" in mermaid
    assert 'm0004["0004 Agent flags"]' in mermaid
    text = apm("migrate", "graph", "--format", "text")
    assert "0003 Merge notes into tasks (irreversible)" in text and "0004 Agent flags (" not in text
    dot = apm("migrate", "graph", "--format", "dot")
    assert 'label="0006\\nTiers\\n(irreversible)", peripheries="2"' in dot
    nodes = {n["id"]: n for n in json.loads(apm("migrate", "graph", "--format", "json"))["nodes"]}
    assert nodes["0002"]["reversible"] is False and nodes["0002"]["irreversible"] == REASON_0002
    assert nodes["0004"]["reversible"] is True

    apm("migrate", "docs")
    page = (catalog / "README.md").read_text(encoding="utf-8")
    assert f"- Can be rolled back: no (it is irreversible: {REASON_0003})" in page
    assert "- Can be rolled back: no (it defines no downgrade)" in page


# -- the pytest plugin -------------------------------------------------------------------------------


def assert_plugin_outcomes_are_expected_failures_with_reasons(reprec: pytest.HookRecorder) -> None:
    results = outcomes(reprec)
    assert {k: v for k, v in results.items() if "[" in k} == {
        "stairway[0001]": "passed",
        "no-downgrade[0002]": "xfailed",
        "no-downgrade[0003]": "xfailed",
        "stairway[0004]": "passed",  # the walk went on over 0002 and 0003, and 0004's downgrade ran
        "no-downgrade[0005]": "xfailed",
        "no-downgrade[0006]": "xfailed",
    }
    assert quoted("0002", REASON_0002) in report_of(reprec, "no-downgrade[0002]").wasxfail
    assert quoted("0003", REASON_0003) in report_of(reprec, "no-downgrade[0003]").wasxfail
    assert quoted("0006", REASON_0006) in report_of(reprec, "no-downgrade[0006]").wasxfail
    assert "0005 declare(s) no downgrade(conn)" in report_of(reprec, "no-downgrade[0005]").wasxfail
    whole = report_of(reprec, "downgrade-all").wasxfail
    assert quoted("0002", REASON_0002) in whole and "0005 declare(s) no downgrade(conn)" in whole
    assert results["upgrade"] == "passed" and reprec.ret == 0


def test_the_plugin_expects_the_stair_of_an_irreversible_migration_to_fail(pytester: pytest.Pytester) -> None:
    apm_style(pytester.path / "migrations")
    assert_plugin_outcomes_are_expected_failures_with_reasons(pytester.inline_run("--apm-migrations", "migrations"))


@pytest.mark.postgres
def test_the_plugin_expects_the_same_on_postgres(pytester: pytest.Pytester, pg_url: str) -> None:
    import planner.engines.postgresql.runner  # noqa: F401  (loaded once, outside the inner session)
    import planner.engines.postgresql.schema  # noqa: F401
    import planner.engines.postgresql.testdb  # noqa: F401

    apm_style(pytester.path / "migrations")
    assert_plugin_outcomes_are_expected_failures_with_reasons(
        pytester.inline_run("--apm-migrations", "migrations", "--apm-db", pg_url))
