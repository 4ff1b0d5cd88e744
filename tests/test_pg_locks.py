"""Measured locks, rewrites and lock findings in the PostgreSQL preview (tests/pg_server.py).

Each finding has a case that raises it, on a table that existed before the
plan and holds rows, and the same statement on a table an earlier
migration of the same plan created, which raises nothing: the analysis
reads the server, so what the plan itself creates is never a finding.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_apm, write_migration
from tests.test_postgres import apm, query, run_sql

pytestmark = pytest.mark.postgres

TABLES = ("CREATE TABLE p (id INT PRIMARY KEY); INSERT INTO p SELECT generate_series(1, 200);"
          "CREATE TABLE t (id INT, c TEXT); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 200) g")

#: code -> the statements raising it on t (existing, 200 rows), and extra options.
CASES = {
    "index-not-concurrent": (["CREATE INDEX t_c ON t (c)"], ()),
    "set-not-null-scan": (["ALTER TABLE t ALTER COLUMN c SET NOT NULL"], ()),
    "constraint-not-valid-missing": (["ALTER TABLE t ADD CONSTRAINT positive CHECK (id > 0)"], ()),
    "table-rewrite": (["ALTER TABLE t ALTER COLUMN id TYPE BIGINT"], ()),
    "access-exclusive-held": (["ALTER TABLE t ADD COLUMN d INT", "UPDATE t SET d = 1"], ()),
    "no-lock-timeout": (["ALTER TABLE t ADD COLUMN d INT"], ("--lock-timeout", "off")),
}


#: The advice users see for the codes the command has an option for, word for word.
OPTION_ADVICE = {
    "access-exclusive-held": "keep the statement that takes ACCESS EXCLUSIVE alone in its migration, and run "
                             "backfills in their own steps; what later migrations run under it waits with it: apply "
                             "it in a run of its own (apm migrate --target VERSION), or with --no-preview (each "
                             "step commits on its own)",
    "no-lock-timeout": "set a lock timeout (--lock-timeout, lock_timeout in the config or the migration), so the "
                       "step gives up instead of queueing every reader behind it",
}


def migration(catalog_dir: Path, version: str, *statements: str, depends_on: tuple[str, ...] | None = None) -> None:
    body = "\n".join(f"conn.execute({s!r})" for s in statements)
    write_migration(catalog_dir, version, f"Step {version}", upgrade=body, depends_on=depends_on)


def dry_run(url: str, catalog_dir: Path, *options: str, cwd: Path | None = None) -> tuple[int, dict, str]:
    result = run_apm("--db", url, "--migrations-dir", str(catalog_dir), "migrate", "--dry-run", "--json", *options,
                     cwd=cwd)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def codes(report: dict, version: str) -> list[str]:
    step = next(s for s in report["steps"] if s["version"] == version)
    return [f["code"] for f in step["findings"]]


@pytest.fixture
def large(tmp_path: Path) -> Path:
    """A folder whose apm.toml calls 100 rows large (ACCESS EXCLUSIVE held across statements)."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "apm.toml").write_text("large_table_rows = 100\n")
    return folder


@pytest.mark.parametrize("code", CASES)
def test_each_finding_on_an_existing_table_and_none_on_one_the_plan_created(pg_url, catalog_dir, large, code):
    statements, options = CASES[code]
    run_sql(pg_url, TABLES + "; ANALYZE t")
    migration(catalog_dir, "0001", *statements)
    status, report, stderr = dry_run(pg_url, catalog_dir, *options, cwd=large)
    assert code in codes(report, "0001"), report["steps"][0]
    finding = next(f for f in report["steps"][0]["findings"] if f["code"] == code)
    assert finding["relation"] == "t" and finding["advice"] and finding["level"] in ("warning", "error")
    assert any(line.startswith(f"0001 apply: lock {finding['level']}: {code}: ") for line in report["lines"])
    if code in OPTION_ADVICE:  # the command names its own options in the advice (the library names none)
        assert finding["advice"] == OPTION_ADVICE[code]
        assert any(line.endswith(f"; safer: {OPTION_ADVICE[code]}") for line in report["lines"]), report["lines"]
    assert {"relation": "t"}.items() <= report["steps"][0]["locks"][0].items()
    assert query(pg_url, "SELECT to_regclass('schema_migrations')") == [(None,)]  # a dry run commits nothing

    # The same statements on a table created earlier in the same plan: nothing to report.
    run_sql(pg_url, "DROP TABLE t")
    (catalog_dir / "migration_0001.py").unlink()
    migration(catalog_dir, "0001", "CREATE TABLE t (id INT, c TEXT)",
              "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 200) g")
    migration(catalog_dir, "0002", *statements, depends_on=("0001",))
    status, report, stderr = dry_run(pg_url, catalog_dir, *options, cwd=large)
    assert codes(report, "0001") == [] and codes(report, "0002") == [], report["steps"]
    assert report["steps"][1]["locks"] == [] and report["steps"][1]["rewrites"] == []


