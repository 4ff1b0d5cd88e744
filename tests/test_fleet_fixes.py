"""`apm fleet`: refusals as their own outcome, and which spelling names a database given twice (issue 24).

Real SQLite files in project folders, through the installed command; the
catalog and helpers are those of tests/test_fleet.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import write_migration
from tests.test_fleet import PATTERN, applied, catalog, fleet, fleet_of, migrate_to  # noqa: F401 (catalog: a fixture)

# --------------------------------------------------------------------------
# A refusal is `refused`, not `failed`
# --------------------------------------------------------------------------


def without_downgrade(folder: Path) -> Path:
    """0004, on 0003, with no downgrade: a rollback of 0003 --cascade through it is refused (exit 4 alone)."""
    return write_migration(folder, "0004", "Archive", depends_on=("0003",), downgrade=None,
                           upgrade="conn.execute('CREATE TABLE archive (id INTEGER PRIMARY KEY)')")


def test_a_plan_refusal_is_refused_with_its_reason_journaled_and_resumed(tmp_path: Path, catalog: Path) -> None:
    migration = without_downgrade(catalog)
    paths = fleet_of(tmp_path, catalog, 3, target=None)
    paths[2].unlink()
    migrate_to(paths[2], catalog, target="0003")  # p00, p01 hold 0004; p02 stops at 0003
    request = ("migrate", "--glob", PATTERN, "--rollback", "0003", "--cascade", "--jobs", "1")

    shown = fleet(tmp_path, catalog, *request)
    # Every problem is the planner's refusal: `apm migrate`'s exit 4, and a refusal stops no other database.
    assert shown.returncode == 4, shown.stdout + shown.stderr
    assert "1 rolled back, 2 refused" in shown.stdout
    rows = shown.stdout.split("retry alone with")[1].strip().splitlines()[1:3]
    assert [row.split()[:2] for row in rows] == [[str(p.relative_to(tmp_path)), "refused"] for p in paths[:2]]
    assert all("0004 define no downgrade(conn); nothing was changed" in row for row in rows)
    assert rows[0].rstrip().endswith(f"migrate --db {paths[0]} --rollback 0003 --cascade")  # pasted anywhere
    assert "Stopped:" not in shown.stdout and "failed" not in shown.stdout
    assert [applied(p) for p in paths] == [["0001", "0002", "0003", "0004"]] * 2 + [["0001"]]

    journal = next((tmp_path / ".apm-fleet").glob("run-*.jsonl"))
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [r["outcome"] for r in records if r["type"] == "member"] == ["refused", "refused", "rolled back"]

    # The refusal lifted (the migration gets its downgrade): --resume runs the refused databases, only those.
    migration.write_text(migration.read_text() + "\n\ndef downgrade(conn):\n    conn.execute('DROP TABLE archive')\n")
    resumed = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", PATTERN, "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    document = json.loads(resumed.stdout)
    assert [(r["db"], r["outcome"]) for r in document["databases"]] == \
        [(str(p.relative_to(tmp_path)), "rolled back") for p in paths[:2]]
    assert [applied(p) for p in paths] == [["0001", "0002"]] * 2 + [["0001"]]


def test_refused_in_json_and_exit_codes_beside_other_problems(tmp_path: Path, catalog: Path) -> None:
    without_downgrade(catalog)
    paths = fleet_of(tmp_path, catalog, 2, target=None)
    result = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--rollback", "0003", "--cascade", "--json")
    assert result.returncode == 4, result.stderr
    document = json.loads(result.stdout)
    assert document["summary"] == {"refused": 2}
    assert all(r["outcome"] == "refused" and "define no downgrade" in r["error"] for r in document["databases"])

    # A refusal beside a failure is not "only refusals": 11, each keeping its own outcome.
    paths[1].write_text("not a database\n")
    mixed = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--rollback", "0003", "--cascade", "--json",
                  "--jobs", "1")
    assert mixed.returncode == 11, mixed.stderr
    assert [r["outcome"] for r in json.loads(mixed.stdout)["databases"]] == ["refused", "failed"]

    # A refused canary is no success: nothing else starts.
    canary = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--rollback", "0003", "--cascade", "--json",
                   "--canary", "1")
    assert canary.returncode == 11, canary.stderr
    assert [r["outcome"] for r in json.loads(canary.stdout)["databases"]] == ["refused", "not started"]


def test_plan_and_dry_run_say_refused_and_exit_4(tmp_path: Path, catalog: Path) -> None:
    without_downgrade(catalog)
    paths = fleet_of(tmp_path, catalog, 2, target=None)
    plan = fleet(tmp_path, catalog, "plan", "--glob", PATTERN, "--rollback", "0003", "--cascade")
    assert plan.returncode == 4, plan.stdout + plan.stderr
    assert f"{paths[0].relative_to(tmp_path)}: refused: cannot roll back" in plan.stdout
    as_json = json.loads(fleet(tmp_path, catalog, "plan", "--glob", PATTERN, "--rollback", "0003", "--cascade",
                               "--json").stdout)
    assert [r["refused"] for r in as_json["databases"]] == [True, True]
    rehearsal = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--rollback", "0003", "--cascade",
                      "--dry-run", "--json")
    assert rehearsal.returncode == 4, rehearsal.stderr
    assert [r["outcome"] for r in json.loads(rehearsal.stdout)["databases"]] == ["refused", "refused"]
    assert all(applied(p)[-1] == "0004" for p in paths)


def test_the_progress_line_counts_refused_databases(capsys) -> None:
    from cli.fleet_output import RunProgress
    from planner.fleet.members import member
    from planner.fleet.run import MemberFinished, MemberOutcome, MemberStarted

    progress = RunProgress(2)
    one, two = member("a.db"), member("b.db")
    progress.event(MemberStarted(one, "all"))
    progress.event(MemberFinished(MemberOutcome(one, "refused", error="cannot roll back: ...")))
    progress.event(MemberStarted(two, "all"))
    shown = capsys.readouterr().err
    assert "a.db: refused: cannot roll back: ..." in shown
    assert "done 1, failed 0, refused 1, running 1 of 2: b.db" in shown


def test_a_rehearsal_total_counts_only_plans_that_would_commit_and_the_summary_keeps_one_order(capsys) -> None:
    """A plan that fails on its database commits nothing there: its loss lines are shown with it, but the total
    of what the fleet would lose leaves it out and says so. The summary lists outcomes in one fixed order."""
    from cli.fleet_output import loss_total, summary_line
    from planner.fleet.members import member
    from planner.fleet.run import FleetResult, MemberOutcome

    rehearsed = MemberOutcome(member("a.db"), "rehearsed", loss=["drops table tasks holding 2 rows"], lost=2)
    failing = MemberOutcome(member("b.db"), "failed", loss=["drops table tasks holding 5 rows"], lost=5)
    quiet = MemberOutcome(member("c.db"), "rehearsed")
    loss_total([rehearsed, failing, quiet])
    assert "In total: 1 database(s) would lose data (2 row(s) or value(s); 1 more whose plan fails, not counted)" \
        in capsys.readouterr().out
    loss_total([failing, quiet])
    assert "No plan that would commit loses data (1 more whose plan fails, not counted)" in capsys.readouterr().out

    outcomes = [MemberOutcome(member(f"{i}.db"), name) for i, name in
                enumerate(["not started", "failed", "applied", "nothing to do", "applied"])]
    assert summary_line(FleetResult(outcomes, None, False)) == "2 applied, 1 nothing to do, 1 failed, 1 not started"


def test_the_progress_line_fits_the_terminal(capsys, monkeypatch) -> None:
    """A progress line that wraps is not rewritten in place (``\\r`` returns to its last row only): on an
    100-column terminal each update is at most 99 characters, naming as many databases as fit."""
    from cli.fleet_output import RunProgress
    from planner.fleet.members import member
    from planner.fleet.run import MemberStarted

    monkeypatch.setenv("COLUMNS", "100")
    progress = RunProgress(30)
    for name in ("alpha", "beta", "gamma", "delta"):
        progress.event(MemberStarted(member(f"/home/someone/projects/{name}/.aipm/data/aipm.db"), "all"))
    updates = [u.replace("\033[K", "") for u in capsys.readouterr().err.split("\r") if u]
    assert len(updates) == 4 and all(len(u) <= 99 for u in updates), [len(u) for u in updates]
    assert updates[-1].startswith("done 0, failed 0, running 4 of 30: /home/someone/projects/alpha/")
    assert updates[-1].endswith(" and 3 more"), updates[-1]


# --------------------------------------------------------------------------
# apm migrate check on PostgreSQL counts only the steps its lock preview ran
# --------------------------------------------------------------------------


def test_check_counts_only_what_its_lock_preview_ran_and_names_what_it_passed_over(pg_url: str,
                                                                                   tmp_path: Path) -> None:
    from tests.conftest import run_apm

    folder = tmp_path / "migrations"
    folder.mkdir()
    write_migration(folder, "0001", "Projects", depends_on=(), downgrade="conn.execute('DROP TABLE projects')",
                    upgrade="conn.execute('CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT)')")
    write_migration(folder, "0002", "Vacuum", depends_on=("0001",), extra="transactional = False\n",
                    upgrade="conn.execute('VACUUM projects')")
    write_migration(folder, "0003", "Tasks", depends_on=("0001",), downgrade="conn.execute('DROP TABLE tasks')",
                    upgrade="conn.execute('CREATE TABLE tasks (id INTEGER PRIMARY KEY)')")
    result = run_apm("migrate", "check", "--db", pg_url, "--migrations-dir", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    note = next(line for line in result.stdout.splitlines() if line.startswith("locks:"))
    assert note.startswith("locks: previewed 2 of 3 pending step(s) in one transaction, rolled back")
    assert note.endswith("; passed over (it runs only outside a transaction and changes no schema or data): "
                         "0002 `VACUUM projects`")
    report = json.loads(run_apm("migrate", "check", "--db", pg_url, "--migrations-dir", str(folder),
                                "--json").stdout)
    assert report["locks"]["previewed"] == ["0001", "0003"]
    assert report["locks"]["passed_over"] == ["0002 `VACUUM projects`"]


# --------------------------------------------------------------------------
# A database given twice is named by the first spelling given
# --------------------------------------------------------------------------


def rows(result) -> list[tuple[str, str]]:
    document = json.loads(result.stdout)
    return [(r["db"], r.get("state") or r.get("outcome")) for r in document["databases"]]


def test_a_database_given_twice_is_shown_as_first_given_on_the_command_line(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 2)
    first = str(paths[0].relative_to(tmp_path))
    os.symlink(paths[0], tmp_path / "link.db")
    (tmp_path / "dbs.txt").write_text("link.db\n")
    # A list given before a glob comes first, whatever kind of option it is: its spelling names the database.
    listed_first = fleet(tmp_path, catalog, "status", "--list", "dbs.txt", "--glob", PATTERN, "--json")
    assert rows(listed_first) == [("link.db", "behind"), (str(paths[1].relative_to(tmp_path)), "behind")]
    globbed_first = fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--list=dbs.txt", "--json")
    assert rows(globbed_first)[0] == (first, "behind") and len(rows(globbed_first)) == 2
    dotted = fleet(tmp_path, catalog, "status", "--glob", f"./{first}", "--glob", first, "--glob", "link.db", "--json")
    assert rows(dotted) == [(f"./{first}", "behind")]
    undotted = fleet(tmp_path, catalog, "status", "--glob", first, "--glob", f"./{first}", "--json")
    assert rows(undotted) == [(first, "behind")]
    # The same in a run, its journal and its retry line.
    run = fleet(tmp_path, catalog, "migrate", "--list", "dbs.txt", "--glob", PATTERN, "--json")
    assert rows(run) == [("link.db", "applied"), (str(paths[1].relative_to(tmp_path)), "applied")]


def test_a_resume_finds_a_database_spelled_otherwise(tmp_path: Path, catalog: Path) -> None:
    from tests.test_fleet import break_unique_index

    paths = fleet_of(tmp_path, catalog, 2)
    os.symlink(paths[0], tmp_path / "link.db")
    break_unique_index(paths[0])
    first = fleet(tmp_path, catalog, "migrate", "--glob", "link.db", "--glob", PATTERN, "--jobs", "1",
                  "--continue-on-error", "--json")
    assert rows(first) == [("link.db", "failed"), (str(paths[1].relative_to(tmp_path)), "applied")]
    import sqlite3

    with sqlite3.connect(paths[0]) as conn:
        conn.execute("DELETE FROM projects WHERE name = 'twin' AND id > (SELECT min(id) FROM projects)")
    # Given by the glob alone now: the journal's record of link.db is the same database's.
    resumed = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", PATTERN, "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert rows(resumed) == [(str(paths[0].relative_to(tmp_path)), "applied")]
    assert applied(paths[0]) == ["0001", "0002", "0003"]


# --------------------------------------------------------------------------
# Tryout finding 15's neighbours: what could not be read is unknown, never 0 or empty
# --------------------------------------------------------------------------


def test_an_unread_ledger_has_no_counts_and_no_head_in_the_table_or_json(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 2)
    paths[1].write_text("not sqlite")
    (tmp_path / "fresh.db").write_bytes(b"")  # read, and empty: zero applied and no head are facts here
    document = json.loads(fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--glob", "fresh.db",
                                "--json").stdout)
    assert [(r["state"], r["applied"], r["head"]) for r in document["databases"]] == \
        [("behind", 1, ["0001"]), ("not_a_database", None, None), ("behind", 0, [])]
    table = fleet(tmp_path, catalog, "status", "--glob", PATTERN).stdout.splitlines()
    unread = next(line for line in table if "not a database" in line).split("not a database")[1].split()
    assert unread[:4] == ["-", "-", "-", "-"]  # applied, pending, head, last applied at


def test_the_sqlite_engine_reads_a_fleet_members_ledger_as_facts_about_the_file(tmp_path: Path) -> None:
    """Issue 23: the fleet's fast reading is the SQLite engine's (``EngineKind.ledger_reader``); each failure is
    the library's error about the file, which the fleet turns into a state, and nothing is created."""
    import sqlite3

    from planner.engines import kind_of
    from planner.errors import DatabaseError, ForeignLedger, NotADatabase

    read = kind_of(tmp_path / "a.db").load(kind_of(tmp_path / "a.db").ledger_reader or "")
    missing = tmp_path / "missing.db"
    with pytest.raises(DatabaseError, match="does not exist"):
        read(str(missing), 1.0)
    assert not missing.exists()
    with pytest.raises(NotADatabase, match="is a folder"):
        read(str(tmp_path), 1.0)
    (tmp_path / "notes.txt").write_text("not a database, only words " * 100)
    with pytest.raises(NotADatabase, match="not a SQLite database"):
        read(str(tmp_path / "notes.txt"), 1.0)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE schema_migrations (name TEXT, run_on TEXT)")
    with pytest.raises(ForeignLedger):
        read(str(foreign), 1.0)
    fresh = tmp_path / "fresh.db"
    sqlite3.connect(fresh).close()
    assert read(str(fresh), 1.0) == ({}, None)


