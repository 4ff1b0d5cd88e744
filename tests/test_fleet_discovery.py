"""Which files a fleet's ``--glob`` names: exactly what Python's glob matches, each once, each a file.

``planner.fleet.members`` globs the part of a pattern up to its last wildcard
and looks the plain rest up with the one ``stat`` a member needs anyway
(``apm fleet status`` over a thousand projects: a third of discovery). These
checks hold it to ``glob.glob`` on a tree built to tell the two apart: hidden
folders, a dangling symlink, a file where a folder is expected, names that
sort differently once the tail is added, character classes, ``..`` and
absolute patterns. And a file glob found is a file, whatever its name says.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
from pathlib import Path

import pytest

from planner.fleet.members import discover
from tests.conftest import run_apm


def _tree(root: Path) -> None:
    for name in ("p1", "p1-x", "p1.b", "p2", ".hidden", "q[1]"):
        data = root / "projects" / name / ".aipm" / "data"
        data.mkdir(parents=True)
        (data / "aipm.db").write_bytes(b"")
    (root / "projects" / "p3" / ".aipm").mkdir(parents=True)  # no data folder: not matched
    (root / "projects" / "p4").mkdir()
    (root / "projects" / "p4" / ".aipm").write_text("a file where a folder is expected")
    (root / "projects" / "p5" / ".aipm" / "data").mkdir(parents=True)
    os.symlink(root / "nowhere.db", root / "projects" / "p5" / ".aipm" / "data" / "aipm.db")  # dangling: glob keeps it
    (root / "projects" / "loose.db").write_bytes(b"")
    (root / "top.db").write_bytes(b"")  # what "**/*.db" matches with no folder at all


PATTERNS = [
    "projects/*/.aipm/data/aipm.db",
    "projects/p?/.aipm/data/aipm.db",
    "projects/p[12]*/.aipm/data/aipm.db",
    "projects/*/.aipm/data/*.db",
    "projects/.*/.aipm/data/aipm.db",
    "./projects/*/.aipm/../.aipm/data/aipm.db",
    "projects/*/.aipm",
    "**/*.db",
    "projects/*.db",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_glob_names_what_python_s_glob_matches_in_its_order(tmp_path: Path, pattern: str) -> None:
    _tree(tmp_path)
    expected = sorted(glob.glob(pattern, root_dir=tmp_path, recursive=True))
    assert expected, pattern  # each pattern matches something here
    members = discover(globs=[pattern], cwd=tmp_path)
    assert [m.db for m in members] == expected
    assert [m.real for m in members] == [os.path.normpath(tmp_path / path) for path in expected]


def test_an_absolute_pattern_names_absolute_paths(tmp_path: Path) -> None:
    _tree(tmp_path)
    pattern = str(tmp_path / "projects" / "*" / ".aipm" / "data" / "aipm.db")
    members = discover(globs=[pattern], cwd=tmp_path / "projects")
    assert [m.db for m in members] == sorted(glob.glob(pattern)) and len(members) == 6


def test_a_symlinked_project_is_one_member_under_its_first_spelling(tmp_path: Path) -> None:
    _tree(tmp_path)
    os.symlink(tmp_path / "projects" / "p2", tmp_path / "projects" / "p0")  # sorts first: its spelling is kept
    members = discover(globs=["projects/p[0-2]/.aipm/data/aipm.db"], cwd=tmp_path)
    assert [m.db for m in members] == ["projects/p0/.aipm/data/aipm.db", "projects/p1/.aipm/data/aipm.db"]


@pytest.mark.parametrize("name", ["dbname=tenants.db", "host=db1.db", "~"])
def test_a_file_glob_found_is_that_file_whatever_its_name_says(tmp_path: Path, name: str) -> None:
    """A match named like a libpq connection string was taken for a PostgreSQL database, and a folder named
    ``~`` for the home folder (glob's own matches were ``~``-expanded again): both are files glob found."""
    path = tmp_path / name / "aipm.db" if name == "~" else tmp_path / name
    path.parent.mkdir(exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    pattern = "*/aipm.db" if name == "~" else "*.db"
    (member,) = discover(globs=[pattern], cwd=tmp_path)
    assert not member.on_server and member.real == str(path)
    result = run_apm("fleet", "status", "--glob", pattern, "--json", cwd=tmp_path)
    row = json.loads(result.stdout)["databases"][0]
    assert (row["db"], row["state"], row["applied"]) == (os.path.relpath(path, tmp_path), "behind", 0), result.stdout


def test_keys_resolved_together_are_each_files_real_path(tmp_path: Path) -> None:
    """``resolve_keys`` (the journal's keys of a whole fleet, each shared folder asked once) gives what
    ``os.path.realpath`` gives member by member: through a linked folder, a linked file, a relative link, a
    dangling link, a missing file, and a link to a link."""
    from planner.fleet.members import member, resolve_keys

    (tmp_path / "real" / "p1").mkdir(parents=True)
    (tmp_path / "real" / "p1" / "a.db").write_bytes(b"")
    (tmp_path / "real" / "p1" / "b.db").write_bytes(b"")
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "p1" / "c.db").symlink_to("b.db")
    (tmp_path / "real" / "p1" / "d.db").symlink_to(tmp_path / "real" / "p1" / "c.db")
    (tmp_path / "real" / "p1" / "gone.db").symlink_to(tmp_path / "nowhere" / "x.db")
    (tmp_path / "up").symlink_to("real/p1")
    given = ["real/p1/a.db", "linked/p1/a.db", "linked/p1/c.db", "real/p1/d.db", "linked/p1/gone.db",
             "linked/p1/missing.db", "up/b.db", "linked/../up/a.db"]
    members = [member(text, cwd=tmp_path) for text in given]
    resolve_keys(members)
    assert [m.key for m in members] == [os.path.realpath(m.real) for m in given_members(given, tmp_path)]
    assert members[1].key == str(tmp_path.resolve() / "real" / "p1" / "a.db")
    assert members[2].key == members[6].key == str(tmp_path.resolve() / "real" / "p1" / "b.db")


def given_members(given: list[str], cwd: Path) -> list:
    from planner.fleet.members import member

    return [member(text, cwd=cwd) for text in given]
