"""``planner.deferred_dataclass``: a dataclass built when first used, indistinguishable from one built at import.

The planner's seldom-made types (an event of a failure, a finding, a log row)
are built only when a run makes one (docs/performance.md, the data
migration's start-up). Each check below defines the same class both ways
and compares what an instance does; then a real ``apm migrate`` shows which
of them it never built.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from planner import deferred_dataclass

ROOT = Path(__file__).resolve().parents[1]


def _both(options: dict, body: dict) -> tuple[type, type]:
    """The same class body made a dataclass at once and deferred."""
    made = [decorator(**options)(type(name, (), dict(body, __doc__=name, __module__=__name__)))
            for decorator, name in ((dataclasses.dataclass, "Now"), (deferred_dataclass, "Later"))]
    return made[0], made[1]


@pytest.mark.parametrize("options", [{}, {"frozen": True}, {"frozen": True, "eq": False}, {"order": True}])
def test_an_instance_behaves_as_the_dataclass_built_at_import(options: dict) -> None:
    body = {"__annotations__": {"a": "int", "b": "list", "c": "str"}, "b": dataclasses.field(default_factory=list),
            "c": "c"}
    now, later = _both(options, body)
    assert "__deferred__" in later.__dict__  # not built yet
    x, y = now(1), later(1)
    assert "__deferred__" not in later.__dict__
    assert repr(y) == repr(x).replace("Now", "Later")
    assert (later(1, [2]) == later(1, [2])) == (now(1, [2]) == now(1, [2]))
    assert [f.name for f in dataclasses.fields(later)] == [f.name for f in dataclasses.fields(now)] == ["a", "b", "c"]
    assert dataclasses.replace(y, c="d").c == "d"
    assert y.b == [] and y.b is not later(1).b  # the factory runs per instance
    assert (later.__hash__ is None) == (now.__hash__ is None)  # eq without frozen: unhashable, as dataclass says
    if options.get("frozen"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            y.a = 2  # type: ignore[misc]
        assert hash(later(1, (), "c")) == hash(later(1, (), "c")) or not options.get("eq", True)
    if options.get("order"):
        assert later(1) < later(2)


def test_subclasses_deferred_or_not_see_the_fields_of_a_deferred_base() -> None:
    @deferred_dataclass(frozen=True)
    class Base:
        """base"""

        a: int

    @deferred_dataclass(frozen=True)
    class Deferred(Base):
        """deferred subclass"""

        b: str = "b"

    assert "__deferred__" in Deferred.__dict__

    @dataclasses.dataclass(frozen=True)
    class Plain(Base):  # built at once: it needs Base's fields now, so Base is built first
        """plain subclass"""

        c: int = 0

    assert repr(Plain(1, 2)).endswith("Plain(a=1, c=2)")
    assert repr(Deferred(1)).endswith("Deferred(a=1, b='b')")
    assert Deferred(1) != Plain(1) and Deferred(1) == Deferred(1)


def test_post_init_runs_on_the_first_instance_too() -> None:
    seen = []

    @deferred_dataclass()
    class Noted:
        """noted"""

        a: int

        def __post_init__(self) -> None:
            seen.append(self.a)

    Noted(1)
    Noted(2)
    assert seen == [1, 2]


def test_threads_making_the_first_instances_at_once_build_it_once() -> None:
    @deferred_dataclass(frozen=True)
    class Shared:
        """shared"""

        a: int

    start = threading.Barrier(8)
    made: list = []
    errors: list = []

    def make(n: int) -> None:
        start.wait()
        try:
            made.append(Shared(n))
        except Exception as error:  # building it twice raises (frozen: "Cannot overwrite attribute __setattr__")
            errors.append(error)

    threads = [threading.Thread(target=make, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and sorted(s.a for s in made) == list(range(8))


def test_a_class_that_writes_its_own_init_is_refused() -> None:
    with pytest.raises(TypeError, match="needs the __init__"):
        @deferred_dataclass()
        class Own:
            """own"""

            a: int

            def __init__(self) -> None:
                self.a = 1


def test_a_previewed_apply_builds_none_of_the_seldom_made_types(tmp_path: Path) -> None:
    # Each was built at import by every run before; an apply makes none of them (a failure, a replan, a finding,
    # a backup, a log row read back, a rebuild, a dropped table), so none is built. (``is_dataclass`` cannot tell: a
    # deferred subclass of a built dataclass inherits its fields until it is built itself.)
    never = {
        "planner.events": ["StepSkipped", "StepFailed", "Replanned", "RunResult"],
        "planner.findings": ["Finding", "Remedy"],
        "planner.ledger": ["LedgerNote", "LogEntry"],
        "planner.locks": ["LockTaken", "LockFinding"],
        "planner.plan": ["RollbackScope"],
        "planner.request": ["BackupTaken", "PartEnded"],
        "planner.engines.sqlite.effects": ["TableState"],
        "planner.engines.sqlite.sql": ["CreateTable"],
    }
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "migration_0001.py").write_text(
        '"""Migration 0001: items"""\n\ndef upgrade(conn):\n'
        "    conn.execute('CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER)')\n"
        "    for i in range(50):\n        conn.execute('INSERT INTO items VALUES (?, ?)', (i, i))\n")
    code = (
        "import sys\n"
        "from cli.main import apm\n"
        "try:\n"
        f"    apm(['--db', {str(tmp_path / 'app.db')!r}, '--migrations-dir', {str(catalog)!r}, 'migrate', '--yes'],"
        " prog_name='apm')\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "import importlib\n"
        f"never = {never!r}\n"
        "built = sorted(f'{m}.{n}' for m, names in never.items() for n in names\n"
        "               if '__deferred__' not in vars(getattr(importlib.import_module(m), n)))\n"
        "print(built, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"
