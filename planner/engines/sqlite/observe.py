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
  or, when a trigger does the deleting, by a TEMP trigger that counts them;
* values about to be changed by ``UPDATE`` (an upsert's included): a TEMP
  trigger counts each value that changes, per table and column: a value
  that existed before the plan and was not NULL is overwritten (loss); a
  NULL, or a value the plan wrote (a table it created, a column it added,
  then backfilled), is only set.

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
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from typing import Any, TypeGuard, cast

from planner.effects import PlanWrites, StepEffects, TableState, resolve
from planner.engines.sqlite.counters import ValueCounters
from planner.engines.sqlite.fk_map import ForeignKeyMap
from planner.engines.sqlite.statement_memo import UNKNOWN, StatementMemo, rowcount_targets
from planner.ledger import LOG_TABLE, TABLE
from planner.locks import StepLocks
from planner.preview import DataImpact
from planner.schema import ObjectKind, SchemaChange
from planner.engines.sqlite.sql import keywords, name_after, renamed_column, table_xinfo, tokens
from planner.sql import quote_identifier

_IGNORED = {TABLE.lower(), LOG_TABLE.lower()}
# Python 3.11 took ``None`` to mean "no authorizer"; 3.10 calls it, and denies every statement after the first
# preview. There, an authorizer that allows everything stands in (it costs a call per check, on 3.10 only).
_NO_AUTHORIZER = None if sys.version_info >= (3, 11) else (lambda *_: sqlite3.SQLITE_OK)


def _ours(table: str | None, database: str | None) -> TypeGuard[str]:  # True says table is a name
    """Whether an authorizer event is about a user table of the main database (not the ledger, not SQLite's)."""
    return (
        table is not None
        and database == "main"
        and not table.lower().startswith("sqlite_")
        and table.lower() not in _IGNORED
    )


class StepObserver:
    """Watches one connection through a preview; the connection proxy calls ``before``/``after`` per statement."""

    def __init__(self, conn: sqlite3.Connection, *, capture_sql: bool = False):
        self.conn = conn
        self.capture_sql = capture_sql
        self.effects = StepEffects()
        self._events: list[tuple[int, str | None, str | None, str | None, str | None]] = []
        self.counters = ValueCounters(conn)
        self._tally = self.counters.tally  # the same list, changed in place: empty while nothing is counted
        self._tracing = False
        self.plan_writes = PlanWrites()  # kept across steps
        #: One ``StepLocks`` per step watched, in order: the tables each rebuilt (``attach_rebuilds``).
        self.reports: list[StepLocks] = []
        self._foreign_keys = ForeignKeyMap(conn)  # who references whom, across steps
        self._known = StatementMemo(conn, self._foreign_keys)  # what ``before`` learned per text, within a step
        self._recalled = self._known.known  # the same dict: ``StatementMemo.recall`` without the call

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

    def before(self, sql: str, parameters: Any = ()) -> tuple | None:
        """Measure what ``sql`` is about to destroy; returns what ``after`` needs (``None``: nothing to do after).

        A PRAGMA is not prepared twice: some take effect while they are
        compiled, so even ``EXPLAIN`` of one would run it, and none of them
        deletes or overwrites user data. A statement that only reads and
        writes rows is watched once per step, however often it runs
        (``statement_memo``).
        """
        # The path of a data migration's loop, every repeat: no call that can be spared (``recall`` inlined).
        if self._tally:  # counting: what is counted must go back if the statement fails
            self.counters.statement_starts()
        if self.conn.in_transaction:
            known = self._recalled.get(sql, UNKNOWN)
            if known is not UNKNOWN:
                return known
        if keywords(sql, 1) == ["PRAGMA"]:
            self._known.schema_may_change()
            return None
        tracing, self._tracing = self._tracing, False
        self._events.clear()
        self.conn.set_authorizer(self._authorize)
        try:
            self.conn.execute("EXPLAIN " + sql, parameters).fetchall()
        except sqlite3.Error:
            self._tracing = tracing
            self._known.schema_may_change()
            return None  # the statement itself will fail, with SQLite's own message, when it runs
        finally:
            self.conn.set_authorizer(_NO_AUTHORIZER)
        events = list(self._events)
        repeatable, stamp = self._known.learn(events)
        self._measure(sql, events)
        # An INSERT that may replace (REPLACE, OR REPLACE) or update (ON CONFLICT) rows: its rowcount is not
        # rows added, so the table is counted before and after (REPLACE deletes without firing a trigger).
        counted: dict[str, int] = {}
        if _may_replace(sql):
            repeatable = False  # counted afresh each time
            for action, table, _, database, source in events:
                if (action == sqlite3.SQLITE_INSERT and source is None and _ours(table, database)
                        and table not in self.effects.created):
                    counted[table] = self._row_count(table)
        targets = rowcount_targets(events, counted, self.effects, _ours)
        savepoints = _savepoints(events)
        seen = ((events, counted, targets, stamp, savepoints)
                if counted or targets or stamp is not None or savepoints else None)
        if repeatable:
            self._known.keep(sql, seen)
        self._tracing = tracing
        return seen

    def after(self, seen: tuple, rowcount: int) -> None:
        """Count what the statement did to its own target (``rowcount`` is for the top-level statement only)."""
        events, counted, targets, stamp, savepoints = seen
        for operation, name in savepoints:  # the counters follow what SQLite keeps and undoes
            self.counters.savepoint(operation, name)
        if stamp is not None:
            self._foreign_keys.after_neutral(stamp, events)
        effects = self.effects
        for table, before in counted.items():
            added = self._row_count(table) - before
            replaced = rowcount - added if rowcount > added else 0
            if replaced and not _upsert_only(events, table):
                self._deleted(table, replaced, before)
            if added > 0:
                effects.inserted[table] = effects.inserted.get(table, 0) + added
        if rowcount > 0:
            for tally, table in targets:
                if tally == "deleted":
                    self._deleted(table, rowcount)
                else:
                    effects.inserted[table] = effects.inserted.get(table, 0) + rowcount

    def failed(self, many: bool = False) -> None:
        """The statement ``before`` was last called for raised (``many``: an ``executemany``): the counters
        undo what SQLite undid."""
        self.counters.statement_failed(many)

    def _deleted(self, table: str, rows: int, before: int | None = None) -> None:
        """Rows a statement deleted: lost, unless the plan wrote the table (then they were its own)."""
        effects = self.effects
        if self.plan_writes.written(table):
            effects.deleted_own[table] = effects.deleted_own.get(table, 0) + rows
            return
        if before is not None:
            effects.rows_before.setdefault(table, before)
        effects.deleted[table] = effects.deleted.get(table, 0) + rows

    def _measure(self, sql: str, events: list[tuple]) -> None:
        effects = self.effects
        dropping = {a1 for action, a1, _, db, _ in events if action == sqlite3.SQLITE_DROP_TABLE and _ours(a1, db)}
        for action, arg1, arg2, database, source in events:
            if action in _GROWS and _ours(arg1, database):
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
                        and not self._exists(arg1)):
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


_GROWS = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_CREATE_TABLE)
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
    from planner.preview import is_left_out

    watched = [record for record in preview.steps if not is_left_out(record.skipped)]
    for record, report in zip(watched, observer.reports):
        record.locks = report


def _may_replace(sql: str) -> bool:
    """Whether an INSERT can take the place of rows already there: REPLACE, OR REPLACE, or an upsert."""
    first = keywords(sql, 3)
    if first[:1] == ["REPLACE"] or first[:3] == ["INSERT", "OR", "REPLACE"]:
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
