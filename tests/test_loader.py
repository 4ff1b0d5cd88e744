"""The loader: file names, docstrings, dependency rules, and reporting every problem at once."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.errors import message as command_message
from planner.errors import (
    CatalogInvalid,
    CatalogNotFound,
    ConflictingDependencies,
    DuplicateVersion,
    MalformedDependencies,
    MalformedFileName,
    MigrationImportError,
    MissingUpgrade,
    UnknownDependency,
    UnreadableMigration,
)
from planner.loader import load_catalog, parse_docstring, scan_catalog, version_from_file_name
from planner.migration import DECLARED, DOCUMENTED, IMPLIED
from tests.conftest import write_migration


def problems_of(directory: Path) -> tuple:
    """The problems ``load_catalog`` reports, asserting that it refuses the catalog."""
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(directory)
    return info.value.problems


def only_problem(directory: Path, kind: type) -> Exception:
    problems = problems_of(directory)
    assert [type(p) for p in problems] == [kind], problems
    return problems[0]


# -- file names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("migration_0027.py", "0027"),
        ("migration_27.py", "27"),
        ("migration_0027_add_metadata.py", "0027"),
        ("migration_0001_Initial_Schema2.py", "0001"),
        ("__init__.py", None),
        ("README.md", None),
        ("helpers.py", None),
        ("migration_0027.py.bak", None),
        ("migration_0027.txt", None),
    ],
)
def test_version_from_file_name(name: str, version: str | None) -> None:
    assert version_from_file_name(Path(name)) == version


@pytest.mark.parametrize(
    "name", ["migration_27a.py", "migration_.py", "migration_0027-add.py", "migration_x.py", "migration_0027_.py"]
)
def test_a_name_that_starts_like_a_migration_but_does_not_fit_is_an_error(name: str) -> None:
    with pytest.raises(MalformedFileName) as info:
        version_from_file_name(Path(name))
    message = str(info.value)
    assert name in message
    assert "migration_<digits>.py" in message and "rename it" in message


def test_non_ascii_digits_are_not_a_version() -> None:
    # "\d" matches any Unicode digit; a version must be digits a ledger and int() agree on.
    with pytest.raises(MalformedFileName):
        version_from_file_name(Path("migration_\u0660\u0662.py"))


def test_version_is_the_digit_string_as_written(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0027")
    write_migration(catalog_dir, "100", slug="widen")
    catalog = load_catalog(catalog_dir)
    assert catalog.versions == ("0027", "100")
    assert catalog.get("0027").path.name == "migration_0027.py"
    assert catalog.get("100").path.name == "migration_100_widen.py"


def test_init_and_other_files_are_ignored(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    (catalog_dir / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (catalog_dir / "helpers.py").write_text("raise RuntimeError('never imported')\n")
    (catalog_dir / "README.md").write_text("# migrations\n")
    (catalog_dir / "migration_0002.py.orig").write_text("broken(\n")
    (catalog_dir / "__pycache__").mkdir()
    assert load_catalog(catalog_dir).versions == ("0001",)


def test_malformed_file_name_is_reported_not_skipped(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    (catalog_dir / "migration_27a.py").write_text('"""Migration 27a: oops"""\ndef upgrade(conn):\n    pass\n')
    problem = only_problem(catalog_dir, MalformedFileName)
    assert problem.path == catalog_dir / "migration_27a.py"
    assert "migration_27a.py" in str(problem)


def test_numerically_equal_versions_are_duplicates(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0027")
    write_migration(catalog_dir, "27", slug="again")
    problem = only_problem(catalog_dir, DuplicateVersion)
    assert {p.name for p in problem.paths} == {"migration_0027.py", "migration_27_again.py"}
    message = str(problem)
    assert "migration_0027.py" in message and "migration_27_again.py" in message
    assert "defined twice" in message and "renumber one of them" in message


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CatalogNotFound) as info:
        load_catalog(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    # The library states the fact; the command adds the option to pass (cli.errors).
    assert "--migrations-dir" not in str(info.value) and "does not exist" in str(info.value)
    assert "pass --migrations-dir or set APM_MIGRATIONS_DIR" in command_message(info.value)
    a_file = tmp_path / "migration_0001.py"
    a_file.write_text("")
    with pytest.raises(CatalogNotFound, match="is a file, not a directory"):
        load_catalog(a_file)


# -- docstrings ------------------------------------------------------------------


def test_title_description_is_what_follows_the_colon() -> None:
    info = parse_docstring("\n  Migration 0027: Schema fix for agents metadata  \n\nMore text.\n")
    assert info.version == "0027"
    assert info.description == "Schema fix for agents metadata"
    assert info.dependencies is None


def test_title_without_the_pattern_is_the_description() -> None:
    info = parse_docstring("Add metadata column")
    assert info.version is None and info.description == "Add metadata column"


def test_no_docstring() -> None:
    info = parse_docstring(None)
    assert (info.version, info.description, info.dependencies) == (None, "", None)


def test_missing_docstring_falls_back_to_the_slug(catalog_dir: Path) -> None:
    (catalog_dir / "migration_0005_add_flags.py").write_text("def upgrade(conn):\n    pass\n")
    assert load_catalog(catalog_dir).get("0005").description == "add flags"


def test_seed_style_docstring_dependencies() -> None:
    doc = """
