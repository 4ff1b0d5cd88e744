"""Database engines: ``engine_for(db)`` picks SQLite or PostgreSQL from what ``--db`` says.

A path is a SQLite file; ``postgresql://``, ``postgres://`` or libpq's
``host=... dbname=...`` form is PostgreSQL. See ``planner.engines.base`` for
the interface, and ``redact`` for showing a connection string safely.
"""

from __future__ import annotations

from pathlib import Path

from planner.engines.base import Engine
from planner.engines.urls import database_name, is_postgres, redact

__all__ = ["Engine", "engine_for", "is_postgres", "redact", "database_name"]


def engine_for(db: str | Path, *, busy_timeout: float = 30.0, ledger_schema: str = "public",
               backup_dir: Path | None = None) -> Engine:
    """The engine for ``db``: PostgreSQL for a connection string, SQLite for anything else.

    ``ledger_schema`` and ``backup_dir`` only mean something to PostgreSQL
    (SQLite keeps its ledger in the file and its backups beside it).
    """
    if isinstance(db, str) and is_postgres(db):
        from planner.engines.postgresql import PostgresEngine

        return PostgresEngine(db, busy_timeout=busy_timeout, ledger_schema=ledger_schema, backup_dir=backup_dir)
    from planner.engines.sqlite import SQLiteEngine

    return SQLiteEngine(db, busy_timeout=busy_timeout)
