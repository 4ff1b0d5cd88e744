"""A damaged database is never written on top of (issue 22 point 12).

On a file ``doctor`` called malformed, ``apm migrate --yes`` committed
eight migrations before failing, and a rollback printed a raw traceback
("could not log the failure of migration 0016"). Now a plan whose parts
commit separately (``--no-preview``, or steps with ``transactional = False``)
runs ``PRAGMA quick_check`` first and refuses a damaged file, nothing
changed; a run that meets corruption anyway (the default path, one
transaction, is not checked first: the corrupt page rolls it back whole)
stops with exit 6, says the database is damaged and how to restore it,
writes no failure row into it, and never prints a traceback.

The corrupt file is a real database made by the test, with the page of one
index overwritten.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run_apm, write_migration


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def catalog(folder: Path, *, outside: bool = False) -> Path:
    """0001 items (indexed, 300 rows); 0002-0004 tables of their own; 0005 writes items (through the index)."""
    write_migration(folder, "0001", "Items", depends_on=(),
                    upgrade="conn.execute('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)')\n"
                            "conn.execute('CREATE INDEX items_name ON items (name)')\n"
                            "conn.executemany('INSERT INTO items (name) VALUES (?)', "
                            "[(f'item {n:05}',) for n in range(300)])",
                    downgrade="conn.execute('DROP TABLE items')")
    for n in (2, 3, 4):
        extra = "transactional = False\n" if outside and n == 3 else ""
        write_migration(folder, f"000{n}", f"Table t{n}", depends_on=("0001",), extra=extra,
                        upgrade=f"conn.execute('CREATE TABLE t{n} (id INTEGER)')",
                        downgrade=f"conn.execute('DROP TABLE t{n}')")
    write_migration(folder, "0005", "Rename items", depends_on=("0004",),
                    upgrade="conn.execute(\"UPDATE items SET name = name || ' (old)' WHERE name > 'item 00100'\")",
                    downgrade="conn.execute(\"DELETE FROM items WHERE name > 'item 00100'\")")
    return folder


def damage_index(db: Path, index: str = "items_name") -> None:
    """Overwrite the b-tree header of ``index``'s (or a table's) root page: SQLite then calls the file malformed."""
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (index,)).fetchone()
    conn.close()
    with db.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * 64)
    check = sqlite3.connect(db)
    try:
        assert check.execute("PRAGMA quick_check").fetchone()[0] != "ok"  # the damage is real
    except sqlite3.DatabaseError:
        pass  # so real that the check itself cannot read the file
    finally:
        check.close()


def applied(db: Path) -> list[str]:
    return [r[0] for r in sqlite3.connect(db).execute("SELECT version FROM schema_migrations ORDER BY 1")]


def assert_damaged(result, *, nothing_ran: bool) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 6, (result.returncode, output)
    assert "Traceback" not in output and "could not log" not in output, output
    line = result.stderr.strip().splitlines()[-1]
    assert "is damaged" in line and "apm migrate restore" in line, line
    if nothing_ran:
        assert "nothing was changed" in line, line


@pytest.fixture
def damaged(catalog_dir: Path, tmp_path: Path):
    """A database with 0001 applied and items' index damaged; the catalog's 0002-0005 pending."""
    def make(outside: bool = False) -> tuple[Path, tuple[str, ...]]:
        folder = catalog(catalog_dir, outside=outside)
        db = tmp_path / "shop.db"
        base = ("--db", str(db), "--migrations-dir", str(folder))
        assert run_apm(*base, "migrate", "--target", "0001", "--yes").returncode == 0
        damage_index(db)
        return db, base
    return make


@pytest.mark.parametrize("args", [("--no-preview", "--yes"), ("--no-preview", "--target", "0005", "--yes")])
def test_a_step_by_step_run_checks_integrity_first_and_changes_nothing(damaged, args):
    db, base = damaged()
    before = digest(db)
    result = run_apm(*base, "migrate", *args)
    assert_damaged(result, nothing_ran=True)
    assert "quick_check" in result.stderr
    assert digest(db) == before and applied(db) == ["0001"]  # not 0002-0004 committed on top of it


def test_a_plan_with_a_step_outside_a_transaction_checks_integrity_first(damaged):
    db, base = damaged(outside=True)
    before = digest(db)
    assert_damaged(run_apm(*base, "migrate", "--yes"), nothing_ran=True)
    assert digest(db) == before


def test_the_default_run_meets_the_damage_rolls_back_whole_and_says_so(damaged):
    db, base = damaged()
    result = run_apm(*base, "migrate", "--yes")
    assert_damaged(result, nothing_ran=False)
    assert applied(db) == ["0001"]
    log = sqlite3.connect(db).execute("SELECT outcome FROM schema_migrations_log WHERE version = '0005'").fetchall()
    assert log == []  # no failure row written into a damaged file


@pytest.mark.parametrize("log_damaged", [False, True])
def test_a_rollback_that_meets_the_damage_prints_no_traceback(damaged, log_damaged):
    db, base = damaged()
    conn = sqlite3.connect(db)  # 0002-0005 recorded as applied by hand, so the rollback has work to do
    conn.executemany("INSERT INTO schema_migrations (version, description) VALUES (?, ?)",
                     [("0002", "x"), ("0003", "x"), ("0004", "x"), ("0005", "x")])
    conn.commit()
    conn.close()
    if log_damaged:  # where the failure would be logged is damaged too: the old traceback's case
        damage_index(db, "schema_migrations_log")
    for args in (("--rollback", "0005", "--yes"), ("--rollback", "0005", "--no-preview", "--yes")):
        result = run_apm(*base, "migrate", *args)
        assert_damaged(result, nothing_ran=False)
        assert "0005" in applied(db)