def test_a_foreign_key_without_not_valid_scans_and_with_it_does_not(pg_url, catalog_dir):
    run_sql(pg_url, TABLES)
    migration(catalog_dir, "0001", "ALTER TABLE t ADD CONSTRAINT t_p FOREIGN KEY (id) REFERENCES p (id)")
    status, report, _ = dry_run(pg_url, catalog_dir)
    assert codes(report, "0001") == ["constraint-not-valid-missing"]
    locks = {(lock["relation"], lock["mode"]) for lock in report["steps"][0]["locks"]}
    assert locks == {("t", "SHARE ROW EXCLUSIVE"), ("p", "SHARE ROW EXCLUSIVE")}
    (catalog_dir / "migration_0001.py").unlink()
    migration(catalog_dir, "0001", "ALTER TABLE t ADD CONSTRAINT t_p FOREIGN KEY (id) REFERENCES p (id) NOT VALID")
    migration(catalog_dir, "0002", "ALTER TABLE t VALIDATE CONSTRAINT t_p", depends_on=("0001",))
    status, report, _ = dry_run(pg_url, catalog_dir)
    # In one run (one transaction) the VALIDATE scans while 0001's SHARE ROW EXCLUSIVE still blocks writes.
    assert codes(report, "0001") == [] and codes(report, "0002") == ["validate-same-run"], report["steps"]
    assert "SHARE ROW EXCLUSIVE taken by 0001 earlier in the same run" in report["steps"][1]["findings"][0]["text"]
    assert "apm migrate --target" in report["steps"][1]["findings"][0]["advice"]
    # In a later run, the safe pattern: nothing to report.
    assert apm(pg_url, "migrate", "--target", "0001", catalog=catalog_dir).returncode == 0
    status, report, _ = dry_run(pg_url, catalog_dir)
    assert status == 0 and codes(report, "0002") == [], report["steps"]


def test_the_rewrite_is_measured_from_the_file_node_not_the_text(pg_url, catalog_dir):
    """varchar(10) → varchar(20) needs no rewrite, a volatile default does; the text alone cannot tell."""
    run_sql(pg_url, "CREATE TABLE t (id INT, c VARCHAR(10)); INSERT INTO t VALUES (1, 'x')")
    migration(catalog_dir, "0001", "ALTER TABLE t ALTER COLUMN c TYPE VARCHAR(20)")
    migration(catalog_dir, "0002", "ALTER TABLE t ADD COLUMN r FLOAT DEFAULT random()", depends_on=("0001",))
    status, report, _ = dry_run(pg_url, catalog_dir)
    assert report["steps"][0]["rewrites"] == [] and codes(report, "0001") == []
    assert report["steps"][1]["rewrites"][:1] == ["t"] and codes(report, "0002") == ["table-rewrite"]


# -- the policy: what gates --dry-run and scripts, and how findings are accepted ---------------------


def indexed(url: str, catalog_dir: Path, allow: str = "") -> None:
    run_sql(url, TABLES)
    migration(catalog_dir, "0001", "CREATE INDEX t_c ON t (c)")
    if allow:
        path = catalog_dir / "migration_0001.py"
        path.write_text(path.read_text() + f"\nallow = [{allow!r}]\n")


