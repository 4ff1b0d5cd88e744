"""The ledger's format: which migrations are applied, and the history of everything done to them.

``schema_migrations`` keeps the seed's columns and meaning (``version``,
``description``, ``applied_at``), so ``SELECT MAX(version) FROM
schema_migrations`` still answers "which schema is this". ``checksum`` and
``execution_ms`` are added, nullable, so rows the old framework wrote stay
valid. ``schema_migrations_log`` is append-only: rolling back deletes a row
from ``schema_migrations``, and the log is where its history survives.

The names, the log's actions and outcomes, and the rows as the planner
reads them are the same on every engine; each engine writes and reads its
own tables (``planner.engines.sqlite_ledger``, ``planner.engines.pg_ledger``).
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "schema_migrations"
LOG_TABLE = "schema_migrations_log"

#: Log actions and outcomes, as written in ``schema_migrations_log``.
APPLY, ROLLBACK, MARK_APPLIED, MARK_ROLLED_BACK = "apply", "rollback", "mark-applied", "mark-rolled-back"
OK, FAILED, SKIPPED = "ok", "failed", "skipped"

@dataclass(frozen=True)
class LedgerEntry:
    """One row of ``schema_migrations``: an applied migration."""

    version: str
    description: str | None
    applied_at: str | None
    #: ``None`` for rows written by the old framework or by a mark without a file.
    checksum: str | None = None
    execution_ms: int | None = None


@dataclass(frozen=True)
class LedgerNote:
    """A row of ``schema_migrations`` that is not an applied migration, kept and shown, never counted.

    ``kind`` is ``note`` for a row a migration wrote itself (``0018_consolidated``,
    ``base`` being ``0018``) and ``rolled-back`` for a version APM's framework
    rolled back (``rollback_at`` set): that migration is pending again.
    """

    version: str
    kind: str
    base: str | None
    description: str | None
    applied_at: str | None
    applied_by: str | None = None
    rollback_at: str | None = None
    rollback_reason: str | None = None


@dataclass(frozen=True)
class LogEntry:
    """One row of ``schema_migrations_log``: something done to a migration, and how it went."""

    id: int
    version: str
    action: str
    at: str
    checksum: str | None
    execution_ms: int | None
    outcome: str
    detail: str | None
