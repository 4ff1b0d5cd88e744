"""What must hold whatever `apm fleet` does to go faster over many databases (docs/performance.md).

``apm fleet status`` attaches each file in turn to one scratch connection per
thread: a brief lock held by another process is waited out, a file that could
not be read leaves nothing behind for the next one, every file is let go once
read, and threads read as one thread does. In ``apm fleet migrate`` each
worker takes its next database itself: after a failure, none takes another,
and each outcome, long or short, reaches the command whole.
Real SQLite files, real processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from planner.engines.sqlite.quick_read import read_quickly
from planner.errors import DatabaseError, DatabaseLocked, ForeignLedger, NotADatabase
from planner.fleet.members import member
from planner.fleet.status import UP_TO_DATE, fleet_status
from tests.conftest import run_apm
from tests.test_fleet import (  # noqa: F401 (catalog: a fixture)
    PATTERN,
    applied,
    break_unique_index,
    catalog,
    fleet,
    fleet_of,
    load,
    migrate_to,
)


def hold_lock(path: Path, seconds: float, how: str = "EXCLUSIVE") -> subprocess.Popen:
    """Another process holding ``path``'s exclusive lock (even readers wait) for ``seconds``, once it says so;
    ``IMMEDIATE``: its write lock only (readers go on)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sqlite3, sys, time\nc = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
         f"c.execute('BEGIN {how}')\nprint('held', flush=True)\ntime.sleep({seconds})\nc.execute('COMMIT')\n"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_lock_released_within_the_busy_timeout_is_waited_out(tmp_path: Path, catalog: Path) -> None:
    path = tmp_path / "a.db"
    migrate_to(path, catalog)
    holder = hold_lock(path, 0.5)
    try:
        entries, last = read_quickly(str(path), 10.0)  # waits past the first 0.1 s, in slices, until it is free
    finally:
        holder.wait(timeout=30)
    assert sorted(entries) == ["0001", "0002", "0003"] and last is not None and last[0] == "ok"
    holder = hold_lock(path, 5)
    try:
        with pytest.raises(DatabaseLocked):
            read_quickly(str(path), 0.3)
    finally:
        holder.kill()
        holder.wait()


def test_a_file_that_could_not_be_read_leaves_the_next_one_readable_and_every_file_is_let_go(
        tmp_path: Path, catalog: Path) -> None:
    good = tmp_path / "good.db"
    migrate_to(good, catalog)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE schema_migrations (name TEXT, run_on TEXT)")
    text = tmp_path / "notes.txt"
    text.write_text("not a database, only words " * 100)
    failing = [(foreign, ForeignLedger), (text, NotADatabase), (tmp_path / "missing.db", DatabaseError)]
    for path, error in failing:
        with pytest.raises(error):
            read_quickly(str(path), 1.0)
        assert sorted(read_quickly(str(good), 1.0)[0]) == ["0001", "0002", "0003"]
    # Let go: a writer gets the exclusive lock at once (no wait), and the file can be replaced.
    with sqlite3.connect(good, timeout=0, isolation_level=None) as conn:
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("COMMIT")
    assert not (tmp_path / "missing.db").exists()


def test_threads_read_a_fleet_as_one_thread_does(tmp_path: Path, catalog: Path) -> None:
    paths = []
    for n in range(6):
        path = tmp_path / f"p{n}.db"
        migrate_to(path, catalog, target="0001" if n % 2 else None)
        paths.append(path)
    members = [member(str(p), cwd=tmp_path) for p in paths]
    folder = load(catalog)
    alone = fleet_status(members, folder, jobs=1)
    threaded = fleet_status(members, folder, jobs=3)
    assert [s.to_json() for s in threaded.members] == [s.to_json() for s in alone.members]
    assert [s.state for s in alone.members] == [UP_TO_DATE, "behind"] * 3


def test_after_a_failure_no_worker_starts_another_database(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 8)  # 0002 and 0003 pending, each sleeping first
    break_unique_index(paths[0])  # its 0002 fails after the sleep, while p01 runs beside it
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "2", "--json",
                   env={"FLEET_TEST_SLEEP": "0.3"})
    assert result.returncode == 11, result.stdout + result.stderr
    rows = json.loads(result.stdout)["databases"]
    assert rows[0]["outcome"] == "failed"
    # Only the database running beside the failure finished; no worker took another, and each later one says why.
    started = [r for r in rows[1:] if r["outcome"] != "not started"]
    assert len(started) <= 1 and all(r["outcome"] == "applied" for r in started), rows
    assert all("failed, so no further database was started" in r["error"] for r in rows[1:] if r not in started)
    assert sum(applied(p) == ["0001", "0002", "0003"] for p in paths) == len(started)


