"""Read-only views of APM's own tables, for the seed's verification commands.

The seed checks a migration by running ``apm status`` and ``apm agents list``;
these queries answer them without ever creating or changing the database.
On PostgreSQL the engine reads the rows (``PostgresEngine.agents``) and
``agents_from_rows`` makes the same ``Agent`` of them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.engines.sqlite.database import DEFAULT_BUSY_TIMEOUT, open_read_only
from planner.errors import DatabaseNotFound, NoAgentsTable


@dataclass(frozen=True)
class Agent:
    """One row of ``agents``; ``metadata`` is decoded JSON, or the raw text if it is not JSON."""

    id: int
    role: str
    display_name: str
    tier: Any
    is_active: bool
    agent_type: str | None
    description: str | None
    metadata: Any
    columns: dict[str, Any]


def _decode(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_agents(path: Path, role: str | None = None, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> list[Agent]:
    """Every agent (or the one with ``role``), ordered by id."""
    conn = open_read_only(path, busy_timeout)
    if conn is None:
        raise DatabaseNotFound(path)
    try:
        conn.row_factory = sqlite3.Row
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='agents'").fetchone() is None:
            raise NoAgentsTable(path)
        sql = "SELECT * FROM agents" + (" WHERE role = ?" if role else "") + " ORDER BY id"
        rows = conn.execute(sql, (role,) if role else ()).fetchall()
    finally:
        conn.close()
    return agents_from_rows(dict(row) for row in rows)


def agents_from_rows(rows: Iterable[dict[str, Any]]) -> list[Agent]:
    """``Agent``s from rows as column -> value, whichever engine read them (PostgreSQL's too)."""
    return [
        Agent(
            id=columns["id"],
            role=columns.get("role"),
            display_name=columns.get("display_name"),
            tier=columns.get("tier"),
            is_active=bool(columns.get("is_active")),
            agent_type=columns.get("agent_type"),
            description=columns.get("description"),
            metadata=_decode(columns.get("metadata")),
            columns=columns,
        )
        for columns in rows
    ]
