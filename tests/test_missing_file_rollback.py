"""A rollback that could take an applied migration whose file is gone is refused (issue 22 point 4).

With 0016 (a trigger writing to ``audit_log``) applied and its file deleted,
``--rollback 0014 --cascade --yes`` rolled back 0014 alone and dropped
``audit_log``: every insert into ``orders`` failed afterwards. The ledger
keeps no dependencies, so a migration without its file may depend on
anything applied before it. The rule (``planner.plan.refuse_missing_files_in_scope``):
a rollback, cascade or ``--to`` is refused, before anything runs, unless every
applied migration without a file was applied strictly before everything the
rollback takes. The message names the file, how to bring it back, and the
mark that lets the rollback through.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from planner.errors import MissingFileInScope
from planner.ledger import LedgerEntry
from planner.loader import load_catalog
from planner.plan import rollback_plan, to_plan
from tests.conftest import run_apm, write_migration

TRIGGER = ("CREATE TRIGGER audit AFTER INSERT ON orders BEGIN INSERT INTO audit_log (order_id) VALUES (new.id); END",)
PG_TRIGGER = ("CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
              "INSERT INTO audit_log (order_id) VALUES (new.id); RETURN new; END $$",
              "CREATE TRIGGER audit AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION audit()")


def shop(folder: Path, trigger: tuple[str, ...] = TRIGGER) -> Path:
    """0001 orders, 0002 audit_log, 0003 a trigger on orders writing to audit_log (needs 0002), 0004 on 0001."""
    write_migration(folder, "0001", "Orders", depends_on=(),
                    upgrade="conn.execute('CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)')",
                    downgrade="conn.execute('DROP TABLE orders')")
    write_migration(folder, "0002", "Audit log", depends_on=("0001",),
                    upgrade="conn.execute('CREATE TABLE audit_log (order_id INTEGER)')",
                    downgrade="conn.execute('DROP TABLE audit_log')")
    write_migration(folder, "0003", "Audit trigger", depends_on=("0002",),
                    upgrade="\n".join(f"conn.execute({statement!r})" for statement in trigger),
                    downgrade="conn.execute('DROP TRIGGER audit')" if trigger == TRIGGER else
                              "conn.execute('DROP TRIGGER audit ON orders')\nconn.execute('DROP FUNCTION audit()')")
    write_migration(folder, "0004", "Orders index", depends_on=("0001",),
                    upgrade="conn.execute('CREATE INDEX orders_total ON orders (total)')",
                    downgrade="conn.execute('DROP INDEX orders_total')")
    return folder


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


REFUSED = (
    ("migrate", "--rollback", "0002", "--cascade", "--yes"),
    ("migrate", "--rollback", "0002", "--cascade", "--no-preview", "--yes"),
    ("migrate", "--rollback", "0002", "--yes"),
    ("migrate", "--rollback", "0001", "--cascade", "--yes"),
    ("migrate", "--to", "0001", "--yes"),
    ("migrate", "--rollback", "0002", "--cascade", "--dry-run"),
    ("migrate", "plan", "--rollback", "0002", "--cascade"),
    ("migrate", "plan", "--to", "0001"),
)


def assert_names_the_way_out(result, args, folder: Path) -> None:
    assert result.returncode == 4, (args, result.returncode, result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert "0003 is recorded as applied" in line and "migration_0003_*" in line and str(folder) in line, line
    assert "Restore the file from version control" in line and "`apm migrate --mark-rolled-back 0003`" in line
    assert "nothing was changed" in line and "Traceback" not in result.stdout


def test_sqlite_refuses_every_rollback_a_missing_file_could_depend_on(catalog_dir: Path, tmp_path: Path):
    db = tmp_path / "shop.db"
    base = ("--db", str(db), "--migrations-dir", str(shop(catalog_dir)))
    assert run_apm(*base, "migrate", "--yes").returncode == 0
    (catalog_dir / "migration_0003.py").unlink()
    before, files = digest(db), sorted(p.name for p in tmp_path.iterdir())
    for args in REFUSED:
        assert_names_the_way_out(run_apm(*base, *args), args, catalog_dir)
        assert digest(db) == before and sorted(p.name for p in tmp_path.iterdir()) == files, args
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO orders (total) VALUES (5)")  # the trigger still has its table
    assert conn.execute("SELECT COUNT(*) FROM audit_log").fetchone() == (1,)
    conn.close()

    # Marked rolled back (its changes undone by hand), the rollback goes through.
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER audit")
    conn.commit()
    conn.close()
    marked = run_apm(*base, "migrate", "--mark-rolled-back", "0003")
    assert marked.returncode == 0 and "Marked as rolled back: 0003 Audit trigger" in marked.stdout, marked.stderr
    done = run_apm(*base, "migrate", "--rollback", "0002", "--cascade", "--yes")
    assert done.returncode == 0, done.stderr
    log = sqlite3.connect(db).execute("SELECT version, action FROM schema_migrations_log ORDER BY id").fetchall()
    assert log[-2:] == [("0003", "mark-rolled-back"), ("0002", "rollback")]


def test_a_missing_file_applied_before_the_rollback_does_not_block_it(catalog_dir: Path, tmp_path: Path):
    db = tmp_path / "shop.db"
    base = ("--db", str(db), "--migrations-dir", str(shop(catalog_dir)))
    assert run_apm(*base, "migrate", "--yes").returncode == 0
    (catalog_dir / "migration_0002.py").unlink()  # gone with its dependent 0003, which also loses its file
    (catalog_dir / "migration_0003.py").unlink()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_migrations SET applied_at = '2025-01-01 10:00:00' WHERE version IN ('0001', '0002', "
                 "'0003')")
    conn.execute("UPDATE schema_migrations SET applied_at = '2025-01-01 10:00:01' WHERE version = '0004'")
    conn.commit()
    conn.close()
    done = run_apm(*base, "migrate", "--rollback", "0004", "--yes")  # 0002 and 0003 came first: they cannot need it
    assert done.returncode == 0, done.stderr
    refused = run_apm(*base, "migrate", "--rollback", "0001", "--cascade", "--yes")  # the same second: unknown
    assert refused.returncode == 4 and "0002, 0003 are recorded as applied" in refused.stderr, refused.stderr


def test_the_rule_on_the_plan_functions(catalog_dir: Path):
    catalog = load_catalog(shop(catalog_dir))
    at = lambda t: LedgerEntry("", None, t)  # noqa: E731
    bare = ["0001", "0002", "0004", "0009"]  # 0009 has no file
    with pytest.raises(MissingFileInScope) as refused:  # bare versions say no time: it could be anything
        rollback_plan(catalog, bare, "0004")
    assert refused.value.missing == ("0009",)
    entries = {"0001": at("2025-01-01 10:00:00"), "0009": at("2025-01-01 10:00:01"),
               "0002": at("2025-01-01 10:00:02"), "0004": at("2025-01-01 10:00:03")}
    assert rollback_plan(catalog, entries, "0002").versions == ["0002"]  # 0009 came before it
    with pytest.raises(MissingFileInScope):
        rollback_plan(catalog, entries, "0001", cascade=True)  # 0009 came after 0001
    assert to_plan(catalog, entries, "0001").versions == ["0004", "0002"]  # 0009 came before both
    entries["0009"] = at("2025-01-01 10:00:02")  # the same second as 0002: which came first is unknown
    with pytest.raises(MissingFileInScope):
        to_plan(catalog, entries, "0001")
    assert to_plan(catalog, entries, "0002").versions == []  # rolls nothing back: nothing to refuse
    entries["0009"] = at(None)  # an old row without a time orders nothing
    with pytest.raises(MissingFileInScope):
        rollback_plan(catalog, entries, "0002")
    # Nothing missing: the rule never gets in the way.
    del entries["0009"]
    assert rollback_plan(catalog, entries, "0001", cascade=True).versions == ["0004", "0002", "0001"]


@pytest.mark.postgres
def test_postgres_refuses_the_same_rollbacks(pg_url: str, catalog_dir: Path, tmp_path: Path):
    from tests.test_postgres import query, run_sql

    base = ("--db", pg_url, "--migrations-dir", str(shop(catalog_dir, PG_TRIGGER)), "--backup-dir", str(tmp_path))
    done = run_apm(*base, "migrate", "--yes")
    assert done.returncode == 0, done.stderr
    (catalog_dir / "migration_0003.py").unlink()
    state = lambda: (query(pg_url, "SELECT version FROM schema_migrations ORDER BY 1"),  # noqa: E731
                     query(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"))
    before = state()
    for args in REFUSED:
        assert_names_the_way_out(run_apm(*base, *args), args, catalog_dir)
        assert state() == before, args
    assert list(tmp_path.glob("*.dump")) == []
    run_sql(pg_url, "INSERT INTO orders (id, total) VALUES (1, 5)")
    assert query(pg_url, "SELECT count(*) FROM audit_log") == [(1,)]
