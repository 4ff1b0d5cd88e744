"""A SQLite preview counts overwritten values with a copy of the column once a trigger has counted its share.

The counter trigger SQLite runs for every updated row cost a data migration
of 50,000 single-row UPDATEs more than the rest of the watch (issue 22
point 15). Once a column's trigger has counted ``SNAPSHOT_AFTER`` changed
values (or its share of a bigger table) it gives way to a copy of the
column, compared with the table when the step ends
(``planner.engines.sqlite.effects.ValueCounters``). Each test first changes
1,500 values of a 3,000-row table in one statement (the trigger counts
them), so what follows is counted by the copy. The copy must count what the
trigger counts wherever both are exact, never less than is lost, and it must
let go before anything that could make a rowid stand for another row.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from planner.engines.sqlite import effects
from tests.test_preview_cache import _preview as preview

ROWS = 3000
TABLE = f"""
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, c TEXT COLLATE NOCASE, n INTEGER DEFAULT 0)")
    conn.executemany("INSERT INTO t (id, c) VALUES (?, ?)", [(i, f"v{{i}}") for i in range(1, {ROWS + 1})])
    conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, hits INTEGER NOT NULL DEFAULT 0)")
    conn.executemany("INSERT INTO audit (id) VALUES (?)", [(i,) for i in range(1, {ROWS + 1})])
    conn.execute("CREATE TABLE u (id INTEGER PRIMARY KEY, code TEXT UNIQUE)")
    conn.execute("CREATE TABLE v (id INTEGER PRIMARY KEY, code TEXT UNIQUE ON CONFLICT REPLACE)")
    for name in ("u", "v"):
        conn.executemany(f"INSERT INTO {{name}} VALUES (?, ?)", [(i, f"c{{i}}") for i in range(1, 6)])
    conn.execute("CREATE TABLE w (k TEXT PRIMARY KEY, c TEXT) WITHOUT ROWID")
    conn.executemany("INSERT INTO w VALUES (?, ?)", [(f"k{{i}}", f"v{{i}}") for i in range(1, {ROWS + 1})])
"""
#: 1,500 values changed in one statement: the trigger counts them, and its share is reached.
BULK = "conn.execute(\"UPDATE t SET c = c || '!' WHERE id <= 1500\")"
#: In the migration: fail unless the preview's trigger on t has given way to a copy.
COPIED = ("made = dict(conn.execute(\"SELECT type, count(*) FROM temp.sqlite_master WHERE name LIKE 'apm_preview_%' "
          "GROUP BY type\").fetchall()); assert made.get('table') and not made.get('trigger'), made")


def _preview(catalog_dir: Path, db: Path, upgrade: str):
    return preview(catalog_dir, db, upgrade, setup=TABLE)


def test_a_loop_of_updates_is_counted_without_a_trigger(tmp_path, catalog_dir):
    """A data migration's loop: once the share is counted the trigger is gone, and every changed value counts."""
    result = _preview(catalog_dir, tmp_path / "p.db", f"""
        for i in range(1, {ROWS + 1}):
            conn.execute("UPDATE t SET n = ? WHERE id = ?", (i % 3, i))  # 0 -> 0 for a third: not changed
            if i == 1500:
                {COPIED}
    """)
    assert result.describe() == ["0002 apply: overwrites 2000 values of t.n"]
    assert result.loses_data


