"""Database engines, and the registry that picks one from what ``--db`` says.

Each engine is one package here (``sqlite``, ``postgresql``) and says which
``--db`` values it claims: a ``postgresql://``, ``postgres://`` or libpq
``host=... dbname=...`` string is PostgreSQL's, anything else is a path and
SQLite's. Code above this folder never asks which engine it holds; it asks
the registry for the engine (``engine_for``) or for a capability
(``on_server``: a database on a server, named by a URL, rather than a file).
Each also names, by module, what the pytest plugin needs to make a test
database (``testing``) and, if it has one, a fast read-only ledger reader
for the fleet (``ledger_reader``). Adding an engine is one package and one
``EngineKind`` line below.
``planner.engines.base`` is the interface; ``redact`` shows a connection
string safely.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.engines.base import Engine
from planner.urls import database_name, is_postgres, redact

__all__ = ["Engine", "EngineKind", "KINDS", "engine_for", "kind_of", "on_server", "redact", "database_name"]


@dataclass(frozen=True)
class EngineKind:
    """One engine as the registry knows it, before anything of it is imported (start-up stays cheap)."""

    name: str
    #: The package whose ``open_engine(db, **options)`` makes the engine; imported only once it is chosen.
    module: str
    #: Whether a ``--db`` value is this engine's.
    claims: Callable[[str], bool]
    #: A database on a server, named by a URL (a password may be in it), rather than a file on this machine.
    on_server: bool
    #: How a person names the engine (``PostgreSQL``), where a sentence mentions it.
    title: str
    #: The module whose ``databases_for(template)`` makes the pytest plugin's test databases on this engine
    #: (``planner.testing.databases.TestDatabases``); imported only once a test needs one.
    testing: str
    #: ``"module:function"`` reading a ledger read-only without opening the engine, as ``read(db, busy_timeout)``
    #: returning (applied version -> applied at, the log's last (outcome, version, detail) or ``None``): what
    #: ``apm fleet status`` uses over many databases. ``None``: the fleet reads through the engine.
    ledger_reader: str | None = None
    #: Whether its preview measures what each statement locks, read from the server: ``apm migrate check`` then
    #: previews a pending plan (rolled back) for its lock findings. SQLite's one write lock needs no measuring.
    measures_locks: bool = False

    def load(self, target: str) -> Any:
        """What ``target`` (``"module:name"``, one of the fields above) names, importing its module now."""
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)


#: In order: the first that claims a value takes it; the last claims every path.
KINDS: tuple[EngineKind, ...] = (
    EngineKind("postgresql", "planner.engines.postgresql", is_postgres, on_server=True, title="PostgreSQL",
               testing="planner.engines.postgresql.testdb", measures_locks=True),
    EngineKind("sqlite", "planner.engines.sqlite", lambda db: True, on_server=False, title="SQLite",
               testing="planner.engines.sqlite", ledger_reader="planner.engines.sqlite.quick_read:read_quickly"),
)


def kind_of(db: str | Path) -> EngineKind:
    """The registered engine that claims ``db`` (a ``Path`` is always a file)."""
    text = str(db)
    for kind in KINDS:
        if (isinstance(db, str) or not kind.on_server) and kind.claims(text):
            return kind
    raise LookupError(f"no engine claims {redact(text)!r}")  # pragma: no cover (the last kind claims all)


def on_server(db: str | Path) -> bool:
    """Whether ``db`` names a database on a server (a URL) rather than a file: a capability, not a name."""
    return kind_of(db).on_server


def engine_for(db: str | Path, *, busy_timeout: float = 30.0, ledger_schema: str = "public",
               backup_dir: Path | None = None) -> Engine:
    """The engine for ``db``, from the registry.

    ``ledger_schema`` and ``backup_dir`` mean something to a server's engine
    only (SQLite keeps its ledger in the file and its backups beside it);
    each engine's ``open_engine`` takes what applies to it.
    """
    module = importlib.import_module(kind_of(db).module)
    engine: Engine = module.open_engine(db, busy_timeout=busy_timeout, ledger_schema=ledger_schema,
                                        backup_dir=backup_dir)
    return engine
