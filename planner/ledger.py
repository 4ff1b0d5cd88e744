"""The ledger's format: which migrations are applied, and the history of everything done to them.

``schema_migrations`` keeps the seed's columns and meaning (``version``,
``description``, ``applied_at``), so ``SELECT MAX(version) FROM
schema_migrations`` still answers "which schema is this". ``checksum`` and
``execution_ms`` are added, nullable, so rows the old framework wrote stay
valid. ``schema_migrations_log`` is append-only: rolling back deletes a row
from ``schema_migrations``, and the log is where its history survives.

The names, the log's actions and outcomes, and the rows as the planner
reads them are the same on every engine; each engine writes and reads its
own tables (``planner.engines.sqlite.ledger``, ``planner.engines.postgresql.ledger``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from planner import deferred_dataclass

TABLE = "schema_migrations"
LOG_TABLE = "schema_migrations_log"

#: Log actions and outcomes, as written in ``schema_migrations_log``.
# Final: APPLY and ROLLBACK double as a plan step's direction (planner.plan.Direction).
APPLY: Final = "apply"
ROLLBACK: Final = "rollback"
MARK_APPLIED, MARK_ROLLED_BACK = "mark-applied", "mark-rolled-back"
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


@deferred_dataclass(frozen=True)
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


@deferred_dataclass(frozen=True)
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


# -- which ``schema_migrations`` tables are ledgers this project may read and write -------------------

#: The seed's framework wrote these three; every ledger this project adopts has them.
SEED_COLUMNS = ("version", "description", "applied_at")
#: What this project adds to the seed's (and writes on every row).
OWN_COLUMNS = (*SEED_COLUMNS, "checksum", "execution_ms")
#: APM's later framework's columns besides the seed's (docs/coming-from-apm.md).
LATER_COLUMNS = ("id", "rollback_at", "rollback_reason", "applied_by")
KNOWN_COLUMNS = frozenset(OWN_COLUMNS + LATER_COLUMNS)


@dataclass(frozen=True)
class LedgerColumn:
    """One column of an existing ``schema_migrations``, as the engine's catalog describes it."""

    name: str
    #: The declared type, lower case (SQLite's as written, PostgreSQL's ``data_type``).
    type: str
    not_null: bool
    #: Whether the database fills it when an INSERT leaves it out (a default, a serial, a rowid alias).
    fills_itself: bool


def describe_columns(columns: Sequence[LedgerColumn]) -> str:
    """``version varchar(255), dirty boolean NOT NULL``: the table as a person would recognise it."""
    return ", ".join(f"{c.name} {c.type}".rstrip() + (" NOT NULL" if c.not_null else "") for c in columns)


def unknown_shape(columns: Sequence[LedgerColumn], *, required: Collection[str], written: Collection[str],
                  text_version: bool) -> str | None:
    """Why ``columns`` is not a ledger this project knows, or ``None`` when it is.

    A known ledger has every ``required`` column, no column outside the
    seed's, APM's later framework's and this project's, a ``version`` that
    keeps the text it is given (``text_version``: ``0001`` stays ``0001``), and
    no NOT NULL column the project would leave empty (one outside ``written``
    that the database does not fill itself). Anything else was made by
    another tool, with its own idea of what a row means: reading it would
    count its rows as migrations, and writing it would corrupt that tool's
    history, so the caller refuses it untouched.
    """
    names = {c.name for c in columns}
    foreign = sorted(names - KNOWN_COLUMNS)
    if foreign:
        return f"apm never uses the column(s) {', '.join(foreign)}"
    lacking = [name for name in required if name not in names]
    if lacking:
        return f"it lacks {', '.join(lacking)}"
    if not text_version:
        return "its version column is not text, so 0001 would not stay 0001"
    unfilled = [c.name for c in columns if c.not_null and c.name not in written and not c.fills_itself]
    if unfilled:
        return f"apm would leave the NOT NULL column(s) {', '.join(unfilled)} empty"
    return None