# Each case: the step (``BULK`` stands for it; the copy is made at the statement after it), and the lines the
# preview must print. The old trigger-only counts are given where they differ: they counted every change, so
# they said more than was lost.
CASES = {
    # A value changed twice counts once: the second change overwrote what the plan wrote (old: 1520).
    "changed twice": ("""
        for i in range(2001, 2011):
            conn.execute("UPDATE t SET c = 'x' WHERE id = ?", (i,))
            conn.execute("UPDATE t SET c = 'y' WHERE id = ?", (i,))
    """, ["0002 apply: overwrites 1510 values of t.c"]),
    # Changed and changed back: nothing of it is lost (old: 1520).
    "changed back": ("""
        for i in range(2001, 2011):
            conn.execute("UPDATE t SET c = 'tmp' WHERE id = ?", (i,))
            conn.execute("UPDATE t SET c = ? WHERE id = ?", (f"v{i}", i))
    """, ["0002 apply: overwrites 1500 values of t.c"]),
    # Updated, then its row deleted: lost once, as a row (old: 1510 values and the 10 rows).
    "updated then deleted": ("""
        for i in range(2001, 2011):
            conn.execute("UPDATE t SET c = 'x' WHERE id = ?", (i,))
            conn.execute("DELETE FROM t WHERE id = ?", (i,))
    """, ["0002 apply: overwrites 1500 values of t.c", "0002 apply: deletes 10 rows of t (3000 → 2990)"]),
    # Deleted and put back under its id: the new row is not the old one changed (the INSERT settles the copy).
    # The INSERT's text was run before the copy was made: the copy makes every text looked at again.
    "deleted and inserted again": ("""
        conn.execute("INSERT INTO t (id, c) VALUES (?, ?)", (5001, "first"))
        BULK
        conn.execute("UPDATE t SET c = 'x' WHERE id = 2001")
        conn.execute("DELETE FROM t WHERE id = 2002")
        conn.execute("INSERT INTO t (id, c) VALUES (?, ?)", (2002, "new"))
        conn.execute("UPDATE t SET c = 'x' WHERE id = 2003")
    """, ["0002 apply: overwrites 1502 values of t.c", "0002 apply: deletes 1 row of t (3001 → 3001)",
          "0002 apply: inserts 2 rows into t"]),
    # The same texts in a loop: each INSERT settles the copy, and the UPDATE after it must be counted again.
    "a loop that inserts": ("""
        for i in range(2001, 2101):
            conn.execute("UPDATE t SET c = 'x' WHERE id = ?", (i,))
            conn.execute("DELETE FROM t WHERE id = ?", (i + 500,))
            conn.execute("INSERT INTO t (id, c) VALUES (?, 'n')", (i + 500,))
    """, ["0002 apply: overwrites 1600 values of t.c", "0002 apply: deletes 100 rows of t (3000 → 3000)",
          "0002 apply: inserts 100 rows into t"]),
    # A row the plan inserted into a table it did not create, then changed: counted, as the trigger and
    # PostgreSQL count it (what the plan wrote is told by table and column, ``PlanWrites``, not by row).
    "a row the plan inserted": ("""
        conn.execute("INSERT INTO t (id, c) VALUES (5000, 'p')")
        conn.execute("UPDATE t SET c = 'q' WHERE id = 5000")
    """, ["0002 apply: overwrites 1501 values of t.c", "0002 apply: inserts 1 row into t"]),
    # Rows moved to other rowids, then changed: the copy is settled before the move, the rest counted after
    # (an UPDATE of ``rowid`` by that name is reported so, as before).
    "rowid moved": ("""
        conn.execute("UPDATE t SET c = 'x' WHERE id = 2001")
        conn.execute("UPDATE t SET id = id + 10000 WHERE id > 2990")
        conn.execute("UPDATE t SET c = 'w' WHERE id > 12990")
        conn.execute("UPDATE t SET rowid = rowid + 10000 WHERE id = 1")
        conn.execute("UPDATE t SET c = 'w' WHERE id = 10001")
    """, ["0002 apply: overwrites 1 value of t.ROWID", "0002 apply: overwrites 10 values of t.id",
          "0002 apply: overwrites 1512 values of t.c"]),
    # The user's trigger updates another table: its column is counted (and copied) like any other. t.c: rows
    # 1 to 1500 were changed by BULK and again here, and count again, as they did with the trigger alone.
    "a trigger of the schema": ("""
        conn.execute("CREATE TRIGGER tally AFTER UPDATE OF c ON t BEGIN "
                     "UPDATE audit SET hits = hits + 1 WHERE id = NEW.id; END")
        for i in range(1, 2001):
            conn.execute("UPDATE t SET c = 'z' WHERE id = ?", (i,))
    """, ["0002 apply: adds trigger tally", "0002 apply: overwrites 2000 values of audit.hits",
          "0002 apply: overwrites 3500 values of t.c"]),
    # A case-insensitive column: only values its collation tells apart changed, as the trigger said.
    "collation": ("""
        conn.execute("UPDATE t SET c = 'x' WHERE id = 2001")
        conn.execute("UPDATE t SET c = upper(c) WHERE id > 2001")
    """, ["0002 apply: overwrites 1501 values of t.c"]),
    # An upsert changes existing rows through its DO UPDATE: counted, the copy settled by its INSERT.
    "upsert": ("""
        for i in range(1996, 2006):
            conn.execute("INSERT INTO t (id, c) VALUES (?, 'u') ON CONFLICT(id) DO UPDATE SET c = excluded.c", (i,))
    """, ["0002 apply: overwrites 1510 values of t.c"]),
    # Renamed after the copy was made: the copy is settled first, and the rename reported.
    "table renamed": ("""
        conn.execute("UPDATE t SET c = 'x' WHERE id = 2001")
        conn.execute("ALTER TABLE t RENAME TO t2")
    """, ["0002 apply: renames table t to t2", "0002 apply: overwrites 1501 values of t.c"]),
    # A savepoint made before the copy, rolled back to: the copy goes with the counts made since.
    "savepoint before the copy": ("""
        conn.execute("SAVEPOINT a")
        BULK
        conn.execute("UPDATE t SET c = 'x' WHERE id = 2001")
        conn.execute("ROLLBACK TO a")
        conn.execute("RELEASE a")
        conn.execute("UPDATE t SET c = 'q' WHERE id <= 5")
    """, ["0002 apply: overwrites 5 values of t.c"]),
    # A savepoint made after the copy, rolled back to after an INSERT settled (emptied) the copy: the copy is
    # back as it was, and counts only what is left. (The rolled-back DELETE and INSERT stay counted as done, as
    # every statement's own rows do; unchanged here.)
    "savepoint after the copy": ("""
        conn.execute("UPDATE t SET c = 'x' WHERE id = 2001")
        conn.execute("SAVEPOINT a")
        conn.execute("UPDATE t SET c = 'x' WHERE id > 2990")
        conn.execute("DELETE FROM t WHERE id = 2002")
        conn.execute("INSERT INTO t (id, c) VALUES (2002, 'other')")
        conn.execute("ROLLBACK TO a")
        conn.execute("RELEASE a")
        conn.execute("UPDATE t SET c = 'x' WHERE id = 2003")
    """, ["0002 apply: overwrites 1502 values of t.c", "0002 apply: deletes 1 row of t (3000 → 3000)",
          "0002 apply: inserts 1 row into t"]),
}


