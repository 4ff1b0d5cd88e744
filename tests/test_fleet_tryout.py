"""`apm fleet` and `apm migrate drift` as a new user met them (issue 24's tryout): one state per row with the
others still visible, one name per database everywhere, resumes of the right fleet only, lock timeouts told
apart from failures on the data.

Real SQLite files in project folders and the suite's PostgreSQL server, through the installed command; the
catalog and helpers are those of tests/test_fleet.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run_apm
from tests.test_fleet import PATTERN, applied, break_unique_index, catalog, fleet, fleet_of, migrate_to, project_db  # noqa: F401

# --------------------------------------------------------------------------
# A database in two states at once says both
# --------------------------------------------------------------------------


def add_column(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE projects ADD COLUMN archived_at TEXT")


def test_a_database_both_behind_and_drifted_says_both_and_is_not_only_drift(tmp_path: Path, catalog: Path) -> None:
    both, current = fleet_of(tmp_path, catalog, 2)  # 0001 of 3
    migrate_to(current, catalog)
    add_column(both)

    result = fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--drift", "--json")
    # Behind needs a migration, not only a look at the drift: attention (11), not "drift only" (10).
    assert result.returncode == 11, result.stdout + result.stderr
    document = json.loads(result.stdout)
    rows = {Path(r["db"]).parts[1]: r for r in document["databases"]}
    assert (rows["p00"]["state"], rows["p00"]["also"], rows["p00"]["pending"]) == ("drifted", ["behind"], 2)
    assert rows["p01"]["also"] == [] and rows["p01"]["state"] == "up_to_date"
    assert document["summary"] == {"up_to_date": 1, "drifted": 1}  # each database counted once, under its state

    text = fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--drift")
    row = next(line for line in text.stdout.splitlines() if line.startswith("projects/p00/"))
    assert "drifted, behind 2" in row
    assert text.stdout.strip().splitlines()[-1] == "1 up to date, 1 drifted (1 also behind)"

    # Drift alone is still drift alone (10); behind alone is still attention (11).
    migrate_to(both, catalog)
    assert fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--drift").returncode == 10


def test_the_neighbours_failed_and_drifted_ahead_and_behind(tmp_path: Path, catalog: Path) -> None:
    failing, ahead = fleet_of(tmp_path, catalog, 2)
    break_unique_index(failing)
    assert run_apm("--migrations-dir", str(catalog), "migrate", "--db", str(failing)).returncode == 5
    add_column(failing)
    with sqlite3.connect(ahead) as conn:  # a newer APM's migration, and 0002, 0003 of this catalog pending
        conn.execute("INSERT INTO schema_migrations (version, description) VALUES ('0099', 'from a newer APM')")

    rows = {Path(r["db"]).parts[1]: r for r in json.loads(
        fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--drift", "--json").stdout)["databases"]}
    assert (rows["p00"]["state"], rows["p00"]["also"]) == ("failed", ["drifted"])
    assert [d["detail"] for d in rows["p00"]["differences"]] == [
        "table projects: column archived_at is in the database, not in its migrations"]
    assert (rows["p01"]["state"], rows["p01"]["also"], rows["p01"]["pending"]) == ("ahead", ["behind"], 2)
    text = fleet(tmp_path, catalog, "status", "--glob", PATTERN)
    assert "ahead, behind 2" in text.stdout
    assert text.stdout.strip().splitlines()[-1] == "1 ahead (1 also behind), 1 failed"


# --------------------------------------------------------------------------
# One name per member: the path as given, in every place the fleet names it
# --------------------------------------------------------------------------


def test_a_failure_names_the_database_as_given_everywhere(tmp_path: Path, catalog: Path) -> None:
    fleet_of(tmp_path, catalog, 2)
    project_db(tmp_path, "p01").write_text("notes, not a database\n")
    given = "projects/p01/.aipm/data/aipm.db"
    absolute = str(tmp_path / given)

    shown = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--continue-on-error", "--jobs", "1")
    assert shown.returncode == 11, shown.stdout + shown.stderr
    # The line per database and the failures table name it as given; the retry command, to be pasted in any
    # folder, by its absolute path.
    assert absolute not in (shown.stdout + shown.stderr).replace(f"migrate --db {absolute}", "")
    assert f"{given}: failed: {given} is not a SQLite database" in shown.stdout
    table_row = shown.stdout.split("retry alone with")[1].splitlines()[2]
    assert table_row.split()[:3] == [given, "failed", given] and f"migrate --db {absolute}" in table_row

    document = json.loads(fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--json",
                                "--continue-on-error").stdout)
    assert [r["error"] for r in document["databases"]] == [None, f"{given} is not a SQLite database"]
    journal = Path(document["journal"]).read_text()
    assert absolute + " is" not in journal and f'"error": "{given} is not a SQLite database"' in journal

    plan = fleet(tmp_path, catalog, "plan", "--glob", PATTERN, "--json")
    assert json.loads(plan.stdout)["databases"][1]["error"] == f"{given} is not a SQLite database"
    rehearsal = fleet(tmp_path, catalog, "plan", "--glob", PATTERN, "--rehearse")
    assert absolute not in rehearsal.stdout + rehearsal.stderr


# --------------------------------------------------------------------------
# A tenant is `url#schema` in every command, as the fleet names it, never with its password
# --------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_tenant_is_named_as_the_fleet_names_it_by_every_command(pg_url: str, tmp_path: Path,
                                                                   catalog: Path) -> None:
    import psycopg

    url = pg_url + "&password=s3cret"  # the test server trusts its socket: the password is carried, not checked
    tenant = f"{url}#tenant1"
    (tmp_path / "tenants.txt").write_text(tenant + "\n")
    migrated = fleet(tmp_path, catalog, "migrate", "--list", "tenants.txt", "--target", "0001", "--json")
    name = json.loads(migrated.stdout)["databases"][0]["db"]
    assert name.endswith("&password=***#tenant1"), name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE tenant1.projects ADD COLUMN archived_at text")

    def apm(*args: str, db: str = tenant):
        result = run_apm("--migrations-dir", str(catalog), "--db", db, *args, cwd=tmp_path)
        shown = result.stdout + result.stderr
        assert "s3cret" not in shown and "search_path" not in shown, (args, shown)
        return result

    drift = apm("migrate", "drift")
    assert drift.returncode == 10 and f"{name}: 1 difference(s)" in drift.stdout, drift.stdout + drift.stderr
    assert f"Database:        {name}" in apm("status").stdout
    assert f"rolled back; {name} is unchanged" in apm("migrate", "--dry-run").stdout
    assert f"{name}: healthy" in apm("migrate", "doctor").stdout
    assert f"No backups of {name} " in apm("migrate", "backups").stdout
    missing = pg_url.replace("?", "_gone?") + "#tenant1"
    error = apm("status", db=missing)
    assert f"cannot connect to {missing}:" in error.stderr, error.stderr
    status = fleet(tmp_path, catalog, "status", "--list", "tenants.txt", "--drift")
    assert f"{name}: table tenant1.projects: column archived_at" in status.stdout
    assert "s3cret" not in status.stdout and "search_path" not in status.stdout

    # The retry command names the tenant as the fleet does (its ledger schema comes with it), without a password.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenant1.projects (id, name) VALUES (1, 'twin'), (2, 'twin')")
    failed = fleet(tmp_path, catalog, "migrate", "--list", "tenants.txt")
    assert failed.returncode == 11, failed.stdout + failed.stderr
    retry = failed.stdout.strip().splitlines()[-2].split("retry alone with")[-1]
    assert retry.rstrip().endswith(f"migrate --db '{pg_url}#tenant1'"), failed.stdout
    assert "s3cret" not in failed.stdout and "search_path" not in failed.stdout

    # So does a doctor's fix command: with the search_path alone, it would put the tenant's ledger in public.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE tenant1.schema_migrations_log")
    doctor = apm("migrate", "doctor")
    assert f"fix: apm --db '{pg_url}#tenant1' --migrations-dir {catalog} migrate  # recreates it" in doctor.stdout, \
        doctor.stdout


# --------------------------------------------------------------------------
# A run that stopped on a lock timeout is told apart from a failure on the data
# --------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_lock_timeout_is_failed_with_a_note_that_waiting_is_the_fix(pg_server, tmp_path: Path) -> None:
    import psycopg

    from tests.conftest import write_migration

    folder = tmp_path / "migrations"
    folder.mkdir()
    write_migration(folder, "0001", "Add a column", upgrade="conn.execute('ALTER TABLE t ADD COLUMN c INT')")
    waiting, broken = pg_server.create_database(), pg_server.create_database()
    for url in (waiting, broken):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id INT)")
    with psycopg.connect(broken, autocommit=True) as conn:  # a failure on the data: the column is there already
        conn.execute("ALTER TABLE t ADD COLUMN c INT")
    (tmp_path / "dbs.txt").write_text(f"{waiting}\n{broken}\n")
    holder = psycopg.connect(waiting, application_name="nightly-report")
    try:
        holder.execute("SELECT count(*) FROM t")  # its open transaction holds a lock the ALTER must wait for
        run = fleet(tmp_path, folder, "migrate", "--list", "dbs.txt", "--continue-on-error", "--lock-timeout",
                    "200ms", "--lock-retries", "0")
    finally:
        holder.close()
    assert run.returncode == 11, run.stdout + run.stderr

    status = fleet(tmp_path, folder, "status", "--list", "dbs.txt", "--json")
    assert status.returncode == 11
    document = json.loads(status.stdout)
    rows = document["databases"]
    assert [(r["state"], r["lock_timeout"]) for r in rows] == [("failed", True), ("failed", False)], rows
    assert rows[0]["error"].startswith("0001 stopped on a lock timeout, nothing of it was applied: the data are "
                                       "fine; retry once the lock is free (migration 0001 could not get its lock")
    assert 'application "nightly-report"' in rows[0]["error"]
    assert rows[1]["error"].startswith("0001 failed: ") and "lock" not in rows[1]["error"]
    assert document["summary"] == {"failed": 2}
    text = fleet(tmp_path, folder, "status", "--list", "dbs.txt")
    assert "failed (lock timeout)" in text.stdout.splitlines()[2]
    assert text.stdout.strip().splitlines()[-1] == "2 failed (1 on a lock timeout)"


def test_every_way_a_log_row_says_lock_timeout_and_a_step_outside_a_transaction(tmp_path: Path) -> None:
    """The run log's words for a lock timeout: the last attempt's, an earlier attempt's (a run killed while it
    waited to try again), the server's own (55P03); a step outside a transaction keeps what it ran."""
    from planner.fleet.members import member
    from planner.fleet.status import Comparison, Reading, member_status
    from planner.loader import load_catalog
    from tests.conftest import write_migration

    folder = tmp_path / "migrations"
    folder.mkdir()
    write_migration(folder, "0001", "Inside")
    write_migration(folder, "0002", "Outside", depends_on=("0001",), extra="transactional = False\n")
    comparison = Comparison(load_catalog(folder))

    def status(version: str, detail: str):
        reading = Reading({"0001": "2026-12-06"} if version == "0002" else {}, ("failed", version, detail, "apply"))
        return member_status(member(str(tmp_path / "x.db")), comparison, reading=reading)

    for detail in ("migration 0001 could not get its lock within the lock timeout (2s) in 4 attempts: held by ...",
                   "lock timeout (2s) on attempt 1 of 4: held by pid 7; rolled back, trying again in 0.5 s",
                   "canceling statement due to lock timeout",
                   'could not obtain lock on relation "t"'):
        found = status("0001", detail)
        assert (found.state, found.lock_timeout) == ("failed", True), detail
        assert "nothing of it was applied" in found.error
    outside = status("0002", "migration 0002 could not get its lock within the lock timeout (2s) in 1 attempt: ...")
    assert outside.lock_timeout and "nothing of it was applied" not in outside.error
    assert "what it ran before the timeout stays" in outside.error
    on_the_data = status("0001", "UNIQUE constraint failed: projects.name")
    assert (on_the_data.state, on_the_data.lock_timeout) == ("failed", False)
    assert on_the_data.error == "0001 failed: UNIQUE constraint failed: projects.name"


