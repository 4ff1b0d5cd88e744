"""A lock an earlier step of the plan holds is a later statement's only on a relation it names, by oid (tests/pg_server.py).

The server shows no new lock when a later step takes one the transaction holds, so the preview lists it for a
statement that names the relation. Matched by spelling, a column named like the table, or a table of the same name
in another schema, pinned the earlier step's lock (and, with work under it, an ``access-exclusive-held``) on the
wrong step.
"""

from __future__ import annotations

import pytest

from tests.test_pg_locks import dry_run, large, migration  # noqa: F401 (large: a fixture)
from tests.test_postgres import run_sql

pytestmark = pytest.mark.postgres


def test_a_column_or_another_schemas_table_named_like_a_locked_table_is_not_that_table(pg_url, catalog_dir, large):
    run_sql(pg_url, "CREATE TABLE orders (id INT); INSERT INTO orders SELECT generate_series(1, 200);"
                    "CREATE TABLE customers (id INT); INSERT INTO customers SELECT generate_series(1, 200);"
                    "CREATE SCHEMA archive; CREATE TABLE archive.orders (id INT); ANALYZE")
    migration(catalog_dir, "0001", "ALTER TABLE orders ADD COLUMN note TEXT")
    migration(catalog_dir, "0002", "ALTER TABLE customers ADD COLUMN orders INT", "UPDATE customers SET orders = 1",
              depends_on=("0001",))
    migration(catalog_dir, "0003", "ALTER TABLE archive.orders ADD COLUMN note TEXT", depends_on=("0002",))
    migration(catalog_dir, "0004", "UPDATE customers SET orders = 2", "ALTER TABLE orders ADD COLUMN total INT",
              "UPDATE orders SET total = 1", depends_on=("0003",))
    _, report, _ = dry_run(pg_url, catalog_dir, cwd=large)
    steps = {step["version"]: step for step in report["steps"]}
    assert [(lock["relation"], lock["held_since"]) for lock in steps["0002"]["locks"]] == [("customers", None)]
    assert [(lock["relation"], lock["held_since"]) for lock in steps["0003"]["locks"]] == [("archive.orders", None)]
    # The step that names orders again lists 0001's lock, and is judged with it; its own UPDATE's lock is its own.
    assert {(lock["relation"], lock["mode"], lock["held_since"]) for lock in steps["0004"]["locks"]} == \
        {("orders", "ACCESS EXCLUSIVE", "0001"), ("customers", "ROW EXCLUSIVE", None)}, steps["0004"]["locks"]
    held = {(version, f["relation"]) for version, step in steps.items() for f in step["findings"]
            if f["code"] == "access-exclusive-held"}
    assert held == {("0001", "orders"), ("0002", "customers"), ("0004", "orders")}, report["steps"]
