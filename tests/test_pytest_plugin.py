"""The pytest plugin ``apm``, run through pytester on catalogs written to fail one way each.

Every test runs an inner pytest session on a small catalog in pytester's
folder and asserts on the outcome of each generated item by its id, and on
the difference its failure names. The inner sessions run in this process
(``inline_run``), so the plugin is the installed one, loaded through its
``pytest11`` entry point exactly as in a user's project.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Imported here so the inner sessions find them loaded: pytester restores sys.modules after each one, and
# importing networkx and the planner again for every inner session would triple this file's run time.
import planner.engines.sqlite.runner  # noqa: F401
import planner.graph  # noqa: F401
import planner.lint  # noqa: F401
import planner.testing.runner  # noqa: F401
from tests.conftest import write_migration

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]


# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def without_hypothesis(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner sessions leave hypothesis's plugin out: its end-of-session summary costs 2 s each here."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")  # it clears PYTEST_ADDOPTS when it starts
        monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")



def outcomes(reprec: pytest.HookRecorder) -> dict[str, str]:
    """Each item's outcome by the last part of its id: passed, failed, skipped, xfailed (setup failures count)."""
    found: dict[str, str] = {}
    for report in reprec.getreports("pytest_runtest_logreport"):
        name = report.nodeid.rsplit("::", 1)[-1]
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            found[name] = "xfailed" if hasattr(report, "wasxfail") else report.outcome
    return found


def report_of(reprec: pytest.HookRecorder, name: str) -> pytest.TestReport:
    """The report that decided item ``name`` (its call, or its setup when that did not pass)."""
    for report in reprec.getreports("pytest_runtest_logreport"):
        if report.nodeid.rsplit("::", 1)[-1] == name and (
            report.when == "call" or (report.when == "setup" and report.outcome != "passed")
        ):
            return report
    raise AssertionError(f"no report for {name}")


def customers_and_orders(folder: Path) -> Path:
    """0001 customers, 0002 orders (with a foreign key to customers): both with correct downgrades."""
    folder.mkdir(exist_ok=True)
    write_migration(folder, "0001", "Customers",
                    upgrade="conn.execute('CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL)')",
                    downgrade="conn.execute('DROP TABLE customers')")
    write_migration(folder, "0002", "Orders", depends_on=("0001",),
                    upgrade="""
                        conn.execute('''CREATE TABLE orders (
                            id INTEGER PRIMARY KEY,
                            customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
                            created_at TEXT DEFAULT CURRENT_TIMESTAMP,
                            total INTEGER NOT NULL DEFAULT 0)''')
                    """,
                    downgrade="conn.execute('DROP TABLE orders')")
    return folder


# Each bad migration is 0003, on top of 0002; 0004 depends on it and is correct, so the walk must go on past
# the failure without blaming 0004 for what 0003 left.
BAD_MIGRATIONS = {
    "leaves an index": (
        "conn.execute('CREATE INDEX orders_by_date ON orders (created_at)')",
        "pass",
        "0003 rollback left index orders_by_date",
    ),
    "leaves a column": (
        "conn.execute('ALTER TABLE orders ADD COLUMN note TEXT')",
        "pass",
        "0003 rollback left column orders.note",
    ),
    "drops a table it did not create": (
        "conn.execute('CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT)')",
        "conn.execute('DROP TABLE audit')\nconn.execute('DROP TABLE orders')",
        "0003 rollback dropped table orders",
    ),
    "is not repeatable after its downgrade": (
        "conn.execute(\"INSERT INTO customers (id, name) VALUES (1, 'house account')\")",
        "pass",
        "0003 re-apply failed after the rollback: IntegrityError: UNIQUE constraint failed: customers.id",
    ),
}


