"""PostgreSQL on a real server (tests/pg_server.py): the same commands and guarantees as on SQLite.

Every test runs the installed ``apm`` in a subprocess against a fresh
database of the session's throwaway server, and checks the outcome by
reading the database itself with psycopg.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_apm, write_migration

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "postgres"


def apm(url: str, *args: str, catalog: Path = EXAMPLE, env: dict | None = None):
    return run_apm(*args, "--db", url, "--migrations-dir", str(catalog), env=env)


def query(url: str, sql: str, params=None) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def run_sql(url: str, sql: str, params=None) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(sql, params)


def applied(url: str, schema: str = "public") -> list[str]:
    return [r[0] for r in query(url, f"SELECT version FROM {schema}.schema_migrations ORDER BY version")]


def missing_database(url: str) -> str:
    """The URL of a database that does not exist on the same server."""
    name = url.split("@/", 1)[1].split("?", 1)[0]
    return url.replace(f"@/{name}?", "@/no_such_db?")


def test_redact_masks_every_password_form():
    from planner.engines import on_server, redact

    assert redact("postgresql://me:s3cret@db:5432/app") == "postgresql://me:***@db:5432/app"
    assert redact("postgres://me@db/app?password=s3cret&sslmode=require") == \
        "postgres://me@db/app?password=***&sslmode=require"
    assert redact("host=/run/pg dbname=app password='a b'") == "host=/run/pg dbname=app password=***"
    assert on_server("host=/run/pg dbname=app") and not on_server(".aipm/data/aipm.db")


def test_without_password_leaves_every_password_form_out():
    from planner.urls import without_password

    assert without_password("postgresql://me:s3cret@db:5432/app") == "postgresql://me@db:5432/app"
    assert without_password("postgresql://:s3cret@db/app") == "postgresql://db/app"
    assert without_password("postgres://me@db/app?password=s3cret&sslmode=require") == \
        "postgres://me@db/app?sslmode=require"
    assert without_password("host=/run/pg password='a b' dbname=app") == "host=/run/pg dbname=app"
    assert without_password("postgresql://me@db/app") == "postgresql://me@db/app"


def test_a_url_without_the_driver_is_one_line_naming_the_extra(monkeypatch):
    from planner.engines import engine_for
    from planner.errors import DriverMissing

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(DriverMissing, match=r"pip install 'apm-migrate\[postgres\]'") as error:
        engine_for("postgresql://me:s3cret@db/app").applied()
    assert "s3cret" not in str(error.value)


def test_apply_show_applied_status_rollback_cascade_with_backup(pg_url, tmp_path):
    result = apm(pg_url, "migrate", "--yes")
    assert result.returncode == 0, result.stderr
    assert applied(pg_url) == ["0001", "0002", "0003", "0004", "0005", "0006"]
    assert query(pg_url, "SELECT count(*) FROM pg_indexes WHERE indexname = 'tasks_by_title'") == [(1,)]
    shown = json.loads(apm(pg_url, "migrate", "--show-applied", "--json").stdout)
    assert [(e["version"], e["file"]) for e in shown][:2] == [("0001", "ok"), ("0002", "ok")]
    status = json.loads(apm(pg_url, "status", "--json").stdout)
    assert (status["schema_version"], status["applied"], status["pending"]) == ("0006", 6, 0)

    refused = apm(pg_url, "migrate", "--rollback", "0003")
    assert refused.returncode == 4 and "0004" in refused.stderr
    backups = tmp_path / "dumps"
    done = apm(pg_url, "migrate", "--rollback", "0003", "--cascade", "--yes", "--backup-dir", str(backups))
    assert done.returncode == 0, done.stderr
    assert applied(pg_url) == ["0001", "0002", "0005", "0006"]
    columns = {r[0] for r in query(pg_url, "SELECT column_name FROM information_schema.columns "
                                           "WHERE table_schema = 'app' AND table_name = 'tasks'")}
    assert "priority" not in columns and "legacy_code" in columns  # the ledger equals the schema
    dumps = list(backups.glob("*.dump"))
    assert len(dumps) == 1 and dumps[0].name.startswith(pg_url.split("?")[0].rsplit("/", 1)[-1] + ".")
    again = apm(pg_url, "migrate", "--target", "0003")
    assert again.returncode == 0 and applied(pg_url) == ["0001", "0002", "0003", "0005", "0006"]


def test_a_failing_migration_mid_plan_rolls_back_its_step_and_stops(pg_url, catalog_dir):
    write_migration(catalog_dir, "0001", "One", upgrade="conn.execute('CREATE TABLE one (id INT)')")
    write_migration(catalog_dir, "0002", "Two", depends_on=("0001",),
                    upgrade="conn.execute('CREATE TABLE two (id INT)')\nconn.execute('SELECT * FROM missing')")
    write_migration(catalog_dir, "0003", "Three", depends_on=("0002",),
                    upgrade="conn.execute('CREATE TABLE three (id INT)')")
    previewed = apm(pg_url, "migrate", catalog=catalog_dir)
    assert previewed.returncode == 5 and "0002" in previewed.stderr
    assert applied(pg_url) == [] or not query(pg_url, "SELECT to_regclass('one')")[0][0]
    stepwise = apm(pg_url, "migrate", "--no-preview", catalog=catalog_dir)
    assert stepwise.returncode == 5, stepwise.stderr
    assert applied(pg_url) == ["0001"]
    tables = {r[0] for r in query(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"one"} <= tables and not {"two", "three"} & tables
    log = query(pg_url, "SELECT version, outcome FROM schema_migrations_log WHERE outcome = 'failed'")
    assert ("0002", "failed") in log


def test_migrations_cannot_end_the_transaction(pg_url, catalog_dir):
    write_migration(catalog_dir, "0001", "Sneaky", upgrade="conn.execute('CREATE TABLE a (id INT)')\n"
                                                           "conn.execute('COMMIT')")
    result = apm(pg_url, "migrate", "--no-preview", catalog=catalog_dir)
    assert result.returncode == 5 and "COMMIT" in result.stderr
    assert not query(pg_url, "SELECT to_regclass('a')")[0][0]


def test_the_preview_reports_the_same_kinds_of_loss(pg_url, catalog_dir):
    write_migration(catalog_dir, "0001", "Data", upgrade="""
        conn.executescript("CREATE TABLE t (id INT PRIMARY KEY, note TEXT, flag INT DEFAULT 0);"
                           "CREATE TABLE gone (id INT); INSERT INTO gone VALUES (1), (2);")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(1, 'a', 0), (2, None, 1), (3, 'c', 1), (4, 'd', 0)])
    """)
    write_migration(catalog_dir, "0002", "Destroy", depends_on=("0001",), upgrade="""
        conn.execute("UPDATE t SET note = 'x' WHERE id <= ?", (2,))
        conn.execute("DELETE FROM t WHERE id = 4")
        conn.execute("ALTER TABLE t DROP COLUMN flag")
        conn.execute("DROP TABLE gone")
    """)
    assert apm(pg_url, "migrate", "--target", "0001", catalog=catalog_dir).returncode == 0
    dry = apm(pg_url, "migrate", "--dry-run", "--json", "--sql", catalog=catalog_dir)
    assert dry.returncode == 7, dry.stderr
    report = json.loads(dry.stdout)
    impact = {(i["kind"], i["table"], i["column"]): i["count"] for i in report["steps"][0]["impact"]}
    assert impact == {("overwritten-values", "t", "note"): 1, ("deleted-rows", "t", None): 1,
                      ("dropped-column", "t", "flag"): 2, ("dropped-table", "gone", None): 2}
    assert report["committed"] is False and applied(pg_url) == ["0001"]
    assert any("DROP TABLE gone" in s for s in report["steps"][0]["sql"])
    assert "UPDATE t SET note = 'x' WHERE id <= 2" in report["steps"][0]["sql"]  # parameters filled in, runnable
    unconfirmed = apm(pg_url, "migrate", catalog=catalog_dir)
    assert unconfirmed.returncode == 7 and applied(pg_url) == ["0001"]


def test_eight_concurrent_runners_apply_each_migration_once(pg_url, catalog_dir):
    for n in range(1, 21):
        write_migration(catalog_dir, f"{n:04d}", depends_on=(f"{n - 1:04d}",) if n > 1 else (),
                        upgrade=f"conn.execute('CREATE TABLE t{n} (id INT)')")
    apm_bin = Path(sys.executable).parent / "apm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    runners = [subprocess.Popen([str(apm_bin), "migrate", "--db", pg_url, "--migrations-dir", str(catalog_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for _ in range(8)]
    outcomes = [(r.wait(120), r.stderr.read()) for r in runners]
    assert all(code == 0 for code, _ in outcomes), outcomes
    assert applied(pg_url) == [f"{n:04d}" for n in range(1, 21)]
    counts = query(pg_url, "SELECT version, count(*) FROM schema_migrations_log WHERE action = 'apply' "
                           "AND outcome = 'ok' GROUP BY version")
    assert all(count == 1 for _, count in counts) and len(counts) == 20


def test_sigkill_at_any_moment_leaves_the_ledger_equal_to_the_schema(pg_url, catalog_dir):
    kills = 40 if os.environ.get("APM_STRESS") else 4
    for n in range(1, 31):
        write_migration(catalog_dir, f"{n:04d}", depends_on=(f"{n - 1:04d}",) if n > 1 else (),
                        upgrade=f"conn.execute('CREATE TABLE t{n} (id INT)')\nconn.execute('SELECT pg_sleep(0.01)')")
    apm_bin = Path(sys.executable).parent / "apm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    for attempt in range(kills):
        runner = subprocess.Popen([str(apm_bin), "migrate", "--no-preview", "--db", pg_url, "--migrations-dir",
                                   str(catalog_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(0.3 + 0.05 * (attempt % 5))
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        recorded = set(applied(pg_url)) if query(pg_url, "SELECT to_regclass('schema_migrations')")[0][0] else set()
        tables = {r[0] for r in query(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                              "AND tablename LIKE 't%%'")}
        assert {f"t{int(v)}" for v in recorded} == tables
    finish = apm(pg_url, "migrate", "--no-preview", catalog=catalog_dir)
    assert finish.returncode == 0, finish.stderr
    assert len(applied(pg_url)) == 30


def test_the_same_catalog_gives_the_same_plan_json_as_sqlite(pg_url, seed_chain, tmp_path):
    sqlite_db = str(tmp_path / "same.db")
    for db in (pg_url, sqlite_db):
        assert apm(db, "migrate", "--target", "0027", catalog=seed_chain).returncode == 0
    for args in (["plan", "--json"], ["plan", "--rollback", "0020", "--cascade", "--json"],
                 ["plan", "--to", "0020", "--json"]):
        on_pg = apm(pg_url, "migrate", *args, catalog=seed_chain)
        on_sqlite = apm(sqlite_db, "migrate", *args, catalog=seed_chain)
        assert on_pg.returncode == on_sqlite.returncode == 0, on_pg.stderr
        assert json.loads(on_pg.stdout) == json.loads(on_sqlite.stdout)


def test_ledger_schema_option_and_every_command_on_postgres(pg_url, seed_chain, tmp_path):
    done = apm(pg_url, "migrate", "--ledger-schema", "ops", catalog=seed_chain)
    assert done.returncode == 0, done.stderr
    assert applied(pg_url, "ops") == ["0001", "0020", "0027", "0029", "0030"]
    assert not query(pg_url, "SELECT to_regclass('public.schema_migrations')")[0][0]
    url = pg_url.replace("apm@", "apm:s3cret@")
    folder = ["--ledger-schema", "ops", "--backup-dir", str(tmp_path / "dumps")]
    rolled = apm(url, "migrate", "--rollback", "0030", "--yes", *folder, catalog=seed_chain)
    assert rolled.returncode == 0, rolled.stderr
    # The commands that once refused a URL (exit 2, "not supported on PostgreSQL yet") now run there.
    listed = apm(url, "migrate", "backups", "--json", *folder, catalog=seed_chain)
    assert listed.returncode == 0 and [(b["head"], b["applied"]) for b in json.loads(listed.stdout)] == [("0030", 5)]
    restored = apm(url, "migrate", "restore", "--yes", *folder, catalog=seed_chain)
    assert restored.returncode == 0, restored.stderr
    assert applied(pg_url, "ops") == ["0001", "0020", "0027", "0029", "0030"]
    squashed = apm(url, "migrate", "squash", "0020", "0029", "--json", "--ledger-schema", "ops", catalog=seed_chain)
    assert squashed.returncode == 0 and json.loads(squashed.stdout)["replaces"] == ["0020", "0027", "0029"]
    agents = apm(url, "agents", "list", catalog=seed_chain)
    assert agents.returncode == 6 and "no agents table" in agents.stderr
    for result in (rolled, listed, restored, squashed, agents):
        assert "not supported" not in result.stderr and "Traceback" not in result.stderr
        assert "s3cret" not in result.stderr + result.stdout


def test_a_rollback_without_pg_dump_is_refused_with_the_package(pg_url, seed_chain):
    assert apm(pg_url, "migrate", catalog=seed_chain).returncode == 0
    no_tools = {"PATH": str(Path(sys.executable).parent)}
    refused = apm(pg_url, "migrate", "--rollback", "0030", "--yes", catalog=seed_chain, env=no_tools)
    assert refused.returncode == 6 and "postgresql-client" in refused.stderr and "--no-backup" in refused.stderr
    assert "0030" in applied(pg_url)
    allowed = apm(pg_url, "migrate", "--rollback", "0030", "--no-backup", catalog=seed_chain, env=no_tools)
    assert allowed.returncode == 0 and "0030" not in applied(pg_url)


def test_marks_refuse_as_on_sqlite_and_write_under_the_lock_with_a_log_row(pg_url, seed_chain):
    url = pg_url.replace("apm@", "apm:s3cret@")
    missing_dependency = apm(url, "migrate", "--mark-applied", "0027", catalog=seed_chain)
    assert missing_dependency.returncode == 4 and "0020" in missing_dependency.stderr
    assert "s3cret" not in missing_dependency.stderr
    not_applied = apm(pg_url, "migrate", "--mark-rolled-back", "0020", catalog=seed_chain)
    assert not_applied.returncode == 4 and "0020" in not_applied.stderr
    for version in ("0001", "0020", "0027"):
        marked = apm(pg_url, "migrate", "--mark-applied", version, "--json", catalog=seed_chain)
        assert marked.returncode == 0, marked.stderr
        assert json.loads(marked.stdout) == {"action": "mark-applied", "version": version,
                                             "description": json.loads(marked.stdout)["description"]}
    assert applied(pg_url) == ["0001", "0020", "0027"]
    again = apm(pg_url, "migrate", "--mark-applied", "0020", catalog=seed_chain)
    assert again.returncode == 4 and "already applied" in again.stderr
    needed = apm(pg_url, "migrate", "--mark-rolled-back", "0020", catalog=seed_chain)
    assert needed.returncode == 4 and "0027" in needed.stderr and applied(pg_url) == ["0001", "0020", "0027"]
    unmarked = apm(pg_url, "migrate", "--mark-rolled-back", "0027", catalog=seed_chain)
    assert unmarked.returncode == 0 and "Marked as rolled back: 0027" in unmarked.stdout
    assert applied(pg_url) == ["0001", "0020"]
    log = query(pg_url, "SELECT version, action, outcome FROM schema_migrations_log ORDER BY id")
    assert log == [("0001", "mark-applied", "ok"), ("0020", "mark-applied", "ok"), ("0027", "mark-applied", "ok"),
                   ("0027", "mark-rolled-back", "ok")]
    checksum = query(pg_url, "SELECT checksum FROM schema_migrations WHERE version = '0020'")[0][0]
    assert checksum and len(checksum) == 64


def test_baseline_records_the_ancestors_in_one_transaction_or_refuses(pg_url, seed_chain):
    done = apm(pg_url, "migrate", "--baseline", "0029", "--json", catalog=seed_chain)
    assert done.returncode == 0, done.stderr
    assert [r["version"] for r in json.loads(done.stdout)["recorded"]] == ["0001", "0020", "0027", "0029"]
    assert applied(pg_url) == ["0001", "0020", "0027", "0029"]
    actions = query(pg_url, "SELECT DISTINCT action FROM schema_migrations_log")
    assert actions == [("baseline",)]
    overlapping = apm(pg_url, "migrate", "--baseline", "0030", catalog=seed_chain)
    assert overlapping.returncode == 4 and "0001" in overlapping.stderr
    assert "0030" not in applied(pg_url) and len(query(pg_url, "SELECT * FROM schema_migrations_log")) == 4
    other = missing_database(pg_url).replace("apm@", "apm:s3cret@")
    unreachable = apm(other, "migrate", "--baseline", "0001", catalog=seed_chain)
    assert unreachable.returncode == 6 and "s3cret" not in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1


def test_check_reads_the_postgres_ledger_and_a_missing_database_is_an_empty_history(pg_url, seed_chain):
    clean = apm(pg_url, "migrate", "check", "--json", catalog=seed_chain)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    report = json.loads(clean.stdout)
    assert [f for f in report["findings"] if f["scope"] == "history"] == [] and report["database"] == pg_url
    assert apm(pg_url, "migrate", catalog=seed_chain).returncode == 0
    edited = seed_chain / "migration_0027.py"
    edited.write_text(edited.read_text() + "\n# edited after it was applied\n")
    run_sql(pg_url, "INSERT INTO schema_migrations (version, description) VALUES ('0040', 'gone')")
    url = pg_url.replace("apm@", "apm:s3cret@")
    found = apm(url, "migrate", "check", "--json", catalog=seed_chain)
    assert found.returncode == 4, found.stderr
    report = json.loads(found.stdout)
    assert {(f["code"], f["version"]) for f in report["findings"] if f["scope"] == "history"} == {
        ("edited-after-apply", "0027"), ("missing-file", "0040")}
    assert "s3cret" not in found.stdout and "***" in report["database"]
    missing = apm(missing_database(url), "migrate", "check", catalog=seed_chain)
    assert missing.returncode == 0, missing.stderr
    assert "does not exist yet" in missing.stdout and "s3cret" not in missing.stdout + missing.stderr
    nowhere = url.split("?")[0] + "?host=/nonexistent/socket"
    unreachable = apm(nowhere, "migrate", "check", catalog=seed_chain)
    assert unreachable.returncode == 6 and len(unreachable.stderr.strip().splitlines()) == 1
    assert "s3cret" not in unreachable.stderr and "Traceback" not in unreachable.stderr


def doctor(url: str, *args: str, catalog: Path) -> tuple[int, dict]:
    result = apm(url, "migrate", "doctor", "--json", *args, catalog=catalog)
    assert result.stderr == "" and "Traceback" not in result.stdout, result.stderr
    report = json.loads(result.stdout)
    assert report["exit_code"] == result.returncode
    return result.returncode, {(f["code"], f["version"]): f for f in report["findings"]}


def test_doctor_diagnoses_the_ledger_the_log_and_the_dumps_without_writing(pg_url, seed_chain, tmp_path):
    run_sql(pg_url, "CREATE TABLE existing (id INT)")
    code, found = doctor(pg_url, catalog=seed_chain)
    assert code == 0 and set(found) == {("no-ledger", None), ("foreign-keys", None), ("engine-guarantees", None)}
    assert not query(pg_url, "SELECT to_regclass('schema_migrations')")[0][0]  # read-only: nothing made
    assert apm(pg_url, "migrate", catalog=seed_chain).returncode == 0
    dumps = tmp_path / "dumps"
    code, found = doctor(pg_url, "--backup-dir", str(dumps), catalog=seed_chain)
    assert code == 0 and set(found) == {("foreign-keys", None), ("no-backups", None), ("engine-guarantees", None)}
    assert found[("no-backups", None)]["fix"].startswith(f"pg_dump --format=custom --file {dumps}/")
    assert "enforced by the server" in found[("foreign-keys", None)]["message"]
    assert apm(pg_url, "migrate", "--rollback", "0030", "--yes", "--backup-dir", str(dumps),
               catalog=seed_chain).returncode == 0
    code, found = doctor(pg_url, "--backup-dir", str(dumps), catalog=seed_chain)
    # apm's restore (one transaction, under the lock, after a safety dump), on the database given here.
    assert code == 0 and found[("backup", None)]["fix"].startswith(
        f"apm --db {shlex.quote(pg_url)} --migrations-dir {seed_chain} migrate restore {dumps}/")

    run_sql(pg_url, "INSERT INTO schema_migrations (version, description) VALUES ('0040', 'gone')")
    run_sql(pg_url, "INSERT INTO schema_migrations_log (version, action, at, outcome) "
                    "VALUES ('0030', 'apply', now(), 'started')")
    url = pg_url.replace("apm@", "apm:s3cret@")
    result = apm(url, "migrate", "doctor", catalog=seed_chain)
    assert result.returncode == 6 and "s3cret" not in result.stdout + result.stderr
    assert "missing-file" in result.stdout and "interrupted-non-transactional" in result.stdout
    assert result.stdout.strip().splitlines()[-1].endswith("2 error(s), 0 warning(s)")

    run_sql(pg_url, "CREATE SCHEMA odd; CREATE TABLE odd.schema_migrations (version TEXT)")
    code, found = doctor(pg_url, "--ledger-schema", "odd", catalog=seed_chain)
    assert code == 6 and "checksum" in found[("ledger-shape", None)]["message"]
    assert ("missing-log", None) in found
    unreachable = apm(missing_database(url), "migrate", "doctor", catalog=seed_chain)
    assert unreachable.returncode == 6 and len(unreachable.stderr.strip().splitlines()) == 1
    assert "s3cret" not in unreachable.stderr and "does not exist" in unreachable.stderr


def test_keep_backups_prunes_this_databases_dumps_after_a_committed_rollback(pg_url, seed_chain, tmp_path):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    name = pg_url.split("@/", 1)[1].split("?", 1)[0]
    oldest = dumps / f"{name}.20200101_000000.dump"
    others = [dumps / "otherdb.20200101_000000.dump", dumps / f"{name}.notes.txt"]
    for path in (oldest, *others):
        path.write_text("not a dump")
    assert apm(pg_url, "migrate", catalog=seed_chain).returncode == 0
    written = []
    for extra in (["--yes"], ["--no-preview"], ["--yes"]):
        done = apm(pg_url, "migrate", "--rollback", "0030", *extra, "--keep-backups", "2", "--backup-dir",
                   str(dumps), "--json", catalog=seed_chain)
        assert done.returncode == 0, done.stderr
        written.append(Path(json.loads(done.stdout)["backup"]))
        assert apm(pg_url, "migrate", catalog=seed_chain).returncode == 0
    kept = sorted(p.name for p in dumps.glob(f"{name}.*.dump"))
    assert kept == sorted(p.name for p in written[1:]) and not oldest.exists()
    assert all(path.exists() for path in others)
    unpruned = apm(pg_url, "migrate", "--rollback", "0030", "--yes", "--backup-dir", str(dumps), catalog=seed_chain)
    assert unpruned.returncode == 0 and len(list(dumps.glob(f"{name}.*.dump"))) == 3  # no --keep-backups


def test_new_never_reuses_a_version_the_postgres_ledger_holds(pg_url, seed_chain):
    done = apm(pg_url, "migrate", catalog=seed_chain)
    assert done.returncode == 0, done.stderr
    (seed_chain / "migration_0030.py").unlink()  # applied, then its file deleted
    created = apm(pg_url, "migrate", "new", "Add widgets", catalog=seed_chain)
    assert created.returncode == 0, created.stderr
    assert (seed_chain / "migration_0031_add_widgets.py").exists()
    assert not list(seed_chain.glob("migration_0030*"))


@pytest.mark.parametrize("mode", [[], ["--no-preview"]], ids=["previewed", "no-preview"])
def test_a_deferred_foreign_key_still_fails_the_step_that_broke_it(pg_url, catalog_dir, mode):
    write_migration(catalog_dir, "0001", depends_on=(), upgrade="""
        conn.execute("CREATE TABLE parents (id INT PRIMARY KEY)")
        conn.execute("CREATE TABLE children (id INT PRIMARY KEY, parent_id INT REFERENCES parents (id) "
                     "DEFERRABLE INITIALLY DEFERRED)")
    """, downgrade='conn.execute("DROP TABLE children"); conn.execute("DROP TABLE parents")')
    write_migration(catalog_dir, "0002", depends_on=("0001",),
                    upgrade='conn.execute("INSERT INTO children VALUES (1, 99)")')
    first = apm(pg_url, "migrate", "--target", "0001", *mode, catalog=catalog_dir)
    assert first.returncode == 0, first.stderr
    broken = apm(pg_url, "migrate", *mode, catalog=catalog_dir)
    assert broken.returncode == 5, broken.stdout + broken.stderr
    assert "0002" in broken.stderr
    assert applied(pg_url) == ["0001"]


def test_check_fix_renumbers_above_the_postgres_ledger(pg_url, seed_chain):
    done = apm(pg_url, "migrate", catalog=seed_chain)
    assert done.returncode == 0, done.stderr
    (seed_chain / "migration_0030.py").unlink()  # applied, then its file deleted: 0030 stays taken
    write_migration(seed_chain, "0029", "Second 0029", depends_on=("0027",), slug="b")
    fixed = apm(pg_url, "migrate", "check", "--fix", "--yes", catalog=seed_chain)
    assert "migration_0029_b.py" in fixed.stderr, fixed.stderr
    assert (seed_chain / "migration_0031_b.py").exists() and not (seed_chain / "migration_0029_b.py").exists()


def test_check_fix_keeps_the_version_the_postgres_ledger_applied(pg_url, tmp_path):
    """Issue 22, point 3, on PostgreSQL: the file whose checksum the ledger holds keeps its version."""
    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", "Products", documented=(), upgrade="conn.execute('CREATE TABLE products (id INT)')")
    write_migration(folder, "0002", "Wishlist", depends_on=("0001",), slug="wishlist",
                    upgrade="conn.execute('CREATE TABLE wishlist (id INT)')")
    assert apm(pg_url, "migrate", catalog=folder).returncode == 0
    write_migration(folder, "0002", "Coupons", depends_on=("0001",), slug="coupons",
                    upgrade="conn.execute('CREATE TABLE coupons (id INT)')")
    fixed = apm(pg_url, "migrate", "check", "--fix", "--yes", catalog=folder)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "holds the checksum of migration_0002_wishlist.py" in fixed.stderr
    assert (folder / "migration_0002_wishlist.py").exists() and (folder / "migration_0003_coupons.py").exists()
    assert apm(pg_url, "migrate", catalog=folder).returncode == 0
    assert applied(pg_url) == ["0001", "0002", "0003"]
    assert query(pg_url, "SELECT to_regclass('coupons') IS NOT NULL") == [(True,)]


def test_plan_exit_code_on_postgres_writes_nothing(pg_url, seed_chain):
    """Issue 22, point 13: 9 when there is something to do, 0 when not; no ledger is created or changed."""
    assert apm(pg_url, "migrate", "plan", "--exit-code", catalog=seed_chain).returncode == 9
    assert query(pg_url, "SELECT to_regclass('public.schema_migrations')") == [(None,)]  # not even created
    assert apm(pg_url, "migrate", "--target", "0027", catalog=seed_chain).returncode == 0
    rows = query(pg_url, "SELECT * FROM schema_migrations ORDER BY version")
    log = query(pg_url, "SELECT count(*) FROM schema_migrations_log")
    for args, code in (((), 9), (("--target", "0027"), 0), (("--rollback", "0027"), 9), (("--to", "0027"), 0),
                       (("--to", "base"), 9), (("--json",), 9)):
        result = apm(pg_url, "migrate", "plan", "--exit-code", *args, catalog=seed_chain)
        assert result.returncode == code, (args, result.stdout, result.stderr)
    assert query(pg_url, "SELECT * FROM schema_migrations ORDER BY version") == rows
    assert query(pg_url, "SELECT count(*) FROM schema_migrations_log") == log
    assert apm(pg_url, "migrate", catalog=seed_chain).returncode == 0
    assert apm(pg_url, "migrate", "plan", "--exit-code", catalog=seed_chain).returncode == 0


def test_what_a_migration_prints_is_captured_on_postgres_as_on_sqlite(pg_url, tmp_path):
    """One step protocol (planner.session) for both engines: print() never reaches stdout, so --json stays one
    document, and a failing step shows what its migration printed on stderr."""
    import json

    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", upgrade="print('made t1')\nconn.execute('CREATE TABLE t1 (id INT)')")
    write_migration(folder, "0002", depends_on=("0001",), upgrade="print('\\U0001f680 starting')\nraise RuntimeError('boom')")
    result = apm(pg_url, "migrate", "--json", "--yes", "--target", "0001", catalog=folder)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # one document: the print is a field of it, not a line before it
    assert [r["output"] for r in report["results"]] == ["made t1\n"]
    result = apm(pg_url, "migrate", "--json", "--yes", catalog=folder)
    assert result.returncode == 5 and result.stdout == ""
    assert "printed, before it failed:\n    │ 🚀 starting" in result.stderr
    assert applied(pg_url) == ["0001"]


def test_doctor_probes_the_lock_and_transactional_ddl_the_guarantees_rest_on(pg_url, seed_chain):
    """An engine whose advisory lock is a no-op is reported, not assumed away.

    Simulated on the real server: a ``pg_try_advisory_lock`` that always says
    yes, found first because the URL puts its schema before ``pg_catalog``.
    """
    code, found = doctor(pg_url, catalog=seed_chain)
    assert code == 0 and "ROLLBACK" in found[("engine-guarantees", None)]["message"]
    run_sql(pg_url, "CREATE SCHEMA fake; CREATE FUNCTION fake.pg_try_advisory_lock(bigint) RETURNS boolean "
                    "LANGUAGE sql AS 'SELECT true'")
    shadowed = pg_url + "&options=-csearch_path%3Dfake,pg_catalog,public"
    code, found = doctor(shadowed, catalog=seed_chain)
    assert code == 6 and ("engine-guarantees", None) not in found
    assert "could apply one migration twice" in found[("advisory-lock-not-exclusive", None)]["message"]
    assert not query(pg_url, "SELECT relname FROM pg_class WHERE relname LIKE 'apm_probe%%'")  # nothing left
    assert not query(pg_url, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory'")


def test_a_runner_waiting_for_the_lock_never_deadlocks_a_concurrent_index_build(pg_url, catalog_dir):
    """CREATE INDEX CONCURRENTLY waits for every open transaction; a runner waiting *inside* pg_advisory_lock()
    was one, while it waited for the builder's lock: the server killed one of them and left the index invalid.

    Made deterministic: an open transaction of this test holds the build in its first phase until the second
    runner is waiting for the lock; then it ends, and the build must finish.
    """
    import psycopg

    write_migration(catalog_dir, "0001", upgrade="conn.execute('CREATE TABLE posts (id INT, title TEXT)')")
    write_migration(catalog_dir, "0002", depends_on=("0001",), extra="transactional = False\n",
                    upgrade="conn.execute('CREATE INDEX CONCURRENTLY IF NOT EXISTS posts_by_title ON posts (title)')")
    assert apm(pg_url, "migrate", "--target", "0001", catalog=catalog_dir).returncode == 0
    apm_bin = Path(sys.executable).parent / "apm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    command = [str(apm_bin), "migrate", "--yes", "--db", pg_url, "--migrations-dir", str(catalog_dir)]
    with psycopg.connect(pg_url) as holder:
        holder.execute("INSERT INTO posts VALUES (1, 'a')")  # an open write: the build's first phase waits for it
        builder = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 30
        while not query(pg_url, "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%%' "
                                "AND wait_event_type = 'Lock'") and time.monotonic() < deadline:
            time.sleep(0.05)
        waiter = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(1.5)  # the waiter is polling for the lock by now
        holder.rollback()
        outcomes = [(p.wait(60), p.stderr.read()) for p in (builder, waiter)]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert not any("deadlock" in err for _, err in outcomes)
    assert query(pg_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'posts_by_title'::regclass") == [(True,)]
    assert applied(pg_url) == ["0001", "0002"]


def test_doctor_reports_an_index_a_concurrent_build_left_invalid(pg_url, seed_chain):
    import psycopg

    run_sql(pg_url, "CREATE TABLE posts (id INT); INSERT INTO posts VALUES (1), (1)")
    with psycopg.connect(pg_url, autocommit=True) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY posts_id ON posts (id)")  # fails, leaves it invalid
    code, found = doctor(pg_url, catalog=seed_chain)
    assert code == 6 and "posts_id" in found[("invalid-index", None)]["message"]
    assert "DROP INDEX CONCURRENTLY" in found[("invalid-index", None)]["fix"]


def test_the_backup_before_a_rollback_is_taken_under_the_lock(pg_url, catalog_dir, tmp_path):
    """A rollback that waited for another runner backs up the database it then changes, not the one before."""
    write_migration(catalog_dir, "0001", upgrade="conn.execute('CREATE TABLE a (id INT)')",
                    downgrade="conn.execute('DROP TABLE a')")
    write_migration(catalog_dir, "0002", depends_on=(),
                    upgrade="conn.execute('SELECT pg_sleep(2)')\nconn.execute('CREATE TABLE b (id INT)')")
    assert apm(pg_url, "migrate", "--target", "0001", catalog=catalog_dir).returncode == 0
    dumps = tmp_path / "dumps"
    apm_bin = Path(sys.executable).parent / "apm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    base = ["--db", pg_url, "--migrations-dir", str(catalog_dir)]
    slow = subprocess.Popen([str(apm_bin), "migrate", "--yes", *base], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 30
    while not query(pg_url, "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%%pg_sleep%%' "
                            "AND pid <> pg_backend_pid()") and time.monotonic() < deadline:
        time.sleep(0.05)
    rollback = apm(pg_url, "migrate", "--rollback", "0001", "--yes", "--backup-dir", str(dumps), catalog=catalog_dir)
    assert slow.wait(60) == 0 and rollback.returncode == 0, rollback.stderr
    listed = json.loads(apm(pg_url, "migrate", "backups", "--json", "--backup-dir", str(dumps),
                            catalog=catalog_dir).stdout)
    assert [entry["applied"] for entry in listed] == [2]  # 0001 and the 0002 committed while it waited
    assert applied(pg_url) == ["0002"]


def test_a_server_error_in_a_migration_is_one_line(pg_url, catalog_dir):
    write_migration(catalog_dir, "0001", upgrade="conn.execute('INSERT INTO nowhere VALUES (1)')")
    result = apm(pg_url, "migrate", catalog=catalog_dir)
    assert result.returncode == 5
    assert 'UndefinedTable: relation "nowhere" does not exist' in result.stderr
    assert "LINE 1" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    detail = query(pg_url, "SELECT detail FROM schema_migrations_log WHERE outcome = 'failed'")
    assert len(detail) == 1 and "\n" not in detail[0][0]


def test_a_plan_with_create_index_concurrently_previews_the_parts_around_it(pg_url, catalog_dir):
    """The steps around a ``transactional = False`` one run in previewed parts: their loss is shown and confirmed."""
    write_migration(catalog_dir, "0001", "Posts", depends_on=(),
                    upgrade="conn.execute('CREATE TABLE posts (id INT, title TEXT, body TEXT)')\n"
                            "conn.execute(\"INSERT INTO posts SELECT g, 't' || g, 'b' FROM generate_series(1, 4) g\")")
    write_migration(catalog_dir, "0002", "Index", depends_on=("0001",), extra="transactional = False\n",
                    upgrade="conn.execute('CREATE INDEX CONCURRENTLY posts_by_title ON posts (title)')")
    write_migration(catalog_dir, "0003", "Drop the body", depends_on=("0002",),
                    upgrade="conn.execute('ALTER TABLE posts DROP COLUMN body')")
    # A dry run passes over the index build (it runs only outside a transaction) and previews 0003 after it.
    dry = apm(pg_url, "migrate", "--dry-run", "--json", catalog=catalog_dir)
    assert dry.returncode == 7 and query(pg_url, "SELECT to_regclass('posts')") == [(None,)]
    steps = json.loads(dry.stdout)["steps"]
    assert steps[1]["passed_over"] == ["CREATE INDEX CONCURRENTLY posts_by_title ON posts (title)"]
    assert [i["text"] for i in steps[2]["impact"]] == ["drops column posts.body holding 4 non-default values"]
    done = apm(pg_url, "migrate", "--yes", "--json", catalog=catalog_dir)
    assert done.returncode == 0, done.stderr
    assert applied(pg_url) == ["0001", "0002", "0003"]
    assert "0003 apply: drops column posts.body holding 4 non-default values" in done.stderr
    report = json.loads(done.stdout)
    assert [[s["version"] for s in p["steps"]] for p in report["previews"]] == [["0001"], ["0003"]]
    assert query(pg_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'posts_by_title'::regclass") == [(True,)]


def test_a_runner_waiting_for_the_advisory_lock_says_so_once(pg_url, catalog_dir):
    import psycopg

    from planner.engines.postgresql.ledger import lock_key

    write_migration(catalog_dir, "0001", upgrade="conn.execute('CREATE TABLE a (id INT)')")
    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("public"),))  # another runner
        runner = subprocess.Popen([str(Path(sys.executable).with_name("apm")), "--db", pg_url, "--migrations-dir",
                                   str(catalog_dir), "--busy-timeout", "20", "migrate"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(3)
    out, err = runner.communicate(timeout=60)  # the holder's connection closed: the server released the lock
    assert runner.returncode == 0, err
    assert err.count("Waiting for") == 1 and "another process holds its lock (up to 20 s; --busy-timeout)" in err
    assert applied(pg_url) == ["0001"]


def test_doctor_fix_commands_name_the_server_without_its_password(pg_url, catalog_dir):
    import shlex

    write_migration(catalog_dir, "0001", upgrade="conn.execute('CREATE TABLE a (id INT)')")
    secret = pg_url.replace("postgresql://apm@", "postgresql://apm:s3cret@")  # trust auth: accepted, unused
    assert apm(secret, "migrate", catalog=catalog_dir).returncode == 0
    run_sql(pg_url, "DROP TABLE schema_migrations_log")
    doctor = apm(secret, "migrate", "doctor", catalog=catalog_dir)
    assert "s3cret" not in doctor.stdout + doctor.stderr
    assert f"fix: apm --db {shlex.quote(pg_url)} --migrations-dir {catalog_dir} migrate  # recreates it" in doctor.stdout
