"""`apm migrate new`: the file it writes loads, applies and rolls back; its refusals change nothing."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cli.main import apm
from planner.loader import load_catalog
from tests.conftest import write_migration


def invoke(catalog: Path, *args: str):
    return CliRunner().invoke(apm, ["--migrations-dir", str(catalog), "migrate", "new", *args])


def test_new_depends_on_the_leaves_and_runs(seed_chain: Path, tmp_path: Path) -> None:
    result = invoke(seed_chain, "Add feature_flags table")
    assert result.exit_code == 0, result.output
    path = seed_chain / "migration_0031_add_feature_flags_table.py"
    assert result.output.strip() == f"Created {path}"
    text = path.read_text()
    text = text.replace("pass", "conn.execute('CREATE TABLE flags (id INTEGER)')", 1)
    text = text.replace("pass", "conn.execute('DROP TABLE flags')", 1)
    path.write_text(text)
    catalog = load_catalog(seed_chain)
    assert catalog.get("0031").depends_on == ("0029", "0030")
    db = tmp_path / "app.db"
    base = ["--db", str(db), "--migrations-dir", str(seed_chain), "migrate"]
    applied = CliRunner().invoke(apm, base)
    assert applied.exit_code == 0 and "Applied 0031" in applied.output
    rolled = CliRunner().invoke(apm, [*base, "--rollback", "0031", "--no-backup"])
    assert rolled.exit_code == 0 and "Rolled back 0031" in rolled.output


def test_new_options_and_refusals(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "0007")
    assert invoke(catalog_dir, "Second root", "--root").exit_code == 0
    assert load_catalog(catalog_dir).get("0008").depends_on == ()
    assert invoke(catalog_dir, "On the first", "--depends-on", "1").exit_code == 0
    assert load_catalog(catalog_dir).get("0009").depends_on == ("0001",)
    before = sorted(p.name for p in catalog_dir.iterdir())
    for args, code, words in (
        (["!!!"], 4, "no letters or digits"),
        (["Both", "--root", "--depends-on", "0001"], 2, "cannot be used together"),
        (["Unknown", "--depends-on", "0042"], 4, "0042"),
    ):
        result = invoke(catalog_dir, *args)
        assert result.exit_code == code, result.output
        assert words in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in catalog_dir.iterdir()) == before


def test_new_refuses_a_broken_catalog(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", depends_on=("0003",))
    result = invoke(catalog_dir, "Anything")
    assert result.exit_code == 3 and "0001 depends on 0003" in result.output
    assert len(list(catalog_dir.glob("migration_*.py"))) == 1
