"""The PostgreSQL preview counts what a step destroys where no statement names it (tests/pg_server.py).

Each test prepares a database with psycopg, writes one migration doing
the destructive thing, runs the installed ``apm migrate --dry-run --json``
and checks the exact figures of the report, then that nothing was
committed. The real-run tests check the opposite: what commits, commits
once.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import write_migration
from tests.test_postgres import applied, apm, query, run_sql

pytestmark = pytest.mark.postgres


def migration(catalog_dir: Path, *statements: str, version: str = "0001", python: str = "") -> None:
    """One migration running ``statements`` in order through ``conn.execute`` (then ``python``, if any)."""
    body = "\n".join(f"conn.execute({s!r})" for s in statements) + ("\n" + python if python else "")
    write_migration(catalog_dir, version, "Under test", upgrade=body)


def dry_run(url: str, catalog_dir: Path) -> tuple[int, dict]:
    result = apm(url, "migrate", "--dry-run", "--json", catalog=catalog_dir)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def preview_of(url: str, catalog_dir: Path, setup: str, *statements: str, python: str = "") -> tuple[int, dict]:
    """The dry run of one migration running ``statements`` (then ``python``) on a database prepared by ``setup``."""
    run_sql(url, setup)
    migration(catalog_dir, *statements, python=python)
    return dry_run(url, catalog_dir)


def impact(report: dict) -> dict[tuple[str, str, str | None], int]:
    return {(i["kind"], i["table"], i["column"]): i["count"] for step in report["steps"] for i in step["impact"]}


def test_drop_schema_cascade_names_each_table_with_its_rows(pg_url, catalog_dir):
    code, report = preview_of(pg_url, catalog_dir,
                              "CREATE SCHEMA s; CREATE TABLE s.a (id INT); CREATE TABLE s.b (id INT, note TEXT);"
                              "INSERT INTO s.a SELECT generate_series(1, 3);"
                              "INSERT INTO s.b SELECT generate_series(1, 5), 'x'",
                              "DROP SCHEMA s CASCADE")
    assert code == 7 and report["loses_data"] and report["unchecked"] == []
    assert impact(report) == {("dropped-table", "s.a", None): 3, ("dropped-table", "s.b", None): 5}
    assert "0001 apply: drops table s.b holding 5 rows" in report["lines"]
    assert query(pg_url, "SELECT count(*) FROM s.b, to_regclass('schema_migrations') r WHERE r IS NULL") == [(5,)]


def test_drop_table_cascade_counts_only_the_tables_rows_not_its_view_or_foreign_key(pg_url, catalog_dir):
    code, report = preview_of(pg_url, catalog_dir,
                              "CREATE TABLE parent (id INT PRIMARY KEY);"
                              "CREATE TABLE child (id INT, p INT REFERENCES parent);"
                              "INSERT INTO parent SELECT generate_series(1, 4);"
                              "INSERT INTO child VALUES (1, 1), (2, 2);"
                              "CREATE VIEW parents AS SELECT id FROM parent",
                              "DROP TABLE parent CASCADE")
    assert code == 7 and report["unchecked"] == []
    assert impact(report) == {("dropped-table", "parent", None): 4}
    changes = {(c["kind"], c["action"], c["name"]) for c in report["steps"][0]["changes"]}
    assert ("view", "removed", "parents") in changes and ("table", "removed", "child") not in changes


def test_rows_an_on_delete_cascade_takes_are_counted_per_table(pg_url, catalog_dir):
    code, report = preview_of(pg_url, catalog_dir,
                              "CREATE TABLE parent (id INT PRIMARY KEY);"
                              "CREATE TABLE child (id INT, p INT REFERENCES parent ON DELETE CASCADE);"
                              "INSERT INTO parent SELECT generate_series(1, 4);"
                              "INSERT INTO child VALUES (1, 1), (2, 1), (3, 2), (4, 3)",
                              "DELETE FROM parent WHERE id <= 2")
    assert code == 7
    assert impact(report) == {("deleted-rows", "parent", None): 2, ("deleted-rows", "child", None): 3}
    parent = next(i for i in report["steps"][0]["impact"] if i["table"] == "parent")
    assert (parent["before"], parent["after"]) == (4, 2)


def test_a_delete_inside_a_do_block_is_counted(pg_url, catalog_dir):
    code, report = preview_of(pg_url, catalog_dir,
                              "CREATE TABLE t (id INT); INSERT INTO t SELECT generate_series(1, 10)",
                              "DO $$ BEGIN DELETE FROM t WHERE id > 6; END $$")
    assert code == 7 and impact(report) == {("deleted-rows", "t", None): 4}
    assert query(pg_url, "SELECT count(*) FROM t") == [(10,)]


def test_rows_a_function_updates_are_counted_as_updated_rows(pg_url, catalog_dir):
    code, report = preview_of(pg_url, catalog_dir,
                              "CREATE TABLE t (id INT, v INT); INSERT INTO t SELECT g, g FROM generate_series(1, 5) g;"
                              "CREATE FUNCTION bump() RETURNS INT LANGUAGE plpgsql AS "
                              "$$ BEGIN UPDATE t SET v = v * 10 WHERE id <= 3; RETURN 3; END $$",
                              "SELECT bump()")
    assert code == 7 and impact(report) == {("overwritten-values", "t", None): 3}
    assert "0001 apply: updates 3 rows of t (values not compared)" in report["lines"]


def test_rows_a_trigger_deletes_from_another_table_are_counted(pg_url, catalog_dir):
    code, report = preview_of(pg_url, catalog_dir,
                              "CREATE TABLE a (id INT); CREATE TABLE b (id INT);"
                              "INSERT INTO b SELECT generate_series(1, 6);"
                              "CREATE FUNCTION prune() RETURNS TRIGGER LANGUAGE plpgsql AS "
                              "$$ BEGIN DELETE FROM b WHERE id > NEW.id; RETURN NEW; END $$;"
                              "CREATE TRIGGER prune AFTER INSERT ON a FOR EACH ROW EXECUTE FUNCTION prune()",
                              "INSERT INTO a VALUES (4)")
    assert code == 7 and impact(report) == {("deleted-rows", "b", None): 2}
    assert {"kind": "rows", "action": "added", "name": "a"}.items() <= report["steps"][0]["changes"][0].items()


def test_a_table_dropped_where_the_preview_cannot_watch_makes_the_step_unchecked(pg_url, catalog_dir):
    code, report = preview_of(pg_url, catalog_dir,
                              "CREATE TABLE hidden (id INT); INSERT INTO hidden VALUES (1)",
                              python="conn.raw.execute('DROP TABLE hidden')")
    assert code == 7 and report["unchecked"] == ["0001"]
    [line] = report["steps"][0]["impact"]
    assert (line["kind"], line["table"], line["counted"], line["loses_data"]) == \
        ("dropped-table", "hidden", False, True)
    told = apm(pg_url, "migrate", "--dry-run", catalog=catalog_dir)
    assert told.returncode == 7 and "0001 drops what the preview could not count" in told.stdout
    assert "ran 1 of 1 step(s)" in told.stdout
    refused = apm(pg_url, "migrate", catalog=catalog_dir)  # not a terminal: nobody confirmed it
    assert refused.returncode == 7 and query(pg_url, "SELECT to_regclass('hidden')::text") == [("hidden",)]


def test_a_plan_that_only_creates_and_inserts_is_not_flagged(pg_url, catalog_dir):
    code, report = preview_of(pg_url, catalog_dir,
                              "CREATE TABLE a (id INT); CREATE FUNCTION one() RETURNS INT LANGUAGE sql AS 'SELECT 1'")
    migration(catalog_dir, "CREATE TABLE t (id SERIAL PRIMARY KEY, v INT)", "INSERT INTO t (v) VALUES (1), (2)",
              "INSERT INTO a SELECT one()", "CREATE INDEX t_v ON t (v)",
              "ALTER TABLE a RENAME COLUMN id TO ident", "ALTER TABLE a RENAME TO a2",
              "DO $$ BEGIN INSERT INTO t (v) VALUES (3); END $$")
    code, report = dry_run(pg_url, catalog_dir)
    assert code == 0 and not report["loses_data"] and report["unchecked"] == []
    changes = {(c["kind"], c["action"], c["name"]) for c in report["steps"][0]["changes"]}
    assert impact(report) == {} and {("table", "added", "t"), ("index", "added", "t_v")} <= changes
    assert ("table", "renamed", "a2") in changes and ("column", "renamed", "ident") in changes  # no loss
    assert apm(pg_url, "migrate", catalog=catalog_dir).returncode == 0
    assert query(pg_url, "SELECT count(*) FROM t") == [(3,)] and applied(pg_url) == ["0001"]


def test_a_statement_run_twice_in_the_preview_commits_once(pg_url, catalog_dir):
    run_sql(pg_url, "CREATE TABLE events (id SERIAL PRIMARY KEY, what TEXT); CREATE SCHEMA s;"
                              "CREATE TABLE s.a (id INT); INSERT INTO s.a VALUES (1), (2)")
    migration(catalog_dir, "INSERT INTO events (what) VALUES ('before')",
              "DO $$ BEGIN INSERT INTO events (what) VALUES ('inside'); DROP TABLE s.a; END $$",
              "DROP SCHEMA s CASCADE", "INSERT INTO events (what) VALUES ('after')",
              python="conn.execute('CREATE TABLE ran (n INT)')\nconn.execute('INSERT INTO ran VALUES (1)')")
    code, report = dry_run(pg_url, catalog_dir)
    assert code == 7 and impact(report) == {("dropped-table", "s.a", None): 2}
    done = apm(pg_url, "migrate", "--yes", catalog=catalog_dir)
    assert done.returncode == 0, done.stderr
    # One row each. Sequences never roll back: the dry run took ids 1-4, and in this run the DO block ran
    # twice (rolled back once), so its nextval moved twice: id 6 went to the undone run.
    assert query(pg_url, "SELECT id, what FROM events ORDER BY id") == [(5, "before"), (7, "inside"), (8, "after")]
    assert query(pg_url, "SELECT count(*) FROM ran") == [(1,)] and applied(pg_url) == ["0001"]
    assert query(pg_url, "SELECT to_regnamespace('s')") == [(None,)]


def test_a_failing_watched_statement_fails_the_step_as_before(pg_url, catalog_dir):
    migration(catalog_dir, "CREATE TABLE kept (id INT)", "DROP SCHEMA missing CASCADE")
    code, report = dry_run(pg_url, catalog_dir)
    assert code == 5 and report["steps"][0]["status"] == "failed"
    assert 'schema "missing" does not exist' in report["steps"][0]["error"]["message"]
    assert query(pg_url, "SELECT to_regclass('kept')") == [(None,)]


def test_a_truncate_inside_a_do_block_makes_the_step_unchecked_and_a_rewrite_does_not(pg_url, catalog_dir):
    run_sql(pg_url, "CREATE TABLE t (id INT); INSERT INTO t VALUES (1), (2); CREATE TABLE r (id INT);"
                              "INSERT INTO r VALUES (1)")
    migration(catalog_dir, "ALTER TABLE r ADD COLUMN at TIMESTAMP DEFAULT clock_timestamp()",
              "DO $$ BEGIN TRUNCATE t; END $$")
    code, report = dry_run(pg_url, catalog_dir)
    assert code == 7 and report["unchecked"] == ["0001"]
    [line] = report["steps"][0]["impact"]
    assert (line["kind"], line["table"], line["counted"]) == ("deleted-rows", "t", False)


#: (setup, the migration's statement, the exact impact): one statement each, destroying what the text hides.
EXACT = {
    # Row 1 keeps its value, row 3 was NULL: one non-NULL value changes (row 2), as SQLite would count it.
    "update-from-counts-changed-values": (
        "CREATE TABLE t (id INT, v TEXT); CREATE TABLE src (id INT, v TEXT);"
        "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, NULL), (4, 'd');"
        "INSERT INTO src VALUES (1, 'a'), (2, 'B'), (3, 'C'), (4, 'D')",
        "UPDATE t SET v = src.v FROM src WHERE src.id = t.id AND t.id <= 3",
        {("overwritten-values", "t", "v"): 1}),
    # Which of several matching source rows wins is unspecified: the rows written are told instead.
    "update-from-several-source-rows-counts-rows": (
        "CREATE TABLE t (id INT, v TEXT); CREATE TABLE src (id INT, v TEXT);"
        "INSERT INTO t VALUES (1, 'a'), (2, 'b'); INSERT INTO src VALUES (1, 'x'), (1, 'y'), (2, 'z')",
        "UPDATE t SET v = src.v FROM src WHERE src.id = t.id",
        {("overwritten-values", "t", None): 2}),
    "drop-type-cascade-counts-its-column": (
        "CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TABLE t (id INT, m mood);"
        "INSERT INTO t VALUES (1, 'ok'), (2, NULL), (3, 'sad')",
        "DROP TYPE mood CASCADE",
        {("dropped-column", "t", "m"): 2}),
    "truncate-cascade-counts-referencing-tables": (
        "CREATE TABLE parent (id INT PRIMARY KEY); CREATE TABLE child (p INT REFERENCES parent);"
        "INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (1), (1), (2)",
        "TRUNCATE parent CASCADE",
        {("deleted-rows", "parent", None): 2, ("deleted-rows", "child", None): 3}),
    "delete-on-partitioned-table-counted-once": (
        "CREATE TABLE m (id INT) PARTITION BY RANGE (id);"
        "CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (10);"
        "CREATE TABLE m2 PARTITION OF m FOR VALUES FROM (10) TO (20); INSERT INTO m SELECT generate_series(0, 19)",
        "DELETE FROM m WHERE id % 2 = 0",
        {("deleted-rows", "m", None): 10}),
    # Its partitions go with it, counted with it (the family is read only for a table that has had children).
    "drop-partitioned-table-counts-its-partitions-once": (
        "CREATE TABLE m (id INT) PARTITION BY RANGE (id);"
        "CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (10);"
        "CREATE TABLE m2 PARTITION OF m FOR VALUES FROM (10) TO (20); INSERT INTO m SELECT generate_series(0, 14)",
        "DROP TABLE m",
        {("dropped-table", "m", None): 15}),
    "function-dropping-a-table-counts-its-rows": (
        "CREATE TABLE old (id INT); INSERT INTO old VALUES (1), (2), (3); CREATE FUNCTION wipe() RETURNS INT "
        "LANGUAGE plpgsql AS $$ BEGIN DROP TABLE old; RETURN 1; END $$",
        "SELECT wipe()",
        {("dropped-table", "old", None): 3}),
    "procedure-dropping-a-column-by-dynamic-sql-counts-its-values": (
        "CREATE TABLE t (id INT, note TEXT); INSERT INTO t VALUES (1, 'a'), (2, NULL), (3, 'c');"
        "CREATE PROCEDURE slim(col TEXT) LANGUAGE plpgsql AS $$ BEGIN EXECUTE format('ALTER TABLE t DROP %I', col); "
        "END $$",
        "CALL slim('note')",
        {("dropped-column", "t", "note"): 2}),
    # A view's column existed before the plan as much as its table's: its default values are overwritten.
    "update-through-a-view-counts-default-values": (
        "CREATE TABLE t (id INT, a TEXT DEFAULT 'new'); INSERT INTO t (id) VALUES (1), (2);"
        "CREATE VIEW tv AS SELECT id, a FROM t",
        "UPDATE tv SET a = 'x'",
        # (the table's counters tell the same rows again, unexplained: the view is not the table they count)
        {("overwritten-values", "tv", "a"): 2, ("overwritten-values", "t", None): 2}),
    "upsert-counts-rows-it-updates": (
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        "INSERT INTO t VALUES (1, 'x'), (2, 'y'), (9, 'z') ON CONFLICT (id) DO UPDATE SET v = excluded.v",
        {("overwritten-values", "t", None): 2}),
}


@pytest.mark.parametrize("case", EXACT, ids=list(EXACT))
def test_the_preview_counts_exactly(pg_url, catalog_dir, case):
    setup, statement, expected = EXACT[case]
    code, report = preview_of(pg_url, catalog_dir, setup, statement)
    assert code == 7 and report["unchecked"] == [] and impact(report) == expected


def test_the_same_catalog_previews_with_the_same_lines_on_both_engines(pg_url, catalog_dir, tmp_path):
    """Indexes behind keys are the constraint's (SQLite's automatic ones are not shown either), rows inserted into
    a table the step creates are part of creating it, and a column is named without its engine's type."""
    write_migration(catalog_dir, "0001", "Users", depends_on=(),
                    upgrade="conn.execute('CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT UNIQUE, note TEXT)')\n"
                            "conn.execute(\"INSERT INTO users (id, name, note) VALUES (1, 'a', 'x'), (2, 'b', NULL)\")\n"
                            "conn.execute('CREATE INDEX users_note ON users (note)')")
    write_migration(catalog_dir, "0002", "More", depends_on=("0001",),
                    upgrade="conn.execute(\"INSERT INTO users (id, name) VALUES (3, 'c')\")\n"
                            "conn.execute('ALTER TABLE users ADD COLUMN age INTEGER')\n"
                            "conn.execute('DELETE FROM users WHERE id = 2')")
    lines = {}
    for engine, db in (("sqlite", str(tmp_path / "same.db")), ("postgresql", pg_url)):
        result = apm(db, "migrate", "--dry-run", "--json", catalog=catalog_dir)
        assert result.returncode == 0, result.stderr  # the DELETE takes a row the plan wrote: no loss, on both
        lines[engine] = json.loads(result.stdout)["lines"]
    assert lines["postgresql"] == lines["sqlite"]
    assert "0002 apply: deletes 1 row of users (rows this plan wrote)" in lines["sqlite"]
    assert "0001 apply: adds index users_note" in lines["sqlite"] and "0002 apply: adds column users.age" in lines["sqlite"]