def test_dry_run_exits_12_on_a_gating_finding_and_the_gate_comes_from_the_config(pg_url, catalog_dir, tmp_path):
    indexed(pg_url, catalog_dir)
    status, report, _ = dry_run(pg_url, catalog_dir)
    assert status == 12 and report["steps"][0]["findings"][0]["level"] == "error"
    # A warning does not gate by default; lock_gate = "warning" makes it.
    run_sql(pg_url, "DROP TABLE t; CREATE TABLE t (id INT, c TEXT); INSERT INTO t VALUES (1, 'x'); ANALYZE t")
    (catalog_dir / "migration_0001.py").unlink()
    migration(catalog_dir, "0001", "ALTER TABLE t ADD COLUMN d INT", "UPDATE t SET d = 1")
    (tmp_path / "apm.toml").write_text('large_table_rows = 1\n')
    status, report, _ = dry_run(pg_url, catalog_dir, cwd=tmp_path)
    assert status == 0 and codes(report, "0001") == ["access-exclusive-held"]
    (tmp_path / "apm.toml").write_text('large_table_rows = 1\nlock_gate = "warning"\n')
    assert dry_run(pg_url, catalog_dir, cwd=tmp_path)[0] == 12
    (tmp_path / "apm.toml").write_text('large_table_rows = 1\nlock_levels = { access-exclusive-held = "error" }\n')
    assert dry_run(pg_url, catalog_dir, cwd=tmp_path)[0] == 12


def test_a_script_is_refused_and_yes_does_not_accept_a_lock_finding(pg_url, catalog_dir):
    indexed(pg_url, catalog_dir)
    for options in ((), ("--yes",), ("--json",)):
        result = apm(pg_url, "migrate", *options, catalog=catalog_dir)
        assert result.returncode == 12, result.stderr
        assert "index-not-concurrent on t (error)" in result.stderr and "--allow CODE" in result.stderr
    assert query(pg_url, "SELECT to_regclass('t_c')") == [(None,)]


def test_accepted_per_run_with_allow(pg_url, catalog_dir):
    indexed(pg_url, catalog_dir)
    status, report, _ = dry_run(pg_url, catalog_dir, "--allow", "index-not-concurrent")
    assert status == 0 and report["steps"][0]["findings"][0]["accepted"] == "option"
    result = apm(pg_url, "migrate", "--allow", "index-not-concurrent", "--json", catalog=catalog_dir)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["preview"]["steps"][0]["findings"][0]["code"] == "index-not-concurrent"
    assert query(pg_url, "SELECT to_regclass('t_c')::text") == [("t_c",)]
    bad = apm(pg_url, "migrate", "--allow", "index-not-concurent", catalog=catalog_dir)
    assert bad.returncode == 2 and "is no finding code" in bad.stderr


def test_accepted_per_migration_with_allow_in_the_file(pg_url, catalog_dir):
    indexed(pg_url, catalog_dir, allow="index-not-concurrent")
    status, report, _ = dry_run(pg_url, catalog_dir)
    assert status == 0 and report["steps"][0]["findings"][0]["accepted"] == "migration"
    assert apm(pg_url, "migrate", catalog=catalog_dir).returncode == 0
    assert query(pg_url, "SELECT to_regclass('t_c')::text") == [("t_c",)]


@pytest.mark.parametrize("second", ["CREATE INDEX t_c2 ON t (c, id)",
                                    "CREATE UNIQUE INDEX IF NOT EXISTS t_u ON ONLY public.t (id)", 'REINDEX TABLE "t"'])
def test_an_index_built_on_a_table_an_earlier_step_locked_is_judged_as_its_own(pg_url, catalog_dir, second):
    """Each step is judged as if it ran alone: the second index build on ``t`` found the SHARE lock the first
    one took still held in the preview's transaction, was not judged, and passed the gate behind an accepted one
    (a run with --no-preview commits each step alone, so the second blocks writes too)."""
    indexed(pg_url, catalog_dir, allow="index-not-concurrent")
    migration(catalog_dir, "0002", second, depends_on=("0001",))
    status, report, _ = dry_run(pg_url, catalog_dir)
    assert codes(report, "0001") == ["index-not-concurrent"]
    assert codes(report, "0002") == ["index-not-concurrent"], report
    step = next(s for s in report["steps"] if s["version"] == "0002")
    assert [(lock["relation"], lock["mode"]) for lock in step["locks"]] == [("t", "SHARE")], step["locks"]
    assert status == 12
    # An index on another table is not the first table's: no finding names t in a step that never touched it.
    migration(catalog_dir, "0002", "CREATE INDEX p_id ON p (id)", depends_on=("0001",))
    status, report, _ = dry_run(pg_url, catalog_dir)
    assert all(f["relation"] != "t" for f in next(s for s in report["steps"] if s["version"] == "0002")["findings"])


