"""Opening the database: each problem with the file is its own error, and nothing on disk changes."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import datetime
from pathlib import Path

import pytest

from planner.engines.sqlite import database as database
from planner.engines.sqlite import backup as backups
from planner.engines.sqlite.backup import backup, list_backups
from planner.engines.sqlite.database import connect
from planner.errors import (
    DatabaseDirectoryMissing,
    DatabaseLocked,
    DatabaseNotFound,
    DatabaseReadOnly,
    NotADatabase,
)


def make_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
    conn.commit()
    conn.close()
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_connect_opens_an_existing_database_in_autocommit_mode(tmp_path):
    conn = connect(make_db(tmp_path / "app.db"))
    assert conn.isolation_level is None
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (10,)
    conn.close()


def test_missing_file_without_create_is_not_found_and_creates_nothing(tmp_path):
    with pytest.raises(DatabaseNotFound) as info:
        connect(tmp_path / "app.db")
    assert info.value.database == str(tmp_path / "app.db")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_without_create_and_with_create(tmp_path):
    path = tmp_path / "data" / "deeper" / "app.db"
    with pytest.raises(DatabaseDirectoryMissing) as info:
        connect(path)
    assert "does not exist" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    conn = connect(path, create=True)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    assert path.is_file()


def test_create_makes_a_valid_empty_database(tmp_path):
    conn = connect(tmp_path / "new.db", create=True)
    assert conn.execute("PRAGMA schema_version").fetchone() == (0,)
    conn.close()


# Shorter than SQLite's 100-byte header, connect reads the header itself (SQLite could take the file for an empty
# database); from 100 bytes on, SQLite's own first read refuses it. Either way: named, and left as it was.
@pytest.mark.parametrize("content", [b"hello, I am a text file\n" * 50, b"x", b"y" * 99, b"y" * 100])
@pytest.mark.parametrize("read", [True, False])
def test_not_a_database(tmp_path, content, read):
    from planner.engines.sqlite.runner import Executor

    path = tmp_path / "notes.db"
    path.write_bytes(content)
    before = snapshot(tmp_path)
    with pytest.raises(NotADatabase) as info:
        if read:
            connect(path)
        else:  # the fleet's reading ahead: its first read is its own, inside its read transaction
            Executor(path).read_ahead()
    assert "not a SQLite database" in str(info.value)
    assert snapshot(tmp_path) == before


def test_a_directory_is_not_a_database(tmp_path):
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(NotADatabase):
        connect(tmp_path / "folder.db", create=True)


def test_read_only_file(tmp_path):
    path = make_db(tmp_path / "app.db")
    os.chmod(path, 0o444)
    before = snapshot(tmp_path)
    try:
        with pytest.raises(DatabaseReadOnly) as info:
            connect(path)
        assert "read-only" in str(info.value)
    finally:
        os.chmod(path, 0o644)
    assert snapshot(tmp_path) == before


def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = make_db(folder / "app.db")
    before = snapshot(folder)
    os.chmod(folder, 0o555)
    try:
        with pytest.raises(DatabaseReadOnly):
            connect(path)
        with pytest.raises(DatabaseReadOnly):
            connect(folder / "other.db", create=True)
    finally:
        os.chmod(folder, 0o755)
    assert snapshot(folder) == before


def test_locked_past_the_busy_timeout(tmp_path):
    path = make_db(tmp_path / "app.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # even readers must wait
    try:
        with pytest.raises(DatabaseLocked) as info:
            connect(path, busy_timeout=0.2)
        assert info.value.timeout == 0.2
        assert "locked" in str(info.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_created_file_is_removed_when_opening_it_fails(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(database.sqlite3, "connect", refuse)
    with pytest.raises(DatabaseLocked):
        connect(tmp_path / "new.db", create=True)
    assert list(tmp_path.iterdir()) == []


def test_a_file_someone_else_created_is_never_removed(tmp_path, monkeypatch):
    path = make_db(tmp_path / "app.db")
    monkeypatch.setattr(database.sqlite3, "connect", lambda *a, **k: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked")))
    with pytest.raises(DatabaseLocked):
        connect(path, create=True)
    assert path.exists()


# --------------------------------------------------------------------------
# Backups
# --------------------------------------------------------------------------


class FixedClock:
    @staticmethod
    def now():
        return datetime(2025, 10, 18, 9, 30, 0)


def test_backup_copies_the_data_with_the_same_permissions(tmp_path):
    path = make_db(tmp_path / "app.db")
    os.chmod(path, 0o640)
    copy = backup(path)
    assert copy.name.startswith("app.db.backup.")
    assert stat.S_IMODE(copy.stat().st_mode) == 0o640
    conn = sqlite3.connect(copy)
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (10,)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_backup_names_get_a_suffix_and_list_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(backups, "datetime", FixedClock)
    path = make_db(tmp_path / "app.db")
    first, second, third = backup(path), backup(path), backup(path)
    assert first.name == "app.db.backup.20251018_093000"
    assert second.name == "app.db.backup.20251018_093000-1"
    assert third.name == "app.db.backup.20251018_093000-2"
    (tmp_path / "other.db.backup.20200101_000000").write_bytes(b"")
    assert list_backups(path) == [first, second, third]


def test_backup_of_a_read_only_database_works(tmp_path):
    path = make_db(tmp_path / "app.db")
    os.chmod(path, 0o444)
    try:
        copy = backup(path)
        assert stat.S_IMODE(copy.stat().st_mode) == 0o444
    finally:
        os.chmod(path, 0o644)


def test_backup_errors(tmp_path):
    with pytest.raises(DatabaseNotFound):
        backup(tmp_path / "missing.db")
    (tmp_path / "text.db").write_text("not sqlite " * 100)
    with pytest.raises(NotADatabase):
        backup(tmp_path / "text.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.db"]
