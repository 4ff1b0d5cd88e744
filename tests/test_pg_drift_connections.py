"""PostgreSQL drift and backups reach the database the connection string names, as libpq reads it (issue 24).

The scratch database of a drift replay was named by editing the URL's text:
a raw ``#`` in a password made it unusable (and printed half the password),
and a ``?dbname=`` in the query kept pointing at the live database, which was
then compared with itself and written to. Backups were named after the URL's
path, not the database connected. A tenant schema not made yet was compared
as the ``public`` schema; a mixed-case tenant could not be migrated; a drift
killed during its replay left its scratch database for ever; and replays were
shared by servers whose URLs differ only in their socket folder.
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

from tests.conftest import run_apm, write_migration

pytestmark = pytest.mark.postgres

SECRET = "Sekr1tPw#42"


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """0001 makes a table; 0002 sleeps during a replay while the file ``slow`` beside the catalog exists."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    write_migration(folder, "0001", "Counter", upgrade="conn.execute('CREATE TABLE counter (id integer PRIMARY KEY, "
                    "n integer)')", downgrade="conn.execute('DROP TABLE counter')")
    slow = tmp_path / "slow"
    write_migration(folder, "0002", "Slow when asked", depends_on=("0001",),
                    upgrade=f"import os\nif os.path.exists({str(slow)!r}):\n    conn.execute('SELECT pg_sleep(30)')",
                    downgrade="pass")
    return folder