# --------------------------------------------------------------------------
# A resume continues its own fleet's run, never another fleet's
# --------------------------------------------------------------------------


def test_a_resume_continues_its_own_fleets_run_only(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 4)  # p00, p01: fleet A; p02, p03: fleet B; p00 and p02 fail
    first, second = "projects/p0[01]/.aipm/data/aipm.db", "projects/p0[23]/.aipm/data/aipm.db"
    for path in (paths[0], paths[2]):
        break_unique_index(path)
    # A stops at its failure (p01 not started) and says how to resume it: named as it was, catalog included.
    stopped = fleet(tmp_path, catalog, "migrate", "--glob", first, "--jobs", "1")
    assert stopped.returncode == 11, stopped.stdout + stopped.stderr
    journal = next((tmp_path / ".apm-fleet").glob("run-*.jsonl"))
    assert f"`cd {tmp_path} && apm --migrations-dir {catalog} fleet migrate --resume --journal {journal} --glob " \
        f"'{first}'` runs what did not succeed" in stopped.stdout, stopped.stdout
    assert fleet(tmp_path, catalog, "migrate", "--glob", second, "--continue-on-error").returncode == 11  # newest
    journals = sorted((tmp_path / ".apm-fleet").glob("run-*.jsonl"))
    assert len(journals) == 2
    for path in (paths[0], paths[2]):  # the data fixed: a resume now succeeds where it runs
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM projects WHERE name = 'twin' AND id > (SELECT min(id) FROM projects)")

    # Nothing names the fleet, and the folder holds two fleets' runs: which to continue is the person's to say.
    bare = fleet(tmp_path, catalog, "migrate", "--resume")
    assert bare.returncode == 2, bare.stdout + bare.stderr
    message = bare.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    for journal, pattern, left in zip(journals, (first, second), (2, 1)):
        assert f"{journal.name} (glob {tmp_path / pattern}, {left} of 2 databases not succeeded)" in message
    assert "--resume --journal FILE" in message and "--glob/--list" in message
    assert applied(paths[0]) == applied(paths[2]) == ["0001"]  # nothing ran

    # Named by its pattern, fleet A resumes its own run (B's is the newer one), and only its database.
    resumed = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", first, "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [(r["db"], r["outcome"]) for r in json.loads(resumed.stdout)["databases"]] == [
        ("projects/p00/.aipm/data/aipm.db", "applied"), ("projects/p01/.aipm/data/aipm.db", "applied")]
    assert json.loads(resumed.stdout)["journal"] == str(journals[0])
    assert applied(paths[2]) == ["0001"]  # B's failed database was not touched

    # Another catalog is another fleet, even with the same pattern.
    other = tmp_path / "other-catalog"
    other.mkdir()
    (other / catalog.joinpath("migration_0001.py").name).write_text(catalog.joinpath("migration_0001.py").read_text())
    elsewhere = run_apm("--migrations-dir", str(other), "fleet", "migrate", "--resume", "--glob", second, cwd=tmp_path)
    assert elsewhere.returncode == 2 and "is of this fleet (the same patterns" in elsewhere.stderr, elsewhere.stderr
    assert f"catalog {catalog}" in elsewhere.stderr

    # A journal named by file is continued as asked; --journal alone is a usage error.
    named = fleet(tmp_path, catalog, "migrate", "--resume", "--journal", str(journals[1]), "--json")
    assert named.returncode == 0, named.stdout + named.stderr
    assert [r["outcome"] for r in json.loads(named.stdout)["databases"]] == ["applied"]
    assert applied(paths[2]) == ["0001", "0002", "0003"]
    alone = fleet(tmp_path, catalog, "migrate", "--journal", str(journals[1]))
    assert alone.returncode == 2 and "give --resume with it" in alone.stderr


