"""An APM database written by the old framework, picked up by `apm` as it is.

The old framework recorded versions in a three-column `schema_migrations`
and applied in number order. A database it left at 0020 (agents without
metadata, the state that broke 0029) must upgrade in place: the ledger gains
its new columns with every row kept, and `apm migrate` applies 0027 before
0029.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from cli.main import apm
from cli.options import shipped_catalog
from planner.loader import load_catalog


def old_framework_database(path: Path) -> None:
    catalog = load_catalog(shipped_catalog())
    conn = sqlite3.connect(path, isolation_level=None)
    for version in ("0001", "0020"):
        catalog.get(version).upgrade(conn)
    conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, description TEXT, applied_at TIMESTAMP)")
    conn.execute("INSERT INTO schema_migrations VALUES ('0001', 'Initial schema', '2025-06-02 10:00:00')")
    conn.execute("INSERT INTO schema_migrations VALUES ('20', 'Fix agents.tier', '2025-10-09 10:00:00')")
    conn.execute("INSERT INTO projects (name) VALUES ('apm')")
    conn.execute("INSERT INTO agents (project_id, role, display_name, tier) VALUES (1, 'planner', 'Planner', 1)")
    conn.close()


def test_old_framework_database_upgrades_in_place(tmp_path: Path) -> None:
    db = tmp_path / "aipm.db"
    old_framework_database(db)
    runner = CliRunner()

    listed = json.loads(runner.invoke(apm, ["--db", str(db), "migrate", "--list", "--json"]).output)
    assert [m["version"] for m in listed] == ["0027", "0029", "0030"]

    result = runner.invoke(apm, ["--db", str(db), "migrate"])
    assert result.exit_code == 0, result.output
    assert result.output.index("Applied 0027") < result.output.index("Applied 0029")

    conn = sqlite3.connect(db)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(schema_migrations)")]
    assert columns == ["version", "description", "applied_at", "checksum", "execution_ms"]
    rows = conn.execute("SELECT version, applied_at, checksum FROM schema_migrations ORDER BY applied_at").fetchall()
    assert rows[0] == ("0001", "2025-06-02 10:00:00", None) and rows[1] == ("20", "2025-10-09 10:00:00", None)
    assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == ("20",)  # the old query still runs
    assert conn.execute("SELECT role, metadata FROM agents WHERE role = 'planner'").fetchone() == ("planner", "{}")
    assert conn.execute("SELECT COUNT(*) FROM agents").fetchone() == (6,)
    conn.close()

    shown = {r["version"]: r["file"] for r in json.loads(
        runner.invoke(apm, ["--db", str(db), "migrate", "--show-applied", "--json"]).output)}
    assert shown == {"0001": "unknown", "20": "unknown", "0027": "ok", "0029": "ok", "0030": "ok"}
    # The old row '20' still names 0020: rolling it back takes its dependents with it.
    plan = json.loads(runner.invoke(apm, ["--db", str(db), "migrate", "plan", "--rollback", "0020", "--cascade",
                                          "--json"]).output)
    assert [s["version"] for s in plan["steps"]] == ["0029", "0027", "0020"]
