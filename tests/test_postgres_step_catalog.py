"""A preview step reads only the relations it wrote (planner/engines/postgresql/step_catalog.py), and sees what a whole reading sees.

The same plan is previewed on two databases prepared alike: once as
``apm`` runs it, once with every step's catalog read whole (the reading
that came before, which the other preview tests pin down figure by
figure). Every step's schema changes and data impact must be equal, and
the cheap steps must really have taken the step-only reading. Steps made
only of ``CREATE TABLE``/``CREATE SEQUENCE`` of new relations have their
reading wait, and share one (``PgObserver.settle``): their lines must be the
same too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.engines import engine_for
from planner.engines.postgresql import observe as pg_observe
from planner.engines.postgresql import step_catalog as pg_step_catalog
from planner.loader import load_catalog
from planner.plan import apply_plan
from tests.conftest import write_migration
from tests.test_postgres import run_sql

pytestmark = pytest.mark.postgres
CREATES_ONLY, TABLE_ROWS = pg_observe.creates_only, pg_observe.table_rows


def _unclaimed(found):
    return None if found is None else (found[0], found[1], None)

SETUP = ("CREATE TABLE kept (id INT PRIMARY KEY, note TEXT, size INT, label VARCHAR(10));"
         "INSERT INTO kept SELECT g, 'n' || g, g, 'l' FROM generate_series(1, 6) g;"
         "CREATE TABLE doomed (id INT); INSERT INTO doomed SELECT generate_series(1, 4);"
         "CREATE TABLE emptied (id INT); INSERT INTO emptied SELECT generate_series(1, 3);"
         "CREATE TABLE emptied_too (id INT); INSERT INTO emptied_too SELECT generate_series(1, 2);"
         "CREATE TABLE wide (id INT, gone TEXT, hidden TEXT); INSERT INTO wide VALUES (1, 'a', 'b'), (2, NULL, 'c');"
         "CREATE SCHEMA old_name; CREATE TABLE old_name.inside (id INT);"
         "CREATE SCHEMA dropped; CREATE TABLE dropped.a (id INT); INSERT INTO dropped.a VALUES (1), (2);"
         "CREATE VIEW shown AS SELECT id FROM doomed;"
         "CREATE TABLE moving (id INT);"
         "CREATE TABLE gone_too (id INT PRIMARY KEY, v TEXT); CREATE INDEX gone_too_v ON gone_too (v);"
         "INSERT INTO gone_too VALUES (1, 'a'), (2, 'b');"
         "CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;"
         "CREATE TRIGGER gone_too_t BEFORE UPDATE ON gone_too FOR EACH ROW EXECUTE FUNCTION noop();"
         "CREATE TABLE gone_three (id INT CONSTRAINT positive CHECK (id > 0)); INSERT INTO gone_three VALUES (1)")

#: (what the step does, its upgrade body); each step runs after the first, so it is read step-only if it can be.
STEPS = [
    ("warm up", "conn.execute('CREATE TABLE first (id INT)')"),
    # Quiet steps: their readings wait and are read together, then told apart by the id their rows carry.
    ("quiet: a table with a serial key, a unique and a check",
     "conn.execute('CREATE TABLE q1 (id SERIAL PRIMARY KEY, t TEXT UNIQUE, c INT CHECK (c > 0))')"),
    ("quiet: a sequence, then a table using it",
     "conn.execute('CREATE SEQUENCE q_seq')\n"
     "conn.execute(\"CREATE UNLOGGED TABLE IF NOT EXISTS q2 (id INT DEFAULT nextval('q_seq'))\")"),
    ("quiet: a table that exists already", "conn.execute('CREATE TABLE IF NOT EXISTS kept (id INT)')"),
    ("quiet: a table altered by the next step", "conn.execute('CREATE TABLE q4 (id INT)')"),
    ("the table of a quiet step altered", "conn.execute('ALTER TABLE q4 ADD COLUMN more INT')"),
    ("quiet: one more table", "conn.execute('CREATE TABLE q5 (id INT)')"),
    ("a quiet table, then a quiet step's table dropped",
     "conn.execute('CREATE TABLE q6 (id INT)')\nconn.execute('DROP TABLE q5')"),
    ("a table with a key, an index and a foreign key",
     "conn.execute('CREATE TABLE made (id INT PRIMARY KEY, k INT REFERENCES kept, t TEXT)')\n"
     "conn.execute('CREATE INDEX made_t ON made (t)')"),
    ("a column added", "conn.execute('ALTER TABLE kept ADD COLUMN extra INT DEFAULT 0')"),
    ("a column renamed", "conn.execute('ALTER TABLE kept RENAME COLUMN note TO remark')"),
    ("a type widened in place", "conn.execute('ALTER TABLE kept ALTER COLUMN label TYPE VARCHAR(20)')"),
    ("a column dropped by name", "conn.execute('ALTER TABLE wide DROP COLUMN gone')"),
    ("a column dropped unseen", "conn.raw.execute('ALTER TABLE wide DROP COLUMN hidden')"),
    ("a table renamed", "conn.execute('ALTER TABLE first RENAME TO second')"),
    ("a view, then replaced with a column more",
     "conn.execute('CREATE VIEW v AS SELECT id FROM kept')\n"
     "conn.execute('CREATE OR REPLACE VIEW v AS SELECT id, size FROM kept')"),
    ("a truncate the preview cannot read", "conn.execute('DO $$ BEGIN TRUNCATE emptied; END $$')"),
    ("a truncate, then a savepoint left open (the log row lands inside it)",
     "conn.execute('DO $$ BEGIN TRUNCATE emptied_too; END $$')\nconn.execute('SAVEPOINT left_open')"),
    ("rows deleted and updated", "conn.execute('DELETE FROM kept WHERE id = 6')\n"
                                 "conn.execute('UPDATE kept SET size = 0 WHERE id <= 2')"),
    ("rows inserted", "conn.execute('INSERT INTO second VALUES (1), (2)')"),
    ("an index renamed", "conn.execute('ALTER INDEX made_t RENAME TO made_t2')"),
    ("a table moved to a new schema", "conn.execute('CREATE SCHEMA elsewhere')\n"
                                      "conn.execute('ALTER TABLE moving SET SCHEMA elsewhere')"),
    ("a table made in a savepoint of the migration's own",
     "conn.execute('SAVEPOINT mine')\nconn.execute('CREATE TABLE nested (id INT)')\n"
     "conn.execute('RELEASE SAVEPOINT mine')"),
    ("a table made and undone by the migration",
     "conn.execute('SAVEPOINT mine')\nconn.execute('CREATE TABLE undone (id INT)')\n"
     "conn.execute('ROLLBACK TO SAVEPOINT mine')"),
    ("a table made and dropped in one step", "conn.execute('CREATE TABLE brief (id INT)')\n"
                                             "conn.execute('DROP TABLE brief')"),
    ("a type rewritten", "conn.execute('ALTER TABLE wide ALTER COLUMN id TYPE BIGINT')"),
    ("a check constraint added", "conn.execute('ALTER TABLE kept ADD CONSTRAINT size_positive CHECK (size >= 0)')"),
    ("a function and a trigger added",
     "conn.execute(\"CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$\")\n"
     "conn.execute('CREATE TRIGGER kept_stamp BEFORE UPDATE ON kept FOR EACH ROW EXECUTE FUNCTION stamp()')"),
    ("a constraint renamed", "conn.execute('ALTER TABLE kept RENAME CONSTRAINT size_positive TO size_ok')"),
    ("a trigger and its function dropped",
     "conn.execute('DROP TRIGGER kept_stamp ON kept')\nconn.execute('DROP FUNCTION stamp()')"),
    ("a constraint dropped", "conn.execute('ALTER TABLE kept DROP CONSTRAINT size_ok')"),
    ("a view dropped", "conn.execute('DROP VIEW shown')"),
    ("quiet: a table dropped", "conn.execute('DROP TABLE doomed')"),
    ("quiet: a table with a key, an index and a trigger dropped", "conn.execute('DROP TABLE gone_too')"),
    ("quiet: a table with a check dropped, and a table made",
     "conn.execute('DROP TABLE gone_three')\nconn.execute('CREATE TABLE made_after (id INT)')"),
    ("quiet: a table to drop soon", "conn.execute('CREATE TABLE soon (id INT)')"),
    ("a table a waiting step made, dropped", "conn.execute('DROP TABLE soon')"),
    ("an index dropped", "conn.execute('DROP INDEX made_t2')"),
    ("a table with a foreign key dropped", "conn.execute('DROP TABLE made')"),
    ("a schema dropped with its table", "conn.execute('DROP SCHEMA dropped CASCADE')"),
    ("a table dropped unseen", "conn.raw.execute('DROP TABLE second')"),
    ("a schema renamed", "conn.execute('ALTER SCHEMA old_name RENAME TO new_name')"),
    ("quiet: after the whole readings, a table again", "conn.execute('CREATE TABLE last (id INT)')"),
    ("quiet: the last step", "conn.execute('CREATE TABLE very_last (id INT)')"),
]
#: Steps whose reading waits for a later one (``PgObserver.settle``).
QUIET = {description for description, _ in STEPS if description.startswith("quiet:")}
#: Steps that must have been read step-only (all but a schema renamed, which renames relations without their rows).
STEP_ONLY = {"a table with a key, an index and a foreign key", "a column added", "a column renamed",
             "a type widened in place", "a column dropped by name", "a column dropped unseen", "a table renamed",
             "a view, then replaced with a column more", "a truncate the preview cannot read",
             "a truncate, then a savepoint left open (the log row lands inside it)",
             "rows deleted and updated", "rows inserted", "an index renamed", "a table moved to a new schema",
             "a table made in a savepoint of the migration's own", "a table made and undone by the migration",
             "a table made and dropped in one step", "a type rewritten", "a view dropped",
             "a table a waiting step made, dropped", "a table with a foreign key dropped",
             "a check constraint added", "a function and a trigger added", "a constraint renamed",
             "a trigger and its function dropped", "a constraint dropped",
             "an index dropped", "a schema dropped with its table", "a table dropped unseen",
             "the table of a quiet step altered",
             "a quiet table, then a quiet step's table dropped"}


def _catalog(folder: Path):
    for number, (description, body) in enumerate(STEPS, 1):
        write_migration(folder, f"{number:04d}", description.capitalize(),
                        depends_on=(f"{number - 1:04d}",) if number > 1 else (), upgrade=body)
    return load_catalog(folder)


def _preview(url: str, catalog, monkeypatch, *, whole: bool) -> tuple[list, list[bool]]:
    """Each step's (changes, impact), and whether each step that read at its end was read step-only (the
    readings of steps that waited, ``settle``'s, left out)."""
    run_sql(url, SETUP)
    step_only: list[bool] = []
    real = pg_step_catalog.read_step

    def reading(conn, last, gates, log_table, counters, **options):
        found = real(conn, last, None if whole else gates, log_table, counters, **options)
        if not options.get("steps"):
            step_only.append(found.read is not None)
        return found

    monkeypatch.setattr(pg_observe, "read_step", reading)
    # Read whole, every step reads at its end: none waits (no create is quiet, no drop claims what it removes).
    monkeypatch.setattr(pg_observe, "creates_only", (lambda _sql: False) if whole else CREATES_ONLY)
    monkeypatch.setattr(pg_observe, "table_rows", (lambda *a, **k: _unclaimed(TABLE_ROWS(*a, **k))) if whole
                        else TABLE_ROWS)
    preview = engine_for(url).runner(catalog=catalog).preview(apply_plan(catalog, {}))
    assert preview.error is None and not preview.committed
    return [(step.changes, step.impact) for step in preview.steps], step_only


