"""Tenant names and passwords with '#' (issue 24): where the ledger is, said one way, and no password split.

``#`` separates a tenant schema (``url#schema``). A '#' inside a password
(``postgresql://app:a#b@host/db``, libpq's ``password=a#b``) is the
password's: it was split off as a "tenant", the rest of the password shown
as its name, and the connection made with half a password; the same for a
``password=a#b`` last in libpq's keyword form, which has no tenant after it.
"""

from __future__ import annotations

import json
import shlex

import pytest

from planner.urls import database_name, redact, split_schema, without_password
from tests.conftest import run_apm, write_migration
from tests.test_postgres import query, run_sql

SECRET = "s3cr#tPw"


@pytest.mark.parametrize("url, base, schema", [
    (f"postgresql://app:{SECRET}@db.internal/saas", f"postgresql://app:{SECRET}@db.internal/saas", None),
    (f"postgresql://app:{SECRET}@db.internal/saas#tenant_a", f"postgresql://app:{SECRET}@db.internal/saas",
     "tenant_a"),
    ("postgresql://app:s3cr%23tPw@db.internal/saas#tenant_a", "postgresql://app:s3cr%23tPw@db.internal/saas",
     "tenant_a"),
    (f"host=/tmp/x dbname=d password={SECRET} user=app", f"host=/tmp/x dbname=d password={SECRET} user=app", None),
    (f"host=/tmp/x dbname=d password={SECRET}", f"host=/tmp/x dbname=d password={SECRET}", None),
    (f"host=/tmp/x dbname=d password='{SECRET}'", f"host=/tmp/x dbname=d password='{SECRET}'", None),
    ("postgresql://app@db.internal/saas?password=s3cr%23tPw&sslmode=prefer#tenant_a",
     "postgresql://app@db.internal/saas?password=s3cr%23tPw&sslmode=prefer", "tenant_a"),
])
def test_a_hash_inside_a_password_is_never_a_tenant_and_never_shown(url, base, schema):
    assert split_schema(url) == (base, schema)
    for shown in (redact(url), without_password(url), database_name(base)):
        assert "tPw" not in shown and "s3cr" not in shown, shown
    assert database_name(base) in ("saas", "d")


@pytest.mark.parametrize("db", [f"postgresql://app:{SECRET}@/nowhere?host=/nonexistent",
                                f"host=/nonexistent dbname=nowhere password={SECRET}"])
def test_a_password_with_a_hash_reaches_the_server_whole_and_is_never_shown(tmp_path, db):
    """Before: ``app:s3cr#tPw@...`` was cut at '#', its tail taken for a tenant schema and the head left unmasked;
    ``password=s3cr#tPw`` last in the keyword form lost ``#tPw`` to a tenant of that name."""
    result = run_apm("--db", db, "status", cwd=tmp_path)
    assert result.returncode == 6, result.stderr  # unreachable: no server there
    assert "tPw" not in result.stderr + result.stdout and "s3cr" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    # The same connection string in a fleet's list file (a keyword line's comment starts a word).
    (tmp_path / "fleet.txt").write_text(f"{db}  # the nowhere server\n")
    fleet = run_apm("fleet", "status", "--list", "fleet.txt", "--json", cwd=tmp_path)
    row = json.loads(fleet.stdout)["databases"][0]
    assert row["state"] == "unreachable" and "#" not in row["db"], row
    assert "tPw" not in fleet.stderr + fleet.stdout and "s3cr" not in fleet.stderr + fleet.stdout


@pytest.mark.postgres
def test_a_tenant_given_by_its_search_path_and_ledger_schema_is_named_where_its_ledger_is(pg_url, catalog_dir,
                                                                                          tmp_path):
    """A member ``url?options=-csearch_path%3Dtenant_a`` with ``--ledger-schema tenant_a``: the fleet's rows name it
    ``url#tenant_a``, as ``apm migrate --db ... --ledger-schema tenant_a`` does, and the retry command pasted alone
    reaches the same ledger."""
    run_sql(pg_url, "CREATE SCHEMA tenant_a")
    write_migration(catalog_dir, "0001", "Items", upgrade="conn.execute('CREATE TABLE items (id INT)')")
    write_migration(catalog_dir, "0002", "Broken", upgrade="conn.execute('SELECT * FROM no_such_table')",
                    depends_on=("0001",))
    member = f"{pg_url}&options=-csearch_path%3Dtenant_a"
    (tmp_path / "fleet.txt").write_text(member + "\n")
    common = ("--migrations-dir", str(catalog_dir), "fleet")
    failed = run_apm(*common, "migrate", "--list", "fleet.txt", "--ledger-schema", "tenant_a", "--yes", cwd=tmp_path)
    assert failed.returncode != 0
    named = f"{pg_url}#tenant_a"
    retry = next(line for line in failed.stdout.splitlines() if line.startswith(named + " "))
    command = shlex.split(retry[retry.index("apm "):])
    status = run_apm(*common, "status", "--list", "fleet.txt", "--ledger-schema", "tenant_a", "--json", cwd=tmp_path)
    row = json.loads(status.stdout)["databases"][0]
    assert row["db"] == named and row["state"] == "failed", row

    (catalog_dir / "migration_0002.py").write_text((catalog_dir / "migration_0002.py").read_text().replace(
        "SELECT * FROM no_such_table", "CREATE TABLE more (id INT)"))
    again = run_apm(*command[1:], cwd=tmp_path)  # pasted alone: no list, no fleet
    assert again.returncode == 0, again.stderr
    assert query(pg_url, "SELECT version FROM tenant_a.schema_migrations ORDER BY 1") == [("0001",), ("0002",)]
    assert query(pg_url, "SELECT to_regclass('public.schema_migrations')") == [(None,)]
