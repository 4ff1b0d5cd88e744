"""The `apm` command through click's test runner: every option and every error path."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import apm
from tests.conftest import write_migration


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(apm, list(args), env=env)


def ok(*args: str, env: dict | None = None) -> str:
    result = invoke(*args, env=env)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "app.db"


@pytest.fixture
def chain(catalog_dir: Path) -> Path:
    """0001 → 0002 → 0003, and 0004 on 0001 alone; each creates a table named after it."""
    for version, needs in (("0001", ()), ("0002", ("0001",)), ("0003", ("0002",)), ("0004", ("0001",))):
        write_migration(catalog_dir, version, f"Create t{version}", depends_on=needs,
                        upgrade=f"conn.execute('CREATE TABLE t{version} (id INTEGER)')",
                        downgrade=f"conn.execute('DROP TABLE t{version}')")
    return catalog_dir


def tables(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                if not n.startswith(("schema_migrations", "sqlite_"))}
    finally:
        conn.close()


def test_version_and_help() -> None:
    assert "apm, version" in ok("--version")
    assert "migrate" in ok("--help")


def test_help_does_not_import_networkx() -> None:
    code = ("import sys; from cli.main import apm\n"
            "try:\n    apm(['--help'], prog_name='apm')\nexcept SystemExit:\n    pass\n"
            "assert 'networkx' not in sys.modules, 'networkx imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_db_option_before_and_after_subcommand(chain: Path, db: Path, tmp_path: Path) -> None:
    ok("--db", str(db), "--migrations-dir", str(chain), "migrate", "--target", "0001")
    assert tables(db) == {"t0001"}
    other = tmp_path / "other.db"
    ok("migrate", "--db", str(other), "--migrations-dir", str(chain), "--target", "0002")
    assert tables(other) == {"t0001", "t0002"}
    # The option nearest the subcommand wins over the top-level one.
    ok("--db", str(db), "migrate", "plan", "--db", str(other), "--migrations-dir", str(chain))
    assert "0003" in ok("--db", str(db), "migrate", "--migrations-dir", str(chain), "--list")


def test_environment_variables(chain: Path, db: Path) -> None:
    env = {"APM_DB": str(db), "APM_MIGRATIONS_DIR": str(chain)}
    out = ok("migrate", env=env)
    assert "Applied 0004" in out and tables(db) == {"t0001", "t0002", "t0003", "t0004"}


def test_read_only_commands_never_create_the_database(chain: Path, db: Path) -> None:
    for args in (["migrate", "--list"], ["migrate", "--show-applied"], ["migrate", "plan"], ["status"]):
        ok("--db", str(db), "--migrations-dir", str(chain), *args)
        assert not db.exists() and not db.parent.exists(), args


def test_apply_creates_folders_and_reports_each_step(chain: Path, db: Path) -> None:
    out = ok("--db", str(db), "--migrations-dir", str(chain), "migrate")
    lines = [line for line in out.splitlines() if line.startswith("Applied")]
    assert [line.split()[1] for line in lines] == ["0001", "0002", "0003", "0004"]
    assert all(line.endswith("ms)") for line in lines)
    assert ok("--db", str(db), "--migrations-dir", str(chain), "migrate").strip() == "Nothing to apply"


def test_list_and_plan(chain: Path, db: Path) -> None:
    base = ("--db", str(db), "--migrations-dir", str(chain))
    ok(*base, "migrate", "--target", "0002")
    listed = json.loads(ok(*base, "migrate", "--list", "--json"))
    assert listed == [
        {"version": "0003", "description": "Create t0003", "depends_on": ["0002"], "reversible": True,
         "irreversible": None},
        {"version": "0004", "description": "Create t0004", "depends_on": ["0001"], "reversible": True,
         "irreversible": None},
    ]
    text = ok(*base, "migrate", "plan")
    assert "Apply plan: 2 migration(s)" in text and text.index("0003") < text.index("0004")
    rollback = json.loads(ok(*base, "migrate", "plan", "--rollback", "0001", "--cascade", "--json"))
    assert [s["version"] for s in rollback["steps"]] == ["0002", "0001"]
    assert rollback["direction"] == "rollback" and rollback["cascade"] is True
    target = json.loads(ok(*base, "migrate", "plan", "--target", "0003", "--json"))
    assert [s["version"] for s in target["steps"]] == ["0003"]


def test_plan_exit_code_says_whether_there_is_anything_to_do_and_writes_nothing(chain: Path, db: Path) -> None:
    """Issue 22, point 13: 9 when the plan has steps (either direction), 0 when it has none; nothing written."""
    from tests.conftest import run_apm

    base = ("--db", str(db), "--migrations-dir", str(chain), "migrate", "plan", "--exit-code")
    fresh = run_apm(*base)
    assert fresh.returncode == 9, fresh.stderr
    assert "Apply plan: 4 migration(s)" in fresh.stdout and not db.exists()  # shown as ever, nothing created
    ok("--db", str(db), "--migrations-dir", str(chain), "migrate", "--target", "0003")
    before = db.read_bytes()
    cases = [((), 9), (("--target", "0003"), 0), (("--target", "0004"), 9), (("--rollback", "0003"), 9),
             (("--rollback", "0001", "--cascade"), 9), (("--to", "0003"), 0), (("--to", "0002"), 9),
             (("--to", "base"), 9), (("--json",), 9), (("--rehearse",), 9), (("--rollback", "0003", "--sql"), 9)]
    for args, code in cases:
        result = run_apm(*base, *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
    assert json.loads(run_apm(*base, "--json").stdout)["steps"][0]["version"] == "0004"
    assert db.read_bytes() == before  # byte for byte: no ledger row, no table, nothing
    assert sorted(p.name for p in db.parent.iterdir()) == ["app.db"]  # no journal, no backup
    ok("--db", str(db), "--migrations-dir", str(chain), "migrate")
    done = run_apm(*base)
    assert done.returncode == 0 and "Nothing to apply" in done.stdout
    assert run_apm(*base, "--rollback", "0004").returncode == 9  # a rollback is something to do
    # A refused plan keeps its own exit code: it is neither "nothing" nor "something" to do.
    assert run_apm(*base, "--rollback", "0001").returncode == 4
    assert run_apm("--db", str(db), "--migrations-dir", str(chain), "migrate", "plan").returncode == 0


def test_show_applied_reports_drift(chain: Path, db: Path) -> None:
    base = ("--db", str(db), "--migrations-dir", str(chain))
    ok(*base, "migrate")
    (chain / "migration_0002.py").write_text((chain / "migration_0002.py").read_text() + "\n# edited\n")
    (chain / "migration_0004.py").unlink()
    shown = {row["version"]: row for row in json.loads(ok(*base, "migrate", "--show-applied", "--json"))}
    assert shown["0001"]["file"] == "ok" and shown["0002"]["file"] == "changed"
    assert shown["0004"]["file"] == "missing" and shown["0001"]["applied_at"]
    assert "changed" in ok(*base, "migrate", "--show-applied")


def test_refused_rollback_changes_nothing(chain: Path, db: Path) -> None:
    base = ("--db", str(db), "--migrations-dir", str(chain))
    ok(*base, "migrate")
    before = db.read_bytes()
    result = invoke(*base, "migrate", "--rollback", "0002")
    assert result.exit_code == 4
    assert "0003" in result.output and "apm migrate --rollback 0002 --cascade" in result.output
    assert "Traceback" not in result.output and db.read_bytes() == before
    plan = invoke(*base, "migrate", "plan", "--rollback", "0002")
    assert plan.exit_code == 4 and "--cascade" in plan.output


def test_rollback_json_and_backup(chain: Path, db: Path) -> None:
    base = ("--db", str(db), "--migrations-dir", str(chain))
    ok(*base, "migrate")
    report = json.loads(ok(*base, "migrate", "--rollback", "0002", "--cascade", "--json"))
    assert [r["version"] for r in report["results"]] == ["0003", "0002"]
    assert all(r["status"] == "rolled_back" for r in report["results"])
    assert report["backup"] and Path(report["backup"]).exists()
    assert tables(db) == {"t0001", "t0004"}
    assert tables(Path(report["backup"])) == {"t0001", "t0002", "t0003", "t0004"}


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["migrate", "--target", "0099"], 4, "0099 is not in the catalog"),
        (["migrate", "--rollback", "0003"], 6, "does not exist"),  # no database at all: a database problem
        (["migrate", "--list", "--show-applied"], 2, "cannot be used together"),
        (["migrate", "--cascade"], 2, "--cascade only makes sense with --rollback"),
        (["migrate", "plan", "--target", "0002", "--rollback", "0001"], 2, "choose one"),
        (["migrate", "--list", "plan"], 2, "go after the subcommand"),
    ],
)
def test_usage_and_refusals(chain: Path, db: Path, args: list[str], code: int, words: str) -> None:
    result = invoke("--db", str(db), "--migrations-dir", str(chain), *args)
    assert result.exit_code == code, result.output
    assert words in result.output and "Traceback" not in result.output


def test_bad_catalog_exit_3(catalog_dir: Path, db: Path) -> None:
    write_migration(catalog_dir, "0001", depends_on=("0005",))
    (catalog_dir / "migration_7a.py").write_text("")
    result = invoke("--db", str(db), "--migrations-dir", str(catalog_dir), "migrate")
    assert result.exit_code == 3
    # Every problem, with its file and version, not the first one and a count (issue 12, defect 11).
    assert "has 2 problems" in result.output
    assert "  - migration_7a.py" in result.output
    assert "  - migration_0001.py: 0001 depends on 0005" in result.output
    assert "apm migrate check" in result.output
    assert len(result.output.strip().splitlines()) == 3 and not db.exists()  # a summary, then one line each


def test_missing_migrations_dir(tmp_path: Path, db: Path) -> None:
    result = invoke("--db", str(db), "--migrations-dir", str(tmp_path / "nope"), "migrate", "--list")
    assert result.exit_code == 3 and "does not exist" in result.output


def test_failed_migration_exit_5_keeps_earlier_steps(catalog_dir: Path, db: Path) -> None:
    write_migration(catalog_dir, "0001", upgrade="conn.execute('CREATE TABLE a (x)')")
    write_migration(catalog_dir, "0002", upgrade="conn.execute('CREATE TABLE b (x)')\nconn.execute('INSERT INTO nope VALUES (1)')")
    # The plan runs in one transaction: the failure rolls back everything, 0001 included, even with --yes.
    for extra in ([], ["--yes"]):
        result = invoke("--db", str(db), "--migrations-dir", str(catalog_dir), "migrate", *extra)
        assert result.exit_code == 5
        assert "0002" in result.output and "no such table: nope" in result.output
        assert "nothing was committed" in result.output and not db.exists()
    # Without the preview, 0001 commits and 0002 rolls back alone.
    result = invoke("--db", str(db), "--migrations-dir", str(catalog_dir), "migrate", "--no-preview")
    assert result.exit_code == 5 and "no such table: nope" in result.output
    assert "Applied 0001" in result.output and tables(db) == {"a"}


def test_debug_shows_the_traceback_and_keeps_the_exit_code(chain: Path, db: Path) -> None:
    result = invoke("--db", str(db), "--migrations-dir", str(chain), "--debug", "migrate", "--target", "0099")
    assert result.exit_code == 4, result.output  # a refusal, as without --debug (issue 12, defect 4)
    assert "Traceback" in result.output and "MigrationNotFound" in result.output


def test_not_a_database_exit_6(chain: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    before = bogus.read_bytes()
    for args in (["migrate"], ["migrate", "--list"], ["status"]):
        result = invoke("--db", str(bogus), "--migrations-dir", str(chain), *args)
        assert result.exit_code == 6, (args, result.output)
        assert "not a SQLite database" in result.output
    assert bogus.read_bytes() == before


#: Every command that opens the database named by --db (``apm migrate docs`` and ``apm config`` never open it).
DB_COMMANDS = [["status"], ["agents", "list"], ["migrate"], ["migrate", "plan"], ["migrate", "plan", "--exit-code"],
               ["migrate", "--list"], ["migrate", "--show-applied"], ["migrate", "--rollback", "0002"],
               ["migrate", "--to", "0001"], ["migrate", "--baseline", "0001"], ["migrate", "--mark-applied", "0001"],
               ["migrate", "--mark-rolled-back", "0001"], ["migrate", "--dry-run"], ["migrate", "check"],
               ["migrate", "check", "--fix", "--yes"], ["migrate", "doctor"], ["migrate", "restore", "--yes"],
               ["migrate", "backups"], ["migrate", "graph"], ["migrate", "new", "more"],
               ["migrate", "squash", "0001", "0002"]]


def test_a_folder_as_database_is_one_error_and_exit_6_for_every_command(chain: Path, tmp_path: Path) -> None:
    """Issue 22, point 18: doctor said the folder "does not exist", check exited 0; status said it is a folder."""
    from tests.conftest import run_apm

    folder = tmp_path / "adir"
    folder.mkdir()
    files = sorted(p.name for p in chain.iterdir() if p.name != "__pycache__")  # Python's cache is not ours
    for args in DB_COMMANDS:
        result = run_apm("--db", str(folder), "--migrations-dir", str(chain), *args)
        assert result.returncode == 6, (args, result.stdout, result.stderr)
        assert result.stderr == f"Error: {folder} is a folder, not a database file; pass the database file's path " \
                                f"with --db\n", args
    assert sorted(p.name for p in chain.iterdir() if p.name != "__pycache__") == files and not any(folder.iterdir())
    # The default database, when it is a folder, is refused by check too (it was skipped as "not there").
    (tmp_path / ".aipm" / "data" / "aipm.db").mkdir(parents=True)
    check = run_apm("--migrations-dir", str(chain), "migrate", "check", cwd=tmp_path)
    assert check.returncode == 6 and "is a folder, not a database file" in check.stderr


def test_status_and_agents_on_the_shipped_catalog(tmp_path: Path) -> None:
    db = tmp_path / "aipm.db"
    status = json.loads(ok("--db", str(db), "status", "--json"))
    assert status["exists"] is False and status["pending"] == 5 and status["agents"] is None
    ok("--db", str(db), "migrate")
    status = json.loads(ok("--db", str(db), "status", "--json"))
    assert status["schema_version"] == "0030" and status["applied"] == 5 and status["pending"] == 0
    assert status["agents"] == {"total": 5, "active": 5, "by_tier": {"3": 5}}
    text = ok("--db", str(db), "status")
    assert "Heads:           0029, 0030" in text and "Agents:          5" in text
    listed = ok("--db", str(db), "agents", "list")
    assert "context-assembler" in listed and "migration_0029" in listed
    shown = json.loads(ok("agents", "--db", str(db), "show", "audit-logger", "--json"))
    assert shown["metadata"]["source"] == "migration_0029" and shown["tier"] == 3
    assert "metadata:" in ok("--db", str(db), "agents", "show", "audit-logger")
    missing = invoke("--db", str(db), "agents", "show", "nobody")
    assert missing.exit_code == 4 and "apm agents list" in missing.output


def test_status_shows_the_heads_and_counts_not_the_highest_applied_version(tmp_path: Path) -> None:
    """Issue 22, point 19: one applied of many showed "Schema version: 0014"; the heads and counts say the state."""
    from tests.conftest import run_apm

    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", documented=())
    for version in ("0002", "0003", "0004"):
        write_migration(folder, version, depends_on=("0001",))
    write_migration(folder, "0014", depends_on=("0001",))
    write_migration(folder, "0015", depends_on=("0014",))
    db = tmp_path / "app.db"
    base = ("--db", str(db), "--migrations-dir", str(folder))
    assert run_apm(*base, "migrate", "--target", "0014").returncode == 0
    text = run_apm(*base, "status").stdout
    assert "Schema version" not in text
    assert "Applied:         2 of 6\nPending:         4\nHeads:           0014\n" in text
    assert json.loads(run_apm(*base, "status", "--json").stdout)["heads"] == ["0014"]
    assert run_apm(*base, "migrate", "--target", "0003").returncode == 0
    assert "Heads:           0003, 0014" in run_apm(*base, "status").stdout  # one head per line of the graph
    for gone in ("0014", "0015"):  # an applied row with no file is no head, and is counted apart
        (folder / f"migration_{gone}.py").unlink()
    text = run_apm(*base, "status").stdout
    assert "Applied:         2 of 4 (and 1 with no file)" in text and "Heads:           0003\n" in text


def test_agents_without_table(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    result = invoke("--db", str(db), "agents", "list")
    assert result.exit_code == 6 and "run `apm migrate`" in result.output
    missing = invoke("--db", str(tmp_path / "none.db"), "agents", "list")
    assert missing.exit_code == 6 and "does not exist" in missing.output


def test_installed_entry_point_runs(tmp_path: Path) -> None:
    """The real console script, in an empty folder, on the embedded default."""
    apm_bin = Path(sys.executable).parent / "apm"
    if not apm_bin.exists():
        pytest.skip("the apm console script is not installed in this environment (pip install -e .)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    run = lambda *a: subprocess.run([str(apm_bin), *a], cwd=tmp_path, capture_output=True, text=True, env=env)
    plan = run("migrate", "plan")
    assert plan.returncode == 0 and "0029" in plan.stdout and not (tmp_path / ".aipm").exists()
    applied = run("migrate")
    assert applied.returncode == 0 and (tmp_path / ".aipm" / "data" / "aipm.db").exists()
    refused = run("migrate", "--rollback", "0027")
    assert refused.returncode == 4 and refused.stderr.startswith("Error: cannot roll back 0027")
    assert "Traceback" not in refused.stderr
    # Without a terminal a data-destroying cascade is refused; on a real terminal (a pty) it asks.
    refused = run("migrate", "--rollback", "0027", "--cascade")
    assert refused.returncode == 7 and "--yes" in refused.stderr
    answered = answer_on_a_terminal([str(apm_bin), "migrate", "--rollback", "0027", "--cascade"], "y\n",
                                    cwd=tmp_path, env=env)
    assert answered.returncode == 0, answered.stdout
    assert "This plan destroys data" in answered.stdout and "Rolled back 0029" in answered.stdout


def answer_on_a_terminal(argv: list[str], answer: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a command whose standard input is a real pseudo-terminal, typing ``answer`` into it."""
    import pty

    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(argv, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, **kwargs)
        os.close(slave)
        os.write(master, answer.encode())
        out, _ = process.communicate(timeout=60)
    finally:
        os.close(master)
    return subprocess.CompletedProcess(argv, process.returncode, out, "")