def test_values_an_alter_column_type_changes_are_counted(pg_url, catalog_dir):
    """A cast that loses something (19.99 as integer, a USING that cuts text) overwrites values; a widening does not."""
    code, report = preview_of(pg_url, catalog_dir,
                              "CREATE TABLE prices (amount NUMERIC(6, 2), label TEXT, wide INT, packed INT);"
                              "INSERT INTO prices VALUES (19.99, 'hello', 1, 1), (20.00, 'wo', 2, 2), "
                              "(NULL, NULL, NULL, NULL)",
                              "ALTER TABLE prices ALTER COLUMN amount TYPE integer",
                              "ALTER TABLE prices ALTER label SET DATA TYPE varchar(2) USING left(label, 2), "
                              "ALTER COLUMN wide TYPE bigint",
                              "ALTER TABLE prices ALTER COLUMN packed TYPE int[] USING ARRAY[packed]")
    assert code == 7, report
    assert impact(report) == {("overwritten-values", "prices", "amount"): 1,
                              ("overwritten-values", "prices", "label"): 1,
                              ("overwritten-values", "prices", "packed"): 0}  # int[] cannot be cast back:
    assert [i["counted"] for step in report["steps"] for i in step["impact"] if i["column"] == "packed"] == [False]
    assert "0001 apply: overwrites 1 value of prices.amount" in report["lines"]
    assert "0001 apply: changes column prices.amount: numeric(6,2) → integer" in report["lines"]
    assert "0001 apply: may change values of prices.packed (not counted: they could not be compared)" in \
        report["lines"]
    assert report["unchecked"] == ["0001"]
    assert query(pg_url, "SELECT amount FROM prices ORDER BY amount") == [(Decimal("19.99"), ), (Decimal("20.00"), ),
                                                                          (None, )]


