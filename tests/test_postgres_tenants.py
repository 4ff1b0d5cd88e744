"""Tenant schemas of one PostgreSQL database (``url#schema``): backups, restore, drift and ``--db url#schema``.

Each tenant's dumps are its own (named after its schema, holding its
schema alone, claimed atomically), a tenant's restore puts back its own
schema and nothing else, its drift compares its own schema, and ``--db``
takes ``url#schema`` as ``apm fleet`` prints it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.conftest import run_apm, write_migration
from tests.test_postgres import applied, query, run_sql

pytestmark = pytest.mark.usefixtures("pg_server")


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """0001 projects, 0002 an index on it, 0003 tasks: tables named without a schema, so each tenant gets its own."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    write_migration(folder, "0001", "Projects", upgrade="conn.execute('CREATE TABLE projects (id INTEGER "
                    "PRIMARY KEY, name TEXT)')", downgrade="conn.execute('DROP TABLE projects')")
    write_migration(folder, "0002", "Project names", depends_on=("0001",),
                    upgrade="conn.execute('CREATE INDEX projects_by_name ON projects (name)')",
                    downgrade="conn.execute('DROP INDEX projects_by_name')")
    write_migration(folder, "0003", "Tasks", depends_on=("0001",),
                    upgrade="conn.execute('CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT)')",
                    downgrade="conn.execute('DROP TABLE tasks')")
    return folder


def apm(catalog: Path, cwd: Path, *args: str):
    return run_apm("--migrations-dir", str(catalog), *args, cwd=cwd)


def tenant(pg_url: str, schema: str) -> str:
    """The tenant as `apm migrate` reached it before `url#schema` was accepted in --db."""
    return f"{pg_url}&options=-csearch_path%3D{schema}"


def tables(url: str, schema: str) -> set[str]:
    return {r[0] for r in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}


@pytest.fixture
def rolled_back(pg_url: str, tmp_path: Path, catalog: Path):
    """Two tenants migrated, then 0001 rolled back (with its dependants) in both by one fleet run of 2 jobs."""
    listing = tmp_path / "t2.txt"
    listing.write_text(f"{pg_url}#tenant_a\n{pg_url}#tenant_b\n")
    folder = tmp_path / "dumps"
    assert apm(catalog, tmp_path, "fleet", "migrate", "--list", str(listing)).returncode == 0
    run_sql(pg_url, "INSERT INTO tenant_a.projects VALUES (1, 'a'); INSERT INTO tenant_b.projects VALUES (2, 'b')")
    done = apm(catalog, tmp_path, "fleet", "migrate", "--list", str(listing), "--rollback", "0001", "--cascade",
               "--yes", "--jobs", "2", "--backup-dir", str(folder), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)["databases"]
    assert applied(pg_url, "tenant_a") == [] and applied(pg_url, "tenant_b") == []
    return listing, folder, rows


def test_parallel_tenant_rollbacks_leave_one_dump_each(pg_url, tmp_path, catalog, rolled_back):
    """Point 1: two tenants rolled back in one run of --jobs 2 never share a dump, and each dump is its own."""
    listing, folder, rows = rolled_back
    backups = [Path(r["backup"]) for r in rows]
    assert len(set(backups)) == 2 and all(p.exists() for p in backups)
    name = query(pg_url, "SELECT current_database()")[0][0]
    assert backups[0].name.startswith(f"{name}.tenant_a.") and backups[1].name.startswith(f"{name}.tenant_b.")
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in backups)  # no partial left
    for schema, backup in zip(("tenant_a", "tenant_b"), backups, strict=True):
        listed = apm(catalog, tmp_path, "migrate", "backups", "--json", "--db", tenant(pg_url, schema),
                     "--ledger-schema", schema, "--backup-dir", str(folder))
        assert [r["path"] for r in json.loads(listed.stdout)] == [str(backup)]  # only that tenant's
        assert [(r["head"], r["applied"]) for r in json.loads(listed.stdout)] == [("0003", 3)]


