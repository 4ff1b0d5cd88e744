"""One SQL tokenizer (``planner.sql``), two dialects: what both engines read alike is stated once for both.

The guard, ``executescript`` and the previews rely on it: a statement
boundary or a string end read differently from the server's reading lets a
``COMMIT`` through, or cuts a function body in pieces.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.engines.postgresql.sql import POSTGRESQL, classify, translate_placeholders
from planner.engines.sqlite.sql import SQLITE
from planner.sql import Dialect
from tests.conftest import run_apm, write_migration

DIALECTS = {"sqlite": SQLITE, "postgresql": POSTGRESQL}

#: Each engine's body holding semicolons: a trigger's BEGIN ... END, a SQL-standard function's BEGIN ATOMIC ... END.
BODY = {
    "sqlite": "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = CASE WHEN 1 THEN 2 END; DELETE FROM u; END",
    "postgresql": "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC "
                  "SELECT CASE WHEN true THEN 1 END; SELECT 2; END",
}

SHARED = {
    "a line comment holding ;": ("SELECT 1 -- a; b\n; SELECT 2", ["SELECT 1", "SELECT 2"]),
    "a block comment holding ;": ("SELECT /* ; */ 1; SELECT 2", ["SELECT /* ; */ 1", "SELECT 2"]),
    "a string holding ;": ("INSERT INTO t VALUES ('a;b', 'it''s;'); SELECT 2",
                           ["INSERT INTO t VALUES ('a;b', 'it''s;')", "SELECT 2"]),
    "a quoted name holding ;": ('SELECT "a;b" FROM t; SELECT 2', ['SELECT "a;b" FROM t', "SELECT 2"]),
    "empty statements": (";; SELECT 1;;; ; /* only a comment */ ; -- and one more\n;", ["SELECT 1"]),
    "a trailing comment without newline": ("SELECT 1; -- the end", ["SELECT 1"]),
    "a last statement without ; and its comment": ("SELECT 1;\nSELECT 2 -- the end", ["SELECT 1", "SELECT 2"]),
    "comments before a statement": ("-- first\n/* second */ SELECT 1", ["SELECT 1"]),
    "a backslash ending a string": ("SELECT 'C:\\'; COMMIT", ["SELECT 'C:\\'", "COMMIT"]),
    "a transaction's BEGIN is no body": ("BEGIN; SELECT 1; END;", ["BEGIN", "SELECT 1", "END"]),
    "nothing at all": ("  \n -- just this", []),
}


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("case", SHARED)
def test_both_dialects_split_the_shared_cases_alike(dialect: str, case: str):
    script, expected = SHARED[case]
    assert list(DIALECTS[dialect].split_script(script)) == expected


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_body_holding_semicolons_is_one_statement(dialect: str):
    """SQLite's trigger, PostgreSQL's ``BEGIN ATOMIC`` function: a ``CASE ... END`` inside ends nothing."""
    script = f"CREATE TABLE t (x INTEGER);\n{BODY[dialect]};\nSELECT 3"
    assert list(DIALECTS[dialect].split_script(script)) == ["CREATE TABLE t (x INTEGER)", BODY[dialect], "SELECT 3"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_first_words_skip_comments_and_stop_at_a_non_word(dialect: str):
    read = DIALECTS[dialect]
    assert read.keywords("  -- c ; d\n/* e */ select Now", 2) == ["SELECT", "NOW"]
    assert read.keywords('INSERT INTO "t" VALUES (1)', 5) == ["INSERT", "INTO"]
    assert read.keywords("-- nothing", 3) == []


def test_dollar_quotes_are_postgresqls_only():
    script = "SELECT $$a;b$$; SELECT $tag$ c; $$ d; $tag$"
    assert list(POSTGRESQL.split_script(script)) == ["SELECT $$a;b$$", "SELECT $tag$ c; $$ d; $tag$"]
    # SQLite has no dollar quotes: it splits at every ;, as sqlite3.complete_statement does
    assert list(SQLITE.split_script(script)) == ["SELECT $$a", "b$$", "SELECT $tag$ c", "$$ d", "$tag$"]


def test_block_comments_nest_on_postgresql_only():
    script = "/* a /* ; */ COMMIT; */ SELECT 1; SELECT 2"
    assert list(POSTGRESQL.split_script(script)) == ["SELECT 1", "SELECT 2"]
    assert list(SQLITE.split_script(script)) == ["COMMIT", "*/ SELECT 1", "SELECT 2"]


def test_backslash_escapes_only_in_postgresql_e_strings():
    """With ``standard_conforming_strings`` on (PostgreSQL's default since 9.1), ``'C:\\'`` is a whole string."""
    assert list(POSTGRESQL.split_script("SELECT E'\\'; COMMIT'; SELECT 2")) == ["SELECT E'\\'; COMMIT'", "SELECT 2"]
    assert list(SQLITE.split_script("SELECT E'\\'; COMMIT'")) == ["SELECT E'\\'", "COMMIT'"]  # no E'' in SQLite
    old_server = Dialect("postgresql", quotes=(('"', '"'),), standard_conforming_strings=False)
    assert list(old_server.split_script("SELECT 'it\\'s; x'; COMMIT")) == ["SELECT 'it\\'s; x'", "COMMIT"]


def test_sqlite_reads_its_own_quoted_names_and_bodies():
    assert list(SQLITE.split_script("SELECT [a;b], `c;d` FROM t; SELECT 2")) == ["SELECT [a;b], `c;d` FROM t", "SELECT 2"]
    trigger = "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET end = 1; END"  # a column named end
    assert list(SQLITE.split_script(f"{trigger}; SELECT 2")) == [trigger, "SELECT 2"]
    # PostgreSQL's [ ] are subscripts, not quotes
    assert [t.kind for t in POSTGRESQL.tokens("a[1]")] == ["word", "punct", "number", "punct"]


def test_a_postgresql_rule_keeps_its_parenthesised_statements():
    rule = "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))"
    assert list(POSTGRESQL.split_script(f"{rule}; SELECT 3")) == [rule, "SELECT 3"]


def test_names_compare_as_each_engine_compares_them():
    sqlite_names = [t.name for t in SQLITE.tokens('Users "MyTable" [My Col] `Other`')]
    assert sqlite_names == ["users", "mytable", "my col", "other"]
    assert [t.name for t in POSTGRESQL.tokens('Users "MyTable" "a""b"')] == ["users", "MyTable", 'a"b']


def test_placeholders_and_the_preview_see_past_a_backslash_ending_a_string():
    """The neighbours of the guard's case: the same misread string hid a ``?`` and a ``WHERE``."""
    assert translate_placeholders("SELECT 'C:\\' || ?", (1,)) == "SELECT 'C:\\' || %s"
    update = classify("UPDATE files SET path = 'C:\\' WHERE id = 1")
    assert update.kind == "update" and update.where == "id = 1"


# -- the guard reads statements through the same tokenizer -------------------------------------------------

def test_the_postgresql_guard_sees_a_commit_after_a_backslash_ending_string():
    from planner.engines.postgresql.connection import forbidden

    assert forbidden("SELECT 'C:\\'; COMMIT")
    assert forbidden("SELECT $$\\$$; COMMIT")
    assert not forbidden("SELECT E'\\'; COMMIT'")
    assert not forbidden(BODY["postgresql"] + ";")  # its END closes the body, it ends no transaction
    # a tagged quote ends at its own tag: the $$ inside does not end it, and its END ends no transaction
    assert not forbidden("DO $fn$ BEGIN EXECUTE $$CREATE TABLE a (x int); CREATE TABLE b (y int)$$; END $fn$; SELECT 1")


def test_the_sqlite_guard_allows_a_trigger_whose_body_names_a_column_end():
    from planner.engines.sqlite.connection import forbidden_reason

    assert forbidden_reason("CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET end = 1; END") is None


# -- SQLite's own reading, as the oracle ------------------------------------------------------------------

_FRAGMENTS = ["SELECT 1", "SELECT 'a;b'", "SELECT \"x;y\"", "SELECT [p;q]", "-- c;\n", "/* ; */", ";", " ", "\n",
              "INSERT INTO t VALUES ('it''s')", "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
              "CREATE TRIGGER tr AFTER DELETE ON t BEGIN SELECT CASE WHEN 1 THEN 2 END; UPDATE t SET end = 3; END",
              "BEGIN", "END", "SELECT x'00'"]


def _complete_statement_split(script: str) -> list[str]:
    """How the code before the shared tokenizer split a SQLite script: pieces joined until sqlite3 says complete."""
    pieces, buffer, found = script.split(";"), "", []
    for i, piece in enumerate(pieces):
        buffer += piece if i == len(pieces) - 1 else piece + ";"
        if i == len(pieces) - 1 or sqlite3.complete_statement(buffer):
            if SQLITE.keywords(buffer, 1):
                found.append(buffer)
            buffer = ""
    return found


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12))
def test_sqlite_statements_end_where_sqlite_says_they_are_complete(fragments: list[str]):
    script = " ".join(fragments)
    ours = list(SQLITE.split_script(script))
    theirs = _complete_statement_split(script)
    assert len(ours) == len(theirs), (script, ours, theirs)
    assert all(mine in whole for mine, whole in zip(ours, theirs))