def test_a_ledger_of_another_tool_with_a_version_column_is_a_foreign_ledger(tmp_path: Path, catalog: Path) -> None:
    """The quick reading refuses what ``apm migrate`` refuses: Rails' lone ``version`` is no ledger of ours (it was
    read as one, its rows as versions ``ahead`` of the catalog)."""
    path = tmp_path / "projects" / "rails" / ".aipm" / "data" / "aipm.db"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_migrations (version VARCHAR NOT NULL PRIMARY KEY)")
        conn.execute("INSERT INTO schema_migrations VALUES ('20240101000000')")
    with pytest.raises(ForeignLedger):
        read_quickly(str(path), 1.0)
    result = fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--json")
    assert result.returncode == 11, result.stderr
    row = json.loads(result.stdout)["databases"][0]
    assert row["state"] == "foreign_ledger" and "another tool (columns: version)" in row["error"]


def test_a_file_gone_from_the_catalog_applied_before_the_rollback_lets_the_fleet_roll_back(
        tmp_path: Path, catalog: Path) -> None:
    """A fleet plans from the quick reading's applied-at times as ``apm migrate`` plans from its ledger entries: a
    migration whose file is gone, applied before everything rolled back, cannot depend on it (it was refused)."""
    [path] = fleet_of(tmp_path, catalog, 1, target=None)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations (version, description, applied_at) "
                     "VALUES ('0009', 'Its file is gone', '2000-01-01 00:00:00')")
    planned = fleet(tmp_path, catalog, "plan", "--glob", PATTERN, "--rollback", "0003", "--json")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    row = json.loads(planned.stdout)["databases"][0]
    assert [(s["version"], s["direction"]) for s in row["steps"]] == [("0003", "rollback")] and not row["refused"]
    done = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--rollback", "0003", "--jobs", "1", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["databases"][0]["outcome"] == "rolled back"
    assert applied(path) == ["0001", "0002", "0009"]


def test_a_member_left_with_a_hot_journal_is_recovered_and_migrated(tmp_path: Path, catalog: Path) -> None:
    """The quick reading cannot roll back a killed writer's journal (it opens the file read-only): the member is
    then read through its engine, which does, and runs as any other."""
    [path] = fleet_of(tmp_path, catalog, 1)
    killed = subprocess.run([sys.executable, "-c", f"import os, sqlite3\nc = sqlite3.connect({str(path)!r}, "
                             "isolation_level=None)\nc.execute('PRAGMA cache_size = 1')\nc.execute('BEGIN IMMEDIATE')\n"
                             "c.execute('CREATE TABLE junk (x)')\nc.executemany('INSERT INTO junk VALUES (?)', "
                             "[(os.urandom(3000),) for _ in range(300)])\nos.kill(os.getpid(), 9)\n"])
    assert killed.returncode == -9 and Path(f"{path}-journal").stat().st_size > 0
    with pytest.raises(DatabaseError):
        read_quickly(str(path), 1.0)
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "1", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["databases"][0]["outcome"] == "applied"
    assert applied(path) == ["0001", "0002", "0003"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'junk'").fetchall() == []


def test_drift_from_the_objects_read_with_each_ledger_finds_what_a_fresh_read_finds(tmp_path: Path,
                                                                                     catalog: Path) -> None:
    """``--drift`` takes each file's schema from the objects read with its ledger (no second open) once its
    tables' SQL is known: an index dropped or a trigger added there is found as by a read of its own."""
    paths = fleet_of(tmp_path, catalog, 4, target=None)
    with sqlite3.connect(paths[1]) as conn:
        conn.execute("DROP INDEX projects_by_name")
    with sqlite3.connect(paths[2]) as conn:
        conn.execute("CREATE TRIGGER stamp AFTER INSERT ON tasks BEGIN SELECT 1; END")
    with sqlite3.connect(paths[3]) as conn:
        conn.execute("ALTER TABLE tasks ADD COLUMN done INTEGER")
    rows = []
    read_quickly(str(paths[2]), 1.0, objects=rows)
    assert ("trigger", "stamp", "tasks") in [row[:3] for row in rows]
    result = fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--drift", "--json")
    assert result.returncode == 10, result.stdout + result.stderr
    found = {Path(r["db"]).parts[1]: [d["detail"] for d in r["differences"]]
             for r in json.loads(result.stdout)["databases"]}
    assert found["p00"] == [] and len(found["p01"]) == len(found["p02"]) == len(found["p03"]) == 1, found
    assert "projects_by_name" in found["p01"][0] and "stamp" in found["p02"][0] and "done" in found["p03"][0]
    for name in ("p01", "p02", "p03"):  # the same lines as `apm migrate drift` of that database alone
        alone = json.loads(fleet_alone(tmp_path, catalog, tmp_path / "projects" / name / ".aipm" / "data" / "aipm.db"))
        assert [d["detail"] for d in alone["differences"]] == found[name]


def fleet_alone(tmp_path: Path, catalog: Path, path: Path) -> str:
    result = run_apm("--migrations-dir", str(catalog), "migrate", "drift", "--db", str(path), "--json", cwd=tmp_path)
    assert result.returncode == 10, result.stdout + result.stderr
    return result.stdout


def test_databases_are_told_as_started_only_as_workers_free_up(tmp_path: Path, catalog: Path, monkeypatch) -> None:
    """The events a library caller (and the progress line) hears: never more than ``jobs`` databases started and
    not ended, though a worker may take its next database before the fleet command reads the previous one's
    outcome; each started one ends once."""
    from planner.fleet.run import FleetRun, MemberStarted
    from planner.request import Request

    monkeypatch.setenv("FLEET_TEST_SLEEP", "0.05")  # inherited by the forked workers: each step takes a while
    paths = fleet_of(tmp_path, catalog, 7)
    events: list = []
    result = FleetRun(load(catalog), Request(), jobs=2, on_event=events.append).run(
        [member(str(p), cwd=tmp_path) for p in paths])
    assert [o.outcome for o in result.outcomes] == ["applied"] * 7
    in_flight: set = set()
    most = 0
    for event in events:
        if isinstance(event, MemberStarted):
            in_flight.add(event.member)
            most = max(most, len(in_flight))
        else:
            in_flight.remove(event.outcome.member)  # only what was told as started ends
    assert most == 2 and not in_flight and len(events) == 14


def test_a_quick_database_between_slow_ones_never_shows_more_running_than_jobs(tmp_path: Path, catalog: Path,
                                                                               monkeypatch) -> None:
    """Tryout 8: a worker that ended a database with nothing to do and took its next before the command read the
    first outcome had both told as running (``--jobs 4`` showed 5). A worker's database is now told only once
    every outcome it sent before is read."""
    from planner.fleet.run import FleetRun, MemberStarted
    from planner.request import Request

    from tests.test_fleet import project_db

    for round in range(3):  # a race: each run a few chances
        paths = [project_db(tmp_path, f"r{round}p{i:02d}") for i in range(24)]
        for i, path in enumerate(paths):
            # Every other one has nothing to do: it ends at once, between the slow ones.
            migrate_to(path, catalog, target="0001" if i % 2 == 0 else None)
        members = [member(str(p), cwd=tmp_path) for p in paths]
        monkeypatch.setenv("FLEET_TEST_SLEEP", "0.03")  # inherited by the forked workers: each step takes a while
        events: list = []
        FleetRun(load(catalog), Request(), jobs=4, on_event=events.append).run(members)
        in_flight: set = set()
        most = 0
        for event in events:
            if isinstance(event, MemberStarted):
                assert event.member not in in_flight
                in_flight.add(event.member)
                most = max(most, len(in_flight))
            else:
                in_flight.remove(event.outcome.member)
        assert most <= 4 and not in_flight and len(events) == 48, most
        monkeypatch.delenv("FLEET_TEST_SLEEP")


def traced_run(tmp_path: Path, catalog: Path, monkeypatch: pytest.MonkeyPatch,
               name: str = "one.db", writer: float = 0) -> tuple[Path, list[str], str]:
    """One database at 0001 brought to 0003 by ``run_member`` (two steps, one preview), every statement traced;
    ``writer``: another process holds the write lock for that many seconds as the run begins."""
    from planner.fleet.run import run_member
    from planner.request import Request

    path = tmp_path / name
    migrate_to(path, catalog, target="0001")
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: statements.append(" ".join(sql.split())))
        return conn

    holder = hold_lock(path, writer, "IMMEDIATE") if writer else None
    monkeypatch.setattr(sqlite3, "connect", traced)
    try:
        outcome = run_member(member(str(path), cwd=tmp_path), Request(), load(catalog))
    finally:
        monkeypatch.undo()  # what the test reads afterwards is not the run's
        if holder is not None:
            holder.wait(timeout=30)
    return path, statements, outcome.outcome


