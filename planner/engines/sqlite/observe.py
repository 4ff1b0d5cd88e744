"""Watching a migration run: what each statement drops, deletes, overwrites or renames, measured before it runs.

A preview runs the plan for real inside one transaction on the real file.
Before each statement a migration executes, ``StepObserver.before`` prepares
it once more as ``EXPLAIN <statement>``: preparing makes SQLite call the
authorizer with every table and column the statement (and any trigger it
fires) will drop, delete from, update, rename or create, and running
``EXPLAIN`` executes nothing. Only then is the data measured, and only what
the statement touches:

* a table about to be dropped: its rows, and each column's non-default values;
* a column about to be dropped (``ALTER TABLE ... DROP COLUMN``): its values;
* rows about to be deleted: counted by the statement itself (``rowcount``),
  or, when a trigger does the deleting, by a TEMP trigger that counts them
  (``effects.ValueCounters``);
* values about to be changed by ``UPDATE`` (an upsert's included): a TEMP
  trigger counts each value that changes, per table and column, until a
  copy of the column takes its place (below): a value that existed before
  the plan and was not NULL is overwritten (loss); a NULL, or a value the
  plan wrote (a table it created, a column it added, then backfilled), is
  only set;
* rows a REPLACE deletes (``OR REPLACE``, or a table's ``ON CONFLICT
  REPLACE``, of an INSERT or an UPDATE): the table's rows counted before
  and after the statement, since REPLACE fires no trigger.

Which tables and columns the plan wrote is kept across its steps
(``effects.PlanWrites``): the same rule as PostgreSQL's preview, which tells them by
the catalog's oids.

Work is proportional to what a step touches, never to the size of the
schema or of the database. At the end of the step the effects are netted:
a table dropped and renamed back into place (a rebuild) is a rebuild, with
its lost columns named; ``rebuild_table`` announces which columns it carries
over, so a ``convert`` that renames is a rename, not a loss.

SQLite's trace callback records every statement the migration's code
executes, parameters filled in, for ``--sql``.

What a SQLite preview learns about one statement text, kept for the statement's repeats within a step.

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
import sys
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, TypeGuard, cast

from planner.engines.sqlite.effects import PlanWrites, StepEffects, TableState, ValueCounters, resolve
from planner.engines.sqlite.foreign_keys import ForeignKeyMap
from planner.engines.sqlite.ledger import may_write_ledger
from planner.engines.sqlite.sql import compile_only, keywords, name_after, renamed_column, table_xinfo, tokens
from planner.ledger import LOG_TABLE, TABLE
from planner.locks import StepLocks
from planner.preview import DataImpact, ObjectKind, SchemaChange, watched
from planner.sql import quote_identifier

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
                     ours: Callable[[str | None, str | None], bool],
                     written: Callable[[str], bool]) -> tuple[tuple[dict[str, int], str], ...]:
    """Which of ``effects``' tallies a statement's ``rowcount`` goes to, as (tally, table): rows ``inserted``, rows
    ``deleted`` (lost), or ``deleted_own`` (rows of a table the plan wrote, ``written``: not loss).

    Only the statement's own target counts (``source`` is None): what its
    triggers do is counted by the counters. A table made in this step, or
    dropped in it (except by ``rebuild_table``), is no data the database had; tables in ``counted`` are counted
    before and after instead. Decided once per text: what it depends on
    changes only with the schema or the step (a new ``effects``), which make the memo forget.
    """
    targets = []
    for action, table, _, database, source in events:
        if source is not None or not ours(table, database) or table in counted:
            continue
        # A table dropped and put back by hand is compared as a whole at the end; rebuild_table's is not.
        if action == sqlite3.SQLITE_DELETE and (table not in effects.dropped_tables or table in effects.rebuilds):
            targets.append((effects.deleted_own if written(table) else effects.deleted, table))
        elif action == sqlite3.SQLITE_INSERT and table not in effects.created:
            targets.append((effects.inserted, table))
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


_IGNORED = {TABLE.lower(), LOG_TABLE.lower()}
# Python 3.11 took ``None`` to mean "no authorizer"; 3.10 calls it, and denies every statement after the first
# preview. There, an authorizer that allows everything stands in (it costs a call per check, on 3.10 only).
_NO_AUTHORIZER = None if sys.version_info >= (3, 11) else (lambda *_: sqlite3.SQLITE_OK)


def _ours(table: str | None, database: str | None) -> TypeGuard[str]:  # True says table is a name
    """Whether an authorizer event is about a user table of the main database (not the ledger, not SQLite's)."""
    if table is None or database != "main":
        return False
    lowered = table.lower()
    return not lowered.startswith("sqlite_") and lowered not in _IGNORED


class StepObserver:
    """Watches one connection through a preview; the connection proxy calls ``before``/``after`` per statement."""

    def __init__(self, conn: sqlite3.Connection, *, capture_sql: bool = False):
        self.conn = conn
        self.capture_sql = capture_sql
        self.effects = StepEffects()
        self._events: list[tuple[int, str | None, str | None, str | None, str | None]] = []
        self.counters = ValueCounters(conn)
        self._tally = self.counters.tally  # the same list, changed in place: empty while nothing is counted
        self._live = self.counters.triggers  # the same dict, changed in place: empty while no trigger counts
        self._tracing = False
        self.plan_writes = PlanWrites()  # kept across steps
        #: One ``StepLocks`` per step watched, in order: the tables each rebuilt (``attach_rebuilds``).
        self.reports: list[StepLocks] = []
        self._foreign_keys = ForeignKeyMap(conn)  # who references whom, across steps
        self._known = StatementMemo(conn, self._foreign_keys)  # what ``before`` learned per text, within a step
        self._recalled = self._known.known  # the same dict: ``StatementMemo.recall`` without the call
        self.counters.settled = self._known.forget
        #: Called before a statement that may write the ledger, move a savepoint, or cannot be prepared (the
        #: session's deferred ledger watch, ``Ledger.watch_now``); ``None`` when the step is watched already.
        self.ledger_watch: Callable[[], None] | None = None

    # -- the callbacks -----------------------------------------------------------------------

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, database: str | None,
                   source: str | None) -> int:
        self._events.append((action, arg1, arg2, database, source))
        return sqlite3.SQLITE_OK

    def _trace(self, statement: str) -> None:
        if self._tracing and not statement.startswith("--") and not _reads_only(statement):
            # A statement that fires a trigger is reported again for each trigger program: keep it once.
            if not self.effects.statements or self.effects.statements[-1] != statement:
                self.effects.statements.append(statement)

    # -- a step ----------------------------------------------------------------------------

    def start_step(self) -> None:
        self.effects = StepEffects()
        self.reports.append(StepLocks([], [], [], rebuilt=[]))
        self._known.forget()
        if self.capture_sql:
            self.conn.set_trace_callback(self._trace)

    def running(self, on: bool) -> None:
        """The migration's own code is running (``on``) or not: only its statements are traced."""
        self._known.forget()  # ``before`` does not see the executor's own statements in between
        self._tracing = on and self.capture_sql

    def stop(self) -> None:
        """The step failed: stop tracing (the rollback removes the counters with everything else)."""
        self._tracing = False
        self._known.schema_may_change()  # the step is being rolled back
        self.counters.forget()
        if self.capture_sql:
            self.conn.set_trace_callback(None)

    def end_step(self) -> tuple[list[SchemaChange], list[DataImpact], list[str]]:
        """The step's net schema changes, its data impact, and the SQL it ran; the counters are removed."""
        self._tracing = False
        self._known.forget()
        if self.capture_sql:
            self.conn.set_trace_callback(None)
        counts = self.counters.take()
        changes, impact = resolve(self.effects, counts, self._table_columns, self._row_count, self._sql_of)
        report = self.reports[-1]
        for change in changes:
            if change.kind == "table" and change.action == "rebuilt":
                report.rebuilt.append({"table": change.name, "rows": self._rows_rebuilt(change.name)})  # type: ignore[union-attr]
                report.rewrites.append(change.name)
        return changes, impact, self.effects.statements

    def _rows_rebuilt(self, table: str) -> int:
        """The rows ``table`` held when it was rebuilt: what the rebuild copied under the write lock."""
        if table in self.effects.rebuilt_rows:
            return self.effects.rebuilt_rows[table]
        state = self.effects.dropped_tables.get(table)
        return state.rows if state is not None and state.rows >= 0 else self._row_count(table)

    def note_rebuild(self, table: str, carried: dict[str, str], dropped: Sequence[str],
                     columns: Sequence[str] = (), changed: dict[str, int] | None = None) -> None:
        """``rebuild_table`` is about to rebuild ``table``: ``carried`` maps old columns to their new names,
        ``columns`` are the new table's, ``changed`` counts the values a conversion changed, per old column."""
        self._known.forget()  # what a repeated statement's rowcount counts depends on the rebuilds
        values = self._column_values(table, list(dropped)) if dropped else {}
        self.effects.rebuilds[table] = (dict(carried), list(dropped))
        self.effects.rebuilt_rows[table] = self._row_count(table)
        self.effects.rebuilt_sql[table] = self._sql_of(table)
        for column in dropped:
            self.effects.dropped_columns.append((table, column, values.get(column, (0, 0))))
        self.plan_writes.rebuilding(table, carried, columns)
        for column, n in sorted((changed or {}).items()):
            if n and not self.plan_writes.written(table, column):
                self.effects.converted.append((table, column, n))

    # -- before and after each statement ------------------------------------------------------

    def run(self, cursor: sqlite3.Cursor, sql: str, parameters: Any = (), many: bool = False) -> None:
        """Run a statement of the migration on ``cursor`` (``many``: ``executemany`` over ``parameters``): measured
        before it runs (``before``), counted after it (``after``), its counts undone if SQLite undoes it.

        A statement that only reads and writes rows is measured once per step,
        however often it runs (``StatementMemo``): a repeat costs a dict lookup.
        """
        # The path of a data migration's loop, every repeat: no call or test that can be spared (``recall``
        # inlined). A text learned in this step with nothing to count after it, while no trigger counts, just runs.
        live = self._live
        seen = self._recalled.get(sql, UNKNOWN) if self.conn.in_transaction else UNKNOWN
        if seen is None and not live and not many:
            cursor.execute(sql, parameters)
            return
        if many:
            parameters = list(parameters)
            if not parameters:  # nothing runs: nothing to watch
                cursor.executemany(sql, parameters)
                return
        if live and sum(self._tally) >= self.counters.check_at:  # a trigger has counted its share: copy instead
            tracing, self._tracing = self._tracing, False
            if self.counters.snapshot_due():
                self._known.forget()  # each text is looked at again: an INSERT must settle a copy first
                seen = UNKNOWN
            self._tracing = tracing
        if seen is UNKNOWN:
            seen = self.before(sql, parameters[0] if many else parameters)
        if live:  # what the triggers count must go back if the statement fails (``before`` may have made the first)
            self.counters.mark = self._tally.copy()
        try:
            if many:
                cursor.executemany(sql, parameters)
            else:
                cursor.execute(sql, parameters)
        except BaseException:
            self.counters.statement_failed(many)  # the counters undo what SQLite undid
            raise
        if seen is not None:
            targets, rest = seen
            if rest is not None:
                self.after(rest, cursor.rowcount)
            rowcount = cursor.rowcount
            if rowcount > 0:  # what the statement did to its own target
                for tally, table in targets:
                    tally[table] = tally.get(table, 0) + rowcount

    def before(self, sql: str, parameters: Any = ()) -> tuple | None:
        """Measure what ``sql`` is about to destroy; returns what ``run`` needs after it (``None``: nothing).

        A PRAGMA is not prepared twice: some take effect while they are
        compiled, so even ``EXPLAIN`` of one would run it, and none of them
        deletes or overwrites user data.
        """
        tracing, self._tracing = self._tracing, False
        if _is_pragma(sql):
            self._known.schema_may_change()
            self.counters.settle()
            self._tracing = tracing
            return None
        self._events.clear()
        self.conn.set_authorizer(self._authorize)
        try:
            compile_only(self.conn, sql, parameters)
        except sqlite3.Error:
            if self.ledger_watch is not None:  # what it does is unknown: watched as if it wrote the ledger
                self.ledger_watch()
            self._tracing = tracing
            self._known.schema_may_change()
            return None  # the statement itself will fail, with SQLite's own message, when it runs
        finally:
            self.conn.set_authorizer(_NO_AUTHORIZER)
        events = list(self._events)
        if self.ledger_watch is not None and may_write_ledger(events):
            self.ledger_watch()  # made before the statement runs (SQLite prepares it again, with the triggers)
        repeatable, stamp = self._known.learn(events)
        if not repeatable:  # a schema change may drop, rename or rebuild a copied table: count the copies now
            self.counters.settle()
        self._measure(sql, events)
        # A statement that may replace rows (REPLACE, OR REPLACE, or its table's ON CONFLICT REPLACE) or update
        # them (ON CONFLICT): its rowcount is not rows added, and REPLACE deletes the rows in its way without
        # firing a trigger, so the table is counted before and after.
        counted: dict[str, int] = {}
        replacing = _may_replace(sql)
        for action, table, _, database, source in events:
            if (action in _ADDS_OR_CHANGES and source is None and _ours(table, database) and table not in counted
                    and table not in self.effects.created and (replacing or self._replaces(table))):
                counted[table] = self._row_count(table)
        if counted:
            repeatable = False  # counted afresh each time
        targets = rowcount_targets(events, counted, self.effects, _ours, self.plan_writes.written)
        savepoints = _savepoints(events)
        # (targets, what ``after`` needs): a plain INSERT, UPDATE or DELETE needs no ``after``.
        rest = (events, counted, stamp, savepoints) if counted or stamp is not None or savepoints else None
        seen = (targets, rest) if targets or rest is not None else None
        if repeatable:
            self._known.keep(sql, seen)
        self._tracing = tracing
        return seen

    def after(self, rest: tuple, rowcount: int) -> None:
        """A statement that moved savepoints, changed the schema or may have replaced rows has run: follow it
        (``rowcount`` is for the top-level statement only)."""
        events, counted, stamp, savepoints = rest
        for operation, name in savepoints:  # the counters follow what SQLite keeps and undoes
            self.counters.savepoint(operation, name)
        if stamp is not None:
            self._foreign_keys.after_neutral(stamp, events)
        effects = self.effects
        for table, before in counted.items():
            added = self._row_count(table) - before
            if not any(action == sqlite3.SQLITE_INSERT and name == table for action, name, *_ in events):
                if added < 0:  # an UPDATE: the rows its REPLACE deleted
                    self._deleted(table, -added, before)
                continue
            replaced = rowcount - added if rowcount > added else 0
            if replaced and not _upsert_only(events, table):
                self._deleted(table, replaced, before)
            if added > 0:
                effects.inserted[table] = effects.inserted.get(table, 0) + added

    def _deleted(self, table: str, rows: int, before: int) -> None:
        """Rows a statement replaced (``before``: the table's rows before it): lost, unless the plan wrote the
        table (then they were its own)."""
        effects = self.effects
        if self.plan_writes.written(table):
            effects.deleted_own[table] = effects.deleted_own.get(table, 0) + rows
            return
        effects.rows_before.setdefault(table, before)
        effects.deleted[table] = effects.deleted.get(table, 0) + rows

    def _measure(self, sql: str, events: list[tuple]) -> None:
        effects = self.effects
        dropping = {a1 for action, a1, _, db, _ in events if action == sqlite3.SQLITE_DROP_TABLE and _ours(a1, db)}
        for action, arg1, arg2, database, source in events:
            if action == sqlite3.SQLITE_INSERT and _ours(arg1, database):
                effects.grown.add(arg1)
                self.counters.inserting(arg1)
            elif action == sqlite3.SQLITE_CREATE_TABLE and _ours(arg1, database) and _may_reference(sql):
                # A new table holds no row to check (CREATE TABLE ... AS SELECT makes one without keys); what its
                # check finds is a foreign key that cannot work (a "foreign key mismatch"), which only a REFERENCES
                # clause can declare. Without one, the step's check (two statements) is left out.
                effects.grown.add(arg1)
            elif action in _SHRINKS and _ours(arg1, database):
                effects.shrunk.add(arg1)
            elif action == sqlite3.SQLITE_ALTER_TABLE and _ours(arg2, arg1):
                effects.shrunk.add(arg2)
            if action == sqlite3.SQLITE_DROP_TABLE and _ours(arg1, database):
                self._dropping_table(arg1)
                self.plan_writes.dropped(arg1)
            elif action == sqlite3.SQLITE_ALTER_TABLE and _ours(arg2, arg1):
                # For ALTER TABLE SQLite passes (database, table) and, for DROP COLUMN only, the column.
                self._altering(arg2, database, sql, events)
            elif action == sqlite3.SQLITE_DELETE and _ours(arg1, database) and arg1 not in dropping:
                if arg1 not in effects.rows_before and not self.plan_writes.written(arg1):
                    effects.rows_before[arg1] = self._row_count(arg1)
                if source is not None:  # deleted by a trigger: rowcount does not see it
                    self.counters.deletes(arg1)
            elif action == sqlite3.SQLITE_UPDATE and _ours(arg1, database):
                if arg2 is not None:
                    self.counters.updates(arg1, arg2, self.plan_writes.written(arg1, arg2))
            elif action in _CREATES and database == "main" and arg1 and not arg1.lower().startswith("sqlite_"):
                # ``CREATE ... IF NOT EXISTS`` of what is there already is authorized too, and does nothing.
                if (arg1.lower() not in _IGNORED and (arg2 or "").lower() not in _IGNORED
                        and (_creates_new(sql) or not self._exists(arg1))):
                    effects.created[arg1] = _CREATES[action]
                    if action == sqlite3.SQLITE_CREATE_TABLE:
                        self.plan_writes.created(arg1)
                    if action in (sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_CREATE_TRIGGER) and arg2:
                        effects.owners[arg1] = arg2
                    effects.dropped.pop(arg1, None)
            elif action in _DROPS and database == "main" and arg1 and not arg1.lower().startswith("sqlite_"):
                if effects.created.pop(arg1, None) is None:
                    effects.dropped[arg1] = _DROPS[action]
                    if action != sqlite3.SQLITE_DROP_TABLE:
                        effects.dropped_sql[arg1] = self._sql_of(arg1)

    def _dropping_table(self, table: str) -> None:
        effects = self.effects
        if table in effects.created:
            effects.created.pop(table)  # made and dropped in this step: nothing the database had
            return
        original = effects.renamed_tables.pop(table, table)
        if original in effects.rebuilds:
            # rebuild_table already measured what it drops; the rows it copies over.
            effects.dropped_tables[original] = TableState(-1, [], {})
            return
        columns = [name for name, *_ in table_xinfo(self.conn, table)]
        values = self._column_values(table, columns)
        rows = self._row_count(table)
        effects.dropped_tables[original] = TableState(rows, columns, values, self._sql_of(table))

    def _altering(self, table: str, dropped_column: str | None, sql: str, events: list[tuple]) -> None:
        effects = self.effects
        if dropped_column is not None:  # SQLite names the column only for DROP COLUMN
            values = self._column_values(table, [dropped_column]).get(dropped_column, (0, 0))
            effects.dropped_columns.append((table, dropped_column, values))
            self.plan_writes.column_dropped(table, dropped_column)
            return
        words = [t.name for t in tokens(sql) if t.name is not None]
        if "rename" in words:
            after = words[words.index("rename") + 1 :]
            if after[:1] == ["to"] and len(after) > 1:
                new_name = cast(str, name_after(sql, "to"))  # the ALTER ran, so a name follows its RENAME TO
                effects.renamed_tables[new_name] = effects.renamed_tables.pop(table, table)
                if table in effects.created:
                    effects.created[new_name] = effects.created.pop(table)
                self.plan_writes.renamed(table, new_name)
            else:
                old, new = renamed_column(sql)
                if old and new:
                    effects.renamed_columns.append((table, old, new))
                    self.plan_writes.column_renamed(table, old, new)
        elif "add" in words:
            column = name_after(sql, "column") or name_after(sql, "add")
            if column:
                effects.added_columns.append((table, column))
                self.plan_writes.column_added(table, column)

    def foreign_key_tables(self) -> list[str]:
        """The tables whose foreign keys this step can have broken, so far: what it touched, and the children of
        what it deleted from, updated, dropped or altered.

        ``PRAGMA foreign_key_check`` over the whole database reads every child
        table after every step; checking only these keeps the work
        proportional to what the step touched. Adding rows to a parent
        cannot orphan a child, so only shrinking tables bring their children in
        (who references whom: ``fk_map``).
        """
        effects = self.effects
        if not effects.grown and not effects.shrunk:
            return []
        return self._foreign_keys.scope(effects.grown | effects.shrunk, effects.shrunk)

    # -- measuring -----------------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM main.sqlite_master WHERE name = ? COLLATE NOCASE",
                                 (name,)).fetchone() is not None

    def _sql_of(self, name: str) -> str | None:
        row = self.conn.execute("SELECT sql FROM main.sqlite_master WHERE name = ? COLLATE NOCASE", (name,)).fetchone()
        return None if row is None else row[0]

    def _replaces(self, table: str) -> bool:
        """Whether a constraint of ``table`` resolves its conflicts by REPLACE (``UNIQUE ON CONFLICT REPLACE``)."""
        words = [token.name for token in tokens(self._sql_of(table) or "") if token.name is not None]
        return any(words[i:i + 3] == ["on", "conflict", "replace"] for i in range(len(words) - 2))

    def _row_count(self, table: str) -> int:
        return self.conn.execute(f"SELECT COUNT(*) FROM main.{quote_identifier(table)}").fetchone()[0]

    def _table_columns(self, table: str) -> list[str] | None:
        columns = [name for name, *_ in table_xinfo(self.conn, table)]
        return columns or None

    def _column_values(self, table: str, columns: list[str]) -> dict[str, tuple[int, int]]:
        """Per column: (non-NULL values that differ from its default, non-NULL values), in one scan."""
        defaults = {name: default for name, _, _, default, _, _ in table_xinfo(self.conn, table)}
        parts = []
        for column in columns:
            quoted = quote_identifier(column)
            default = defaults.get(column)
            differs = f"{quoted} IS NOT NULL" + (f" AND {quoted} IS NOT ({default})" if default is not None else "")
            parts.append(f"COALESCE(SUM({differs}), 0), COUNT({quoted})")
        if not parts:
            return {}
        try:
            row = self.conn.execute(f"SELECT {', '.join(parts)} FROM main.{quote_identifier(table)}").fetchone()
        except sqlite3.Error:
            # A default that is not a plain expression (rare): count every non-NULL value as held.
            parts = [f"COUNT({quote_identifier(c)}), COUNT({quote_identifier(c)})" for c in columns]
            row = self.conn.execute(f"SELECT {', '.join(parts)} FROM main.{quote_identifier(table)}").fetchone()
        return {column: (int(row[2 * i]), int(row[2 * i + 1])) for i, column in enumerate(columns)}