def test_a_step_read_alone_sees_what_a_whole_reading_sees(pg_server, tmp_path, monkeypatch):
    catalog = _catalog(tmp_path)
    whole, _ = _preview(pg_server.create_database(), catalog, monkeypatch, whole=True)
    alone, step_only = _preview(pg_server.create_database(), catalog, monkeypatch, whole=False)
    for (description, _), expected, got in zip(STEPS, whole, alone):
        assert got == expected, description
    read_at_once = [description for description, _ in STEPS if description not in QUIET]
    assert len(step_only) == len(read_at_once)  # the quiet steps' readings waited
    assert {description for description, cheap in zip(read_at_once, step_only) if cheap} >= STEP_ONLY
    # The readings saw what happened, not nothing: a few figures of the whole reading itself.
    seen = {description: (changes, impact) for (description, _), (changes, impact) in zip(STEPS, whole)}
    assert any(c.kind == "column" and c.action == "added" and c.name == "extra" for c in seen["a column added"][0])
    assert any(c.kind == "column" and c.name == "remark" for c in seen["a column renamed"][0])
    # Issue 22 point 14: constraints, triggers and functions are schema changes too.
    assert [c.describe() for c in seen["a check constraint added"][0]] == ["adds constraint kept.size_positive"]
    assert [c.describe() for c in seen["a function and a trigger added"][0]] == ["adds function stamp",
                                                                                 "adds trigger kept_stamp"]
    assert [c.describe() for c in seen["a constraint renamed"][0]] == ["drops constraint kept.size_positive",
                                                                       "adds constraint kept.size_ok"]
    assert [c.describe() for c in seen["a trigger and its function dropped"][0]] == ["drops function stamp",
                                                                                     "drops trigger kept_stamp"]
    assert [c.describe() for c in seen["a constraint dropped"][0]] == ["drops constraint kept.size_ok"]
    assert [(i.kind, i.table, i.column, i.counted) for i in seen["a column dropped unseen"][1]] == [
        ("dropped-column", "wide", "hidden", False)]
    assert [(i.kind, i.table, i.counted) for i in seen["a truncate the preview cannot read"][1]] == [
        ("deleted-rows", "emptied", False)]
    assert [(i.kind, i.table, i.counted) for i in
            seen["a truncate, then a savepoint left open (the log row lands inside it)"][1]] == [
        ("deleted-rows", "emptied_too", False)]
    assert any(c.kind == "table" and c.action == "added" and c.name == "nested"
               for c in seen["a table made in a savepoint of the migration's own"][0])
    assert seen["a table made and undone by the migration"][0] == []
    # A schema renamed renames its tables (same oids), as ``RENAME`` of the table itself reads.
    assert any(c.kind == "table" and c.action == "renamed" and c.before == "old_name.inside"
               for c in seen["a schema renamed"][0])
    assert [(i.kind, i.table, i.count) for i in seen["a schema dropped with its table"][1]] == [
        ("dropped-table", "dropped.a", 2)]
    assert [(i.kind, i.table, i.counted) for i in seen["a table dropped unseen"][1]] == [
        ("dropped-table", "second", False)]
    assert [name for name, cheap in zip(read_at_once, step_only) if not cheap] == ["warm up", "a schema renamed"]
    # The quiet steps' lines, each on its own step.
    assert [c.describe() for c in seen["quiet: a table with a serial key, a unique and a check"][0]] == ["adds table q1"]
    assert [c.describe() for c in seen["quiet: a sequence, then a table using it"][0]] == ["adds table q2"]
    assert seen["quiet: a table that exists already"] == ([], [])
    assert [c.describe() for c in seen["the table of a quiet step altered"][0]] == ["adds column q4.more"]
    assert [c.describe() for c in seen["a quiet table, then a quiet step's table dropped"][0]] == [
        "adds table q6", "drops table q5"]
    assert [c.describe() for c in seen["quiet: the last step"][0]] == ["adds table very_last"]
    assert [c.describe() for c in seen["quiet: a table with a key, an index and a trigger dropped"][0]] == [
        "drops table gone_too", "drops index gone_too_v", "drops trigger gone_too_t"]
    assert [(i.kind, i.table, i.count) for i in seen["quiet: a table with a key, an index and a trigger dropped"][1]
            ] == [("dropped-table", "gone_too", 2)]
    assert [c.describe() for c in seen["quiet: a table with a check dropped, and a table made"][0]] == [
        "adds table made_after", "drops table gone_three"]
    assert [c.describe() for c in seen["a table a waiting step made, dropped"][0]] == ["drops table soon"]