@pytest.mark.parametrize("case", CASES)
def test_the_copy_counts_what_is_lost(tmp_path, catalog_dir, case):
    steps, expected = CASES[case]
    steps = textwrap.dedent(steps)
    upgrade = steps.replace("BULK", BULK) if "BULK" in steps else BULK + steps
    result = _preview(catalog_dir, tmp_path / "p.db", upgrade)
    assert sorted(result.describe()) == sorted(expected), result.describe()
    assert result.loses_data


def test_a_table_without_rowid_keeps_its_trigger(tmp_path, catalog_dir):
    """``WITHOUT ROWID``: nothing to copy by, so the trigger counts every change (twice for a value changed twice)."""
    result = _preview(catalog_dir, tmp_path / "p.db", """
        conn.execute("UPDATE w SET c = c || '!' WHERE k < 'k5'")
        for i in range(2001, 2011):
            conn.execute("UPDATE w SET c = 'x' WHERE k = ?", (f"k{i}",))
            conn.execute("UPDATE w SET c = 'y' WHERE k = ?", (f"k{i}",))
        made = conn.execute("SELECT name FROM temp.sqlite_master WHERE name LIKE 'apm_preview_%'").fetchall()
        assert len(made) == 1, made  # the trigger
    """)
    changed = sum(1 for i in range(1, ROWS + 1) if f"k{i}" < "k5")
    assert result.describe() == [f"0002 apply: overwrites {changed + 20} values of w.c"]


def test_a_column_the_plan_added_is_only_set(tmp_path, catalog_dir):
    """Backfilling a column added in the plan, row by row: the copy says values were set, none overwritten."""
    result = _preview(catalog_dir, tmp_path / "p.db", f"""
        conn.execute("ALTER TABLE t ADD COLUMN d TEXT DEFAULT 'x'")
        for i in range(1, {ROWS + 1}):
            conn.execute("UPDATE t SET d = ? WHERE id = ?", (f"d{{i}}", i))
        {COPIED}
    """)
    assert result.describe() == ["0002 apply: adds column t.d",
                                 f"0002 apply: sets {ROWS} values of t.d (none held data from before this plan)"]
    assert not result.loses_data