_ADDS_OR_CHANGES = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE)
_SHRINKS = (sqlite3.SQLITE_DELETE, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DROP_TABLE)

_CREATES: dict[int, ObjectKind] = {
    sqlite3.SQLITE_CREATE_TABLE: "table",
    sqlite3.SQLITE_CREATE_INDEX: "index",
    sqlite3.SQLITE_CREATE_TRIGGER: "trigger",
    sqlite3.SQLITE_CREATE_VIEW: "view",
}
_DROPS: dict[int, ObjectKind] = {
    sqlite3.SQLITE_DROP_TABLE: "table",
    sqlite3.SQLITE_DROP_INDEX: "index",
    sqlite3.SQLITE_DROP_TRIGGER: "trigger",
    sqlite3.SQLITE_DROP_VIEW: "view",
}


def attach_rebuilds(preview: Any, observer: StepObserver) -> None:
    """Each watched step's ``StepLocks`` (its rebuilds) on its ``PreviewStep``, as ``pg_locks.attach`` does.

    The observer saw the steps the session started, in order: every step
    but those left out of the preview (``transactional = False``, and what
    needs them); a step that failed has an empty report.
    """
    for record, report in zip(watched(preview.steps), observer.reports):
        record.locks = report


@lru_cache(maxsize=256)  # as _may_replace's
def _creates_new(sql: str) -> bool:
    """Whether ``sql`` is a CREATE without ``IF NOT EXISTS``: SQLite refuses to prepare one whose name is taken,
    so once it was prepared, what it creates is new (no need to look it up)."""
    return "exists" not in sql.lower() and keywords(sql, 1) == ["CREATE"]


