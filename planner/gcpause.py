"""Pausing Python's cyclic garbage collector while a large, long-lived structure is built.

Loading a catalog, building its graph and making a plan each create one
object per migration (or per dependency) and keep all of them. The cyclic
collector's passes over those new objects find nothing to free, yet on a
100,000-migration catalog they cost about a third of planning time and make it
grow faster than linearly (docs/performance.md). Reference counting still frees
everything as usual; only cycle detection waits until the block ends.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block; restore it as it was found, even on error."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def without_collector(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` with the cyclic collector paused (see ``collector_paused``)."""

    @functools.wraps(function)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        with collector_paused():
            return function(*args, **kwargs)

    return paused
