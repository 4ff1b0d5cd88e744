"""``apm migrate doctor`` on PostgreSQL reports the drift scratch databases left on the server (issue 24).

A drift killed outright leaves its ``apm_drift_...`` database behind. The
next drift on the same machine drops it, but one of another machine, of an
older release (no machine in the name) or made by hand stayed on the server
for good, and doctor said nothing: the user had no way to learn it was there.
Now each is one finding: whose it is, whether a session is connected to it
(then it may be in use and no drop is advised), and the statement that drops
it. Doctor stays read-only: every database made here is still there after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from planner.engines.postgresql.drift import _HOST
from tests.conftest import run_apm, write_migration

pytestmark = pytest.mark.postgres

SECRET = "Sekr1tPw42"
#: A hash that is not this machine's, as another host's drift would name its scratch database.
OTHER_HOST = "0" * 8 if _HOST != "0" * 8 else "1" * 8
#: The random part of each name made here: this test process's own, so no other test's names are touched.
TAG = f"{os.getpid():08x}"[-8:]


def _dead_pid() -> int:
    """The id of a process that has ended (as a drift killed with SIGKILL has)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _databases(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, "
                                               "'apm_drift_')").fetchall()}


@contextmanager
def _scratch(pg_server, *names: str):
    """Databases made under scratch names, dropped afterwards whatever the test did."""
    admin = pg_server.url("postgres")
    try:
        for name in names:
            pg_server.admin(f"CREATE DATABASE {_quoted(name)} TEMPLATE template0")
        yield admin
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names:
                conn.execute(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _doctor(url: str, catalog: Path, cwd: Path) -> tuple[int, dict[str, dict], str]:
    """Exit code, the scratch findings of the databases made here by name, and the text output (both forms run)."""
    shown = run_apm("--migrations-dir", str(catalog), "migrate", "doctor", "--db", url, "--json", cwd=cwd)
    report = json.loads(shown.stdout)
    found: dict[str, dict] = {}
    for finding in report["findings"]:
        if finding["code"] == "drift-scratch-database" and TAG in finding["message"]:
            name = finding["message"].split(" (owner ", 1)[0].removeprefix("database ")
            assert name.startswith('"') and name.endswith('"') and name not in found, finding
            found[name[1:-1].replace('""', '"')] = finding
    text = run_apm("--migrations-dir", str(catalog), "migrate", "doctor", "--db", url, cwd=cwd)
    assert text.returncode == shown.returncode == report["exit_code"], text.stdout + text.stderr
    return shown.returncode, found, text.stdout + text.stderr


def _sessions_gone(admin: str, *names: str) -> None:
    """Wait until the server has ended the sessions closed on ``names`` (a backend exits after its client)."""
    with psycopg.connect(admin, autocommit=True) as conn:
        for _ in range(200):
            if not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)",
                                (list(names),)).fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError(f"sessions still connected to {names}")


def test_doctor_reports_each_scratch_database_left_and_drops_none(pg_server, pg_url: str, tmp_path: Path,
                                                                   catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", "Table", upgrade="conn.execute('CREATE TABLE t (id integer)')")
    assert run_apm("--migrations-dir", str(catalog_dir), "migrate", "--db", pg_url, cwd=tmp_path).returncode == 0
    dead = _dead_pid()
    gone = f"apm_drift_{_HOST}_{dead}_{TAG}"  # this machine's, its process killed
    other = f"apm_drift_{OTHER_HOST}_{dead}_{TAG}"  # another machine's
    older = f"apm_drift_{dead}_{TAG}"  # an older release's: no machine in the name
    by_hand = f'apm_drift_copy "{TAG}"'  # the prefix, in no form apm makes (and a quote to double)
    live = f"apm_drift_{_HOST}_{os.getpid()}_{TAG}"  # this machine's drift still running: not reported
    made = {gone, other, older, by_hand, live}
    with _scratch(pg_server, *made) as admin:
        before = _databases(admin)
        assert made <= before
        # Through a URL with a password: the output names the database by its display form only.
        name, socket = pg_url.split("@/", 1)[1].split("?host=", 1)
        secret_url = f"postgresql://apm:{SECRET}@/{name}?host={socket}"
        code, found, text = _doctor(secret_url, catalog_dir, tmp_path)

        assert code == 0, text  # advice, as a leftover rehearsal copy is: the database itself is healthy
        assert ": healthy (" in text and SECRET not in text, text
        assert set(found) == {gone, other, older, by_hand}, found
        for scratch, finding in found.items():
            assert finding["severity"] == "warning" and finding["scope"] == "database", finding
            statement = f"DROP DATABASE {_quoted(scratch)} WITH (FORCE)"
            assert finding["fix"] == statement, finding
            assert f"fix: {statement}" in text, text
            assert "no session is connected to it" in finding["message"], finding
        assert (f'database "{gone}" (owner "apm") is a scratch database made by a drift check on this machine'
                in found[gone]["message"]), found[gone]
        assert f"whose process ({dead}) is gone, killed before it could drop it" in found[gone]["message"], found[gone]
        assert ('the next drift check from this machine against this server as role "apm" (its owner) or a '
                'superuser drops it') in found[gone]["message"], found[gone]
        assert f"a drift check on another machine (process {dead} there) and not dropped" in found[other]["message"], found[other]
        assert f"a drift check of an older apm (process {dead}, on a machine" in found[older]["message"], found[older]
        assert "not in the form apm gives one" in found[by_hand]["message"], found[by_hand]
        assert "make sure nothing in it is kept on purpose" in found[by_hand]["message"], found[by_hand]
        assert 'database "apm_drift_copy ""' in found[by_hand]["message"], found[by_hand]
        assert _databases(admin) == before  # read-only: nothing was dropped

        # What the finding says of this machine's: the next drift here drops it, and only it.
        drift = run_apm("--migrations-dir", str(catalog_dir), "migrate", "drift", "--db", pg_url, cwd=tmp_path)
        assert drift.returncode == 0, drift.stdout + drift.stderr
        assert _databases(admin) == before - {gone}
        code, found, text = _doctor(pg_url, catalog_dir, tmp_path)
        assert code == 0 and set(found) == {other, older, by_hand}, text


def test_a_scratch_database_with_a_session_reads_as_in_use_and_no_drop_is_advised(
        pg_server, pg_url: str, tmp_path: Path, catalog_dir: Path) -> None:
    dead = _dead_pid()
    other = f"apm_drift_{OTHER_HOST}_{dead}_{TAG}"
    gone = f"apm_drift_{_HOST}_{dead}_{TAG}"
    with _scratch(pg_server, other, gone) as admin:
        held = [psycopg.connect(pg_server.url(name), application_name="replay elsewhere") for name in (other, gone)]
        try:
            code, found, text = _doctor(pg_url, catalog_dir, tmp_path)
        finally:
            for conn in held:
                conn.close()
        assert code == 0, text
        assert set(found) == {other, gone}, found
        for finding in found.values():
            assert finding["severity"] == "info" and finding["fix"] is None, finding
            message = finding["message"]
            assert '1 session(s) are connected to it now (application "replay elsewhere")' in message, message
            assert "so it may be in use: leave it" in message and "DROP" not in message, message
        assert "DROP DATABASE" not in text, text
        assert {other, gone} <= _databases(admin)

        _sessions_gone(admin, other, gone)
        # Once the session is gone, the same database is advice with its statement.
        code, found, text = _doctor(pg_url, catalog_dir, tmp_path)
        assert found[other]["severity"] == "warning", found
        assert found[other]["fix"] == f'DROP DATABASE "{other}" WITH (FORCE)', found