# -- the stairway finds what a downgrade gets wrong ----------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_MIGRATIONS))
def test_each_bad_downgrade_fails_exactly_its_stairway_item(pytester: pytest.Pytester, case: str) -> None:
    upgrade, downgrade, expected = BAD_MIGRATIONS[case]
    catalog = customers_and_orders(pytester.path / "migrations")
    write_migration(catalog, "0003", f"Bad: {case}", depends_on=("0002",), upgrade=upgrade, downgrade=downgrade)
    write_migration(catalog, "0004", "Notes", depends_on=("0003",),
                    upgrade="conn.execute('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)')",
                    downgrade="conn.execute('DROP TABLE notes')")

    reprec = pytester.inline_run("--apm-migrations", "migrations")

    results = outcomes(reprec)
    assert {k: v for k, v in results.items() if k.startswith("stairway")} == {
        "stairway[0001]": "passed",
        "stairway[0002]": "passed",
        "stairway[0003]": "failed",
        "stairway[0004]": "passed",
    }
    assert results["upgrade"] == "passed" and results["catalog"] == "passed"
    message = report_of(reprec, "stairway[0003]").longreprtext
    assert expected in message.splitlines()
    assert "0004" not in message


def test_one_walk_reports_every_broken_downgrade_by_its_own_version(pytester: pytest.Pytester) -> None:
    # All four faults in one chain: after each failure the walk continues on a fresh database.
    catalog = customers_and_orders(pytester.path / "migrations")
    previous = "0002"
    expected: dict[str, str] = {}
    for number, case in enumerate(sorted(BAD_MIGRATIONS), start=3):
        upgrade, downgrade, text = BAD_MIGRATIONS[case]
        version = f"{number:04d}"
        write_migration(catalog, version, case, depends_on=(previous,), upgrade=upgrade, downgrade=downgrade)
        expected[f"stairway[{version}]"] = text.replace("0003", version)
        previous = version

    reprec = pytester.inline_run("--apm-migrations", "migrations")

    results = outcomes(reprec)
    assert results["stairway[0001]"] == results["stairway[0002]"] == "passed"
    for name, text in expected.items():
        assert results[name] == "failed", name
        assert text in report_of(reprec, name).longreprtext.splitlines(), name
    assert results["upgrade"] == "passed"


def test_a_changed_column_type_and_a_lost_foreign_key_are_named(pytester: pytest.Pytester) -> None:
    catalog = customers_and_orders(pytester.path / "migrations")
    # The downgrade "restores" orders by hand, but with total as TEXT and without the foreign key.
    write_migration(catalog, "0003", "Orders get a status", depends_on=("0002",),
                    upgrade="conn.execute(\"ALTER TABLE orders ADD COLUMN status TEXT DEFAULT 'new'\")",
                    downgrade="""
                        conn.execute('DROP TABLE orders')
                        conn.execute('''CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
                                        created_at TEXT DEFAULT CURRENT_TIMESTAMP, total TEXT NOT NULL DEFAULT 0)''')
                    """)

    reprec = pytester.inline_run("--apm-migrations", "migrations")

    assert outcomes(reprec)["stairway[0003]"] == "failed"
    lines = report_of(reprec, "stairway[0003]").longreprtext.splitlines()
    assert "0003 rollback changed column orders.total: INTEGER NOT NULL DEFAULT 0 → TEXT NOT NULL DEFAULT 0" in lines
    assert "0003 rollback dropped foreign key orders(customer_id) → customers(id) ON DELETE CASCADE" in lines


def test_a_downgrade_that_puts_a_column_back_last_is_named_for_the_order(pytester: pytest.Pytester) -> None:
    catalog = pytester.path / "migrations"
    catalog.mkdir()
    write_migration(catalog, "0001", "Users", depends_on=(),
                    upgrade="conn.execute('CREATE TABLE users (id INTEGER PRIMARY KEY, legacy TEXT, name TEXT)')",
                    downgrade="conn.execute('DROP TABLE users')")
    write_migration(catalog, "0002", "Drop legacy", depends_on=("0001",),
                    upgrade="conn.execute('ALTER TABLE users DROP COLUMN legacy')",
                    downgrade="conn.execute('ALTER TABLE users ADD COLUMN legacy TEXT')")

    reprec = pytester.inline_run("--apm-migrations", "migrations")

    assert outcomes(reprec)["stairway[0002]"] == "failed"
    text = report_of(reprec, "stairway[0002]").longreprtext
    assert "changed the column order of table users (id, legacy, name -> id, name, legacy)" in text
    assert "CHECK or COLLATE" not in text


