"""What a SQLite preview keeps instead of asking again (issue 22 point 15) must not change what it reports.

``StepObserver.before`` prepares a data statement under the authorizer the
first time its text is seen in a step and reuses what it learned for every
repeat; a statement that changes the schema (a trigger made between two
repeats changes what the same text does) forgets it. Who references whom
is read once and kept across the steps (``engines.sqlite.fk_map``) while the schema
changes only in ways that keep it. These tests pin the counts of repeated
statements to what a statement-by-statement watch reports (the figures were
checked against the code before the caches), and the scoped foreign-key
check to every table that has one.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from planner.engines.sqlite.ledger import read_ledger
from planner.engines.sqlite.runner import Executor
from planner.engines.sqlite.observe import schema_effect
from planner.errors import ForeignKeyViolation
from planner.loader import load_catalog
from planner.plan import apply_plan
from tests.conftest import write_migration

PEOPLE = """
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, c TEXT, n INTEGER DEFAULT 0)")
    conn.executemany("INSERT INTO t (id, c) VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 6)])
    conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, t_id INTEGER)")
"""


def _preview(catalog_dir: Path, db: Path, upgrade: str, setup: str = PEOPLE):
    """The preview of 0002 (``upgrade``) on a database at 0001 (``setup``)."""
    write_migration(catalog_dir, "0001", "People", depends_on=(), upgrade=setup)
    write_migration(catalog_dir, "0002", "Change", depends_on=("0001",), upgrade=upgrade)
    catalog = load_catalog(catalog_dir)
    Executor(db, create=True, catalog=catalog).run(apply_plan(catalog, [], target="0001"))
    return Executor(db, catalog=catalog).preview(apply_plan(catalog, read_ledger(db)))


def test_each_repeat_of_a_statement_is_counted(tmp_path, catalog_dir):
    result = _preview(catalog_dir, tmp_path / "p.db", """
        for i in range(10, 15):
            conn.execute("INSERT INTO log (t_id) VALUES (?)", (i,))
        for i in (1, 2, 99):  # 99 matches nothing: rowcount 0
            conn.execute("DELETE FROM t WHERE id = ?", (i,))
        for i in (3, 4, 99):
            conn.execute("UPDATE t SET c = ? WHERE id = ?", ("new", i))
        cursor = conn.cursor()
        for i in (5, 5):  # the second sets the value it already has: nothing overwritten
            cursor.execute("UPDATE t SET c = ? WHERE id = ?", ("five", i))
    """)
    assert result.describe() == [
        "0002 apply: overwrites 3 values of t.c",
        "0002 apply: deletes 2 rows of t (5 → 3)",
        "0002 apply: inserts 5 rows into log",
    ]


@pytest.mark.parametrize("trigger", ["TRIGGER", "TEMP TRIGGER"])
def test_a_trigger_made_between_repeats_is_watched_from_then_on(tmp_path, catalog_dir, trigger):
    """The same INSERT text deletes rows through a trigger once the trigger exists: those deletes are loss."""
    result = _preview(catalog_dir, tmp_path / "p.db", f"""
        insert = "INSERT INTO log (t_id) VALUES (?)"
        conn.execute(insert, (1,))
        conn.execute(insert, (2,))
        conn.execute("CREATE {trigger} purge AFTER INSERT ON log BEGIN DELETE FROM t WHERE id = NEW.t_id; END")
        conn.execute(insert, (3,))
        conn.execute(insert, (4,))
    """)
    assert "0002 apply: deletes 2 rows of t (5 → 3)" in result.describe(), result.describe()
    assert result.loses_data


def test_a_table_made_again_between_repeats_counts_only_what_it_had(tmp_path, catalog_dir):
    """The same DELETE text before and after its table is made again: only the first one deleted rows it had.

    (What a statement-by-statement watch reports; a DELETE remembered across
    the DROP and CREATE would count the second row too.)
    """
    result = _preview(catalog_dir, tmp_path / "p.db", """
        delete = "DELETE FROM log WHERE id = ?"
        conn.execute("INSERT INTO log (id, t_id) VALUES (1, 1), (2, 2)")
        conn.execute(delete, (1,))
        conn.execute("DROP TABLE log")
        conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, t_id INTEGER)")
        conn.execute("INSERT INTO log (id, t_id) VALUES (1, 1), (2, 2)")
        conn.execute(delete, (2,))
    """)
    assert result.describe() == [
        "0002 apply: deletes 1 row of log (2 → 1)",
        "0002 apply: rebuilds table log (copies its rows into the new shape)",
        "0002 apply: inserts 2 rows into log",
    ]


@pytest.mark.parametrize("declared", [
    "parent_id INTEGER REFERENCES parents(id)",
    "parent_id INTEGER, FOREIGN KEY (parent_id) references parents(id)",
    'parent_id INTEGER, FOREIGN KEY (parent_id) "REFERENCES" parents(id)'.replace('"REFERENCES"', "References"),
])
@pytest.mark.parametrize("case_sensitive", [False, True])
def test_the_scoped_foreign_key_check_finds_every_child(tmp_path, catalog_dir, declared, case_sensitive):
    """The check looks only at tables whose SQL mentions REFERENCES, in any case, even with a case-sensitive LIKE."""
    write_migration(catalog_dir, "0001", "Parents", depends_on=(), upgrade=f"""
        conn.execute('CREATE TABLE parents (id INTEGER PRIMARY KEY)')
        conn.execute('CREATE TABLE children (id INTEGER PRIMARY KEY, {declared})')
        conn.execute('INSERT INTO parents VALUES (1)')
        conn.execute('INSERT INTO children VALUES (10, 1)')
    """)
    pragma = "conn.execute('PRAGMA case_sensitive_like = ON')\n" if case_sensitive else ""
    write_migration(catalog_dir, "0002", "Break", depends_on=("0001",),
                    upgrade=pragma + "conn.execute('DELETE FROM parents')")
    catalog = load_catalog(catalog_dir)
    db = tmp_path / "fk.db"
    Executor(db, create=True).run(apply_plan(catalog, [], target="0001"))
    result = Executor(db, catalog=catalog).preview(apply_plan(catalog, read_ledger(db)), accept=lambda p: True)
    assert isinstance(result.error, ForeignKeyViolation), result.describe()
    assert not result.committed


@pytest.mark.parametrize("makes_child", [
    # a new child table, then an index dropped and made (schema changes that keep every foreign key)
    """conn.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id))")
       conn.execute("INSERT INTO c VALUES (1, 1)")""",
    # an existing table becomes a child
    """conn.execute("ALTER TABLE x ADD COLUMN p_id INTEGER REFERENCES p(id)")
       conn.execute("UPDATE x SET p_id = 1")""",
    # a table renamed onto the name a child points at
    """conn.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p2(id))")
    conn.execute("INSERT INTO c VALUES (1, 1)")
       conn.execute("ALTER TABLE p RENAME TO p_old")
       conn.execute("CREATE TABLE p2 (id INTEGER PRIMARY KEY)")
       conn.execute("INSERT INTO p2 SELECT id FROM p_old")""",
])
def test_a_child_made_in_an_earlier_step_of_the_preview_is_checked(tmp_path, catalog_dir, makes_child):
    """Who references whom is kept across a preview's steps: a step that changes it must not be missed later."""
    write_migration(catalog_dir, "0001", "Parents", depends_on=(), upgrade="""
        conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE x (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE INDEX x_id ON x (id)")
        conn.execute("INSERT INTO p VALUES (1)")
        conn.execute("INSERT INTO x VALUES (1), (2)")
    """)
    # 0002 shrinks a table, so the preview reads who references whom before the child exists.
    write_migration(catalog_dir, "0002", "Shrink", depends_on=("0001",),
                    upgrade='conn.execute("DELETE FROM x WHERE id = 2")')
    write_migration(catalog_dir, "0003", "Child", depends_on=("0002",),
                    upgrade="\n".join(line.strip() for line in makes_child.splitlines()))
    parent = "p2" if "p2" in makes_child else "p"
    write_migration(catalog_dir, "0004", "Orphan", depends_on=("0003",), upgrade=f"""
        conn.execute("DROP INDEX x_id")
        conn.execute("CREATE INDEX x_id ON x (id)")
        conn.execute("DELETE FROM {parent}")
    """)
    catalog = load_catalog(catalog_dir)
    db = tmp_path / "fk.db"
    Executor(db, create=True).run(apply_plan(catalog, [], target="0001"))
    result = Executor(db, catalog=catalog).preview(apply_plan(catalog, read_ledger(db)), accept=lambda p: True)
    assert isinstance(result.error, ForeignKeyViolation), result.describe()
    assert result.error.version == "0004"
    assert not result.committed


