"""The collector is paused only while a catalog, graph or plan is built, and always restored."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from planner.catalog import Catalog
from planner.catalog import collector_paused, without_collector
from planner.migration import DECLARED, Migration
from planner.plan import apply_plan, rollback_plan


def _noop(conn: object) -> None:
    return None


def chain(size: int) -> list[Migration]:
    versions = [f"{n:04d}" for n in range(1, size + 1)]
    return [Migration(v, f"m{v}", Path(f"migration_{v}.py"), v, tuple(versions[i - 1:i]), DECLARED, "", _noop, _noop)
            for i, v in enumerate(versions)]


def test_paused_inside_and_restored_after_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError):
        with collector_paused():
            assert not gc.isenabled()
            1 / 0
    assert gc.isenabled()


def test_a_collector_switched_off_by_the_caller_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_decorated_functions_keep_their_results_and_names() -> None:
    seen: list[bool] = []

    @without_collector
    def probe(x: int) -> int:
        seen.append(gc.isenabled())
        return x + 1

    assert probe(1) == 2 and seen == [False] and probe.__name__ == "probe"
    catalog, problems = Catalog.build(Path("."), chain(5))
    assert not problems and gc.isenabled()
    assert apply_plan(catalog, []).versions == ["0001", "0002", "0003", "0004", "0005"]
    assert rollback_plan(catalog, ["0001", "0002", "0003"], "0002", cascade=True).versions == ["0003", "0002"]
    assert gc.isenabled()