def test_an_upgrade_that_differs_the_second_time_is_named(pytester: pytest.Pytester) -> None:
    catalog = customers_and_orders(pytester.path / "migrations")
    # The upgrade names its index after how many indexes exist: the downgrade forgets one, so the re-apply
    # creates a second one under another name.
    write_migration(catalog, "0003", "Index orders", depends_on=("0002",),
                    upgrade="""
                        n = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index'").fetchone()[0]
                        conn.execute(f'CREATE INDEX orders_{n} ON orders (total)')
                    """,
                    downgrade="pass")

    reprec = pytester.inline_run("--apm-migrations", "migrations")

    lines = report_of(reprec, "stairway[0003]").longreprtext.splitlines()
    assert "0003 rollback left index orders_1" in lines
    assert "0003 re-apply differs from the first apply: index orders_2 is new" in lines


# -- a correct branched catalog ----------------------------------------------------------------------


def branched_catalog(folder: Path) -> Path:
    """0001 root; branch A 0002 → 0004; branch B 0003 → 0005; 0006 merges 0004 and 0005."""
    customers_and_orders(folder)
    write_migration(folder, "0003", "Products", depends_on=("0001",),
                    upgrade="""
                        conn.execute('CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE)')
                        conn.execute('CREATE VIEW product_skus AS SELECT sku FROM products')
                    """,
                    downgrade="""
                        conn.execute('DROP VIEW product_skus')
                        conn.execute('DROP TABLE products')
                    """)
    write_migration(folder, "0004", "Orders by date", depends_on=("0002",),
                    upgrade="conn.execute('CREATE INDEX orders_by_date ON orders (created_at)')",
                    downgrade="conn.execute('DROP INDEX orders_by_date')")
    write_migration(folder, "0005", "Product prices", depends_on=("0003",),
                    upgrade="conn.execute('ALTER TABLE products ADD COLUMN price INTEGER NOT NULL DEFAULT 0')",
                    downgrade="conn.execute('ALTER TABLE products DROP COLUMN price')")
    write_migration(folder, "0006", "Order lines", depends_on=("0004", "0005"),
                    upgrade="""
                        conn.execute('''CREATE TABLE order_lines (
                            order_id INTEGER NOT NULL REFERENCES orders(id),
                            product_id INTEGER NOT NULL REFERENCES products(id),
                            quantity INTEGER NOT NULL CHECK (quantity > 0),
                            PRIMARY KEY (order_id, product_id))''')
                        conn.execute('''CREATE TRIGGER order_lines_total AFTER INSERT ON order_lines BEGIN
                            UPDATE orders SET total = total + NEW.quantity WHERE id = NEW.order_id; END''')
                    """,
                    downgrade="conn.execute('DROP TABLE order_lines')")
    return folder


def test_a_correct_branched_catalog_passes_with_one_stairway_item_per_migration(pytester: pytest.Pytester) -> None:
    branched_catalog(pytester.path / "migrations")

    reprec = pytester.inline_run("--apm-migrations", "migrations")

    assert outcomes(reprec) == {
        "catalog": "passed",
        "upgrade": "passed",
        **{f"stairway[000{n}]": "passed" for n in range(1, 7)},
        "downgrade-all": "passed",
    }


def test_items_come_in_dependency_order_with_the_version_in_the_id(pytester: pytest.Pytester) -> None:
    branched_catalog(pytester.path / "migrations")

    result = pytester.runpytest("--apm-migrations", "migrations", "--collect-only", "-q")

    ids = [line for line in result.outlines if line.startswith("migrations::")]
    assert ids == [
        "migrations::catalog", "migrations::upgrade",
        *[f"migrations::stairway[000{n}]" for n in range(1, 7)],
        "migrations::downgrade-all",
    ]


def test_dash_k_selects_one_stair_and_it_runs_alone_on_its_ancestors(pytester: pytest.Pytester) -> None:
    branched_catalog(pytester.path / "migrations")

    reprec = pytester.inline_run("--apm-migrations", "migrations", "-k", "stairway and 0006")

    assert outcomes(reprec) == {"stairway[0006]": "passed"}


def test_configuration_file_switches_it_on_and_dash_p_no_apm_switches_it_off(pytester: pytest.Pytester) -> None:
    branched_catalog(pytester.path / "migrations")
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\napm_migrations = "migrations"\n')
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")

    on = pytester.inline_run()
    off = pytester.inline_run("-p", "no:apm", "-W", "ignore::pytest.PytestConfigWarning")

    assert outcomes(on)["stairway[0006]"] == "passed" and len(outcomes(on)) == 10
    assert outcomes(off) == {"test_plain": "passed"}


