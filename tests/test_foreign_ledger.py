"""Another tool's ``schema_migrations`` is refused untouched, by every command, on both engines (issue 22 point 6).

A Rails ledger (``version varchar(255) PRIMARY KEY``) had two columns and a
log table added before the run failed saying "nothing was committed": the
column names passed the check, the shape did not. The rule is the table's
whole shape: only the seed's framework's, APM's later framework's and this
project's own ledgers are read or written; any other ``schema_migrations``
(Rails, a Django-like one, Flyway, golang-migrate, Ecto, or the right names
with a NOT NULL column apm would leave empty) is refused, exit 6, with one
line naming its columns, and the database is the same byte for byte (SQLite)
or catalog row for catalog row (PostgreSQL) afterwards.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from planner.engines.sqlite.runner import Executor
from planner.loader import load_catalog
from planner.plan import apply_plan
from tests.conftest import run_apm

#: name -> (SQLite DDL, PostgreSQL DDL, one row as SQL values for both)
SHAPES = {
    "rails": ("version varchar(255) PRIMARY KEY", "version varchar(255) PRIMARY KEY", "('20240101000000')"),
    "django-like": ("id INTEGER PRIMARY KEY, app varchar(255) NOT NULL, name varchar(255) NOT NULL, "
                    "applied datetime NOT NULL",
                    "id serial PRIMARY KEY, app varchar(255) NOT NULL, name varchar(255) NOT NULL, "
                    "applied timestamp NOT NULL",
                    "(1, 'shop', '0001_initial', '2024-01-01 00:00:00')"),
    "flyway": ("installed_rank INTEGER PRIMARY KEY, version varchar(50), description varchar(200) NOT NULL, "
               "type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum INTEGER, "
               "installed_by varchar(100) NOT NULL, installed_on timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, "
               "execution_time INTEGER NOT NULL, success boolean NOT NULL",
               "installed_rank integer PRIMARY KEY, version varchar(50), description varchar(200) NOT NULL, "
               "type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum integer, "
               "installed_by varchar(100) NOT NULL, installed_on timestamp NOT NULL DEFAULT now(), "
               "execution_time integer NOT NULL, success boolean NOT NULL",
               "(1, '1', 'init', 'SQL', 'V1__init.sql', 42, 'me', '2024-01-01', 5, true)"),
    "golang-migrate": ("version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL",
                       "version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL", "(20240101, false)"),
    "ecto": ("version bigint PRIMARY KEY, inserted_at timestamp", "version bigint PRIMARY KEY, inserted_at timestamp",
             "(20240101000000, '2024-01-01 00:00:00')"),
    # Every name is one apm knows, but rows apm writes would leave these NOT NULL columns empty.
    "known-names-wrong-not-null": (
        "version TEXT PRIMARY KEY, description TEXT, applied_at TIMESTAMP, checksum TEXT, execution_ms INTEGER, "
        "applied_by TEXT, rollback_reason TEXT NOT NULL",
        "version text PRIMARY KEY, description text, applied_at timestamp, checksum text, execution_ms integer, "
        "id integer NOT NULL, rollback_reason text NOT NULL",
        None),
    # The seed's names, but a version that turns '0001' into 1.
    "numeric-version": ("version INTEGER PRIMARY KEY, description TEXT, applied_at TIMESTAMP",
                        "version bigint PRIMARY KEY, description text, applied_at timestamp, checksum text, "
                        "execution_ms integer", "(20240101, 'init', '2024-01-01')"),
}

#: Commands that would write (migrate, marks, rollbacks, --to, --baseline), then commands that only read.
WRITERS = (
    ("migrate", "--yes"),
    ("migrate", "--no-preview", "--yes"),
    ("migrate", "--atomic", "--no-preview", "--yes"),
    ("migrate", "--target", "0020", "--yes"),
    ("migrate", "--mark-applied", "0001"),
    ("migrate", "--mark-rolled-back", "0001"),
    ("migrate", "--rollback", "0001", "--cascade", "--yes"),
    ("migrate", "--to", "0020", "--yes"),
    ("migrate", "--to", "base", "--yes"),
    ("migrate", "--baseline", "0020"),
    ("migrate", "--dry-run"),
)
READERS = (
    ("status",),
    ("migrate", "plan"),
    ("migrate", "--list"),
    ("migrate", "--show-applied"),
    ("migrate", "check"),
    ("migrate", "doctor"),
    ("migrate", "graph"),
)


def sqlite_with(tmp_path: Path, shape: str) -> Path:
    ddl, _, row = SHAPES[shape]
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute(f"CREATE TABLE schema_migrations ({ddl})")
    if row:
        conn.execute(f"INSERT INTO schema_migrations VALUES {row}")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    return db


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused(result, args, *, doctor_ok: bool = False) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 6, (args, result.returncode, output)
    assert "Traceback" not in output and "nothing was committed" not in output, (args, output)
    if doctor_ok and "ledger-shape" in result.stdout:
        return
    (line,) = result.stderr.strip().splitlines()
    assert "made by another tool (columns: " in line and "nothing was changed" in line, (args, line)
    assert "ALTER TABLE" in line and "--db" in line  # what to do


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_sqlite_refuses_another_tools_ledger_and_leaves_the_file_as_it_was(shape, tmp_path, seed_chain):
    db = sqlite_with(tmp_path, shape)
    before, files = digest(db), siblings(tmp_path)
    commands = WRITERS + READERS if shape == "rails" else (WRITERS[0], WRITERS[1], WRITERS[4], WRITERS[6],
                                                           READERS[0])
    for args in commands:
        result = run_apm("--db", str(db), "--migrations-dir", str(seed_chain), *args)
        assert_refused(result, args, doctor_ok=args[-1] == "doctor")
        assert digest(db) == before, (args, "the database file changed")
        assert siblings(tmp_path) == files, (args, "a backup or journal was left beside it")
    if shape == "rails":
        assert "columns: version varchar(255)" in result.stderr or "ledger-shape" in result.stdout


def test_sqlite_restore_refuses_onto_or_from_another_tools_ledger(tmp_path, seed_chain):
    db = sqlite_with(tmp_path, "rails")
    good = tmp_path / "good.db"
    catalog = load_catalog(seed_chain)
    Executor(good, create=True, catalog=catalog).run(apply_plan(catalog, []))
    before, good_before, files = digest(db), digest(good), siblings(tmp_path)
    onto = run_apm("--db", str(db), "--migrations-dir", str(seed_chain), "migrate", "restore", str(good), "--yes")
    assert_refused(onto, "restore onto")
    from_ = run_apm("--db", str(good), "--migrations-dir", str(seed_chain), "migrate", "restore", str(db), "--yes")
    assert from_.returncode == 6 and "Traceback" not in from_.stderr, from_.stderr
    assert "made by another tool" in from_.stderr
    assert (digest(db), digest(good), siblings(tmp_path)) == (before, good_before, files)


def test_the_known_shapes_are_still_adopted(tmp_path, seed_chain):
    """The seed's three columns (upgraded in place) and a varchar version are ledgers apm knows."""
    db = tmp_path / "seed.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_migrations (version varchar(20) PRIMARY KEY, description TEXT, "
                 "applied_at TIMESTAMP)")
    conn.execute("INSERT INTO schema_migrations VALUES ('0001', 'Initial schema', '2025-01-01')")
    conn.commit()
    conn.close()
    done = run_apm("--db", str(db), "--migrations-dir", str(seed_chain), "migrate", "--yes")
    assert done.returncode == 0, done.stderr
    status = run_apm("--db", str(db), "--migrations-dir", str(seed_chain), "status")
    assert status.returncode == 0 and "Pending:         0" in status.stdout, status.stdout