def test_on_a_terminal_the_findings_are_shown_and_asked(pg_url, catalog_dir, monkeypatch):
    from click.testing import CliRunner

    import cli.running
    from cli.main import apm as apm_command

    indexed(pg_url, catalog_dir)
    monkeypatch.setattr(cli.running, "stdin_is_terminal", lambda: True)
    args = ["--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate"]
    declined = CliRunner().invoke(apm_command, args, input="n\n")
    assert declined.exit_code == 12 and "can hold a live database up" in declined.output
    assert query(pg_url, "SELECT to_regclass('t_c')") == [(None,)]
    accepted = CliRunner().invoke(apm_command, args, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert query(pg_url, "SELECT to_regclass('t_c')::text") == [("t_c",)]


def test_a_sql_migration_declares_allow_and_lock_timeout_in_its_header(pg_url, catalog_dir):
    run_sql(pg_url, TABLES)
    (catalog_dir / "migration_0001_index.sql").write_text(
        "-- Migration 0001: Index t.c\n-- allow: index-not-concurrent\n-- lock_timeout: 300ms\n"
        "-- upgrade\nCREATE INDEX t_c ON t (c);\n")
    status, report, _ = dry_run(pg_url, catalog_dir)
    assert status == 0 and report["steps"][0]["findings"][0]["accepted"] == "migration"
    (catalog_dir / "migration_0001_index.sql").write_text(
        "-- Migration 0001: Index t.c\n-- allow: index-not-concurent\n-- upgrade\nCREATE INDEX t_c ON t (c);\n")
    result = apm(pg_url, "migrate", "--dry-run", catalog=catalog_dir)
    assert result.returncode == 3 and "'index-not-concurent', which is no finding code" in result.stderr


# -- apm migrate check --db URL: the pending plan previewed (rolled back) for its lock findings ---------


def relations(url: str) -> list[tuple]:
    """Every user relation with its file node, and t's rows: what a check must leave as it found it."""
    return query(url, "SELECT c.relname, c.relfilenode, (SELECT count(*) FROM t) FROM pg_class c "
                      "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN "
                      "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1")


def check(url: str, catalog_dir: Path, *options: str, cwd: Path | None = None):
    return run_apm("migrate", "check", "--db", url, "--migrations-dir", str(catalog_dir), *options, cwd=cwd)


def test_check_exits_12_on_a_pending_lock_finding_and_changes_nothing(pg_url, catalog_dir, tmp_path):
    indexed(pg_url, catalog_dir)
    before = relations(pg_url)
    result = check(pg_url, catalog_dir)
    assert result.returncode == 12, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if "index-not-concurrent" in line)
    assert line.split()[:2] == ["error", "0001"] and "builds an index on t" in line and "CONCURRENTLY" in line
    assert "previewed 1 pending step(s) in one transaction, rolled back" in result.stdout
    report = json.loads(check(pg_url, catalog_dir, "--json").stdout)
    assert report["exit_code"] == 12 and report["locks"]["previewed"] == ["0001"]
    assert [(f["code"], f["scope"], f["severity"]) for f in report["findings"] if f["scope"] == "locks"] == \
        [("index-not-concurrent", "locks", "error")]
    # Accepted per run: shown as an info, not gating.
    accepted = json.loads(check(pg_url, catalog_dir, "--json", "--allow", "index-not-concurrent").stdout)
    assert accepted["exit_code"] == 0
    assert [f["severity"] for f in accepted["findings"] if f["code"] == "index-not-concurrent"] == ["info"]
    # The config's levels and gate are the same policy as --dry-run's: a warning does not gate by default.
    (tmp_path / "apm.toml").write_text('lock_levels = { index-not-concurrent = "warning" }\n')
    warned = json.loads(check(pg_url, catalog_dir, "--json", cwd=tmp_path).stdout)
    assert warned["exit_code"] == 0
    assert [f["severity"] for f in warned["findings"] if f["code"] == "index-not-concurrent"] == ["warning"]
    (tmp_path / "apm.toml").write_text('lock_levels = { index-not-concurrent = "warning" }\nlock_gate = "warning"\n')
    assert check(pg_url, catalog_dir, cwd=tmp_path).returncode == 12
    assert relations(pg_url) == before  # three previews, all rolled back: no index, no ledger, same file nodes
    assert query(pg_url, "SELECT to_regclass('schema_migrations'), to_regclass('t_c')") == [(None, None)]