def test_only_a_create_of_new_relations_alone_lets_its_reading_wait():
    quiet = ["CREATE TABLE t (id INT)", "create unlogged table if not exists s.t (id SERIAL PRIMARY KEY, c INT "
             "CHECK (c > 0), u TEXT UNIQUE DEFAULT 'x')", "CREATE TEMP TABLE t (id INT);", "CREATE SEQUENCE s"]
    loud = ["CREATE TABLE t (id INT REFERENCES p)", "CREATE TABLE t PARTITION OF p FOR VALUES IN (1)",
            "CREATE TABLE t () INHERITS (p)", "CREATE TABLE t (LIKE p)", "CREATE TABLE t AS SELECT * FROM p",
            "CREATE TABLE t OF some_type", "CREATE TABLE t (id INT GENERATED ALWAYS AS IDENTITY)",
            "CREATE SEQUENCE s OWNED BY p.id", "CREATE INDEX i ON p (id)", "CREATE VIEW v AS SELECT 1",
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE TABLE t (id INT); DROP TABLE p", "ALTER TABLE p ADD COLUMN c INT", "INSERT INTO p VALUES (1)",
            "DROP TABLE p", "SELECT 1"]
    assert [sql for sql in quiet if not pg_observe.creates_only(sql)] == []
    assert [sql for sql in loud if pg_observe.creates_only(sql)] == []


