"""One request, one run, one result: ``planner.request.run`` for ``apm migrate`` and each fleet database.

A plan in parts (a ``transactional = False`` step between two steps that
each destroy data) is where an answer meets the wrong part: a confirmation
is for the part it was shown for, and a later part's loss is a new question,
never "the database changed meanwhile".
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import write_migration

DROP_A = "0002 apply: drops table a holding 3 rows"
DROP_B = "0004 apply: drops table b holding 2 rows"


def _two_losses(catalog_dir: Path, db: Path) -> None:
    """0001 applied (a: 3 rows, b: 2 rows); pending: 0002 drops a, 0003 VACUUM alone, 0004 drops b."""
    write_migration(catalog_dir, "0001", "Rows", depends_on=(),
                    upgrade="conn.execute('CREATE TABLE a (id INTEGER PRIMARY KEY)')\n"
                            "conn.execute('INSERT INTO a VALUES (1), (2), (3)')\n"
                            "conn.execute('CREATE TABLE b (id INTEGER PRIMARY KEY)')\n"
                            "conn.execute('INSERT INTO b VALUES (1), (2)')")
    from planner.engines import engine_for
    from planner.loader import load_catalog
    from planner.request import Request, run

    engine = engine_for(str(db))
    assert run(engine, load_catalog(catalog_dir), Request()).committed
    write_migration(catalog_dir, "0002", "Drop a", depends_on=("0001",), upgrade="conn.execute('DROP TABLE a')")
    write_migration(catalog_dir, "0003", "Compact", depends_on=("0002",), upgrade="conn.execute('VACUUM')",
                    extra="transactional = False\n")
    write_migration(catalog_dir, "0004", "Drop b", depends_on=("0003",), upgrade="conn.execute('DROP TABLE b')")


def _ledger(db: Path) -> list[str]:
    return [v for (v,) in sqlite3.connect(db).execute("SELECT version FROM schema_migrations ORDER BY version")]


def test_a_fleet_databases_confirmation_covers_its_part_and_a_later_loss_is_asked_not_called_a_change(
        catalog_dir: Path, tmp_path: Path):
    from planner.fleet.run import SKIPPED, run_member
    from planner.fleet.members import member
    from planner.loader import load_catalog
    from planner.request import Request

    db = tmp_path / "app.db"
    _two_losses(catalog_dir, db)
    catalog = load_catalog(catalog_dir)
    first = run_member(member(str(db)), Request(), catalog)
    assert first.outcome == SKIPPED and first.unconfirmed and first.loss == [DROP_A]
    assert _ledger(db) == ["0001"]
    # The person confirmed what was shown: 0002 and the VACUUM commit; 0004's loss is new, and said so.
    second = run_member(member(str(db)), Request(), catalog, confirmed=first.loss)
    assert _ledger(db) == ["0001", "0002", "0003"]
    assert second.outcome == SKIPPED and second.unconfirmed and second.loss == [DROP_B]
    assert second.destroyed == [DROP_A]
    assert "changed meanwhile" not in second.error
    assert second.error == (f"this plan destroys {DROP_B}; this part was rolled back (committed before it: "
                            f"0002, 0003)")
    third = run_member(member(str(db)), Request(), catalog, confirmed=second.loss)
    assert third.succeeded and _ledger(db) == ["0001", "0002", "0003", "0004"]


def test_a_person_is_asked_once_for_each_part_that_destroys_data(catalog_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    import cli.running
    from cli.main import apm

    db = tmp_path / "app.db"
    _two_losses(catalog_dir, db)
    monkeypatch.setattr(cli.running, "stdin_is_terminal", lambda: True)
    result = CliRunner().invoke(apm, ["migrate", "--db", str(db), "--migrations-dir", str(catalog_dir)],
                                input="y\ny\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("Proceed?") == 2
    assert DROP_A in result.output and DROP_B in result.output and "changed while you decided" not in result.output
    assert _ledger(db) == ["0001", "0002", "0003", "0004"]
    lines = [line for line in result.output.splitlines() if line.startswith("Applied")]
    assert [line.split()[1] for line in lines] == ["0002", "0003", "0004"]  # each part told as it committed


def test_the_library_hands_back_one_result_for_a_confirmed_rollback(catalog_dir: Path, tmp_path: Path):
    from planner.engines import engine_for
    from planner.loader import load_catalog
    from planner.request import COMMITTED, UNCONFIRMED, Request, run

    db = tmp_path / "app.db"
    write_migration(catalog_dir, "0001", "Notes", depends_on=(),
                    upgrade="conn.execute('CREATE TABLE notes (id INTEGER)')\n"
                            "conn.execute('INSERT INTO notes VALUES (1)')",
                    downgrade="conn.execute('DROP TABLE notes')")
    catalog, engine = load_catalog(catalog_dir), engine_for(str(db))
    assert run(engine, catalog, Request()).committed
    backups = tmp_path / "backups"
    refused = run(engine, catalog, Request(rollback="0001", backup_dir=str(backups)))
    assert refused.status == UNCONFIRMED and refused.loss == ["0001 rollback: drops table notes holding 1 row"]
    assert refused.backup is None and not list(backups.glob("*"))  # nothing changed: its copy is not kept
    outcome = run(engine, catalog, Request(rollback="0001", backup_dir=str(backups)), confirmed=refused.loss)
    assert outcome.status == COMMITTED and outcome.done == ["0001"]
    assert outcome.destroyed == refused.loss and len(outcome.previews) == 1
    assert outcome.backup is not None and outcome.backup.exists() and _ledger(db) == []
