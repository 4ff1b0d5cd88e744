"""Commands that only read the ledger on PostgreSQL: one connection and one statement each.

Each connection forks a backend on the server, and each statement is a round
trip; a read-only command needs neither twice (docs/performance.md). Counted
in this process by wrapping ``psycopg.connect`` with a cursor that records
what it sends, so the figures are the command's own, not the server's guess.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import run_apm

pytestmark = pytest.mark.postgres

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "postgres"


@pytest.fixture
def counted(monkeypatch) -> dict[str, list]:
    """Every connection ``psycopg.connect`` opens from now on, and every statement sent through it."""
    import psycopg

    seen: dict[str, list] = {"connections": [], "statements": []}

    class CountingCursor(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            seen["statements"].append(str(query))
            return super().execute(query, params, **kwargs)

    real = psycopg.connect

    def connect(*args, **kwargs):
        seen["connections"].append(args)
        return real(*args, cursor_factory=CountingCursor, **kwargs)

    monkeypatch.setattr(psycopg, "connect", connect)
    return seen


@pytest.mark.parametrize("args, expected, asked", [
    (["migrate", "plan"], "Nothing to apply", ["schema_migrations"]),
    (["migrate", "--show-applied"], "0006", ["schema_migrations"]),
    (["migrate", "--list"], "No pending migrations", ["schema_migrations"]),
    (["status"], "Applied:         6", ["schema_migrations", "agents"]),  # status counts APM's agents too
])
def test_a_reading_command_opens_one_connection_and_asks_each_table_once(pg_url, tmp_path, monkeypatch, counted,
                                                                          args, expected, asked):
    done = run_apm("--db", pg_url, "--migrations-dir", str(EXAMPLE), "migrate", "--yes")
    assert done.returncode == 0, done.stderr
    monkeypatch.chdir(tmp_path)  # no apm.toml of this checkout's

    from cli.main import apm

    result = CliRunner().invoke(apm, ["--db", pg_url, "--migrations-dir", str(EXAMPLE), *args])
    assert result.exit_code == 0, result.output
    assert expected in result.output
    assert len(counted["connections"]) == 1
    assert len(counted["statements"]) == len(asked)
    assert all(table in statement for table, statement in zip(asked, counted["statements"], strict=True))


def test_plan_on_a_database_never_migrated_is_one_statement_too(pg_url, tmp_path, monkeypatch, counted):
    # The missing table is the answer ("nothing applied"), not a reason to ask the catalog first.
    monkeypatch.chdir(tmp_path)
    from cli.main import apm

    result = CliRunner().invoke(apm, ["--db", pg_url, "--migrations-dir", str(EXAMPLE), "migrate", "plan"])
    assert result.exit_code == 0, result.output
    assert "0001" in result.output and "0006" in result.output
    assert (len(counted["connections"]), len(counted["statements"])) == (1, 1)