def test_a_preview_reads_the_applied_set_once_under_its_write_lock(tmp_path: Path, catalog: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path, statements, outcome = traced_run(tmp_path, catalog, monkeypatch)
    assert outcome == "applied" and applied(path) == ["0001", "0002", "0003"]
    # No other process writes: the reading ahead takes the write lock, and the preview runs in that very
    # transaction. One BEGIN IMMEDIATE, one COMMIT (the preview's); nothing else can have committed since the
    # ledger was read, so data_version is never asked, and the shape and the rows are read once, under the lock.
    begin = statements.index("BEGIN IMMEDIATE")
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    assert "BEGIN" not in statements and "PRAGMA data_version" not in statements
    assert statements[:begin] == ["PRAGMA temp_store = MEMORY", "PRAGMA foreign_keys"], statements[:begin]
    assert len([s for s in statements if s.startswith("SELECT version")]) == 1
    assert not [s for s in statements if s.startswith("ATTACH")]
    # The ledger's shape is read once, with whether the log exists (ensure_schema's one statement); each step's
    # row is written without reading the columns first (the table has them all).
    shapes = [s for s in statements if s.startswith("SELECT lower(name), sql FROM sqlite_master")]
    assert len(shapes) == 1 and statements.index(shapes[0]) > begin, shapes
    # The columns are read once per text the table was made with, not once per file: a second file whose ledger
    # the same code made reads none (``PRAGMA table_info``, or SQLite's table-valued form of it).
    path, statements, outcome = traced_run(tmp_path, catalog, monkeypatch, "two.db")
    assert outcome == "applied" and applied(path) == ["0001", "0002", "0003"]
    assert not [s for s in statements if "table_info" in s and not s.startswith("--")], statements
    assert len([s for s in statements if s.startswith("SELECT lower(name), sql FROM sqlite_master")]) == 1


def test_a_database_another_process_writes_is_read_ahead_without_waiting_and_read_once(
        tmp_path: Path, catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process holds the write lock as the run begins: the reading ahead does not wait for it (a database
    # with nothing to do would wait for nothing). It reads in one read transaction: the shared lock (and SQLite's
    # look for a hot journal and a WAL file) taken once for data_version, the shape and the rows. The preview then
    # waits for the lock, and the reading is still the ledger while data_version says nobody committed since.
    path, statements, outcome = traced_run(tmp_path, catalog, monkeypatch, writer=0.5)
    assert outcome == "applied" and applied(path) == ["0001", "0002", "0003"]
    read = statements.index("BEGIN")
    assert statements[:read].count("BEGIN IMMEDIATE") == 1  # tried once ahead (one slice), then read without it
    ahead = statements[read:statements.index("COMMIT") + 1]
    assert ahead[1] == "PRAGMA data_version" and [s for s in ahead if s.startswith("SELECT version")], ahead
    locked = statements[statements.index("COMMIT") + 1:]
    assert locked.count("PRAGMA data_version") == 1 and "BEGIN IMMEDIATE" in locked
    assert not [s for s in locked if s.startswith(("SELECT version", "SELECT lower(name), sql"))], locked


def run_read_ahead(path: Path, catalog: Path, meanwhile):
    """A database at 0001, its ledger read ahead as the fleet reads it (planned: 0002 and 0003), ``meanwhile()``
    (another process), then the run of that plan on the same runner: its result."""
    from planner import request as requests
    from planner.engines import engine_for
    from planner.request import Request

    migrate_to(path, catalog, target="0001")
    loaded = load(catalog)
    engine = engine_for(path)
    runner = engine.runner(catalog=loaded)
    # Another writer holds the lock while the ledger is read ahead (else the reading would hold it, and no other
    # process could commit before the preview): it is read without it, and the writer lets go before meanwhile.
    holder = hold_lock(path, 0.3, "IMMEDIATE")
    try:
        ledger = runner.read_ahead()
    finally:
        holder.wait(timeout=30)
    plan = Request().plan(loaded, ledger)
    assert [s.version for s in plan] == ["0002", "0003"]
    meanwhile()
    return requests.run(engine, loaded, Request(), plan, runner=runner, planned_from=ledger)


def test_a_plan_made_from_the_reading_ahead_is_not_made_again_while_nothing_committed(
        tmp_path: Path, catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Inside the lock the runner hands back the very reading the plan was made from (data_version unchanged): the
    # same plan. When another process committed meanwhile, it is planned again (the test below).
    from planner.request import Request

    made: list[dict] = []
    planning = Request.plan
    monkeypatch.setattr(Request, "plan", lambda self, loaded, entries: made.append(entries) or planning(
        self, loaded, entries))
    path = tmp_path / "one.db"
    result = run_read_ahead(path, catalog, lambda: None)
    assert result.committed and result.done == ["0002", "0003"], result.error
    assert len(made) == 1 and sorted(made[0]) == ["0001"]
    made.clear()
    result = run_read_ahead(tmp_path / "two.db", catalog, lambda: migrate_to(tmp_path / "two.db", catalog,
                                                                              target="0002"))
    assert result.committed and result.done == ["0003"], result.error
    assert [sorted(entries) for entries in made] == [["0001"], ["0001", "0002"]]


def test_a_commit_between_the_reading_ahead_and_the_write_lock_is_planned_from(tmp_path: Path,
                                                                                catalog: Path) -> None:
    """``apm migrate`` commits 0002 after the fleet read the ledger ahead and before its preview locks: the
    preview sees data_version move, reads the ledger again, and applies only 0003 (each migration once)."""
    path = tmp_path / "one.db"
    result = run_read_ahead(path, catalog, lambda: migrate_to(path, catalog, target="0002"))
    assert result.committed and result.done == ["0003"], result.error
    assert applied(path) == ["0001", "0002", "0003"]
    conn = sqlite3.connect(path)
    try:
        applies = conn.execute("SELECT version FROM schema_migrations_log WHERE action = 'apply' AND outcome = 'ok' "
                               "ORDER BY id").fetchall()
    finally:
        conn.close()
    assert [v for (v,) in applies] == ["0001", "0002", "0003"]


def test_a_ledger_changed_between_the_reading_ahead_and_the_write_lock_is_made_complete_again(
        tmp_path: Path, catalog: Path) -> None:
    """The reading ahead found both ledger tables complete; another process then dropped the run log. Inside the
    lock data_version has moved, so the tables are looked at again (not taken from the reading ahead): the log
    is made again and holds the run's rows."""
    path = tmp_path / "one.db"

    def drop_the_log() -> None:
        conn = sqlite3.connect(path)
        try:
            conn.execute("DROP TABLE schema_migrations_log")
            conn.commit()
        finally:
            conn.close()

    result = run_read_ahead(path, catalog, drop_the_log)
    assert result.committed and result.done == ["0002", "0003"], result.error
    conn = sqlite3.connect(path)
    try:
        logged = conn.execute("SELECT version FROM schema_migrations_log WHERE outcome = 'ok' ORDER BY id").fetchall()
    finally:
        conn.close()
    assert [v for (v,) in logged] == ["0002", "0003"]


def test_the_connection_waits_in_slices_and_keeps_its_whole_busy_timeout(tmp_path: Path, catalog: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from planner.engines.sqlite.database import connect

    path, statements, _ = traced_run(tmp_path, catalog, monkeypatch)
    begin = statements.index("BEGIN IMMEDIATE")
    opened = statements[:begin + 1]
    # The connection opens waiting one slice at a time, and keeps that through the reading ahead to BEGIN
    # IMMEDIATE; then, once, the whole timeout, for the statements that may wait under the write lock (COMMIT waits
    # for readers to let go).
    assert [s for s in statements if s.startswith("PRAGMA busy_timeout")] == ["PRAGMA busy_timeout = 30000"]
    assert statements[begin + 1] == "PRAGMA busy_timeout = 30000"
    # Its first read is the reading ahead's BEGIN IMMEDIATE: no read of its own before it.
    assert "PRAGMA schema_version" not in opened and "PRAGMA data_version" not in opened
    holder = hold_lock(path, 0.5)
    try:
        conn = connect(path, busy_timeout=10.0)  # waits past the first slice until the lock is let go
    finally:
        holder.wait(timeout=30)
    try:
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10000
    finally:
        conn.close()
    holder = hold_lock(path, 5)
    try:
        with pytest.raises(DatabaseLocked):
            connect(path, busy_timeout=0.3)
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_reader_holding_the_file_past_one_slice_is_waited_for_by_the_commit(tmp_path: Path, catalog: Path) -> None:
    # COMMIT needs every reader gone: it waits with the connection's whole busy timeout, not the slice the
    # reading ahead waited in (a reader holding on for more than 0.1 s would make it fail "locked").
    from planner.fleet.run import run_member
    from planner.request import Request

    path = tmp_path / "one.db"
    migrate_to(path, catalog, target="0001")
    reader = subprocess.Popen(
        [sys.executable, "-c", f"import sqlite3, sys, time\nc = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
         "c.execute('BEGIN')\nc.execute('SELECT COUNT(*) FROM schema_migrations').fetchall()\n"
         "print('reading', flush=True)\nsys.stdin.readline()\ntime.sleep(0.6)\nc.execute('COMMIT')\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline().strip() == "reading"
        reader.stdin.write("go\n")  # the reader lets go 0.6 s from now, while this run commits
        reader.stdin.flush()
        started = time.monotonic()
        outcome = run_member(member(str(path), cwd=tmp_path), Request(busy_timeout=10.0), load(catalog))
    finally:
        reader.wait(timeout=30)
    assert (outcome.outcome, outcome.error) == ("applied", None)
    assert time.monotonic() - started >= 0.5  # it did wait for the reader
    assert applied(path) == ["0001", "0002", "0003"]


def test_a_write_lock_this_process_holds_is_known_under_any_spelling_of_the_file(tmp_path: Path, catalog: Path) -> None:
    from planner.engines.sqlite.database import WRITE_LOCKS_HELD, lock_key, writable_now

    path = tmp_path / "a.db"
    migrate_to(path, catalog, target="0001")
    (tmp_path / "link.db").symlink_to(path)
    os.link(path, tmp_path / "hard.db")
    other = tmp_path / "b.db"
    migrate_to(other, catalog, target="0001")
    assert lock_key(path) == lock_key(tmp_path / "link.db") == lock_key(tmp_path / "hard.db") != lock_key(other)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as a run of this process holds it while it takes the backup
    WRITE_LOCKS_HELD.add(lock_key(path))
    try:
        for spelling in ("a.db", "link.db", "hard.db"):
            writable_now(tmp_path / spelling, busy_timeout=0.2)  # our own lock: nothing to wait for
        with pytest.raises(DatabaseLocked):
            other_holder = sqlite3.connect(other, isolation_level=None)
            other_holder.execute("BEGIN IMMEDIATE")
            try:
                writable_now(other, busy_timeout=0.2)  # another file's lock is waited for, as ever
            finally:
                other_holder.close()
    finally:
        WRITE_LOCKS_HELD.discard(lock_key(path))
        holder.close()


def test_outcomes_longer_than_one_pipe_write_reach_the_command_whole(tmp_path: Path, catalog: Path) -> None:
    """Outcomes longer than one pipe write (here each step's SQL, ``--sql``) reach the command whole, each
    worker writing to a pipe of its own."""
    from tests.conftest import write_migration

    statements = [f"INSERT INTO notes_{n % 3} (body) VALUES ('{'x' * 40} {n}')" for n in range(200)]
    write_migration(catalog, "0004", "Many notes", depends_on=("0003",), upgrade="".join(
        f"conn.execute('CREATE TABLE notes_{n} (body TEXT)'); " for n in range(3)) + "; ".join(
        f"conn.execute({sql!r})" for sql in statements))
    paths = fleet_of(tmp_path, catalog, 6)
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "2", "--sql", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)["databases"]
    assert [r["outcome"] for r in rows] == ["applied"] * 6
    for row in rows:
        ran = row["sql"]["0004 apply"]
        assert len(" ".join(ran).encode()) > 4096 and ran[3:] == statements, row["db"]
    assert all(applied(p) == ["0001", "0002", "0003", "0004"] for p in paths)


def test_long_and_short_outcomes_sent_at_once_never_mix(tmp_path: Path, catalog: Path) -> None:
    """Tryout 8's hang: a short outcome written while another worker's long one (over 64 KB, 120 KB here, written
    to the pipe in pieces) was under way landed inside it; the command could not read it, and waited for ever for the worker
    blocked writing the rest. Each worker now writes to a pipe of its own."""
    from tests.conftest import write_migration

    statements = [f"INSERT INTO notes (body) VALUES ('{'y' * 30} {n}')" for n in range(3000)]
    write_migration(catalog, "0004", "Many notes", depends_on=("0003",), upgrade=(
        "conn.execute('CREATE TABLE notes (body TEXT)')\n"
        "if conn.execute(\"SELECT count(*) FROM sqlite_master WHERE name = 'many'\").fetchone()[0]:\n"
        + "".join(f"    conn.execute({sql!r})\n" for sql in statements)))
    paths = fleet_of(tmp_path, catalog, 24, target="0003")
    for path in paths[::4]:  # a long outcome (its SQL, --sql) every fourth database, short ones between
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE many (x)")
        conn.close()
    for run in range(2):  # a race: each run a few chances (the old code hung in the first run, three times of three)
        if run:
            for path in paths:
                with sqlite3.connect(path) as conn:
                    conn.execute("DROP TABLE notes")
                    conn.execute("DELETE FROM schema_migrations WHERE version = '0004'")
                conn.close()
        result = run_apm("--migrations-dir", str(catalog), "fleet", "migrate", "--glob", PATTERN, "--jobs", "4",
                         "--sql", "--json", "--journal-dir", str(tmp_path / f"journals{run}"), cwd=tmp_path,
                         timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        rows = json.loads(result.stdout)["databases"]
        assert [r["outcome"] for r in rows] == ["applied"] * 24
        assert [len(r["sql"]["0004 apply"]) for r in rows] == [3001 if i % 4 == 0 else 1 for i in range(24)]


def test_a_library_caller_whose_callback_fails_is_not_left_waiting_for_blocked_workers(tmp_path: Path,
                                                                                        catalog: Path) -> None:
    """Tryout 8: an ``on_event`` that raised while workers were writing long outcomes left ``FleetRun.run``
    waiting for ever: each worker held a reading end of its own pipe, so its write never failed. The error now
    reaches the caller."""
    from tests.conftest import write_migration

    statements = [f"INSERT INTO notes (body) VALUES ('{'z' * 30} {n}')" for n in range(3000)]
    write_migration(catalog, "0004", "Many notes", depends_on=("0003",), upgrade=(
        "conn.execute('CREATE TABLE notes (body TEXT)')\n" + "".join(f"conn.execute({sql!r})\n" for sql in statements)))
    fleet_of(tmp_path, catalog, 8, target="0003")
    script = (f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
              "from pathlib import Path\n"
              "from planner.fleet.members import discover\n"
              "from planner.fleet.run import FleetRun, MemberFinished\n"
              "from planner.loader import load_catalog\n"
              "from planner.request import Request\n"
              "def fail(event):\n"
              "    if isinstance(event, MemberFinished):\n"
              "        raise RuntimeError('the caller failed')\n"
              f"members = discover(globs=[{PATTERN!r}], cwd=Path({str(tmp_path)!r}))\n"
              "try:\n"
              f"    FleetRun(load_catalog(Path({str(catalog)!r})), Request(sql=True), jobs=4, on_event=fail).run(members)\n"
              "except RuntimeError as error:\n"
              "    print(error)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "the caller failed", done.stdout + done.stderr


def test_a_read_only_database_stops_no_other(tmp_path: Path, catalog: Path) -> None:
    """Tryout 8: a read-only file (its ledger reads fine, so it was planned) failed at its write and stopped every
    database after it, where a locked file, a file that is not a database or a folder stop nothing: the file
    itself refused before any step ran."""
    paths = fleet_of(tmp_path, catalog, 4)
    paths[1].chmod(0o444)
    try:
        result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "1", "--json")
    finally:
        paths[1].chmod(0o644)
    rows = json.loads(result.stdout)["databases"]
    assert [r["outcome"] for r in rows] == ["applied", "failed", "applied", "applied"], rows
    assert "is read-only" in rows[1]["error"] and result.returncode == 11


def test_a_worker_killed_mid_run_fails_what_was_in_flight_and_the_rest_resumes(tmp_path: Path, catalog: Path) -> None:
    """The workers share the lock under which each takes its next database, which a killed worker may hold: the
    command stops every worker, fails the databases that were in flight (to be run again), starts nothing more,
    and ends; ``--resume`` then finishes the fleet, each database consistent."""
    import signal
    import time

    from tests.test_fleet import _children

    paths = fleet_of(tmp_path, catalog, 6)
    apm_bin = Path(sys.executable).parent / "apm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    process = subprocess.Popen([str(apm_bin), "--migrations-dir", str(catalog), "fleet", "migrate", "--glob",
                                PATTERN, "--jobs", "2", "--json"], cwd=tmp_path,
                               env={**env, "FLEET_TEST_SLEEP": "0.5"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 2:
        workers = _children(process.pid)
        time.sleep(0.05)
    time.sleep(0.3)  # inside a migration's sleep
    os.kill(min(workers), signal.SIGKILL)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 11, out + err
    rows = json.loads(out)["databases"]
    ended = [r for r in rows if r["outcome"] == "failed"]
    # The killed worker's database says so; the one apm stopped with it says why (tryout 8: both read as killed).
    assert [r["error"] for r in ended if "its worker process ended abruptly (by signal 9)" in r["error"]], rows
    assert len([r for r in ended if r["error"].startswith("its worker process ended abruptly")]) == 1, rows
    assert all(r["error"].startswith(("its worker process ended abruptly", "stopped: another worker process ended "
                                      "abruptly, so apm ended this one's too")) for r in ended), rows
    assert "not started" in {r["outcome"] for r in rows}  # nothing started after it
    assert _children(process.pid) == set()
    resumed = run_apm("--migrations-dir", str(catalog), "fleet", "migrate", "--resume", "--glob", PATTERN, "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert all(applied(p) == ["0001", "0002", "0003"] for p in paths)


def test_locked_members_are_waited_out_together_and_said_once(tmp_path: Path, catalog: Path) -> None:
    """Three databases held locked by other processes: status waits about one --busy-timeout for all of them,
    not one each, says once which it waits for, and keeps the rows in fleet order."""
    paths = fleet_of(tmp_path, catalog, 5, target=None)
    holders = [hold_lock(paths[i], 30) for i in (0, 2, 3)]
    try:
        started = time.monotonic()
        result = fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--json", "--busy-timeout", "3")
        waited = time.monotonic() - started
    finally:
        for holder in holders:
            holder.kill()
            holder.wait(timeout=30)
    assert result.returncode == 11, result.stdout + result.stderr
    rows = json.loads(result.stdout)["databases"]
    assert [r["db"] for r in rows] == [str(p.relative_to(tmp_path)) for p in paths]
    assert [r["state"] for r in rows] == ["locked", "up_to_date", "locked", "locked", "up_to_date"]
    assert waited < 8, waited  # one wait of 3 s and the first short ones; the old code waited 3 x 3 s
    waiting = [line for line in result.stderr.splitlines() if line.startswith("Waiting for")]
    assert len(waiting) == 1 and "3 database(s)" in waiting[0] and "up to 3 s" in waiting[0], result.stderr


@pytest.mark.parametrize("shape", ["current", "seed", "framework, rolled back"])
def test_a_steps_row_is_written_as_before_in_every_ledger_shape(tmp_path: Path, shape: str) -> None:
    """``record_applied`` writes without reading the columns first; a table without ``applied_by``, or a row
    APM's framework rolled back, is still written as the columns say (``ensure_schema`` made them current)."""
    from types import SimpleNamespace

    from planner.engines.sqlite.ledger import Ledger

    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    if shape == "seed":
        conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, applied_at TEXT)")
    elif shape.startswith("framework"):
        conn.execute("CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, version TEXT NOT NULL "
                     "UNIQUE, description TEXT, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, rollback_at "
                     "TIMESTAMP DEFAULT NULL, rollback_reason TEXT DEFAULT NULL, applied_by TEXT DEFAULT NULL)")
        conn.execute("INSERT INTO schema_migrations (version, description, rollback_at, rollback_reason) "
                     "VALUES ('0007', 'old', '2025-01-01', 'undone')")
    ledger = Ledger(conn)
    conn.execute("BEGIN IMMEDIATE")
    ledger.ensure_schema()
    ledger.record_applied(SimpleNamespace(version="0007", description="Seven", checksum="c7"), 12)
    conn.execute("COMMIT")
    columns = [row[1] for row in conn.execute("PRAGMA table_info(schema_migrations)")]
    row = dict(zip(columns, conn.execute("SELECT * FROM schema_migrations").fetchone()))
    assert (row["version"], row["description"], row["checksum"], row["execution_ms"]) == ("0007", "Seven", "c7", 12)
    assert row.get("applied_by", "apm-migrate") == "apm-migrate" and row["applied_at"]
    assert row.get("rollback_at") is None and conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (1,)
    assert ledger.applied_versions() == ["0007"]


def test_the_reading_ahead_waits_once_for_a_locked_file_and_names_a_file_that_is_not_a_database(
        tmp_path: Path, catalog: Path) -> None:
    """The reading ahead makes the connection's first read itself, inside its one read transaction: a file locked
    past --busy-timeout is waited for once (not again by another reader) and is ``locked`` in its row; a file that
    is not a database says so; neither stops the others."""
    paths = fleet_of(tmp_path, catalog, 3)
    paths[2].write_bytes(b"not a database, but long enough to have a header of its own" * 4)
    holder = hold_lock(paths[0], 30)
    try:
        started = time.monotonic()
        result = fleet(tmp_path, catalog, "--busy-timeout", "2", "migrate", "--glob", PATTERN, "--jobs", "2",
                       "--json")
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait(timeout=30)
    rows = json.loads(result.stdout)["databases"]
    assert [r["outcome"] for r in rows] == ["failed", "applied", "failed"], rows
    assert "locked" in rows[0]["error"] and "2 s" in rows[0]["error"], rows[0]
    assert "not a SQLite database" in rows[2]["error"], rows[2]
    assert 2 <= waited < 3.9, waited  # one wait of the busy timeout, not two
    assert applied(paths[0]) == ["0001"] and applied(paths[1]) == ["0001", "0002", "0003"]


@pytest.mark.parametrize("request_kwargs", [{}, {"rollback": "0009"}, {"rollback": "0001"}])
def test_a_database_the_run_leaves_alone_is_let_go_at_once(tmp_path: Path, catalog: Path,
                                                           request_kwargs: dict) -> None:
    # Nothing to do, a rollback of what it never applied, a rollback the planner refuses (0002 and 0003 need 0001):
    # the write lock the reading ahead took is let go before the next database, and nothing was written.
    from planner.engines.sqlite.database import WRITE_LOCKS_HELD
    from planner.fleet.run import run_member
    from planner.request import Request

    path = tmp_path / "done.db"
    migrate_to(path, catalog)
    before = path.read_bytes()
    outcome = run_member(member(str(path), cwd=tmp_path), Request(**request_kwargs), load(catalog))
    assert outcome.outcome in ("nothing to do", "refused"), outcome
    assert not WRITE_LOCKS_HELD
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # free now: no wait at all
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert path.read_bytes() == before and not Path(f"{path}-journal").exists()


WRITER = """
import sqlite3, sys, os, json
paths, stop = sys.argv[1:-1], sys.argv[-1]
written = {p: 0 for p in paths}
errors = []
print("writing", flush=True)
n = 0
while not os.path.exists(stop) or n < 2 * len(paths):
    path = paths[n % len(paths)]
    n += 1
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO projects (name) VALUES (?)", (f"writer {n}",))
            conn.execute("COMMIT")
            written[path] += 1
        finally:
            conn.close()
    except sqlite3.Error as exc:
        errors.append(f"{path}: {exc}")
print(json.dumps({"written": written, "errors": errors}), flush=True)
"""


def test_a_fleet_run_beside_a_process_writing_every_member(tmp_path: Path, catalog: Path) -> None:
    # The reading ahead takes each database's write lock when it is free, or reads without it: either way a
    # process writing the databases the whole time (APM in use) loses no write and waits out every lock, and
    # every database is migrated once, whether it had something to do or not.
    from tests.test_fleet import PATTERN, fleet, fleet_of

    behind = fleet_of(tmp_path, catalog, 8)  # at 0001
    done = [tmp_path / "projects" / f"q{index:02d}" / ".aipm" / "data" / "aipm.db" for index in range(4)]
    for path in done:
        path.parent.mkdir(parents=True)
        migrate_to(path, catalog)
    paths = [str(p) for p in behind + done]
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, *paths, str(stop)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "2", "--yes", "--json")
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = {Path(r["db"]).parts[-4]: r["outcome"] for r in json.loads(result.stdout)["databases"]}
    assert sorted(outcomes.values()) == ["applied"] * 8 + ["nothing to do"] * 4, outcomes
    report = json.loads(out)
    assert report["errors"] == [] and sum(report["written"].values()) >= 2 * len(paths)
    for path in paths:
        assert applied(Path(path)) == ["0001", "0002", "0003"]
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT COUNT(*) FROM projects WHERE name LIKE 'writer %'").fetchone()[0]
        assert rows == report["written"][path]
    log = []
    for path in behind:
        with sqlite3.connect(path) as conn:
            log += conn.execute("SELECT version FROM schema_migrations_log WHERE outcome = 'ok' AND version > '0001'"
                                ).fetchall()
    assert sorted(v for (v,) in log) == ["0002"] * 8 + ["0003"] * 8  # each applied once


def test_a_ledger_refused_under_the_lock_taken_ahead_lets_the_lock_go(tmp_path: Path) -> None:
    # The reading ahead took the write lock, then found another tool's ledger: the file is let go, and this
    # process no longer counts its lock as held (which would keep its header from being read again).
    from planner.engines.sqlite.database import WRITE_LOCKS_HELD
    from planner.engines.sqlite.runner import Executor

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, dirty BOOLEAN NOT NULL)")
    with pytest.raises(ForeignLedger):
        Executor(path).read_ahead()
    assert not WRITE_LOCKS_HELD
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