# -- end to end, on the suite's PostgreSQL server ---------------------------------------------------------

@pytest.mark.postgres
def test_a_commit_after_a_backslash_ending_string_is_refused_and_leaves_nothing(pg_url: str, catalog_dir: Path):
    write_migration(catalog_dir, "0001", upgrade="""
        conn.execute("CREATE TABLE escaped (id INTEGER)")
        conn.execute("SELECT 'C:\\\\'; COMMIT")
    """)
    done = run_apm("migrate", "--db", pg_url, "--migrations-dir", str(catalog_dir))
    assert done.returncode == 5, done.stdout + done.stderr
    assert "migration 0001 ran `COMMIT`" in done.stdout + done.stderr

    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('escaped')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)


@pytest.mark.postgres
def test_a_script_with_a_begin_atomic_function_and_a_rule_runs_whole(pg_url: str, catalog_dir: Path):
    write_migration(catalog_dir, "0001", upgrade=f'''
        conn.executescript("""
            CREATE TABLE t (x INTEGER);
            CREATE TABLE audit (x INTEGER);
            {BODY["postgresql"]};
            CREATE RULE keep AS ON INSERT TO t DO ALSO (INSERT INTO audit VALUES (new.x); INSERT INTO audit VALUES (-new.x));
            INSERT INTO t VALUES (f());
        """)
    ''')
    done = run_apm("migrate", "--db", pg_url, "--migrations-dir", str(catalog_dir))
    assert done.returncode == 0, done.stdout + done.stderr

    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT f()").fetchone() == (2,)
        assert conn.execute("SELECT x FROM audit ORDER BY x").fetchall() == [(-2,), (2,)]
