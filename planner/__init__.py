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
from typing import Any

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