def test_a_tenant_of_a_url_without_a_host_keeps_its_url_and_is_named_back() -> None:
    """``postgresql:///db`` (the default socket) stays a URL libpq reads when a tenant's search_path or the
    removal of a password rewrites it, and every spelling of one tenant is named the same."""
    from planner.fleet.members import member
    from planner.urls import display_name, tenant_url, without_password

    assert tenant_url("postgresql:///saas", "acme") == "postgresql:///saas?options=-csearch_path%3Dacme"
    assert without_password("postgresql://:pw@/saas?sslmode=disable#acme") == "postgresql:///saas?sslmode=disable#acme"
    assert without_password("postgresql:///saas") == "postgresql:///saas"
    tenant = member("postgresql://app:s3cret@/saas?host=/run/pg#acme")
    assert tenant.display == "postgresql://app:***@/saas?host=/run/pg#acme"
    # The same tenant given by its search_path and ledger schema (an older retry command) is named the same.
    assert display_name("postgresql://app:s3cret@/saas?host=/run/pg&options=-csearch_path%3Dacme", "acme") == \
        tenant.display
    assert display_name("host=/run/pg dbname=saas options='-csearch_path=acme'", "acme") == \
        "host=/run/pg dbname=saas#acme"
    assert display_name("postgresql:///saas?options=-csearch_path%3Dother", "acme").endswith("%3Dother")  # no tenant