def both_engines(pg_url: str, catalog_dir: Path, tmp_path: Path, setup: str | tuple[str, str],
                 *upgrades: str) -> dict[str, tuple]:
    """``apm migrate --dry-run --json`` on a SQLite file and a PostgreSQL database both prepared by ``setup``
    (committed before the plan: its data existed before it; a pair is SQLite's and PostgreSQL's), the plan
    being ``upgrades`` as 0001, 0002...: per engine, the exit code and the report's lines."""
    import sqlite3

    sqlite_setup, pg_setup = (setup, setup) if isinstance(setup, str) else setup

    for n, body in enumerate(upgrades, 1):
        write_migration(catalog_dir, f"{n:04d}", f"Step {n}", depends_on=(f"{n - 1:04d}",) if n > 1 else (),
                        upgrade=body)
    db = tmp_path / "same.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(sqlite_setup)
    conn.close()
    if pg_setup:
        run_sql(pg_url, pg_setup)
    found = {}
    for engine, target in (("sqlite", str(db)), ("postgresql", pg_url)):
        result = apm(target, "migrate", "--dry-run", "--json", catalog=catalog_dir)
        assert result.stdout, result.stderr
        found[engine] = (result.returncode, json.loads(result.stdout)["lines"])
    return found


_STATUS = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT DEFAULT 'new', b TEXT);" \
          "INSERT INTO t (id) VALUES (1), (2); INSERT INTO t VALUES (3, 'old', 'kept'), (4, 'pending', NULL)"