def cut_short(path: Path) -> None:
    """A process killed mid-transaction on ``path``: its hot journal is left beside it (SIGKILL-like exit)."""
    import subprocess
    import sys

    code = ("import os, sqlite3, sys\n"
            "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "conn.execute('PRAGMA cache_size = 1')\n"  # pages spill to the file: the journal must be rolled back
            "conn.execute('BEGIN IMMEDIATE')\n"
            "conn.execute('CREATE TABLE half_written (x)')\n"
            "for _ in range(500):\n"
            "    conn.execute('INSERT INTO half_written VALUES (randomblob(2000))')\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    assert Path(f"{path}-journal").exists()


@pytest.mark.parametrize("drift", [(), ("--drift",)])
def test_a_member_a_killed_run_left_half_written_reads_as_its_last_commit(tmp_path: Path, catalog: Path,
                                                                          drift: tuple[str, ...]) -> None:
    """A hot journal made `fleet status` call the database unreachable ("attempt to write a readonly database")
    while `apm status` read it: the engine's first open rolls it back, as every other command's does."""
    paths = fleet_of(tmp_path, catalog, 2, target=None)
    cut_short(paths[1])
    result = fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--json", *drift)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [state for _db, state in rows(result)] == ["up_to_date", "up_to_date"]
    assert not Path(f"{paths[1]}-journal").exists()
    import sqlite3

    with sqlite3.connect(paths[1]) as conn:  # what the killed run half wrote is gone, its last commit is there
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_written'").fetchone() == (0,)
    assert applied(paths[1]) == ["0001", "0002", "0003"]


def outcomes(result) -> list[str]:
    return [state for _db, state in rows(result)]


def test_a_resume_keeps_the_first_runs_canaries_and_never_makes_a_failing_database_one(tmp_path: Path,
                                                                                      catalog: Path) -> None:
    """A resume chose its canaries afresh from the unfinished databases: the one that failed came first, so it
    was a canary of every resume and stopped the rest, --continue-on-error or not."""
    from tests.test_fleet import break_unique_index

    paths = fleet_of(tmp_path, catalog, 6)
    break_unique_index(paths[2])  # fails every time, after both canaries succeeded
    first = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "1", "--canary", "2", "--json")
    assert outcomes(first) == ["applied", "applied", "failed", "not started", "not started", "not started"]
    resumed = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", PATTERN, "--continue-on-error", "--json")
    assert outcomes(resumed) == ["failed", "applied", "applied", "applied"], resumed.stdout
    assert [applied(p) for p in paths[3:]] == [["0001", "0002", "0003"]] * 3


