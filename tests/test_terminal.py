"""What a person sees on a real terminal: the progress bar, colour, and NO_COLOR.

These run the installed `apm` with its standard output on a pseudo-terminal,
because click decides about bars and colour from the terminal itself.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_migration

APM = Path(sys.executable).parent / "apm"
pytestmark = pytest.mark.skipif(not APM.exists(), reason="the apm console script is not installed (pip install -e .)")


def on_terminal(args: list[str], cwd: Path, columns: int = 100, prompt: bytes | None = None, answer: bytes = b"",
                **env: str) -> str:
    """Run apm with stdin, stdout and stderr on one pty; return everything it wrote (``answer`` typed once
    ``prompt`` appears)."""
    master, slave = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "APM_DB", "APM_MIGRATIONS_DIR")}
    environ.update(env, TERM="xterm", COLUMNS=str(columns))
    process = subprocess.Popen([str(APM), *args], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=environ)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the pty closes when the process ends
            break
        if not data:
            break
        chunks.append(data)
        if prompt is not None and prompt in b"".join(chunks[-2:]):
            os.write(master, answer)
            prompt = None
    process.wait(timeout=30)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture
def long_catalog(catalog_dir: Path) -> Path:
    for number in range(1, 16):
        write_migration(catalog_dir, f"{number:04d}", upgrade=f"conn.execute('CREATE TABLE t{number} (x)')",
                        downgrade=f"conn.execute('DROP TABLE t{number}')")
    write_migration(catalog_dir, "0016", downgrade=None)  # a warning for `check`, drawn in colour
    return catalog_dir


def test_long_run_draws_a_progress_bar_that_fits_and_ends_with_what_was_done(long_catalog: Path,
                                                                             tmp_path: Path) -> None:
    out = on_terminal(["--db", "app.db", "--migrations-dir", str(long_catalog), "migrate"], tmp_path, columns=50)
    frames = [piece for line in out.split("\n") for piece in line.split("\r")]
    # Every frame fits a 50-column terminal, so nothing wraps (issue 12, defect 17).
    assert max(len(frame) for frame in frames) <= 50, max(frames, key=len)
    assert any("Applying 0007" in frame for frame in frames)  # the bar names the migration it runs
    finished = [frame for frame in frames if frame.startswith("Applied 00")]
    assert [line.split()[1] for line in finished] == [f"{n:04d}" for n in range(1, 17)]
    assert all(line.endswith(" ms)") for line in finished)  # each with its timing


def test_colour_on_a_terminal_and_never_with_no_color(long_catalog: Path, tmp_path: Path) -> None:
    args = ["--migrations-dir", str(long_catalog), "migrate", "check"]
    assert "\x1b[" in on_terminal(args, tmp_path)
    assert "\x1b[" not in on_terminal(args, tmp_path, NO_COLOR="1")


def test_a_fleet_on_a_terminal_names_the_databases_it_will_ask_about_and_asks_on_a_clean_line(tmp_path: Path) -> None:
    """Databases whose plan loses nothing commit as the run goes; one whose plan destroys data is named as
    "asked about at the end" (not as a final "skipped ... nothing was committed"), and the question starts on
    a line of its own, never after the progress line's text."""
    import sqlite3

    from tests.test_fleet import PATTERN, applied, fleet_of

    folder = tmp_path / "migrations"
    folder.mkdir()
    write_migration(folder, "0001", "Projects", upgrade="conn.execute('CREATE TABLE projects (id INTEGER PRIMARY KEY)')",
                    downgrade="conn.execute('DROP TABLE projects')")
    write_migration(folder, "0002", "Tasks", depends_on=("0001",), upgrade="conn.execute('CREATE TABLE tasks (id INTEGER)')",
                    downgrade="conn.execute('DROP TABLE tasks')")
    paths = fleet_of(tmp_path, folder, 3, target=None)
    with sqlite3.connect(paths[1]) as conn:
        conn.execute("INSERT INTO tasks VALUES (1)")
    shown = on_terminal(["--migrations-dir", str(folder), "fleet", "migrate", "--glob", PATTERN, "--rollback", "0002",
                         "--jobs", "1", "--no-backup"], tmp_path, columns=200, prompt=b"Proceed on these databases?",
                        answer=b"n\n")
    assert "p01/.aipm/data/aipm.db: its plan destroys data; you are asked about it at the end" in shown, shown
    before_question = shown.split("These plans destroy data")[0]
    assert "nothing was committed" not in before_question, shown
    unstyled = re.sub(r"\x1b\[[0-9;]*m", "", before_question)  # colour codes move no cursor
    assert unstyled.endswith(("\n", "\r\x1b[K")), repr(unstyled[-60:])
    assert [applied(p) for p in paths] == [["0001"], ["0001", "0002"], ["0001"]]
