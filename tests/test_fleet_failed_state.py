"""`failed` in `apm fleet status` is a failure that still stands, never one a rehearsal wrote or one put right since;
the command printed to retry a failed database alone works where it is pasted.

A dashboard that a dry run turns red, or that stays red after the database was brought up to date, is read
as noise; then the real failure is missed too. Real SQLite files in project folders, the installed command.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import run_apm
from tests.test_fleet import PATTERN, break_unique_index, catalog, fleet, fleet_of, migrate_to  # noqa: F401


def states(tmp_path: Path, folder: Path) -> dict[str, tuple[str, str | None]]:
    result = fleet(tmp_path, folder, "status", "--glob", PATTERN, "--json")
    return {Path(r["db"]).parts[1]: (r["state"], r["error"]) for r in json.loads(result.stdout)["databases"]}


def log_row(path: Path, version: str, action: str, outcome: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations_log (version, action, at, outcome, detail) "
                     "VALUES (?, ?, '2026-12-06 05:00:00', ?, 'it failed then')", (version, action, outcome))


def test_a_rehearsal_that_fails_leaves_a_database_behind_not_failed(tmp_path: Path, catalog: Path) -> None:
    (twins,) = fleet_of(tmp_path, catalog, 1)
    break_unique_index(twins)
    for args in (["migrate", "--db", str(twins), "--dry-run"], ["fleet", "plan", "--glob", PATTERN, "--rehearse"],
                 ["fleet", "migrate", "--glob", PATTERN, "--dry-run", "--json"]):
        result = run_apm("--migrations-dir", str(catalog), *args, cwd=tmp_path)
        assert result.returncode in (5, 11), (args, result.stdout, result.stderr)  # the rehearsal did fail
    assert states(tmp_path, catalog)["p00"] == ("behind", None)

    assert run_apm("--migrations-dir", str(catalog), "migrate", "--db", str(twins)).returncode == 5  # a real one
    state, error = states(tmp_path, catalog)["p00"]
    assert state == "failed" and error.startswith("0002 failed:"), error


def test_a_failure_put_right_since_is_history_not_the_state(tmp_path: Path, catalog: Path) -> None:
    other_catalog, applied_since, rolled_back_since, still_applied = fleet_of(tmp_path, catalog, 4)
    migrate_to(applied_since, catalog)
    migrate_to(still_applied, catalog)
    log_row(other_catalog, "0042", "apply", "failed")  # a run with another catalog: not this one's to retry
    log_row(applied_since, "0002", "apply", "failed")  # applied since by another runner
    log_row(rolled_back_since, "0003", "rollback", "failed")  # never applied here any more
    log_row(still_applied, "0003", "rollback", "failed")  # the rollback's retry would still meet it
    found = states(tmp_path, catalog)
    assert found["p00"] == ("behind", None)
    assert found["p01"] == ("up_to_date", None)
    assert found["p02"] == ("behind", None)
    assert found["p03"][0] == "failed" and found["p03"][1].startswith("0003 failed:"), found["p03"]


def test_the_retry_command_names_the_catalog_the_config_file_gave(tmp_path: Path, catalog: Path) -> None:
    """A command printed to be pasted carries the catalog: from another folder, without the config file, it
    would otherwise plan APM's shipped catalog against the database, silently."""
    import shlex

    (tmp_path / "apm.toml").write_text(f'migrations_dir = "{catalog.name}"\n')
    (twins,) = fleet_of(tmp_path, catalog, 1)
    break_unique_index(twins)
    result = run_apm("fleet", "migrate", "--glob", str(tmp_path / PATTERN), cwd=tmp_path)
    assert result.returncode == 11, result.stdout + result.stderr
    retry = "apm " + result.stdout.split("retry alone with")[1].splitlines()[2].split(" apm ", 1)[1].strip()
    assert f"--migrations-dir {catalog}" in retry, retry

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with sqlite3.connect(twins) as conn:  # the data put right, the command pasted in another folder
        conn.execute("DELETE FROM projects")
    argv = shlex.split(retry)
    assert argv[0] == "apm"
    pasted = run_apm(*argv[1:], cwd=elsewhere)
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    assert "0002" in pasted.stdout and "0003" in pasted.stdout  # this fleet's catalog, not the shipped one


def test_status_names_the_applied_files_edited_since_they_ran(tmp_path: Path, catalog: Path) -> None:
    """`apm migrate` warns of an applied migration whose file changed since; the fleet's rows say it too (a note,
    not a state: the database is as it was), in the table and in --json."""
    edited, same = fleet_of(tmp_path, catalog, 2, target=None)
    migration = next(catalog.glob("migration_0002*"))
    migration.write_text(migration.read_text() + "\n# edited after it was applied\n")
    result = fleet(tmp_path, catalog, "status", "--glob", PATTERN, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {Path(r["db"]).parts[1]: r for r in json.loads(result.stdout)["databases"]}
    assert rows["p00"]["edited"] == ["0002"] and rows["p00"]["state"] == "up_to_date"
    with sqlite3.connect(same) as conn:  # a row without a checksum (another tool wrote it) is not "edited"
        conn.execute("UPDATE schema_migrations SET checksum = NULL WHERE version = '0002'")
    text = fleet(tmp_path, catalog, "status", "--glob", PATTERN)
    row = next(line for line in text.stdout.splitlines() if line.startswith("projects/p00/"))
    assert row.rstrip().endswith("file changed since applied: 0002"), row
    other = next(line for line in text.stdout.splitlines() if line.startswith("projects/p01/"))
    assert "changed" not in other
    assert "Warning: 1 database(s) applied migrations whose file changed since" in text.stderr
