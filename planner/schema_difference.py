"""One difference between a live schema and what its migrations make, the comparison that finds them, and
why drift could not be checked.

Shared by SQLite's drift (``planner.schema_drift``) and PostgreSQL's
(``planner.engines.postgresql.drift``): both replay into a ``Replay`` and
``compare`` it with the live ``Schema``, so both say a difference the same
way and a fleet's JSON has one shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.errors import PlanError
from planner.schema import Schema, diff, drift_line


@dataclass(frozen=True)
class Difference:
    """One way the live schema differs from its migrations.

    ``object`` names it (``column projects.archived_at``), ``kind`` is
    ``extra`` (in the database, not in its migrations), ``missing`` (the
    other way) or ``changed``, and ``detail`` is the line a person reads.
    """

    object: str
    kind: str
    detail: str

    @property
    def line(self) -> str:
        return self.detail

    def to_json(self) -> dict[str, Any]:
        return {"object": self.object, "kind": self.kind, "detail": self.detail}


class DriftUnchecked(PlanError):
    """The applied migrations cannot be replayed: some are not in the catalog, or one fails on empty tables."""

    def __init__(self, database: str, reason: str):
        self.database, self.reason = database, reason
        super().__init__(f"drift of {database} cannot be checked: {reason}; nothing was changed")


@dataclass(frozen=True)
class Replay:
    """The schema the applied migrations make, and which migration last made or changed each object."""

    state: Schema
    #: (kind, name), as ``Schema.objects`` keys them -> the version that created or last changed it.
    origin: Mapping[tuple[str, str], str]


def compare(expected: Replay, live: Schema) -> list[Difference]:
    """Every difference between what the migrations make (``expected``) and the live schema, on either engine."""
    return [Difference(*drift_line(change, expected.origin)) for change in diff(expected.state, live)
            if change.kind != "rows"]
