"""The connection handed to migrations keeps the executor's transaction."""

from __future__ import annotations

import sqlite3

import pytest

from planner.engines.sqlite.connection import MigrationConnection, forbidden_reason, switches_foreign_keys
from planner.engines.sqlite.sql import split_script
from planner.errors import TransactionTampered


@pytest.fixture
def conn(tmp_path):
    """A real file connection inside an open transaction, as the executor hands it over."""
    raw = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    raw.execute("CREATE TABLE kept (x)")
    raw.execute("BEGIN IMMEDIATE")
    yield raw
    if raw.in_transaction:
        raw.execute("ROLLBACK")
    raw.close()


def tables(raw: sqlite3.Connection) -> list[str]:
    return [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]


@pytest.mark.parametrize(
    "sql",
    [
        "COMMIT",
        "commit transaction",
        "END",
        "ROLLBACK",
        "rollback transaction",
        "BEGIN",
        "BEGIN IMMEDIATE",
        "  -- a comment\n  /* another */ COMMIT;",
    ],
)
def test_statements_that_manage_the_transaction_are_forbidden(sql):
    assert forbidden_reason(sql) is not None


@pytest.mark.parametrize(
    "sql",
    ["PRAGMA foreign_keys = OFF", "pragma foreign_keys=on", "PRAGMA main.foreign_keys = 0", "PRAGMA foreign_keys(1)"],
)
def test_switching_foreign_keys_is_recognised(sql):
    assert switches_foreign_keys(sql)
    assert forbidden_reason(sql) is None


@pytest.mark.parametrize(
    "sql",
    [
        "ROLLBACK TO sp",
        "ROLLBACK TRANSACTION TO SAVEPOINT sp",
        "SAVEPOINT sp",
        "RELEASE sp",
        "PRAGMA foreign_keys",
        "PRAGMA foreign_key_list(t)",
        "CREATE TABLE commit_log (x)",
        "-- COMMIT\nSELECT 1",
        "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END",
        "",
        "   ",
    ],
)
def test_ordinary_statements_are_allowed(sql):
    assert forbidden_reason(sql) is None


def test_split_script_keeps_triggers_strings_and_comments_whole():
    script = """
        CREATE TABLE a (x TEXT);  -- first
        INSERT INTO a VALUES ('semi;colon');
        CREATE TRIGGER trg AFTER INSERT ON a BEGIN
            INSERT INTO a VALUES ('from trigger;');
            UPDATE a SET x = x || ';' WHERE 0;
        END;
        /* only a comment */ ;
        SELECT 1
    """
    statements = list(split_script(script))
    assert len(statements) == 4
    assert statements[1] == "INSERT INTO a VALUES ('semi;colon')"  # each without its ";", as on PostgreSQL
    assert statements[2].startswith("CREATE TRIGGER") and statements[2].endswith("END")
    assert statements[3] == "SELECT 1"


def test_executescript_does_not_commit(conn):
    proxy = MigrationConnection(conn, "0001")
    proxy.executescript(
        """
        CREATE TABLE a (x);
        INSERT INTO a VALUES (1);
        CREATE TRIGGER trg AFTER INSERT ON a BEGIN INSERT INTO kept VALUES (new.x); END;
        INSERT INTO a VALUES (2);
        """
    )
    assert conn.in_transaction
    assert conn.execute("SELECT x FROM kept").fetchall() == [(2,)]
    conn.execute("ROLLBACK")
    assert tables(conn) == ["kept"]


def test_a_forbidden_statement_in_a_script_is_refused_before_anything_runs(conn):
    proxy = MigrationConnection(conn, "0007", "apply")
    with pytest.raises(TransactionTampered) as info:
        proxy.executescript("CREATE TABLE a (x); COMMIT; CREATE TABLE b (y);")
    assert info.value.version == "0007"
    assert info.value.statement == "COMMIT"  # without its ";", as on PostgreSQL
    assert "0007" in str(info.value)
    assert conn.in_transaction
    assert tables(conn) == ["kept"]


def test_commit_is_a_no_op_and_rollback_is_refused(conn):
    proxy = MigrationConnection(conn, "0001")
    proxy.execute("CREATE TABLE a (x)")
    proxy.commit()
    assert conn.in_transaction
    with pytest.raises(TransactionTampered):
        proxy.rollback()
    assert conn.in_transaction


def test_switching_foreign_keys_is_passed_over_and_remembered(conn):
    conn.execute("PRAGMA foreign_keys").fetchone()
    proxy = MigrationConnection(conn, "0027", "rollback")
    proxy.execute("PRAGMA foreign_keys = OFF")
    proxy.executescript("PRAGMA foreign_keys = ON; CREATE TABLE after_pragma (x);")
    assert proxy.ignored == ["PRAGMA foreign_keys = OFF", "PRAGMA foreign_keys = ON"]
    assert proxy.tampered is None
    assert "after_pragma" in tables(conn)
    assert conn.in_transaction
    assert proxy.execute("PRAGMA foreign_keys").fetchone() == (0,)  # reading is fine


def test_a_swallowed_refusal_is_remembered(conn):
    proxy = MigrationConnection(conn, "0001")
    assert proxy.tampered is None
    try:
        proxy.execute("COMMIT")
    except TransactionTampered:
        pass
    assert isinstance(proxy.tampered, TransactionTampered)


