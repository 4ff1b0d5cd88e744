"""Nothing writes into an installed package (issue 22 point 9).

``apm migrate new`` in an empty folder with no config wrote its file into the
shipped catalog (``site-packages/apm_migrations``). Every command that writes
migration files (``new``, ``squash``, ``check --fix``, ``docs``) needs a
project catalog named by an option, a variable or the config file, and
refuses any folder inside an installed package, exit 2, writing nothing.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from planner.catalog import shipped_catalog_dir
from tests.conftest import run_apm, write_migration


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


WRITERS = (
    ("migrate", "new", "Add wishlist"),
    ("migrate", "new", "Add wishlist", "--sql"),
    ("migrate", "squash", "0020", "0027"),
    ("migrate", "check", "--fix", "--yes"),
    ("migrate", "docs"),
)


@pytest.mark.parametrize("args", WRITERS, ids=lambda a: " ".join(a[1:3]))
def test_a_writer_without_a_named_catalog_is_a_usage_error_and_writes_nothing(args, tmp_path: Path):
    shipped = shipped_catalog_dir()
    before = listing(shipped)
    empty = tmp_path / "empty"
    empty.mkdir()
    try:
        result = run_apm(*args, cwd=empty)
        assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
        assert "--migrations-dir" in result.stderr and "APM_MIGRATIONS_DIR" in result.stderr
        assert "apm.toml" in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("Error: ")  # one line, after click's usage
    finally:
        after = listing(shipped)
        for name in set(after) - set(before):  # the old behaviour wrote here: never leave it behind
            (shipped / name).unlink()
        for name, content in before.items():
            if after.get(name) != content:
                (shipped / name).write_bytes(content)
    assert after == before
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("args", WRITERS, ids=lambda a: " ".join(a[1:3]))
def test_a_named_catalog_inside_an_installed_package_is_refused(args, tmp_path: Path):
    # PYTHONUSERBASE moves the user's site-packages (one of the folders Python installs into) to tmp_path.
    userbase = tmp_path / "userbase"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    package = userbase / "lib" / version / "site-packages" / "someone_elses_migrations"
    package.mkdir(parents=True)
    write_migration(package, "0020", "Fix agents.tier", depends_on=())
    write_migration(package, "0027", "Add metadata", depends_on=("0020",))
    if "--fix" in args:  # something for it to fix; the other writers need a catalog that loads
        shutil.copy(package / "migration_0027.py", package / "migration_0027_again.py")
    before = listing(package)
    work = tmp_path / "work"
    work.mkdir()
    result = run_apm("--migrations-dir", str(package), *args, cwd=work, env={"PYTHONUSERBASE": str(userbase)})
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "inside an installed package; nothing was written" in result.stderr
    assert listing(package) == before and list(work.iterdir()) == []


def test_docs_to_an_output_file_outside_any_package_still_works(seed_chain: Path, tmp_path: Path):
    page = tmp_path / "catalog.md"
    done = run_apm("migrate", "docs", "--output", str(page), cwd=tmp_path)  # the shipped catalog, read only
    assert done.returncode == 0, done.stderr
    assert page.read_text().startswith("#")
    named = run_apm("--migrations-dir", str(seed_chain), "migrate", "new", "Next one", cwd=tmp_path)
    assert named.returncode == 0 and (seed_chain / "migration_0031_next_one.py").exists()
