"""The engine contract, each guarantee stated once and run on SQLite and PostgreSQL.

Every test takes the ``engine`` fixture: a real SQLite file, or a database on
the suite's PostgreSQL server (skipped without one). A third engine is done
when this file passes on it.

- A migration cannot end, commit or leave the plan's transaction by any
  route (``planner.transaction_guard``): each route below, used by a
  migration that then returns (the refusal swallowed) or raises, leaves
  exit 5, none of its table, the ledger as it was, on the previewed path and
  with ``--no-preview``.
- The backup before a rollback holds exactly the state the rollback starts
  from: it is taken inside the lock, after planning again there.
- Re-planning happens when another process changed the ledger, and is counted.
- The marks work: ``--mark-applied`` / ``--mark-rolled-back`` write (or remove)
  the ledger row and log it, running nothing; a refused mark changes nothing.
- The doctor runs clean on a healthy database: no error, no warning but
  ``no-backups`` before the first backup, none after.
- SIGKILL at random moments leaves the ledger equal to the schema, and the
  next run completes (a real ``apm migrate`` process, seeded kill times).
- The preview's loss lines are identical on both engines.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_apm, write_migration

# -- the engines -------------------------------------------------------------------------------------------


@dataclass
class Handle:
    """One database on one engine, and how the tests look inside it."""

    name: str
    db: str  # what --db takes: a path or a URL

    def query(self, sql: str) -> list[tuple]:
        if self.name == "sqlite":
            conn = sqlite3.connect(self.db)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.db, autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    def tables(self) -> set[str]:
        if self.name == "sqlite":
            return {r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {r[0] for r in self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}

    def ledger(self) -> list[str]:
        return [r[0] for r in self.query("SELECT version FROM schema_migrations ORDER BY version")]

    def raw_connection(self):
        """A driver connection inside an open transaction, as the runner hands it to a migration."""
        if self.name == "sqlite":
            conn = sqlite3.connect(self.db, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            return conn
        import psycopg

        conn = psycopg.connect(self.db, autocommit=True)
        conn.execute("BEGIN")
        return conn

    def proxy(self, conn):
        """The connection a migration receives, over ``conn``."""
        if self.name == "sqlite":
            from planner.engines.sqlite.connection import MigrationConnection

            return MigrationConnection(conn, "0002")
        from planner.engines.postgresql.connection import PgMigrationConnection

        return PgMigrationConnection(conn, "0002")

    def engine(self, backup_dir: Path | None = None):
        from planner.engines import engine_for

        return engine_for(self.db, backup_dir=backup_dir)


ENGINES = ("sqlite", "postgresql")


@pytest.fixture(params=ENGINES)
def engine(request, tmp_path: Path) -> Handle:
    """A fresh database on each engine."""
    if request.param == "sqlite":
        return Handle("sqlite", str(tmp_path / "app.db"))
    return Handle("postgresql", request.getfixturevalue("pg_url"))


def apm(handle: Handle, catalog: Path, *args: str):
    """The command in this process (the CLI's own code, without a process start per route): exit code and output."""
    from click.testing import CliRunner

    from cli.main import apm as command

    result = CliRunner().invoke(command, [*args, "--db", handle.db, "--migrations-dir", str(catalog)])
    return result.exit_code, result.output


# -- routes out of the transaction ---------------------------------------------------------------------------

BOTH = ("sqlite", "postgresql")
PG = ("postgresql",)
SQLITE = ("sqlite",)

#: Routes the guard refuses: the migration swallows the refusal and returns, and must still fail. (Each spelling
#: of a statement, END, ROLLBACK, BEGIN..., is checked below statement by statement, against the same rules.)
REFUSED = {
    "execute COMMIT": (BOTH, 'conn.execute("COMMIT")'),
    "execute commit with comments and TRANSACTION": (BOTH, 'conn.execute("  -- done\\n /* now */ commit TRANSACTION;")'),
    "executemany COMMIT": (BOTH, 'conn.executemany("COMMIT", [()])'),
    "executescript with COMMIT": (BOTH, 'conn.executescript("CREATE TABLE other (id INTEGER); COMMIT;")'),
    "cursor().execute": (BOTH, 'conn.cursor().execute("COMMIT")'),
    "cursor().executemany": (BOTH, 'conn.cursor().executemany("COMMIT", [()])'),
    "the cursor execute returned": (BOTH, 'conn.execute("SELECT 1").execute("COMMIT")'),
    "cursor.connection.execute": (BOTH, 'conn.cursor().connection.execute("COMMIT")'),
    "cursor.connection.rollback()": (BOTH, 'conn.execute("SELECT 1").connection.rollback()'),
    "rollback()": (BOTH, "conn.rollback()"),
    "close()": (BOTH, "conn.close()"),
    "autocommit = True": (BOTH, "conn.autocommit = True"),
    "isolation_level": (BOTH, "conn.isolation_level = None"),
    "transaction()": (BOTH, "with conn.transaction():\n    pass"),
    "set_autocommit()": (BOTH, "conn.set_autocommit(True)"),
    "interrupt()": (BOTH, "conn.interrupt()"),
    "pgconn": (BOTH, 'conn.pgconn.exec_(b"COMMIT")'),
    "set_authorizer()": (BOTH, "conn.set_authorizer(None)"),
    "set_progress_handler()": (BOTH, "conn.set_progress_handler(None, 1)"),
    "set_trace_callback()": (BOTH, "conn.set_trace_callback(None)"),
    "cursor().executescript": (SQLITE, 'conn.cursor().executescript("COMMIT;")'),
    "several statements in one execute": (PG, 'conn.execute("CREATE TABLE other (id INTEGER); COMMIT")'),
    "COMMIT after a nested comment": (PG, 'conn.execute("/* a /* nested */ comment */ COMMIT")'),
    "PREPARE TRANSACTION": (PG, "conn.execute(\"PREPARE TRANSACTION 'apm_escape'\")"),
    "CALL of a procedure that commits": (PG, 'conn.execute("CREATE PROCEDURE escape_now() LANGUAGE plpgsql '
                                             'AS $$ BEGIN COMMIT; END $$")\nconn.execute("CALL escape_now()")'),
    "DO block that commits": (PG, 'conn.execute("DO $$ BEGIN COMMIT; END $$")'),
    "RELEASE of the runner's savepoint": (PG, 'conn.execute("RELEASE SAVEPOINT apm_preview_step")'),
    "ROLLBACK TO the runner's savepoint": (PG, 'conn.execute("rollback to savepoint \\"apm_preview_watch\\"")'),
    "raw.execute": (PG, 'conn.raw.execute("COMMIT")'),
    "raw.cursor().execute": (PG, 'conn.raw.cursor().execute("COMMIT")'),
    "raw.transaction()": (PG, "with conn.raw.transaction():\n    pass"),
    "raw.autocommit": (PG, "conn.raw.autocommit = True"),
    "raw.pgconn": (PG, 'conn.raw.pgconn.exec_(b"COMMIT")'),
    "raw.info.pgconn": (PG, 'conn.raw.info.pgconn.exec_(b"COMMIT")'),
    "raw.pipeline()": (PG, "with conn.raw.pipeline():\n    pass"),
    "raw.tpc_begin()": (PG, 'conn.raw.tpc_begin("apm_escape")'),
    "raw.rollback()": (PG, "conn.raw.rollback()"),
    "raw.close()": (PG, "conn.raw.close()"),
    "cursor().copy": (PG, 'with conn.cursor().copy("COMMIT"):\n    pass'),
    "cursor().stream": (PG, 'list(conn.cursor().stream("COMMIT"))'),
}

#: Routes that stay open because they do nothing to the transaction: the migration raises after them.
HARMLESS = {
    "commit()": (BOTH, "conn.commit()"),
    "with conn:": (BOTH, 'with conn:\n    conn.execute("INSERT INTO escaped VALUES (1)")'),
    "cursor.connection.commit()": (BOTH, "conn.cursor().connection.commit()"),
    "raw.commit()": (PG, "conn.raw.commit()"),
    "with conn.raw:": (PG, 'with conn.raw:\n    conn.raw.execute("INSERT INTO escaped VALUES (1)")'),
}

PATHS = {"previewed": (), "no-preview": ("--no-preview",)}


def _cases(routes: dict) -> list:
    return [pytest.param(engine, name, path, id=f"{engine}-{name}-{path}")
            for name, (engines, _code) in routes.items() for engine in engines for path in PATHS]


def _catalog(catalog_dir: Path, body: str) -> Path:
    write_migration(catalog_dir, "0001", "Kept", upgrade='conn.execute("CREATE TABLE kept (id INTEGER)")')
    write_migration(catalog_dir, "0002", "Route", depends_on=("0001",), upgrade=body)
    return catalog_dir


@pytest.fixture(scope="module")
def pg_routes_url(pg_server) -> str:
    """One PostgreSQL database for every route: each leaves it as it found it (that is what is checked)."""
    return pg_server.create_database()


@pytest.fixture
def applied_0001(request, tmp_path: Path, catalog_dir: Path):
    """0001 applied, so the ledger has a row that must stay the only one (``indirect``: the engine's name)."""
    if request.param == "sqlite":
        handle = Handle("sqlite", str(tmp_path / "app.db"))
    else:
        handle = Handle("postgresql", request.getfixturevalue("pg_routes_url"))
    _catalog(catalog_dir, "pass")
    code, output = apm(handle, catalog_dir, "migrate", "--target", "0001")
    assert code == 0, output
    yield handle
    if handle.name == "postgresql":  # what a failing (or the one succeeding) case left, so the next starts clean
        import psycopg

        with psycopg.connect(handle.db, autocommit=True) as conn:
            for (gid,) in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"):
                conn.execute(f"ROLLBACK PREPARED '{gid}'")
            conn.execute("DROP TABLE IF EXISTS escaped, other")
            conn.execute("DROP PROCEDURE IF EXISTS escape_now")
            conn.execute("DELETE FROM schema_migrations WHERE version <> '0001'")


@pytest.mark.parametrize("applied_0001,route,path", _cases(REFUSED), indirect=["applied_0001"])
def test_a_refused_route_fails_the_step_even_when_swallowed(applied_0001: Handle, catalog_dir: Path,
                                                            route: str, path: str):
    engine = applied_0001
    code = REFUSED[route][1]
    body = (f'conn.execute("CREATE TABLE escaped (id INTEGER)")\ntry:\n{textwrap.indent(code, "    ")}\n'
            f"except Exception as exc:\n    print('swallowed', type(exc).__name__)\n")
    exit_code, output = apm(engine, _catalog(catalog_dir, body), "migrate", *PATHS[path])
    assert exit_code == 5, output
    assert "migration 0002 ran `" in output and "Its changes were rolled back" in output, output
    assert "escaped" not in engine.tables() and "other" not in engine.tables()
    assert engine.ledger() == ["0001"]


@pytest.mark.parametrize("applied_0001,route,path", _cases(HARMLESS), indirect=["applied_0001"])
def test_a_step_that_raises_after_a_harmless_route_leaves_nothing(applied_0001: Handle, catalog_dir: Path,
                                                                  route: str, path: str):
    engine = applied_0001
    code = HARMLESS[route][1]
    body = f'conn.execute("CREATE TABLE escaped (id INTEGER)")\n{code}\nraise RuntimeError("failed after the route")\n'
    exit_code, output = apm(engine, _catalog(catalog_dir, body), "migrate", *PATHS[path])
    assert exit_code == 5, output
    assert "failed after the route" in output
    assert "escaped" not in engine.tables()
    assert engine.ledger() == ["0001"]


@pytest.mark.parametrize("applied_0001", ENGINES, indirect=True)
@pytest.mark.parametrize("path", PATHS)
def test_what_migrations_legitimately_use_keeps_working(applied_0001: Handle, catalog_dir: Path, path: str):
    body = """
        conn.execute("CREATE TABLE escaped (id INTEGER)")
        conn.executemany("INSERT INTO escaped VALUES (?)", [(1,), (2,), (3,)])
        conn.execute("SAVEPOINT mine")
        conn.execute("INSERT INTO escaped VALUES (99)")
        conn.execute("ROLLBACK TO SAVEPOINT mine")
        conn.execute("RELEASE SAVEPOINT mine")
        conn.commit()  # a seed-era habit: a no-op
        cursor = conn.cursor()
        cursor.execute("SELECT id FROM escaped ORDER BY id")
        assert [row[0] for row in cursor] == [1, 2, 3]
        assert cursor.connection is conn
        assert [r[0] for r in conn.fetchall("SELECT id FROM escaped WHERE id > ?", (1,))] == [2, 3]
        assert conn.fetchval("SELECT count(*) FROM escaped") == 3
        with conn:
            conn.executescript("INSERT INTO escaped VALUES (4); INSERT INTO escaped VALUES (5);")
        if conn.engine == "sqlite":
            conn.create_function("double", 1, lambda x: x * 2)
            conn.row_factory = None
            assert conn.execute("SELECT double(id) FROM escaped WHERE id = 2").fetchone() == (4,)
        else:
            with conn.raw.cursor() as raw, raw.copy("COPY escaped FROM STDIN") as copy:
                copy.write_row((6,))
            from psycopg.rows import dict_row
            conn.raw.row_factory = dict_row  # psycopg's own rows, for this migration's raw cursors only
            assert conn.raw.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    """
    engine = applied_0001
    exit_code, output = apm(engine, _catalog(catalog_dir, body), "migrate", *PATHS[path])
    assert exit_code == 0, output
    assert engine.ledger() == ["0001", "0002"]
    expected = [1, 2, 3, 4, 5] + ([6] if engine.name == "postgresql" else [])
    assert [r[0] for r in engine.query("SELECT id FROM escaped ORDER BY id")] == expected


# -- the same rules, statement by statement ------------------------------------------------------------------

REFUSED_STATEMENTS = {
    BOTH: ["COMMIT", "commit", "Commit Transaction", "END", "end transaction", "ROLLBACK", "rollback transaction",
           "BEGIN", "BEGIN IMMEDIATE", "  -- a comment\n  /* another */ COMMIT;", "\n\tCOMMIT\n"],
    PG: ["START TRANSACTION", "abort", "ROLLBACK WORK", "PREPARE TRANSACTION 'x'", "COMMIT PREPARED 'x'",
         "ROLLBACK PREPARED 'x'", "SELECT 1; COMMIT", "SELECT ';'; /* ; */ END", "/* /* */ x */ COMMIT",
         "RELEASE SAVEPOINT apm_preview_step", 'RELEASE "apm_preview_watch"', "ROLLBACK TO SAVEPOINT apm_preview_step",
         "ROLLBACK TRANSACTION TO apm_preview_watch", "SAVEPOINT apm_preview_step", "RELEASE SAVEPOINT _pg3_1"],
}
ALLOWED_STATEMENTS = {
    BOTH: ["SAVEPOINT mine", "RELEASE mine", "RELEASE SAVEPOINT mine", "ROLLBACK TO mine",
           "ROLLBACK TRANSACTION TO SAVEPOINT mine", "CREATE TABLE commit_log (id INTEGER)", "-- COMMIT\nSELECT 1",
           "SELECT 'COMMIT'", "UPDATE t SET end_date = NULL", "", "   "],
    SQLITE: ["CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END", "PRAGMA foreign_keys"],
    PG: ["PREPARE q AS SELECT 1", "DO $$ BEGIN PERFORM 1; END $$", "SELECT '; COMMIT'",
         "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN RETURN; END; $$"],
}


def _refuses(engine_name: str, sql: str) -> bool:
    if engine_name == "sqlite":
        from planner.engines.sqlite.connection import forbidden_reason

        return forbidden_reason(sql) is not None
    from planner.engines.postgresql.connection import forbidden

    return forbidden(sql)


def _statements(table: dict) -> list:
    return [pytest.param(name, sql, id=f"{name}-{sql!r}") for engines, sqls in table.items()
            for name in engines for sql in sqls]


@pytest.mark.parametrize("engine_name,sql", _statements(REFUSED_STATEMENTS))
def test_statements_that_leave_the_transaction_are_refused(engine_name: str, sql: str):
    assert _refuses(engine_name, sql)


@pytest.mark.parametrize("engine_name,sql", _statements(ALLOWED_STATEMENTS))
def test_statements_that_stay_inside_it_are_allowed(engine_name: str, sql: str):
    assert not _refuses(engine_name, sql)


def test_the_runner_savepoints_the_guard_protects_are_the_ones_it_opens():
    from planner.engines.postgresql import observe as pg_drop_guard
    from planner.engines.postgresql import step_catalog as pg_step_catalog
    from planner.engines.postgresql.connection import RUNNER_SAVEPOINTS

    assert RUNNER_SAVEPOINTS == {pg_step_catalog.STEP_SAVEPOINT, pg_drop_guard.SAVEPOINT, pg_drop_guard.COUNT_SAVEPOINT}


def test_a_statement_after_the_transaction_ended_underneath_is_refused(engine: Handle):
    """SQLite rolls a transaction back by itself after some errors (an interrupt, a full disk): the next statement
    would commit on its own, so it is refused instead."""
    from planner.errors import TransactionTampered

    conn = engine.raw_connection()
    try:
        proxy = engine.proxy(conn)
        conn.execute("ROLLBACK")  # the transaction ends behind the proxy's back
        with pytest.raises(TransactionTampered, match="had already ended"):
            proxy.execute("CREATE TABLE escaped (id INTEGER)")
        assert isinstance(proxy.tampered, TransactionTampered)
        assert "escaped" not in engine.tables()
    finally:
        conn.close()


# -- the backup before a rollback, and planning again inside the lock ----------------------------------------


def _chain(catalog_dir: Path) -> Path:
    write_migration(catalog_dir, "0001", "Notes", upgrade='conn.execute("CREATE TABLE notes (id INTEGER)")',
                    downgrade='conn.execute("DROP TABLE notes")')
    write_migration(catalog_dir, "0002", "Two", depends_on=("0001",),
                    upgrade='conn.execute("CREATE TABLE two (id INTEGER)")', downgrade='conn.execute("DROP TABLE two")')
    write_migration(catalog_dir, "0003", "Three", depends_on=("0002",),
                    upgrade='conn.execute("CREATE TABLE three (id INTEGER)")',
                    downgrade='conn.execute("DROP TABLE three")')
    return catalog_dir


@pytest.mark.parametrize("atomic", [False, True], ids=["stepwise", "atomic"])
def test_a_run_plans_again_when_another_process_changed_the_ledger_and_counts_it(engine: Handle, catalog_dir: Path,
                                                                                  tmp_path: Path, atomic: bool):
    """The plan shown rolls back 0002; another process applies 0003 (which needs 0002) before the run takes the
    lock: the run plans again there (0003 first), counts it, and its backup holds 0003 applied."""
    from planner.loader import load_catalog
    from planner.plan import rollback_plan

    catalog = load_catalog(_chain(catalog_dir))
    assert apm(engine, catalog_dir, "migrate", "--target", "0002")[0] == 0
    handle = engine.engine()
    shown = rollback_plan(catalog, handle.applied(), "0002", cascade=True)
    other = run_apm("migrate", "--db", engine.db, "--migrations-dir", str(catalog_dir))  # a second process
    assert other.returncode == 0, other.stderr
    backups: list[Path] = []
    result = handle.runner(catalog=catalog).migrate(
        lambda ledger: rollback_plan(catalog, ledger, "0002", cascade=True), plan=shown, atomic=atomic,
        before=lambda: backups.append(handle.backups.take(tmp_path / "backups")))
    assert result.replans == 1
    assert [s.version for s in result.done] == ["0003", "0002"]
    assert engine.ledger() == ["0001"]
    assert len(backups) == 1 and sorted(handle.backups.check(backups[0])) == ["0001", "0002", "0003"]


@pytest.mark.parametrize("path", PATHS)
def test_no_backup_when_the_plan_made_inside_the_lock_has_nothing_to_roll_back(engine: Handle, catalog_dir: Path,
                                                                                tmp_path: Path, path: str):
    """The backup is taken after planning again inside the lock: a rollback another process already did leaves
    nothing to run, and nothing to copy."""
    from planner.loader import load_catalog
    from planner.plan import to_plan

    catalog = load_catalog(_chain(catalog_dir))
    assert apm(engine, catalog_dir, "migrate", "--target", "0002")[0] == 0
    handle = engine.engine()
    shown = to_plan(catalog, handle.applied(), "0001")
    assert [s.version for s in shown] == ["0002"]
    assert run_apm("migrate", "--to", "0001", "--yes", "--no-backup", "--db", engine.db,
                   "--migrations-dir", str(catalog_dir)).returncode == 0  # a second process did it meanwhile
    taken: list[Path] = []
    runner = handle.runner(catalog=catalog)
    replan = lambda ledger: to_plan(catalog, ledger, "0001")  # noqa: E731
    backup = lambda: taken.append(handle.backups.take(tmp_path / "backups"))  # noqa: E731
    if path == "previewed":
        runner.preview(shown, make_plan=replan, accept=lambda preview: True, before=backup)
    else:
        runner.migrate(replan, plan=shown, before=backup)
    assert taken == []
    assert engine.ledger() == ["0001"]


COMPETITOR = """
import glob, sqlite3, sys, time
db = sys.argv[1]
deadline = time.monotonic() + 60
while not glob.glob(db + ".backup-partial.*"):  # the run has begun copying the database
    if time.monotonic() > deadline:
        sys.exit("no backup started")
    time.sleep(0.0005)
conn = sqlite3.connect(db, timeout=60, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO notes VALUES (99)")
conn.execute("COMMIT")
print("inserted", flush=True)
"""


def test_sqlite_backup_holds_the_state_the_rollback_starts_from_despite_a_competing_writer(catalog_dir: Path,
                                                                                          tmp_path: Path):
    """A writer that commits while the copy is being made: taken before the write lock (the old way), the copy
    missed the row the rollback then started from; taken inside the lock, the writer waits for the rollback."""
    write_migration(catalog_dir, "0001", "Notes", upgrade="""
        conn.execute("CREATE TABLE notes (id INTEGER)")
        conn.execute("INSERT INTO notes VALUES (1)")
        conn.execute("CREATE TABLE ballast (b BLOB)")  # a copy long enough for the writer to arrive during it
        conn.executemany("INSERT INTO ballast VALUES (zeroblob(1048576))", [()] * 48)
    """)
    write_migration(catalog_dir, "0002", "Two", depends_on=("0001",),
                    upgrade='conn.execute("CREATE TABLE two (id INTEGER)")',
                    downgrade='print("notes when the rollback started:", conn.fetchval("SELECT count(*) FROM notes"))\n'
                              'conn.execute("DROP TABLE two")')
    db = tmp_path / "app.db"
    assert run_apm("migrate", "--db", str(db), "--migrations-dir", str(catalog_dir)).returncode == 0
    writer = subprocess.Popen([sys.executable, "-c", COMPETITOR, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        run = run_apm("migrate", "--rollback", "0002", "--no-preview", "--yes", "--db", str(db),
                      "--migrations-dir", str(catalog_dir))
        assert writer.wait(timeout=60) == 0 and writer.stdout.read().strip() == "inserted"
    finally:
        writer.kill()
    assert run.returncode == 0, run.stderr
    seen = int(run.stdout.split("notes when the rollback started:")[1].split()[0])
    backups = list(tmp_path.glob("app.db.backup.*"))
    assert len(backups) == 1
    copied = sqlite3.connect(backups[0]).execute("SELECT count(*) FROM notes").fetchone()[0]
    assert copied == seen
    assert sqlite3.connect(db).execute("SELECT count(*) FROM notes").fetchone()[0] == 2


def test_a_confirmed_rollback_backs_up_the_state_it_commits_from(engine: Handle, catalog_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    """A person confirms a loss on a terminal: the preview is rolled back, the question asked, the plan run again.
    Another process commits while the person decides; the backup is the run that commits, taken inside its lock."""
    import cli.running

    write_migration(catalog_dir, "0001", "Notes", upgrade='conn.execute("CREATE TABLE notes (id INTEGER)")')
    write_migration(catalog_dir, "0002", "Two", depends_on=("0001",),
                    upgrade='conn.execute("CREATE TABLE two (id INTEGER)")\nconn.execute("INSERT INTO two VALUES (1)")',
                    downgrade='conn.execute("DROP TABLE two")')
    write_migration(catalog_dir, "0003", "Three", depends_on=("0001",),
                    upgrade='conn.execute("CREATE TABLE three (id INTEGER)")')
    assert apm(engine, catalog_dir, "migrate", "--target", "0002")[0] == 0
    asked = cli.running._ask

    def person_deciding(*args, **kwargs):
        asked(*args, **kwargs)
        other = run_apm("migrate", "--target", "0003", "--db", engine.db, "--migrations-dir", str(catalog_dir))
        assert other.returncode == 0, other.stderr

    monkeypatch.setattr(cli.running, "_ask", person_deciding)
    monkeypatch.setattr(cli.running, "stdin_is_terminal", lambda: True)
    from click.testing import CliRunner

    from cli.main import apm as command

    backups = tmp_path / "backups"
    result = CliRunner().invoke(command, ["migrate", "--rollback", "0002", "--db", engine.db, "--migrations-dir",
                                          str(catalog_dir), "--backup-dir", str(backups)], input="y\n")
    assert result.exit_code == 0, result.output
    assert engine.ledger() == ["0001", "0003"]
    handle = engine.engine(backups)
    copies = handle.backups.files()
    assert len(copies) == 1  # the rolled-back preview's copy is not left behind
    assert sorted(handle.backups.check(copies[0])) == ["0001", "0002", "0003"]


class _Backup:
    """What a run passes as ``before`` (``planner.request``'s backup): one copy, dropped if its run is undone."""

    def __init__(self, engine, folder: Path):
        self.engine, self.folder, self.path = engine, folder, None

    def __call__(self) -> None:
        if self.path is None:
            self.path = self.engine.backups.take(self.folder)

    def discard(self) -> None:
        self.path.unlink()
        self.path = None


def test_sqlite_an_atomic_run_planned_again_backs_up_the_attempt_that_commits(catalog_dir: Path, tmp_path: Path):
    """``--atomic`` on SQLite: the first attempt took the copy, then met a changed ledger and was rolled back whole;
    another process commits before the next attempt locks. The copy kept is the one the committing attempt took."""
    from planner.engines import engine_for
    from planner.loader import load_catalog
    from planner.plan import rollback_plan

    _chain(catalog_dir)
    write_migration(catalog_dir, "0004", "Four", depends_on=("0002",),
                    upgrade='conn.execute("CREATE TABLE four (id INTEGER)")', downgrade='conn.execute("DROP TABLE four")')
    catalog = load_catalog(catalog_dir)
    db = tmp_path / "app.db"
    handle = Handle("sqlite", str(db))
    assert apm(handle, catalog_dir, "migrate", "--target", "0003")[0] == 0
    engine = engine_for(str(db))
    shown = rollback_plan(catalog, engine.applied(), "0002", cascade=True)  # 0003, then 0002
    assert run_apm("migrate", "--target", "0004", "--db", str(db), "--migrations-dir", str(catalog_dir)).returncode == 0

    def replan(ledger):  # called between the attempts, when another process writes
        with sqlite3.connect(db) as other:
            other.execute("INSERT INTO notes VALUES (7)")
        return rollback_plan(catalog, ledger, "0002", cascade=True)

    backup = _Backup(engine, tmp_path)
    result = engine.runner(catalog=catalog).migrate(replan, plan=shown, atomic=True, before=backup)
    assert result.replans == 1 and [s.version for s in result.done] == ["0004", "0003", "0002"]
    assert list(tmp_path.glob("app.db.backup.*")) == [backup.path]
    assert sqlite3.connect(backup.path).execute("SELECT id FROM notes").fetchall() == [(7,)]


def test_an_atomic_run_planned_again_reports_only_what_it_committed(engine: Handle, catalog_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    """``--atomic --no-preview``: the plan shown predates another process's 0004; inside the lock the run finds
    out, plans again, and says (and returns as JSON) what it did once, not the attempt it rolled back."""
    import json

    import cli.migrate

    _chain(catalog_dir)
    write_migration(catalog_dir, "0004", "Four", depends_on=("0002",),
                    upgrade='conn.execute("CREATE TABLE four (id INTEGER)")', downgrade='conn.execute("DROP TABLE four")')
    assert apm(engine, catalog_dir, "migrate", "--target", "0003")[0] == 0
    stale = engine.engine().applied()  # what the command read before another process applied 0004
    assert run_apm("migrate", "--target", "0004", "--db", engine.db, "--migrations-dir", str(catalog_dir)).returncode == 0
    monkeypatch.setattr(cli.migrate, "ledger_entries", lambda: stale)
    code, output = apm(engine, catalog_dir, "migrate", "--rollback", "0002", "--cascade", "--atomic", "--no-preview",
                       "--no-backup", "--json")
    assert code == 0, output
    document = json.loads(output[output.index("{"):])
    assert [r["version"] for r in document["results"]] == ["0004", "0003", "0002"]
    assert engine.ledger() == ["0001"]


# -- the marks -------------------------------------------------------------------------------------------------


def _log(engine: Handle) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in engine.query("SELECT version, action, outcome FROM schema_migrations_log ORDER BY id")]


def test_the_marks_record_and_remove_a_row_without_running_the_migration(engine: Handle, catalog_dir: Path):
    """``--mark-applied`` writes the ledger row (with the file's checksum) and a ``mark-applied`` log row, and runs
    nothing; ``--mark-rolled-back`` removes the row, logs it, and runs no downgrade; a refused mark changes nothing."""
    from planner.loader import load_catalog

    write_migration(catalog_dir, "0001", "Kept", upgrade='conn.execute("CREATE TABLE kept (id INTEGER)")')
    write_migration(catalog_dir, "0002", "Marked", depends_on=("0001",),
                    upgrade='conn.execute("CREATE TABLE marked (id INTEGER)")',
                    downgrade='conn.execute("CREATE TABLE downgraded (id INTEGER)")')
    write_migration(catalog_dir, "0003", "Later", depends_on=("0002",))
    assert apm(engine, catalog_dir, "migrate", "--target", "0001")[0] == 0
    before = _log(engine)

    code, output = apm(engine, catalog_dir, "migrate", "--mark-applied", "0003")  # its dependency is not applied
    assert code == 4 and "0002" in output, output  # refused, nothing changed
    assert engine.ledger() == ["0001"] and _log(engine) == before

    code, output = apm(engine, catalog_dir, "migrate", "--mark-applied", "0002")
    assert code == 0, output
    assert engine.ledger() == ["0001", "0002"]
    assert "marked" not in engine.tables()  # recorded, not run
    checksum = engine.query("SELECT checksum FROM schema_migrations WHERE version = '0002'")[0][0]
    assert checksum == load_catalog(catalog_dir)["0002"].checksum
    assert _log(engine) == [*before, ("0002", "mark-applied", "ok")]

    code, output = apm(engine, catalog_dir, "migrate", "--mark-rolled-back", "0001")  # 0002 is applied on it
    assert code == 4 and "0002" in output, output  # refused, nothing changed
    assert engine.ledger() == ["0001", "0002"] and _log(engine) == [*before, ("0002", "mark-applied", "ok")]

    code, output = apm(engine, catalog_dir, "migrate", "--mark-rolled-back", "0002")
    assert code == 0, output
    assert engine.ledger() == ["0001"]
    assert "downgraded" not in engine.tables()  # removed, not rolled back
    assert _log(engine) == [*before, ("0002", "mark-applied", "ok"), ("0002", "mark-rolled-back", "ok")]


def test_the_history_reads_the_log_oldest_first_and_creates_nothing(engine: Handle, catalog_dir: Path):
    """``Engine.history`` (what ``fleet status`` tells a failed database by where no fast reader exists): before
    anything is migrated it is empty and creates no table; afterwards it is the log, oldest first, of one version
    when asked."""
    write_migration(catalog_dir, "0001", "First", upgrade='conn.execute("CREATE TABLE first (id INTEGER)")')
    write_migration(catalog_dir, "0002", "Second", depends_on=("0001",),
                    upgrade='conn.execute("CREATE TABLE second (id INTEGER)")')
    if engine.name == "sqlite":
        Path(engine.db).touch()  # a database file that was never migrated
    assert engine.engine().history() == []
    assert "schema_migrations_log" not in engine.tables()

    assert apm(engine, catalog_dir, "migrate")[0] == 0
    assert apm(engine, catalog_dir, "migrate", "--rollback", "0002", "--yes", "--no-backup")[0] == 0
    rows = [(e.version, e.action, e.outcome) for e in engine.engine().history()]
    assert rows == [("0001", "apply", "ok"), ("0002", "apply", "ok"), ("0002", "rollback", "ok")], rows
    assert [(e.action, e.outcome) for e in engine.engine().history("0002")] == [("apply", "ok"), ("rollback", "ok")]


def test_a_dry_run_whose_step_fails_leaves_the_log_as_it_found_it(engine: Handle, catalog_dir: Path):
    """A dry run says the database is unchanged, so its log is too: a rehearsal's failure is the command's to
    report, never a ``failed`` row that ``apm fleet status`` would read as the database's state. A real run's
    failure is still logged."""
    write_migration(catalog_dir, "0001", "Kept", upgrade='conn.execute("CREATE TABLE kept (id INTEGER)")')
    write_migration(catalog_dir, "0002", "Fails", depends_on=("0001",),
                    upgrade='conn.execute("CREATE TABLE half (id INTEGER)")\nraise RuntimeError("bad data")')
    assert apm(engine, catalog_dir, "migrate", "--target", "0001")[0] == 0
    before = _log(engine)
    for args in (["migrate", "--dry-run"], ["migrate", "--dry-run", "--json"], ["migrate", "plan", "--rehearse"],
                 ["migrate", "check"]):
        code, output = apm(engine, catalog_dir, *args)
        if args[1] != "check":  # check rehearses the plan on PostgreSQL only (its lock analysis)
            assert code == 5 and "bad data" in output, (args, output)
        assert _log(engine) == before, args
        assert engine.ledger() == ["0001"] and "half" not in engine.tables()

    code, output = apm(engine, catalog_dir, "migrate")  # a real run's failure is the database's history
    assert code == 5, output
    assert _log(engine) == [*before, ("0002", "apply", "failed")]


# -- the doctor on a healthy database --------------------------------------------------------------------------


def test_the_doctor_runs_clean_on_a_healthy_database(engine: Handle, catalog_dir: Path, tmp_path: Path):
    """A database freshly migrated by apm: exit 0, healthy, no error, and no warning but ``no-backups`` until a
    backup exists; once a rollback took one, none at all (each engine's infos, such as PostgreSQL's probed
    guarantees and its note that the server enforces foreign keys, are facts, not complaints)."""
    import json

    write_migration(catalog_dir, "0001", "Notes", upgrade='conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")\n'
                            'conn.execute("INSERT INTO notes VALUES (1)")',
                    downgrade='conn.execute("DROP TABLE notes")')
    write_migration(catalog_dir, "0002", "Tags", depends_on=("0001",),
                    upgrade='conn.execute("CREATE TABLE tags (id INTEGER PRIMARY KEY, '
                            'note_id INTEGER REFERENCES notes (id))")\n'
                            'conn.execute("INSERT INTO tags VALUES (1, 1)")',
                    downgrade='conn.execute("DROP TABLE tags")')
    backups = str(tmp_path / "backups")
    assert apm(engine, catalog_dir, "migrate")[0] == 0
    code, output = apm(engine, catalog_dir, "migrate", "doctor", "--json", "--backup-dir", backups)
    document = json.loads(output[output.index("{"):])
    assert code == 0 and document["healthy"] is True, output
    # Never backed up yet: that is the one thing it may say, a warning (nothing could undo a bad rollback).
    assert {f["code"] for f in document["findings"] if f["severity"] != "info"} <= {"no-backups"}, output
    code, output = apm(engine, catalog_dir, "migrate", "--rollback", "0002", "--yes", "--backup-dir", backups)
    assert code == 0, output  # a rollback, so a backup is there for the doctor to find
    assert apm(engine, catalog_dir, "migrate")[0] == 0
    code, output = apm(engine, catalog_dir, "migrate", "doctor", "--json", "--backup-dir", backups)
    document = json.loads(output[output.index("{"):])
    complaints = [f"{f['severity']} {f['code']}: {f['message']}" for f in document["findings"]
                  if f["severity"] != "info"]
    assert complaints == []
    assert code == 0 and document["healthy"] is True, output


# -- SIGKILL at random moments ---------------------------------------------------------------------------------

SLOW_STEPS = 8


def _slow_catalog(catalog_dir: Path) -> list[str]:
    """Steps that each create their table and then take a while, so a kill lands inside one as often as between."""
    versions = [f"{n:04d}" for n in range(1, SLOW_STEPS + 1)]
    for i, version in enumerate(versions):
        write_migration(catalog_dir, version, f"Slow {version}", depends_on=tuple(versions[i - 1:i]),
                        upgrade=f'import time\nconn.execute("CREATE TABLE slow_{version} (id INTEGER)")\n'
                                f'conn.execute("INSERT INTO slow_{version} VALUES (1)")\ntime.sleep(0.1)',
                        downgrade=f'import time\nconn.execute("DROP TABLE slow_{version}")\ntime.sleep(0.1)')
    return versions


def _ledger_equals_schema(engine: Handle, versions: list[str]) -> list[str]:
    """Each migration's table exists iff the ledger says it is applied; returns the ledger."""
    tables = engine.tables()
    applied = engine.ledger() if "schema_migrations" in tables else []  # killed before it made its ledger
    assert [v for v in versions if f"slow_{v}" in tables] == applied, (applied, sorted(tables))
    return applied


#: Each killed run: which way, on which path.
KILLED_RUNS = [("migrate",), ("migrate", "--no-preview"), ("rollback", "--no-preview"), ("migrate",), ("rollback",)]


def test_sigkill_at_random_moments_leaves_the_ledger_equal_to_the_schema(engine: Handle, catalog_dir: Path):
    """A real ``apm migrate`` process, applying or rolling back, killed with SIGKILL at a few seeded random moments
    (on the previewed path and with ``--no-preview``): after each kill the ledger equals the schema, and the next
    run completes."""
    import random

    versions = _slow_catalog(catalog_dir)
    where = ["--db", engine.db, "--migrations-dir", str(catalog_dir)]
    apm_command = str(Path(sys.executable).parent / "apm")
    rollback = ("--rollback", versions[0], "--cascade", "--yes", "--no-backup")
    rng = random.Random(20261205)
    for direction, *path in KILLED_RUNS:
        applied = _ledger_equals_schema(engine, versions)
        if direction == "migrate" and applied == versions:  # finished before its kill: something left to apply
            assert run_apm("migrate", *rollback, *where).returncode == 0
        if direction == "rollback" and not applied:  # ... or to roll back
            assert run_apm("migrate", *where).returncode == 0
        args = rollback if direction == "rollback" else ()
        process = subprocess.Popen([apm_command, "migrate", *args, *path, *where],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=rng.uniform(0.3, 1.3))
        except subprocess.TimeoutExpired:
            process.kill()  # SIGKILL: no handler, no cleanup
        process.wait(timeout=30)
        _ledger_equals_schema(engine, versions)
    finished = run_apm("migrate", *where)
    assert finished.returncode == 0, finished.stderr
    assert _ledger_equals_schema(engine, versions) == versions
    assert [r[0] for r in engine.query(f"SELECT count(*) FROM slow_{versions[-1]}")] == [1]


# -- the preview's loss lines ------------------------------------------------------------------------------------

LOSSY_PLAN = ('conn.execute("DROP TABLE archive")\n'
              'conn.execute("ALTER TABLE users DROP COLUMN note")\n'
              "conn.execute(\"UPDATE users SET name = 'anonymous' WHERE id <= 2\")")

#: What both engines say about ``LOSSY_PLAN``, word for word.
LOSS_LINES = [
    "0002 apply: drops table archive holding 4 rows",
    "0002 apply: drops column users.note holding 2 non-default values",  # bob's NULL was nothing to lose
    "0002 apply: overwrites 2 values of users.name",
]


def test_the_preview_loss_lines_are_identical_on_both_engines(catalog_dir: Path, tmp_path: Path, request):
    """The same lossy plan (a table with rows dropped, a column dropped, values overwritten), previewed with
    ``--dry-run`` on each engine: exit 7 on both, and the same lines. (How each engine counts the rest alike,
    case by case, is in tests/test_postgres_preview.py's ``SAME_LINES`` and its neighbours.)"""
    import json

    write_migration(catalog_dir, "0001", "Data", upgrade="""
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, note TEXT)")
        conn.execute("INSERT INTO users VALUES (1, 'ann', 'a'), (2, 'bob', NULL), (3, 'cy', 'c')")
        conn.execute("CREATE TABLE archive (id INTEGER)")
        conn.execute("INSERT INTO archive VALUES (1), (2), (3), (4)")
    """)
    write_migration(catalog_dir, "0002", "Lossy", depends_on=("0001",), upgrade=LOSSY_PLAN)
    found = {}
    for handle in (Handle("sqlite", str(tmp_path / "app.db")), Handle("postgresql", request.getfixturevalue("pg_url"))):
        assert apm(handle, catalog_dir, "migrate", "--target", "0001")[0] == 0
        code, output = apm(handle, catalog_dir, "migrate", "--dry-run", "--json")
        found[handle.name] = (code, json.loads(output[output.index("{"):])["lines"])
        assert handle.ledger() == ["0001"] and "archive" in handle.tables()  # a dry run changes nothing
    assert found["sqlite"] == found["postgresql"]
    assert found["sqlite"] == (7, LOSS_LINES)


def test_a_loop_of_updates_counts_the_same_on_both_engines(catalog_dir: Path, tmp_path: Path, request):
    """3,000 single-row UPDATEs: past its first 1,000 changed values SQLite counts with a copy of the column
    instead of a trigger (``effects.ValueCounters``), PostgreSQL statement by statement; each row changed at
    most once, NULLs filled in, values set to what they were: the same lines (PostgreSQL's statement by
    statement counts are summed per column, ``preview.summed``)."""
    import json

    write_migration(catalog_dir, "0001", "Items", upgrade="""
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER)")
        conn.execute("INSERT INTO items (id, qty) SELECT n, CASE WHEN n % 10 = 0 THEN NULL ELSE n % 3 END "
                     "FROM (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3000) "
                     "SELECT n FROM c) AS numbers")
    """)
    write_migration(catalog_dir, "0002", "Loop", depends_on=("0001",), upgrade="""
        for i in range(1, 3001):
            conn.execute(f"UPDATE items SET qty = {i % 3 if i % 2 else 7} WHERE id = {i}")
    """)
    found = {}
    for handle in (Handle("sqlite", str(tmp_path / "app.db")), Handle("postgresql", request.getfixturevalue("pg_url"))):
        assert apm(handle, catalog_dir, "migrate", "--target", "0001")[0] == 0
        code, output = apm(handle, catalog_dir, "migrate", "--dry-run", "--json")
        found[handle.name] = (code, json.loads(output[output.index("{"):])["lines"])
    # Odd ids are set to what they hold; even ids to 7: 1,500 values, 300 of them NULL before (ids ending in 0).
    assert found["sqlite"] == found["postgresql"], found
    code, lines = found["sqlite"]
    assert code == 7 and [line for line in lines if line.startswith("0002")] == [
        "0002 apply: overwrites 1200 values of items.qty",
        "0002 apply: sets 300 values of items.qty (none held data from before this plan)"], lines
