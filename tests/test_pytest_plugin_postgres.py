"""The pytest plugin on PostgreSQL: the generated tests on the suite's throwaway server (tests/pg_server.py).

Each test hands the inner pytest session (``pytester``, in this process) a
fresh database of the session's server as ``--apm-db``; the plugin creates
one database per generated test beside it (``<dbname>_upgrade``...) and
drops them, which the tests check by reading ``pg_database``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Loaded once here, so the inner sessions (pytester restores sys.modules after each) do not import them again.
import planner.engines.postgresql.runner  # noqa: F401
import planner.testing.runner  # noqa: F401
import planner.engines.postgresql.schema  # noqa: F401
import planner.engines.postgresql.testdb  # noqa: F401
import planner.pytest_plugin  # noqa: F401
from planner.engines.postgresql.testdb import database_name_for, with_database
from tests.conftest import write_migration
from tests.test_pytest_plugin import customers_and_orders, outcomes, report_of, without_hypothesis  # noqa: F401

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "postgres"


def dbname(url: str) -> str:
    return url.split("@/", 1)[1].split("?", 1)[0]


def databases_named_after(url: str) -> list[str]:
    """The databases on the server whose names start with ``<dbname>_``: the per-test ones."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1",
                            (dbname(url) + "_",)).fetchall()
    return [row[0] for row in rows]


# -- naming, without a server ------------------------------------------------------------------------


def test_per_test_database_names_are_the_url_database_and_the_test_id_within_63_bytes() -> None:
    assert database_name_for("postgresql://me:s3cret@db/app", "stairway[0027]") == "app_stairway_0027"
    assert database_name_for("postgresql://me@db/ci_{name}_x", "downgrade-all") == "ci_downgrade_all_x"
    assert database_name_for("host=/run/pg dbname=app", "test_orders[ada-1]") == "app_test_orders_ada_1"
    long = database_name_for("postgresql://db/app", "test_" + "x" * 80)
    other = database_name_for("postgresql://db/app", "test_" + "x" * 79 + "y")
    assert len(long.encode()) == 63 and long.startswith("app_test_xxx") and long != other
    assert with_database("postgresql://me:s3cret@/app?host=/sock&dbname=app", "app_upgrade") == \
        "dbname=app_upgrade user=me password=s3cret host=/sock"
    assert with_database("host=/sock dbname=app user=me", "app_upgrade") == "dbname=app_upgrade user=me host=/sock"
    # libpq reads a '#' in a URL's password as the password's, and the query's dbname over the path: so do these.
    assert with_database("postgresql://me:a#b@/app?host=/sock", "t1") == "dbname=t1 user=me password=a#b host=/sock"
    assert database_name_for("postgresql://me@/x?dbname=app&host=/sock", "up") == "app_up"


# -- the generated tests on a real server -------------------------------------------------------------


@pytest.mark.postgres
def test_the_postgres_example_catalog_passes_every_generated_test_and_leaves_no_database(
        pytester: pytest.Pytester, pg_url: str) -> None:
    reprec = pytester.inline_run("--apm-migrations", str(EXAMPLE), "--apm-db", pg_url)

    assert outcomes(reprec) == {
        "catalog": "passed",
        "upgrade": "passed",
        **{f"stairway[000{n}]": "passed" for n in (1, 2, 3, 4, 6, 5)},
        "downgrade-all": "passed",
    }
    assert databases_named_after(pg_url) == []


