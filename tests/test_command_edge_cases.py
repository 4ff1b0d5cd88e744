"""The installed ``apm`` at its edges: empty or misspelled arguments, interruptions, locks, odd databases.

Each test names the promise it checks, through the command a user types.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_migration

APM = Path(sys.executable).parent / "apm"
pytestmark = pytest.mark.skipif(not APM.exists(), reason="the apm console script is not installed (pip install -e .)")


def apm(*args: str, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_") and k != "NO_COLOR"}
    env.update(kwargs.pop("env", {}))
    return subprocess.run([str(APM), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
                          **kwargs)


def ledger(db: Path) -> list[str]:
    """The recorded versions; ``[]`` when there is no database or no ledger yet (nothing is created)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").fetchone():
            return []
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        conn.close()


def tables(db: Path) -> set[str]:
    if not db.exists():
        return set()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def creates(table: str) -> dict:
    return dict(upgrade=f"conn.execute('CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT)')",
                downgrade=f"conn.execute('DROP TABLE {table}')")


@pytest.fixture
def chain(catalog_dir: Path) -> Path:
    """0001 → 0002 → 0003, each creating a table."""
    write_migration(catalog_dir, "0001", depends_on=(), **creates("one"))
    write_migration(catalog_dir, "0002", depends_on=("0001",), **creates("two"))
    write_migration(catalog_dir, "0003", depends_on=("0002",), **creates("three"))
    return catalog_dir


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


def base(db: Path, catalog: Path) -> list[str]:
    return ["--db", str(db), "--migrations-dir", str(catalog)]


# The structure: one version type, one rollback rule ------------------------------------------


def test_rows_that_are_not_versions_break_no_command(chain, db):
    apm(*base(db, chain), "migrate")
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO schema_migrations (version) VALUES (?)", [("²",), ("abc",), ("31",)])
    conn.commit()
    conn.close()
    for args, code in ((["status"], 0), (["migrate", "--show-applied"], 0), (["migrate", "check"], 4),
                       (["migrate", "doctor"], 6), (["migrate", "graph"], 0), (["migrate", "plan"], 0)):
        result = apm(*base(db, chain), *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    shown = apm(*base(db, chain), "migrate", "--show-applied").stdout
    assert "abc" in shown and "²" in shown and "missing" in shown
    assert "not-a-version" in apm(*base(db, chain), "migrate", "check").stdout


def test_the_rollback_rule_is_the_same_for_the_plan_and_the_diagram(chain, db):
    apm(*base(db, chain), "migrate")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_migrations (version) VALUES ('31')")  # a file deleted since, spelled short
    conn.commit()
    conn.close()
    run = apm(*base(db, chain), "migrate", "--rollback", "0031")
    drawn = apm(*base(db, chain), "migrate", "graph", "--rollback", "0031")
    assert run.returncode == drawn.returncode == 4
    assert run.stderr.splitlines()[-1] == drawn.stderr.splitlines()[-1]
    assert "recorded as applied but has no file" in run.stderr


# 1 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["migrate", "--rollback", ""], ["migrate", "--rollback", "  "], ["migrate", "--mark-applied", ""],
    ["migrate", "--mark-rolled-back", ""], ["migrate", "plan", "--rollback", ""], ["migrate", "--target", ""],
    ["migrate", "graph", "--focus", ""],
])
def test_an_empty_version_is_a_usage_error_and_nothing_runs(chain, db, args):
    apm(*base(db, chain), "migrate", "--target", "0001")
    before = ledger(db)
    result = apm(*base(db, chain), *args)
    assert result.returncode == 2, result.stderr
    assert "an empty version" in result.stderr
    assert ledger(db) == before == ["0001"]


def test_an_empty_path_is_a_usage_error(chain, tmp_path):
    result = apm("--db", "", "--migrations-dir", str(chain), "migrate", cwd=tmp_path)
    assert result.returncode == 2 and "empty path" in result.stderr
    assert list(tmp_path.iterdir()) == [chain.parent / "migrations"] or not (tmp_path / ".aipm").exists()


