"""A database is named by a display string: a file's path as given, or a URL with its password masked.

Every error that names a database holds that string (``database``), never a
``Path`` or the connection string it was given: whatever a caller passes, a
password cannot reach the message, the command's advice or a field a
program reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.errors import message
from planner import errors as E
from planner.engines import engine_for
from planner import errors as G
from planner.errors import StepLocked
from planner.locks import LockSettings

SECRET = "s3cret-Pw"
URLS = [
    f"postgresql://app:{SECRET}@db.example/apm",
    f"postgres://app:{SECRET}@db.example:5433/apm?sslmode=require",
    f"postgresql://app@db.example/apm?password={SECRET}",
    f"host=db.example dbname=apm user=app password={SECRET}",
    f"postgresq://app:{SECRET}@db.example/apm",  # a misspelled scheme still carries the password
]

#: Each error that names a database, built from ``db`` (a path or a URL) as its raisers build it.
BUILDERS = {
    E.DatabaseNotFound: lambda db: E.DatabaseNotFound(db),
    E.DatabaseDirectoryMissing: lambda db: E.DatabaseDirectoryMissing(db),
    E.NotADatabase: lambda db: E.NotADatabase(db),
    E.DatabaseDamaged: lambda db: E.DatabaseDamaged(db, "malformed"),
    E.DatabaseReadOnly: lambda db: E.DatabaseReadOnly(db),
    E.ForeignLedger: lambda db: E.ForeignLedger(db, ["id"], ["version"]),
    E.NoAgentsTable: lambda db: E.NoAgentsTable(db),
    E.DatabaseLocked: lambda db: E.DatabaseLocked(db, 5, migration_lock=True),
    E.StepUnderWay: lambda db: E.StepUnderWay(db, "0003", "pid 7", 5),
    E.UnusableBackup: lambda db: E.UnusableBackup(Path("/backups/apm.dump"), "bad", database=db),
    E.NoBackups: lambda db: E.NoBackups(db),
    G.DriverMissing: lambda db: G.DriverMissing(db),
    G.DatabaseUnreachable: lambda db: G.DatabaseUnreachable(db, "refused"),
    G.DatabaseMissing: lambda db: G.DatabaseMissing(db, "no such database"),
    G.ServerError: lambda db: G.ServerError(db, "boom"),
    G.BackupToolMissing: lambda db: G.BackupToolMissing(db),
    G.BackupFailed: lambda db: G.BackupFailed(db, "boom"),
    G.RestoreFailed: lambda db: G.RestoreFailed(db, "/backups/apm.dump", "boom"),
    StepLocked: lambda db: StepLocked("0003", LockSettings(), 2, [], shown=db),
    G.StatementTimedOut: lambda db: G.StatementTimedOut("0003", "UPDATE t SET a = 1", "1s", "option", whole=True,
                                                        shown=db),
}


def _subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *_subclasses(direct)}}


def test_every_database_error_is_checked_here():
    """A new error naming a database joins the table, so the checks below cover it too."""
    missing = {cls.__name__ for cls in _subclasses(E.DatabaseError) if cls.__module__.startswith("planner")
               and not cls.__module__.startswith("planner.testing")} - {cls.__name__ for cls in BUILDERS}
    assert not missing, f"add to BUILDERS: {sorted(missing)}"


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("kind", list(BUILDERS), ids=lambda cls: cls.__name__)
def test_no_error_built_from_a_url_shows_its_password(kind: type, url: str):
    error = BUILDERS[kind](url)
    assert isinstance(error.database, str) and SECRET not in error.database
    assert SECRET not in str(error)
    assert SECRET not in message(error)  # the command's advice too
    assert not [name for name, value in vars(error).items() if SECRET in repr(value)]


@pytest.mark.parametrize("kind", list(BUILDERS), ids=lambda cls: cls.__name__)
def test_an_error_names_a_file_by_its_path_as_a_string(kind: type, tmp_path: Path):
    db = tmp_path / "data" / "app.db"
    error = BUILDERS[kind](db)
    assert error.database == str(db) and type(error.database) is str


def test_an_unreachable_server_is_named_without_its_password():
    """The engine's own errors, from a real connection attempt (nothing listens on port 9)."""
    engine = engine_for(f"postgresql://app:{SECRET}@127.0.0.1:9/apm?connect_timeout=2")
    with pytest.raises(E.DatabaseError) as raised:
        engine.applied()
    assert SECRET not in str(raised.value) and SECRET not in (raised.value.database or "")
    assert "app:***@127.0.0.1:9/apm" in raised.value.database


def test_a_urls_dbname_in_its_query_names_the_database_as_libpq_reads_it() -> None:
    """The text-only reading agrees with libpq and ``connection_identity``: ``?dbname=`` wins over the path."""
    from planner.urls import database_name

    assert database_name("postgresql://u@/other?dbname=live&host=/sock") == "live"
    assert database_name("postgresql://u@/app?host=/sock") == "app"
    assert database_name("postgresql://u@/?host=/sock") == "u"
