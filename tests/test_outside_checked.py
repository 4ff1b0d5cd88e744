"""A step outside a transaction is checked statement by statement, on both engines.

A ``transactional = False`` migration used to cost the whole plan its
safety: a script needed ``--yes`` for a plain ``VACUUM`` (which then waived
the data-loss check of every other step), and ``--dry-run`` previewed
nothing after it. Now each statement is checked before it commits: what
destroys nothing runs, the run stops before the first statement that
destroys data unless that is confirmed. And Ctrl-C during such a step
counts what every part of the run committed.

Every test runs the installed ``apm`` in a subprocess against a real SQLite
file and the PostgreSQL server the suite starts.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_apm, write_migration

ENGINES = ["sqlite", "postgresql"]

ROWS = dict(upgrade="conn.execute('CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT)')\n"
                    "conn.execute(\"INSERT INTO a VALUES (1, 'x'), (2, 'y'), (3, 'z')\")",
            downgrade="conn.execute('DROP TABLE a')")


class Target:
    """One database of either engine: its ``--db`` value and how to read it back."""

    def __init__(self, engine: str, tmp_path: Path, request: pytest.FixtureRequest):
        self.engine = engine
        self.db = str(tmp_path / "app.db") if engine == "sqlite" else request.getfixturevalue("pg_url")

    def rows(self, sql: str) -> list[tuple]:
        if self.engine == "sqlite":
            conn = sqlite3.connect(self.db)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.db) as conn:
            return conn.execute(sql).fetchall()

    def tables(self) -> set[str]:
        sql = ("SELECT name FROM sqlite_master WHERE type = 'table'" if self.engine == "sqlite" else
               "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in self.rows(sql)}

    def ledger(self) -> list[str]:
        if "schema_migrations" not in self.tables():
            return []
        return [row[0] for row in self.rows("SELECT version FROM schema_migrations ORDER BY version")]

    def args(self, catalog: Path) -> list[str]:
        return ["--db", self.db, "--migrations-dir", str(catalog)]


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return Target(request.param, tmp_path, request)


def apm(target: Target, catalog: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return run_apm(*target.args(catalog), *args, input=input)


def test_a_vacuum_only_step_runs_in_a_script_and_the_other_steps_keep_their_check(target: Target,
                                                                                  catalog_dir: Path):
    write_migration(catalog_dir, "0001", "Rows", depends_on=(), **ROWS)
    write_migration(catalog_dir, "0002", "Compact", depends_on=("0001",), upgrade="conn.execute('VACUUM')",
                    extra="transactional = False\n")
    write_migration(catalog_dir, "0003", "Drop", depends_on=("0002",), upgrade="conn.execute('DROP TABLE a')")
    # No --yes: the VACUUM needs none; 0003's loss is still refused, as in any plan.
    run = apm(target, catalog_dir, "migrate")
    assert run.returncode == 7, run.stderr
    assert "0003 apply: drops table a holding 3 rows" in run.stderr and "applied before it: 0001, 0002" in run.stderr
    assert target.ledger() == ["0001", "0002"] and target.rows("SELECT count(*) FROM a") == [(3,)]
    assert "Applied 0002 Compact" in run.stdout
    # With --yes only 0003's loss is what was confirmed.
    done = apm(target, catalog_dir, "migrate", "--yes")
    assert done.returncode == 0, done.stderr
    assert target.ledger() == ["0001", "0002", "0003"] and "a" not in target.tables()


def _dropping(catalog_dir: Path, statement: str) -> None:
    write_migration(catalog_dir, "0001", "Rows", depends_on=(), **ROWS)
    write_migration(catalog_dir, "0002", "Outside", depends_on=("0001",), extra="transactional = False\n",
                    upgrade="conn.execute('VACUUM')\n"
                            "conn.execute('CREATE TABLE IF NOT EXISTS c (id INTEGER)')\n"
                            f"conn.execute({statement!r})\n"
                            "conn.execute('CREATE TABLE IF NOT EXISTS d (id INTEGER)')")


def test_an_outside_step_stops_before_the_statement_that_drops_a_table_with_rows(target: Target, catalog_dir: Path):
    _dropping(catalog_dir, "DROP TABLE a")
    refused = apm(target, catalog_dir, "migrate")
    assert refused.returncode == 7, refused.stderr
    message = refused.stderr
    assert "migration 0002 (transactional = False) stopped before `DROP TABLE a` during apply: drops table a " \
           "holding 3 rows, which was not confirmed" in message
    # What committed is said as it is: 0001's part, and 0002's statements before the stop (autocommit).
    assert "its 2 statement(s) before it ran and stay (`VACUUM`; `CREATE TABLE IF NOT EXISTS c (id INTEGER)`)" \
           in message and "applied before it: 0001" in message and "Re-run with --yes" in message
    assert target.rows("SELECT count(*) FROM a") == [(3,)]
    assert "c" in target.tables() and "d" not in target.tables()
    assert target.ledger() == ["0001"]
    doctor = json.loads(apm(target, catalog_dir, "migrate", "doctor", "--json").stdout)
    assert [f["version"] for f in doctor["findings"] if f["code"] == "interrupted-non-transactional"] == ["0002"]
    # Confirmed with --yes: it runs again from the start, and what it destroyed is shown.
    done = apm(target, catalog_dir, "migrate", "--yes")
    assert done.returncode == 0, done.stderr
    assert "This run destroyed data, as confirmed:" in done.stderr
    assert "0002 apply: drops table a holding 3 rows" in done.stderr
    assert target.ledger() == ["0001", "0002"] and {"c", "d"} <= target.tables() and "a" not in target.tables()


@pytest.mark.parametrize("statement, loss", [
    ("DELETE FROM a WHERE id > 1", "deletes 2 rows of a"),
    ("UPDATE a SET name = 'w' WHERE id = 1", "overwrites 1 value of a.name"),
    ("ALTER TABLE a DROP COLUMN name", "drops column a.name holding 3 non-default values"),
])
def test_every_kind_of_loss_stops_an_outside_step_and_what_destroys_nothing_runs(target: Target, catalog_dir: Path,
                                                                                 statement: str, loss: str):
    _dropping(catalog_dir, statement)
    refused = apm(target, catalog_dir, "migrate", "--json")  # --json: never a question, as in a script
    assert refused.returncode == 7, refused.stderr
    assert f"stopped before `{statement}` during apply: {loss}" in refused.stderr
    assert target.rows("SELECT id, name FROM a ORDER BY id") == [(1, "x"), (2, "y"), (3, "z")]
    assert target.ledger() == ["0001"]


def test_a_statement_that_destroys_nothing_is_not_asked_about(target: Target, catalog_dir: Path):
    _dropping(catalog_dir, "DELETE FROM a WHERE id > 100")
    run = apm(target, catalog_dir, "migrate")
    assert run.returncode == 0, run.stderr
    assert target.ledger() == ["0001", "0002"] and {"c", "d"} <= target.tables()


def test_a_refusal_the_migration_swallows_still_stops_it(target: Target, catalog_dir: Path):
    write_migration(catalog_dir, "0001", "Rows", depends_on=(), **ROWS)
    write_migration(catalog_dir, "0002", "Outside", depends_on=("0001",), extra="transactional = False\n",
                    upgrade="try:\n    conn.execute('DROP TABLE a')\nexcept Exception:\n    pass\n"
                            "conn.execute('CREATE TABLE later (id INTEGER)')")
    refused = apm(target, catalog_dir, "migrate")
    assert refused.returncode == 7 and "stopped before `DROP TABLE a`" in refused.stderr, refused.stderr
    assert {"a"} <= target.tables() and "later" not in target.tables() and target.ledger() == ["0001"]


def test_on_a_terminal_the_person_is_asked_at_that_statement(target: Target, catalog_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    from click.testing import CliRunner

    import cli.running
    from cli.main import apm as apm_command

    _dropping(catalog_dir, "DROP TABLE a")
    monkeypatch.setattr(cli.running, "stdin_is_terminal", lambda: True)
    declined = CliRunner().invoke(apm_command, [*target.args(catalog_dir), "migrate"], input="n\n")
    assert declined.exit_code == 7, declined.output
    assert "0002 runs outside a transaction (transactional = False); its next statement, `DROP TABLE a`, " \
           "destroys data:" in declined.output and "stopped before `DROP TABLE a`" in declined.output
    assert target.rows("SELECT count(*) FROM a") == [(3,)] and target.ledger() == ["0001"]
    accepted = CliRunner().invoke(apm_command, [*target.args(catalog_dir), "migrate"], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "This run destroyed data, as confirmed:" in accepted.output
    assert target.ledger() == ["0001", "0002"] and "a" not in target.tables()


def test_a_dry_run_goes_past_a_vacuum_and_previews_the_steps_after_it(target: Target, catalog_dir: Path):
    write_migration(catalog_dir, "0001", "Rows", depends_on=(), **ROWS)
    write_migration(catalog_dir, "0002", "Compact", depends_on=("0001",), extra="transactional = False\n",
                    upgrade="conn.execute('VACUUM')\nconn.execute('ANALYZE')")
    write_migration(catalog_dir, "0003", "Drop", depends_on=("0002",), upgrade="conn.execute('DROP TABLE a')")
    dry = apm(target, catalog_dir, "migrate", "--dry-run", "--json")
    assert dry.returncode == 7, dry.stderr  # 0003's loss, now seen
    steps = {s["version"]: s for s in json.loads(dry.stdout)["steps"]}
    assert steps["0002"]["skipped"] is None and steps["0002"]["passed_over"] == ["VACUUM"]
    assert steps["0003"]["skipped"] is None
    assert [i["text"] for i in steps["0003"]["impact"]] == ["drops table a holding 3 rows"]
    assert json.loads(dry.stdout)["unchecked"] == []
    assert target.ledger() == []
    text = apm(target, catalog_dir, "migrate", "--dry-run").stdout
    assert "0002 apply: `VACUUM` not run by the preview: it runs only outside a transaction and changes no schema " \
           "or data" in text and "0003 apply: drops table a holding 3 rows" in text
    # Without 0003, nothing is lost: the dry run says so and exits 0.
    (catalog_dir / "migration_0003.py").unlink()
    clean = apm(target, catalog_dir, "migrate", "--dry-run")
    assert clean.returncode == 0 and "This plan loses no data." in clean.stdout, clean.stdout + clean.stderr


def test_a_dry_run_previews_what_an_outside_step_destroys(target: Target, catalog_dir: Path):
    _dropping(catalog_dir, "DROP TABLE a")
    dry = apm(target, catalog_dir, "migrate", "--dry-run", "--json")
    assert dry.returncode == 7
    step = json.loads(dry.stdout)["steps"][1]
    assert step["version"] == "0002" and [i["text"] for i in step["impact"]] == ["drops table a holding 3 rows"]
    assert target.ledger() == []


def test_a_dry_run_cannot_go_beyond_a_statement_that_changes_schema_outside_any_transaction(pg_url: str,
                                                                                            catalog_dir: Path):
    write_migration(catalog_dir, "0001", "Rows", depends_on=(), **ROWS)
    write_migration(catalog_dir, "0002", "Index", depends_on=("0001",), extra="transactional = False\n",
                    upgrade="conn.execute('CREATE INDEX CONCURRENTLY a_by_name ON a (name)')\n"
                            "conn.execute('DROP INDEX CONCURRENTLY a_by_name')")
    write_migration(catalog_dir, "0003", "After", depends_on=("0002",), upgrade="conn.execute('DROP TABLE a')")
    target = ["--db", pg_url, "--migrations-dir", str(catalog_dir)]
    dry = run_apm(*target, "migrate", "--dry-run", "--json")
    assert dry.returncode == 7, dry.stderr
    steps = {s["version"]: s for s in json.loads(dry.stdout)["steps"]}
    assert steps["0002"]["skipped"] == (
        "not previewed beyond `DROP INDEX CONCURRENTLY a_by_name`: it runs only outside a transaction and may "
        "change schema or data, which the preview's transaction could not undo")
    assert json.loads(dry.stdout)["unchecked"] == ["0002", "0003"]
    assert steps["0003"]["skipped"] == "not previewed: it needs 0002 first, which runs outside any transaction"
    text = run_apm(*target, "migrate", "--dry-run")
    assert text.returncode == 7 and "This plan may destroy data: 0002, 0003 could not be previewed" in text.stdout
    # The real run: both index statements destroy no data, so they run without a yes; 0003 is refused.
    run = run_apm(*target, "migrate")
    assert run.returncode == 7 and "0003 apply: drops table a holding 3 rows" in run.stderr, run.stderr


def test_ctrl_c_during_an_outside_step_counts_what_every_part_committed(target: Target, catalog_dir: Path,
                                                                       tmp_path: Path):
    marker = tmp_path / "started"
    write_migration(catalog_dir, "0001", "Rows", depends_on=(), **ROWS)
    write_migration(catalog_dir, "0002", "Slow", depends_on=("0001",), extra="transactional = False\n",
                    upgrade=f"conn.execute('CREATE TABLE IF NOT EXISTS c (id INTEGER)')\n"
                            f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)")
    apm_bin = Path(sys.executable).parent / "apm"
    process = subprocess.Popen([str(apm_bin), *target.args(catalog_dir), "migrate", "--yes"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert marker.exists() and process.returncode == 130, err
    assert "interrupted: applied 1 of 2 step(s) (0001); 0002 was running outside any transaction" in err
    assert target.ledger() == ["0001"] and "c" in target.tables()