# 2 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, shown", [
    ("import sys; sys.exit(0)", "called sys.exit(0)"),
    ("import sys; sys.exit(3)", "called sys.exit(3)"),
    ("raise KeyboardInterrupt", "raised KeyboardInterrupt"),
    ("raise SystemExit('bye')", "called sys.exit('bye')"),
    ("raise GeneratorExit", "raised GeneratorExit"),
])
@pytest.mark.parametrize("yes", [False, True], ids=["previewed", "no-preview"])
def test_a_migration_that_exits_fails_its_step(catalog_dir, db, body, shown, yes):
    write_migration(catalog_dir, "0001", depends_on=(), **creates("one"))
    write_migration(catalog_dir, "0002", depends_on=("0001",),
                    upgrade=f"conn.execute('CREATE TABLE two (x)')\n{body}")
    result = apm(*base(db, catalog_dir), "migrate", *(["--no-preview"] if yes else []))
    assert result.returncode == 5, result.stdout + result.stderr
    assert "migration 0002 failed during apply" in result.stderr and shown in result.stderr
    assert "two" not in tables(db)
    # The default runs the plan in one transaction and commits nothing; --no-preview keeps the steps before.
    assert ledger(db) == (["0001"] if yes else [])


# 3 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [[], ["--no-preview"]], ids=["previewed", "no-preview"])
def test_ctrl_c_during_a_run_rolls_the_step_back_and_exits_130(catalog_dir, db, tmp_path, mode):
    running = tmp_path / "running"
    write_migration(catalog_dir, "0001", depends_on=(), **creates("one"))
    write_migration(
        catalog_dir, "0002", depends_on=("0001",), downgrade="pass",
        upgrade=f"conn.execute('CREATE TABLE two (x)')\nimport pathlib, time\n"
                f"pathlib.Path({str(running)!r}).write_text('x')\ntime.sleep(60)",
    )
    write_migration(catalog_dir, "0003", depends_on=("0002",), **creates("three"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    process = subprocess.Popen([str(APM), *base(db, catalog_dir), "migrate", *mode], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not running.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.exists(), "migration 0002 never started"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "Traceback" not in err and "Aborted" not in err
    if mode:  # step by step: what committed stays, and the message says exactly what that is
        assert "interrupted: applied 1 of 3 step(s) (0001)" in err and "the database is consistent" in err
        assert ledger(db) == ["0001"]
    else:  # one transaction: nothing was committed
        assert "interrupted; nothing was changed" in err
        assert ledger(db) == []
    assert "two" not in tables(db)
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_ctrl_c_at_the_confirmation_prompt_changes_nothing(chain, db):
    import pty
    import select

    apm(*base(db, chain), "migrate")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO three (v) VALUES ('data')")
    conn.commit()
    conn.close()
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    process = subprocess.Popen([str(APM), *base(db, chain), "migrate", "--rollback", "0003"], stdin=slave,
                               stdout=slave, stderr=slave, env=env)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while b"Proceed?" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            seen += os.read(master, 4096)
    assert b"Proceed?" in seen, seen
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    try:
        while select.select([master], [], [], 0.5)[0]:
            seen += os.read(master, 4096)
    except OSError:
        pass
    os.close(master)
    assert process.returncode == 130, seen
    assert b"nothing was changed" in seen and b"Aborted" not in seen
    assert ledger(db) == ["0001", "0002", "0003"]
    assert not list(db.parent.glob("app.db.backup.*"))


# 4 ------------------------------------------------------------------------------------------


def test_debug_adds_the_traceback_and_keeps_the_exit_code(chain, db, catalog_dir):
    apm(*base(db, chain), "migrate")
    refused = apm(*base(db, chain), "--debug", "migrate", "--rollback", "0001")
    assert refused.returncode == 4 and "Traceback" in refused.stderr and "RollbackRefused" in refused.stderr
    write_migration(catalog_dir, "0004", depends_on=("0099",))
    broken = apm(*base(db, chain), "--debug", "migrate")
    assert broken.returncode == 3 and "Traceback" in broken.stderr


# 5 ------------------------------------------------------------------------------------------


def test_new_never_reuses_a_version_the_ledger_holds(chain, db):
    apm(*base(db, chain), "migrate")
    (chain / "migration_0003.py").unlink()  # applied, then its file deleted
    result = apm(*base(db, chain), "migrate", "new", "Add widgets")
    assert result.returncode == 0, result.stderr
    assert (chain / "migration_0004_add_widgets.py").exists()
    assert not list(chain.glob("migration_0003*"))


# 6 ------------------------------------------------------------------------------------------


def test_a_ledger_made_by_another_tool_is_refused_untouched(chain, db):
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_migrations (installed_rank INTEGER PRIMARY KEY, version TEXT, "
                 "script TEXT NOT NULL, success INTEGER)")
    conn.execute("INSERT INTO schema_migrations VALUES (1, '1', 'V1__init.sql', 1)")
    conn.commit()
    before = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    for args in (["migrate"], ["migrate", "--yes"], ["migrate", "plan"], ["status"],
                 ["migrate", "--mark-applied", "0001"]):
        result = apm(*base(db, chain), *args)
        assert result.returncode == 6, (args, result.stderr)
        assert "made by another tool" in result.stderr and "nothing was changed" in result.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall() == before
    conn.close()


def test_the_seed_ledger_is_still_upgraded_in_place(chain, db):
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, applied_at TIMESTAMP)")
    conn.execute("CREATE TABLE one (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO schema_migrations VALUES ('1', 'old', '2025-10-18')")
    conn.commit()
    conn.close()
    result = apm(*base(db, chain), "migrate")
    assert result.returncode == 0, result.stderr
    assert ledger(db) == ["0002", "0003", "1"]


# 7 ------------------------------------------------------------------------------------------


def test_the_seed_rebuild_pattern_runs_with_a_warning_in_the_log(catalog_dir, db):
    write_migration(catalog_dir, "0001", depends_on=(), upgrade="""
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id))")
        conn.execute("INSERT INTO parent VALUES (1, 'p')")
        conn.execute("INSERT INTO child VALUES (1, 1)")
    """)
    write_migration(catalog_dir, "0002", depends_on=("0001",), upgrade="""
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT, extra TEXT)")
        conn.execute("INSERT INTO parent_new (id, name) SELECT id, name FROM parent")
        conn.execute("DROP TABLE parent")
        conn.execute("ALTER TABLE parent_new RENAME TO parent")
        conn.execute("PRAGMA foreign_keys = ON")
    """)
    result = apm(*base(db, catalog_dir), "migrate")
    assert result.returncode == 0, result.stderr
    assert ledger(db) == ["0001", "0002"]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM child").fetchone() == (1,)
    detail = conn.execute("SELECT detail FROM schema_migrations_log WHERE version = '0002' "
                          "AND action = 'apply'").fetchone()[0]
    conn.close()
    assert "ignored: PRAGMA foreign_keys = OFF; PRAGMA foreign_keys = ON" in detail


# 8 ------------------------------------------------------------------------------------------


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
conn.execute("CREATE TABLE IF NOT EXISTS lock_holder (x)")
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def locked(chain, db):
    apm(*base(db, chain), "migrate", "--target", "0002")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield db
    holder.kill()
    holder.wait()


@pytest.mark.parametrize("args", [["migrate"], ["migrate", "--yes"], ["migrate", "--rollback", "0002", "--yes"],
                                  ["migrate", "--dry-run"]])
def test_busy_timeout_is_honoured_on_every_path(chain, locked, args):
    started = time.monotonic()
    result = apm(*base(locked, chain), "--busy-timeout", "2", *args)
    elapsed = time.monotonic() - started
    assert result.returncode == 6, result.stderr
    assert "locked" in result.stderr
    # The default timeout is 30 s, and the backup API alone used to retry forever: anything near 2 s is the option.
    assert elapsed < 15, elapsed
    assert not list(locked.parent.glob("app.db.backup.*"))


# 9 ------------------------------------------------------------------------------------------


def test_a_rollback_that_cannot_write_leaves_no_backup(chain, db):
    apm(*base(db, chain), "migrate")
    db.chmod(0o444)
    try:
        result = apm(*base(db, chain), "migrate", "--rollback", "0003", "--yes")
    finally:
        db.chmod(0o644)
    assert result.returncode == 6 and "read-only" in result.stderr
    assert not list(db.parent.glob("app.db.backup.*"))
    assert ledger(db) == ["0001", "0002", "0003"]


# 10 -----------------------------------------------------------------------------------------


def test_a_folder_as_database_is_a_database_problem(chain, tmp_path):
    folder = tmp_path / "adir"
    folder.mkdir()
    for args in (["migrate"], ["status"], ["migrate", "plan"], ["migrate", "--show-applied"]):
        result = apm("--db", str(folder), "--migrations-dir", str(chain), *args)
        assert result.returncode == 6, (args, result.stderr)
        assert "is a folder, not a database file" in result.stderr


def test_read_only_advice_names_the_folder(chain, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "app.db"
    sqlite3.connect(db).close()
    folder.chmod(0o555)
    try:
        result = apm("--db", str(db), "--migrations-dir", str(chain), "migrate", "--yes")
    finally:
        folder.chmod(0o755)
    assert result.returncode == 6
    assert f"folder {folder} is read-only" in result.stderr


# 11 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["migrate"], ["migrate", "plan"]])
def test_a_catalog_error_lists_every_problem(catalog_dir, db, command):
    write_migration(catalog_dir, "0001", depends_on=("0005",))
    write_migration(catalog_dir, "0002", depends_on=("0007",))
    (catalog_dir / "migration_3x.py").write_text("")
    result = apm(*base(db, catalog_dir), *command)
    assert result.returncode == 3
    assert "has 3 problems" in result.stderr
    for expected in ("migration_3x.py", "0001 depends on 0005", "0002 depends on 0007"):
        assert expected in result.stderr
    assert not db.exists()


# 12 -----------------------------------------------------------------------------------------


def test_check_against_a_database_not_made_yet_is_a_lint(chain, db):
    result = apm(*base(db, chain), "migrate", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "does not exist yet" in result.stdout and not db.exists()


# 13 -----------------------------------------------------------------------------------------


def test_duplicate_versions_get_distinct_free_versions(catalog_dir, db):
    write_migration(catalog_dir, "0001", depends_on=())
    write_migration(catalog_dir, "0002", depends_on=("0001",), slug="a")
    write_migration(catalog_dir, "0002", depends_on=("0001",), slug="b")
    write_migration(catalog_dir, "0003", depends_on=("0001",), slug="a")
    write_migration(catalog_dir, "3", depends_on=("0001",), slug="c")
    write_migration(catalog_dir, "0004", depends_on=("0001",))
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, applied_at TEXT)")
    conn.execute("INSERT INTO schema_migrations VALUES ('0005', 'deleted file', NULL)")
    conn.commit()
    conn.close()
    result = apm(*base(db, catalog_dir), "migrate", "check", "--json")
    import json

    report = json.loads(result.stdout)
    fixes = [f["fix"] for f in report["findings"] if f["code"] == "duplicate-version"]
    assert len(fixes) == 2
    targets = [fix.split()[3] for fix in fixes]
    assert targets == ["migration_0006_b.py", "migration_0007_c.py"], fixes
    # Following the advice leaves a catalog without duplicates.
    for fix in fixes:
        old, new = fix.split()[2], fix.split()[3]
        (catalog_dir / old).rename(catalog_dir / new)
    again = json.loads(apm(*base(db, catalog_dir), "migrate", "check", "--json").stdout)
    assert not [f for f in again["findings"] if f["code"] == "duplicate-version"]


# 14 -----------------------------------------------------------------------------------------


def test_an_edited_applied_file_is_warned_about(chain, db):
    apm(*base(db, chain), "migrate", "--target", "0002")
    path = chain / "migration_0002.py"
    path.write_text(path.read_text() + "\n# edited after it was applied\n")
    for args in (["migrate"], ["status"]):
        result = apm(*base(db, chain), *args)
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
        assert warnings == ["Warning: migration_0002.py changed since 0002 was applied; the database holds what "
                            "the old text did (see `apm migrate check`)"]
    assert apm(*base(db, chain), "migrate", "check", "--strict").returncode != 0


# 15 -----------------------------------------------------------------------------------------


OTHER_ROLLBACK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")           # another runner rolls 0002 back, holding the write lock
conn.execute("DROP TABLE two")
conn.execute("DELETE FROM schema_migrations WHERE version = '0002'")
print("holding", flush=True)
sys.stdin.readline()                      # ...until the test says the other apm is waiting for the lock
conn.execute("COMMIT")
"""


def test_a_run_plans_inside_the_lock_when_another_process_changed_the_ledger(chain, db):
    """apm plans 0003 from a ledger that still has 0002; by the time it has the lock, 0002 was rolled back."""
    apm(*base(db, chain), "migrate", "--target", "0002")
    other = subprocess.Popen([sys.executable, "-c", OTHER_ROLLBACK, str(db)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "holding"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    run = subprocess.Popen([str(APM), *base(db, chain), "migrate"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(3)  # apm starts, plans from the old ledger, and waits for the lock
    other.stdin.write("go\n")
    other.stdin.flush()
    other.wait(timeout=30)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, out + err
    assert "planned again" in err
    assert ledger(db) == ["0001", "0002", "0003"] and {"two", "three"} <= tables(db)


def test_without_the_preview_a_stale_plan_is_planned_again(chain, db):
    from planner.engines.sqlite.runner import Executor
    from planner.loader import load_catalog
    from planner.plan import apply_plan, rollback_plan

    catalog = load_catalog(chain)
    Executor(db, create=True, catalog=catalog).run(apply_plan(catalog, [], target="0002"))
    stale = apply_plan(catalog, ledger(db))
    Executor(db, catalog=catalog).run(rollback_plan(catalog, ledger(db), "0002"))
    seen = []
    result = Executor(db, catalog=catalog).migrate(lambda entries: apply_plan(catalog, entries), seen.append,
                                                   plan=stale)
    assert result.replans == 1 and [s.version for s in result.done] == ["0002", "0003"]
    assert ledger(db) == ["0001", "0002", "0003"]


# 16 -----------------------------------------------------------------------------------------


def test_dry_run_json_with_nothing_to_do_has_the_rehearsal_shape(chain, db):
    import json

    apm(*base(db, chain), "migrate")
    result = apm(*base(db, chain), "migrate", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["steps"] == [] and report["format"] == 2 and report["ok"] is True


# 18 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, hint", [
    (["rollback", "0011"], "`apm migrate --rollback 0011`"),
    (["show-applied"], "`apm migrate --show-applied`"),
    (["list"], "`apm migrate --list`"),
])
def test_an_option_typed_as_a_subcommand_gets_its_spelling(chain, db, args, hint):
    result = apm(*base(db, chain), "migrate", *args)
    assert result.returncode == 2
    assert hint in result.stderr
    assert not db.exists()


# 19 -----------------------------------------------------------------------------------------


def test_the_readme_tour_shows_what_status_prints(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("after that cascade rollback:", 1)[1].split("$ apm migrate\n", 1)[0]
    shown = [line for line in block.splitlines() if line and not line.startswith(("```", "$"))]
    assert apm("migrate", cwd=tmp_path).returncode == 0
    assert apm("migrate", "--rollback", "0027", "--cascade", "--yes", cwd=tmp_path).returncode == 0
    status = apm("status", cwd=tmp_path)
    assert status.stdout.splitlines() == shown
    assert apm("migrate", cwd=tmp_path).returncode == 0
    assert apm("agents", "show", "audit-logger", cwd=tmp_path).returncode == 0


def test_no_doc_speaks_of_issues_or_unfinished_work():
    root = Path(__file__).resolve().parent.parent
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = path.read_text()
        for phrase in ("(issue ", "issue #", "once it is built", "is built (", "not built yet", "TODO"):
            assert phrase not in text, f"{path.name} says {phrase!r}"


@pytest.mark.parametrize("given", ["option", "env", "config"])
@pytest.mark.parametrize("url", ["postgresq://app:s3cret-pw@/appdb?host=/tmp/x", "postgresql//app:s3cret-pw@/appdb",
                                 "mysql://app:s3cret-pw@localhost/appdb",
                                 "Postgresql://app:s3cret-pw@/appdb"])  # libpq knows the scheme in lower case only
def test_a_misspelled_url_is_a_usage_error_never_a_sqlite_file(tmp_path, given, url):
    """A typo in the scheme once made a SQLite file named after the URL, migrated it, and printed the password."""
    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001")
    args = ["migrate", "--migrations-dir", str(folder)]
    env = {}
    if given == "option":
        args += ["--db", url]
    elif given == "env":
        env["APM_DB"] = url
    else:
        (tmp_path / "apm.toml").write_text(f'db = "{url}"\n')
    result = apm(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not a PostgreSQL one" in result.stderr and "Traceback" not in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")) == (
        ["apm.toml"] if given == "config" else [])


def test_ctrl_c_during_a_step_outside_any_transaction_says_what_stays(catalog_dir, db, tmp_path):
    """Such a step cannot be rolled back, so the message must not call the database consistent."""
    running = tmp_path / "running"
    write_migration(catalog_dir, "0001", depends_on=(), **creates("one"))
    write_migration(catalog_dir, "0002", depends_on=("0001",), extra="transactional = False\n",
                    upgrade=f"conn.execute('CREATE TABLE two (x)')\nimport pathlib, time\n"
                            f"pathlib.Path({str(running)!r}).write_text('x')\ntime.sleep(60)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    process = subprocess.Popen([str(APM), *base(db, catalog_dir), "migrate", "--yes"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not running.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "0002 was running outside any transaction" in err and "apm migrate doctor" in err
    assert "the database is consistent" not in err and "rolled back" not in err
    assert ledger(db) == ["0001"] and "two" in tables(db)  # what it did stays, as the message says
    doctor = apm(*base(db, catalog_dir), "migrate", "doctor")
    assert doctor.returncode == 6 and "interrupted-non-transactional" in doctor.stdout
