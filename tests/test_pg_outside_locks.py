"""Lock findings of ``transactional = False`` steps, statement by statement, before each runs (docs/locks.md).

A step outside a transaction cannot be previewed whole, so it used to run
with no lock analysis at all: a plain ``CREATE INDEX`` on a busy table in
such a step blocked its writes for the whole build without a word. Now each
statement that can run in a transaction is first run in one of its own,
its locks measured there (the preview's lock watch), and committed only
when its findings do not gate the run or are accepted; a statement that
runs only outside a transaction (``VACUUM FULL``, ``REINDEX SCHEMA``) is
judged by its kind before it runs. Same codes, same policy, exit 12.

Every test runs the installed ``apm`` against the server the suite starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_apm, write_migration
from tests.test_postgres import query, run_sql

pytestmark = pytest.mark.postgres

TABLE = "CREATE TABLE t (id INT PRIMARY KEY, c TEXT); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 200) g"


def outside(catalog_dir: Path, *statements: str, allow: str = "") -> None:
    """0001, outside a transaction, running ``statements``; ``allow`` its declaration (``allow = [...]``)."""
    extra = "transactional = False\n" + (f"allow = [{allow!r}]\n" if allow else "")
    write_migration(catalog_dir, "0001", "Outside", depends_on=(), extra=extra,
                    upgrade="\n".join(f"conn.execute({s!r})" for s in statements))


def apm(url: str, catalog_dir: Path, *args: str):
    return run_apm("--db", url, "--migrations-dir", str(catalog_dir), "migrate", *args)


def ledger(url: str) -> list[str]:
    if not query(url, "SELECT to_regclass('schema_migrations') IS NOT NULL")[0][0]:
        return []
    return [row[0] for row in query(url, "SELECT version FROM schema_migrations ORDER BY version")]


def indexes(url: str) -> set[str]:
    return {row[0] for row in query(url, "SELECT indexname FROM pg_indexes WHERE tablename = 't'")}


def test_an_index_built_without_concurrently_in_an_outside_step_is_refused_before_it_runs(pg_url: str,
                                                                                          catalog_dir: Path):
    run_sql(pg_url, TABLE)
    outside(catalog_dir, "CREATE TABLE u (id INT)", "CREATE INDEX t_c ON t (c)", "CREATE TABLE v (id INT)")
    for extra in ((), ("--yes",)):  # --yes confirms data loss only, never a lock finding
        refused = apm(pg_url, catalog_dir, *extra)
        assert refused.returncode == 12, refused.stderr
        assert ("migration 0001 (transactional = False) stopped before `CREATE INDEX t_c ON t (c)` during apply "
                "(tried in a transaction of its own and rolled back): error: index-not-concurrent: builds an index "
                "on t (~200 rows") in refused.stderr
        assert "its 1 statement(s) before it ran and stay (`CREATE TABLE u (id INT)`)" in refused.stderr
        assert "--allow CODE" in refused.stderr and "Traceback" not in refused.stderr
        # Rolled back: no index, nothing after it ran, not recorded; what ran before it stays (autocommit).
        assert indexes(pg_url) == {"t_pkey"} and ledger(pg_url) == []
        assert query(pg_url, "SELECT to_regclass('v') IS NULL, to_regclass('u') IS NOT NULL") == [(True, True)]
        run_sql(pg_url, "DROP TABLE u")


@pytest.mark.parametrize("how", ["option", "migration"])
def test_an_accepted_finding_runs_and_is_shown(pg_url: str, catalog_dir: Path, how: str):
    run_sql(pg_url, TABLE)
    outside(catalog_dir, "CREATE INDEX t_c ON t (c)", allow="index-not-concurrent" if how == "migration" else "")
    run = apm(pg_url, catalog_dir, "--json", *(("--allow", "index-not-concurrent") if how == "option" else ()))
    assert run.returncode == 0, run.stderr
    assert indexes(pg_url) == {"t_pkey", "t_c"} and ledger(pg_url) == ["0001"]
    [row] = json.loads(run.stdout)["results"]
    [finding] = row["findings"]
    assert (finding["code"], finding["relation"], finding["level"], finding["accepted"], finding["measured"]) == \
        ("index-not-concurrent", "t", "error", how, True)
    assert finding["statement"] == "CREATE INDEX t_c ON t (c)"
    assert "Steps outside a transaction ran with these lock findings:" in run.stderr
    assert "0001 apply: lock error: index-not-concurrent: builds an index on t" in run.stderr
    assert f"(accepted by the {how})" in run.stderr


def test_what_the_step_itself_created_is_never_a_finding(pg_url: str, catalog_dir: Path):
    # The same statements on a table an earlier statement of the step created (and filled): no finding.
    outside(catalog_dir, "CREATE TABLE t (id INT, c TEXT)",
            "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 200) g", "CREATE INDEX t_c ON t (c)", "ALTER TABLE t ALTER COLUMN id TYPE BIGINT", "VACUUM FULL t")
    run = apm(pg_url, catalog_dir, "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["results"][0]["findings"] == []
    assert ledger(pg_url) == ["0001"] and indexes(pg_url) == {"t_c"}


@pytest.mark.parametrize("statement, code, measured", [
    ("ALTER TABLE t ALTER COLUMN id TYPE BIGINT", "table-rewrite", True),
    ("ALTER TABLE t ALTER COLUMN c SET NOT NULL", "set-not-null-scan", True),
    ("ALTER TABLE t ADD CONSTRAINT positive CHECK (id > 0)", "constraint-not-valid-missing", True),
    ("REINDEX TABLE t", "index-not-concurrent", True),
    ("VACUUM FULL t", "table-rewrite", False),
    ("VACUUM (FULL, ANALYZE)", "table-rewrite", False),
    ("REINDEX SCHEMA public", "index-not-concurrent", False),
])
def test_each_finding_stops_its_statement_measured_or_judged_by_kind(pg_url: str, catalog_dir: Path,
                                                                     statement: str, code: str, measured: bool):
    run_sql(pg_url, TABLE)
    node = query(pg_url, "SELECT relfilenode FROM pg_class WHERE relname = 't'")
    outside(catalog_dir, statement)
    refused = apm(pg_url, catalog_dir)
    assert refused.returncode == 12, refused.stderr
    how = "tried in a transaction of its own and rolled back" if measured else "judged by its kind and not run"
    assert f"stopped before `{statement}` during apply ({how}): error: {code}: " in refused.stderr
    assert f"{code}: " in refused.stderr.split("(tried" if measured else "(judged", 1)[1]
    assert query(pg_url, "SELECT relfilenode FROM pg_class WHERE relname = 't'") == node  # nothing rewritten
    assert ledger(pg_url) == []
    accepted = apm(pg_url, catalog_dir, "--allow", code, "--json")
    assert accepted.returncode == 0, accepted.stderr
    found = json.loads(accepted.stdout)["results"][0]["findings"]
    assert [(f["code"], f["relation"], f["measured"]) for f in found] == [(code, "t", measured)]


@pytest.mark.parametrize("statement", [
    "CREATE INDEX CONCURRENTLY t_c ON t (c)", "VACUUM t", "ANALYZE t", "REINDEX TABLE CONCURRENTLY t",
    "ALTER TABLE t ADD CONSTRAINT positive CHECK (id > 0) NOT VALID",
])
def test_the_safe_forms_run_without_a_finding(pg_url: str, catalog_dir: Path, statement: str):
    run_sql(pg_url, TABLE)
    outside(catalog_dir, statement)
    run = apm(pg_url, catalog_dir, "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["results"][0]["findings"] == [] and ledger(pg_url) == ["0001"]


def test_no_lock_timeout_is_a_warning_that_does_not_stop_it(pg_url: str, catalog_dir: Path):
    run_sql(pg_url, TABLE)
    outside(catalog_dir, "ALTER TABLE t ADD COLUMN d INT")
    run = apm(pg_url, catalog_dir, "--json", "--lock-timeout", "off")
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)["results"][0]["findings"]
    assert [(f["code"], f["level"], f["accepted"]) for f in found] == [("no-lock-timeout", "warning", None)]


def test_the_config_gate_and_levels_apply(pg_url: str, catalog_dir: Path, tmp_path: Path):
    run_sql(pg_url, TABLE)
    outside(catalog_dir, "ALTER TABLE t ADD COLUMN d INT")
    work = tmp_path / "work"
    work.mkdir()
    (work / "apm.toml").write_text('lock_gate = "warning"\n')
    refused = run_apm("--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate", "--lock-timeout", "off",
                      cwd=work)
    assert refused.returncode == 12 and "warning: no-lock-timeout" in refused.stderr, refused.stderr
    assert "safer: set a lock timeout (--lock-timeout, lock_timeout in the config or the migration)" in refused.stderr
    assert query(pg_url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'd'") == [(0,)]


def test_on_a_terminal_the_person_is_asked_about_the_lock(pg_url: str, catalog_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    from click.testing import CliRunner

    import cli.running
    from cli.main import apm as apm_command

    run_sql(pg_url, TABLE)
    outside(catalog_dir, "CREATE INDEX t_c ON t (c)")
    monkeypatch.setattr(cli.running, "stdin_is_terminal", lambda: True)
    args = ["--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate"]
    declined = CliRunner().invoke(apm_command, args, input="n\n")
    assert declined.exit_code == 12, declined.output
    assert "its next statement, `CREATE INDEX t_c ON t (c)`, takes locks that can hold a live database up" \
           in declined.output
    assert indexes(pg_url) == {"t_pkey"}
    accepted = CliRunner().invoke(apm_command, args, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert indexes(pg_url) == {"t_pkey", "t_c"} and ledger(pg_url) == ["0001"]


def test_a_dry_run_judges_what_it_passes_over(pg_url: str, catalog_dir: Path):
    run_sql(pg_url, TABLE)
    outside(catalog_dir, "VACUUM FULL t", "CREATE INDEX CONCURRENTLY t_c ON t (c)")
    dry = run_apm("--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate", "--dry-run", "--json")
    assert dry.returncode == 12, dry.stderr
    [step] = json.loads(dry.stdout)["steps"]
    assert step["passed_over"] == ["VACUUM FULL t", "CREATE INDEX CONCURRENTLY t_c ON t (c)"]
    assert [(f["code"], f["relation"]) for f in step["findings"]] == [("table-rewrite", "t")]
    assert "judged by its kind" in step["findings"][0]["text"]


def test_a_reindex_in_an_ordinary_migration_is_measured_by_the_preview(pg_url: str, catalog_dir: Path):
    run_sql(pg_url, TABLE)
    write_migration(catalog_dir, "0001", "Reindex", depends_on=(), upgrade="conn.execute('REINDEX TABLE t')")
    dry = run_apm("--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate", "--dry-run", "--json")
    assert dry.returncode == 12, dry.stderr
    [step] = json.loads(dry.stdout)["steps"]
    assert [(f["code"], f["relation"]) for f in step["findings"]] == [("index-not-concurrent", "t")]
    assert "t_pkey" in step["rewrites"]


def test_a_fleet_refuses_the_step_as_it_refuses_a_previewed_part(pg_url: str, catalog_dir: Path, tmp_path: Path):
    run_sql(pg_url, TABLE)
    outside(catalog_dir, "CREATE INDEX t_c ON t (c)")
    listing = tmp_path / "fleet.txt"
    listing.write_text(pg_url + "\n")

    def fleet(*args: str):
        return run_apm("--migrations-dir", str(catalog_dir), "fleet", "migrate", "--list", str(listing), "--json",
                       *args, cwd=tmp_path)

    refused = fleet("--yes")
    assert refused.returncode == 12, refused.stdout + refused.stderr
    [row] = json.loads(refused.stdout)["databases"]
    assert row["outcome"] == "refused" and row["lock_findings"] == ["0001: index-not-concurrent on t (error)"]
    assert indexes(pg_url) == {"t_pkey"} and ledger(pg_url) == []
    applied = fleet("--allow", "index-not-concurrent")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert indexes(pg_url) == {"t_pkey", "t_c"} and ledger(pg_url) == ["0001"]