def test_cursors_are_guarded_too(conn):
    proxy = MigrationConnection(conn, "0001")
    cursor = proxy.cursor()
    with pytest.raises(TransactionTampered):
        cursor.execute("END TRANSACTION")
    with pytest.raises(TransactionTampered):
        cursor.executescript("BEGIN; SELECT 1;")
    reused = proxy.execute("SELECT 1")
    with pytest.raises(TransactionTampered):
        reused.execute("COMMIT")
    assert conn.in_transaction


def test_with_block_and_isolation_level_and_close(conn):
    proxy = MigrationConnection(conn, "0001")
    with proxy as same:
        same.execute("CREATE TABLE a (x)")
    assert conn.in_transaction
    with pytest.raises(TransactionTampered):
        proxy.isolation_level = "DEFERRED"
    with pytest.raises(TransactionTampered):
        proxy.close()
    assert conn.in_transaction


def test_everything_else_passes_through(conn):
    proxy = MigrationConnection(conn, "0001")
    proxy.create_function("double", 1, lambda x: x * 2)
    proxy.row_factory = sqlite3.Row
    cursor = proxy.execute("CREATE TABLE a (x)")
    proxy.executemany("INSERT INTO a VALUES (double(?))", [(1,), (2,), (3,)])
    rows = proxy.execute("SELECT x FROM a ORDER BY x").fetchall()
    assert [row["x"] for row in rows] == [2, 4, 6]
    assert [tuple(row) for row in proxy.execute("SELECT x FROM a ORDER BY x")] == [(2,), (4,), (6,)]
    cursor = proxy.cursor()
    cursor.execute("INSERT INTO a VALUES (?)", (10,))
    assert cursor.lastrowid == 4 and cursor.rowcount == 1
    assert proxy.in_transaction
    assert conn.row_factory is sqlite3.Row
    proxy.execute("SAVEPOINT sp")
    proxy.execute("INSERT INTO a VALUES (99)")
    proxy.execute("ROLLBACK TO sp")
    proxy.execute("RELEASE sp")
    assert proxy.execute("SELECT COUNT(*) FROM a").fetchone()[0] == 4


def test_a_text_already_allowed_is_still_refused_once_the_transaction_ended(tmp_path):
    """The step remembers texts it allowed (a data migration's loop is checked once), but whether the runner's
    transaction is still open is asked for every statement: a repeat must not commit on its own."""
    raw = sqlite3.connect(tmp_path / "repeat.db", isolation_level=None)
    raw.execute("CREATE TABLE t (id INTEGER)")
    raw.execute("BEGIN IMMEDIATE")
    proxy = MigrationConnection(raw, "0001", "apply")
    insert = "INSERT INTO t (id) VALUES (?)"
    proxy.execute(insert, (1,))
    proxy.execute(insert, (2,))
    raw.execute("ROLLBACK")  # the transaction ends behind the proxy's back
    with pytest.raises(TransactionTampered, match="had already ended"):
        proxy.execute(insert, (3,))
    with pytest.raises(TransactionTampered, match="had already ended"):
        proxy.cursor().executemany(insert, [(4,)])
    assert raw.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    raw.close()


def test_a_cursor_the_migration_still_holds_is_never_reused(conn):
    """``execute`` reuses the cursor it returned last only when nothing holds it any more (a data migration's
    loop): a kept cursor, a ``for`` loop over one, or a bound method of one must still see its own rows."""
    proxy = MigrationConnection(conn, "0001")
    proxy.execute("CREATE TABLE t (id INTEGER)")
    proxy.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
    kept = proxy.execute("SELECT id FROM t ORDER BY id")
    assert proxy.execute("SELECT 42").fetchone() == (42,)
    assert kept.fetchall() == [(1,), (2,), (3,)]
    seen = []
    for (number,) in proxy.execute("SELECT id FROM t ORDER BY id"):  # the loop holds the cursor; the body runs
        seen.append(number)
        proxy.execute("UPDATE t SET id = id WHERE id = ?", (number,))
    assert seen == [1, 2, 3]
    fetch = proxy.execute("SELECT id FROM t ORDER BY id").fetchone  # holds the sqlite3 cursor, not the wrapper
    proxy.execute("SELECT 42")
    assert [fetch(), fetch()] == [(1,), (2,)]
    # A reused cursor is the same guarded cursor: it refuses what any other refuses.
    proxy.execute("SELECT 1")
    with pytest.raises(TransactionTampered):
        proxy.execute("COMMIT")
    with pytest.raises(TransactionTampered):
        proxy.execute("SELECT 1").execute("ROLLBACK")
    assert proxy.execute("SELECT 1").connection is proxy
    assert conn.in_transaction


def test_a_query_left_unread_does_not_keep_its_table_locked(conn):
    """A query's cursor is the caller's alone: once the migration lets it go, its unread rows no longer hold the
    statement open, so a table it read can be dropped (SQLite refuses while any statement reads), within the step
    and by the next step's connection."""
    conn.executemany("INSERT INTO kept VALUES (?)", [(1,), (2,), (3,)])
    proxy = MigrationConnection(conn, "0001")
    assert proxy.execute("SELECT x FROM kept ORDER BY x").fetchone() == (1,)
    proxy.cursor().execute("CREATE TABLE other (y)")
    assert proxy.execute("SELECT y FROM other").fetchone() is None
    proxy.cursor().execute("DROP TABLE other")
    assert proxy.fetchone("SELECT x FROM kept ORDER BY x") == (1,)
    following = MigrationConnection(conn, "0002")
    following.execute("DROP TABLE kept")
    assert tables(conn) == []