def test_each_tenant_restores_its_own_schema_alone(pg_url, tmp_path, catalog, rolled_back):
    """Point 2: restoring tenant_a brings tenant_a back and leaves tenant_b exactly as it was (rolled back)."""
    listing, folder, rows = rolled_back
    run_sql(pg_url, "CREATE TABLE tenant_b.notes (id INT); INSERT INTO tenant_b.notes VALUES (7)")
    before_b = (tables(pg_url, "tenant_b"), applied(pg_url, "tenant_b"))
    done = apm(catalog, tmp_path, "migrate", "restore", "--db", tenant(pg_url, "tenant_a"), "--ledger-schema",
               "tenant_a", "--yes", "--json", "--backup-dir", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["backup"] == rows[0]["backup"] and report["other_ledgers"] == []
    assert applied(pg_url, "tenant_a") == ["0001", "0002", "0003"]
    assert query(pg_url, "SELECT id, name FROM tenant_a.projects") == [(1, "a")]
    assert (tables(pg_url, "tenant_b"), applied(pg_url, "tenant_b")) == before_b  # tenant_b untouched
    assert query(pg_url, "SELECT id FROM tenant_b.notes") == [(7,)]
    # The safety dump of tenant_a is tenant_a's alone: restoring it takes tenant_a back to rolled back, no more.
    tenant_a_dumps = sorted(folder.glob("*.tenant_a.*.dump"))
    assert len(tenant_a_dumps) == 2  # the rollback's and the restore's safety dump
    restored_b = apm(catalog, tmp_path, "migrate", "restore", "--db", f"{pg_url}#tenant_b", "--yes", "--json",
                     "--backup-dir", str(folder), "--keep-backups", "1")
    assert restored_b.returncode == 0, restored_b.stdout + restored_b.stderr
    assert sorted(folder.glob("*.tenant_a.*.dump")) == tenant_a_dumps  # tenant_b's pruning: its own dumps only
    assert applied(pg_url, "tenant_b") == ["0001", "0002", "0003"]
    assert query(pg_url, "SELECT id, name FROM tenant_b.projects") == [(2, "b")]
    assert applied(pg_url, "tenant_a") == ["0001", "0002", "0003"]  # tenant_b's restore left tenant_a alone


def test_a_whole_database_dump_holding_other_ledgers_needs_all_schemas(pg_url, tmp_path, catalog):
    """Point 2 for a plain database: a script restoring a dump that holds another ledger is refused (exit 7)
    unless --all-schemas asks for the whole database."""
    assert apm(catalog, tmp_path, "migrate", "--db", pg_url, "--yes").returncode == 0
    billing = tmp_path / "billing"
    billing.mkdir()
    write_migration(billing, "0001", "Billing", upgrade="conn.execute('CREATE TABLE billing_items (id INT)')")
    assert apm(billing, tmp_path, "migrate", "--db", pg_url, "--ledger-schema", "billing", "--yes").returncode == 0
    folder = tmp_path / "dumps"
    done = apm(catalog, tmp_path, "migrate", "--db", pg_url, "--rollback", "0003", "--yes", "--backup-dir",
               str(folder))
    assert done.returncode == 0, done.stderr
    before = applied(pg_url, "billing")
    refused = apm(catalog, tmp_path, "migrate", "restore", "--db", pg_url, "--yes", "--backup-dir", str(folder))
    assert refused.returncode == 7
    assert "also holds the ledger in schema(s) billing" in refused.stderr and "--all-schemas" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and applied(pg_url) == ["0001", "0002"]
    whole = apm(catalog, tmp_path, "migrate", "restore", "--db", pg_url, "--yes", "--all-schemas", "--json",
                "--backup-dir", str(folder))
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout)["other_ledgers"] == ["billing"]
    assert applied(pg_url) == ["0001", "0002", "0003"] and applied(pg_url, "billing") == before