# -- PostgreSQL ------------------------------------------------------------------------------------------


def pg_catalog_state(url: str) -> list[tuple]:
    """Every table and column of the database, and the ledger's rows: what a command must leave alone."""
    from tests.test_postgres import query

    columns = query(url, "SELECT table_schema, table_name, column_name, data_type, is_nullable FROM "
                         "information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
                         "ORDER BY 1, 2, 3")
    rows = query(url, "SELECT * FROM public.schema_migrations ORDER BY 1")
    return [*columns, *[tuple(map(str, r)) for r in rows]]


@pytest.mark.postgres
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_postgres_refuses_another_tools_ledger_and_leaves_the_catalog_as_it_was(shape, pg_url, seed_chain,
                                                                                   tmp_path):
    from tests.test_postgres import run_sql

    _, ddl, row = SHAPES[shape]
    run_sql(pg_url, f"CREATE TABLE public.schema_migrations ({ddl})")
    if row:
        run_sql(pg_url, f"INSERT INTO public.schema_migrations VALUES {row}")
    before = pg_catalog_state(pg_url)
    secret = pg_url.replace("apm@", "apm:s3cret@")
    commands = WRITERS + READERS if shape == "rails" else (WRITERS[0], WRITERS[4], READERS[0])
    for args in commands:
        result = run_apm("--db", secret, "--migrations-dir", str(seed_chain), "--backup-dir", str(tmp_path), *args)
        assert_refused(result, args, doctor_ok=args[-1] == "doctor")
        assert "s3cret" not in result.stdout + result.stderr
    assert pg_catalog_state(pg_url) == before, "the database changed"  # every table and column, every row
    assert list(tmp_path.glob("*.dump")) == []  # refused before a backup was even taken