def _sql(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _apm(catalog: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_apm("--migrations-dir", str(catalog), *args, cwd=cwd)


def _name(pg_url: str) -> str:
    return pg_url.split("@/", 1)[1].split("?", 1)[0]


def _socket(pg_url: str) -> str:
    return pg_url.split("host=", 1)[1]


def _scratch(pg_server) -> list[str]:
    return [row[0] for row in _sql(pg_server.url("postgres"), "SELECT datname FROM pg_database WHERE "
                                   "starts_with(datname, 'apm_drift_') ORDER BY 1")]


def test_a_hash_in_the_password_lets_drift_run_and_is_never_shown(pg_url: str, tmp_path: Path,
                                                                   catalog: Path) -> None:
    """P1: the scratch URL was spliced at the password's '#': drift could not run and printed ``Sekr1tPw``."""
    db = f"postgresql://apm:{SECRET}@/{_name(pg_url)}?host={_socket(pg_url)}"  # the server trusts: any password
    assert _apm(catalog, "migrate", "--db", db, cwd=tmp_path).returncode == 0
    _sql(pg_url, "ALTER TABLE counter ADD COLUMN hand text")
    single = _apm(catalog, "migrate", "drift", "--db", db, cwd=tmp_path)
    assert single.returncode == 10, single.stdout + single.stderr
    assert "table counter: column hand is in the database, not in its migrations" in single.stdout
    (tmp_path / "pw.txt").write_text(f"{db}   # raw hash in the password\n")
    fleet = _apm(catalog, "fleet", "status", "--drift", "--list", "pw.txt", "--json", cwd=tmp_path)
    row = json.loads(fleet.stdout)["databases"][0]
    assert fleet.returncode == 10 and row["differences"], fleet.stdout + fleet.stderr
    for output in (single.stdout + single.stderr, fleet.stdout + fleet.stderr):
        assert "Sekr1t" not in output and "Pw#42" not in output, output
    assert _scratch_left(pg_url) == []


def _scratch_left(pg_url: str) -> list[str]:
    return [row[0] for row in _sql(pg_url, "SELECT datname FROM pg_database WHERE starts_with(datname, 'apm_drift_')"
                                   " AND datname ~ %s", (f"_{os.getpid()}_",))]


@pytest.mark.parametrize("spelling", ["query", "keyword", "query over path"])
def test_drift_replays_into_the_scratch_database_whatever_names_the_live_one(
        pg_server, pg_url: str, tmp_path: Path, catalog: Path, spelling: str) -> None:
    """P3: with ``?dbname=`` the "scratch" connection opened the live database: a dropped table was not drift,
    and the replay's runner wrote a log row into the live ledger."""
    name, sock = _name(pg_url), _socket(pg_url)
    other = pg_server.create_database()  # the path's database, which libpq does not connect to
    db = {"query": f"postgresql://apm@/?dbname={name}&host={sock}",
          "keyword": f"user=apm host={sock} dbname={name}",
          "query over path": f"postgresql://apm@/{_name(other)}?dbname={name}&host={sock}"}[spelling]
    assert _apm(catalog, "migrate", "--db", pg_url, cwd=tmp_path).returncode == 0
    log = _sql(pg_url, "SELECT count(*) FROM schema_migrations_log")
    _sql(pg_url, "DROP TABLE counter")
    found = _apm(catalog, "migrate", "drift", "--db", db, cwd=tmp_path)
    assert found.returncode == 10, found.stdout + found.stderr
    assert "table counter (0001) is missing from the database" in found.stdout
    assert _sql(pg_url, "SELECT count(*) FROM schema_migrations_log") == log  # "Writes nothing"
    assert _sql(other, "SELECT to_regclass('schema_migrations') IS NULL") == [(True,)]


def test_a_fleet_replay_is_never_the_live_database_itself(pg_server, pg_url: str, tmp_path: Path,
                                                          catalog: Path) -> None:
    """P3 in a fleet: the poisoned replay (the drifted database read as "expected") made a clean one drifted."""
    clean = pg_server.create_database()
    for db in (pg_url, clean):
        assert _apm(catalog, "migrate", "--db", db, cwd=tmp_path).returncode == 0
    _sql(pg_url, "ALTER TABLE counter ADD COLUMN hand text")
    (tmp_path / "qd.txt").write_text(f"postgresql://apm@/?dbname={_name(pg_url)}&host={_socket(pg_url)}\n{clean}\n")
    fleet = _apm(catalog, "fleet", "status", "--drift", "--list", "qd.txt", "--json", cwd=tmp_path)
    rows = json.loads(fleet.stdout)["databases"]
    assert [bool(row["differences"]) for row in rows] == [True, False], rows


def test_the_replay_refuses_a_scratch_connection_that_reaches_another_database(
        pg_url: str, tmp_path: Path, catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: whatever made the scratch connection string, a replay into any database but the scratch
    one it created is refused, nothing run or logged there."""
    from planner import load_catalog
    from planner.engines.postgresql import PostgresEngine
    from planner.engines.postgresql import drift
    from planner.schema import DriftUnchecked

    assert _apm(catalog, "migrate", "--db", pg_url, "--to", "0001", cwd=tmp_path).returncode == 0
    monkeypatch.setattr(drift, "on_database", lambda url, name: url)  # a bug sending the replay to the live one
    engine = PostgresEngine(pg_url)
    with pytest.raises(DriftUnchecked, match="not the scratch database apm_drift_.*; the replay was not run"):
        engine.drift(load_catalog(catalog), engine.applied(), {})
    assert _sql(pg_url, "SELECT count(*) FROM schema_migrations_log") == [(1,)]
    assert _scratch_left(pg_url) == []


def test_a_backup_is_named_after_the_database_connected(pg_server, pg_url: str, tmp_path: Path,
                                                        catalog: Path) -> None:
    """P3: ``/qclean?dbname=qtest`` rolled back qtest but wrote ``qclean.<ts>.dump``, which ``backups`` then
    listed as qclean's: a restore would have put qtest's data into qclean."""
    other = pg_server.create_database()
    db = f"postgresql://apm@/{_name(other)}?dbname={_name(pg_url)}&host={_socket(pg_url)}"
    assert _apm(catalog, "migrate", "--db", db, cwd=tmp_path).returncode == 0
    rolled = _apm(catalog, "--backup-dir", "bk", "migrate", "--db", db, "--rollback", "0002", "--yes", cwd=tmp_path)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert [p.name.split(".")[0] for p in (tmp_path / "bk").glob("*.dump")] == [_name(pg_url)]
    listed = _apm(catalog, "--backup-dir", "bk", "migrate", "backups", "--db", other, "--json", cwd=tmp_path)
    assert json.loads(listed.stdout) == [], listed.stdout  # the path's database has no backup
    listed = _apm(catalog, "--backup-dir", "bk", "migrate", "backups", "--db", pg_url, "--json", cwd=tmp_path)
    assert len(json.loads(listed.stdout)) == 1, listed.stdout


def test_a_service_files_database_names_the_backup_and_drift_reaches_it(pg_url: str, tmp_path: Path,
                                                                         catalog: Path) -> None:
    """A neighbour of P3: ``service=`` takes the database from a service file; its dump was named after the user
    (``postgres.<ts>.dump``), as if another database's."""
    (tmp_path / "services.conf").write_text(f"[apmsvc]\nhost={_socket(pg_url)}\nuser=apm\ndbname={_name(pg_url)}\n")
    env = {"PGSERVICEFILE": str(tmp_path / "services.conf")}
    assert run_apm("--migrations-dir", str(catalog), "migrate", "--db", "service=apmsvc", cwd=tmp_path,
                   env=env).returncode == 0
    _sql(pg_url, "ALTER TABLE counter ADD COLUMN hand text")
    drift = run_apm("--migrations-dir", str(catalog), "migrate", "drift", "--db", "service=apmsvc", cwd=tmp_path,
                    env=env)
    assert drift.returncode == 10 and "column hand is in the database" in drift.stdout, drift.stdout + drift.stderr
    rolled = run_apm("--migrations-dir", str(catalog), "--backup-dir", "bk", "migrate", "--db", "service=apmsvc",
                     "--rollback", "0002", "--yes", cwd=tmp_path, env=env)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert [p.name.split(".")[0] for p in (tmp_path / "bk").glob("*.dump")] == [_name(pg_url)]


def test_a_dump_whose_name_would_name_another_database_is_refused(pg_server, pg_url: str, tmp_path: Path) -> None:
    """A service file (or anything the string does not show) may pick the database: the dump's name is checked
    against ``current_database()`` before anything is written."""
    from planner.engines.postgresql import PostgresEngine
    from planner.engines.postgresql.backup import dump
    from planner.errors import BackupFailed

    live = PostgresEngine(pg_url)
    with pytest.raises(BackupFailed, match="named elsewhere.*connection reaches database"):
        dump("postgresql://apm@/elsewhere?host=/nonexistent", tmp_path / "bk", connect=live.connect)
    assert not (tmp_path / "bk").exists()


def test_a_tenant_not_made_yet_is_behind_never_drifted(pg_url: str, tmp_path: Path, catalog: Path) -> None:
    """P4: a new tenant (or a typo) was "drifted" with the public schema's tables."""
    assert _apm(catalog, "migrate", "--db", f"{pg_url}#tenant_a", cwd=tmp_path).returncode == 0
    _sql(pg_url, "CREATE TABLE public.stray (id integer)")
    (tmp_path / "t.txt").write_text(f"{pg_url}#tenant_a\n{pg_url}#tenant_c\n")
    fleet = _apm(catalog, "fleet", "status", "--drift", "--list", "t.txt", "--json", cwd=tmp_path)
    rows = {row["db"].rsplit("#", 1)[1]: row for row in json.loads(fleet.stdout)["databases"]}
    assert rows["tenant_c"]["differences"] == [] and rows["tenant_c"]["pending"] == 2, rows["tenant_c"]
    assert rows["tenant_a"]["differences"] == [], rows["tenant_a"]
    for tenant in ("no_such_tenant", "Tenant-A"):
        alone = _apm(catalog, "migrate", "drift", "--db", f"{pg_url}#{tenant}", cwd=tmp_path)
        assert alone.returncode == 0, alone.stdout + alone.stderr
        assert "stray" not in alone.stdout and "nothing is applied yet, so there is nothing to compare" in alone.stdout
    # No schema was made by looking.
    assert _sql(pg_url, "SELECT count(*) FROM pg_namespace WHERE nspname IN ('tenant_c', 'no_such_tenant', "
                        "'Tenant-A', 'tenant-a')") == [(0,)]


@pytest.mark.parametrize("tenant", ["MixedCase", "Tenant-A", "x;drop"])
def test_a_tenant_name_of_any_case_is_migrated_in_its_own_schema(pg_url: str, tmp_path: Path, catalog: Path,
                                                                 tenant: str) -> None:
    """M9: ``#MixedCase`` failed (``no schema has been selected to create in``) and left its ledger behind: the
    ledger quoted the name, the search_path did not, so the server looked for ``mixedcase``."""
    single = _apm(catalog, "migrate", "--db", f"{pg_url}#{tenant}", "--to", "0001", cwd=tmp_path)
    assert single.returncode == 0, single.stdout + single.stderr
    (tmp_path / "f.txt").write_text(f"{pg_url}#{tenant}\n")
    fleet = _apm(catalog, "fleet", "migrate", "--list", "f.txt", "--json", cwd=tmp_path)
    assert fleet.returncode == 0, fleet.stdout + fleet.stderr
    tables = _sql(pg_url, "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                          " WHERE c.relname = 'counter'")
    assert tables == [(tenant, "counter")]
    assert _sql(pg_url, f'SELECT version FROM "{tenant}".schema_migrations ORDER BY 1') == [("0001",), ("0002",)]
    drift = _apm(catalog, "migrate", "drift", "--db", f"{pg_url}#{tenant}", cwd=tmp_path)
    assert drift.returncode == 0 and drift.stdout.startswith(f"{pg_url}#{tenant}:"), drift.stdout + drift.stderr


def test_a_killed_drift_leaves_a_scratch_database_the_next_drift_drops(pg_server, pg_url: str, tmp_path: Path,
                                                                        catalog: Path) -> None:
    """P5: SIGKILL during the replay skipped its ``finally``: ``apm_drift_<pid>_<hex>`` stayed on the server for
    good. The next drift on this host drops those whose process is gone; a live process's, another host's and
    an older release's (no host in the name) are left alone."""
    from planner.engines.postgresql.drift import _HOST

    assert _apm(catalog, "migrate", "--db", pg_url, cwd=tmp_path).returncode == 0
    before = set(_scratch(pg_server))
    (tmp_path / "slow").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    apm = Path(sys.executable).parent / "apm"
    killed = subprocess.Popen([str(apm), "--migrations-dir", str(catalog), "migrate", "drift", "--db", pg_url],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not [n for n in _scratch(pg_server) if f"_{killed.pid}_" in n] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # into 0002's pg_sleep
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    leaked = [n for n in _scratch(pg_server) if f"_{killed.pid}_" in n]
    assert leaked and leaked[0].startswith(f"apm_drift_{_HOST}_"), _scratch(pg_server)
    (tmp_path / "slow").unlink()
    others = [f"apm_drift_{'0' * 8 if _HOST != '0' * 8 else '1' * 8}_{killed.pid}_0badc0de",  # another host's
              f"apm_drift_{_HOST}_{os.getpid()}_0badc0de",  # a live process's (this test's)
              f"apm_drift_{killed.pid}_0badc0de"]  # an older release's: its host is not known
    for name in others:
        _sql(pg_server.url("postgres"), f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        again = _apm(catalog, "migrate", "drift", "--db", pg_url, cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert set(_scratch(pg_server)) - before == set(others)
    finally:
        for name in others:
            _sql(pg_server.url("postgres"), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_replays_are_not_shared_by_servers_behind_two_sockets(pg_server, pg_url: str, tmp_path: Path,
                                                               catalog: Path) -> None:
    """N4: the replay cache was keyed by ``user@host`` of the URL, ``apm@`` for every Unix socket: two local
    servers (PG 14 on one socket, 16 on another) shared one replay. Here one server is reached through its socket
    folder and through a link to it: two server identities, two replays."""
    from planner import load_catalog
    from planner.fleet.members import member
    from planner.fleet.status import DriftChecker

    second = pg_server.create_database()
    link = tmp_path / "sock-link"
    link.symlink_to(_socket(pg_url))
    other = f"postgresql://apm@/{_name(second)}?host={link}"
    for db in (pg_url, other):
        assert _apm(catalog, "migrate", "--db", db, cwd=tmp_path).returncode == 0
    checker = DriftChecker(load_catalog(catalog))
    for db in (pg_url, other, pg_url):
        found = member(db)
        assert checker.of(found, found.engine(busy_timeout=30).applied()) == []
    assert len(checker.replays) == 2