def _plan(folder: Path, *bodies: str):
    for number, body in enumerate(bodies, 1):
        write_migration(folder, f"{number:04d}", f"Step {number}", depends_on=(f"{number - 1:04d}",) if number > 1
                        else (), upgrade="\n".join(f"conn.execute({statement!r})" for statement in body.split("\n")))
    return load_catalog(folder)


@pytest.mark.parametrize("failing", ["CREATE TABLE b (id INT)", "SELECT 1 / 0"], ids=["quiet", "loud"])
def test_a_failed_step_after_waiting_ones_leaves_their_lines(pg_url, tmp_path, failing):
    catalog = _plan(tmp_path, "CREATE TABLE a (id INT)", "CREATE TABLE b (id INT)", "CREATE TABLE c (id INT)",
                    f"CREATE TABLE d (id INT)\n{failing}")
    preview = engine_for(pg_url).runner(catalog=catalog).preview(apply_plan(catalog, {}))
    assert preview.error is not None and not preview.committed
    assert [[c.describe() for c in step.changes] for step in preview.steps[:3]] == [
        ["adds table a"], ["adds table b"], ["adds table c"]]


def test_the_waiting_readings_are_read_before_the_preview_is_judged(pg_url, tmp_path):
    catalog = _plan(tmp_path, "CREATE TABLE a (id INT)", "CREATE TABLE b (id INT)", "CREATE SEQUENCE s\n"
                    "CREATE TABLE c (id INT DEFAULT nextval('s'))")
    judged: list[list[str]] = []

    def accept(preview) -> bool:
        judged.extend([c.describe() for c in step.changes] for step in preview.steps)
        return True

    preview = engine_for(pg_url).runner(catalog=catalog).preview(apply_plan(catalog, {}), accept=accept)
    assert preview.committed
    assert judged == [["adds table a"], ["adds table b"], ["adds table c"]]