#: (setup, the plan's upgrades, exit code, lines): what both engines must say, word for word.
SAME_LINES = {
    # Issue 22 point 5: values equal to the column's default existed before the plan; changing them loses them.
    "update-of-default-values-is-loss": (
        _STATUS, ["conn.execute(\"UPDATE t SET a = 'pending' WHERE a = 'new'\")"], 7,
        ["0001 apply: overwrites 2 values of t.a"]),
    # NULLs are filled, not overwritten; a value set to itself is not changed.
    "nulls-are-set-and-equal-values-unchanged": (
        _STATUS, ["conn.execute(\"UPDATE t SET b = 'x' WHERE b IS NULL\")\n"
                  "conn.execute(\"UPDATE t SET a = 'pending' WHERE id = 4\")"], 0,
        ["0001 apply: sets 3 values of t.b (none held data from before this plan)"]),
    # A column the plan added (its default filled it) and then backfilled: the plan's own values.
    "backfill-of-a-column-the-plan-added-is-not-loss": (
        _STATUS, ["conn.execute(\"ALTER TABLE t ADD COLUMN status TEXT DEFAULT 'new'\")",
                  "conn.execute(\"UPDATE t SET status = 'done' WHERE id <= 2\")"], 0,
        ["0001 apply: adds column t.status",
         "0002 apply: sets 2 values of t.status (none held data from before this plan)"]),
    # ... and rows of a table the plan created, updated and deleted in a later step.
    "rows-of-a-table-the-plan-created": (
        "", ["conn.execute(\"CREATE TABLE n (id INTEGER PRIMARY KEY, a TEXT DEFAULT 'new')\")\n"
             "conn.execute('INSERT INTO n (id) VALUES (1), (2), (3)')",
             "conn.execute(\"UPDATE n SET a = 'x' WHERE id = 1\")\nconn.execute('DELETE FROM n WHERE id > 1')"], 0,
        ["0001 apply: adds table n",
         "0002 apply: sets 1 value of n.a (none held data from before this plan)",
         "0002 apply: deletes 2 rows of n (rows this plan wrote)"]),
    # Deleting rows whose values are all defaults still deletes rows that existed.
    "delete-of-default-valued-rows": (
        _STATUS, ["conn.execute(\"DELETE FROM t WHERE a = 'new'\")"], 7,
        ["0001 apply: deletes 2 rows of t (4 → 2)"]),
    "update-from-of-default-values": (
        _STATUS + "; CREATE TABLE src (id INTEGER, a TEXT); INSERT INTO src VALUES (1, 'x'), (3, 'y')",
        ["conn.execute('UPDATE t SET a = src.a FROM src WHERE src.id = t.id')"], 7,
        ["0001 apply: overwrites 2 values of t.a"]),
    # Issue 22 point 22: a view dropped and made again is not added: unchanged, it is not news; else it changed.
    "a-view-made-again-is-not-added": (
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT); CREATE VIEW v AS SELECT id, a FROM t;"
        "CREATE VIEW w AS SELECT id FROM t",
        ["conn.execute('DROP VIEW v')\nconn.execute('CREATE VIEW v AS SELECT id, a FROM t')\n"
         "conn.execute('DROP VIEW w')\nconn.execute('CREATE VIEW w AS SELECT id, a FROM t')"], 0,
        ["0001 apply: changes view w (its SQL differs)"]),
}


