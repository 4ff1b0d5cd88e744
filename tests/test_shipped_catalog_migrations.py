"""Hand-written migration tests of APM's catalog, through the plugin's ``apm_migrator`` fixture.

The generated items (``migrations::stairway[V]``...) prove every migration
rolls back to the schema it started from; these check what only a person
knows the migrations must do to the rows.
"""

from __future__ import annotations


def add_project_and_agent(apm_migrator) -> None:
    conn = apm_migrator.connection
    conn.execute("INSERT INTO projects (id, name, path) VALUES (1, 'apm', '/srv/apm')")
    conn.execute("INSERT INTO agents (id, project_id, role, display_name, tier) VALUES (1, 1, 'dev', 'Dev', '3')")


def test_rolling_back_0027_keeps_every_agent(apm_migrator) -> None:
    apm_migrator.migrate_to("0020")
    add_project_and_agent(apm_migrator)
    apm_migrator.migrate_to("0027")
    before = apm_migrator.connection.execute("SELECT id, role, tier FROM agents ORDER BY id").fetchall()

    apm_migrator.rollback("0027")

    assert "0027" not in apm_migrator.applied
    assert apm_migrator.connection.execute("SELECT id, role, tier FROM agents ORDER BY id").fetchall() == before
    assert before == [(1, "dev", 3)]
    assert apm_migrator.schema().tables["agents"].column("metadata") is None


def test_0020_turns_text_tiers_into_integers_and_its_rollback_turns_them_back(apm_migrator) -> None:
    apm_migrator.migrate_to("0001")
    add_project_and_agent(apm_migrator)

    assert apm_migrator.migrate_to("0020") == ["0020"]
    assert apm_migrator.connection.execute("SELECT typeof(tier), tier FROM agents").fetchall() == [("integer", 3)]

    apm_migrator.rollback("0020")
    assert apm_migrator.connection.execute("SELECT typeof(tier), tier FROM agents").fetchall() == [("text", "3")]