def test_single_database_drift_of_a_tenant_compares_its_schema_only(pg_url, tmp_path, catalog):
    """Point 3: `apm migrate drift` of a tenant (search_path and --ledger-schema) ignores public.stray, as the
    fleet does, and still sees a change in the tenant's schema."""
    listing = tmp_path / "t.txt"
    listing.write_text(f"{pg_url}#tenant_b\n")
    assert apm(catalog, tmp_path, "fleet", "migrate", "--list", str(listing)).returncode == 0
    run_sql(pg_url, "CREATE TABLE public.stray (id INT)")
    for db in (["--db", tenant(pg_url, "tenant_b"), "--ledger-schema", "tenant_b"], ["--db", f"{pg_url}#tenant_b"]):
        drift = apm(catalog, tmp_path, "migrate", "drift", *db, "--json")
        assert drift.returncode == 0, drift.stdout + drift.stderr
        assert json.loads(drift.stdout)["differences"] == []
    fleet = apm(catalog, tmp_path, "fleet", "status", "--list", str(listing), "--drift", "--json")
    assert fleet.returncode == 0 and json.loads(fleet.stdout)["databases"][0]["state"] == "up_to_date"
    run_sql(pg_url, "ALTER TABLE tenant_b.tasks ADD COLUMN due TEXT")
    drift = apm(catalog, tmp_path, "migrate", "drift", "--db", f"{pg_url}#tenant_b", "--json")
    assert drift.returncode == 10
    assert [d["detail"] for d in json.loads(drift.stdout)["differences"]] == [
        "table tenant_b.tasks: column due is in the database, not in its migrations"]


def test_db_takes_url_hash_schema_as_the_fleet_prints_it(pg_url, tmp_path, catalog):
    """Point 4: `--db url#schema` is the tenant (search_path and ledger schema), in every command."""
    db = f"{pg_url}#tenant_c"
    done = apm(catalog, tmp_path, "migrate", "--db", db, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert tables(pg_url, "tenant_c") == {"projects", "tasks", "schema_migrations", "schema_migrations_log"}
    assert tables(pg_url, "public") == set() and applied(pg_url, "tenant_c") == ["0001", "0002", "0003"]
    for command in (("status",), ("migrate", "--list"), ("migrate", "doctor"), ("migrate", "plan")):
        shown = apm(catalog, tmp_path, *command, "--db", db)
        assert shown.returncode == 0, (command, shown.stdout + shown.stderr)
        assert "#tenant_c/" not in shown.stdout + shown.stderr and "does not exist" not in shown.stdout
    rolled = apm(catalog, tmp_path, "migrate", "--db", db, "--rollback", "0003", "--yes", "--backup-dir",
                 str(tmp_path / "d"))
    assert rolled.returncode == 0, rolled.stderr
    assert applied(pg_url, "tenant_c") == ["0001", "0002"]
    (dump,) = (tmp_path / "d").glob("*.dump")
    assert ".tenant_c." in dump.name
    clash = apm(catalog, tmp_path, "status", "--db", db, "--ledger-schema", "other")
    assert clash.returncode == 2 and "--ledger-schema" in clash.stderr and "Traceback" not in clash.stderr


def test_two_writers_claiming_a_dump_name_in_the_same_second_get_two_names(tmp_path):
    """Point 1, the race itself: threads of one process (one pid) and names chosen in the same second."""
    from planner.engines.postgresql.backup import claim_partial, publish

    barrier = threading.Barrier(4)
    published: list[Path] = []

    def write(n: int) -> None:
        barrier.wait()
        partial = claim_partial(tmp_path, "saas.tenant_a", "20261205_205222")
        partial.write_text(str(n))
        published.append(publish(partial, tmp_path, "saas.tenant_a", "20261205_205222"))

    workers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len({p.name for p in published}) == 4
    assert sorted(p.read_text() for p in published) == ["0", "1", "2", "3"]  # none overwrote another
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in published)


