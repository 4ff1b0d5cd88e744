"""A tenant's run reads and locks its own schema only (issue 24 point 6, issue 25).

Every tenant of one database has the same tables. A run's preview used to
read every schema inside its transaction: ``pg_get_viewdef`` took ACCESS
SHARE on every other tenant's views and their tables and held it to the end,
and ``pg_relation_size`` waited for any lock on any tenant's relation, so two
tenants migrated in parallel deadlocked on their DDL (each waiting for the
other's reading of its own table), a tenant's run waited on a lock another
session held on another tenant's table, and its lock message named that
table. Real ``apm fleet migrate --jobs 2`` runs, a
real second session holding the lock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import run_apm, write_migration
from tests.test_postgres import applied, query, run_sql

pytestmark = pytest.mark.usefixtures("pg_server")

#: Each step waits a little before its DDL, so both tenants' runs have read the catalog before either alters
#: anything: with the old reading of every schema, that overlap deadlocked every time.
_PAUSE = "conn.execute('SELECT pg_sleep(0.4)')\n"


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """0001 projects and tasks, 0002 a view over them, 0003 a column of tasks: names without a schema."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    write_migration(folder, "0001", "Projects and tasks",
                    upgrade="conn.execute('CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT)')\n"
                            "conn.execute('CREATE TABLE tasks (id INTEGER PRIMARY KEY, "
                            "project_id INTEGER REFERENCES projects, title TEXT)')",
                    downgrade="conn.execute('DROP TABLE tasks')\nconn.execute('DROP TABLE projects')")
    write_migration(folder, "0002", "Summary", depends_on=("0001",),
                    upgrade=_PAUSE + "conn.execute('CREATE VIEW project_summary AS SELECT p.name, count(t.id) AS n "
                                     "FROM projects p LEFT JOIN tasks t ON t.project_id = p.id GROUP BY p.name')",
                    downgrade=_PAUSE + "conn.execute('DROP VIEW project_summary')")
    write_migration(folder, "0003", "Priority", depends_on=("0001",),
                    upgrade=_PAUSE + "conn.execute('ALTER TABLE tasks ADD COLUMN priority INTEGER')",
                    downgrade=_PAUSE + "conn.execute('ALTER TABLE tasks DROP COLUMN priority')")
    return folder