def test_without_a_catalog_the_plugin_adds_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")

    result = pytester.runpytest("-q")

    assert result.ret == 0
    assert outcomes(pytester.inline_run()) == {"test_plain": "passed"}
    assert "apm:" not in result.stdout.str()


# -- migrations without downgrade, failing upgrades, broken catalogs ---------------------------------


def test_a_migration_without_downgrade_is_an_expected_failure_not_an_error(pytester: pytest.Pytester) -> None:
    catalog = customers_and_orders(pytester.path / "migrations")
    write_migration(catalog, "0003", "Backfill", depends_on=("0002",),
                    upgrade="conn.execute('UPDATE orders SET total = 0 WHERE total IS NULL')", downgrade=None)
    write_migration(catalog, "0004", "Notes", depends_on=("0003",),
                    upgrade="conn.execute('CREATE TABLE notes (id INTEGER PRIMARY KEY)')",
                    downgrade="conn.execute('DROP TABLE notes')")

    reprec = pytester.inline_run("--apm-migrations", "migrations")

    results = outcomes(reprec)
    assert results["no-downgrade[0003]"] == "xfailed"
    assert "stairway[0003]" not in results
    assert results["stairway[0004]"] == "passed"  # the walk went on over 0003
    assert results["downgrade-all"] == "xfailed"
    assert "0003 declare(s) no downgrade(conn)" in report_of(reprec, "no-downgrade[0003]").wasxfail
    assert reprec.ret == 0


def test_a_failing_upgrade_fails_its_stair_and_skips_its_descendants_naming_it(pytester: pytest.Pytester) -> None:
    catalog = customers_and_orders(pytester.path / "migrations")
    write_migration(catalog, "0003", "Broken", depends_on=("0001",),
                    upgrade="conn.execute('ALTER TABLE nowhere ADD COLUMN x TEXT')", downgrade="pass")
    write_migration(catalog, "0004", "After broken", depends_on=("0003",), upgrade="del conn  # changes nothing on purpose", downgrade="pass")

    reprec = pytester.inline_run("--apm-migrations", "migrations")

    results = outcomes(reprec)
    assert results["stairway[0002]"] == "passed"  # another branch: unaffected
    assert results["stairway[0003]"] == "failed"
    assert "0003 upgrade failed: OperationalError: no such table: nowhere" in report_of(
        reprec, "stairway[0003]").longreprtext
    assert results["stairway[0004]"] == "skipped"
    assert "it depends on 0003, whose upgrade failed" in report_of(reprec, "stairway[0004]").longreprtext
    assert results["upgrade"] == "failed"


def test_a_view_or_trigger_that_no_longer_compiles_fails_the_migration_that_broke_it(
        pytester: pytest.Pytester) -> None:
    """Issue 22 point 11: SQLite accepts a view over a missing table; it failed only later, when 0005's
    ALTER TABLE made SQLite compile every view, so 0005 was blamed. Now 0003's and 0004's own stairs fail."""
    catalog = customers_and_orders(pytester.path / "migrations")
    write_migration(catalog, "0003", "Report view", depends_on=("0002",),
                    upgrade="conn.execute('CREATE VIEW v_report AS SELECT id, total FROM reports')",
                    downgrade="conn.execute('DROP VIEW v_report')")
    write_migration(catalog, "0004", "Audit trigger", depends_on=("0002",),
                    upgrade="conn.execute('CREATE TRIGGER orders_audit AFTER DELETE ON orders "
                            "BEGIN INSERT INTO audit (id) VALUES (OLD.id); END')\n"
                            "conn.execute('CREATE TRIGGER orders_fine AFTER DELETE ON orders "
                            "BEGIN DELETE FROM customers WHERE 0; END')",
                    downgrade="conn.execute('DROP TRIGGER orders_audit')\nconn.execute('DROP TRIGGER orders_fine')")
    write_migration(catalog, "0005", "Rename", depends_on=("0002",),
                    upgrade="conn.execute('ALTER TABLE customers RENAME COLUMN name TO full_name')",
                    downgrade="conn.execute('ALTER TABLE customers RENAME COLUMN full_name TO name')")

    reprec = pytester.inline_run("--apm-migrations", "migrations")

    results = outcomes(reprec)
    assert results["stairway[0003]"] == "failed"
    assert "upgrade leaves view v_report broken: it no longer compiles (no such table: main.reports)" in report_of(
        reprec, "stairway[0003]").longreprtext
    assert results["stairway[0004]"] == "failed"
    text = report_of(reprec, "stairway[0004]").longreprtext
    assert "upgrade leaves trigger orders_audit broken: it no longer compiles (no such table: main.audit)" in text
    assert "orders_fine" not in text
    assert results["stairway[0005]"] == "passed"  # no longer blamed for tripping over 0003's view
    assert results["upgrade"] == "failed"
    assert "0003" in report_of(reprec, "upgrade").longreprtext
    assert "v_report" in report_of(reprec, "upgrade").longreprtext