SLIPS = {
    # version: (upgrade, downgrade, the line its stairway item must say)
    "0003": ("conn.execute('ALTER TABLE orders ADD COLUMN note TEXT')", "pass",
             "0003 rollback left column orders.note"),
    "0004": ("conn.execute('CREATE INDEX orders_by_total ON orders (total)')", "pass",
             "0004 rollback left index orders_by_total"),
    "0005": ("conn.execute('ALTER TABLE orders ALTER COLUMN total TYPE BIGINT')",
             "conn.execute('ALTER TABLE orders ALTER COLUMN total TYPE TEXT')",
             "0005 rollback changed column orders.total: integer NOT NULL DEFAULT 0 → text NOT NULL DEFAULT 0"),
    "0006": ("conn.execute(\"CREATE TYPE mood AS ENUM ('ok', 'sad')\")", "pass", "0006 rollback left type mood"),
    "0007": ("conn.execute('ALTER TABLE orders DROP CONSTRAINT orders_customer_id_fkey')",
             "conn.execute('ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers (id)')",
             # One wording on both engines (SQLite's): the foreign key is read as one, not as the server's text.
             "0007 rollback dropped foreign key orders(customer_id) → customers(id) ON DELETE CASCADE"),
}


@pytest.mark.postgres
def test_each_downgrade_that_does_not_restore_the_schema_fails_its_own_stairway_item(
        pytester: pytest.Pytester, pg_url: str) -> None:
    catalog = customers_and_orders(pytester.path / "migrations")
    previous = "0002"
    for version, (upgrade, downgrade, _) in SLIPS.items():
        write_migration(catalog, version, f"Slip {version}", depends_on=(previous,), upgrade=upgrade,
                        downgrade=downgrade)
        previous = version
    write_migration(catalog, "0008", "Notes", depends_on=(previous,),
                    upgrade="conn.execute('CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT)')",
                    downgrade="conn.execute('DROP TABLE notes')")

    reprec = pytester.inline_run("--apm-migrations", "migrations", "--apm-db", pg_url)

    results = outcomes(reprec)
    assert results["upgrade"] == "passed"
    assert results["stairway[0001]"] == results["stairway[0002]"] == results["stairway[0008]"] == "passed"
    for version, (_, _, line) in SLIPS.items():
        assert results[f"stairway[{version}]"] == "failed", version
        lines = report_of(reprec, f"stairway[{version}]").longreprtext.splitlines()
        assert line in lines, (version, lines)
        # Only its own slip: each stair after one starts on a fresh database, so 0003's column is not 0004's.
        assert all(other not in text for text in lines for other in SLIPS if other != version), lines
    assert "0007 rollback left foreign key orders(customer_id) → customers(id)" in report_of(
        reprec, "stairway[0007]").longreprtext.splitlines()
    assert report_of(reprec, "downgrade-all").longreprtext.splitlines() == ["downgrade-all left type mood"]
    assert databases_named_after(pg_url) == []


@pytest.mark.postgres
def test_a_database_left_by_a_killed_run_is_dropped_first_and_name_puts_the_test_where_it_says(
        pytester: pytest.Pytester, pg_url: str) -> None:
    import psycopg

    customers_and_orders(pytester.path / "migrations")
    stale = f"{dbname(pg_url)}_x_upgrade_y"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{stale}"')
    with psycopg.connect(pg_url.replace(f"/{dbname(pg_url)}?", f"/{stale}?"), autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id INT)")  # what a killed run's upgrade test left behind
    template = pg_url.replace(f"/{dbname(pg_url)}?", f"/{dbname(pg_url)}_x_{{name}}_y?")

    reprec = pytester.inline_run("--apm-migrations", "migrations", "--apm-db", template, "-k", "upgrade")

    assert outcomes(reprec) == {"upgrade": "passed"}
    assert databases_named_after(pg_url) == []