def test_a_canary_that_failed_runs_first_again_unless_continue_on_error_is_added(tmp_path: Path,
                                                                                  catalog: Path) -> None:
    from tests.test_fleet import break_unique_index

    paths = fleet_of(tmp_path, catalog, 4)
    break_unique_index(paths[0])
    first = fleet(tmp_path, catalog, "migrate", "--glob", PATTERN, "--jobs", "1", "--canary", "1", "--json")
    assert outcomes(first) == ["failed", "not started", "not started", "not started"]
    again = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", PATTERN, "--json")  # the staged rollout holds: it stops again
    assert outcomes(again) == ["failed", "not started", "not started", "not started"]
    waived = fleet(tmp_path, catalog, "migrate", "--resume", "--glob", PATTERN, "--continue-on-error", "--json")
    assert outcomes(waived) == ["failed", "applied", "applied", "applied"]


@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)])
def test_a_failed_database_names_the_step_that_failed_not_every_step_of_its_plan(tmp_path: Path,
                                                                                 dry_run: tuple[str, ...]) -> None:
    """`failed 0001, 0002, 0003: migration 0003 failed` read as if all three had failed."""
    folder = tmp_path / "steps"
    folder.mkdir()
    write_migration(folder, "0001", "One", upgrade="conn.execute('CREATE TABLE one (id INTEGER)')",
                    downgrade="conn.execute('DROP TABLE one')")
    write_migration(folder, "0002", "Two", depends_on=("0001",), upgrade="conn.execute('CREATE TABLE two (id INTEGER)')",
                    downgrade="conn.execute('DROP TABLE two')")
    write_migration(folder, "0003", "Three", depends_on=("0002",), upgrade="raise RuntimeError('no three')",
                    downgrade="pass")
    from tests.test_fleet import project_db

    project_db(tmp_path, "p00").parent.mkdir(parents=True, exist_ok=True)
    project_db(tmp_path, "p00").write_bytes(b"")
    result = fleet(tmp_path, folder, "migrate", "--glob", PATTERN, *dry_run)
    line = next(line for line in result.stdout.splitlines() if line.startswith("projects/p00/"))
    listed = line.split(": failed", 1)[1].split(": migration 0003 failed")[0].split()  # the steps it names
    assert listed == (["0003"] if dry_run else []), line  # a real run committed nothing: it names no step


