"""One schema model, two readers: the same DDL read from a real SQLite file and the suite's PostgreSQL server
gives equal Schemas, modulo the engine differences ``planner.schema`` documents, and the same change is said in
the same words on both."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from planner.engines import engine_for
from planner.schema import Constraint, Schema, diff

# Lower-case types and numeric defaults: SQLite keeps a type as written and PostgreSQL prints its own
# (``integer``), and PostgreSQL prints a text default with its cast (``'x'::text``). Primary keys are
# NOT NULL explicitly: SQLite lets a non-integer primary key hold NULL, PostgreSQL does not.
DDL = [
    "CREATE TABLE projects (id integer NOT NULL PRIMARY KEY, name text NOT NULL, code text, UNIQUE (code))",
    "CREATE TABLE tasks (id integer NOT NULL PRIMARY KEY, project_id integer NOT NULL "
    "REFERENCES projects (id) ON DELETE CASCADE, title text, points integer NOT NULL DEFAULT 0, "
    "CHECK (points >= 0))",
    "CREATE TABLE tags (task_id integer NOT NULL, tag text NOT NULL, PRIMARY KEY (task_id, tag), "
    "FOREIGN KEY (task_id) REFERENCES tasks (id))",
    "CREATE INDEX tasks_by_title ON tasks (title)",
    "CREATE VIEW open_tasks AS SELECT id, title FROM tasks",
]
CHANGE = [
    "ALTER TABLE tasks ADD COLUMN due integer",
    "CREATE INDEX tasks_by_due ON tasks (due)",
    "DROP VIEW open_tasks",
    "CREATE TABLE notes (id integer NOT NULL PRIMARY KEY, body text)",
]


def comparable(schema: Schema) -> tuple:
    """The parts both engines read alike: the documented differences evened out.

    A table's SQL (SQLite only), where the primary key is said (SQLite: the columns' ``pk``, plus a
    constraint when it is not the rowid; PostgreSQL: a constraint only), CHECK constraints (PostgreSQL
    reads them; in SQLite they are in the table's SQL), each engine's own text of an index or a view,
    PostgreSQL's column order (not part of its schema), a type's spelling (SQLite prints the
    declared type, upper-casing the names it knows; PostgreSQL its own, in lower case), and ``others``
    (what only PostgreSQL has).
    """
    tables = {}
    for name, table in schema.tables.items():
        keys = sorted(((c.name, c.pk) for c in table.columns if c.pk), key=lambda pair: pair[1])
        primary = next((c.columns for c in table.constraints if c.kind == "primary key"), tuple(n for n, _ in keys))
        columns = sorted((dataclasses.replace(c, pk=0, type=c.type.lower()) for c in table.columns), key=lambda c: c.name)
        rules = {c for c in table.constraints if c.kind not in ("primary key", "check constraint")}
        tables[name] = (columns, primary, table.foreign_keys, rules)
    return tables, sorted(schema.indexes), sorted(schema.views), sorted(schema.triggers)


def sqlite_schema(path: Path, statements: list[str]) -> Schema:
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()
    return engine_for(str(path)).schema()  # type: ignore[attr-defined]


def pg_schema(url: str, statements: list[str]) -> Schema:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
    return engine_for(url).schema()  # type: ignore[attr-defined]


@pytest.mark.postgres
def test_the_same_ddl_reads_as_the_same_schema_on_both_engines(tmp_path: Path, pg_url: str) -> None:
    lite, pg = sqlite_schema(tmp_path / "app.db", DDL), pg_schema(pg_url, DDL)

    assert comparable(lite) == comparable(pg)
    assert lite.others == {} and set(pg.others) == {("extension", "plpgsql")}  # the server's, in every database
    # Read, not assumed: the keys the comparison rests on are there, on both sides.
    tasks = lite.tables["tasks"]
    assert [(k.columns, k.target, k.target_columns, k.on_delete) for k in tasks.foreign_keys] == \
        [(("project_id",), "projects", ("id",), "CASCADE")]
    assert Constraint("unique constraint", ("code",)) in lite.tables["projects"].constraints
    assert comparable(lite)[0]["tags"][1] == ("task_id", "tag")
    assert tasks.column("points").definition() == "INTEGER NOT NULL DEFAULT 0"
    assert pg.tables["tasks"].column("points").definition() == "integer NOT NULL DEFAULT 0"
    assert [c.definition for c in pg.tables["tasks"].constraints if c.kind == "check constraint"] == \
        ["CHECK ((points >= 0))"]
    # The ledger's tables are never part of a schema, on either engine.
    assert not ({"schema_migrations", "schema_migrations_log"} & (lite.tables.keys() | pg.tables.keys()))


@pytest.mark.postgres
def test_the_same_change_is_said_in_the_same_words_on_both_engines(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "app.db"
    lite_before, pg_before = sqlite_schema(db, DDL), pg_schema(pg_url, DDL)
    lite_after, pg_after = sqlite_schema(db, CHANGE), pg_schema(pg_url, CHANGE)

    expected = ["adds table notes", "adds column tasks.due (integer)", "adds index tasks_by_due", "drops view open_tasks"]
    assert [c.describe().replace("INTEGER", "integer") for c in diff(lite_before, lite_after)] == expected
    assert [c.describe() for c in diff(pg_before, pg_after)] == expected
    assert lite_before.differences(lite_after, "rollback") == pg_before.differences(pg_after, "rollback") == [
        "left table notes", "left column tasks.due", "left index tasks_by_due", "dropped view open_tasks"]


def test_a_lost_foreign_key_and_a_reordered_table_are_named_on_sqlite(tmp_path: Path) -> None:
    """A rebuild that drops a key, or puts the columns back in another order, is one named line each."""
    db = tmp_path / "app.db"
    before = sqlite_schema(db, DDL)
    after = sqlite_schema(db, [
        "DROP VIEW open_tasks",
        "CREATE TABLE t2 (id integer NOT NULL PRIMARY KEY, project_id integer NOT NULL, title text, "
        "points integer NOT NULL DEFAULT 0, CHECK (points >= 0))",
        "DROP TABLE tags", "DROP TABLE tasks", "ALTER TABLE t2 RENAME TO tasks",
        "CREATE TABLE tags (tag text NOT NULL, task_id integer NOT NULL, PRIMARY KEY (task_id, tag), "
        "FOREIGN KEY (task_id) REFERENCES tasks (id))",
        "CREATE INDEX tasks_by_title ON tasks (title)",
    ])
    assert [c.describe() for c in diff(before, after)] == [
        "reorders the columns of table tags (task_id, tag → tag, task_id)",
        "drops foreign key tasks(project_id) → projects(id) ON DELETE CASCADE",
        "drops view open_tasks",
    ]