def test_a_few_updates_of_a_table_copy_nothing(tmp_path, catalog_dir, monkeypatch):
    """Below its share a column keeps its trigger; a table whose rowids span more than the limit is never copied."""
    monkeypatch.setattr(effects, "SNAPSHOT_MAX_SPAN", ROWS - 1)
    result = _preview(catalog_dir, tmp_path / "p.db", BULK + """
conn.execute("UPDATE t SET c = 'x' WHERE id = 2001")
conn.execute("UPDATE t SET c = 'y' WHERE id = 2001")  # counted twice: still the trigger
made = conn.execute("SELECT type FROM temp.sqlite_master WHERE name LIKE 'apm_preview_%'").fetchall()
assert made == [("trigger",)], made
    """)
    assert result.describe() == ["0002 apply: overwrites 1502 values of t.c"]


@pytest.mark.parametrize("statement, expected", [
    ("UPDATE OR REPLACE u SET code = 'c2' WHERE id = 1",
     ["0002 apply: overwrites 1 value of u.code", "0002 apply: deletes 1 row of u (5 → 4)"]),
    ("UPDATE v SET code = 'c2' WHERE id = 1",
     ["0002 apply: overwrites 1 value of v.code", "0002 apply: deletes 1 row of v (5 → 4)"]),
    ("INSERT INTO v (id, code) VALUES (9, 'c3')",
     ["0002 apply: deletes 1 row of v (5 → 5)"]),  # rows added: the net, as for INSERT OR REPLACE
    ("INSERT OR REPLACE INTO u (id, code) VALUES (9, 'c3')",  # (counted so before too)
     ["0002 apply: deletes 1 row of u (5 → 5)"]),
])
def test_rows_a_replace_deletes_are_counted(tmp_path, catalog_dir, statement, expected):
    """REPLACE deletes the rows in its way without firing a trigger: by the statement's ``OR REPLACE`` or by the
    table's ``ON CONFLICT REPLACE``, an UPDATE's as an INSERT's. They were not counted (an INSERT into ``v``
    was shown as adding a row and committed unasked)."""
    result = _preview(catalog_dir, tmp_path / "p.db", f"conn.execute({statement!r})")
    assert sorted(result.describe()) == sorted(expected), result.describe()
    assert result.loses_data


def test_a_table_rebuilt_by_hand_is_counted_again(tmp_path, catalog_dir):
    """Dropping a table drops the counter trigger on it: the table put in its place gets a new one (the values
    of rows 2 and 3 were not counted at all: the old trigger was taken to be there still). A table rebuilt by
    hand is one the plan created (``PlanWrites``, unchanged here), so they count as set, not overwritten."""
    result = _preview(catalog_dir, tmp_path / "p.db", """
        conn.execute("UPDATE t SET c = 'a' WHERE id = 1")
        conn.execute("CREATE TABLE t_new (id INTEGER PRIMARY KEY, c TEXT COLLATE NOCASE, n INTEGER DEFAULT 0)")
        conn.execute("INSERT INTO t_new SELECT * FROM t")
        conn.execute("DROP TABLE t")
        conn.execute("ALTER TABLE t_new RENAME TO t")
        for i in (2, 3):
            conn.execute("UPDATE t SET c = 'b' WHERE id = ?", (i,))
    """)
    assert result.describe() == ["0002 apply: overwrites 1 value of t.c",
                                 "0002 apply: rebuilds table t (copies its rows into the new shape)",
                                 "0002 apply: sets 2 values of t.c (none held data from before this plan)"]


def test_a_column_renamed_under_its_trigger_keeps_the_trigger(tmp_path, catalog_dir):
    """SQLite renames the column in the counter trigger too; once that trigger has counted its share, there is
    no column of the old name to copy: the trigger stays, and the step runs on (it failed, "no such column")."""
    result = _preview(catalog_dir, tmp_path / "p.db", """
        conn.execute("UPDATE t SET c = c || '!' WHERE id <= 500")
        conn.execute("ALTER TABLE t RENAME COLUMN c TO d")
        conn.execute("UPDATE t SET d = d || '?' WHERE id <= 1500")
        conn.execute("UPDATE t SET d = 'z' WHERE id = 2000")
    """)
    assert not any("fails" in line for line in result.describe()), result.describe()
    assert "0002 apply: renames column t.c to d" in result.describe(), result.describe()
