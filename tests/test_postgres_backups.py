"""PostgreSQL's backups, restore, squash and agents, through the installed ``apm`` against a real server.

The commands SQLite had first, now on PostgreSQL through the engine
(``Engine.backups``, and ``Engine.read_rows`` for ``planner.compat``): listing this database's
``pg_dump`` files with their ledgers, restoring one under the advisory lock
after a safety dump, a dump killed half-way leaving nothing behind, squash
reading the server's ledger, and APM's agents table read from the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_migration
from tests.test_postgres import EXAMPLE, apm, applied, query, run_sql

pytestmark = pytest.mark.postgres


def dbname(url: str) -> str:
    return url.split("@/", 1)[1].split("?", 1)[0]


def tables(url: str, schema: str = "app") -> set[str]:
    return {r[0] for r in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}


def columns(url: str, table: str = "tasks") -> set[str]:
    return {r[0] for r in query(url, "SELECT column_name FROM information_schema.columns WHERE table_schema = 'app' "
                                     "AND table_name = %s", (table,))}


@pytest.fixture
def dumped(pg_url: str, tmp_path: Path) -> tuple[str, Path, Path]:
    """The example catalog applied, then 0003 rolled back with --cascade: (url, backup folder, the dump before)."""
    assert apm(pg_url, "migrate", "--yes").returncode == 0
    folder = tmp_path / "dumps"
    done = apm(pg_url, "migrate", "--rollback", "0003", "--cascade", "--yes", "--backup-dir", str(folder))
    assert done.returncode == 0, done.stderr
    assert applied(pg_url) == ["0001", "0002", "0005", "0006"] and "priority" not in columns(pg_url)
    (dump,) = folder.glob("*.dump")
    return pg_url, folder, dump


def test_backups_lists_this_databases_dumps_newest_first_with_their_ledgers(dumped):
    url, folder, first = dumped
    secret = url.replace("apm@", "apm:s3cret@")
    assert apm(url, "migrate", "--rollback", "0006", "--yes", "--backup-dir", str(folder)).returncode == 0
    second = max(folder.glob("*.dump"), key=lambda p: p.stat().st_mtime_ns)
    (folder / "otherdb.20260101_000000.dump").write_bytes(first.read_bytes())  # another database's dump
    abandoned = folder / f"{first.name}.partial.999999999"  # a pid no process has
    abandoned.write_bytes(b"half a dump")

    listed = apm(secret, "migrate", "backups", "--json", "--backup-dir", str(folder))
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == [second.name, first.name]
    assert [(r["head"], r["applied"], r["problem"]) for r in rows] == [("0006", 4, None), ("0006", 6, None)]
    assert rows[1]["size_bytes"] == first.stat().st_size and rows[1]["taken"] and rows[0]["path"] == str(second)
    assert not abandoned.exists()
    text = apm(secret, "migrate", "backups", "--backup-dir", str(folder))
    assert text.returncode == 0 and first.name in text.stdout and "otherdb" not in text.stdout
    assert "s3cret" not in text.stdout + text.stderr + listed.stdout + "".join(p.name for p in folder.iterdir())
    empty = apm(url, "migrate", "backups", "--backup-dir", str(folder / "none"))
    assert empty.returncode == 0 and f"No backups of" in empty.stdout and f"{dbname(url)}.*.dump" in empty.stdout


def test_restore_after_a_cascade_rollback_brings_the_schema_and_ledger_back(dumped):
    url, folder, dump = dumped
    asked = apm(url, "migrate", "restore", "--backup-dir", str(folder))
    assert asked.returncode == 7 and "--yes" in asked.stderr
    assert "brings back 0003" in asked.stdout and "brings back 0004" in asked.stdout
    assert applied(url) == ["0001", "0002", "0005", "0006"]  # not confirmed: nothing changed

    done = apm(url, "migrate", "restore", "--yes", "--json", "--backup-dir", str(folder))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["backup"] == str(dump) and result["reapplied"] == ["0003", "0004"] and result["unapplied"] == []
    assert applied(url) == ["0001", "0002", "0003", "0004", "0005", "0006"]
    assert "priority" in columns(url) and "legacy_code" not in columns(url)  # 0003 added it, 0004 dropped one
    safety = Path(result["safety_backup"])
    assert safety.parent == folder and safety != dump and safety.name.startswith(dbname(url) + ".")
    # The safety dump holds the database as it was: restoring it takes 0003 and 0004 away again.
    back = apm(url, "migrate", "restore", str(safety), "--yes", "--backup-dir", str(folder))
    assert back.returncode == 0, back.stderr
    assert applied(url) == ["0001", "0002", "0005", "0006"] and "priority" not in columns(url)
    assert apm(url, "migrate", "--yes").returncode == 0 and applied(url)[-1] == "0006"


def test_restore_says_what_a_dump_does_not_hold_stays(dumped):
    url, folder, dump = dumped
    run_sql(url, "CREATE TABLE public.made_later (id INT)")  # a schema the dump does not drop and recreate
    shown = apm(url, "migrate", "restore", str(dump), "--yes", "--backup-dir", str(folder))
    assert shown.returncode == 0, shown.stderr
    assert "keeps public.made_later" in shown.stdout and "made_later" in tables(url, "public")
    assert applied(url) == ["0001", "0002", "0003", "0004", "0005", "0006"]


def test_restore_refuses_a_file_that_is_not_a_dump_and_changes_nothing(dumped, tmp_path):
    url, folder, _ = dumped
    before = (applied(url), tables(url), sorted(p.name for p in folder.iterdir()))
    for name, content in (("notes.dump", b"not a dump at all\n"), ("empty.dump", b"")):
        bogus = tmp_path / name
        bogus.write_bytes(content)
        refused = apm(url, "migrate", "restore", str(bogus), "--yes", "--backup-dir", str(folder))
        assert refused.returncode == 6 and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "not a pg_dump" in refused.stderr
    missing = apm(url, "migrate", "restore", str(tmp_path / "nope.dump"), "--yes", "--backup-dir", str(folder))
    assert missing.returncode == 6 and "no such file" in missing.stderr
    none = apm(url, "migrate", "restore", "--yes", "--backup-dir", str(tmp_path / "empty"))
    assert none.returncode == 6 and f"{dbname(url)}.*.dump" in none.stderr
    assert (applied(url), tables(url), sorted(p.name for p in folder.iterdir())) == before


def test_restore_waits_for_the_advisory_lock_and_gives_up_with_nothing_changed(dumped):
    import psycopg

    from planner.engines.postgresql.ledger import lock_key

    url, folder, _ = dumped
    before = sorted(p.name for p in folder.iterdir())
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("public"),))
        blocked = apm(url, "migrate", "restore", "--yes", "--busy-timeout", "1", "--backup-dir", str(folder))
    assert blocked.returncode == 6 and "migration lock" in blocked.stderr, blocked.stderr
    assert applied(url) == ["0001", "0002", "0005", "0006"] and "priority" not in columns(url)
    assert sorted(p.name for p in folder.iterdir()) == before  # no safety dump left behind


def test_a_failing_pg_restore_leaves_the_database_as_it_was(dumped):
    url, folder, dump = dumped
    # The dump recreates app.tasks; a view on it outside the dump makes the DROP fail (dependent object).
    run_sql(url, "CREATE VIEW public.watching AS SELECT id FROM app.tasks")
    before = (applied(url), columns(url), sorted(p.name for p in folder.iterdir()))
    failed = apm(url, "migrate", "restore", str(dump), "--yes", "--backup-dir", str(folder))
    assert failed.returncode == 6 and "pg_restore could not restore" in failed.stderr
    assert "nothing was changed" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    assert (applied(url), columns(url), sorted(p.name for p in folder.iterdir())) == before


def test_restore_without_pg_restore_names_the_package(dumped):
    url, folder, _ = dumped
    refused = apm(url, "migrate", "restore", "--yes", "--backup-dir", str(folder),
                  env={"PATH": str(Path(sys.executable).parent)})
    assert refused.returncode == 6 and "pg_restore is not installed" in refused.stderr
    assert "postgresql-client" in refused.stderr and applied(url) == ["0001", "0002", "0005", "0006"]


def big_catalog(catalog_dir: Path) -> Path:
    """0001 fills a table (a dump and a restore take a moment), 0002 adds a small one."""
    write_migration(catalog_dir, "0001", "Big", upgrade="conn.execute('CREATE TABLE big (id INT, pad TEXT)')\n"
                    "conn.execute(\"INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g\")",
                    downgrade="conn.execute('DROP TABLE big')")
    write_migration(catalog_dir, "0002", "Small", depends_on=("0001",),
                    upgrade="conn.execute('CREATE TABLE small (id INT)')", downgrade="conn.execute('DROP TABLE small')")
    return catalog_dir


def start_apm(url: str, catalog: Path, folder: Path, *args: str) -> subprocess.Popen:
    apm_bin = Path(sys.executable).parent / "apm"
    return subprocess.Popen([str(apm_bin), *args, "--yes", "--db", url, "--migrations-dir", str(catalog),
                             "--backup-dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def kill_when(child: subprocess.Popen, ready) -> None:
    """SIGKILL ``child`` (apm alone, not its group) once ``ready()``; then wait until its whole group is gone."""
    try:
        while not ready() and child.poll() is None:
            time.sleep(0.001)
        assert child.poll() is None, "apm finished before it could be caught"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    while True:  # pg_dump / pg_restore may outlive apm for a moment: wait for the group to end
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def runs(child: subprocess.Popen, tool: str) -> bool:
    """Whether ``child`` has a child process running ``tool`` (Linux /proc)."""
    for task in Path(f"/proc/{child.pid}/task").glob("*"):
        for pid in (task / "children").read_text().split() if (task / "children").exists() else ():
            try:
                if tool in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    return True
            except OSError:
                pass
    return False


def test_a_dump_killed_half_way_leaves_no_file(pg_url, catalog_dir, tmp_path):
    big_catalog(catalog_dir)
    assert apm(pg_url, "migrate", "--target", "0001", catalog=catalog_dir).returncode == 0
    folder = tmp_path / "dumps"
    folder.mkdir()
    child = start_apm(pg_url, catalog_dir, folder, "migrate", "--rollback", "0001")
    kill_when(child, lambda: any(".partial." in p.name for p in folder.iterdir()))
    assert applied(pg_url) == ["0001"]  # the rollback never ran
    listed = apm(pg_url, "migrate", "backups", "--json", "--backup-dir", str(folder), catalog=catalog_dir)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds pg_restore through Linux's /proc")
def test_a_restore_killed_half_way_is_all_or_nothing_and_frees_the_lock(pg_url, catalog_dir, tmp_path):
    big_catalog(catalog_dir)
    folder = tmp_path / "dumps"
    assert apm(pg_url, "migrate", catalog=catalog_dir).returncode == 0
    rolled = apm(pg_url, "migrate", "--rollback", "0002", "--yes", "--backup-dir", str(folder), catalog=catalog_dir)
    assert rolled.returncode == 0 and applied(pg_url) == ["0001"]
    child = start_apm(pg_url, catalog_dir, folder, "migrate", "restore")
    kill_when(child, lambda: runs(child, "pg_restore"))
    state = (applied(pg_url), query(pg_url, "SELECT to_regclass('small') IS NOT NULL")[0][0])
    assert state in ((["0001"], False), (["0001", "0002"], True))  # as it was, or wholly restored
    assert query(pg_url, "SELECT count(*) FROM big") == [(300000,)]
    # The lock died with apm's connection: the next restore runs at once (busy timeout 0: no waiting).
    again = apm(pg_url, "migrate", "restore", "--yes", "--busy-timeout", "0", "--backup-dir", str(folder),
                catalog=catalog_dir)
    assert again.returncode == 0, again.stderr
    assert not [p for p in folder.iterdir() if ".partial." in p.name]


def test_squash_reads_the_servers_ledger(pg_url, catalog_dir):
    def table(name: str) -> dict:
        return dict(upgrade=f"conn.execute('CREATE TABLE {name} (id INTEGER PRIMARY KEY)')",
                    downgrade=f"conn.execute('DROP TABLE {name}')")

    write_migration(catalog_dir, "0001", "One", **table("one"))
    write_migration(catalog_dir, "0002", "Two", depends_on=("0001",), **table("two"))
    write_migration(catalog_dir, "0003", "Three", depends_on=("0002",), **table("three"))
    assert apm(pg_url, "migrate", "--target", "0002", catalog=catalog_dir).returncode == 0
    refused = apm(pg_url, "migrate", "squash", "0002", "0003", catalog=catalog_dir)
    assert refused.returncode == 4 and "applied 0002 but not 0003" in refused.stderr, refused.stderr
    assert sorted(p.name for p in catalog_dir.glob("migration_*.py")) == [
        "migration_0001.py", "migration_0002.py", "migration_0003.py"]
    assert apm(pg_url, "migrate", catalog=catalog_dir).returncode == 0
    written = apm(pg_url, "migrate", "squash", "0002", "0003", "--json", catalog=catalog_dir)
    assert written.returncode == 0, written.stderr
    assert json.loads(written.stdout)["replaces"] == ["0002", "0003"]
    assert Path(json.loads(written.stdout)["path"]).is_file()
    assert apm(pg_url, "migrate", catalog=catalog_dir).stdout.strip() == "Nothing to apply"


def test_agents_are_read_from_the_server(pg_url, catalog_dir):
    url = pg_url.replace("apm@", "apm:s3cret@")
    missing = apm(url, "agents", "list", catalog=catalog_dir)
    assert missing.returncode == 6 and "no agents table" in missing.stderr and "s3cret" not in missing.stderr
    run_sql(pg_url, "CREATE TABLE agents (id SERIAL PRIMARY KEY, role TEXT, display_name TEXT, tier INT, "
                    "is_active BOOLEAN, metadata JSONB)")
    run_sql(pg_url, "INSERT INTO agents (role, display_name, tier, is_active, metadata) VALUES "
                    "('developer', 'Developer', 3, true, '{\"skills\": [\"git\"]}'), ('tester', 'Tester', 2, false, NULL)")
    listed = apm(url, "agents", "list", "--json", catalog=catalog_dir)
    assert listed.returncode == 0, listed.stderr
    assert [(a["role"], a["tier"], a["metadata"]) for a in json.loads(listed.stdout)] == [
        ("developer", 3, {"skills": ["git"]}), ("tester", 2, None)]
    shown = apm(url, "agents", "show", "tester", catalog=catalog_dir)
    assert shown.returncode == 0 and "Tester" in shown.stdout
    unknown = apm(url, "agents", "show", "nobody", catalog=catalog_dir)
    assert unknown.returncode == 4 and "nobody" in unknown.stderr
    status = json.loads(apm(url, "status", "--json", catalog=catalog_dir).stdout)
    assert status["agents"] == {"total": 2, "active": 1, "by_tier": {"2": 1, "3": 1}}


def test_squash_of_a_catalog_that_only_runs_on_postgres_says_the_scratch_is_sqlite(pg_url, tmp_path):
    import shutil

    catalog = tmp_path / "catalog"
    shutil.copytree(EXAMPLE, catalog, ignore=shutil.ignore_patterns("__pycache__"))
    before = sorted(p.name for p in catalog.iterdir())
    refused = apm(pg_url, "migrate", "squash", "0002", "0003", catalog=catalog)
    assert refused.returncode == 5 and "scratch SQLite database" in refused.stderr
    assert "nothing was written" in refused.stderr and "Traceback" not in refused.stderr
    shutil.rmtree(catalog / "__pycache__", ignore_errors=True)
    assert sorted(p.name for p in catalog.iterdir()) == before


def test_a_dumps_ledger_is_parsed_from_copy_text_format():
    from planner.engines.postgresql.backup import parse_ledger_copy

    script = ("SET statement_timeout = 0;\n"
              "COPY public.schema_migrations (version, description, applied_at, checksum, execution_ms) FROM stdin;\n"
              "0027\tAdd\\tmetadata \\\\ \\x41\\101\t2026-12-01 07:02:01.123456\tabc\t12\n"
              "0001\t\\N\t\\N\t\\N\t\\N\n"
              "\\.\n"
              "COPY public.other (version) FROM stdin;\n9999\n\\.\n")
    ledger = parse_ledger_copy(script)
    assert list(ledger) == ["0001", "0027"]
    assert ledger["0027"].description == "Add\tmetadata \\ AA" and ledger["0027"].applied_at == "2026-12-01 07:02:01"
    assert (ledger["0027"].checksum, ledger["0027"].execution_ms) == ("abc", 12)
    assert ledger["0001"].description is None and ledger["0001"].applied_at is None
    assert parse_ledger_copy("-- a dump without a ledger\n") == {}


def test_a_ledger_schema_named_with_a_space_is_read_from_dumps(pg_url, tmp_path):
    """pg_restore quotes such a name (COPY "my sch".schema_migrations) and lists it unquoted (--list)."""
    folder = tmp_path / "dumps"
    assert apm(pg_url, "migrate", "--yes", "--ledger-schema", "my sch").returncode == 0
    done = apm(pg_url, "migrate", "--rollback", "0006", "--yes", "--ledger-schema", "my sch", "--backup-dir",
               str(folder))
    assert done.returncode == 0, done.stderr
    rows = json.loads(apm(pg_url, "migrate", "backups", "--json", "--ledger-schema", "my sch", "--backup-dir",
                          str(folder)).stdout)
    assert [(r["head"], r["applied"]) for r in rows] == [("0006", 6)]
    preview = apm(pg_url, "migrate", "restore", "--ledger-schema", "my sch", "--backup-dir", str(folder))
    assert preview.returncode == 7
    assert "brings back 0006" in preview.stdout and "keeps" not in preview.stdout and "un-applies" not in preview.stdout


def test_restoring_a_dump_without_a_ledger_leaves_the_ledger_as_it_is(pg_server, pg_url, tmp_path):
    from planner.engines.postgresql.backup import dump

    assert apm(pg_url, "migrate", "--yes").returncode == 0
    other = pg_server.create_database()
    run_sql(other, "CREATE SCHEMA misc; CREATE TABLE misc.notes (id INT); INSERT INTO misc.notes VALUES (1)")
    plain = dump(other, tmp_path, advice="")  # a dump of a database apm never ran on: no ledger in it
    before = applied(pg_url)
    preview = apm(pg_url, "migrate", "restore", str(plain))
    assert preview.returncode == 7 and "un-applies" not in preview.stdout
    assert "the ledger stays as it is (the backup has no ledger table)" in preview.stdout
    done = apm(pg_url, "migrate", "restore", str(plain), "--yes", "--json", "--backup-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["unapplied"] == [] and applied(pg_url) == before


def test_a_restore_names_the_other_ledgers_it_puts_back(dumped, catalog_dir):
    """A dump is of the whole database: another project's ledger (another --ledger-schema) comes back too."""
    url, folder, dump = dumped
    write_migration(catalog_dir, "0001", "Billing", upgrade="conn.execute('CREATE TABLE billing_items (id INT)')")
    assert apm(url, "migrate", "--ledger-schema", "billing", catalog=catalog_dir).returncode == 0
    preview = apm(url, "migrate", "restore", str(dump), "--backup-dir", str(folder))
    assert preview.returncode == 7
    assert "also puts back the ledger in schema billing" in preview.stdout
    report = json.loads(apm(url, "migrate", "restore", str(dump), "--yes", "--json", "--backup-dir",
                            str(folder)).stdout)
    assert report["other_ledgers"] == ["billing"]


def test_restore_with_keep_backups_never_deletes_the_dump_it_restored_from(dumped):
    """Issue 22 point 20 on PostgreSQL: the dump restored from survives `--keep-backups 1`."""
    url, folder, dump = dumped
    done = apm(url, "migrate", "restore", "--yes", "--json", "--keep-backups", "1", "--backup-dir", str(folder))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["backup"] == str(dump) and str(dump) not in result["pruned"] and dump.exists()
    assert Path(result["safety_backup"]).exists()
    assert applied(url) == ["0001", "0002", "0003", "0004", "0005", "0006"]
