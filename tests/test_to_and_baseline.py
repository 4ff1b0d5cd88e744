"""``--to V`` (any state, both directions) and ``--baseline V``, on a branched catalog.

Every expected ``--to`` plan is computed here from the graph with networkx
(ancestors, descendants, topological sorts), never from the planner, and
compared with what the installed ``apm`` prints; the hypothesis test does
the same for the library function over many ledgers.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.engines.sqlite.ledger import Ledger
from planner.loader import load_catalog
from planner.plan import to_plan
from tests.conftest import write_migration
from tests.test_command_edge_cases import APM, apm, base, ledger, tables

pytestmark = pytest.mark.skipif(not APM.exists(), reason="the apm console script is not installed (pip install -e .)")

#: Two branches and a merge (0002, 0003 → 0004 → 0005), a side branch (0008 on 0003), an unrelated line
#: (0006 → 0007) and a dependency on a higher number (0009 needs 0010), so orders come from networkx.
DEPENDENCIES = {
    "0001": (), "0002": ("0001",), "0003": ("0001",), "0004": ("0002", "0003"), "0005": ("0004",),
    "0006": (), "0007": ("0006",), "0008": ("0003",), "0009": ("0010",), "0010": (),
}


def write_branched(directory: Path) -> Path:
    for version, needs in DEPENDENCIES.items():
        write_migration(directory, version, f"Table t{version}", depends_on=needs,
                        upgrade=f"conn.execute('CREATE TABLE t{version} (id INTEGER PRIMARY KEY)')",
                        downgrade=f"conn.execute('DROP TABLE t{version}')")
    return directory


def graph() -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(DEPENDENCIES)
    g.add_edges_from((d, v) for v, needs in DEPENDENCIES.items() for d in needs)
    return g


def expected_plan(applied: set[str], target: str) -> list[tuple[str, str]]:
    """The reference: applied descendants of V, dependents first (highest first among equals), then V's
    pending ancestors and V, lowest first among equals. ``base``: every applied migration rolled back."""
    g = graph()
    if target == "base":
        back = set(applied)
        forward: set[str] = set()
    else:
        back = nx.descendants(g, target) & applied
        forward = (nx.ancestors(g, target) | {target}) - applied
    back_order = list(nx.lexicographical_topological_sort(g.subgraph(back).reverse(), key=lambda v: -int(v)))
    forward_order = list(nx.lexicographical_topological_sort(g.subgraph(forward), key=int))
    return [(v, "rollback") for v in back_order] + [(v, "apply") for v in forward_order]


def closed(applied: set[str]) -> set[str]:
    """A consistent ledger: everything an applied migration needs is applied."""
    g = graph()
    return set().union(*({v} | nx.ancestors(g, v) for v in applied)) if applied else set()


def record(db: Path, versions: set[str], catalog) -> None:
    """Write ledger rows directly: ``plan`` reads only the ledger."""
    conn = sqlite3.connect(db, isolation_level=None)
    ledger_ = Ledger(conn)
    ledger_.ensure_schema()
    conn.execute("DELETE FROM schema_migrations")
    for version in versions:
        ledger_.record_applied(catalog.get(version), None)
    conn.close()


@pytest.fixture
def branched(catalog_dir: Path) -> Path:
    return write_branched(catalog_dir)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


@pytest.fixture(scope="module")
def branched_catalog(tmp_path_factory):
    """Loaded once: the hypothesis test plans against it hundreds of times."""
    return load_catalog(write_branched(tmp_path_factory.mktemp("branched")))


LEDGERS = [{"0005", "0008", "0007"}, {"0002", "0009"}]
TARGETS = ["0001", "0003", "0008", "0010", "base"]


def test_plan_to_matches_the_graph_for_several_targets_and_ledgers(branched: Path, tmp_path: Path):
    catalog = load_catalog(branched)
    db = tmp_path / "plan.db"
    for wanted in LEDGERS:
        applied = closed(wanted)
        record(db, applied, catalog)
        for target in TARGETS:
            result = apm("migrate", "plan", "--to", target, "--json", *base(db, branched))
            assert result.returncode == 0, result.stderr
            shown = json.loads(result.stdout)
            assert shown["direction"] == "mixed"
            assert [(s["version"], s["direction"]) for s in shown["steps"]] == expected_plan(applied, target), \
                (sorted(applied), target)
            if target != "base":  # migrations neither before nor after V are left alone
                g = graph()
                unrelated = set(DEPENDENCIES) - nx.ancestors(g, target) - nx.descendants(g, target) - {target}
                assert not unrelated & {s["version"] for s in shown["steps"]}


@settings(max_examples=200, deadline=None)
@given(wanted=st.sets(st.sampled_from(sorted(DEPENDENCIES))), target=st.sampled_from([*DEPENDENCIES, "base"]))
def test_to_plan_matches_the_graph_for_any_ledger(branched_catalog, wanted: set[str], target: str):
    applied = closed(wanted)
    plan = to_plan(branched_catalog, applied, target)
    assert [(s.version, s.direction) for s in plan.steps] == expected_plan(applied, target)


def test_migrate_to_moves_both_ways_and_leaves_unrelated_lines_alone(branched: Path, db: Path):
    assert apm("migrate", *base(db, branched)).returncode == 0
    moved = apm("migrate", "--to", "0003", "--yes", *base(db, branched))
    assert moved.returncode == 0, moved.stderr
    # 0003's dependents (0008, 0005, 0004) rolled back, dependents first; 0002 and the unrelated lines stay.
    assert [line.split()[2] for line in moved.stdout.splitlines() if line.startswith("Rolled back")] == \
        ["0008", "0005", "0004"]
    assert "Backup written to" in moved.stdout
    assert ledger(db) == ["0001", "0002", "0003", "0006", "0007", "0009", "0010"]
    assert {"t0004", "t0005", "t0008"}.isdisjoint(tables(db))
    forward = apm("migrate", "--to", "0005", "--json", *base(db, branched))
    assert forward.returncode == 0, forward.stderr
    shown = json.loads(forward.stdout)
    assert shown["backup"] is None  # nothing rolled back, no backup
    assert [(r["version"], r["status"]) for r in shown["results"]] == [("0004", "applied"), ("0005", "applied")]
    to_base = apm("migrate", "--to", "base", "--yes", *base(db, branched))
    assert to_base.returncode == 0, to_base.stderr
    assert ledger(db) == []
    assert not {t for t in tables(db) if t.startswith("t0")}


def test_migrate_to_takes_the_same_precautions_as_rollback(branched: Path, db: Path, catalog_dir: Path):
    assert apm("migrate", *base(db, branched)).returncode == 0
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO t0005 (id) VALUES (1)")
    conn.commit()
    conn.close()
    refused = apm("migrate", "--to", "0002", *base(db, branched))  # would drop a table holding a row
    assert refused.returncode == 7 and "destroys data" in refused.stderr
    assert "0005" in ledger(db)
    dry = apm("migrate", "--to", "0002", "--dry-run", *base(db, branched))
    assert dry.returncode == 7 and "0005 rollback: drops table t0005" in dry.stdout  # a dry run that destroys data
    write_migration(catalog_dir, "0005", "Table t0005", depends_on=("0004",),
                    upgrade="conn.execute('CREATE TABLE t0005 (id INTEGER PRIMARY KEY)')", downgrade=None)
    irreversible = apm("migrate", "--to", "0001", "--yes", *base(db, branched))
    assert irreversible.returncode == 4 and "0005" in irreversible.stderr and "define no downgrade" in irreversible.stderr
    assert ledger(db) == sorted(DEPENDENCIES)
    for bad in ("", "  ", "abc"):
        usage = apm("migrate", "--to", bad, *base(db, branched))
        assert usage.returncode == 2 and "--to" in usage.stderr
    assert apm("migrate", "--to", "0042", *base(db, branched)).returncode == 4
    assert ledger(db) == sorted(DEPENDENCIES)


def test_plan_to_table_shows_each_direction(branched: Path, db: Path):
    assert apm("migrate", "--target", "0005", *base(db, branched)).returncode == 0
    assert apm("migrate", "--target", "0008", *base(db, branched)).returncode == 0
    back = apm("migrate", "plan", "--to", "0003", *base(db, branched))
    assert back.returncode == 0, back.stderr
    lines = back.stdout.splitlines()
    assert lines[0] == "Plan to 0003: 3 step(s), 3 rollback(s) then 0 apply(ies)"
    assert [line.split()[1:3] for line in lines[3:]] == [["rollback", "0008"], ["rollback", "0005"],
                                                          ["rollback", "0004"]]
    forward = apm("migrate", "plan", "--to", "0007", *base(db, branched))
    assert [line.split()[1:3] for line in forward.stdout.splitlines()[3:]] == [["apply", "0006"], ["apply", "0007"]]
    here = apm("migrate", "plan", "--to", "0005", *base(db, branched))
    assert here.stdout.strip() == "Nothing to do: already at 0005"


# -- baseline ---------------------------------------------------------------------------------


def test_baseline_records_the_target_and_its_ancestors_in_one_go(branched: Path, db: Path):
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE legacy (id INTEGER PRIMARY KEY)")  # a schema made by another tool
    conn.close()
    result = apm("migrate", "--baseline", "0004", "--json", *base(db, branched))
    assert result.returncode == 0, result.stderr
    assert [m["version"] for m in json.loads(result.stdout)["recorded"]] == ["0001", "0002", "0003", "0004"]
    assert ledger(db) == ["0001", "0002", "0003", "0004"]
    assert not {t for t in tables(db) if t.startswith("t0")}  # nothing was run
    conn = sqlite3.connect(db)
    actions = conn.execute("SELECT version, action, outcome FROM schema_migrations_log ORDER BY id").fetchall()
    conn.close()
    assert actions == [(v, "baseline", "ok") for v in ("0001", "0002", "0003", "0004")]
    # What is left applies on top.
    rest = apm("migrate", "--target", "0005", *base(db, branched))
    assert rest.returncode == 0 and ledger(db)[-1] == "0005"


def test_baseline_is_refused_when_the_ledger_holds_any_of_them(branched: Path, db: Path):
    assert apm("migrate", "--target", "0003", *base(db, branched)).returncode == 0
    refused = apm("migrate", "--baseline", "0005", *base(db, branched))
    assert refused.returncode == 4
    assert "already records 0001, 0003" in refused.stderr and "nothing was recorded" in refused.stderr
    assert ledger(db) == ["0001", "0003"]
    assert apm("migrate", "--baseline", "", *base(db, branched)).returncode == 2
    missing = apm("migrate", "--baseline", "0001", *base(db.with_name("none.db"), branched))
    assert missing.returncode == 6 and not db.with_name("none.db").exists()
