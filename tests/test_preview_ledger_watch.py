"""A previewed step is watched for writes to ``schema_migrations`` only from the first statement that may make one.

The default path (the preview, as `apm migrate` and every database of `apm
fleet migrate` take it) defers the ledger watch (a TEMP table and three
triggers per connection) until the observer sees a statement that may write
the ledger, move a savepoint, or cannot be prepared: a step that does none of
these pays for nothing, and every step that does is watched as it always was
(the executor's rows put back, what the migration wrote kept as a note). Each
case runs on a real file through ``planner.request.run``, the path of `apm
migrate`; the cases of ``tests/test_apm_framework.py`` are repeated here on it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from planner import request as requests
from planner.engines import engine_for
from planner.loader import load_catalog
from planner.request import Request
from tests.conftest import write_migration


def migrate(folder: Path, db: Path, statements: list[str] | None = None) -> requests.RunOutcome:
    """``apm migrate --yes`` of ``folder`` on ``db``, through the preview; ``statements`` gets what ran."""
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: statements.append(" ".join(sql.split())))
        return conn

    sqlite3.connect = traced if statements is not None else connect  # type: ignore[assignment]
    try:
        return requests.run(engine_for(db), load_catalog(folder), Request(yes=True))
    finally:
        sqlite3.connect = connect  # type: ignore[assignment]


def rows(db: Path) -> dict[str, tuple]:
    conn = sqlite3.connect(db)
    try:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT version, description, applied_by, checksum IS NOT NULL FROM schema_migrations")}
    finally:
        conn.close()


def details(db: Path) -> dict[str, str | None]:
    conn = sqlite3.connect(db)
    try:
        return {r[0]: r[1] for r in conn.execute(
            "SELECT version, detail FROM schema_migrations_log WHERE outcome = 'ok' ORDER BY id")}
    finally:
        conn.close()


def test_a_step_that_never_writes_the_ledger_makes_no_watch(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", upgrade="conn.execute('CREATE TABLE a (id INTEGER PRIMARY KEY, x TEXT)')")
    write_migration(folder, "0002", upgrade="conn.executemany('INSERT INTO a (x) VALUES (?)', [('1',), ('2',)])\n"
                                            "conn.execute('SELECT * FROM schema_migrations').fetchall()")
    statements: list[str] = []
    db = tmp_path / "app.db"
    outcome = migrate(folder, db, statements)
    assert outcome.committed, outcome.error
    assert not [s for s in statements if "apm_ledger" in s], statements  # no TEMP table, no trigger
    assert set(rows(db)) == {"0001", "0002"}
    assert details(db) == {"0001": None, "0002": None}


def test_the_executors_rows_survive_a_previewed_migration_that_rewrites_the_ledger(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", upgrade="conn.execute('CREATE TABLE a (id INTEGER)')")
    write_migration(folder, "0002", upgrade="""
        conn.execute("DELETE FROM schema_migrations")
        conn.execute("INSERT INTO schema_migrations (version, applied_by) VALUES ('0002_consolidated', 'me')")
        conn.execute("INSERT INTO schema_migrations (version, description) VALUES ('0002', 'mine')")
    """)
    write_migration(folder, "0003", upgrade="conn.execute('CREATE TABLE b (id INTEGER)')")
    write_migration(folder, "0004", upgrade="""
        conn.execute("UPDATE schema_migrations SET description = 'hijacked', version = '0099' WHERE version = '0001'")
        conn.execute("UPDATE schema_migrations SET description = 'note edited' WHERE version = '0002_consolidated'")
    """)
    db = tmp_path / "app.db"
    outcome = migrate(folder, db)
    assert outcome.committed, outcome.error
    by_version = rows(db)
    assert by_version["0001"] == ("Migration number 0001", "apm-migrate", 1)  # restored, as it was
    assert by_version["0002"] == ("Migration number 0002", "apm-migrate", 1)  # its own row made ours
    assert by_version["0003"] == ("Migration number 0003", "apm-migrate", 1)
    assert by_version["0002_consolidated"] == ("note edited", "me", 0)
    assert by_version["0099"] == ("hijacked", "apm-migrate", 1)
    notes = details(db)
    assert "inserted 0002_consolidated, 0002" in notes["0002"] and "restored the executor's rows 0001" in notes["0002"]
    assert notes["0003"] is None  # a step between two that wrote the ledger is told nothing of theirs
    assert "updated 0002_consolidated" in notes["0004"]


@pytest.mark.parametrize("how", [
    "conn.execute('DELETE FROM schema_migrations')",
    "conn.executescript('CREATE TABLE c (id INTEGER); DELETE FROM schema_migrations;')",
    "conn.executemany('DELETE FROM schema_migrations WHERE version = ?', [('0001',), ('0002',)])",
    "conn.cursor().execute('UPDATE schema_migrations SET checksum = NULL')",
    # A trigger made in an earlier step writes the ledger: only the statement that fires it names the table.
    "conn.execute('INSERT INTO a (id) VALUES (1)')",
    # The ledger written inside the migration's savepoint, which is rolled back, then outside any savepoint.
    "conn.execute('SAVEPOINT s')\nconn.execute('INSERT INTO a (id) VALUES (1)')\n"
    "conn.execute('ROLLBACK TO s')\nconn.execute('RELEASE s')\n"
    "conn.execute('DELETE FROM schema_migrations')",
    # ... or released: what it did stays, and is put right.
    "conn.execute('SAVEPOINT s')\nconn.execute('DELETE FROM schema_migrations')\nconn.execute('RELEASE s')",
], ids=["execute", "executescript", "executemany", "cursor", "trigger", "savepoint-rolled-back",
        "savepoint-released"])
def test_every_way_a_migration_writes_the_ledger_is_watched(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", upgrade="conn.execute('CREATE TABLE a (id INTEGER)')")
    write_migration(folder, "0002", upgrade="conn.execute('CREATE TRIGGER a_wipes AFTER INSERT ON a BEGIN "
                                            "DELETE FROM schema_migrations; END')")
    write_migration(folder, "0003", upgrade=how)
    db = tmp_path / "app.db"
    outcome = migrate(folder, db)
    assert outcome.committed, outcome.error
    by_version = rows(db)
    assert by_version["0001"] == ("Migration number 0001", "apm-migrate", 1)  # put back
    assert by_version["0002"] == ("Migration number 0002", "apm-migrate", 1)
    assert by_version["0003"] == ("Migration number 0003", "apm-migrate", 1)
    assert "restored the executor's rows 0001, 0002" in details(db)["0003"]


def test_a_previewed_migration_that_drops_the_ledger_fails_and_changes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    write_migration(folder, "0001", upgrade="conn.execute('CREATE TABLE a (id INTEGER)')")
    db = tmp_path / "app.db"
    assert migrate(folder, db).committed
    write_migration(folder, "0002", upgrade="""
        conn.execute("SAVEPOINT s")
        conn.execute("RELEASE s")
        conn.execute("DROP TABLE schema_migrations")
        conn.execute("CREATE TABLE schema_migrations (version TEXT)")
    """)
    outcome = migrate(folder, db)
    assert not outcome.committed and "dropped or replaced schema_migrations" in str(outcome.error)
    assert set(rows(db)) == {"0001"}