def test_with_an_event_trigger_each_step_reads_its_own(pg_url, tmp_path):
    # An event trigger may run anything after a CREATE: here it drops a table when `a` is made. Its loss must show
    # on the step that made `a`, not on a later step that shared its reading.
    run_sql(pg_url, "CREATE TABLE victim (id INT); INSERT INTO victim VALUES (1), (2), (3);"
                    "CREATE FUNCTION on_create() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() WHERE object_identity = 'public.a') "
                    "THEN DROP TABLE victim; END IF; END $$;"
                    "CREATE EVENT TRIGGER dropper ON ddl_command_end WHEN TAG IN ('CREATE TABLE') "
                    "EXECUTE FUNCTION on_create()")
    catalog = _plan(tmp_path, "CREATE TABLE first (id INT)", "CREATE TABLE a (id INT)", "CREATE TABLE b (id INT)")
    preview = engine_for(pg_url).runner(catalog=catalog).preview(apply_plan(catalog, {}))
    assert preview.error is None
    assert [[(i.kind, i.table, i.counted) for i in step.impact] for step in preview.steps] == [
        [], [("dropped-table", "victim", False)], []]


def test_a_shared_reading_that_cannot_tell_the_steps_apart_shows_it_all_on_the_last(pg_url, tmp_path, monkeypatch):
    # Cannot happen (each waiting step writes one log row): nothing is lost, only told one step late.
    real = pg_step_catalog.read_step

    def blind(*arguments, **options):
        found = real(*arguments, **options)
        if options.get("steps"):
            found.writers = None
        return found

    monkeypatch.setattr(pg_observe, "read_step", blind)
    catalog = _plan(tmp_path, "CREATE TABLE a (id INT)", "CREATE TABLE b (id INT)", "CREATE TABLE c (id INT)")
    preview = engine_for(pg_url).runner(catalog=catalog).preview(apply_plan(catalog, {}))
    assert [[c.describe() for c in step.changes] for step in preview.steps] == [
        ["adds table a"], [], ["adds table b", "adds table c"]]