@pytest.fixture
def tenants(pg_url: str, tmp_path: Path, catalog: Path) -> Path:
    """Two tenants at 0001 (one row each), listed for `apm fleet`."""
    listing = tmp_path / "tenants.txt"
    listing.write_text(f"{pg_url}#tenant_a\n{pg_url}#tenant_b\n")
    done = fleet(catalog, tmp_path, listing, "--to", "0001", "--jobs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    for schema in ("tenant_a", "tenant_b"):
        run_sql(pg_url, f"INSERT INTO {schema}.projects VALUES (1, 'p'); "
                        f"INSERT INTO {schema}.tasks VALUES (1, 1, 't')")
    return listing


def fleet(catalog: Path, cwd: Path, listing: Path, *args: str):
    return run_apm("--migrations-dir", str(catalog), "fleet", "migrate", "--list", str(listing), "--yes", "--json",
                   *args, cwd=cwd)


def outcomes(done) -> list[tuple[str, str]]:
    rows = json.loads(done.stdout)["databases"]
    return [(row["db"].rsplit("#", 1)[1], row["outcome"]) for row in rows]


def test_tenants_migrated_in_parallel_never_deadlock(pg_url, tmp_path, catalog, tenants):
    """Forward (a view, a new column), a dry run of a rollback and the rollback itself, two tenants at a time,
    twice over: each tenant's run ends as asked, none deadlocked (on the old code one of them did, in the first
    round already)."""
    for _ in range(2):
        forward = fleet(catalog, tmp_path, tenants, "--jobs", "2")
        assert forward.returncode == 0, forward.stdout + forward.stderr
        assert outcomes(forward) == [("tenant_a", "applied"), ("tenant_b", "applied")]
        rehearsed = fleet(catalog, tmp_path, tenants, "--jobs", "2", "--rollback", "0003", "--dry-run")
        assert rehearsed.returncode == 0, rehearsed.stdout + rehearsed.stderr
        assert applied(pg_url, "tenant_a") == applied(pg_url, "tenant_b") == ["0001", "0002", "0003"]
        back = fleet(catalog, tmp_path, tenants, "--jobs", "2", "--rollback", "0002")
        assert back.returncode == 0, back.stdout + back.stderr
        assert outcomes(back) == [("tenant_a", "rolled back"), ("tenant_b", "rolled back")]
        back = fleet(catalog, tmp_path, tenants, "--jobs", "2", "--rollback", "0003")
        assert back.returncode == 0, back.stdout + back.stderr
        assert applied(pg_url, "tenant_a") == applied(pg_url, "tenant_b") == ["0001"]
    assert "DeadlockDetected" not in forward.stdout + forward.stderr + back.stdout + back.stderr


def _holding(pg_url: str, statement: str):
    """A second session, its transaction holding what ``statement`` locks until it is closed."""
    import psycopg

    conn = psycopg.connect(pg_url)
    conn.execute(statement)
    return conn


@pytest.mark.parametrize(("held", "args"), [("tenant_b.tasks", ("--to", "0003")),
                                            ("tenant_b.project_summary", ("--rollback", "0002", "--dry-run"))],
                         ids=["table-forward", "view-dry-run"])
def test_another_tenants_lock_does_not_delay_a_run(pg_url, tmp_path, catalog, tenants, held, args):
    """A session holding ACCESS EXCLUSIVE on tenant_b's table (or view, and so its tables) all along: tenant_a's
    run, forward and a rolled-back preview, takes no lock on it, so it finishes under a 2 s lock timeout without a
    retry (the old code waited on it and failed, rc 6, naming tenant_b's table)."""
    both = fleet(catalog, tmp_path, tenants, "--jobs", "1")  # 0002 and 0003 everywhere, before the lock
    assert both.returncode == 0, both.stdout + both.stderr
    if args[0] == "--to":
        assert fleet(catalog, tmp_path, tenants, "--jobs", "1", "--rollback", "0003").returncode == 0
    holder = _holding(pg_url, f"LOCK TABLE {held} IN ACCESS EXCLUSIVE MODE")
    try:
        started = time.monotonic()
        done = run_apm("--migrations-dir", str(catalog), "migrate", "--db", f"{pg_url}#tenant_a", "--yes",
                       "--lock-timeout", "2s", "--lock-retries", "0", *args, cwd=tmp_path)
        took = time.monotonic() - started
        # The holder is still there: tenant_b's relation was never ours to wait for.
        assert query(pg_url, "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted "
                             "AND relation = %s::regclass", (held,))[0][0] == 1
    finally:
        holder.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tenant_b" not in done.stdout + done.stderr
    assert took < 30  # far below a wait on the holder, which never ended during the run; room for a loaded machine


def test_a_lock_message_names_only_the_tenants_own_tables(pg_url, tmp_path, catalog, tenants):
    """Another session reads tenant_a's own tasks (ACCESS SHARE, which the run's readings pass but its ALTER waits
    for): the run times out, and its message and the locks it says the next attempt takes first name tenant_a's
    tables only (the old one named tenant_b's projects and tasks too)."""
    assert fleet(catalog, tmp_path, tenants, "--jobs", "1", "--to", "0002").returncode == 0  # 0003 alone is run
    holder = _holding(pg_url, "LOCK TABLE tenant_a.tasks IN ACCESS SHARE MODE")
    try:
        done = run_apm("--migrations-dir", str(catalog), "migrate", "--db", f"{pg_url}#tenant_a", "--yes",
                       "--to", "0003", "--lock-timeout", "1s", "--lock-retries", "1", cwd=tmp_path)
    finally:
        holder.close()
    said = done.stdout + done.stderr
    assert done.returncode == 6, said
    assert "tenant_a.tasks" in said and "tenant_b" not in said, said
    assert applied(pg_url, "tenant_a") == ["0001", "0002"]


def test_drift_of_a_tenant_reads_only_its_schema(pg_url, tmp_path, catalog, tenants):
    """`apm migrate drift` of tenant_a while another session holds tenant_b's tables: it reads tenant_a's schema
    alone, so it answers (no drift) instead of waiting for tenant_b (a 3 s lock timeout on the database ends the
    old code's wait on the view's tables with an error)."""
    assert fleet(catalog, tmp_path, tenants, "--jobs", "1").returncode == 0
    name = query(pg_url, "SELECT current_database()")[0][0]
    run_sql(pg_url, f"ALTER DATABASE {name} SET lock_timeout = '3s'")
    holder = _holding(pg_url, "LOCK TABLE tenant_b.tasks, tenant_b.projects IN ACCESS EXCLUSIVE MODE")
    try:
        done = run_apm("--migrations-dir", str(catalog), "migrate", "drift", "--db", f"{pg_url}#tenant_a",
                       "--json", cwd=tmp_path)
    finally:
        holder.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["differences"] == []


def test_a_tenants_loss_in_a_shared_schema_is_still_counted(pg_url, tmp_path, catalog, tenants):
    """The limit of reading the tenant's schema alone (docs/postgresql.md): a tenant's migration that deletes,
    overwrites and drops in `public` by name still has each loss counted from the rows there before the plan, never
    taken for rows the plan wrote (a table outside the schemas read is not in the catalog as the plan found it)."""
    run_sql(pg_url, "CREATE TABLE public.shared (id INTEGER, note TEXT); INSERT INTO public.shared VALUES (1, 'a'), "
                    "(2, 'b'), (3, 'c'); CREATE TABLE public.gone (id INTEGER); INSERT INTO public.gone VALUES (1), (2)")
    write_migration(catalog, "0004", "Shared", depends_on=("0001",),
                    upgrade="conn.execute('DELETE FROM public.shared WHERE id = 1')\n"
                            "conn.execute('UPDATE public.shared SET id = id + 10 WHERE id = 2')\n"
                            "conn.execute('ALTER TABLE public.shared DROP COLUMN note')\n"
                            "conn.execute('DROP TABLE public.gone')")
    done = run_apm("--migrations-dir", str(catalog), "migrate", "--db", f"{pg_url}#tenant_a", "--to", "0004",
                   "--dry-run", "--json", cwd=tmp_path)
    assert done.returncode == 7, done.stdout + done.stderr  # loss found by a dry run
    impact = {(i["kind"], i["table"]): (i["count"], i["before"]) for i in json.loads(done.stdout)["steps"][-1]["impact"]}
    assert impact == {("deleted-rows", "public.shared"): (1, 3), ("overwritten-values", "public.shared"): (1, None),
                      ("dropped-column", "public.shared"): (2, None), ("dropped-table", "public.gone"): (2, 2)}


def test_a_plain_database_beside_tenants_does_not_lock_theirs(pg_url, tmp_path, catalog, tenants):
    """The same database migrated as a plain one (its ledger in `public`) while another session holds tenant_b's
    tasks: a schema holding another ledger is another member's, so the run reads neither tenant's tables and
    finishes under a 2 s lock timeout; its preview still sees `public` (the new view and column are listed)."""
    holder = _holding(pg_url, "LOCK TABLE tenant_b.tasks IN ACCESS EXCLUSIVE MODE")
    try:
        done = run_apm("--migrations-dir", str(catalog), "migrate", "--db", pg_url, "--dry-run", "--json",
                       "--lock-timeout", "2s", "--lock-retries", "0", cwd=tmp_path)
    finally:
        holder.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tenant_" not in done.stdout
    lines = [line for step in json.loads(done.stdout)["steps"] for line in step["lines"]]
    assert "0002 apply: adds view project_summary" in lines and "0003 apply: adds column tasks.priority" in lines


def test_a_tenants_lock_findings_in_a_shared_schema_stay(pg_url, tmp_path, catalog, tenants):
    """A tenant's migrations that rewrite a table of `public`, one measured in the transaction (a type change), one
    judged by its kind (`VACUUM FULL`, outside a transaction): both are findings on that table, as on a plain
    database. The run reads the other schemas' catalog rows (which lock nothing), not their sizes."""
    run_sql(pg_url, "CREATE TABLE public.shared (id INTEGER PRIMARY KEY); INSERT INTO public.shared VALUES (1), (2)")
    write_migration(catalog, "0004", "Wider ids", depends_on=("0001",),
                    upgrade="conn.execute('ALTER TABLE public.shared ALTER COLUMN id TYPE bigint')")
    write_migration(catalog, "0005", "Compact", depends_on=("0004",), extra="transactional = False",
                    upgrade="conn.execute('VACUUM FULL public.shared')")
    done = run_apm("--migrations-dir", str(catalog), "migrate", "--db", f"{pg_url}#tenant_a", "--to", "0005",
                   "--dry-run", "--json", cwd=tmp_path)
    steps = {step["version"]: step for step in json.loads(done.stdout)["steps"]}
    assert [(f["code"], f["relation"]) for f in steps["0004"]["findings"]] == [("table-rewrite", "shared")], done.stdout
    assert ("table-rewrite", "shared") in [(f["code"], f["relation"]) for f in steps["0005"]["findings"]]
    assert steps["0004"]["rewrites"] == ["shared"]
