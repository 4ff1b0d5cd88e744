"""Shared fixtures: catalogs written as real files in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
import os
import textwrap
from pathlib import Path

import pytest

# The installed `apm` runs in hundreds of subprocesses here: let them cache their bytecode, as a user's machine
# does, even where the environment says not to (some sandboxes set PYTHONDONTWRITEBYTECODE, which makes every
# start compile every module again: about 40 s of the suite). No test may depend on either setting.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


#: The body of a test migration whose content does not matter: a statement that changes nothing on purpose.
#: An empty body (``pass``) is an unfilled scaffold, which a run refuses to apply (issue 22 point 10).
NOTHING_TO_CHANGE = "del conn  # nothing to change: this migration is about the graph"


def fix_of(finding) -> str:
    """The fix line `apm migrate check` or `doctor` shows for ``finding`` when no option was given."""
    from cli.safety import render_remedy

    return render_remedy(finding.fix)


def write_migration(
    directory: Path,
    version: str,
    description: str = "",
    *,
    depends_on: tuple[str, ...] | list[str] | None = None,
    documented: tuple[str, ...] | None = None,
    upgrade: str = NOTHING_TO_CHANGE,
    downgrade: str | None = "pass",
    extra: str = "",
    slug: str | None = None,
) -> Path:
    """Write ``migration_<version>[_<slug>].py`` and return its path.

    ``upgrade`` and ``downgrade`` are function bodies (``conn`` is in scope; the default upgrade changes
    nothing on purpose, ``NOTHING_TO_CHANGE``);
    ``downgrade=None`` leaves the function out. ``documented`` writes a
    docstring ``Dependencies:`` section (``()`` writes ``- None``).
    """
    description = description or f"Migration number {version}"
    doc = [f"Migration {version}: {description}", ""]
    if documented is not None:
        doc.append("Dependencies:")
        doc.extend([f"- Migration {v} (prerequisite)" for v in documented] or ["- None"])
        doc.append("")
    parts = ['"""' + "\n".join(doc) + '"""', ""]
    if depends_on is not None:
        parts.append(f"depends_on = {tuple(depends_on)!r}")
    parts.append(extra)
    parts.append("def upgrade(conn):\n" + textwrap.indent(textwrap.dedent(upgrade).strip() or NOTHING_TO_CHANGE, "    "))
    if downgrade is not None:
        parts.append("def downgrade(conn):\n" + textwrap.indent(textwrap.dedent(downgrade).strip() or "pass", "    "))
    name = f"migration_{version}_{slug}.py" if slug else f"migration_{version}.py"
    path = directory / name
    path.write_text("\n".join(parts) + "\n")
    return path


@pytest.fixture(autouse=True)
def _no_machine_leftovers(monkeypatch, tmp_path: Path) -> None:
    """doctor looks for copies old versions left in /dev/shm and /tmp; tests must not depend on this machine's."""
    from planner.engines.sqlite import doctor as doctor

    monkeypatch.setattr(doctor, "REHEARSAL_FOLDERS", (tmp_path / "no-leftovers-here",))


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    """An empty folder for migration files."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    return directory


@pytest.fixture
def seed_chain(catalog_dir: Path) -> Path:
    """The seed's story as a small catalog: 0001 root, 0020 → 0027 → 0029, and 0030 on 0001 alone."""
    write_migration(catalog_dir, "0001", "Initial schema", documented=())
    write_migration(catalog_dir, "0020", "Fix agents.tier")
    write_migration(catalog_dir, "0027", "Add metadata", depends_on=("0020",), documented=("0020",))
    write_migration(catalog_dir, "0029", "Utility agents", depends_on=("0027",))
    write_migration(catalog_dir, "0030", "Feature flags", depends_on=("0001",))
    return catalog_dir


def run_apm(*args: str, cwd: Path | None = None, input: str | None = None, env: dict | None = None,
            timeout: float | None = None):
    """The installed ``apm`` console script in a subprocess, with no ``APM_*`` variables unless given; a
    ``timeout`` fails a command that would hang instead of hanging the run."""
    import os
    import subprocess
    import sys

    apm_bin = Path(sys.executable).parent / "apm"
    if not apm_bin.exists():
        pytest.skip("the apm console script is not installed in this environment (pip install -e .)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    return subprocess.run([str(apm_bin), *args], cwd=cwd, capture_output=True, text=True, input=input,
                          env={**clean, "NO_COLOR": "1", **(env or {})}, check=False, timeout=timeout)


def read_terminal(leader: int) -> bytes:
    """Everything a command wrote to a pseudo-terminal (``pty.openpty``'s ``leader``), until the command ended
    and the terminal closed."""
    import os

    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


# -- seed data for the generated migration tests of APM's catalog (docs/testing.md) -------------------


@pytest.hookimpl(optionalhook=True)  # the conftest still loads with -p no:apm
def pytest_apm_seed(version: str, connection) -> None:
    """Rows for the stairway: every later migration and rollback of the shipped catalog meets data."""
    if version == "0001":
        connection.execute("INSERT OR IGNORE INTO projects (id, name, path) VALUES (1, 'seeded', '/srv/seeded')")
        connection.execute(
            "INSERT OR IGNORE INTO agents (id, project_id, role, display_name, tier) VALUES (1, 1, 'developer', 'Developer', '3')"
        )
        connection.execute("INSERT OR IGNORE INTO agent_tools (agent_id, tool_name) VALUES (1, 'git')")
        connection.execute(
            "INSERT OR IGNORE INTO tasks (id, project_id, title, assigned_agent_id) VALUES (1, 1, 'Seeded task', 1)"
        )
    if version == "0030":
        connection.execute("INSERT OR IGNORE INTO feature_flags (project_id, flag_name, enabled) VALUES (1, 'seeded', 1)")


# -- PostgreSQL: one throwaway server per test session, a fresh database per test (tests/pg_server.py) ----


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL server; skips with the install hint when the binaries or psycopg are missing."""
    from tests.pg_server import INSTALL_HINT, PgServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(INSTALL_HINT)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[postgres]'")
    server = PgServer(bin_dir)
    try:
        server.start()
    except Exception as exc:  # a broken installation skips, with what went wrong
        server.stop()
        pytest.skip(f"could not start a PostgreSQL server: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test (the server keeps its files in
    memory where it can: a session's databases would take gigabytes)."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


# -- nothing left behind in the checkout ----------------------------------------------------------------------

def _untracked() -> set[str] | None:
    """Files git does not track (nor ignore) in this checkout; ``None`` outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "--others", "--exclude-standard"],
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(listed.stdout.splitlines())


def pytest_sessionstart(session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller only, once for the whole run
        session.config._apm_untracked = _untracked()


def pytest_sessionfinish(session, exitstatus) -> None:
    """A test that writes into the working folder (a backup, a journal, a dump) leaves files a user's run would
    not: the run fails naming them, so the test is made to write into its own temporary folder."""
    before = getattr(session.config, "_apm_untracked", None)
    after = _untracked() if before is not None else None
    left = sorted(after - before) if after is not None and before is not None else []
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"tests left files in the checkout: {', '.join(left[:10])}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
