"""A graph-based, dependency-aware migration planner for SQLite and PostgreSQL.

The modules read like the architecture: ``loader`` reads a folder into a
``catalog``; ``graph`` holds the dependency DAG; ``plan`` decides what runs;
``session`` runs a plan through an engine (``engines/``: SQLite and PostgreSQL)
whose connection keeps the transaction; ``ledger`` records what is applied;
``errors`` names what goes wrong.

Names are exported lazily so that ``import planner`` stays cheap: commands
that never plan (``apm --help``) must not pay for importing networkx.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any, Callable

__version__ = "0.1.0"

_EXPORTS = {
    "Catalog": "planner.catalog",
    "load_catalog": "planner.loader",
    "scan_catalog": "planner.loader",
    "Migration": "planner.migration",
    "MigrationGraph": "planner.graph",
    "Plan": "planner.plan",
    "Step": "planner.plan",
    "apply_plan": "planner.plan",
    "rollback_plan": "planner.plan",
    "inconsistent_history": "planner.plan",
    "unknown_applied": "planner.plan",
    "applied_heads": "planner.plan",
    "Executor": "planner.engines.sqlite.runner",
    "Ledger": "planner.engines.sqlite.ledger",
    "MigrationManager": "planner.compat",
    "DatabaseService": "planner.compat",
    "rebuild_table": "planner.engines.sqlite.rebuild",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name in _error_names():
            return getattr(importlib.import_module("planner.errors"), name)
        raise AttributeError(f"module 'planner' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _error_names() -> set[str]:
    errors = importlib.import_module("planner.errors")
    return {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, Exception)}


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_error_names()])


if TYPE_CHECKING:  # to a type checker it is the dataclass it becomes
    from dataclasses import dataclass as deferred_dataclass
else:
    def deferred_dataclass(**options: Any) -> Callable[[type], type]:
        """``dataclasses.dataclass(**options)``, built when the class is first instantiated or subclassed.

        Building a dataclass at import compiles its methods from source (half a millisecond for a frozen one on
        Python 3.11): more than the rest of most modules. A run pays that for every dataclass of every module it
        imports, used or not, so a type a run seldom makes (an event of a failure, a finding) is built only when
        made. Only asking the class itself before it has an instance could tell the difference (``fields(cls)``:
        none, or a deferred subclass's base's; nothing here asks); a subclass builds its bases first, as
        ``dataclass`` needs their fields.
        """

        def wrap(cls: type) -> type:
            if "__init__" in cls.__dict__ or "__init_subclass__" in cls.__dict__:
                raise TypeError(f"{cls.__qualname__}: deferred_dataclass needs the __init__ dataclass writes")

            def build() -> None:
                # start-up time: dataclasses is imported by the first class built, not by ``import planner``
                import dataclasses

                with _BUILDING:
                    if "__deferred__" not in cls.__dict__:
                        return  # another thread built it
                    for base in reversed(cls.__mro__[1:]):
                        if "__deferred__" in base.__dict__:
                            base.__deferred__()
                    del cls.__init__, cls.__init_subclass__, cls.__deferred__
                    dataclasses.dataclass(cls, **options)

            def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
                build()
                cls.__init__(self, *args, **kwargs)

            def __init_subclass__(subclass: type, **kwargs: Any) -> None:
                build()  # a dataclass subclass reads this class's fields when it is built
                super(cls, subclass).__init_subclass__(**kwargs)

            cls.__init__ = __init__
            cls.__init_subclass__ = classmethod(__init_subclass__)
            cls.__deferred__ = build
            return cls

        return wrap

    _BUILDING = threading.RLock()