Migration 0029: Utility agents

Inserts utility agents.

Dependencies:
- Migration 0027 (metadata column exists)
- Migration 0020 (tier is INTEGER)

Author: WI-108
"""
    assert parse_docstring(doc).dependencies == ("0027", "0020")


def test_docstring_dependencies_none_means_root() -> None:
    assert parse_docstring("Migration 0001: Init\n\nDependencies:\n- None\n").dependencies == ()


def test_docstring_dependencies_may_follow_a_blank_line() -> None:
    doc = "Migration 0029: Utility agents\n\nDependencies:\n\n- Migration 0027 (prerequisite)\n"
    assert parse_docstring(doc).dependencies == ("0027",)


def test_an_empty_dependencies_section_is_an_error_not_a_root() -> None:
    # Reading an empty section as "no dependencies" would silently turn the migration into a root.
    with pytest.raises(ValueError, match="- None"):
        parse_docstring("Migration 0029: x\n\nDependencies:\n\nAuthor: WI-1\n")


def test_unreadable_dependencies_line_is_malformed(catalog_dir: Path) -> None:
    (catalog_dir / "migration_0030.py").write_text(
        '"""Migration 0030: Flags\n\nDependencies:\n- Migration XXXX (prerequisite)\n"""\n'
        "def upgrade(conn):\n    pass\n"
    )
    problem = only_problem(catalog_dir, MalformedDependencies)
    message = str(problem)
    assert "migration_0030.py" in message and "0030" in message
    assert "Migration XXXX (prerequisite)" in message and "- Migration NNNN" in message
    assert problem.versions == ("0030",)


# -- dependency rules ------------------------------------------------------------


def test_depends_on_wins(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "0002")
    write_migration(catalog_dir, "0003", depends_on=("0001",))
    migration = load_catalog(catalog_dir).get("0003")
    assert migration.depends_on == ("0001",)
    assert migration.dependency_source == DECLARED


def test_empty_depends_on_is_a_root(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "0002", depends_on=())
    catalog = load_catalog(catalog_dir)
    assert catalog.get("0002").depends_on == ()
    assert catalog.graph.root_nodes() == ["0001", "0002"]


def test_depends_on_as_a_list_and_in_another_spelling(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0020")
    write_migration(catalog_dir, "0027", depends_on=["20"])
    assert load_catalog(catalog_dir).get("0027").depends_on == ("0020",)


def test_docstring_dependencies_apply_without_depends_on(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "0020")
    write_migration(catalog_dir, "0027", documented=("0001",))
    migration = load_catalog(catalog_dir).get("0027")
    assert migration.depends_on == ("0001",)
    assert migration.dependency_source == DOCUMENTED
    assert migration.documented_dependencies == ("0001",)


def test_docstring_none_is_a_root(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "0002", documented=())
    catalog = load_catalog(catalog_dir)
    assert catalog.get("0002").depends_on == ()
    assert catalog.get("0002").dependency_source == DOCUMENTED


def test_implied_previous_version_first_is_a_root(catalog_dir: Path) -> None:
    for version in ("0100", "0001", "0027", "0020"):  # written out of order on purpose
        write_migration(catalog_dir, version)
    catalog = load_catalog(catalog_dir)
    assert [(m.version, m.depends_on) for m in catalog] == [
        ("0001", ()),
        ("0020", ("0001",)),
        ("0027", ("0020",)),
        ("0100", ("0027",)),
    ]
    assert {m.dependency_source for m in catalog} == {IMPLIED}


def test_implied_dependency_skips_nothing_when_the_previous_file_is_a_duplicate(catalog_dir: Path) -> None:
    # 0003 follows version 2 whichever of its two files is meant: it must not silently depend on 0001.
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "0002")
    write_migration(catalog_dir, "2", slug="twin")
    write_migration(catalog_dir, "0003")
    migrations, problems = scan_catalog(catalog_dir)
    assert [type(p) for p in problems] == [DuplicateVersion]
    assert {m.version: m.depends_on for m in migrations}["0003"] in {("0002",), ("2",)}
    assert [type(p) for p in problems_of(catalog_dir)] == [DuplicateVersion]


def test_depends_on_and_docstring_agreeing_is_fine(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0020")
    write_migration(catalog_dir, "0027", depends_on=("0020",), documented=("20",))
    assert load_catalog(catalog_dir).get("0027").depends_on == ("0020",)


def test_depends_on_and_docstring_disagreeing_names_both_lists(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "0020")
    write_migration(catalog_dir, "0027", depends_on=("0020",), documented=("0001", "0020"))
    problem = only_problem(catalog_dir, ConflictingDependencies)
    assert problem.declared == ("0020",) and problem.documented == ("0001", "0020")
    message = str(problem)
    assert "migration_0027.py" in message
    assert "depends_on = (0020)" in message and "Dependencies: (0001, 0020)" in message
    assert "make them agree" in message


def test_conflict_between_empty_depends_on_and_documented_dependency(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "0002", depends_on=(), documented=("0001",))
    message = str(only_problem(catalog_dir, ConflictingDependencies))
    assert "depends_on = (none)" in message and "Dependencies: (0001)" in message


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("'0020'", "not str"),
        ("{'0020'}", "not set"),
        ("('0020', 'x21')", "'x21'"),
        ("('0020', None)", "None"),
        ("('0020', True)", "True"),
        ("('-1',)", "'-1'"),
        ("('\u00b2',)", "'\u00b2'"),
    ],
)
def test_malformed_depends_on(catalog_dir: Path, value: str, fragment: str) -> None:
    write_migration(catalog_dir, "0020")
    write_migration(catalog_dir, "0027", extra=f"depends_on = {value}\n")
    problem = only_problem(catalog_dir, MalformedDependencies)
    message = str(problem)
    assert "migration_0027.py" in message and "0027" in message
    assert fragment in message and "depends_on" in message
    assert problem.versions == ("0027",)


def test_integer_depends_on_entries_are_read_as_versions(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0020")
    write_migration(catalog_dir, "0027", extra="depends_on = (20,)\n")
    assert load_catalog(catalog_dir).get("0027").depends_on == ("0020",)


# -- loading a module ----------------------------------------------------------


def test_syntax_error_is_reported_with_its_line(catalog_dir: Path) -> None:
    (catalog_dir / "migration_0001.py").write_text('"""Migration 0001: x"""\n\ndef upgrade(conn)\n    pass\n')
    problem = only_problem(catalog_dir, UnreadableMigration)
    assert problem.line == 3
    message = str(problem)
    assert message.startswith("migration_0001.py, line 3: cannot load migration 0001: syntax error")


def test_undecodable_file_is_unreadable(catalog_dir: Path) -> None:
    (catalog_dir / "migration_0001.py").write_bytes(b'"""Migration 0001: x"""\nname = "\xff\xfe"\n')
    problem = only_problem(catalog_dir, UnreadableMigration)
    assert "migration_0001.py" in str(problem) and "0001" in str(problem)


def test_exception_at_import_names_file_and_cause(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", extra="raise RuntimeError('boom at import')\n")
    problem = only_problem(catalog_dir, MigrationImportError)
    assert isinstance(problem.cause, RuntimeError)
    assert str(problem) == "migration_0001.py: importing migration 0001 raised RuntimeError: boom at import"


def test_system_exit_at_import_is_caught(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", extra="import sys\nsys.exit(3)\n")
    assert isinstance(only_problem(catalog_dir, MigrationImportError).cause, SystemExit)


def test_missing_upgrade(catalog_dir: Path) -> None:
    (catalog_dir / "migration_0001.py").write_text('"""Migration 0001: x"""\ndef downgrade(conn):\n    pass\n')
    problem = only_problem(catalog_dir, MissingUpgrade)
    assert str(problem) == "migration_0001.py: migration 0001 defines no upgrade(conn) function; add one"


def test_upgrade_that_is_not_callable_is_missing(catalog_dir: Path) -> None:
    (catalog_dir / "migration_0001.py").write_text('"""Migration 0001: x"""\nupgrade = "SQL"\n')
    assert only_problem(catalog_dir, MissingUpgrade).versions == ("0001",)


def test_downgrade_is_optional(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", downgrade=None, extra="def validate_post(conn):\n    return True\n")
    migration = load_catalog(catalog_dir).get("0001")
    assert migration.downgrade is None and migration.reversible is False
    assert migration.validate_pre is None and migration.validate_post is not None


def test_functions_are_the_module_functions(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", upgrade="conn.append('up')", downgrade="conn.append('down')")
    migration = load_catalog(catalog_dir).get("0001")
    calls: list[str] = []
    migration.upgrade(calls)  # type: ignore[arg-type]
    migration.downgrade(calls)  # type: ignore[misc, arg-type]
    assert calls == ["up", "down"] and migration.reversible


def test_a_migration_may_define_a_dataclass(catalog_dir: Path) -> None:
    # dataclasses look the defining module up in sys.modules while the class is made.
    extra = (
        "from __future__ import annotations\nimport dataclasses\nfrom typing import ClassVar\n\n"
        "@dataclasses.dataclass\nclass Row:\n    name: str\n    kind: ClassVar[str] = 'x'\n"
    )
    write_migration(catalog_dir, "0001", extra=extra, upgrade="conn.append(Row('a'))")
    rows: list = []
    load_catalog(catalog_dir).get("0001").upgrade(rows)  # type: ignore[arg-type]
    assert rows[0].name == "a"
    assert "apm_migration_0001" not in sys.modules


def test_loading_does_not_import_networkx() -> None:
    # `apm --help` and the loader must stay cheap; only graph building pays for networkx.
    code = "import sys, planner, planner.loader, planner.catalog; print('networkx' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.stdout.strip() == "False"


def test_checksum_is_sha256_of_the_file_bytes(catalog_dir: Path) -> None:
    path = write_migration(catalog_dir, "0001")
    assert load_catalog(catalog_dir).get("0001").checksum == hashlib.sha256(path.read_bytes()).hexdigest()


def test_checksum_changes_with_the_file(catalog_dir: Path) -> None:
    path = write_migration(catalog_dir, "0001")
    before = load_catalog(catalog_dir).get("0001")
    path.write_text(path.read_text() + "# edited\n")
    after = load_catalog(catalog_dir).get("0001")
    assert before.checksum != after.checksum and before != after


def test_loading_twice_gives_equal_migrations(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    assert list(load_catalog(catalog_dir)) == list(load_catalog(catalog_dir))


def test_seed_catalog_loads(seed_chain: Path) -> None:
    catalog = load_catalog(seed_chain)
    assert catalog.versions == ("0001", "0020", "0027", "0029", "0030")
    assert {m.version: m.depends_on for m in catalog} == {
        "0001": (),
        "0020": ("0001",),
        "0027": ("0020",),
        "0029": ("0027",),
        "0030": ("0001",),
    }
    assert catalog.get("0027").description == "Add metadata"


# -- every problem at once --------------------------------------------------------


def test_all_problems_are_reported_at_once(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    (catalog_dir / "migration_27a.py").write_text("def upgrade(conn):\n    pass\n")
    write_migration(catalog_dir, "0002")
    write_migration(catalog_dir, "2", slug="twin")
    (catalog_dir / "migration_0003.py").write_text("def upgrade(conn)\n")
    write_migration(catalog_dir, "0004", extra="1 / 0\n")
    (catalog_dir / "migration_0005.py").write_text('"""Migration 0005: no upgrade"""\n')
    write_migration(catalog_dir, "0006", depends_on=("0001",), documented=("0004",))
    write_migration(catalog_dir, "0007", extra="depends_on = '0001'\n")
    write_migration(catalog_dir, "0008", depends_on=("0099",))
    write_migration(catalog_dir, "0009", depends_on=("0009",))
    write_migration(catalog_dir, "0010", depends_on=("0011",))
    write_migration(catalog_dir, "0011", depends_on=("0010",))
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(catalog_dir)
    kinds = sorted(type(p).__name__ for p in info.value.problems)
    assert kinds == sorted(
        [
            "MalformedFileName",
            "DuplicateVersion",
            "UnreadableMigration",
            "MigrationImportError",
            "MissingUpgrade",
            "ConflictingDependencies",
            "MalformedDependencies",
            "UnknownDependency",
            "SelfDependency",
            "DependencyCycle",
        ]
    )
    message = str(info.value)
    assert str(catalog_dir) in message and "has 10 problems" in message
    # Every problem carries the file it is about (a cycle, the file of its lowest version).
    for problem in info.value.problems:
        assert problem.path is not None and problem.path.parent == catalog_dir, problem
    by_kind = {type(p).__name__: p for p in info.value.problems}
    assert by_kind["SelfDependency"].path.name == "migration_0009.py"
    assert by_kind["DependencyCycle"].cycle == ("0010", "0011", "0010")
    assert by_kind["UnknownDependency"].versions == ("0008", "0099")


def test_dependency_on_a_file_that_failed_to_load_is_not_reported_again(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", extra="raise ValueError('broken')\n")
    write_migration(catalog_dir, "0002", depends_on=("0001",))
    write_migration(catalog_dir, "0003")  # implied: depends on 0002
    (catalog_dir / "migration_0004.py").write_text("def upgrade(conn) pass\n")
    write_migration(catalog_dir, "0005")  # implied: depends on 0004, which failed
    write_migration(catalog_dir, "0006", depends_on=("4",))
    problems = problems_of(catalog_dir)
    assert [type(p) for p in problems] == [MigrationImportError, UnreadableMigration]


def test_dependency_on_a_duplicated_version_is_not_reported_as_unknown(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "1", slug="twin")
    write_migration(catalog_dir, "0002", depends_on=("0001",))
    assert [type(p) for p in problems_of(catalog_dir)] == [DuplicateVersion]


def test_unknown_dependency_names_file_and_versions(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0027")
    write_migration(catalog_dir, "0029", depends_on=("0028",))
    problem = only_problem(catalog_dir, UnknownDependency)
    assert problem.versions == ("0029", "0028")
    assert problem.path is not None and problem.path.name == "migration_0029.py"
    assert str(problem).startswith("0029 depends on 0028, which does not exist")


def test_scan_catalog_returns_what_loaded_and_what_did_not(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001")
    write_migration(catalog_dir, "0002", extra="raise KeyError('x')\n")
    migrations, problems = scan_catalog(catalog_dir)
    assert [m.version for m in migrations] == ["0001"]
    assert [type(p) for p in problems] == [MigrationImportError]


# -- bytecode cache ---------------------------------------------------------------


@pytest.fixture
def bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Write bytecode caches in this test, whatever PYTHONDONTWRITEBYTECODE says."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)


def cache_of(path: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(path)))


def test_second_load_runs_the_cached_code(catalog_dir: Path, bytecode: None, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_migration(catalog_dir, "0001", upgrade="conn.append('v1')")
    load_catalog(catalog_dir)
    data = cache_of(path).read_bytes()
    assert data[:4] == importlib.util.MAGIC_NUMBER and data[4:8] == (0b11).to_bytes(4, "little")

    def no_compile(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again although the cache holds these bytes")

    monkeypatch.setattr("builtins.compile", no_compile)
    calls: list[str] = []
    load_catalog(catalog_dir).get("0001").upgrade(calls)  # type: ignore[arg-type]
    assert calls == ["v1"]


def test_an_edit_that_keeps_size_and_mtime_is_not_served_stale(catalog_dir: Path, bytecode: None) -> None:
    path = write_migration(catalog_dir, "0001", upgrade="conn.append('v1')")
    stat = path.stat()
    load_catalog(catalog_dir)
    path.write_text(path.read_text().replace("'v1'", "'v2'"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    migration = load_catalog(catalog_dir).get("0001")
    calls: list[str] = []
    migration.upgrade(calls)  # type: ignore[arg-type]
    assert calls == ["v2"]
    assert migration.checksum == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_damaged_cache_is_compiled_again(catalog_dir: Path, bytecode: None) -> None:
    path = write_migration(catalog_dir, "0001", upgrade="conn.append('v1')")
    load_catalog(catalog_dir)
    cache = cache_of(path)
    cache.write_bytes(cache.read_bytes()[:20])
    calls: list[str] = []
    load_catalog(catalog_dir).get("0001").upgrade(calls)  # type: ignore[arg-type]
    assert calls == ["v1"]


def test_no_cache_is_written_when_python_is_told_not_to(
    catalog_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    path = write_migration(catalog_dir, "0001")
    load_catalog(catalog_dir)
    assert not cache_of(path).exists()


def test_a_read_only_folder_still_loads(catalog_dir: Path, bytecode: None) -> None:
    write_migration(catalog_dir, "0001")
    catalog_dir.chmod(0o555)
    try:
        assert load_catalog(catalog_dir).versions == ("0001",)
    finally:
        catalog_dir.chmod(0o755)


def test_the_cache_is_the_one_importlib_accepts(catalog_dir: Path, bytecode: None) -> None:
    path = write_migration(catalog_dir, "0001", extra="VALUE = 41 + 1\n")
    load_catalog(catalog_dir)
    spec = importlib.util.spec_from_file_location("check_cache", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.VALUE == 42


def test_loading_leaves_the_garbage_collector_as_it_found_it(catalog_dir: Path) -> None:
    # scan_catalog pauses the cyclic collector while it loads (docs/performance.md).
    import gc

    write_migration(catalog_dir, "0001")
    assert gc.isenabled()
    scan_catalog(catalog_dir)
    assert gc.isenabled()
    gc.disable()
    try:
        scan_catalog(catalog_dir)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_bytecode_cache_is_where_importlib_puts_it(catalog_dir: Path, bytecode: None) -> None:
    paths = [write_migration(catalog_dir, "0001"), write_migration(catalog_dir, "0002", slug="second")]
    load_catalog(catalog_dir)
    for path in paths:
        assert cache_of(path).is_file()
