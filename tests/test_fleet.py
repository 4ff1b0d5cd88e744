"""`apm fleet`: many real SQLite files in project folders, through the installed command and the library."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from planner.errors import EmptyPattern
from planner.fleet.members import discover, member
from tests.conftest import read_terminal, run_apm, write_migration

PATTERN = "projects/*/.aipm/data/aipm.db"


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """0001 projects; 0002 a unique index on it; 0003 tasks (on 0001), each reversible; sleeps on request."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    nap = "import os, time; time.sleep(float(os.environ.get('FLEET_TEST_SLEEP', '0')))\n"
    write_migration(folder, "0001", "Projects", upgrade=nap + "conn.execute(\"CREATE TABLE projects (id INTEGER "
                    "PRIMARY KEY, name TEXT NOT NULL, status TEXT DEFAULT 'active')\")",
                    downgrade="conn.execute('DROP TABLE projects')")
    write_migration(folder, "0002", "Unique project names", depends_on=("0001",),
                    upgrade=nap + "conn.execute('CREATE UNIQUE INDEX projects_by_name ON projects (name)')",
                    downgrade="conn.execute('DROP INDEX projects_by_name')")
    write_migration(folder, "0003", "Tasks", depends_on=("0001",),
                    upgrade=nap + "conn.execute('CREATE TABLE tasks (id INTEGER PRIMARY KEY, project_id INTEGER "
                    "REFERENCES projects (id), title TEXT)')",
                    downgrade="conn.execute('DROP TABLE tasks')")
    return folder


def load(folder: Path):
    from planner.loader import load_catalog

    return load_catalog(folder)