@lru_cache(maxsize=256)  # as _may_replace's
def _is_pragma(sql: str) -> bool:
    return keywords(sql, 1) == ["PRAGMA"]


def _may_reference(sql: str) -> bool:
    """Whether ``sql`` may declare a foreign key: SQLite's grammar has one only after the word REFERENCES."""
    return "references" in sql.lower()


@lru_cache(maxsize=256)  # a text runs on every database of a fleet, or many times in a data migration's loop
def _may_replace(sql: str) -> bool:
    """Whether a statement can take the place of rows already there: REPLACE, INSERT or UPDATE OR REPLACE, or
    an upsert."""
    first = keywords(sql, 3)
    if first[:1] == ["REPLACE"] or first[1:3] == ["OR", "REPLACE"]:
        return True
    return first[:1] == ["INSERT"] and "conflict" in {t.name for t in tokens(sql)}


def _upsert_only(events: list, table: str) -> bool:
    """An ``ON CONFLICT ... DO UPDATE`` updates the rows it does not add: its UPDATE counters already tell."""
    return any(action == sqlite3.SQLITE_UPDATE and name == table for action, name, *_ in events)


def _savepoints(events: list) -> tuple[tuple[str, str], ...]:
    """What a statement does to savepoints, as (operation, name): ``BEGIN``, ``RELEASE`` or ``ROLLBACK``."""
    return tuple((operation or "", name or "") for action, operation, name, *_ in events
                 if action == sqlite3.SQLITE_SAVEPOINT)


def _reads_only(statement: str) -> bool:
    """Whether a traced statement only reads (a SELECT, a PRAGMA query): ``--sql`` shows what writes."""
    first = keywords(statement, 1)
    if first == ["SELECT"] or first == ["EXPLAIN"] or first == ["VALUES"]:
        return True
    return first == ["PRAGMA"] and "=" not in statement