@pytest.mark.parametrize("statement, effect", [
    ("INSERT INTO t (c) VALUES (?)", "rows only"),
    ("UPDATE t SET c = ? WHERE id = 1", "rows only"),
    ("DELETE FROM t WHERE c = ?", "rows only"),
    ("SELECT * FROM t WHERE c = ?", "rows only"),
    ("DROP TABLE other", "keeps foreign keys"),
    ("CREATE INDEX t_c ON t (c)", "keeps foreign keys"),
    ("CREATE VIEW v AS SELECT * FROM t", "keeps foreign keys"),
    ("CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM other; END", "keeps foreign keys"),
    ("CREATE TABLE c (p_id INTEGER REFERENCES t(id))", "any"),
    ("ALTER TABLE other ADD COLUMN p_id INTEGER REFERENCES t(id)", "any"),
    ("ALTER TABLE other RENAME TO other2", "any"),
    ("CREATE TEMP TABLE t (id)", "any"),
    ("SAVEPOINT s", "any"),
    ("UPDATE sqlite_master SET sql = sql WHERE name = 't'", "any"),  # PRAGMA writable_schema at work
])
def test_what_a_statement_does_to_the_schema(statement, effect):
    """The memo keeps only statements that change no schema; the FK map survives only changes that keep keys."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, c TEXT)")
    conn.execute("CREATE TABLE other (id INTEGER PRIMARY KEY)")
    conn.execute("PRAGMA writable_schema = ON")
    events: list[tuple] = []
    conn.set_authorizer(lambda *event: events.append(event) or sqlite3.SQLITE_OK)
    conn.execute("EXPLAIN " + statement, ("x",) if "?" in statement else ()).fetchall()
    conn.set_authorizer(None)
    assert schema_effect(events) == effect


_SAVEPOINTS = {
    # The counter's trigger is made inside the savepoint: the rollback removes it (and, once, a TEMP table).
    "first counter": ("""
        conn.execute("SAVEPOINT s")
        conn.execute("UPDATE t SET n = 1 WHERE id = 1")
        conn.execute("ROLLBACK TO s")
        conn.execute("UPDATE t SET n = 2 WHERE id = 2")
    """, "0002 apply: overwrites 1 value of t.n"),
    # The first counter is older than the savepoint, the trigger for t.n is not: without it the second UPDATE's
    # overwritten value went uncounted (a silent miss, not an error).
    "later counter": ("""
        conn.execute("UPDATE t SET c = 'x' WHERE id = 5")
        conn.execute("SAVEPOINT s")
        conn.execute("UPDATE t SET n = 1 WHERE id = 1")
        conn.execute("ROLLBACK TRANSACTION TO SAVEPOINT s")
        conn.execute("RELEASE s")
        conn.execute("UPDATE t SET n = 2 WHERE id = 2")
    """, "0002 apply: overwrites 1 value of t.n"),
    # Rows a trigger deletes are counted by a TEMP trigger too.
    "trigger deletes": ("""
        conn.execute("CREATE TRIGGER purge AFTER INSERT ON log BEGIN DELETE FROM t WHERE id = NEW.t_id; END")
        conn.execute("SAVEPOINT s")
        conn.execute("INSERT INTO log (t_id) VALUES (1)")
        conn.execute("ROLLBACK TO s")
        conn.execute("INSERT INTO log (t_id) VALUES (2)")
    """, "0002 apply: deletes 1 row of t (5 → 4)"),
}


@pytest.mark.parametrize("case", sorted(_SAVEPOINTS))
def test_counters_rolled_back_to_a_savepoint_are_made_again(tmp_path, catalog_dir, case):
    """A ``ROLLBACK TO`` undoes the preview's TEMP counters made since its savepoint, with the migration's own
    work: the preview failed ("no such table: temp.apm_preview_counts") or missed what came after."""
    upgrade, expected = _SAVEPOINTS[case]
    result = _preview(catalog_dir, tmp_path / "p.db", upgrade)
    assert expected in result.describe(), result.describe()


def test_apm_migrate_runs_a_migration_that_rolls_back_to_a_savepoint(tmp_path, catalog_dir):
    """End to end, on the default (previewed) path: it failed with exit 6 before the counters knew."""
    from tests.conftest import run_apm

    write_migration(catalog_dir, "0001", "People", depends_on=(), upgrade=PEOPLE)
    write_migration(catalog_dir, "0002", "Fill", depends_on=("0001",), upgrade="""
        conn.execute("SAVEPOINT s")
        conn.execute("UPDATE t SET n = NULL")
        conn.execute("ROLLBACK TO s")
        conn.execute("UPDATE t SET c = 'one' WHERE id = 1")
    """)
    db = tmp_path / "p.db"
    args = ("--db", str(db), "--migrations-dir", str(catalog_dir), "migrate")
    assert run_apm(*args, "--to", "0001").returncode == 0
    done = run_apm(*args, "--yes")
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT c, n FROM t WHERE id = 1").fetchone() == ("one", 0)


# The counts live in Python (``engines.sqlite.counters``), which SQLite's undo does not reach: each case is one
# SQLite undoes (or keeps) and the preview must report what is left, as the real run leaves it.
_STOP_AT_3 = ('\n        conn.execute("CREATE TRIGGER stop BEFORE UPDATE ON t WHEN NEW.id = 3 '
              'BEGIN SELECT RAISE({how}, \'no\'); END")')
_UNDONE = {
    "nested savepoints, the outer one rolled back to": ("""
        conn.execute("SAVEPOINT a")
        conn.execute("UPDATE t SET n = 1 WHERE id = 1")
        conn.execute("SAVEPOINT b")
        conn.execute("UPDATE t SET n = 2 WHERE id = 2")
        conn.execute("RELEASE b")
        conn.execute("ROLLBACK TO A")
        conn.execute("UPDATE t SET n = 3 WHERE id = 3")
        conn.execute("RELEASE a")
    """, "0002 apply: overwrites 1 value of t.n"),
    "the inner one rolled back to, twice": ("""
        conn.execute("SAVEPOINT a")
        conn.execute("UPDATE t SET n = 1 WHERE id = 1")
        conn.execute("SAVEPOINT b")
        conn.execute("UPDATE t SET n = 2 WHERE id = 2")
        conn.execute("ROLLBACK TO b")
        conn.execute("UPDATE t SET n = 3 WHERE id IN (3, 4)")
        conn.execute("ROLLBACK TO b")
        conn.execute("RELEASE a")
    """, "0002 apply: overwrites 1 value of t.n"),
    "released savepoints keep their counts": ("""
        conn.execute("SAVEPOINT a")
        conn.execute("UPDATE t SET n = 1 WHERE id = 1")
        conn.execute("SAVEPOINT a")
        conn.execute("UPDATE t SET n = 2 WHERE id = 2")
        conn.execute("RELEASE a")
        conn.execute("ROLLBACK TO a")
        conn.execute("UPDATE t SET n = 3 WHERE id = 3")
        conn.execute("RELEASE a")
    """, "0002 apply: overwrites 1 value of t.n"),
    "a statement aborted half way (caught)": (_STOP_AT_3.format(how="ABORT") + """
        conn.execute("UPDATE t SET n = 7 WHERE id = 5")
        try:
            conn.execute("UPDATE t SET c = 'z'")  # ids 1 and 2 change, then 3 aborts: SQLite undoes both
        except sqlite3.IntegrityError:
            pass
        try:
            conn.executescript("UPDATE t SET n = 8 WHERE id = 4; UPDATE t SET n = 9")
        except sqlite3.IntegrityError:
            pass
    """, "0002 apply: overwrites 2 values of t.n"),
    "the first counted statement aborted half way (caught)": (_STOP_AT_3.format(how="ABORT") + """
        try:
            conn.execute("UPDATE t SET c = 'z'")  # its counter is made just before it runs, then 1 and 2 are undone
        except sqlite3.IntegrityError:
            pass
        conn.execute("UPDATE t SET c = 'y' WHERE id = 5")
    """, "0002 apply: overwrites 1 value of t.c"),
    "OR FAIL keeps the rows changed before the failure": (_STOP_AT_3.format(how="FAIL") + """
        try:
            conn.execute("UPDATE OR FAIL t SET c = 'z'")  # ids 1 and 2 stay changed
        except sqlite3.IntegrityError:
            pass
    """, "0002 apply: overwrites 2 values of t.c"),
    "executemany failing on its third row (caught)": (_STOP_AT_3.format(how="ABORT") + """
        try:
            conn.executemany("UPDATE t SET c = ? WHERE id = ?", [("z", 1), ("z", 2), ("z", 3), ("z", 4)])
        except sqlite3.IntegrityError:
            pass
    """, "0002 apply: overwrites 2 values of t.c"),
    "rows a trigger deleted, then aborted": ("""
        conn.execute("CREATE TRIGGER purge AFTER INSERT ON log BEGIN DELETE FROM t WHERE id = NEW.t_id; END")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON log WHEN NEW.t_id = 3 BEGIN SELECT RAISE(ABORT, 'no'); END")
        conn.execute("INSERT INTO log (t_id) VALUES (1)")
        try:
            conn.execute("INSERT INTO log (t_id) SELECT id FROM t WHERE id IN (2, 3) ORDER BY id")
        except sqlite3.IntegrityError:
            pass
    """, "0002 apply: deletes 1 row of t (5 → 4)"),
}


@pytest.mark.parametrize("case", sorted(_UNDONE))
def test_counts_follow_what_sqlite_undoes(tmp_path, catalog_dir, case):
    """What a preview reports as overwritten or deleted is what the real run leaves changed: the counts follow
    SQLite's undo (a failed statement, ``ROLLBACK TO``), and are checked against the database itself."""
    upgrade, expected = _UNDONE[case]
    db = tmp_path / "p.db"
    result = _preview(catalog_dir, db, "\n        import sqlite3" + upgrade)
    assert [line for line in result.describe() if "overwrites" in line or "deletes" in line] == [expected]