def test_a_catalog_that_does_not_load_fails_the_catalog_item_only(pytester: pytest.Pytester) -> None:
    catalog = customers_and_orders(pytester.path / "migrations")
    write_migration(catalog, "0003", "Orphan", depends_on=("0042",))

    reprec = pytester.inline_run("--apm-migrations", "migrations")

    assert outcomes(reprec) == {"catalog": "failed"}
    assert "0042" in report_of(reprec, "catalog").longreprtext


# -- seed data ---------------------------------------------------------------------------------------


def test_the_seed_hook_gives_the_stairway_rows_to_roll_back(pytester: pytest.Pytester) -> None:
    catalog = customers_and_orders(pytester.path / "migrations")
    # A downgrade that cannot cope with rows: it rebuilds orders without copying them back correctly.
    write_migration(catalog, "0003", "Order status", depends_on=("0002",),
                    upgrade="conn.execute(\"ALTER TABLE orders ADD COLUMN status TEXT NOT NULL DEFAULT 'new'\")",
                    downgrade="""
                        conn.execute('''CREATE TABLE orders_old (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL
                            REFERENCES customers(id) ON DELETE CASCADE, created_at TEXT DEFAULT CURRENT_TIMESTAMP,
                            total INTEGER NOT NULL DEFAULT 0)''')
                        conn.execute('INSERT INTO orders_old (id, customer_id, total) SELECT id, customer_id, NULL FROM orders')
                        conn.execute('DROP TABLE orders')
                        conn.execute('ALTER TABLE orders_old RENAME TO orders')
                    """)
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(optionalhook=True)
        def pytest_apm_seed(version, connection):
            if version == "0001":
                connection.execute("INSERT OR IGNORE INTO customers (id, name) VALUES (1, 'Ada')")
            if version == "0002":
                connection.execute("INSERT OR IGNORE INTO orders (id, customer_id, total) VALUES (1, 1, 30)")
        """
    )

    with_rows = pytester.inline_run("--apm-migrations", "migrations")
    (pytester.path / "conftest.py").unlink()
    without_rows = pytester.inline_run("--apm-migrations", "migrations")

    assert outcomes(with_rows)["stairway[0003]"] == "failed"
    assert "0003 rollback failed: IntegrityError: NOT NULL constraint failed: orders_old.total" in report_of(
        with_rows, "stairway[0003]").longreprtext
    assert outcomes(with_rows)["upgrade"] == "passed"
    # On empty tables the same downgrade looks correct: the data is what finds it.
    assert outcomes(without_rows)["stairway[0003]"] == "passed"


def test_a_seed_that_fails_names_the_version(pytester: pytest.Pytester) -> None:
    customers_and_orders(pytester.path / "migrations")
    pytester.makeconftest(
        """
        def pytest_apm_seed(version, connection):
            if version == "0002":
                connection.execute("INSERT INTO orders (id, customer_id) VALUES (1, 999)")
        """
    )

    reprec = pytester.inline_run("--apm-migrations", "migrations")

    results = outcomes(reprec)
    assert results["stairway[0001]"] == "passed"
    assert results["stairway[0002]"] == "failed"
    assert "0002 seeding after 0002 failed: IntegrityError: FOREIGN KEY constraint failed" in report_of(
        reprec, "stairway[0002]").longreprtext


# -- where the databases go ---------------------------------------------------------------------------


def test_apm_db_template_names_one_file_per_test(pytester: pytest.Pytester) -> None:
    customers_and_orders(pytester.path / "migrations")
    folder = pytester.path / "dbs"

    reprec = pytester.inline_run("--apm-migrations", "migrations", "--apm-db", f"{folder}/{{name}}.db")

    assert set(outcomes(reprec).values()) == {"passed"}
    assert sorted(p.name for p in folder.glob("*.db")) == ["downgrade-all.db", "stairway.db", "upgrade.db"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mysql://localhost/apm", "mysql:// URLs are not supported"),
        ("postgresql://u@h/{name}_{name}", "{name} may appear once, in the database name"),
        ("postgresql://u@{name}/apm", "{name} may appear once, in the database name"),
        ("/tmp/apm/one.db", "the template must contain {name}"),
    ],
)
def test_apm_db_refuses_what_cannot_name_a_fresh_database_per_test(pytester: pytest.Pytester, value: str,
                                                             message: str) -> None:
    customers_and_orders(pytester.path / "migrations")

    result = pytester.runpytest("--apm-migrations", "migrations", "--apm-db", value)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


# -- fixtures for hand-written tests ------------------------------------------------------------------


def test_apm_migrator_moves_a_database_to_a_version_and_back(pytester: pytest.Pytester) -> None:
    branched_catalog(pytester.path / "migrations")
    pytester.makepyfile(
        test_data="""
        import pytest
        from planner.errors import RollbackRefused

        def test_catalog(apm_catalog):
            assert apm_catalog.versions == ("0001", "0002", "0003", "0004", "0005", "0006")

        def test_orders_keep_their_customers(apm_migrator):
            assert apm_migrator.migrate_to("0002") == ["0001", "0002"]
            apm_migrator.connection.execute("INSERT INTO customers (id, name) VALUES (1, 'Ada')")
            apm_migrator.connection.execute("INSERT INTO orders (id, customer_id) VALUES (7, 1)")
            apm_migrator.migrate_to()
            assert apm_migrator.applied == {"0001", "0002", "0003", "0004", "0005", "0006"}
            assert apm_migrator.connection.execute("SELECT customer_id FROM orders").fetchall() == [(1,)]
            with pytest.raises(RollbackRefused):
                apm_migrator.rollback("0002")
            assert apm_migrator.rollback("0002", cascade=True) == ["0006", "0004", "0002"]
            assert apm_migrator.applied == {"0001", "0003", "0005"}

        def test_migrate_to_rolls_back_dependents_only(apm_migrator):
            apm_migrator.migrate_to()
            apm_migrator.migrate_to("0003")
            assert apm_migrator.applied == {"0001", "0002", "0003", "0004"}
            assert "products" in apm_migrator.schema().tables
        """
    )

    reprec = pytester.inline_run("--apm-migrations", "migrations", "-k", "test_")

    assert outcomes(reprec) == {
        "test_catalog": "passed",
        "test_orders_keep_their_customers": "passed",
        "test_migrate_to_rolls_back_dependents_only": "passed",
    }


def test_apm_catalog_without_a_catalog_says_how_to_name_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_it="def test_it(apm_catalog):\n    pass\n")

    reprec = pytester.inline_run()

    assert outcomes(reprec) == {"test_it": "failed"}
    assert "pass --apm-migrations DIR" in report_of(reprec, "test_it").longreprtext


# -- cost when not switched on, and the project's own catalog -----------------------------------------


def test_loading_the_plugin_imports_neither_networkx_nor_the_planner() -> None:
    code = (
        "import json, sys\n"
        "import planner.pytest_plugin\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert "planner.pytest_plugin" in loaded
    assert not {"networkx", "sqlite3", "planner.loader", "planner.engines.sqlite.runner",
                "planner.testing.runner"} & loaded


def test_the_plugin_is_registered_as_apm_through_the_pytest11_entry_point() -> None:
    from importlib.metadata import entry_points

    found = [e for e in entry_points(group="pytest11") if e.name == "apm"]
    assert [e.value for e in found] == ["planner.pytest_plugin"]