@pytest.mark.parametrize("case", SAME_LINES, ids=list(SAME_LINES))
def test_both_engines_count_changed_values_alike(pg_url, catalog_dir, tmp_path, case):
    """Every value that existed before the plan and is changed or removed counts, whatever it equals; NULLs and
    what the plan wrote do not; and a step that changed values never reads as no change (issue 22, point 5).
    The guarantee itself (the same loss lines on both engines) is stated once in tests/test_conformance.py;
    these are the cases behind it."""
    setup, upgrades, code, lines = SAME_LINES[case]
    found = both_engines(pg_url, catalog_dir, tmp_path, setup, *upgrades)
    assert found["sqlite"] == (code, lines)
    assert found["postgresql"] == (code, lines)


def test_a_conversion_that_clamps_values_overwrites_them_on_both_engines(pg_url, catalog_dir, tmp_path):
    """Issue 22 point 8: SQLite's rebuild_table(convert=...) and PostgreSQL's ALTER COLUMN ... TYPE ... USING
    count the values they change in the same words."""
    upgrade = ("if conn.engine == 'sqlite':\n"
               "    from planner import rebuild_table\n"
               "    rebuild_table(conn, 'reviews', 'CREATE TABLE reviews (id INTEGER PRIMARY KEY, rating INTEGER)',\n"
               "                  convert={'rating': 'MIN(MAX(rating, 1), 5)'})\n"
               "else:\n"
               "    conn.execute('ALTER TABLE reviews ALTER COLUMN rating TYPE integer "
               "USING LEAST(GREATEST(rating, 1), 5)')")
    found = both_engines(pg_url, catalog_dir, tmp_path, "CREATE TABLE reviews (id INTEGER PRIMARY KEY, rating INTEGER);"
                         "INSERT INTO reviews VALUES (1, 9), (2, -3), (3, 4), (4, NULL)", upgrade)
    for engine in ("sqlite", "postgresql"):
        code, lines = found[engine]
        assert code == 7 and "0001 apply: overwrites 2 values of reviews.rating" in lines, (engine, lines)