def test_runs_of_other_fleets_never_prune_the_run_a_fleet_resumes_from(tmp_path: Path) -> None:
    """The folder keeps its newest ten runs and the newest of each fleet: eleven runs of fleet B after one of A
    remove B's oldest only, so A can still be resumed."""
    from planner.fleet.journal import prune, runs

    def header(fleet: str) -> str:
        return json.dumps({"type": "run", "format": 1, "fleet": {"named_by": [f"glob {fleet}"], "catalog": "/c"}})

    folder = tmp_path / ".apm-fleet"
    folder.mkdir()
    files = [folder / f"run-202001{day:02}T000000Z-1.jsonl" for day in range(1, 13)]
    files[0].write_text(header("A") + "\n")
    for path in files[1:]:
        path.write_text(header("B") + "\n")
    assert prune(folder, keep=10) == [files[1]]
    assert runs(folder) == [files[0], *files[2:]]


def test_a_journal_named_relative_is_printed_absolute_as_every_run_prints_it(tmp_path: Path, catalog: Path) -> None:
    """Tryout 8: ``--resume --journal .apm-fleet/run-....jsonl`` printed the journal relative, where every other
    run prints it absolute (and the resume command it prints names it absolute)."""
    paths = fleet_of(tmp_path, catalog, 3)
    break_unique_index(paths[1])  # fails: the run is left to resume
    first = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--continue-on-error", "--json")
    kept = Path(json.loads(first.stdout)["journal"])
    assert kept.is_absolute()
    relative = str(kept.relative_to(tmp_path))
    resumed = fleet(tmp_path, catalog, "migrate", "--resume", "--journal", relative, "--glob", PATTERN)
    assert f"Journal: {kept}" in resumed.stdout, resumed.stdout + resumed.stderr
    again = fleet(tmp_path, catalog, "migrate", "--resume", "--journal", relative, "--glob", PATTERN, "--json")
    assert json.loads(again.stdout)["journal"] == str(kept), again.stdout + again.stderr
