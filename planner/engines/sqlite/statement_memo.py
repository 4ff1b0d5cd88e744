"""What a SQLite preview learns about one statement text, kept for the statement's repeats within a step.

``StepObserver.before`` prepares each statement once more as ``EXPLAIN``
with SQLite's authorizer on, to learn what it will touch. For a statement
that only reads, inserts, updates or deletes rows, that answer depends on
the text and the schema (triggers included), never on the parameters; and
measuring it again would add nothing, since its tables are measured before
its first run and its counters, once made, count every later run. So a data
migration repeating one ``INSERT`` or ``UPDATE`` 50,000 times pays for one
``EXPLAIN``, not 50,000 (about 50 us each before).

What was learned is forgotten whenever the meaning of a text could change:
a statement that changes the schema, sets a PRAGMA, moves a savepoint or
cannot be prepared; the executor's own statements between the migration's
(``StepObserver.running``); the step's end. A write to ``sqlite_master``
without a schema statement (``PRAGMA writable_schema``) counts as a schema
change. Outside a transaction nothing is recalled, since another connection
could change the schema between two statements.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from planner.effects import StepEffects
from planner.engines.sqlite.fk_map import ForeignKeyMap

#: Returned by ``recall`` for a text not seen in this step (``None`` is a statement with nothing to do after).
UNKNOWN: Any = object()

#: ``schema_effect``: the statement only reads and writes rows.
ROWS_ONLY = "rows only"
#: ``schema_effect``: it changes the schema but no table's foreign keys (drops tables; indexes, views, triggers).
KEEPS_FOREIGN_KEYS = "keeps foreign keys"
#: ``schema_effect``: anything else.
ANY = "any"

_ROWS = frozenset((sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE, sqlite3.SQLITE_READ,
                   sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE))
_NEUTRAL = frozenset((sqlite3.SQLITE_DROP_TABLE, sqlite3.SQLITE_DROP_INDEX, sqlite3.SQLITE_DROP_VIEW,
                      sqlite3.SQLITE_DROP_TRIGGER, sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_CREATE_VIEW,
                      sqlite3.SQLITE_CREATE_TRIGGER, sqlite3.SQLITE_REINDEX))  # CREATE INDEX also reindexes
_WRITES = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
_SCHEMA_TABLES = frozenset(("sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"))


def schema_effect(events: list[tuple]) -> str:
    """What a statement does to the schema, from its authorizer events: ``ROWS_ONLY``, ``KEEPS_FOREIGN_KEYS``
    or ``ANY``. A schema statement's own writes to ``sqlite_master`` are part of it; bare ones are not."""
    schema = {action for action, *_ in events} - _ROWS
    bare_schema_write = not schema and any(
        action in _WRITES and (table or "").lower() in _SCHEMA_TABLES for action, table, *_ in events)
    if not schema and not bare_schema_write:
        return ROWS_ONLY
    return KEEPS_FOREIGN_KEYS if schema and schema <= _NEUTRAL else ANY


def rowcount_targets(events: list[tuple], counted: dict[str, int], effects: StepEffects,
                     ours: Callable[[str | None, str | None], bool]) -> tuple[tuple[str, str], ...]:
    """Which of ``effects``' tallies (``deleted``, ``inserted``) a statement's ``rowcount`` goes to.

    Only the statement's own target counts (``source`` is None): what its
    triggers do is counted by the counters. A table made in this step, or
    dropped in it (except by ``rebuild_table``), is no data the database had; tables in ``counted`` are counted
    before and after instead. Decided once per text: what it depends on
    changes only with the schema, which makes the memo forget.
    """
    targets = []
    for action, table, _, database, source in events:
        if source is not None or not ours(table, database) or table in counted:
            continue
        # A table dropped and put back by hand is compared as a whole at the end; rebuild_table's is not.
        if action == sqlite3.SQLITE_DELETE and (table not in effects.dropped_tables or table in effects.rebuilds):
            targets.append(("deleted", table))
        elif action == sqlite3.SQLITE_INSERT and table not in effects.created:
            targets.append(("inserted", table))
    return tuple(targets)


class StatementMemo:
    """Per statement text, what ``StepObserver.before`` returned, while nothing can have changed its meaning.

    It also tells the preview's ``ForeignKeyMap`` what each statement it
    learns about does to the schema.
    """

    def __init__(self, conn: sqlite3.Connection, foreign_keys: ForeignKeyMap):
        self.conn = conn
        self.foreign_keys = foreign_keys
        #: Per text, what ``before`` returned; cleared in place, never replaced (the observer holds it, to look
        #: up each repeat without a call).
        self.known: dict[str, tuple | None] = {}

    def recall(self, sql: str) -> Any:
        """What ``before`` returned for ``sql`` earlier in this step, or ``UNKNOWN``."""
        return self.known.get(sql, UNKNOWN) if self.conn.in_transaction else UNKNOWN

    def keep(self, sql: str, seen: tuple | None) -> None:
        self.known[sql] = seen

    def forget(self) -> None:
        self.known.clear()

    def schema_may_change(self) -> None:
        """A statement whose effect is not known (a PRAGMA, one that cannot be prepared), or a rollback."""
        self.known.clear()
        self.foreign_keys.forget()

    def learn(self, events: list[tuple]) -> tuple[bool, int | None]:
        """A statement was prepared under the watch: whether its text may be recalled in this step, and the
        stamp ``ForeignKeyMap.after_neutral`` needs once it has run (``None``: nothing to carry over)."""
        effect = schema_effect(events)
        if effect == ROWS_ONLY:
            return True, None
        self.known.clear()
        if effect == KEEPS_FOREIGN_KEYS:
            return False, self.foreign_keys.before_neutral()
        self.foreign_keys.forget()
        return False, None