@pytest.mark.parametrize(("outcome", "footer"), [("failed", False), ("refused", True)])
def test_the_lock_findings_footer_follows_a_refusal_only(capsys, outcome: str, footer: bool) -> None:
    """A database that failed on a lock timeout had lock findings from its preview too: the footer told how to
    accept findings that no row showed and that stopped nothing."""
    from cli.fleet_output import report
    from planner.fleet.members import member
    from planner.fleet.run import FleetResult, MemberOutcome
    from planner.request import Request

    done = MemberOutcome(member("a.db"), outcome, error="migration 0005 could not get its lock ...")
    done.lock_findings = ["0002: index-not-concurrent on items (error)"]
    import click

    with click.Context(click.Command("migrate")):  # the retry line reads the command's settings
        report(FleetResult([done], None, False), Request(), "")
    assert ("Lock findings: accept them" in capsys.readouterr().out) is footer


def test_a_glob_the_shell_expanded_is_a_usage_error_that_says_to_quote_it(tmp_path: Path, catalog: Path) -> None:
    paths = fleet_of(tmp_path, catalog, 2)
    expanded = [str(p.relative_to(tmp_path)) for p in paths]
    for command in ("status", "plan", "migrate"):
        result = fleet(tmp_path, catalog, command, "--glob", *expanded)
        assert result.returncode == 2, result.stderr
        assert "the shell expanded the pattern; quote it" in result.stderr and "Traceback" not in result.stderr
    assert fleet(tmp_path, catalog, "status", "--glob", expanded[0], "--glob", expanded[1]).returncode == 11