def test_two_processes_publishing_one_name_never_share_it(tmp_path):
    """Point 1: two processes that both chose the same final name (each its own partial) publish two files."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(2)
    workers = [context.Process(target=_publish_one, args=(str(tmp_path), n, ready)) for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    found = sorted(tmp_path.iterdir())
    assert [p.name for p in found] == ["saas.20261205_205222.dump", "saas.20261205_205222_2.dump"]
    assert {p.read_text() for p in found} == {"0", "1"}  # neither replaced the other's dump


def _publish_one(folder: str, n: int, ready) -> None:
    import os

    from planner.engines.postgresql.backup import publish

    partial = Path(folder) / f"saas.20261205_205222.dump.partial.{os.getpid()}"
    partial.write_text(str(n))
    ready.wait()
    publish(partial, Path(folder), "saas", "20261205_205222")


def test_a_live_writers_partial_is_never_removed_and_a_dead_ones_is(pg_url, tmp_path):
    """Point 1: a dump removes the partials of killed writers of its own ledger only, never a running one's."""
    import os

    from planner.engines.postgresql.backup import dump, dump_stem

    own, other, plain = dump_stem(pg_url, "tenant_a"), dump_stem(pg_url, "tenant_b"), dump_stem(pg_url)
    live = tmp_path / f"{own}.20260101_000000.dump.partial.{os.getppid()}"  # pytest's parent: running
    dead = tmp_path / f"{own}.20260101_000000.dump.partial.999999999"
    others = [tmp_path / f"{other}.20260101_000000.dump.partial.999999999",
              tmp_path / f"{plain}.20260101_000000.dump.partial.999999999"]
    for path in (live, dead, *others):
        path.write_text("half")
    run_sql(pg_url, "CREATE SCHEMA tenant_a")
    made = dump(pg_url, tmp_path, schema="tenant_a", only_schema=True)
    assert made.name.startswith(f"{own}.") and live.exists() and not dead.exists()
    assert all(path.exists() for path in others)


def test_a_tenants_preview_names_each_table_one_way(pg_url: str, tmp_path: Path) -> None:
    """A statement names ``tasks``; the catalog readings name the tenant's table ``tenant_a.tasks``. Each loss is
    one line, named as the readings name it: no second, uncounted line for the same column, rows or table."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    write_migration(folder, "0001", "Tasks", upgrade="conn.execute('CREATE TABLE tasks (id INTEGER PRIMARY KEY, "
                    "title TEXT, priority INTEGER)')\nconn.execute('CREATE TABLE notes (id INTEGER)')",
                    downgrade="conn.execute('DROP TABLE notes')\nconn.execute('DROP TABLE tasks')")
    write_migration(folder, "0002", "Clean up", depends_on=("0001",),
                    upgrade="conn.execute('ALTER TABLE tasks DROP COLUMN priority')\n"
                            "conn.execute(\"UPDATE tasks SET title = 'x' WHERE id = 1\")\n"
                            "conn.execute('DELETE FROM tasks WHERE id = 2')\n"
                            "conn.execute('TRUNCATE notes')")
    url = f"{pg_url}#tenant_a"
    assert apm(folder, tmp_path, "migrate", "--db", url, "--target", "0001").returncode == 0
    run_sql(pg_url, "INSERT INTO tenant_a.tasks VALUES (1, 'a', 5), (2, 'b', 6), (3, 'c', NULL); "
                    "INSERT INTO tenant_a.notes VALUES (1), (2)")
    shown = apm(folder, tmp_path, "migrate", "--db", url, "--dry-run")
    assert shown.returncode == 7, shown.stdout + shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines() if line.strip().startswith("0002 apply:")]
    assert lines == sorted(set(lines), key=lines.index), lines  # no line twice
    assert "0002 apply: drops column tenant_a.tasks.priority holding 2 non-default values" in lines, lines
    assert not any("tasks" in line and "tenant_a.tasks" not in line for line in lines), lines
    assert any(line.startswith("0002 apply: deletes 2 rows of tenant_a.notes") for line in lines), lines
    assert len([line for line in lines if "priority" in line]) == 1, lines
