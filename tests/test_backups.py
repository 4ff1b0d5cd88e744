"""Backups and restore (issue 14, point 7): the seed's manual "restore from backup" as one command."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import running as running_cli
from cli.main import apm
from planner.engines.sqlite import backup as backups
from planner.engines.sqlite.backup import (
    backup,
    check_backup,
    list_backups,
    prune_backups,
    restore,
)
from planner.backups import ledger_difference
from planner.errors import DatabaseLocked, NoBackups, UnusableBackup
from planner.engines.sqlite.runner import Executor
from planner.engines.sqlite.ledger import read_ledger
from planner.ledger import LedgerEntry
from planner.loader import load_catalog
from planner.plan import apply_plan, rollback_plan
from tests.conftest import run_apm

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "migrations"


@pytest.fixture
def apm_db(tmp_path: Path) -> Path:
    """APM's catalog fully applied."""
    db = tmp_path / "aipm.db"
    Executor(db, create=True).run(apply_plan(load_catalog(SHIPPED), []))
    return db


def roll_back_0027(db: Path) -> None:
    catalog = load_catalog(SHIPPED)
    Executor(db, catalog=catalog).run(rollback_plan(catalog, read_ledger(db), "0027", cascade=True))


def invoke(db: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(apm, ["--db", str(db), "migrate", *args], input=input)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class Clock:
    """datetime.now() that moves one second per call, so every backup gets its own stamp."""

    moment = datetime(2026, 1, 2, 3, 4, 5)

    @classmethod
    def now(cls):
        cls.moment = cls.moment.replace(second=(cls.moment.second + 1) % 60)
        return cls.moment

    strptime = staticmethod(datetime.strptime)


# -- the library ------------------------------------------------------------------------------


def test_ledger_difference_names_what_a_restore_undoes_and_brings_back() -> None:
    entry = lambda v: LedgerEntry(v, f"m{v}", None)  # noqa: E731
    now = {v: entry(v) for v in ("0001", "0020", "0031")}
    then = {v: entry(v) for v in ("1", "0020", "0027", "0029")}  # "1" is 0001 spelled by an old ledger
    difference = ledger_difference(now, then)
    assert difference.unapplied == ("0031",) and difference.reapplied == ("0027", "0029")
    assert not ledger_difference(now, now)


def test_prune_keeps_the_newest_and_touches_only_this_databases_backups(apm_db: Path, monkeypatch) -> None:
    monkeypatch.setattr(backups, "datetime", Clock)
    made = [backup(apm_db) for _ in range(4)]
    strangers = [apm_db.with_name("other.db.backup.20200101_000000"), apm_db.with_name("aipm.db.notes")]
    for stranger in strangers:
        stranger.write_text("not ours")
    assert prune_backups(apm_db, 2) == made[:2]
    assert list_backups(apm_db) == made[2:]
    assert all(s.exists() for s in strangers) and apm_db.exists()
    with pytest.raises(ValueError):
        prune_backups(apm_db, 0)


def test_an_abandoned_partial_copy_is_removed_and_never_listed(apm_db: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    partial = apm_db.with_name(f"aipm.db.backup-partial.{dead.pid}")
    partial.write_bytes(b"half a copy")
    assert list_backups(apm_db) == []
    written = backup(apm_db)
    assert not partial.exists() and files(apm_db.parent) == ["aipm.db", written.name]


def test_restore_checks_keeps_a_safety_copy_and_restores(apm_db: Path) -> None:
    taken = backup(apm_db)
    roll_back_0027(apm_db)
    result = restore(apm_db, taken)
    assert set(read_ledger(apm_db)) == {"0001", "0020", "0027", "0029", "0030"}
    assert result.difference.reapplied == ("0027", "0029") and result.difference.unapplied == ()
    assert result.safety_backup is not None and set(read_ledger(result.safety_backup)) == {"0001", "0020", "0030"}
    conn = sqlite3.connect(apm_db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT COUNT(*) FROM agents WHERE metadata IS NOT NULL").fetchone()[0] == 5
    conn.close()


def test_corrupt_or_foreign_backups_are_refused_with_nothing_changed(apm_db: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not sqlite " * 100)
    corrupt = tmp_path / "corrupt.db"
    conn = sqlite3.connect(corrupt)
    conn.execute("CREATE TABLE t (body TEXT)")
    conn.execute("CREATE INDEX i ON t(body)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 60,) for _ in range(2000)])
    conn.commit()
    root, size = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'i'").fetchone()[0], 4096
    conn.close()
    with open(corrupt, "r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\x00" + b"\xff" * 40)
    before, listing = apm_db.read_bytes(), files(tmp_path)
    for bad, words in ((text, "not a SQLite database"), (corrupt, "integrity_check"),
                       (tmp_path / "missing.db", "no such file"), (apm_db, "the database itself")):
        with pytest.raises(UnusableBackup, match=words):
            restore(apm_db, bad)
    assert apm_db.read_bytes() == before and files(tmp_path) == listing
    with pytest.raises(NoBackups):
        backups.newest_backup(apm_db)


def test_a_locked_database_is_left_alone_after_the_busy_timeout(apm_db: Path) -> None:
    taken = backup(apm_db)
    roll_back_0027(apm_db)
    before = apm_db.read_bytes()
    holder = sqlite3.connect(apm_db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseLocked):
            restore(apm_db, taken, busy_timeout=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert apm_db.read_bytes() == before and list_backups(apm_db) == [taken]


RESTORE_WORKER = """
import sys
from planner.engines.sqlite.backup import restore
print("ready", flush=True)
restore(sys.argv[1], sys.argv[2])
print("done", flush=True)
"""


def test_sigkill_during_a_restore_leaves_the_old_or_the_restored_database(tmp_path: Path) -> None:
    """Kill restores at several points; each database opens as one whole state, with no stray file of ours."""
    def make(path: Path, marker: str) -> None:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE state (marker TEXT)")
        conn.execute("CREATE TABLE filler (body BLOB)")
        conn.execute("INSERT INTO state VALUES (?)", (marker,))
        conn.executemany("INSERT INTO filler VALUES (randomblob(4000))", [()] * 1500)  # ~6 MB to copy
        conn.commit()
        conn.close()

    seen = set()
    for delay in (0.0, 0.005, 0.02, 0.05, 0.1, 0.2):
        folder = tmp_path / f"kill-{delay}"
        folder.mkdir()
        db, source = folder / "app.db", folder / "app.db.backup.20260101_000000"
        make(db, "old")
        make(source, "new")
        worker = subprocess.Popen([sys.executable, "-c", RESTORE_WORKER, str(db), str(source)], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)
        assert worker.stdout.readline().strip() == "ready"
        time.sleep(delay)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker.stdout.close()
        conn = sqlite3.connect(db)  # the first open rolls back an interrupted copy from its journal
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (marker,) = conn.execute("SELECT marker FROM state").fetchone()
        assert conn.execute("SELECT COUNT(*) FROM filler").fetchone() == (1500,)
        # A kill before SQLite synced its journal's header leaves a cold journal (zero magic): SQLite's own
        # file, which the next transaction that really writes a page removes. (``SET marker = marker`` writes
        # nothing, so it would not: measured, the journal stayed.)
        conn.execute("INSERT INTO state VALUES ('probe')")
        conn.execute("DELETE FROM state WHERE marker = 'probe'")
        conn.commit()
        conn.close()
        assert marker in ("old", "new")
        seen.add(marker)
        backup(db)  # the next backup clears a partial copy a kill left behind
        assert not [n for n in files(folder) if "partial" in n or n.endswith("-journal")], files(folder)
    assert seen  # both outcomes are allowed; what matters is that each run ended in one of them


# -- the commands -----------------------------------------------------------------------------


def test_restore_command_asks_refuses_and_restores(apm_db: Path, monkeypatch) -> None:
    taken = backup(apm_db)
    roll_back_0027(apm_db)
    before = apm_db.read_bytes()
    refused = invoke(apm_db, "restore")  # no terminal, no --yes
    assert refused.exit_code == 7 and "nothing was changed. Re-run with --yes" in refused.output
    assert "brings back 0027 Add metadata" in refused.output
    monkeypatch.setattr(running_cli, "stdin_is_terminal", lambda: True)
    declined = invoke(apm_db, "restore", input="n\n")
    assert declined.exit_code == 7 and apm_db.read_bytes() == before
    assert list_backups(apm_db) == [taken]
    accepted = invoke(apm_db, "restore", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert f"Restored {apm_db} from {taken}" in accepted.output and "Kept the database as it was in" in accepted.output
    assert "0027" in read_ledger(apm_db)


def test_restore_command_refusals_exit_codes(apm_db: Path, tmp_path: Path) -> None:
    before = apm_db.read_bytes()
    empty = invoke(apm_db, "restore", "")
    assert empty.exit_code == 2 and "BACKUP is empty" in empty.output
    none = invoke(apm_db, "restore", "--yes")
    assert none.exit_code == 6 and "no backup of" in none.output
    junk = tmp_path / "junk.db"
    junk.write_text("hello")
    refused = invoke(apm_db, "restore", str(junk), "--yes")
    assert refused.exit_code == 6 and "is not a SQLite database; nothing was changed" in refused.output
    assert "Traceback" not in refused.output and apm_db.read_bytes() == before
    assert files(tmp_path) == ["aipm.db", "junk.db"]


def test_restore_a_foreign_sqlite_file_says_whose_it_is_and_prunes(apm_db: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.db"
    sqlite3.connect(other).close()
    result = invoke(apm_db, "--keep-backups", "1", "restore", str(other), "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["backup"] == str(other) and report["pruned"] == []
    assert report["unapplied"] == ["0001", "0020", "0027", "0029", "0030"] and report["reapplied"] == []
    assert Path(report["safety_backup"]).exists() and read_ledger(apm_db) == {}
    text = invoke(apm_db, "restore", str(other))
    assert "not named as a backup of aipm.db" in text.output and text.exit_code == 7


def test_keep_backups_prunes_after_a_rollback_and_rejects_zero(apm_db: Path, monkeypatch) -> None:
    monkeypatch.setattr(backups, "datetime", Clock)
    old = [backup(apm_db) for _ in range(3)]
    result = invoke(apm_db, "--rollback", "0030", "--yes", "--keep-backups", "2")
    assert result.exit_code == 0, result.output
    kept = list_backups(apm_db)
    assert len(kept) == 2 and kept[0] == old[-1] and not old[0].exists()
    assert f"Removed old backup {old[0]} (--keep-backups 2)" in result.output  # said, as restore says it
    for bad in ("0", "-1"):
        assert invoke(apm_db, "--keep-backups", bad, "backups").exit_code == 2
    env = CliRunner().invoke(apm, ["--db", str(apm_db), "migrate", "backups"], env={"APM_KEEP_BACKUPS": "0"})
    assert env.exit_code == 2


def test_backups_command_lists_newest_first_with_head_and_count(apm_db: Path, monkeypatch) -> None:
    monkeypatch.setattr(backups, "datetime", Clock)
    full = backup(apm_db)
    roll_back_0027(apm_db)
    partial = backup(apm_db)
    apm_db.with_name(f"{apm_db.name}.backup.20200101_000000").write_text("garbage")
    listed = json.loads(invoke(apm_db, "backups", "--json").output)
    assert [row["name"] for row in listed] == [partial.name, full.name, "aipm.db.backup.20200101_000000"]
    assert [(row["head"], row["applied"]) for row in listed] == [("0030", 3), ("0030", 5), (None, None)]
    assert listed[2]["problem"] == "it is not a SQLite database" and listed[0]["size_bytes"] > 0
    table = invoke(apm_db, "backups").output.splitlines()
    assert table[0].split() == ["backup", "taken", "size", "ledger", "head", "applied"]
    assert table[2].startswith(partial.name) and "unreadable" in table[4]


def test_installed_apm_restores_what_a_rollback_removed(tmp_path: Path) -> None:
    db = tmp_path / "aipm.db"
    assert run_apm("--db", str(db), "migrate").returncode == 0
    rolled = run_apm("--db", str(db), "migrate", "--rollback", "0027", "--cascade", "--yes")
    assert rolled.returncode == 0 and "Backup written to" in rolled.stdout
    listed = run_apm("--db", str(db), "migrate", "backups")
    assert listed.returncode == 0 and "0030" in listed.stdout
    done = run_apm("--db", str(db), "migrate", "restore", "--yes")
    assert done.returncode == 0, done.stderr
    assert "brings back 0029 Utility agents" in done.stdout and set(read_ledger(db)) >= {"0027", "0029"}
    safety = Path(done.stdout.split("Kept the database as it was in ")[1].split()[0])
    assert set(check_backup(safety, db)) == {"0001", "0020", "0030"}
    # The run log keeps the restore, so the doctor offers no restore of the safety copy (it would undo this one),
    # and still offers one for the backup the rollback took.
    doctor = json.loads(run_apm("--db", str(db), "migrate", "doctor", "--json").stdout)
    fixes = {Path(f["path"]).name: f["fix"] for f in doctor["findings"] if f["code"] == "backup"}
    assert fixes[safety.name] is None, fixes
    assert any(fix and "restore" in fix for name, fix in fixes.items() if name != safety.name), fixes
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT version, action, outcome, detail FROM schema_migrations_log ORDER BY id DESC").fetchone()
    assert row[:3] == ("-", "restore", "ok") and safety.name in row[3]


def test_restore_with_keep_backups_never_deletes_the_backup_it_restored_from(apm_db: Path) -> None:
    """Issue 22 point 20: `restore --keep-backups 1` pruned the backup it had just restored from."""
    base = ["--db", str(apm_db), "--migrations-dir", str(SHIPPED)]
    assert run_apm(*base, "migrate", "--rollback", "0030", "--yes").returncode == 0
    (restored_from,) = list_backups(apm_db)
    for newest in ([], [str(restored_from)]):  # the newest backup by default, and the same file named
        done = run_apm(*base, "--keep-backups", "1", "migrate", "restore", *newest, "--yes", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["backup"] == str(restored_from) and str(restored_from) not in report["pruned"]
        assert restored_from.exists() and "0030" in read_ledger(apm_db)
        assert Path(report["safety_backup"]).exists()  # the state just replaced is kept too
        assert run_apm(*base, "migrate", "--rollback", "0030", "--yes").returncode == 0
    # An older backup that was not restored from is still pruned as asked.
    assert len(list_backups(apm_db)) > 1
    done = run_apm(*base, "--keep-backups", "1", "migrate", "restore", str(restored_from), "--yes", "--json")
    report = json.loads(done.stdout)
    assert report["pruned"] and restored_from.exists() and not any(Path(p).exists() for p in report["pruned"])
