"""``apm fleet status``'s fast reading of a ledger says what the engine's reading says, whatever came before it.

The fast reader remembers each ledger table's text (its ``CREATE TABLE``) and,
for a text met before, reads only the columns it needs. These files are read
in every order in one process, so each is also read after files whose tables
look like its own: the seed's three columns, APM's framework's seven (a row it
rolled back, a note its migration wrote), this project's, another tool's
(this project's columns and one more), and a ledger spelled ``Schema_Migrations``.
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from planner.engines.sqlite import ledger, quick_read
from planner.errors import ForeignLedger

OURS = ("CREATE TABLE {name} (id INTEGER PRIMARY KEY AUTOINCREMENT, version TEXT NOT NULL UNIQUE, description TEXT, "
        "applied_at TIMESTAMP, rollback_at TIMESTAMP, rollback_reason TEXT, applied_by TEXT, checksum TEXT, "
        "execution_ms INTEGER{extra})")
FRAMEWORK = ("CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, version TEXT NOT NULL UNIQUE, "
             "description TEXT, applied_at TIMESTAMP, rollback_at TIMESTAMP, rollback_reason TEXT, applied_by TEXT)")
SEED = "CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, applied_at TIMESTAMP)"
LOG = ("CREATE TABLE schema_migrations_log (id INTEGER PRIMARY KEY AUTOINCREMENT, version TEXT NOT NULL, "
       "action TEXT NOT NULL, at TIMESTAMP, outcome TEXT, detail TEXT)")


def _database(path: Path, table: str, rows: list[tuple], log: list[tuple] = ()) -> Path:
    conn = sqlite3.connect(path)
    conn.execute(table)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(schema_migrations)")]
    for row in rows:
        given = dict(zip(("version", "applied_at", "rollback_at", "checksum"), row))
        names = [c for c in given if c in columns]
        conn.execute(f"INSERT INTO schema_migrations ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                     [given[c] for c in names])
    if log:
        conn.execute(LOG)
        conn.executemany("INSERT INTO schema_migrations_log (version, action, outcome, detail) VALUES (?, ?, ?, ?)",
                         log)
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    failed = [("0001", "apply", "ok", None), ("0002", "apply", "failed", "boom")]
    return {
        "ours": _database(tmp_path / "ours.db", OURS.format(name="schema_migrations", extra=""),
                          [("0001", "t1", None, "c1"), ("0002", "t2", "t3", "c2"), ("0003", "t4", None, None)],
                          failed),
        "ours again": _database(tmp_path / "again.db", OURS.format(name="schema_migrations", extra=""),
                                [("0001", "t5", None, "c9")], [("0001", "apply", "ok", None)]),
        "framework": _database(tmp_path / "framework.db", FRAMEWORK,
                               [("0001", "t1", None), ("0018_consolidated", "t2", None), ("0019", "t3", "t4")],
                               [("0019", "rollback", "ok", None)]),
        "seed": _database(tmp_path / "seed.db", SEED, [("0001", "t1"), ("0002", None)]),
        "another tool's": _database(tmp_path / "foreign.db", OURS.format(name="schema_migrations",
                                                                          extra=", batch INTEGER"),
                                    [("0001", "t1", None, "c1")], [("0001", "apply", "ok", None)]),
        "spelled otherwise": _database(tmp_path / "case.db", OURS.format(name="Schema_Migrations", extra=""),
                                       [("0004", "t1", None, "c4")], [("0004", "apply", "ok", None)]),
    }


def _engine_reading(path: Path) -> tuple[dict, dict]:
    entries = ledger.read_ledger(path)
    return ({v: e.applied_at for v, e in entries.items()}, {v: e.checksum for v, e in entries.items() if e.checksum})


def test_the_fast_reading_is_the_engine_s_in_every_order(files: dict[str, Path], monkeypatch) -> None:
    expected = {}
    for name, path in files.items():
        try:
            expected[name] = _engine_reading(path)
        except ForeignLedger:
            expected[name] = ForeignLedger
    assert expected["another tool's"] is ForeignLedger and expected["framework"][0] == {"0001": "t1"}
    for order in itertools.permutations(files):
        monkeypatch.setattr(quick_read, "_BY_TABLE", {})  # each order starts with nothing remembered
        for name in [*order, *order]:  # the second round reads every file with its table's text known
            checksums: dict[str, str] = {}
            if expected[name] is ForeignLedger:
                with pytest.raises(ForeignLedger):
                    quick_read.read_quickly(str(files[name]), 1.0, checksums=checksums)
                continue
            entries, last = quick_read.read_quickly(str(files[name]), 1.0, checksums=checksums)
            assert (entries, checksums) == expected[name], (order, name)
            if name == "ours":
                assert last == ("failed", "0002", "boom", "apply")
            elif name == "seed":
                assert last is None
