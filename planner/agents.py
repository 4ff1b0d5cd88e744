"""Read-only views of APM's own tables, for the seed's verification commands.

The seed checks a migration by running ``apm status`` and ``apm agents list``;
these reads answer them without ever creating or changing the database. The
``agents`` table is APM's, not the engine's: any engine reads its rows
(``Engine.read_rows``) and ``agents_from_rows`` makes the same ``Agent`` of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from planner.errors import NoAgentsTable

if TYPE_CHECKING:
    from planner.engines.base import Engine


@dataclass(frozen=True)
class Agent:
    """One row of ``agents``; ``metadata`` is decoded JSON, or the raw text if it is not JSON."""

    id: int
    role: str | None  # NOT NULL in the schema, but read with .get: None when a row lacks the column
    display_name: str | None
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


def read_agents(engine: Engine, role: str | None = None) -> list[Agent]:
    """Every agent (or the one with ``role``), ordered by id; ``NoAgentsTable`` when the database has none."""
    rows = engine.read_rows("agents")
    if rows is None:
        raise NoAgentsTable(engine.display)
    # Filtered and ordered here rather than in SQL: the table is small, and the engines spell parameters apart.
    wanted = [row for row in rows if row.get("role") == role] if role else rows
    return agents_from_rows(sorted(wanted, key=lambda row: _id_order(row.get("id"))))


def _id_order(value: object) -> tuple[bool, Any]:
    return value is None, value


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
