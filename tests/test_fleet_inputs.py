"""Issue 24: a fleet's inputs (list files, config, URLs), its passwords, and the commands it prints to paste.

Real SQLite files, the suite's PostgreSQL server, the installed ``apm``; a printed command is pasted into a
real shell in another folder, as a person would.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from planner.fleet.members import discover, member
from planner.urls import redact, without_password
from tests.conftest import read_terminal, run_apm
from tests.test_fleet import PATTERN, applied, break_unique_index, catalog, fleet, fleet_of, migrate_to, project_db  # noqa: F401


def pasted(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` as printed, pasted into a shell in ``cwd`` (the installed ``apm`` first on the PATH)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, env=env, check=False)


def resume_command(output: str) -> str:
    found = re.search(r"`([^`]*fleet migrate --resume[^`]*)` runs what did not succeed", output)
    assert found, output
    return found.group(1)


def fix_unique_index(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM projects WHERE name = 'twin' AND id > (SELECT min(id) FROM projects)")


# --------------------------------------------------------------------------
# P2: the commands a run prints continue that run, and touch that database, wherever they are pasted
# --------------------------------------------------------------------------


def test_printed_commands_pasted_in_another_folder_continue_their_own_run_only(tmp_path: Path,
                                                                                 catalog: Path) -> None:
    # A fleet named by its config file, run from a subfolder: p00 fails, p01 and p02 are not started.
    cfg = tmp_path / "cfg"
    (cfg / "other" / "deep").mkdir(parents=True)
    (cfg / "apm.toml").write_text(f'migrations_dir = "{catalog}"\nfleet = ["{PATTERN}"]\n')
    mine = fleet_of(cfg, catalog, 3)
    break_unique_index(mine[0])
    first = run_apm("fleet", "migrate", "--jobs", "1", "--canary", "0", cwd=cfg / "other" / "deep")
    assert first.returncode == 11, first.stdout + first.stderr
    resume = resume_command(first.stdout)
    assert ".." not in resume

    # Another folder with an unfinished run of the same catalog, named by a relative glob: v1 not started.
    victim = tmp_path / "victim"
    theirs = [victim / "v" / f"v{i}.db" for i in range(2)]
    for path in theirs:
        migrate_to(path, catalog, target="0001")
    break_unique_index(theirs[0])
    stopped = run_apm("--migrations-dir", str(catalog), "fleet", "migrate", "--glob", "v/*.db", "--jobs", "1",
                      "--canary", "0", cwd=victim)
    assert stopped.returncode == 11 and "not started" in stopped.stdout, stopped.stdout + stopped.stderr
    retry = stopped.stdout.split("retry alone with")[1].splitlines()[2].split("  ")[-1].strip()
    assert retry.startswith("apm ") and f"--db {theirs[0]}" in retry, retry  # absolute: it names this file anywhere

    # A bare --resume names no fleet: it refuses (lists the runs there) instead of continuing the folder's newest.
    bare = run_apm("--migrations-dir", str(catalog), "fleet", "migrate", "--resume", cwd=victim)
    assert bare.returncode == 2, bare.stdout + bare.stderr
    assert "no fleet was named" in bare.stderr and "glob " + str(victim / "v/*.db") in bare.stderr
    assert "Traceback" not in bare.stderr and len(bare.stderr.strip().splitlines()) == 1
    assert applied(theirs[1]) == ["0001"]

    # The cfg fleet's printed resume, pasted in the victim's folder, resumes the cfg fleet's run, not the victim's.
    fix_unique_index(mine[0])
    resumed = pasted(resume, victim)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [applied(p) for p in mine] == [["0001", "0002", "0003"]] * 3
    assert applied(theirs[1]) == ["0001"]  # the victim's run was not continued

    # The victim's retry line, pasted in the cfg folder, migrates the victim's v0 and creates nothing there.
    fix_unique_index(theirs[0])
    before = sorted(p.relative_to(cfg) for p in cfg.rglob("*") if ".apm-fleet" not in p.parts)
    retried = pasted(retry, cfg)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert applied(theirs[0]) == ["0001", "0002", "0003"]
    assert sorted(p.relative_to(cfg) for p in cfg.rglob("*") if ".apm-fleet" not in p.parts) == before


def test_the_catalog_of_a_printed_command_has_no_dot_dot(tmp_path: Path, catalog: Path) -> None:
    (tmp_path / "fl").mkdir()
    paths = fleet_of(tmp_path / "fl", catalog, 2)
    break_unique_index(paths[0])
    result = run_apm("--migrations-dir", "../migrations", "fleet", "migrate", "--glob", PATTERN, "--jobs", "1",
                     "--canary", "0", cwd=tmp_path / "fl")
    assert result.returncode == 11, result.stdout + result.stderr
    assert "/../" not in result.stdout and f"apm --migrations-dir {catalog} migrate --db {paths[0]}" in result.stdout
    assert f"apm --migrations-dir {catalog} fleet migrate --resume --journal" in resume_command(result.stdout)


# --------------------------------------------------------------------------
# F2: a long error is one shortened line in the failures table on a terminal, whole in --json and the journal
# --------------------------------------------------------------------------


def test_a_long_error_is_cut_to_the_terminal_in_the_table_and_kept_whole_elsewhere(tmp_path: Path,
                                                                                  catalog: Path) -> None:
    (catalog / "migration_0004.py").write_text(
        '"""Migration 0004: Fails"""\ndepends_on = ("0003",)\n\ndef upgrade(conn):\n'
        '    raise RuntimeError("connection to server failed: " + "very long reason " * 25 + "\\nsecond line")\n\n'
        'def downgrade(conn):\n    pass\n')
    fleet_of(tmp_path, catalog, 1)
    args = [str(Path(sys.executable).parent / "apm"), "--migrations-dir", str(catalog), "fleet", "migrate",
            "--glob", PATTERN]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("APM_")}, "COLUMNS": "150", "NO_COLOR": "1"}
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(args, cwd=tmp_path, stdout=follower, stderr=subprocess.DEVNULL, env=env)
        os.close(follower)
        written = read_terminal(leader)
        assert process.wait(timeout=60) == 11
    finally:
        os.close(leader)
    shown = written.decode().replace("\r\n", "\n")
    row = shown.split("retry alone with")[1].splitlines()[2]
    assert "…" in row and "second line" not in row and row.rstrip().endswith(f"migrate --db {tmp_path / PATTERN.replace('*', 'p00')}")
    assert row.count("very long reason") < 25, row

    document = json.loads(run_apm("--migrations-dir", str(catalog), "fleet", "migrate", "--glob", PATTERN, "--json",
                                  cwd=tmp_path).stdout)
    error = document["databases"][0]["error"]
    assert error.count("very long reason") == 25, error
    records = [json.loads(line) for line in Path(document["journal"]).read_text(encoding="utf-8").splitlines()]
    assert [r["error"] for r in records if r["type"] == "member"] == [error]
    piped = run_apm("--migrations-dir", str(catalog), "fleet", "migrate", "--glob", PATTERN, cwd=tmp_path)
    assert piped.stdout.split("retry alone with")[1].count("very long reason") == 25  # a log keeps every character


# --------------------------------------------------------------------------
# M1, M7, M3: list files (comments, '#' in paths, a BOM), a BOM in the config, advice per source
# --------------------------------------------------------------------------


def test_list_files_keep_hashes_in_paths_skip_a_bom_and_comments(tmp_path: Path, catalog: Path) -> None:
    names = ["plain.db", "h/x#1.db", "h/y #2.db", "h/z.db"]
    for name in names:
        migrate_to(tmp_path / name, catalog)
    (tmp_path / "dbs.txt").write_text(
        "\ufeffplain.db\n"           # Notepad's BOM before the first entry
        "# a comment line\n"
        "h/x#1.db\n"                 # '#' inside a path: no comment
        '"h/y #2.db"   # quoted, so its " #" is the path\'s\n'
        "h/z.db # a comment after a blank\n"
        "   # an indented comment\n", encoding="utf-8")
    result = fleet(tmp_path, catalog, "status", "--list", "dbs.txt", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [(r["db"], r["state"]) for r in json.loads(result.stdout)["databases"]] == \
        [(name, "up_to_date") for name in names]

    # The config file may start with a BOM too.
    (tmp_path / "apm.toml").write_bytes(f'\ufeffmigrations_dir = "{catalog}"\nfleet = ["plain.db"]\n'.encode())
    configured = run_apm("fleet", "status", "--json", cwd=tmp_path)
    assert configured.returncode == 0, configured.stdout + configured.stderr
    assert [r["db"] for r in json.loads(configured.stdout)["databases"]] == [str(tmp_path / "plain.db")]


def test_a_source_naming_no_database_gets_the_advice_that_fits_it(tmp_path: Path, catalog: Path) -> None:
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    listed = fleet(tmp_path, catalog, "status", "--list", "empty.txt")
    assert listed.returncode == 2
    assert listed.stderr.strip() == (
        "Error: --list 'empty.txt' names no database (only blank lines and comments); write one database a line "
        "in it (a path or a URL; # starts a comment); nothing was changed"), listed.stderr
    missing = fleet(tmp_path, catalog, "status", "--list", "gone.txt")
    assert missing.returncode == 2 and "'gone.txt' cannot be read (No such file or directory); check the file's " \
        "path" in missing.stderr, missing.stderr
    globbed = fleet(tmp_path, catalog, "status", "--glob", "nomatch/*.db")
    assert globbed.returncode == 2
    assert f"--glob 'nomatch/*.db' matches no database (relative to {tmp_path}); check the pattern, and quote it " \
        "so the shell does not expand it" in globbed.stderr, globbed.stderr

    (tmp_path / "sub").mkdir()
    (tmp_path / "apm.toml").write_text(f'migrations_dir = "{catalog}"\nfleet = ["nomatch/*.db"]\n')
    configured = run_apm("fleet", "status", cwd=tmp_path / "sub")
    assert configured.returncode == 2
    assert f"fleet pattern '{tmp_path}/nomatch/*.db' matches no database; check fleet = [...] in the config " \
        "file" in configured.stderr and "relative to that file's folder" in configured.stderr, configured.stderr
    for result in (listed, missing, configured):
        assert "quote it" not in result.stderr and "current folder" not in result.stderr


# --------------------------------------------------------------------------
# N2: --ledger-schema beside a tenant member is a usage error in every fleet command, as in `apm migrate`
# --------------------------------------------------------------------------


def test_a_ledger_schema_option_beside_a_tenant_member_is_a_usage_error(tmp_path: Path, catalog: Path) -> None:
    tenant = f"postgresql://app@/saas?host={tmp_path / 'no-server'}#tenant_a"
    (tmp_path / "tenants.txt").write_text(f"postgresql://app@/plain?host={tmp_path / 'no-server'}\n{tenant}\n")
    for command in (["status"], ["plan"], ["migrate"], ["migrate", "--dry-run"]):
        result = fleet(tmp_path, catalog, "--ledger-schema", "other", *command, "--list", "tenants.txt")
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert f"--ledger-schema 'other' cannot apply to {tenant}" in result.stderr, result.stderr
        assert "drop --ledger-schema" in result.stderr and "Traceback" not in result.stderr
    same = fleet(tmp_path, catalog, "--ledger-schema", "tenant_a", "status", "--list", "tenants.txt")
    assert same.returncode == 11 and "cannot apply" not in same.stderr, same.stdout + same.stderr  # no server: 11
    assert not (tmp_path / ".apm-fleet").exists()


# --------------------------------------------------------------------------
# L1, N3: what a library user logs, and one database spelled several ways
# --------------------------------------------------------------------------


def test_the_repr_of_a_member_a_status_and_an_outcome_holds_no_password() -> None:
    from planner.fleet.run import MemberOutcome
    from planner.fleet.status import MemberStatus

    for url in ("postgresql://app:s3cretPw@db.internal/saas#tenant_a", "postgresql://app:s3cretPw@/x?host=/s",
                "host=/s dbname=x password=s3cretPw", "postgresql://app:Zq@s3cretPw@/x?host=/s"):
        found = member(url)
        for shown in (repr(found), repr(MemberStatus(member=found, state="behind")),
                      repr(MemberOutcome(found, "failed", error="boom")), str([found])):
            assert "s3cretPw" not in shown and "***" in shown, shown


def test_spellings_of_one_database_are_one_identity_and_others_are_not() -> None:
    from planner.urls import connection_identity

    same = ["postgresql://apm@/f2?host=/run/pg", "postgres://apm@/f2?host=/run/pg", "host=/run/pg dbname=f2 user=apm",
            "postgresql:///f2?user=apm&host=/run/pg", "postgresql://apm:pw@/f2?host=/run/pg",
            "postgresql://apm@/?dbname=f2&host=/run/pg", "user=apm  dbname='f2' host=/run/pg"]
    assert len({connection_identity(url) for url in same}) == 1
    other = ["postgresql://apm@/f3?host=/run/pg", "postgresql://bob@/f2?host=/run/pg",
             "postgresql://apm@/f2?host=/run/pg&port=5433", "postgresql://apm@/f2?host=/run/PG",
             "postgresql://apm@db/f2", "postgresql://apm@/f2?host=/run/pg&options=-csearch_path%3Dt"]
    assert len({connection_identity(url) for url in same[:1] + other}) == len(other) + 1
    assert connection_identity("projects/a.db") is None


@pytest.mark.postgres
def test_one_database_spelled_four_ways_is_one_member(pg_server, pg_url: str, tmp_path: Path, catalog: Path) -> None:
    user, rest = pg_url.removeprefix("postgresql://").split("@/", 1)
    dbname, socket = rest.split("?host=")
    spellings = [pg_url, pg_url.replace("postgresql://", "postgres://"), f"host={socket} dbname={dbname} user={user}",
                 f"postgresql:///{dbname}?user={user}&host={socket}"]
    (tmp_path / "dup.txt").write_text("\n".join(spellings) + "\n")
    assert [m.db for m in discover(lists=["dup.txt"], cwd=tmp_path)] == [pg_url]
    migrated = fleet(tmp_path, catalog, "migrate", "--list", "dup.txt", "--json")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert [(r["db"], r["outcome"]) for r in json.loads(migrated.stdout)["databases"]] == [(pg_url, "applied")]
    rolled = fleet(tmp_path, catalog, "migrate", "--list", "dup.txt", "--rollback", "0003", "--yes", "--no-backup",
                   "--jobs", "4", "--json")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr  # one rolled back, none refused
    assert [r["outcome"] for r in json.loads(rolled.stdout)["databases"]] == ["rolled back"]

    # '#public' is a member of its own (the search_path it sets may differ), shown as given.
    (tmp_path / "public.txt").write_text(f"{pg_url}#public\n")
    status = fleet(tmp_path, catalog, "status", "--list", "public.txt", "--json")
    assert [r["db"] for r in json.loads(status.stdout)["databases"]] == [f"{pg_url}#public"], status.stdout


# --------------------------------------------------------------------------
# P1b: a password not percent-encoded is masked whole everywhere, and the error says to encode it
# --------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["Zq?Secret/x", "Zq@Secret9", "Zq/Sec@ret#7"])
def test_redaction_masks_a_raw_password_up_to_the_last_at(password: str) -> None:
    for url in (f"postgresql://pw2:{password}@/pwq?host=/sock", f"postgresql://pw2:{password}@db:5432/pwq#tenant_a",
                f"cannot connect to postgresql://pw2:{password}@/pwq?host=/sock: bad"):
        for shown in (redact(url), *([without_password(url)] if url.startswith("postgresql") else [])):
            assert "Secret" not in shown and "Sec" not in shown and "pwq" in shown, shown
    assert redact(f"postgresql://pw2:{password}@/pwq?host=/sock") == "postgresql://pw2:***@/pwq?host=/sock"
    assert without_password(f"postgresql://pw2:{password}@/pwq?host=/sock") == "postgresql://pw2@/pwq?host=/sock"
    # An '@' after the host (a query value) is not the password's; a URL with no user has none.
    from planner.urls import unencoded_password

    assert redact("postgresql://app:pw@db/x?application_name=a@b") == "postgresql://app:***@db/x?application_name=a@b"
    assert redact("postgresql://db:5432/x") == "postgresql://db:5432/x"
    # A port, then an '@' in the query: masked all the same (no way to tell), but no advice to encode anything.
    assert unencoded_password("postgresql://db:5432/x?user=a@b") is None
    assert unencoded_password(f"postgresql://pw2:{password}@/pwq?host=/sock")
    assert unencoded_password("postgresql://pw2:Zq%40Secret9@/pwq?host=/sock") is None


@pytest.mark.postgres
@pytest.mark.parametrize("password", ["Zq?Secret/x", "Zq@Secret9"])
def test_a_password_not_percent_encoded_is_never_shown_and_gets_the_hint(pg_server, pg_url: str, tmp_path: Path,
                                                                          catalog: Path, password: str) -> None:
    user, rest = pg_url.removeprefix("postgresql://").split("@", 1)
    url = f"postgresql://{user}:{password}@{rest}"
    (tmp_path / "l.txt").write_text(url + "\n")
    secret = password[3:]  # what follows the first character that needs encoding

    def check(result, code: int) -> str:
        shown = result.stdout + result.stderr
        assert result.returncode == code, shown
        assert secret not in shown and "Traceback" not in shown, shown
        return shown

    table = check(fleet(tmp_path, catalog, "migrate", "--list", "l.txt"), 11)
    assert "percent-encode" in table and f"{user}:***@" in table, table
    document = check(fleet(tmp_path, catalog, "migrate", "--list", "l.txt", "--json"), 11)
    row = json.loads(document)["databases"][0]
    assert row["db"] == f"postgresql://{user}:***@{rest}" and "percent-encode" in row["error"], row
    journals = list((tmp_path / ".apm-fleet").glob("run-*.jsonl"))
    assert journals and all(secret not in j.read_text() for j in journals)
    check(fleet(tmp_path, catalog, "status", "--list", "l.txt"), 11)
    check(fleet(tmp_path, catalog, "status", "--list", "l.txt", "--json"), 11)
    check(fleet(tmp_path, catalog, "plan", "--list", "l.txt"), 11)
    single = check(run_apm("--migrations-dir", str(catalog), "--db", url, "status", cwd=tmp_path), 6)
    assert "percent-encode" in single and f"cannot connect to postgresql://{user}:***@{rest}" in single, single
    check(run_apm("--migrations-dir", str(catalog), "--db", url, "migrate", "drift", cwd=tmp_path), 6)
    check(run_apm("--migrations-dir", str(catalog), "--db", url, "migrate", cwd=tmp_path), 6)

    # Percent-encoded, the same password connects (the test server trusts its socket): the URL itself was fine.
    from urllib.parse import quote

    (tmp_path / "ok.txt").write_text(f"postgresql://{user}:{quote(password, safe='')}@{rest}\n")
    check(fleet(tmp_path, catalog, "migrate", "--list", "ok.txt"), 0)
