"""The configuration file (issue 14, point 3): apm.toml or [tool.apm], and its place in the precedence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import apm
from tests.conftest import run_apm, write_migration


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with a small catalog, the current folder of the test, no APM_* variables."""
    for name in ("APM_DB", "APM_MIGRATIONS_DIR", "APM_BUSY_TIMEOUT", "APM_KEEP_BACKUPS"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "project"
    (root / "db").mkdir(parents=True)
    (root / "sub" / "deeper").mkdir(parents=True)
    catalog = root / "catalog"
    catalog.mkdir()
    write_migration(catalog, "0001", "Create t", depends_on=(), upgrade="conn.execute('CREATE TABLE t (id INTEGER)')",
                    downgrade="conn.execute('DROP TABLE t')")
    monkeypatch.chdir(root)
    return root


def shown(*args: str, env: dict | None = None) -> dict:
    result = CliRunner().invoke(apm, [*args, "config", "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_relative_paths_resolve_against_the_files_folder_from_any_subfolder(project: Path, monkeypatch) -> None:
    (project / "apm.toml").write_text('db = "db/app.db"\nmigrations_dir = "catalog"\n')
    monkeypatch.chdir(project / "sub" / "deeper")
    result = CliRunner().invoke(apm, ["migrate"])
    assert result.exit_code == 0 and "Applied 0001 Create t" in result.output
    assert (project / "db" / "app.db").is_file() and not (project / "sub" / "deeper" / "db").exists()
    report = shown()
    assert report["config_file"] == str(project / "apm.toml")
    assert report["settings"]["db"] == {"value": str(project / "db" / "app.db"),
                                        "source": f"config {project / 'apm.toml'}"}


def test_option_beats_environment_beats_file_beats_default(project: Path) -> None:
    (project / "apm.toml").write_text('busy_timeout = 5\nkeep_backups = 3\ndb = "db/app.db"\n')
    settings = shown()["settings"]
    assert settings["busy_timeout"]["value"] == 5.0 and settings["busy_timeout"]["source"].startswith("config ")
    assert settings["migrations_dir"]["source"].startswith("default")
    env = {"APM_BUSY_TIMEOUT": "7", "APM_KEEP_BACKUPS": "2"}
    settings = shown(env=env)["settings"]
    assert settings["busy_timeout"] == {"value": 7.0, "source": "env APM_BUSY_TIMEOUT"}
    assert settings["keep_backups"] == {"value": 2, "source": "env APM_KEEP_BACKUPS"}
    settings = shown("--busy-timeout", "9", env=env)["settings"]
    assert settings["busy_timeout"] == {"value": 9.0, "source": "option --busy-timeout"}
    assert settings["db"]["source"].startswith("config ")
    assert shown("--db", "x.db")["settings"]["db"] == {"value": "x.db", "source": "option --db"}


def test_apm_toml_wins_and_a_pyproject_without_tool_apm_is_passed_over(project: Path, monkeypatch) -> None:
    (project / "pyproject.toml").write_text('[tool.apm]\nbusy_timeout = 1\n')
    (project / "apm.toml").write_text("busy_timeout = 2\n")
    assert shown()["settings"]["busy_timeout"]["value"] == 2.0
    (project / "apm.toml").unlink()
    assert shown()["settings"]["busy_timeout"]["value"] == 1.0
    # A subproject's packaging file says nothing about apm: the search goes on to the parent.
    (project / "sub" / "pyproject.toml").write_text('[project]\nname = "apm-helper"\n[tool.black]\nline-length = 99\n')
    monkeypatch.chdir(project / "sub")
    assert shown()["config_file"] == str(project / "pyproject.toml")
    (project / "pyproject.toml").unlink()
    assert shown()["config_file"] is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('busy_timeout = "abc"\n', 'Error: apm.toml: busy_timeout must be a number of seconds from 0 to 86400 (a day), got "abc"'),
        ("busy_timeout = -1\n", "Error: apm.toml: busy_timeout must be a number of seconds from 0 to 86400 (a day), got -1"),
        ("keep_backups = 0\n", "Error: apm.toml: keep_backups must be a whole number of backups to keep "
                               "(1 or more), got 0"),
        ('db = ""\n', 'Error: apm.toml: db must be a path to the SQLite database, or a PostgreSQL URL, got ""'),
        ('bd = "x.db"\n', 'Error: apm.toml: unknown key "bd"; the known keys are backup_dir, busy_timeout, db, fleet, '
                          'keep_backups, large_table_rows, ledger_schema, lock_gate, lock_levels, lock_retries, '
                          'lock_timeout, migrations_dir, statement_timeout'),
        ("db = \n", "Error: apm.toml: is not valid TOML: Invalid value (at line 1, column 6)"),
        # lock_levels names the bad entry and lists what is valid (tryout5 #5), as --allow does.
        ('lock_levels = { table-rewrite = "fatal" }\n',
         'Error: apm.toml: lock_levels: table-rewrite = "fatal" is no level; the levels are info, warning, error'),
        ('lock_levels = { table-rewrit = "info" }\n',
         'Error: apm.toml: lock_levels: "table-rewrit" is no finding code; the codes are index-not-concurrent, '
         'set-not-null-scan, constraint-not-valid-missing, table-rewrite, access-exclusive-held, no-lock-timeout, '
         'validate-same-run, rename'),
        ('lock_levels = { table-rewrite = 1 }\n',
         'Error: apm.toml: lock_levels: table-rewrite = 1 is no level; the levels are info, warning, error'),
        ('lock_levels = "warning"\n', 'Error: apm.toml: lock_levels must be a table of finding codes and levels, '
                                       'e.g. { table-rewrite = "warning" }, got "warning"'),
        ('lock_gate = "fatal"\n', 'Error: apm.toml: lock_gate must be the lowest level of lock finding that stops a '
                                   'run: "info", "warning" or "error", got "fatal"'),
    ],
)
def test_a_malformed_file_is_one_line_naming_file_and_key_exit_2(project: Path, text: str, message: str) -> None:
    (project / "apm.toml").write_text(text)
    result = CliRunner().invoke(apm, ["migrate", "plan"])
    assert result.exit_code == 2
    assert result.output == message + "\n"


def test_pyproject_errors_name_the_table_and_help_never_reads_the_file(project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.apm]\nbusy_timeout = "soon"\n')
    done = run_apm("migrate", "--list", cwd=project)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ('Error: pyproject.toml: [tool.apm]: busy_timeout must be a number of seconds from 0 to 86400 (a day), '
                           'got "soon"\n')
    assert run_apm("--help", cwd=project).returncode == 0
    assert "apm config" in run_apm("--help", cwd=project).stdout


def test_keep_backups_from_the_file_prunes_after_a_rollback(project: Path) -> None:
    (project / "apm.toml").write_text('db = "db/app.db"\nmigrations_dir = "catalog"\nkeep_backups = 1\n')
    run = lambda *a: CliRunner().invoke(apm, list(a))  # noqa: E731
    assert run("migrate").exit_code == 0
    for _ in range(2):
        assert run("migrate", "--rollback", "0001", "--yes").exit_code == 0
        assert run("migrate").exit_code == 0
    assert len(list((project / "db").glob("app.db.backup.*"))) == 1


def test_config_shows_the_postgresql_settings_too(project: Path) -> None:
    (project / "apm.toml").write_text('backup_dir = "dumps"\nledger_schema = "ops"\n')
    settings = shown()["settings"]
    assert settings["backup_dir"] == {"value": str(project / "dumps"), "source": f"config {project / 'apm.toml'}"}
    assert settings["ledger_schema"]["value"] == "ops"
    assert shown("--ledger-schema", "app")["settings"]["ledger_schema"] == {"value": "app",
                                                                          "source": "option --ledger-schema"}


@pytest.mark.parametrize("file,table", [("apm.toml", ""), ("pyproject.toml", "[tool.apm]\n")])
def test_an_unusable_path_from_the_file_names_the_file_and_key(project: Path, file: str, table: str) -> None:
    """Issue 22, point 23: `migrations_dir = "nope"` said only "migrations directory .../nope does not exist"."""
    where = "apm.toml" if file == "apm.toml" else "pyproject.toml: [tool.apm]"
    (project / "adir").mkdir()
    cases = [('migrations_dir = "nope"', ["status"], 3, f'migrations_dir = "nope" is set in {where}'),
             ('migrations_dir = "nope"', ["migrate", "plan"], 3, f'migrations_dir = "nope" is set in {where}'),
             ('migrations_dir = "nope"', ["migrate", "check"], 3, f'migrations_dir = "nope" is set in {where}'),
             ('db = "adir"', ["status"], 6, f'db = "adir" is set in {where}'),
             ('db = "adir"', ["migrate", "doctor"], 6, f'db = "adir" is set in {where}'),
             ('db = "missing/app.db"', ["agents", "list"], 6, f'db = "missing/app.db" is set in {where}'),
             ('db = "postgresql://me:s3cret@127.0.0.1:1/x"', ["status"], 6,
              f'db = "postgresql://me:***@127.0.0.1:1/x" is set in {where}')]
    for line, args, code, said in cases:
        (project / file).write_text(f"{table}{line}\n")
        result = run_apm(*args, cwd=project)
        assert result.returncode == code, (line, args, result.stdout, result.stderr)
        assert said in result.stdout + result.stderr, (line, args, result.stdout, result.stderr)
        assert "s3cret" not in result.stdout + result.stderr
    # An option that overrides the file is what the error is about: the file is not named then.
    (project / file).write_text(f'{table}migrations_dir = "nope"\n')
    overridden = run_apm("--migrations-dir", "elsewhere", "status", cwd=project)
    assert overridden.returncode == 3 and "is set in" not in overridden.stderr


def test_config_lists_the_lock_keys_with_their_defaults_and_the_file_values(project: Path) -> None:
    settings = shown()["settings"]
    assert {key: settings[key]["value"] for key in ("lock_timeout", "statement_timeout", "lock_retries",
                                                     "lock_gate", "lock_levels", "large_table_rows")} == {
        "lock_timeout": "2s", "statement_timeout": "off", "lock_retries": 3, "lock_gate": "error",
        "lock_levels": {}, "large_table_rows": 10000}
    assert settings["lock_timeout"]["source"].startswith("default")
    (project / "apm.toml").write_text('lock_timeout = "300ms"\nstatement_timeout = "2min"\nlock_retries = 0\n'
                                      'lock_gate = "warning"\nlock_levels = { table-rewrite = "warning" }\n'
                                      'large_table_rows = 500\n')
    settings = shown()["settings"]
    assert settings["lock_timeout"] == {"value": "300ms", "source": f"config {project / 'apm.toml'}"}
    assert [settings[key]["value"] for key in ("statement_timeout", "lock_retries", "lock_gate", "lock_levels",
                                               "large_table_rows")] == [
        "120s", 0, "warning", {"table-rewrite": "warning"}, 500]
    text = CliRunner().invoke(apm, ["config"]).output
    assert re.search(r"^lock_levels +table-rewrite = warning +config ", text, re.M), text