def test_check_passes_when_the_migration_allows_it_and_when_nothing_is_pending(pg_url, catalog_dir):
    indexed(pg_url, catalog_dir, allow="index-not-concurrent")
    result = check(pg_url, catalog_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if "index-not-concurrent" in line)
    assert line.startswith("info") and "(error, accepted by the migration)" in line
    assert query(pg_url, "SELECT to_regclass('t_c')") == [(None,)]
    assert run_apm("migrate", "--db", pg_url, "--migrations-dir", str(catalog_dir)).returncode == 0
    # Applied: nothing pending, nothing previewed.
    done = check(pg_url, catalog_dir)
    assert done.returncode == 0 and "nothing pending, nothing previewed" in done.stdout, done.stdout


def test_check_does_not_preview_a_plan_that_would_be_refused(pg_url, catalog_dir):
    indexed(pg_url, catalog_dir)
    migration(catalog_dir, "0002", "SELECT 1", depends_on=("0009",))  # an unknown dependency: exit 3
    result = check(pg_url, catalog_dir)
    assert result.returncode == 3 and "locks not previewed: unknown-dependency" in result.stdout, result.stdout


def test_check_says_when_the_pending_plan_fails_in_its_preview(pg_url, catalog_dir):
    run_sql(pg_url, TABLES)
    migration(catalog_dir, "0001", "CREATE INDEX t_c ON t (c)", "SELECT * FROM no_such_table")
    result = check(pg_url, catalog_dir)
    assert result.returncode == 5 and "found by check's lock preview: nothing was committed" in result.stderr
    assert "Traceback" not in result.stderr and query(pg_url, "SELECT to_regclass('t_c')") == [(None,)]


@pytest.mark.parametrize("statements", [
    ("CREATE INDEX t_c ON t (c)", "UPDATE t SET c = c || 'grown'", "ALTER TABLE t ADD COLUMN d INT",
     "UPDATE t SET d = 1"),
    ("ALTER TABLE t ADD COLUMN d INT", "UPDATE t SET d = 1, c = c || 'grown'", "CREATE INDEX t_d ON t (d)"),
], ids=["index-then-exclusive", "exclusive-then-index"])
def test_a_steps_lock_and_its_findings_name_the_size_the_table_had_when_the_step_first_locked_it(
        pg_url, catalog_dir, large, statements):
    """The UPDATE between two locks doubles t: the entry and every finding still say the size it had first."""
    run_sql(pg_url, TABLES + "; ANALYZE t")
    first = query(pg_url, "SELECT pg_relation_size('t')")[0][0]
    migration(catalog_dir, "0001", *statements)
    status, report, _ = dry_run(pg_url, catalog_dir, cwd=large)
    step = report["steps"][0]
    assert [(lock["relation"], lock["mode"], lock["bytes"]) for lock in step["locks"]] == \
        [("t", "ACCESS EXCLUSIVE", first)], step["locks"]
    assert {f["code"] for f in step["findings"]} == {"index-not-concurrent", "access-exclusive-held"}
    for finding in step["findings"]:
        assert f"~200 rows, {first} bytes" in finding["text"], finding["text"]


def test_dropping_a_table_with_a_foreign_key_shows_the_lock_on_the_table_it_referenced(pg_url, catalog_dir):
    """A DROP TABLE is read after only when it can lock more than what it drops (docs/performance.md, Locks)."""
    run_sql(pg_url, TABLES + "; CREATE TABLE c (p INT REFERENCES p (id)); CREATE TABLE lone (id INT)")
    migration(catalog_dir, "0001", "DROP TABLE lone")
    migration(catalog_dir, "0002", "DROP TABLE c", depends_on=("0001",))
    status, report, _ = dry_run(pg_url, catalog_dir)
    assert report["steps"][0]["locks"] == []  # what a DROP locks alone is gone with it
    assert [(lock["relation"], lock["mode"]) for lock in report["steps"][1]["locks"]] == [("p", "ACCESS EXCLUSIVE")]

    # A foreign key the plan adds before the drop counts too (what was known about the tables is read again).
    run_sql(pg_url, "CREATE TABLE other (id INT)")
    (catalog_dir / "migration_0002.py").unlink()
    migration(catalog_dir, "0002", "ALTER TABLE other ADD CONSTRAINT o_p FOREIGN KEY (id) REFERENCES p (id) NOT VALID",
              depends_on=("0001",))
    migration(catalog_dir, "0003", "DROP TABLE other", depends_on=("0002",))
    status, report, _ = dry_run(pg_url, catalog_dir)
    assert [(lock["relation"], lock["mode"]) for lock in report["steps"][2]["locks"]] == [("p", "ACCESS EXCLUSIVE")]