def migrate_to(path: Path, folder: Path, target: str | None = None) -> None:
    """A database brought to ``target`` (everything when None) by the library, as a project would have it."""
    from planner.engines import engine_for
    from planner.plan import apply_plan

    catalog = load(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine_for(path).runner(catalog=catalog, create=True).migrate(lambda ledger: apply_plan(catalog, ledger,
                                                                                              target=target))


def project_db(root: Path, name: str) -> Path:
    path = root / "projects" / name / ".aipm" / "data" / "aipm.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def applied(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return sorted(r[0] for r in conn.execute("SELECT version FROM schema_migrations"))


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its content hash: nothing may appear, vanish or change."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def fleet(tmp_path: Path, catalog: Path, *args: str, env: dict | None = None):
    return run_apm("--migrations-dir", str(catalog), "fleet", *args, cwd=tmp_path, env=env)


# --------------------------------------------------------------------------
# Members
# --------------------------------------------------------------------------


def test_the_same_file_reached_twice_is_one_member(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.db").write_bytes(b"")
    os.symlink(tmp_path / "a" / "x.db", tmp_path / "link.db")
    listing = tmp_path / "dbs.txt"
    listing.write_text("# databases\n./a/x.db\na/x.db   # the same one again\nlink.db\n\nother.db\n")
    members = discover(globs=["a/*.db"], lists=[listing], cwd=tmp_path)
    assert [m.db for m in members] == ["a/x.db", "other.db"]  # the first spelling is kept


def test_a_glob_expands_the_home_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    project_db(tmp_path, "one").write_bytes(b"")
    members = discover(globs=["~/projects/*/.aipm/data/aipm.db"], cwd=tmp_path / "projects")
    assert [Path(m.real) for m in members] == [project_db(tmp_path, "one")]


def test_patterns_and_lists_that_name_nothing_are_errors_naming_them(tmp_path: Path) -> None:
    with pytest.raises(EmptyPattern, match="nowhere/\\*.db"):
        discover(globs=["nowhere/*.db"], cwd=tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(EmptyPattern, match="empty.txt"):
        discover(lists=[empty], cwd=tmp_path)


def test_a_glob_matching_nothing_is_a_usage_error(tmp_path: Path, catalog: Path) -> None:
    result = fleet(tmp_path, catalog, "status", "--glob", "projects/*/nothing.db")
    assert result.returncode == 2
    assert "'projects/*/nothing.db' matches no database" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_config_file_names_the_fleet(tmp_path: Path, catalog: Path) -> None:
    migrate_to(project_db(tmp_path, "one"), catalog)
    (tmp_path / "apm.toml").write_text(f'migrations_dir = "{catalog}"\nfleet = ["{PATTERN}"]\n')
    (tmp_path / "sub").mkdir()
    result = run_apm("fleet", "status", "--json", cwd=tmp_path / "sub")  # patterns are relative to the file
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"] == {"up_to_date": 1}
    shown = json.loads(run_apm("config", "--json", cwd=tmp_path / "sub").stdout)["settings"]["fleet"]
    assert shown == {"value": str(tmp_path / PATTERN), "source": f"config {tmp_path / 'apm.toml'}"}


def test_urls_are_members_and_their_passwords_are_never_shown() -> None:
    found = member("postgresql://app:s3cret@db.example/tenants#tenant7")
    assert found.on_server and found.schema == "tenant7"
    assert "s3cret" not in found.display and "s3cret" not in found.key
    assert "search_path%3Dtenant7" in found.real


# --------------------------------------------------------------------------
# apm fleet status
# --------------------------------------------------------------------------


@pytest.fixture
def mixed(tmp_path: Path, catalog: Path) -> dict[str, Path]:
    """Project folders at every state status tells apart."""
    dbs = {name: project_db(tmp_path, name) for name in
           ("current", "behind", "fresh", "ahead", "failed", "altered", "locked", "text", "foreign")}
    for name in ("current", "ahead", "altered", "locked"):
        migrate_to(dbs[name], catalog)
    migrate_to(dbs["behind"], catalog, target="0001")
    dbs["fresh"].write_bytes(b"")
    with sqlite3.connect(dbs["ahead"]) as conn:
        conn.execute("INSERT INTO schema_migrations (version, description) VALUES ('0099', 'from a newer APM')")
    migrate_to(dbs["failed"], catalog, target="0001")
    with sqlite3.connect(dbs["failed"]) as conn:  # duplicate names: 0002's unique index fails here
        conn.executemany("INSERT INTO projects (name) VALUES (?)", [("same",), ("same",)])
    result = run_apm("--migrations-dir", str(catalog), "migrate", "--db", str(dbs["failed"]))
    assert result.returncode == 5, result.stderr
    with sqlite3.connect(dbs["altered"]) as conn:
        conn.execute("ALTER TABLE projects ADD COLUMN archived_at TEXT")
    dbs["text"].write_text("not a database, just notes\n")
    with sqlite3.connect(dbs["foreign"]) as conn:
        conn.execute("CREATE TABLE schema_migrations (id INTEGER, name TEXT, run_on TEXT)")
    (tmp_path / "projects" / "folder" / ".aipm" / "data" / "aipm.db").mkdir(parents=True)
    return dbs


@pytest.fixture
def held(mixed: dict[str, Path]):
    """Another process holding ``locked``'s lock (even readers must wait)."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(mixed['locked'])!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield holder
    holder.kill()
    holder.wait()


def test_status_tells_every_state_apart_and_writes_nothing(tmp_path: Path, catalog: Path, mixed, held) -> None:
    before = tree_digest(tmp_path / "projects")
    result = fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--json", "--busy-timeout", "0.3")
    assert result.returncode == 11, result.stderr
    document = json.loads(result.stdout)
    rows = {Path(row["db"]).parts[1]: row for row in document["databases"]}
    states = {name: row["state"] for name, row in rows.items()}
    assert states == {"current": "up_to_date", "behind": "behind", "fresh": "behind", "ahead": "ahead",
                      "failed": "failed", "altered": "up_to_date",  # drift is only looked for with --drift
                      "locked": "locked", "text": "not_a_database", "foreign": "foreign_ledger",
                      "folder": "not_a_database"}
    assert rows["behind"]["applied"] == 1 and rows["behind"]["pending"] == 2
    assert rows["fresh"]["applied"] == 0 and rows["fresh"]["pending"] == 3
    assert rows["current"]["head"] == ["0002", "0003"] and rows["current"]["error"] is None
    assert "0002 failed" in rows["failed"]["error"]
    assert "0099" in rows["ahead"]["error"]
    assert rows["locked"]["error"] and rows["text"]["error"]
    assert document["summary"] == {"up_to_date": 2, "behind": 2, "ahead": 1, "failed": 1, "locked": 1,
                                   "not_a_database": 2, "foreign_ledger": 1}
    assert tree_digest(tmp_path / "projects") == before  # read-only: not even the ledger tables were created
    result = fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--json", "--busy-timeout", "0.3", "--drift")
    assert result.returncode == 11  # drift and more: attention, not just drift
    drifted = {Path(row["db"]).parts[1]: row for row in json.loads(result.stdout)["databases"]}
    assert {name: row["state"] for name, row in drifted.items()} == {**states, "altered": "drifted"}
    assert [d["detail"] for d in drifted["altered"]["differences"]] == [
        "table projects: column archived_at is in the database, not in its migrations"]
    assert drifted["current"]["differences"] == [] and "differences" not in drifted["locked"]
    assert tree_digest(tmp_path / "projects") == before


def test_rows_state_the_fact_without_one_database_advice(tmp_path: Path, catalog: Path) -> None:
    """Tryout finding 13: a fleet names no database with --db, so its rows never advise passing one."""
    fleet_of(tmp_path, catalog, 1)
    project_db(tmp_path, "text").write_text("not a database, just notes\n")
    (tmp_path / "projects" / "folder" / ".aipm" / "data" / "aipm.db").mkdir(parents=True)
    with sqlite3.connect(project_db(tmp_path, "foreign")) as conn:
        conn.execute("CREATE TABLE schema_migrations (id INTEGER, name TEXT, run_on TEXT)")
    for command in (("migrate", "--continue-on-error"), ("plan",), ("status",)):
        document = json.loads(fleet(tmp_path, catalog, *command, "--glob", PATTERN, "--json").stdout)
        errors = {Path(row["db"]).parts[1]: row["error"] for row in document["databases"]}
        assert "not a SQLite database" in errors["text"] and "a folder, not a" in errors["folder"], errors
        assert "another tool" in errors["foreign"], errors
        assert not [error for error in errors.values() if error and "--db" in error], (command, errors)
        text = fleet(tmp_path, catalog, *command, "--glob", PATTERN)
        assert "not a SQLite database" in text.stdout, text.stdout + text.stderr
        # Only the retry commands name --db: each runs that one database alone with `apm migrate`.
        assert "--db" not in text.stdout.replace(" migrate --db ", " migrate "), (command, text.stdout)


def test_status_table_and_summary_line(tmp_path: Path, catalog: Path) -> None:
    for name in ("a", "b"):
        migrate_to(project_db(tmp_path, name), catalog)
    migrate_to(project_db(tmp_path, "c"), catalog, target="0001")
    result = fleet(tmp_path, catalog, "status", "--glob", PATTERN)
    assert result.returncode == 11
    assert "behind 2" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "2 up to date, 1 behind"
    migrate_to(project_db(tmp_path, "c"), catalog)
    result = fleet(tmp_path, catalog, "status", "--glob", PATTERN)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().splitlines()[-1] == "3 up to date"


def test_a_listed_file_that_is_missing_is_unreachable_and_nothing_is_created(tmp_path: Path, catalog) -> None:
    listing = tmp_path / "dbs.txt"
    listing.write_text("gone/aipm.db\n")
    result = fleet(tmp_path, catalog, "status", "--list", str(listing), "--json")
    assert result.returncode == 11
    row = json.loads(result.stdout)["databases"][0]
    assert (row["db"], row["state"]) == ("gone/aipm.db", "unreachable")
    assert not (tmp_path / "gone").exists()


# --------------------------------------------------------------------------
# apm fleet plan / migrate
# --------------------------------------------------------------------------


def fleet_of(tmp_path: Path, catalog: Path, count: int, target: str = "0001") -> list[Path]:
    paths = [project_db(tmp_path, f"p{i:02d}") for i in range(count)]
    for path in paths:
        migrate_to(path, catalog, target=target)
    return paths


def break_unique_index(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO projects (name) VALUES (?)", [("twin",), ("twin",)])


def test_plan_groups_databases_by_plan_and_writes_nothing(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 3)
    migrate_to(paths[2], catalog)
    before = tree_digest(tmp_path / "projects")
    result = fleet(tmp_path, catalog, "plan", "--glob", PATTERN)
    assert result.returncode == 0, result.stderr
    assert "2 database(s): apply 0002, apply 0003" in result.stdout
    assert "1 database(s): nothing to do" in result.stdout
    assert tree_digest(tmp_path / "projects") == before


def test_migrate_runs_every_database_and_journals_each(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 6)
    migrate_to(paths[0], catalog)
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "2", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    outcomes = [row["outcome"] for row in document["databases"]]
    assert outcomes == ["nothing to do"] + ["applied"] * 5
    assert [s["version"] for s in document["databases"][1]["steps"]] == ["0002", "0003"]
    assert all(applied(p) == ["0001", "0002", "0003"] for p in paths)
    journal = Path(document["journal"])
    assert journal.parent == tmp_path / ".apm-fleet"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [r["type"] for r in records] == ["run"] + ["member"] * 6 + ["end"]


def test_a_failure_stops_new_databases_unless_continue_on_error(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 5)
    break_unique_index(paths[1])
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "1")
    assert result.returncode == 11
    assert [applied(p) for p in paths] == [["0001", "0002", "0003"]] + [["0001"]] * 4
    assert "p01/.aipm/data/aipm.db failed, so no further database was started" in result.stdout
    # The command says how to go on anyway; the run's own reason (what a library caller reads) names no option.
    assert "Stopped: projects/p01/.aipm/data/aipm.db failed, so no further database was started (--continue-on-error runs " \
           "them all)" in result.stdout
    assert "3 not started" in result.stdout
    retry = next(line for line in result.stdout.splitlines() if "p01" in line and "apm " in line)
    command = retry[retry.index("apm "):].split()
    assert command[:2] == ["apm", "--migrations-dir"] and "migrate" in command and "--db" in command
    alone = run_apm(*command[1:], cwd=tmp_path)  # the retry command runs that database alone
    assert alone.returncode == 5 and "UNIQUE" in alone.stderr

    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "2", "--continue-on-error",
                   "--json")
    assert result.returncode == 11
    rows = {Path(r["db"]).parts[1]: r for r in json.loads(result.stdout)["databases"]}
    assert rows["p01"]["outcome"] == "failed" and "UNIQUE" in rows["p01"]["error"]
    assert [rows[f"p0{i}"]["outcome"] for i in (0, 2, 3, 4)] == ["nothing to do", "applied", "applied", "applied"]
    assert applied(paths[1]) == ["0001"] and all(applied(p) == ["0001", "0002", "0003"] for p in paths[2:])


def test_a_failing_canary_starts_nothing_else(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 5)
    break_unique_index(paths[0])
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--canary", "2", "--json",
                   "--continue-on-error")
    assert result.returncode == 11
    rows = json.loads(result.stdout)["databases"]
    assert [r["outcome"] for r in rows] == ["failed", "applied", "not started", "not started", "not started"]
    assert "canary" in rows[2]["error"]
    assert [applied(p) for p in paths[2:]] == [["0001"]] * 3


def test_a_canary_pattern_runs_those_first(tmp_path: Path, catalog: Path) -> None:
    fleet_of(tmp_path, catalog, 3)
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--canary", "*p02*", "--jobs", "1")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if ": applied" in line]
    assert lines[0].startswith("projects/p02/")


def test_a_canary_with_nothing_to_do_is_replaced_by_the_next_database(tmp_path: Path, catalog: Path) -> None:
    """--canary 2 means two databases that try the plan: up-to-date ones first in the fleet test nothing, so the
    next ones stand in, and a failure among those still starts nothing else."""
    paths = fleet_of(tmp_path, catalog, 6)
    for path in paths[:2]:
        migrate_to(path, catalog)
    break_unique_index(paths[3])
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--canary", "2", "--json", "--jobs", "2")
    assert result.returncode == 11, result.stdout + result.stderr
    rows = json.loads(result.stdout)["databases"]
    assert [r["outcome"] for r in rows] == ["nothing to do", "nothing to do", "applied", "failed", "not started",
                                            "not started"]
    assert "no further database was started" in rows[4]["error"]
    assert [applied(p) for p in paths[4:]] == [["0001"]] * 2


def test_canaries_named_by_a_pattern_with_nothing_to_do_are_replaced_too(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 3)
    migrate_to(paths[0], catalog)
    break_unique_index(paths[1])
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--canary", "*p00*", "--json",
                   "--continue-on-error")
    assert result.returncode == 11, result.stdout + result.stderr
    rows = json.loads(result.stdout)["databases"]
    assert [r["outcome"] for r in rows] == ["nothing to do", "failed", "not started"]  # p01 stood in, and failed
    assert "a canary did not succeed" in rows[2]["error"]
    assert applied(paths[2]) == ["0001"]
    migrate_to(paths[2], catalog)
    assert fleet(tmp_path, catalog, "migrate", "--glob", "projects/p0[02]/.aipm/data/aipm.db", "--canary",
                 "*p00*").returncode == 0  # all up to date: the canaries walk the fleet, nothing is stopped


def test_a_database_that_cannot_be_read_fails_in_its_row_and_stops_nothing(tmp_path: Path, catalog: Path) -> None:
    """Bad input (a file that is no database, another tool's ledger, a folder) is one row's reason: nothing ran
    there, so it says nothing about the plan, and the rollout carries on. A migration that fails still stops it."""
    paths = fleet_of(tmp_path, catalog, 6)
    paths[1].unlink()
    paths[1].write_text("notes, not a database\n")
    paths[2].unlink()
    with sqlite3.connect(paths[2]) as conn:
        conn.execute("CREATE TABLE schema_migrations (version varchar(255) PRIMARY KEY)")  # Rails' ledger
    first = "projects/p0[0-3]/.aipm/data/aipm.db"
    result = fleet(tmp_path, catalog, "migrate", "--glob", first, "--jobs", "2", "--json")  # in worker processes
    assert result.returncode == 11, result.stdout + result.stderr
    assert [r["outcome"] for r in json.loads(result.stdout)["databases"]] == ["applied", "failed", "failed", "applied"]

    break_unique_index(paths[4])
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "1", "--json")
    assert result.returncode == 11, result.stdout + result.stderr
    rows = json.loads(result.stdout)["databases"]
    assert [r["outcome"] for r in rows] == ["nothing to do", "failed", "failed", "nothing to do", "failed",
                                            "not started"]
    assert "p04" in rows[5]["error"]  # the migration's failure stopped the run, the unreadable files did not


def test_a_loss_needs_yes_in_a_script_and_is_backed_up(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 3, target=None)
    with sqlite3.connect(paths[0]) as conn:
        conn.execute("INSERT INTO tasks (title) VALUES ('keep me')")
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--rollback", "0003")
    assert result.returncode == 7, result.stdout + result.stderr
    assert "drops table tasks holding 1 row" in result.stdout
    assert applied(paths[0]) == ["0001", "0002", "0003"]
    assert not list(paths[0].parent.glob("aipm.db.backup.*"))  # nothing changed: no backup left behind
    assert all(applied(p) == ["0001", "0002"] for p in paths[1:])  # they lose nothing: committed at once
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--rollback", "0003", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    outcomes = [r["outcome"] for r in json.loads(result.stdout)["databases"]]
    assert outcomes == ["rolled back", "nothing to do", "nothing to do"]
    assert all(applied(p) == ["0001", "0002"] for p in paths)
    assert all(len(list(p.parent.glob("aipm.db.backup.*"))) == 1 for p in paths)


def test_one_confirmation_covers_exactly_what_was_shown(tmp_path: Path, catalog: Path) -> None:
    from planner.fleet.run import FleetRun, Request

    paths = fleet_of(tmp_path, catalog, 3, target=None)
    for path, rows in zip(paths, (2, 0, 1)):
        with sqlite3.connect(path) as conn:
            conn.executemany("INSERT INTO tasks (title) VALUES (?)", [("t",)] * rows)
    shown: list = []

    def confirm(outcomes) -> bool:
        shown.extend((Path(o.member.real), o.loss) for o in outcomes)
        with sqlite3.connect(paths[2]) as conn:  # the database changes while the person decides
            conn.execute("INSERT INTO tasks (title) VALUES ('late')")
        return True

    run = FleetRun(load(catalog), Request(rollback="0003"), jobs=2, confirm=confirm)
    result = run.run(discover(globs=[PATTERN], cwd=tmp_path))
    # Two workers preview at once, so the losses reach the confirmation in either order.
    assert sorted(shown) == [(paths[0], ["0003 rollback: drops table tasks holding 2 rows"]),
                             (paths[2], ["0003 rollback: drops table tasks holding 1 row"])]
    outcomes = {Path(o.member.real): o for o in result.outcomes}
    assert outcomes[paths[0]].outcome == "rolled back" and outcomes[paths[1]].outcome == "rolled back"
    assert outcomes[paths[2]].outcome == "skipped"  # it now destroys 2 rows, not the 1 that was confirmed
    assert "changed meanwhile" in outcomes[paths[2]].error
    assert applied(paths[2]) == ["0001", "0002", "0003"]


def test_dry_run_shows_each_loss_and_the_total_and_commits_nothing(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 2, target=None)
    for path in paths:
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO tasks (title) VALUES ('a'), ('b')")
    before = {p: applied(p) for p in paths}
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--rollback", "0003", "--dry-run")
    assert result.returncode == 7
    assert result.stdout.count("drops table tasks holding 2 rows") == 2
    assert "In total: 2 database(s) would lose data (4 row(s) or value(s))" in result.stdout
    assert {p: applied(p) for p in paths} == before


def test_sigkill_mid_run_then_resume_finishes_only_the_rest(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 8)
    apm_bin = Path(sys.executable).parent / "apm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    process = subprocess.Popen([str(apm_bin), "--migrations-dir", str(catalog), "fleet", "migrate", "--glob",
                                PATTERN, "--jobs", "2"], cwd=tmp_path, env={**env, "FLEET_TEST_SLEEP": "0.15"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal_dir = tmp_path / ".apm-fleet"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = list(journal_dir.glob("run-*.jsonl"))
        if runs and runs[0].read_text().count('"type": "member"') >= 2:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the fleet command and its workers, at once
    process.wait()
    time.sleep(0.2)
    journal = next(journal_dir.glob("run-*.jsonl"))
    recorded = {json.loads(line)["key"] for line in journal.read_text().splitlines()
                if line.strip().endswith("}") and '"type": "member"' in line}
    assert 2 <= len(recorded) < len(paths)
    for path in paths:  # every database consistent: its ledger says exactly what its schema holds
        with sqlite3.connect(path) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert ("tasks" in tables) == ("0003" in applied(path))

    result = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", PATTERN, "--json")
    assert result.returncode == 0, result.stderr
    resumed = json.loads(result.stdout)["databases"]
    ran = {os.path.normpath(tmp_path / r["db"]) for r in resumed}
    assert ran == {str(p) for p in paths} - recorded  # only the rest ran, named as the glob gave them
    assert len(resumed) == len(paths) - len(recorded)
    assert all(applied(p) == ["0001", "0002", "0003"] for p in paths)
    again = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", PATTERN, "--json")
    assert json.loads(again.stdout)["databases"] == []


def test_resume_without_a_journal_is_a_usage_error(tmp_path: Path, catalog: Path) -> None:
    result = fleet(tmp_path, catalog, "migrate", "--resume")
    assert result.returncode == 2
    assert "nothing to resume" in result.stderr and "Traceback" not in result.stderr


def test_a_run_with_nothing_to_do_keeps_no_journal(tmp_path: Path, catalog: Path) -> None:
    """Tryout finding 16: journals are kept only where there is something to resume or to read."""
    paths = fleet_of(tmp_path, catalog, 2)
    journal_dir = tmp_path / ".apm-fleet"
    first = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--json")
    assert first.returncode == 0, first.stderr
    kept = Path(json.loads(first.stdout)["journal"])
    assert list(journal_dir.glob("run-*.jsonl")) == [kept]
    idle = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--json")
    assert idle.returncode == 0, idle.stderr
    assert json.loads(idle.stdout)["journal"] is None
    text = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN)
    assert "Journal: none kept (every database had nothing to do)" in text.stdout, text.stdout + text.stderr
    assert list(journal_dir.glob("run-*.jsonl")) == [kept]
    # A run in which one database still had something to do (here: fails) is kept, with the others' records.
    with sqlite3.connect(paths[0]) as conn:  # 0002 undone by hand, and duplicates that make it fail again
        conn.execute("DROP INDEX projects_by_name")
        conn.execute("DELETE FROM schema_migrations WHERE version = '0002'")
    break_unique_index(paths[0])
    failed = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--json")
    assert failed.returncode == 11, failed.stderr
    assert len(list(journal_dir.glob("run-*.jsonl"))) == 2
    assert json.loads(failed.stdout)["journal"] is not None


def test_journals_beyond_the_newest_ten_are_pruned_when_a_run_starts(tmp_path: Path, catalog: Path) -> None:
    keep = 10  # docs/many-databases.md
    fleet_of(tmp_path, catalog, 2)
    journal_dir = tmp_path / ".apm-fleet"
    journal_dir.mkdir()
    old = [journal_dir / f"run-2020010{i // 10}T00000{i % 10}Z-1.jsonl" for i in range(keep + 2)]
    for path in old:
        path.write_text("{}\n")
    (journal_dir / "notes.txt").write_text("not a journal: never touched\n")
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--json")
    assert result.returncode == 0, result.stderr
    new = Path(json.loads(result.stdout)["journal"])
    # The new run and the nine newest before it; the newest before it (what --resume used) among them.
    assert sorted(journal_dir.glob("run-*.jsonl")) == old[-(keep - 1):] + [new]
    assert (journal_dir / "notes.txt").exists()


def test_an_unreachable_server_is_a_row_and_its_password_is_never_shown(tmp_path: Path, catalog: Path) -> None:
    migrate_to(project_db(tmp_path, "a"), catalog)
    listing = tmp_path / "dbs.txt"
    listing.write_text(f"projects/a/.aipm/data/aipm.db\npostgresql://app:s3cret@/nodb?host={tmp_path}/no-server\n")
    for command in (("status", "--json"), ("migrate", "--json")):
        result = fleet(tmp_path, catalog, *command, "--list", str(listing), "--busy-timeout", "1")
        assert result.returncode == 11, result.stderr
        rows = json.loads(result.stdout)["databases"]
        assert rows[0]["error"] is None and rows[1]["error"]
        assert rows[1]["db"] == f"postgresql://app:***@/nodb?host={tmp_path}/no-server"
        assert rows[1].get("state", "unreachable") == "unreachable"
        assert "s3cret" not in result.stdout + result.stderr
    journal = next((tmp_path / ".apm-fleet").glob("run-*.jsonl"))
    assert "s3cret" not in journal.read_text() and "s3cret" not in journal.name


def fleet_under_way(tmp_path: Path, catalog: Path, *, step_seconds: float,
                    more: tuple[str, ...] = ()) -> tuple[subprocess.Popen, Path]:
    """`apm fleet migrate --jobs 1` started (with ``more`` options), each step sleeping ``step_seconds``, once its
    first database is journaled; and the journal's folder."""
    apm_bin = Path(sys.executable).parent / "apm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    process = subprocess.Popen([str(apm_bin), "--migrations-dir", str(catalog), "fleet", "migrate", "--glob",
                                PATTERN, "--jobs", "1", *more], cwd=tmp_path,
                               env={**env, "FLEET_TEST_SLEEP": str(step_seconds)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal_dir = tmp_path / ".apm-fleet"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = list(journal_dir.glob("run-*.jsonl"))
        if runs and runs[0].read_text().count('"type": "member"') >= 1:
            break
        time.sleep(0.02)
    return process, journal_dir


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_lets_the_running_database_finish_and_says_how_to_resume(tmp_path: Path, catalog: Path, signum: int,
                                                                        code: int) -> None:
    paths = fleet_of(tmp_path, catalog, 6)
    process, journal_dir = fleet_under_way(tmp_path, catalog, step_seconds=0.3)
    time.sleep(0.2)  # the second database is under way (each of its steps sleeps 0.3 s)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    journal = next(journal_dir.glob("run-*.jsonl"))  # its run, pinned, from its folder
    command = f"cd {tmp_path} && apm --migrations-dir {catalog} fleet migrate --resume --journal {journal} --glob " \
        f"'{PATTERN}'`"
    # Said once: on the report's Not started line, which the one-line error points to (tryout 8).
    assert (out + err).count(command) == 1 and f"Not started: 4 database(s); `{command}" in out, out + err
    assert "the command on the Not started line above finishes the rest" in err, err
    done = [p for p in paths if applied(p) == ["0001", "0002", "0003"]]
    assert len(done) == 2, out + err  # the one running when Ctrl-C came finished, and none started after
    assert all(applied(p) in (["0001"], ["0001", "0002", "0003"]) for p in paths)
    records = [json.loads(line) for line in next(journal_dir.glob("run-*.jsonl")).read_text().splitlines()]
    assert sum(r["type"] == "member" and r["outcome"] == "applied" for r in records) == len(done)


def test_on_a_terminal_the_stopping_line_takes_the_progress_lines_place(tmp_path: Path, catalog: Path) -> None:
    import pty

    fleet_of(tmp_path, catalog, 4)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("APM_")}, "FLEET_TEST_SLEEP": "0.3",
           "NO_COLOR": "1", "COLUMNS": "150"}
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen([str(Path(sys.executable).parent / "apm"), "--migrations-dir", str(catalog),
                                    "fleet", "migrate", "--glob", PATTERN, "--jobs", "1"], cwd=tmp_path,
                                   stdout=follower, stderr=follower, env=env)
        os.close(follower)
        first = os.read(leader, 65536)  # the first progress line is out: the run is under way
        process.send_signal(signal.SIGINT)
        written = first + read_terminal(leader)
        assert process.wait(timeout=60) == 130
    finally:
        os.close(leader)
    shown = written.decode()
    assert "\r\x1b[KStopping: no further database will be started" in shown, repr(shown)
    assert "\nStopping" not in shown.replace("\r\n", "\n"), repr(shown)


def test_ctrl_c_with_json_names_the_resume_command_in_its_error(tmp_path: Path, catalog: Path) -> None:
    # The JSON document has no Not started line: the one-line error on stderr carries the command.
    fleet_of(tmp_path, catalog, 4)
    process, journal_dir = fleet_under_way(tmp_path, catalog, step_seconds=0.3, more=("--json",))
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    journal = next(journal_dir.glob("run-*.jsonl"))
    assert json.loads(out)["journal"] == str(journal)
    assert f"run `cd {tmp_path} && apm --migrations-dir {catalog} fleet migrate --resume --journal {journal} " \
        f"--glob '{PATTERN}'` to finish" in err, err


def test_a_second_ctrl_c_records_the_database_it_interrupted_and_says_how_to_resume(tmp_path: Path,
                                                                                    catalog: Path) -> None:
    """With --jobs 1 a second Ctrl-C rolls back the running database's open transaction: the command still
    records it, sums up and names the resume command, and never claims that nothing was changed."""
    paths = fleet_of(tmp_path, catalog, 4)
    process, journal_dir = fleet_under_way(tmp_path, catalog, step_seconds=0.4)
    time.sleep(0.15)  # the second database is under way (each of its steps sleeps 0.4 s)
    process.send_signal(signal.SIGINT)
    time.sleep(0.15)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "nothing was changed" not in err, err
    journal = next(journal_dir.glob("run-*.jsonl"))
    command = f"cd {tmp_path} && apm --migrations-dir {catalog} fleet migrate --resume --journal {journal} --glob " \
        f"'{PATTERN}'`"
    assert (out + err).count(command) == 1 and f"Not started: 2 database(s); `{command}" in out, out + err
    assert [applied(p) for p in paths] == [["0001", "0002", "0003"]] + [["0001"]] * 3, out + err
    assert "interrupted while it ran" in out and "1 applied, 1 failed" in out, out
    records = [json.loads(line) for line in next(journal_dir.glob("run-*.jsonl")).read_text().splitlines()]
    assert [r["outcome"] for r in records if r["type"] == "member"] == ["applied", "failed"]

    resumed = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", PATTERN)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert all(applied(p) == ["0001", "0002", "0003"] for p in paths)


def test_two_fleet_runs_at_once_count_each_rollout_once(tmp_path: Path, catalog: Path) -> None:
    """The second of two overlapping runs waits for each database's lock, plans again there and finds it done:
    that database is "nothing to do" for it, never a second "applied"."""
    paths = fleet_of(tmp_path, catalog, 4)
    apm_bin = Path(sys.executable).parent / "apm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    command = [str(apm_bin), "--migrations-dir", str(catalog), "fleet", "migrate", "--glob", PATTERN, "--jobs", "1",
               "--json", "--journal-dir", "{}"]
    runs = [subprocess.Popen([part.format(tmp_path / f"j{i}") for part in command], cwd=tmp_path,
                             env={**env, "FLEET_TEST_SLEEP": "0.1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in range(2)]
    documents = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, out + err
        documents.append(json.loads(out))
    assert all(applied(p) == ["0001", "0002", "0003"] for p in paths)
    for index in range(len(paths)):
        rows = [document["databases"][index] for document in documents]
        assert sorted(row["outcome"] for row in rows) in (["applied", "nothing to do"],
                                                          ["nothing to do", "nothing to do"]), rows
        assert all(row["steps"] or row["outcome"] == "nothing to do" for row in rows), rows
    assert sum(row["outcome"] == "applied" for document in documents for row in document["databases"]) == len(paths)


def test_apm_migrate_on_a_member_while_the_fleet_runs_applies_each_migration_once(tmp_path: Path,
                                                                                     catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 4)
    apm_bin = Path(sys.executable).parent / "apm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    slow = {**env, "FLEET_TEST_SLEEP": "0.2"}
    whole = subprocess.Popen([str(apm_bin), "--migrations-dir", str(catalog), "fleet", "migrate", "--glob",
                              PATTERN, "--jobs", "2"], cwd=tmp_path, env=slow, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    alone = subprocess.run([str(apm_bin), "--migrations-dir", str(catalog), "migrate", "--db", str(paths[3])],
                           env=slow, capture_output=True, text=True)
    out, err = whole.communicate(timeout=120)
    assert whole.returncode == 0 and alone.returncode == 0, out + err + alone.stderr
    for path in paths:
        with sqlite3.connect(path) as conn:
            applies = conn.execute("SELECT version, COUNT(*) FROM schema_migrations_log WHERE action = 'apply' "
                                   "AND outcome = 'ok' GROUP BY version").fetchall()
        assert sorted(applies) == [("0001", 1), ("0002", 1), ("0003", 1)]


# --------------------------------------------------------------------------
# PostgreSQL: a fleet of databases, and a fleet of tenant schemas in one database
# --------------------------------------------------------------------------


def pg_tables(url: str, schema: str = "public") -> set[str]:
    import psycopg

    with psycopg.connect(url.split("#")[0], autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                           (schema,))}


def test_a_fleet_of_three_postgresql_databases(pg_server, tmp_path: Path, catalog: Path) -> None:
    from planner.engines import engine_for
    from planner.plan import apply_plan

    urls = [pg_server.create_database() for _ in range(3)]
    loaded = load(catalog)
    for url, target in zip(urls, ("0001", None, None)):
        engine_for(url).runner(catalog=loaded).migrate(lambda ledger, t=target: apply_plan(loaded, ledger, target=t))
    listing = tmp_path / "databases.txt"
    listing.write_text("\n".join(urls) + "\n")
    status = fleet(tmp_path, catalog, "status", "--list", str(listing), "--json")
    assert status.returncode == 11, status.stderr
    assert [r["state"] for r in json.loads(status.stdout)["databases"]] == ["behind", "up_to_date", "up_to_date"]
    result = fleet(tmp_path, catalog, "migrate", "--list", str(listing), "--jobs", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert [r["outcome"] for r in json.loads(result.stdout)["databases"]] == ["applied", "nothing to do",
                                                                              "nothing to do"]
    assert all({"projects", "tasks"} <= pg_tables(url) for url in urls)
    import psycopg

    with psycopg.connect(urls[2], autocommit=True) as conn:
        conn.execute("ALTER TABLE projects ADD COLUMN archived_at text")
    drift = fleet(tmp_path, catalog, "status", "--list", str(listing), "--drift", "--json")
    assert drift.returncode == 10, drift.stderr
    rows = json.loads(drift.stdout)["databases"]
    assert [r["state"] for r in rows] == ["up_to_date", "up_to_date", "drifted"]
    assert [d["detail"] for d in rows[2]["differences"]] == [
        "table projects: column archived_at is in the database, not in its migrations"]


def test_a_fleet_of_tenant_schemas_in_one_database(pg_url: str, tmp_path: Path, catalog: Path) -> None:
    listing = tmp_path / "tenants.txt"
    listing.write_text(f"{pg_url}#tenant1\n{pg_url}#tenant2   # the second tenant\n")
    result = fleet(tmp_path, catalog, "migrate", "--list", str(listing), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["databases"]
    assert [r["outcome"] for r in rows] == ["applied", "applied"]
    assert rows[0]["db"].endswith("#tenant1")
    for schema in ("tenant1", "tenant2"):  # each tenant's tables and its own ledger in its own schema
        assert pg_tables(pg_url, schema) == {"projects", "tasks", "schema_migrations", "schema_migrations_log"}
    assert pg_tables(pg_url) == set()
    status = fleet(tmp_path, catalog, "status", "--list", str(listing), "--drift", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert [r["state"] for r in json.loads(status.stdout)["databases"]] == ["up_to_date", "up_to_date"]
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP INDEX tenant2.projects_by_name")
    status = fleet(tmp_path, catalog, "status", "--list", str(listing), "--drift", "--json")
    rows = json.loads(status.stdout)["databases"]
    assert [r["state"] for r in rows] == ["up_to_date", "drifted"]
    assert [d["detail"] for d in rows[1]["differences"]] == [
        "index tenant2.projects_by_name (0002) is missing from the database"]


# --------------------------------------------------------------------------
# Each database runs exactly as `apm migrate` runs it (tryout findings)
# --------------------------------------------------------------------------


def test_yes_prints_what_each_database_destroyed(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 2, target=None)
    with sqlite3.connect(paths[1]) as conn:
        conn.execute("INSERT INTO tasks (title) VALUES ('gone')")
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--rollback", "0003", "--yes", "--jobs", "1")
    assert result.returncode == 0, result.stderr
    assert f"{paths[1].relative_to(tmp_path)}: this run destroyed data, as confirmed:\n" \
           f"  0003 rollback: drops table tasks holding 1 row" in result.stderr
    assert result.stderr.count("destroyed data") == 1  # the other database lost nothing
    as_json = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--json")  # applies 0003 again
    assert [r.get("destroyed") for r in json.loads(as_json.stdout)["databases"]] == [None, None]


def test_a_step_outside_a_transaction_is_checked_statement_by_statement(tmp_path: Path, catalog: Path) -> None:
    write_migration(catalog, "0004", "Vacuum", depends_on=("0003",), extra="transactional = False\n",
                    upgrade="conn.execute('VACUUM')")
    paths = fleet_of(tmp_path, catalog, 2, target="0003")
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN)  # destroys nothing: no --yes needed
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(applied(p) == ["0001", "0002", "0003", "0004"] for p in paths)
    write_migration(catalog, "0005", "Drop tasks outside", depends_on=("0004",), extra="transactional = False\n",
                    upgrade="conn.execute('DROP TABLE tasks')")
    with sqlite3.connect(paths[0]) as conn:
        conn.execute("INSERT INTO tasks (title) VALUES ('keep me')")
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "1")
    assert result.returncode == 7, result.stdout + result.stderr
    assert "stopped before `DROP TABLE tasks`" in result.stdout and "drops table tasks holding 1 row" in result.stdout
    assert applied(paths[0])[-1] == "0004" and applied(paths[1])[-1] == "0005"  # the empty one lost nothing
    assert "--yes" in result.stdout.split("retry alone with")[1]
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "this run destroyed data, as confirmed:\n  0005 apply: drops table tasks holding 1 row" in result.stderr
    assert applied(paths[0])[-1] == "0005"


def test_a_skipped_canary_is_attention_not_only_an_unconfirmed_loss(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 3, target=None)
    with sqlite3.connect(paths[0]) as conn:
        conn.execute("INSERT INTO tasks (title) VALUES ('keep me')")
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--rollback", "0003", "--canary", "1", "--json")
    assert [r["outcome"] for r in json.loads(result.stdout)["databases"]] == ["skipped", "not started", "not started"]
    assert result.returncode == 11, result.stderr
    no_canary = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--rollback", "0003", "--json")
    assert no_canary.returncode == 7  # every database ran; the only problem is the loss not confirmed


@pytest.fixture
def indexed_catalog(tmp_path: Path) -> Path:
    """0001 tasks holding 30 rows; 0002 a plain CREATE INDEX on it (index-not-concurrent on PostgreSQL)."""
    folder = tmp_path / "pg_migrations"
    folder.mkdir()
    write_migration(folder, "0001", "Tasks", upgrade="conn.execute('CREATE TABLE tasks (id integer PRIMARY KEY, "
                    "title text)')\nconn.execute(\"INSERT INTO tasks SELECT g, 't' FROM generate_series(1, 30) g\")",
                    downgrade="conn.execute('DROP TABLE tasks')")
    write_migration(folder, "0002", "Index titles", depends_on=("0001",),
                    upgrade="conn.execute('CREATE INDEX tasks_by_title ON tasks (title)')",
                    downgrade="conn.execute('DROP INDEX tasks_by_title')")
    return folder


def test_postgresql_lock_findings_options_and_config_as_apm_migrate(pg_server, tmp_path: Path,
                                                                      indexed_catalog: Path) -> None:
    import psycopg

    from planner.engines import engine_for
    from planner.plan import apply_plan

    urls = [pg_server.create_database() for _ in range(2)]
    loaded = load(indexed_catalog)
    for url in urls:
        engine_for(url).runner(catalog=loaded).migrate(lambda ledger: apply_plan(loaded, ledger, target="0001"))
    listing = tmp_path / "pg.txt"
    listing.write_text("\n".join(urls) + "\n")
    for rehearsal in (("migrate", "--dry-run"), ("plan", "--rehearse")):
        result = fleet(tmp_path, indexed_catalog, *rehearsal, "--list", str(listing))
        assert result.returncode == 12, result.stdout + result.stderr
        assert result.stdout.count("index-not-concurrent on tasks (error)") == 2
    result = fleet(tmp_path, indexed_catalog, "migrate", "--list", str(listing), "--json")
    assert result.returncode == 12, result.stdout + result.stderr
    rows = json.loads(result.stdout)["databases"]
    assert [r["outcome"] for r in rows] == ["refused", "refused"]
    assert rows[0]["lock_findings"] == ["0002: index-not-concurrent on tasks (error)"]
    assert [json.loads(fleet(tmp_path, indexed_catalog, "status", "--list", str(listing), "--json").stdout)
            ["databases"][i]["state"] for i in (0, 1)] == ["behind", "behind"]
    (tmp_path / "apm.toml").write_text('lock_timeout = "100ms"\nlock_retries = 0\n')
    with psycopg.connect(urls[0]) as holder:  # holds a lock the index must wait for
        holder.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        from_config = fleet(tmp_path, indexed_catalog, "migrate", "--list", str(listing), "--jobs", "1",
                            "--allow", "index-not-concurrent", "--continue-on-error", "--json")
        from_option = fleet(tmp_path, indexed_catalog, "migrate", "--list", str(listing), "--jobs", "1",
                            "--allow", "index-not-concurrent", "--lock-retries", "1", "--json")
    rows = json.loads(from_config.stdout)["databases"]
    assert [r["outcome"] for r in rows] == ["failed", "applied"], from_config.stderr
    assert "within the lock timeout (100ms) in 1 attempt" in rows[0]["error"]
    assert "in 2 attempts" in json.loads(from_option.stdout)["databases"][0]["error"]
    assert from_config.returncode == 11


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find the worker processes")
def test_the_workers_exit_when_the_fleet_command_is_killed(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 6)
    apm_bin = Path(sys.executable).parent / "apm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    process = subprocess.Popen([str(apm_bin), "--migrations-dir", str(catalog), "fleet", "migrate", "--glob",
                                PATTERN, "--jobs", "2"], cwd=tmp_path, env={**env, "FLEET_TEST_SLEEP": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 2:
        workers = _children(process.pid)
        time.sleep(0.05)
    assert len(workers) == 2
    time.sleep(0.3)  # inside a migration's sleep
    os.kill(process.pid, signal.SIGKILL)  # the fleet command alone: its workers are not told
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.05)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
             and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    assert alive == []
    for path in paths:  # every database consistent: its ledger says exactly what its schema holds
        with sqlite3.connect(path) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert ("tasks" in tables) == ("0003" in applied(path))
    time.sleep(1.5)  # a worker left running would go on to the next database
    assert sum(applied(p) == ["0001", "0002", "0003"] for p in paths) <= 2


def test_resume_repeats_the_whole_request_and_may_add_yes(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 3, target=None)
    for path in paths:
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO tasks (title) VALUES ('gone')")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, time\n"
        f"c = sqlite3.connect({str(paths[1])!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        first = fleet(tmp_path, catalog, "--busy-timeout", "0.2", "migrate", "--glob", PATTERN, "--rollback", "0003",
                      "--yes", "--jobs", "1", "--json")
    finally:
        holder.kill()
        holder.wait()
    # The locked one is failed in its row and stops nothing: nothing ran there (it was never opened).
    assert [r["outcome"] for r in json.loads(first.stdout)["databases"]] == ["rolled back", "failed", "rolled back"]
    header = json.loads(next((tmp_path / ".apm-fleet").glob("run-*.jsonl")).read_text().splitlines()[0])
    assert header["request"]["yes"] is True and header["request"]["busy_timeout"] == 0.2
    assert header["options"] == {"jobs": 1, "canary": None, "continue_on_error": False}
    refused = fleet(tmp_path, catalog, "migrate", "--resume", "--jobs", "2")
    assert refused.returncode == 2 and "give no --jobs with it (only --yes and --continue-on-error may be added)" in refused.stderr
    resumed = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", PATTERN, "--json")  # the recorded --yes still holds
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [r["outcome"] for r in json.loads(resumed.stdout)["databases"]] == ["rolled back"]
    assert all(applied(p) == ["0001", "0002"] for p in paths)


def test_canary_zero_is_no_canary_and_a_last_failure_stops_nothing(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 3)
    break_unique_index(paths[2])
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--canary", "0", "--jobs", "1")
    assert result.returncode == 11, result.stderr
    assert [applied(p)[-1] for p in paths] == ["0003", "0003", "0001"]
    assert "Stopped:" not in result.stdout and "not started" not in result.stdout


def test_status_json_gives_null_counts_for_a_database_it_could_not_read(tmp_path: Path, catalog: Path) -> None:
    fleet_of(tmp_path, catalog, 1)
    project_db(tmp_path, "p01").write_text("not sqlite")
    rows = json.loads(fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--json").stdout)["databases"]
    assert [(r["state"], r["applied"], r["pending"]) for r in rows] == [("behind", 1, 2), ("not_a_database", None, None)]


def test_a_resume_may_add_continue_on_error_to_pass_a_database_that_always_fails(tmp_path: Path, catalog: Path) -> None:
    """Without it every resume stops at the same broken database, and the ones after it are never started."""
    paths = fleet_of(tmp_path, catalog, 3)
    break_unique_index(paths[0])
    first = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "1")
    assert first.returncode == 11 and "not started" in first.stdout, first.stdout
    again = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", PATTERN, "--json")
    assert [r["outcome"] for r in json.loads(again.stdout)["databases"]] == ["failed", "not started", "not started"]
    passed = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", PATTERN, "--continue-on-error", "--json")
    assert [r["outcome"] for r in json.loads(passed.stdout)["databases"]] == ["failed", "applied", "applied"]
    assert [applied(p)[-1] for p in paths] == ["0001", "0003", "0003"]


def test_an_empty_canary_is_a_usage_error_not_no_canary(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 2)
    for empty in ("", "  "):
        result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--canary", empty)
        assert result.returncode == 2 and "--canary is empty" in result.stderr, result.stderr
    assert all(applied(p) == ["0001"] for p in paths)  # nothing ran

