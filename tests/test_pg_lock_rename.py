"""The ``rename`` finding: a table, column, view or index that existed before the plan renamed (tests/pg_server.py).

The statement is instant; what breaks is the running application, whose
queries name the old name. What the plan itself created (a table, a column,
renamed later in the plan) is never a finding.
"""

from __future__ import annotations

import pytest

from tests.test_pg_locks import dry_run, migration
from tests.test_postgres import query, run_sql

pytestmark = pytest.mark.postgres

SCHEMA = ("CREATE TABLE t (id INT, c TEXT); CREATE INDEX t_c ON t (c); CREATE VIEW v AS SELECT id FROM t;"
          "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 20) g")


def renames(report: dict) -> dict[str, list[tuple[str, str]]]:
    return {step["version"]: [(f["relation"], f["text"].split(":")[0]) for f in step["findings"]
                              if f["code"] == "rename"] for step in report["steps"]}


def test_renaming_what_existed_is_a_warning_and_what_the_plan_made_is_not(pg_url, catalog_dir, tmp_path):
    run_sql(pg_url, SCHEMA)
    migration(catalog_dir, "0001", "ALTER TABLE t RENAME COLUMN c TO label", "ALTER TABLE t RENAME TO orders",
              "ALTER VIEW v RENAME TO v2", "ALTER INDEX t_c RENAME TO orders_label",
              "CREATE TABLE n (a INT)", "ALTER TABLE n RENAME COLUMN a TO b", "ALTER TABLE orders ADD COLUMN q INT")
    migration(catalog_dir, "0002", "ALTER TABLE n RENAME TO n2", "ALTER TABLE orders RENAME COLUMN q TO q2",
              "ALTER TABLE orders RENAME COLUMN id TO ident", depends_on=("0001",))
    status, report, _ = dry_run(pg_url, catalog_dir)
    assert status == 0, report  # a warning: it does not gate by default
    assert renames(report) == {
        "0001": [("t", "renames table t to orders"), ("t_c", "renames index t_c to orders_label"),
                 ("v", "renames view v to v2"), ("orders", "renames column orders.c to label")],
        "0002": [("orders", "renames column orders.id to ident")],
    }, report["steps"]
    finding = report["steps"][0]["findings"][0]
    assert finding["level"] == "warning" and "a view under the old name" in finding["advice"], finding
    # The column added to the table renamed in the same step is told as added (it was left out before).
    assert {"kind": "column", "action": "added", "name": "q", "table": "orders"}.items() <= \
        next(c for c in report["steps"][0]["changes"] if c["name"] == "q").items(), report["steps"][0]["changes"]


def test_rename_gates_when_the_config_says_so_and_a_migration_accepts_it(pg_url, catalog_dir, tmp_path):
    run_sql(pg_url, SCHEMA)
    migration(catalog_dir, "0001", "ALTER TABLE t RENAME TO orders")
    (tmp_path / "apm.toml").write_text('lock_levels = { rename = "error" }\n')
    assert dry_run(pg_url, catalog_dir, cwd=tmp_path)[0] == 12
    path = catalog_dir / "migration_0001.py"
    path.write_text(path.read_text() + '\nallow = ["rename"]\n')
    status, report, _ = dry_run(pg_url, catalog_dir, cwd=tmp_path)
    assert status == 0 and report["steps"][0]["findings"][0]["accepted"] == "migration"
    assert query(pg_url, "SELECT to_regclass('orders')") == [(None,)]
