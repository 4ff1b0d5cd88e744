"""One difference between a live schema and what its migrations make, and why drift could not be checked.

Shared by the SQLite comparison (``planner.schema_drift``) and PostgreSQL's
(``planner.engines.postgresql.drift``), so both say a difference the same way and a fleet's
JSON has one shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from planner.errors import PlanError

EXTRA, MISSING, CHANGED = "extra", "missing", "changed"


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
