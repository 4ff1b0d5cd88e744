"""Each step's locks and findings in a multi-step PostgreSQL preview are its own (issue 25, tryout5 #2, #3, #6).

The default run previews the whole plan in one transaction, so a lock an
earlier step took is still held when a later step needs it again, and a
``transactional = False`` step is rehearsed (or passed over) inside it.
These tests preview a step alone and inside a longer plan and compare what
each step is told: the same locks and findings, and where the plan really
differs (a lock first taken by an earlier step), the step says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_apm, write_migration
from tests.test_pg_locks import large  # noqa: F401 - the fixture: a folder whose apm.toml calls 100 rows large
from tests.test_postgres import query, run_sql

pytestmark = pytest.mark.postgres

TABLES = ("CREATE TABLE p (id INT PRIMARY KEY); INSERT INTO p SELECT generate_series(1, 300);"
          "CREATE TABLE t (id INT, c TEXT, pid INT); INSERT INTO t SELECT g, 'x', g FROM generate_series(1, 300) g;"
          "ANALYZE p; ANALYZE t")


def migration(catalog_dir: Path, version: str, *statements: str, depends_on: tuple[str, ...] = (),
              downgrade: tuple[str, ...] = (), outside: bool = False, allow: str = "") -> None:
    extra = ("transactional = False\n" if outside else "") + (f"allow = [{allow!r}]\n" if allow else "")
    write_migration(catalog_dir, version, f"Step {version}", depends_on=depends_on, extra=extra,
                    upgrade="\n".join(f"conn.execute({s!r})" for s in statements),
                    downgrade="\n".join(f"conn.execute({s!r})" for s in downgrade) or "pass")


def preview(url: str, catalog_dir: Path, *options: str, cwd: Path | None = None) -> tuple[int, dict[str, dict]]:
    """(exit code, each step's JSON by version) of a dry run."""
    result = run_apm("--db", url, "--migrations-dir", str(catalog_dir), "migrate", "--dry-run", "--json", *options,
                     cwd=cwd)
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    return result.returncode, {step["version"]: step for step in report["steps"]}


def locks(step: dict) -> set[tuple[str, str]]:
    return {(lock["relation"], lock["mode"]) for lock in step["locks"]}


def codes(step: dict) -> set[tuple[str, str]]:
    return {(finding["code"], finding["relation"]) for finding in step["findings"]}


def test_a_passed_over_create_index_concurrently_is_not_credited_with_an_earlier_steps_lock(pg_url, catalog_dir):
    """#2: 0002 never ran in the dry run; the SHARE lock 0001's plain index took is 0001's, not 0002's."""
    run_sql(pg_url, TABLES)
    migration(catalog_dir, "0001", "CREATE INDEX t_c ON t (c)", allow="index-not-concurrent")
    migration(catalog_dir, "0002", "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id)", depends_on=("0001",),
              outside=True)
    status, steps = preview(pg_url, catalog_dir)
    assert status == 0, steps
    assert steps["0002"]["findings"] == [] and steps["0002"]["locks"] == [], steps["0002"]
    assert steps["0002"]["passed_over"] and codes(steps["0001"]) == {("index-not-concurrent", "t")}
    # The same after a rewrite of t (ACCESS EXCLUSIVE and SHARE both held when 0002 comes).
    migration(catalog_dir, "0001", "ALTER TABLE t ALTER COLUMN id TYPE BIGINT", allow="table-rewrite")
    status, steps = preview(pg_url, catalog_dir)
    assert status == 0 and steps["0002"]["findings"] == [] and steps["0002"]["locks"] == [], steps["0002"]


@pytest.mark.parametrize("stops", [False, True], ids=["rehearsed", "stopped"])
def test_a_rollback_preview_past_a_step_outside_a_transaction_keeps_each_steps_locks_its_own(pg_url, catalog_dir,
                                                                                           stops):
    """#6: the rollback of a ``CREATE INDEX CONCURRENTLY`` step (``DROP INDEX CONCURRENTLY``, rehearsed as a plain
    ``DROP INDEX``: it stopped the preview there, so such a rollback never dry-ran clean, exit 7); the steps after
    it keep what they locked, rewrote and found (they were shifted by one). A statement that still stops the
    preview (``DROP TABLESPACE``) leaves its step "not previewed beyond" it, and the steps after it theirs."""
    run_sql(pg_url, TABLES)
    migration(catalog_dir, "0001")
    migration(catalog_dir, "0002", "ALTER TABLE p ADD COLUMN note TEXT", depends_on=("0001",),
              downgrade=("ALTER TABLE p DROP COLUMN note",))
    migration(catalog_dir, "0003", "ALTER TABLE t ADD COLUMN big INT", depends_on=("0002",),
              downgrade=("ALTER TABLE t ALTER COLUMN id TYPE BIGINT", "ALTER TABLE t DROP COLUMN big"))
    migration(catalog_dir, "0004", "CREATE INDEX CONCURRENTLY t_pid ON t (pid)", depends_on=("0001",),
              outside=True, downgrade=("DROP INDEX CONCURRENTLY t_pid",) + (
                  ("DROP TABLESPACE IF EXISTS apm_nowhere",) if stops else ()))
    applied = run_apm("--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate", "--yes")
    assert applied.returncode == 0, applied.stderr
    status, steps = preview(pg_url, catalog_dir, "--to", "0001")
    assert list(steps) == ["0004", "0003", "0002"]
    assert steps["0004"]["locks"] == [] and steps["0004"]["findings"] == []  # CONCURRENTLY: no lock to report
    if stops:
        assert "not previewed beyond `DROP TABLESPACE" in (steps["0004"]["skipped"] or ""), steps["0004"]
    else:
        assert steps["0004"]["skipped"] is None and status == 12, steps["0004"]  # 0003's rewrite gates; not 7
        assert [c["kind"] for c in steps["0004"]["changes"]] == ["index"], steps["0004"]["changes"]
    assert ("t", "ACCESS EXCLUSIVE") in locks(steps["0003"]) and "t" in steps["0003"]["rewrites"]
    assert ("table-rewrite", "t") in codes(steps["0003"]), steps["0003"]
    assert locks(steps["0002"]) == {("p", "ACCESS EXCLUSIVE")} and steps["0002"]["rewrites"] == []
    assert ("table-rewrite", "t") not in codes(steps["0002"]), steps["0002"]
    # The same as 0003's rollback previewed alone.
    _, alone = preview(pg_url, catalog_dir, "--rollback", "0003")
    assert codes(alone["0003"]) == codes(steps["0003"]) and locks(alone["0003"]) == locks(steps["0003"])


def test_each_step_keeps_its_locks_and_findings_in_a_longer_plan(pg_url, catalog_dir, large):
    """#3: a later step needing a lock an earlier step of the one transaction holds lists it (held since that
    step) and keeps its findings: the rewrite's ACCESS EXCLUSIVE, the backfill's ``access-exclusive-held``."""
    run_sql(pg_url, TABLES)
    plan = {
        "0001": ("ALTER TABLE t ADD CONSTRAINT t_positive CHECK (id > 0) NOT VALID",),
        "0002": ("ALTER TABLE t ALTER COLUMN id TYPE BIGINT",),
        "0003": ("ALTER TABLE t ADD COLUMN d INT", "UPDATE t SET d = 1"),
        "0004": ("ALTER TABLE t RENAME COLUMN c TO label",),
    }
    alone: dict[str, dict] = {}
    for version in plan:  # each previewed alone, on the schema the earlier ones leave
        for old in catalog_dir.glob("migration_*.py"):
            old.unlink()
        migration(catalog_dir, version, *plan[version])
        alone[version] = preview(pg_url, catalog_dir, "--allow", "table-rewrite", cwd=large)[1][version]
        run_sql(pg_url, "; ".join(plan[version]))
    run_sql(pg_url, "DROP TABLE t; DROP TABLE p;" + TABLES)
    for old in catalog_dir.glob("migration_*.py"):
        old.unlink()
    previous: tuple[str, ...] = ()
    for version, statements in plan.items():
        migration(catalog_dir, version, *statements, depends_on=previous)
        previous = (version,)
    _, steps = preview(pg_url, catalog_dir, "--allow", "table-rewrite", cwd=large)

    for version in plan:
        assert locks(steps[version]) == locks(alone[version]) == {("t", "ACCESS EXCLUSIVE")}, (version, steps[version])
        real = {("access-exclusive-held", "t")} if version == "0001" else set()  # held across later migrations
        assert codes(steps[version]) == codes(alone[version]) | real, (version, steps[version]["findings"])
        held = [lock["held_since"] for lock in steps[version]["locks"]]
        assert held == ([None] if version == "0001" else ["0001"]), (version, held)  # said explicitly
        assert [lock["held_since"] for lock in alone[version]["locks"]] == [None]
    assert ("table-rewrite", "t") in codes(steps["0002"]) and steps["0002"]["rewrites"][-1:] == ["t"]
    assert ("access-exclusive-held", "t") in codes(steps["0003"])
    backfill = next(f for f in steps["0003"]["findings"] if f["code"] == "access-exclusive-held")
    assert "(taken by 0001)" in backfill["text"] and "UPDATE t SET d = 1" in backfill["text"]
    # 0001's lock is held across the later migrations too: its finding says so (alone it has none).
    first = next(f for f in steps["0001"]["findings"] if f["code"] == "access-exclusive-held")
    # 0004's RENAME COLUMN is instant (it reads and writes no row): not work under the lock.
    assert "later migrations of the same run (0002, 0003), which is one transaction" in first["text"], first["text"]
    assert "apm migrate --target VERSION" in first["advice"]


def test_a_preview_that_held_access_exclusive_longer_than_the_lock_timeout_says_so(pg_url, catalog_dir):
    """#1: a dry run or check takes the run's locks and holds them until it rolls back; the lock timeout bounds
    only the wait for a lock. Held on a table with rows longer than that, the output says so, with the advice."""
    run_sql(pg_url, TABLES)
    migration(catalog_dir, "0001", "ALTER TABLE t ADD COLUMN d INT", "SELECT pg_sleep(0.6)")
    result = run_apm("--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate", "--dry-run", "--json",
                     "--lock-timeout", "200ms")
    report = json.loads(result.stdout)
    [held] = report["held_exclusive"]
    assert (held["relation"], held["rows"], held["taken_by"]) == ("t", 300, "0001") and held["held_ms"] >= 600
    assert held["text"] in report["lines"] and "preview a restored copy instead" in held["text"]
    assert "longer than the lock timeout (200ms)" in held["text"]
    # Under the lock timeout (the default 2s here): nothing to say.
    assert json.loads(run_apm("--db", pg_url, "--migrations-dir", str(catalog_dir), "migrate", "--dry-run",
                              "--json").stdout)["held_exclusive"] == []
    checked = run_apm("migrate", "check", "--db", pg_url, "--migrations-dir", str(catalog_dir), "--lock-timeout",
                      "200ms")
    assert "this preview held ACCESS EXCLUSIVE on t (~300 rows)" in checked.stdout, checked.stdout + checked.stderr


def test_validate_in_the_migration_that_added_the_constraint_scans_under_its_lock(pg_url, catalog_dir):
    """#4's neighbour: NOT VALID and VALIDATE in one migration (one transaction) is the unsafe scan again."""
    run_sql(pg_url, TABLES)
    migration(catalog_dir, "0001", "ALTER TABLE t ADD CONSTRAINT t_positive CHECK (id > 0) NOT VALID",
              "ALTER TABLE t VALIDATE CONSTRAINT t_positive")
    status, steps = preview(pg_url, catalog_dir)
    [finding] = [f for f in steps["0001"]["findings"] if f["code"] == "validate-same-run"]
    assert "ACCESS EXCLUSIVE taken by 0001 (this migration) earlier in the same run" in finding["text"], finding
    assert finding["level"] == "error" and status == 12
    assert "VALIDATE in a later migration" in finding["advice"]


def test_a_rewrite_names_the_size_the_table_had_before_it(pg_url, catalog_dir):
    """tryout5: a rewrite's lock and finding named the size of the table it had just rewritten (int to bigint
    grows it), not the size it had when the step locked it (docs/locks.md)."""
    run_sql(pg_url, "CREATE TABLE w (id INT, n INT); INSERT INTO w SELECT g, g FROM generate_series(1, 20000) g;"
                    "ANALYZE w")
    size = query(pg_url, "SELECT pg_relation_size('w')")[0][0]
    migration(catalog_dir, "0001", "ALTER TABLE w ALTER COLUMN n TYPE BIGINT", allow="table-rewrite")
    _, steps = preview(pg_url, catalog_dir)
    [lock] = steps["0001"]["locks"]
    [finding] = [f for f in steps["0001"]["findings"] if f["code"] == "table-rewrite"]
    assert lock["bytes"] == size and f"~20000 rows, {size} bytes" in finding["text"], (size, lock, finding)
