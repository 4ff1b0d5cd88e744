"""The ledger: the seed's table kept readable, upgraded in place, and an append-only log beside it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from planner.errors import NotADatabase
from planner.engines.sqlite.ledger import Ledger, read_ledger
from planner.ledger import LedgerEntry, LogEntry


def migration(version: str, description: str = "", checksum: str = "abc"):
    return SimpleNamespace(version=version, description=description or f"m{version}", checksum=checksum)


@pytest.fixture
def conn(tmp_path):
    raw = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    yield raw
    raw.close()


def columns(conn, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def test_ensure_schema_creates_both_tables_and_is_idempotent(conn):
    ledger = Ledger(conn)
    assert not ledger.exists()
    ledger.ensure_schema()
    ledger.ensure_schema()
    assert ledger.exists()
    # APM's later framework's seven columns (its migrations insert with applied_by), then ours.
    assert columns(conn, "schema_migrations") == ["id", "version", "description", "applied_at", "rollback_at",
                                                  "rollback_reason", "applied_by", "checksum", "execution_ms"]
    assert columns(conn, "schema_migrations_log") == [
        "id", "version", "action", "at", "checksum", "execution_ms", "outcome", "detail"
    ]


def test_reading_a_database_without_ledger_creates_nothing(conn):
    ledger = Ledger(conn)
    assert ledger.applied_migrations() == {}
    assert ledger.history() == []
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone() == (0,)


def test_legacy_three_column_ledger_is_upgraded_with_every_row_kept(conn):
    conn.execute(
        "CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, "
        "applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
    )
    conn.executemany(
        "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
        [("0001", "Initial schema", "2025-10-01 10:00:00"), ("0020", "Fix agents.tier", "2025-10-09 11:00:00"),
         ("27", "Add metadata", "2025-10-17 12:00:00")],
    )
    ledger = Ledger(conn)
    before = ledger.applied_migrations()  # readable before the upgrade, nothing is changed by reading
    assert before["0020"] == LedgerEntry("0020", "Fix agents.tier", "2025-10-09 11:00:00", None, None)
    assert columns(conn, "schema_migrations") == ["version", "description", "applied_at"]

    ledger.ensure_schema()
    assert columns(conn, "schema_migrations") == ["version", "description", "applied_at", "checksum", "execution_ms"]
    assert ledger.applied_migrations() == before
    assert list(before) == ["0001", "0020", "27"]  # numeric order
    assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == ("27",)

    ledger.record_applied(migration("0029", "Utility agents", "f00"), 12)
    entry = ledger.applied_migrations()["0029"]
    assert (entry.description, entry.checksum, entry.execution_ms) == ("Utility agents", "f00", 12)


def test_record_applied_and_unapplied(conn):
    ledger = Ledger(conn)
    ledger.ensure_schema()
    ledger.record_applied(migration("0001"), 5)
    with pytest.raises(sqlite3.IntegrityError):
        ledger.record_applied(migration("0001"), 5)  # one row per applied migration
    assert list(ledger.applied_migrations()) == ["0001"]
    assert ledger.applied_migrations()["0001"].applied_at  # a timestamp like CURRENT_TIMESTAMP's
    ledger.record_unapplied("0001")
    assert ledger.applied_migrations() == {}


def test_record_unapplied_finds_another_spelling(conn):
    ledger = Ledger(conn)
    ledger.ensure_schema()
    conn.execute("INSERT INTO schema_migrations (version) VALUES ('27'), ('²'), ('0100')")
    ledger.record_unapplied("0027")
    assert sorted(ledger.applied_migrations()) == ["0100", "²"]


def test_log_is_append_only_history(conn):
    ledger = Ledger(conn)
    ledger.ensure_schema()
    ledger.log("0001", "apply", "ok", checksum="abc", execution_ms=3)
    ledger.log("0002", "apply", "failed", checksum="def", execution_ms=1, detail="boom")
    ledger.log("0001", "rollback", "ok", checksum="abc", execution_ms=2)
    history = ledger.history()
    assert [(e.version, e.action, e.outcome) for e in history] == [
        ("0001", "apply", "ok"), ("0002", "apply", "failed"), ("0001", "rollback", "ok")
    ]
    assert all(isinstance(e, LogEntry) and e.at for e in history)
    assert [e.action for e in ledger.history("0001")] == ["apply", "rollback"]
    assert ledger.history("0002")[0].detail == "boom"


def test_a_migrations_row_factory_does_not_confuse_the_ledger(conn):
    ledger = Ledger(conn)
    ledger.ensure_schema()
    ledger.record_applied(migration("0001"), 1)
    conn.row_factory = lambda cursor, row: "not a tuple"
    assert list(ledger.applied_migrations()) == ["0001"]


def test_entries_are_frozen():
    entry = LedgerEntry("0001", "x", None)
    with pytest.raises(AttributeError):
        entry.version = "0002"  # type: ignore[misc]


# --------------------------------------------------------------------------
# read_ledger: a read that never writes
# --------------------------------------------------------------------------


def test_read_ledger_of_a_missing_file_creates_nothing(tmp_path):
    assert read_ledger(tmp_path / "app.db") == {}
    assert read_ledger(tmp_path / "no" / "such" / "app.db") == {}
    assert list(tmp_path.iterdir()) == []


def test_read_ledger_does_not_upgrade_a_legacy_table(tmp_path):
    path = tmp_path / "app.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, applied_at TIMESTAMP)")
    raw.execute("INSERT INTO schema_migrations VALUES ('0001', 'Initial', '2025-10-01 10:00:00')")
    raw.commit()
    raw.close()
    before = path.read_bytes()
    entries = read_ledger(path)
    assert entries == {"0001": LedgerEntry("0001", "Initial", "2025-10-01 10:00:00", None, None)}
    assert path.read_bytes() == before


def test_read_ledger_of_a_database_never_migrated(tmp_path):
    path = tmp_path / "app.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    assert read_ledger(path) == {}


def test_read_ledger_of_something_else(tmp_path: Path):
    (tmp_path / "app.db").write_text("hello")
    with pytest.raises(NotADatabase):
        read_ledger(tmp_path / "app.db")


# -- the ledger's shape, read once per CREATE TABLE text (a fleet of files made by one program) ------------------

FOREIGN = "CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, dirty BOOLEAN NOT NULL)"


def test_another_tools_ledger_is_refused_in_every_file_that_has_it(tmp_path):
    from planner.errors import ForeignLedger

    for name in ("first.db", "second.db", "third.db"):  # the second and third are answered from what the first said
        path = tmp_path / name
        with sqlite3.connect(path, isolation_level=None) as raw:
            raw.execute(FOREIGN)
            raw.execute("INSERT INTO schema_migrations VALUES ('0001', 0)")
        raw = sqlite3.connect(path, isolation_level=None)
        try:
            with pytest.raises(ForeignLedger) as refused:
                Ledger(raw).applied_migrations()
            assert name in str(refused.value) and "dirty" in str(refused.value)
            with pytest.raises(ForeignLedger):
                Ledger(raw).ensure_schema()
            assert columns(raw, "schema_migrations") == ["version", "dirty"]  # untouched
        finally:
            raw.close()


def test_a_ledger_whose_table_changed_is_read_again(conn):
    conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, applied_at TIMESTAMP)")
    ledger = Ledger(conn)
    assert ledger.applied_and_complete() == ({}, False)  # the seed's three columns: to be upgraded
    ledger.ensure_schema()  # ALTER TABLE ADD COLUMN rewrites the table's text
    assert ledger.applied_and_complete() == ({}, True)
    conn.execute("DROP TABLE schema_migrations_log")
    assert ledger.applied_and_complete() == ({}, False)  # the same table text, without its log beside it


def test_a_ledger_named_in_another_case_is_the_ledger(conn):
    # SQLite matches table names without case: this is the table every statement on schema_migrations reaches.
    conn.execute("CREATE TABLE Schema_Migrations (version TEXT PRIMARY KEY, description TEXT, applied_at TIMESTAMP)")
    conn.execute("INSERT INTO schema_migrations VALUES ('0001', 'first', '2026-01-01')")
    ledger = Ledger(conn)
    assert list(ledger.applied_migrations()) == ["0001"]
    ledger.ensure_schema()
    assert ledger.applied_and_complete()[1]