@pytest.mark.postgres
def test_seed_hooks_and_apm_migrator_work_on_postgres(pytester: pytest.Pytester, pg_url: str) -> None:
    catalog = customers_and_orders(pytester.path / "migrations")
    # A downgrade that only fails when the table has rows: the seed's rows are what find it.
    write_migration(catalog, "0003", "Orders need a channel", depends_on=("0002",), upgrade="del conn  # changes nothing on purpose",
                    downgrade="conn.execute('ALTER TABLE orders ADD COLUMN channel TEXT NOT NULL')")
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(optionalhook=True)
        def pytest_apm_seed(version, connection):
            assert connection.engine == "postgresql"
            if version == "0002":
                connection.execute("INSERT INTO customers (id, name) VALUES (?, ?) ON CONFLICT DO NOTHING", (1, "Ada"))
                connection.execute("INSERT INTO orders (id, customer_id) VALUES (1, 1) ON CONFLICT DO NOTHING")
        """
    )
    pytester.makepyfile(
        test_orders="""
        import pytest
        from planner.errors import RollbackRefused

        def test_orders_keep_their_customers(apm_migrator):
            assert apm_migrator.connection.engine == "postgresql"
            assert apm_migrator.database.name.endswith("_test_orders_keep_their_customers")
            assert apm_migrator.migrate_to("0002") == ["0001", "0002"]
            apm_migrator.connection.execute("INSERT INTO customers (id, name) VALUES (?, ?)", (7, "Grace"))
            apm_migrator.connection.execute("INSERT INTO orders (id, customer_id) VALUES (%s, %s)", (70, 7))
            with pytest.raises(RollbackRefused):
                apm_migrator.rollback("0001")
            assert apm_migrator.rollback("0002") == ["0002"]
            assert apm_migrator.applied == {"0001"}
            assert apm_migrator.connection.fetchall("SELECT id, name FROM customers") == [(7, "Grace")]
            assert apm_migrator.schema().has("table", "customers") and not apm_migrator.schema().has("table", "orders")
        """
    )

    reprec = pytester.inline_run("--apm-migrations", "migrations", "--apm-db", pg_url)

    results = outcomes(reprec)
    assert results["test_orders_keep_their_customers"] == "passed"
    assert results["stairway[0001]"] == results["stairway[0002]"] == results["upgrade"] == "passed"
    assert results["stairway[0003]"] == "failed"
    assert ('0003 rollback failed: NotNullViolation: column "channel" of relation "orders" contains null values'
            in report_of(reprec, "stairway[0003]").longreprtext.splitlines())
    assert databases_named_after(pg_url) == []


@pytest.mark.postgres
def test_the_same_catalog_gives_the_same_test_ids_on_sqlite_and_postgres(pytester: pytest.Pytester,
                                                                       pg_url: str) -> None:
    on_sqlite = pytester.runpytest("--apm-migrations", str(EXAMPLE), "--collect-only", "-q")
    on_postgres = pytester.runpytest("--apm-migrations", str(EXAMPLE), "--apm-db", pg_url, "--collect-only", "-q")

    def ids(result: pytest.RunResult) -> list[str]:
        return [line.rsplit("::", 1)[1] for line in result.outlines if "::" in line]

    assert ids(on_sqlite) == ids(on_postgres)
    assert len(ids(on_postgres)) == 9 and "stairway[0006]" in ids(on_postgres)
    assert databases_named_after(pg_url) == []  # collecting never connects


@pytest.mark.postgres
def test_an_unreachable_server_is_one_failure_and_the_other_tests_skip(pytester: pytest.Pytester,
                                                                      tmp_path: Path) -> None:
    customers_and_orders(pytester.path / "migrations")
    nowhere = f"postgresql://me:s3cret@/app?host={tmp_path}"  # a folder with no server's socket in it

    result = pytester.runpytest("--apm-migrations", "migrations", "--apm-db", nowhere, "-rs")

    result.assert_outcomes(passed=1, failed=1, skipped=3)
    output = result.stdout.str()
    assert "s3cret" not in output
    assert output.count("apm: cannot connect to the PostgreSQL server of --apm-db postgresql://me:***@/app") == 2
    assert "reported once, by the first test that needed it" in output
    assert "Traceback" not in output and "During handling" not in output


def test_a_url_without_psycopg_is_one_usage_error_naming_the_extra(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    customers_and_orders(pytester.path / "migrations")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError

    result = pytester.runpytest("--apm-migrations", "migrations", "--apm-db", "postgresql://me:s3cret@db/app")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = result.stderr.str()
    assert "pip install 'apm-migrate[postgres]'" in errors and "postgresql://me:***@db/app" in errors
    assert "s3cret" not in errors + result.stdout.str()