_TRIGGERED = ("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT); CREATE TABLE log (id INTEGER);",
              "CREATE FUNCTION t_log_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO log VALUES (NEW.id); "
              "RETURN NEW; END $$;")
_TRIGGER = {"sqlite": "CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log VALUES (NEW.id); END",
            "postgresql": "CREATE TRIGGER t_log AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION t_log_row()"}


def test_constraints_triggers_and_functions_are_schema_changes_on_both_engines(pg_url, catalog_dir, tmp_path):
    """Issue 22 point 14: PostgreSQL's preview said "no schema or data change" for a step adding a CHECK, or
    dropping a trigger and its function. Both engines name the trigger and the named constraint alike;
    PostgreSQL adds the function, which SQLite does not have."""
    setup = (_TRIGGERED[0] + _TRIGGER["sqlite"], _TRIGGERED[0] + _TRIGGERED[1] + _TRIGGER["postgresql"])
    drop = ("conn.execute('DROP TRIGGER t_log' + (' ON t' if conn.engine == 'postgresql' else ''))\n"
            "if conn.engine == 'postgresql':\n    conn.execute('DROP FUNCTION t_log_row()')")
    check = ("if conn.engine == 'sqlite':\n"
             "    from planner import rebuild_table\n"
             "    rebuild_table(conn, 't', 'CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, "
             "CONSTRAINT a_known CHECK (a IS NOT NULL))', convert={'a': \"COALESCE(a, '')\"})\n"
             "else:\n"
             "    conn.execute(\"UPDATE t SET a = '' WHERE a IS NULL\")\n"
             "    conn.execute('ALTER TABLE t ADD CONSTRAINT a_known CHECK (a IS NOT NULL)')")
    found = both_engines(pg_url, catalog_dir, tmp_path, setup, drop, check)
    # PostgreSQL also measures the new CHECK's validating scan (docs/locks.md); that line is its own, not a change.
    code, lines = found["postgresql"]
    assert any("constraint-not-valid-missing" in line for line in lines)
    found["postgresql"] = (code, [line for line in lines if ": lock " not in line])
    assert found["sqlite"] == (0, ["0001 apply: drops trigger t_log",
                                   "0002 apply: rebuilds table t (copies its rows into the new shape)",
                                   "0002 apply: adds constraint t.a_known"])
    code, lines = found["postgresql"]  # its lock lines (the CHECK's validating scan) are test_pg_locks.py's
    assert (code, [line for line in lines if ": lock " not in line]) == (
        0, ["0001 apply: drops function t_log_row", "0001 apply: drops trigger t_log",
            "0002 apply: adds constraint t.a_known"])
