"""``apm migrate squash FROM TO`` and the loader's ``replaces``, on a branched catalog.

0001 → 0002 → 0004 ← 0003 ← 0001 (two branches and a merge), 0004 → 0005 (rows), 0004 → 0006 → 0007.
Squashing 0002..0006 replaces 0002, 0004, 0006 (0003 is not between them: it needs nothing from 0002).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import networkx as nx
import pytest

from planner.loader import load_catalog
from tests.conftest import write_migration
from tests.test_command_edge_cases import APM, apm, base, ledger

pytestmark = pytest.mark.skipif(not APM.exists(), reason="the apm console script is not installed (pip install -e .)")


def creates(sql: str, drop: str) -> dict:
    return dict(upgrade=f"conn.execute({sql!r})", downgrade=f"conn.execute({drop!r})")


@pytest.fixture
def shop(catalog_dir: Path) -> Path:
    write_migration(catalog_dir, "0001", "Projects", depends_on=(),
                    **creates("CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT)", "DROP TABLE projects"))
    write_migration(catalog_dir, "0002", "Tasks", depends_on=("0001",),
                    **creates("CREATE TABLE tasks (id INTEGER PRIMARY KEY, project_id INTEGER REFERENCES projects(id))",
                              "DROP TABLE tasks"))
    write_migration(catalog_dir, "0003", "Tags", depends_on=("0001",),
                    **creates("CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT)", "DROP TABLE tags"))
    write_migration(catalog_dir, "0004", "Task tags", depends_on=("0002", "0003"),
                    upgrade="conn.execute('CREATE TABLE task_tags (task_id INTEGER, tag_id INTEGER)')\n"
                            "conn.execute('CREATE INDEX task_tags_by_tag ON task_tags(tag_id)')",
                    downgrade="conn.execute('DROP TABLE task_tags')")
    write_migration(catalog_dir, "0005", "Seed tags", depends_on=("0004",),
                    **creates("INSERT INTO tags (name) VALUES ('urgent')", "DELETE FROM tags"))
    write_migration(catalog_dir, "0006", "Tagged view", depends_on=("0004",),
                    **creates("CREATE VIEW tagged AS SELECT * FROM task_tags", "DROP VIEW tagged"))
    write_migration(catalog_dir, "0007", "Audit", depends_on=("0006",),
                    **creates("CREATE TABLE audit (id INTEGER PRIMARY KEY)", "DROP TABLE audit"))
    return catalog_dir


def schema(db: Path) -> set[tuple[str, str, str]]:
    conn = sqlite3.connect(db)
    try:
        return set(conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                                "AND tbl_name NOT LIKE 'schema_migrations%'"))
    finally:
        conn.close()


def test_squash_replaces_the_range_the_graph_gives(shop: Path, tmp_path: Path):
    graph = nx.DiGraph((d, m.version) for m in load_catalog(shop) for d in m.depends_on)
    expected = sorted(({"0002"} | nx.descendants(graph, "0002")) & ({"0006"} | nx.ancestors(graph, "0006")))
    result = apm("migrate", "squash", "0002", "0006", "--json", *base(tmp_path / "unused.db", shop))
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert written["replaces"] == expected == ["0002", "0004", "0006"]
    assert written["depends_on"] == ["0001", "0003"] and written["version"] == "0008"
    assert [(o["type"], o["name"]) for o in written["objects"]] == [
        ("table", "tasks"), ("table", "task_tags"), ("index", "task_tags_by_tag"), ("view", "tagged")]
    catalog = load_catalog(shop)
    assert set(catalog.replaced) == {"0002", "0004", "0006"}
    # Dependents of the replaced migrations depend on the squash; the replaced leave the graph.
    assert catalog.get("0005").depends_on == ("0008",) and catalog.get("0007").depends_on == ("0008",)
    assert "0002" not in catalog.graph
    # Squashing again from a replaced migration names the squash that replaces it, not "not in the catalog".
    again = apm("migrate", "squash", "0002", "0007", *base(tmp_path / "unused.db", shop))
    assert again.returncode == 4 and "squash 0008 replaces it" in again.stderr, again.stderr


def test_fresh_full_and_partial_databases(shop: Path, tmp_path: Path):
    chain, partial, fresh = tmp_path / "chain.db", tmp_path / "partial.db", tmp_path / "fresh.db"
    assert apm("migrate", *base(chain, shop)).returncode == 0
    assert apm("migrate", "--target", "0002", *base(partial, shop)).returncode == 0
    assert apm("migrate", "squash", "0002", "0006", "--schema-only", *base(chain, shop)).returncode == 0
    # All replaced applied: the squash counts as applied, nothing to do.
    assert apm("migrate", *base(chain, shop)).stdout.strip() == "Nothing to apply"
    shown = apm("migrate", "--show-applied", "--json", *base(chain, shop))
    assert {e["version"]: e["file"] for e in json.loads(shown.stdout)}["0004"] == "replaced"
    # Fresh: the squash alone, never the replaced chain, and the same schema as the chain built.
    applied = apm("migrate", *base(fresh, shop))
    assert applied.returncode == 0, applied.stderr
    assert [line.split()[1] for line in applied.stdout.splitlines()] == ["0001", "0003", "0008", "0005", "0007"]
    assert schema(fresh) == schema(chain)
    # Some applied: refused with advice, nothing changed.
    refused = apm("migrate", *base(partial, shop))
    assert refused.returncode == 4
    assert "only 0002 of them are applied" in refused.stderr and "--target 0006" in refused.stderr
    assert ledger(partial) == ["0001", "0002"]
    # Rolling the squash back on the database that applied the chain removes the chain's rows.
    back = apm("migrate", "--to", "0003", "--yes", *base(chain, shop))
    assert back.returncode == 0, back.stderr
    assert ledger(chain) == ["0001", "0003"]
    assert {name for _, name, _ in schema(chain)} == {"projects", "tags"}


def test_squash_refuses_a_range_the_database_applied_in_part(shop: Path, tmp_path: Path):
    partial = tmp_path / "partial.db"
    assert apm("migrate", "--target", "0002", *base(partial, shop)).returncode == 0
    refused = apm("migrate", "squash", "0002", "0006", *base(partial, shop))
    assert refused.returncode == 4 and "applied 0002 but not 0004, 0006" in refused.stderr
    assert not list(shop.glob("migration_0008*")) and ledger(partial) == ["0001", "0002"]
    missing = apm("migrate", "squash", "0002", "0006", "--json", *base(tmp_path / "none.db", shop))
    assert missing.returncode == 0 and not (tmp_path / "none.db").exists()


def test_squash_refuses_data_migrations_and_bad_ranges(shop: Path, tmp_path: Path):
    db = tmp_path / "unused.db"
    data = apm("migrate", "squash", "0003", "0005", *base(db, shop))
    assert data.returncode == 4 and "0005 change(s) rows" in data.stderr and "--schema-only" in data.stderr
    assert not list(shop.glob("migration_0008*"))
    unrelated = apm("migrate", "squash", "0002", "0003", *base(db, shop))
    assert unrelated.returncode == 4 and "does not depend on 0002" in unrelated.stderr
    assert apm("migrate", "squash", "", "0003", *base(db, shop)).returncode == 2
    kept = apm("migrate", "squash", "0003", "0005", "--schema-only", "--json", *base(db, shop))
    assert kept.returncode == 0 and json.loads(kept.stdout)["data_dropped"] == ["0005"]


def test_squash_refuses_a_range_that_alters_what_it_did_not_create(catalog_dir: Path, tmp_path: Path):
    write_migration(catalog_dir, "0001", depends_on=(), **creates("CREATE TABLE a (id INTEGER)", "DROP TABLE a"))
    write_migration(catalog_dir, "0002", depends_on=("0001",),
                    **creates("ALTER TABLE a ADD COLUMN b TEXT", "ALTER TABLE a DROP COLUMN b"))
    write_migration(catalog_dir, "0003", depends_on=("0002",), **creates("CREATE TABLE c (id INTEGER)", "DROP TABLE c"))
    refused = apm("migrate", "squash", "0002", "0003", *base(tmp_path / "x.db", catalog_dir))
    assert refused.returncode == 4 and "table a" in refused.stderr
    shutil.rmtree(catalog_dir / "__pycache__", ignore_errors=True)
    assert sorted(p.name for p in catalog_dir.iterdir()) == ["migration_0001.py", "migration_0002.py",
                                                             "migration_0003.py"]