def test_atomic_runs_the_whole_plan_or_nothing(catalog_dir: Path, db: Path) -> None:
    write_migration(catalog_dir, "0001", upgrade="conn.execute('CREATE TABLE a (x)')")
    write_migration(catalog_dir, "0002", upgrade="conn.execute('CREATE TABLE b (x)')\nconn.execute('INSERT INTO nope VALUES (1)')")
    base = ("--db", str(db), "--migrations-dir", str(catalog_dir), "migrate")
    result = invoke(*base, "--atomic")
    assert result.exit_code == 5 and "no such table: nope" in result.output
    assert not db.exists()  # nothing committed, and no new file left behind
    result = invoke(*base, "--atomic", "--no-preview")
    assert result.exit_code == 5 and "no such table: nope" in result.output
    assert tables(db) == set()  # 0001 was rolled back with the rest
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone() == (0,)
    conn.close()


def test_busy_timeout_gives_up_with_a_clear_error(chain: Path, db: Path) -> None:
    base = ("--db", str(db), "--migrations-dir", str(chain))
    ok(*base, "migrate", "--target", "0001")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        before = tables(db)
        result = invoke(*base, "--busy-timeout", "0.2", "migrate", "--yes")
        assert result.exit_code == 6, result.output
        assert "locked" in result.output and "--busy-timeout" in result.output
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert tables(db) == before


def test_a_device_is_not_a_database_and_nothing_is_logged(chain: Path) -> None:
    result = invoke("--db", "/dev/null", "--migrations-dir", str(chain), "migrate", "--yes")
    assert result.exit_code == 6 and "/dev/null is not a SQLite database" in result.output
    assert "Traceback" not in result.output


def test_tables_are_laid_out_as_tabulate_lays_them_out() -> None:
    """``cli.output.table`` lays out the common table itself (a fleet's thousand rows, 20 times faster) and hands
    anything else to tabulate: either way, the text is tabulate's ``simple`` format, byte for byte."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from tabulate import tabulate

    from cli.output import table

    text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12)
    cell = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), text, st.just(" padded "),
                     st.just("two\nlines"), st.just("\x1b[31mred\x1b[0m"), st.floats(0, 1e7, allow_nan=False))

    @settings(max_examples=300, deadline=None)
    @given(st.integers(1, 5).flatmap(lambda width: st.tuples(
        st.lists(text, min_size=width, max_size=width), st.lists(st.lists(cell, min_size=width, max_size=width),
                                                                  max_size=6))))
    def same(table_parts) -> None:
        headers, rows = table_parts
        assert table(rows, headers) == tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)

    same()
