"""Migrations that run outside a transaction (``transactional = False``), through the installed ``apm``.

``VACUUM`` is the test case because SQLite refuses it inside a transaction:
the same migration without the flag fails, which is what the flag is for.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import write_migration
from tests.test_command_edge_cases import APM, apm, base, ledger

pytestmark = pytest.mark.skipif(not APM.exists(), reason="the apm console script is not installed (pip install -e .)")

ROOT = dict(upgrade="conn.execute('CREATE TABLE a (id INTEGER PRIMARY KEY)')", downgrade="conn.execute('DROP TABLE a')")


def log_rows(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT version, action, outcome FROM schema_migrations_log ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


def test_vacuum_needs_the_flag_and_applies_with_it(catalog_dir: Path, db: Path):
    write_migration(catalog_dir, "0001", depends_on=(), **ROOT)
    write_migration(catalog_dir, "0002", "Compact", depends_on=("0001",), upgrade="conn.execute('VACUUM')")
    without = apm("migrate", *base(db, catalog_dir))
    assert without.returncode == 5 and "VACUUM" in without.stderr  # SQLite: cannot VACUUM from within a transaction
    assert ledger(db) == []  # found by the rehearsal on a copy: nothing ran for real
    write_migration(catalog_dir, "0002", "Compact", depends_on=("0001",), upgrade="conn.execute('VACUUM')",
                    extra="transactional = False\n")
    (catalog_dir / "migration_0003_again.sql").write_text(
        "-- Migration 0003: Compact again\n-- transactional: false\n-- depends_on: 0002\n"
        "-- upgrade\nVACUUM;\n-- downgrade\nSELECT 1;\n")
    plan = json.loads(apm("migrate", "plan", "--json", *base(db, catalog_dir)).stdout)
    assert [(s["version"], s["transactional"]) for s in plan["steps"]] == [("0001", True), ("0002", False),
                                                                              ("0003", False)]
    table = apm("migrate", "plan", *base(db, catalog_dir)).stdout
    assert "transaction" in table.splitlines()[1] and table.count("no: runs alone") == 2
    # Each statement of such a step is checked as it runs: a VACUUM destroys nothing, so a script needs no --yes.
    applied = apm("migrate", *base(db, catalog_dir))
    assert applied.returncode == 0, applied.stderr
    assert ledger(db) == ["0001", "0002", "0003"]
    assert log_rows(db)[-4:] == [("0002", "apply", "started"), ("0002", "apply", "ok"),
                                 ("0003", "apply", "started"), ("0003", "apply", "ok")]
    back = apm("migrate", "--rollback", "0002", "--cascade", "--yes", *base(db, catalog_dir))
    assert back.returncode == 0, back.stderr
    assert ledger(db) == ["0001"]


def test_atomic_refuses_a_non_transactional_step_before_anything_runs(catalog_dir: Path, db: Path):
    write_migration(catalog_dir, "0001", depends_on=(), **ROOT)
    write_migration(catalog_dir, "0002", depends_on=("0001",), upgrade="conn.execute('VACUUM')",
                    extra="transactional = False\n")
    refused = apm("migrate", "--atomic", *base(db, catalog_dir))
    assert refused.returncode == 4 and "0002" in refused.stderr and "--atomic" in refused.stderr
    assert ledger(db) == []


def test_a_bad_flag_is_a_catalog_error(catalog_dir: Path, db: Path):
    write_migration(catalog_dir, "0001", depends_on=(), **ROOT, extra="transactional = 'no'\n")
    (catalog_dir / "migration_0002.sql").write_text("-- transactional: maybe\n-- upgrade\nVACUUM;\n")
    result = apm("migrate", "plan", *base(db, catalog_dir))
    assert result.returncode == 3
    assert "transactional must be True or False" in result.stderr
    assert "transactional must be true or false, not 'maybe'" in result.stderr


def test_doctor_explains_a_non_transactional_step_that_was_killed_or_failed(catalog_dir: Path, db: Path,
                                                                            tmp_path: Path):
    marker = tmp_path / "vacuumed"
    write_migration(catalog_dir, "0001", depends_on=(), **ROOT)
    write_migration(catalog_dir, "0002", "Compact", depends_on=("0001",), extra="transactional = False\n",
                    upgrade=f"conn.execute('VACUUM')\nimport pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
                            f"time.sleep(60)")
    write_migration(catalog_dir, "0003", "Half done", depends_on=("0001",), extra="transactional = False\n",
                    upgrade="conn.execute('CREATE TABLE half (id INTEGER)')\nraise RuntimeError('second statement')")
    assert apm("migrate", "--target", "0001", *base(db, catalog_dir)).returncode == 0
    # --yes: no rehearsal on a copy first, so the kill lands in the real run.
    process = subprocess.Popen([str(APM), "migrate", "--target", "0002", "--yes", *base(db, catalog_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):  # wait (up to a minute) for the migration to reach its sleep
        if marker.exists() or process.poll() is not None:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists()
    assert ledger(db) == ["0001"]  # VACUUM ran, the row was never written
    failed = apm("migrate", "--target", "0003", "--yes", *base(db, catalog_dir))  # --yes: no rehearsal first
    assert failed.returncode == 5 and "may have taken effect" in failed.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'half'").fetchone()  # autocommit: it stayed
    conn.close()
    doctor = apm("migrate", "doctor", "--json", *base(db, catalog_dir))
    assert doctor.returncode == 6
    findings = [f for f in json.loads(doctor.stdout)["findings"] if f["code"] == "interrupted-non-transactional"]
    assert [f["version"] for f in findings] == ["0002", "0003"]
    assert "was interrupted" in findings[0]["message"] and "second statement" in findings[1]["message"]
    # The fix names the database and catalog given here, so pasting it acts on them.
    assert findings[0]["fix"].startswith(f"apm --db {db} --migrations-dir {catalog_dir} migrate --mark-applied 0002")
    # Once it is recorded, the finding goes.
    assert apm("migrate", "--mark-applied", "0002", *base(db, catalog_dir)).returncode == 0
    later = json.loads(apm("migrate", "doctor", "--json", *base(db, catalog_dir)).stdout)["findings"]
    assert [f["version"] for f in later if f["code"] == "interrupted-non-transactional"] == ["0003"]


# A plan in parts: the steps around a transactional = False one are previewed and confirmed as usual ------


def _parts_catalog(catalog_dir: Path, third: str = "conn.execute('DROP TABLE a')") -> None:
    write_migration(catalog_dir, "0001", "Rows", depends_on=(),
                    upgrade="conn.execute('CREATE TABLE a (id INTEGER PRIMARY KEY)')\n"
                            "conn.execute('INSERT INTO a VALUES (1), (2), (3)')")
    write_migration(catalog_dir, "0002", "Compact", depends_on=("0001",), upgrade="conn.execute('VACUUM')",
                    extra="transactional = False\n")
    write_migration(catalog_dir, "0003", "Drop", depends_on=("0002",), upgrade=third)


def test_a_plan_in_parts_shows_what_its_previewed_parts_destroy(catalog_dir: Path, db: Path, tmp_path: Path):
    _parts_catalog(catalog_dir)
    # Without --yes: the parts before the loss commit (0002's VACUUM destroys nothing), 0003's loss is refused.
    other = tmp_path / "other.db"
    refused = apm("migrate", *base(other, catalog_dir))
    assert refused.returncode == 7 and "this plan destroys data (0003 apply: drops table a holding 3 rows); " \
        "applied before it: 0001, 0002; nothing else was changed" in refused.stderr
    assert ledger(other) == ["0001", "0002"]
    done = apm("migrate", "--yes", "--json", *base(db, catalog_dir))
    assert done.returncode == 0, done.stderr
    assert ledger(db) == ["0001", "0002", "0003"]
    assert "This run destroyed data, as confirmed:" in done.stderr
    assert "0003 apply: drops table a holding 3 rows" in done.stderr
    report = json.loads(done.stdout)
    assert [r["version"] for r in report["results"]] == ["0001", "0002", "0003"]
    # One preview per part that could be previewed: 0001, then 0003 (0002 ran alone, unchecked).
    assert [[s["version"] for s in p["steps"]] for p in report["previews"]] == [["0001"], ["0003"]]
    assert report["previews"][1]["loses_data"] is True and report["previews"][0]["loses_data"] is False


def test_a_later_part_not_confirmed_or_failing_is_rolled_back_and_named(catalog_dir: Path, db: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    from click.testing import CliRunner

    import cli.running
    from cli.main import apm as apm_command

    _parts_catalog(catalog_dir)
    monkeypatch.setattr(cli.running, "stdin_is_terminal", lambda: True)
    # A person: asked nothing about the VACUUM outside any transaction, no to what the last part destroys.
    declined = CliRunner().invoke(apm_command, [*base(db, catalog_dir), "migrate"], input="n\n")
    assert declined.exit_code == 7, declined.output
    assert declined.output.count("Proceed?") == 1
    assert "not confirmed; applied before it: 0001, 0002; nothing else was changed" in declined.output
    assert ledger(db) == ["0001", "0002"]
    assert sqlite3.connect(db).execute("SELECT count(*) FROM a").fetchone() == (3,)
    # A failing part: exit 5, rolled back, the committed parts named.
    _parts_catalog(catalog_dir, third="conn.execute('DROP TABLE a')\nraise RuntimeError('boom')")
    db.unlink()
    failed = apm("migrate", "--yes", *base(db, catalog_dir))
    assert failed.returncode == 5
    assert ("migration 0003 failed during apply: RuntimeError: boom; this part was rolled back (applied before it: "
            "0001, 0002)") in failed.stderr and "whole plan" not in failed.stderr
    assert ledger(db) == ["0001", "0002"]
    assert sqlite3.connect(db).execute("SELECT count(*) FROM a").fetchone() == (3,)


def test_a_dry_run_rehearses_a_step_outside_any_transaction_and_goes_on(catalog_dir: Path, db: Path):
    _parts_catalog(catalog_dir)  # 0003 depends on 0002, which runs outside any transaction
    dry = apm("migrate", "--dry-run", "--json", *base(db, catalog_dir))
    assert dry.returncode == 7, dry.stderr  # 0003's loss: the preview went past the VACUUM
    steps = {s["version"]: s for s in json.loads(dry.stdout)["steps"]}
    assert steps["0001"]["skipped"] is None and steps["0001"]["error"] is None
    assert steps["0002"]["skipped"] is None and steps["0002"]["passed_over"] == ["VACUUM"]
    assert steps["0003"]["skipped"] is None and steps["0003"]["loses_data"] is True
    assert "another process" not in dry.stdout + dry.stderr and ledger(db) == []
    assert apm("migrate", "--yes", *base(db, catalog_dir)).returncode == 0
    back = apm("migrate", "--rollback", "0001", "--cascade", "--dry-run", "--json", *base(db, catalog_dir))
    assert back.returncode == 0, back.stderr  # every step rehearsed, 0002's too: nothing left unchecked
    assert [(s["version"], s["skipped"]) for s in json.loads(back.stdout)["steps"]] == [
        ("0003", None), ("0002", None), ("0001", None)]
    assert ledger(db) == ["0001", "0002", "0003"]


def test_a_step_another_live_process_runs_is_waited_for_then_refused_and_a_dead_ones_is_not(catalog_dir: Path,
                                                                                           db: Path):
    import os
    import socket

    _parts_catalog(catalog_dir)
    assert apm("migrate", "--target", "0001", *base(db, catalog_dir)).returncode == 0

    def started_by(pid: int) -> None:
        conn = sqlite3.connect(db)
        conn.execute("INSERT INTO schema_migrations_log (version, action, at, outcome, detail) VALUES ('0002', "
                     "'apply', CURRENT_TIMESTAMP, 'started', ?)",
                     (f"transactional = False: runs outside a transaction (pid {pid} on {socket.gethostname()})",))
        conn.commit()
        conn.close()

    started_by(os.getpid())  # this test's process: alive, as a runner still inside the step would be
    held = apm("--busy-timeout", "1", "migrate", "--yes", *base(db, catalog_dir))
    assert held.returncode == 6, held.stderr
    assert f"migration 0002 runs outside a transaction in another process (pid {os.getpid()} on" in held.stderr
    assert ledger(db) == ["0001"]
    ended = subprocess.Popen(["true"])
    ended.wait()
    started_by(ended.pid)  # a runner killed inside the step: its process is gone, it holds nothing
    assert apm("migrate", "--yes", *base(db, catalog_dir)).returncode == 0
    assert ledger(db) == ["0001", "0002", "0003"]
