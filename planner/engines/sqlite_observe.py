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
* values about to be overwritten by ``UPDATE``: a TEMP trigger counts each
  non-NULL value that changes, per table and column.

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
from collections.abc import Sequence
from typing import Any

from planner.effects import StepEffects, TableState, resolve
from planner.engines.sqlite_fk_map import ForeignKeyMap
from planner.engines.sqlite_statement_memo import UNKNOWN, StatementMemo, rowcount_targets
from planner.ledger import LOG_TABLE, TABLE
from planner.preview import DataImpact
from planner.schema import SchemaChange
from planner.sql import keywords, name_after, quote_identifier, renamed_column, table_xinfo, tokens

_IGNORED = {TABLE.lower(), LOG_TABLE.lower()}
_COUNTS = "apm_preview_counts"  # a TEMP table: per-connection, gone when the connection closes


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ours(table: str | None, database: str | None) -> bool:
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
        self._triggers: list[str] = []
        self._counted: set[tuple[str, str]] = set()
        self._tracing = False
        self._counts_ready = False
        self._foreign_keys = ForeignKeyMap(conn)  # who references whom, across steps
        self._known = StatementMemo(conn, self._foreign_keys)  # what ``before`` learned per text, within a step

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
        self._triggers.clear()
        self._counted.clear()
        self._counts_ready = False
        if self.capture_sql:
            self.conn.set_trace_callback(None)

    def end_step(self) -> tuple[list[SchemaChange], list[DataImpact], list[str]]:
        """The step's net schema changes, its data impact, and the SQL it ran; the counters are removed."""
        self._tracing = False
        self._known.forget()
        if self.capture_sql:
            self.conn.set_trace_callback(None)
        counts = self._read_counts()
        for name in self._triggers:
            self.conn.execute(f"DROP TRIGGER IF EXISTS temp.{quote_identifier(name)}")
        self._triggers.clear()
        self._counted.clear()
        return (*resolve(self.effects, counts, self._table_columns, self._row_count), self.effects.statements)

    def note_rebuild(self, table: str, carried: dict[str, str], dropped: Sequence[str]) -> None:
        """``rebuild_table`` is about to rebuild ``table``: ``carried`` maps old columns to their new names."""
        values = self._column_values(table, list(dropped)) if dropped else {}
        self.effects.rebuilds[table] = (dict(carried), list(dropped))
        for column in dropped:
            self.effects.dropped_columns.append((table, column, values.get(column, (0, 0))))

    # -- before and after each statement ------------------------------------------------------

    def before(self, sql: str, parameters: Any = ()) -> tuple | None:
        """Measure what ``sql`` is about to destroy; returns what ``after`` needs (``None``: nothing to do after).

        A PRAGMA is not prepared twice: some take effect while they are
        compiled, so even ``EXPLAIN`` of one would run it, and none of them
        deletes or overwrites user data. A statement that only reads and
        writes rows is watched once per step, however often it runs
        (``sqlite_statement_memo``).
        """
        known = self._known.recall(sql)
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
            self.conn.set_authorizer(None)
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
        seen = (events, counted, targets, stamp) if counted or targets or stamp is not None else None
        if repeatable:
            self._known.keep(sql, seen)
        self._tracing = tracing
        return seen

    def after(self, seen: tuple, rowcount: int) -> None:
        """Count what the statement did to its own target (``rowcount`` is for the top-level statement only)."""
        events, counted, targets, stamp = seen
        if stamp is not None:
            self._foreign_keys.after_neutral(stamp, events)
        effects = self.effects
        for table, before in counted.items():
            added = self._row_count(table) - before
            replaced = rowcount - added if rowcount > added else 0
            if replaced and not _upsert_only(events, table):
                effects.rows_before.setdefault(table, before)
                effects.deleted[table] = effects.deleted.get(table, 0) + replaced
            if added > 0:
                effects.inserted[table] = effects.inserted.get(table, 0) + added
        if rowcount > 0:
            for tally, table in targets:
                counts = effects.deleted if tally == "deleted" else effects.inserted
                counts[table] = counts.get(table, 0) + rowcount

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
            elif action == sqlite3.SQLITE_ALTER_TABLE and _ours(arg2, arg1):
                # For ALTER TABLE SQLite passes (database, table) and, for DROP COLUMN only, the column.
                self._altering(arg2, database, sql, events)
            elif action == sqlite3.SQLITE_DELETE and _ours(arg1, database) and arg1 not in dropping:
                if arg1 not in effects.rows_before and arg1 not in effects.created:
                    effects.rows_before[arg1] = self._row_count(arg1)
                if source is not None:  # deleted by a trigger: rowcount does not see it
                    self._count_deletes(arg1)
            elif action == sqlite3.SQLITE_UPDATE and _ours(arg1, database) and arg1 not in effects.created:
                self._count_overwrites(arg1, arg2)
            elif action in _CREATES and database == "main" and arg1 and not arg1.lower().startswith("sqlite_"):
                if arg1.lower() not in _IGNORED and (arg2 or "").lower() not in _IGNORED:
                    effects.created[arg1] = _CREATES[action]
                    if action in (sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_CREATE_TRIGGER) and arg2:
                        effects.owners[arg1] = arg2
                    effects.dropped.pop(arg1, None)
            elif action in _DROPS and database == "main" and arg1 and not arg1.lower().startswith("sqlite_"):
                if effects.created.pop(arg1, None) is None:
                    effects.dropped[arg1] = _DROPS[action]

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
        effects.dropped_tables[original] = TableState(rows, columns, values)

    def _altering(self, table: str, dropped_column: str | None, sql: str, events: list[tuple]) -> None:
        effects = self.effects
        if dropped_column is not None:  # SQLite names the column only for DROP COLUMN
            values = self._column_values(table, [dropped_column]).get(dropped_column, (0, 0))
            effects.dropped_columns.append((table, dropped_column, values))
            return
        words = [t.name for t in tokens(sql) if t.name is not None]
        if "rename" in words:
            after = words[words.index("rename") + 1 :]
            if after[:1] == ["to"] and len(after) > 1:
                new = name_after(sql, "to")
                effects.renamed_tables[new] = effects.renamed_tables.pop(table, table)
                if table in effects.created:
                    effects.created[new] = effects.created.pop(table)
            else:
                old, new = renamed_column(sql)
                if old and new:
                    effects.renamed_columns.append((table, old, new))
        elif "add" in words:
            column = name_after(sql, "column") or name_after(sql, "add")
            if column:
                effects.added_columns.append((table, column))

    def foreign_key_tables(self) -> list[str]:
        """The tables whose foreign keys this step can have broken, so far: what it touched, and the children of
        what it deleted from, updated, dropped or altered.

        ``PRAGMA foreign_key_check`` over the whole database reads every child
        table after every step; checking only these keeps the work
        proportional to what the step touched. Adding rows to a parent
        cannot orphan a child, so only shrinking tables bring their children in
        (who references whom: ``sqlite_fk_map``).
        """
        effects = self.effects
        if not effects.grown and not effects.shrunk:
            return []
        return self._foreign_keys.scope(effects.grown | effects.shrunk, effects.shrunk)

    # -- measuring -----------------------------------------------------------------------------

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

    def _counts_table(self) -> None:
        if not self._counts_ready:
            self.conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_COUNTS} "
                              "(tbl TEXT NOT NULL, col TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (tbl, col))")
            self.conn.execute(f"DELETE FROM temp.{_COUNTS}")
            self._counts_ready = True

    def _count_deletes(self, table: str) -> None:
        self._add_counter(table, "", f"AFTER DELETE ON main.{quote_identifier(table)}")

    def _count_overwrites(self, table: str, column: str | None) -> None:
        """Count the values an UPDATE really replaces: not NULL, not the column's default, and changed.

        A default is no data anyone entered (the same rule as a dropped
        column's "non-default values"), so filling in a column that held
        only its default is not reported as loss.
        """
        if column is None:
            return
        quoted = quote_identifier(column)
        default = next((d for name, _, _, d, _, _ in table_xinfo(self.conn, table) if name == column), None)
        held = f" AND OLD.{quoted} IS NOT ({default})" if default is not None else ""
        self._add_counter(table, column, f"AFTER UPDATE OF {quoted} ON main.{quote_identifier(table)} "
                                         f"WHEN OLD.{quoted} IS NOT NULL AND OLD.{quoted} IS NOT NEW.{quoted}{held}")

    def _add_counter(self, table: str, column: str, when: str) -> None:
        if (table, column) in self._counted:
            return
        self._counts_table()
        self._counted.add((table, column))
        name = f"apm_preview_{len(self._triggers)}"
        self._triggers.append(name)
        self.conn.execute(
            f"CREATE TEMP TRIGGER {quote_identifier(name)} {when} BEGIN "
            f"INSERT INTO {_COUNTS} VALUES ({_literal(table)}, {_literal(column)}, 1) "
            f"ON CONFLICT (tbl, col) DO UPDATE SET n = n + 1; END"
        )

    def _read_counts(self) -> dict[tuple[str, str], int]:
        if not self._counts_ready:
            return {}
        rows = self.conn.execute(f"SELECT tbl, col, n FROM temp.{_COUNTS}").fetchall()
        self.conn.execute(f"DELETE FROM temp.{_COUNTS}")
        return {(table, column): n for table, column, n in rows}


_GROWS = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_CREATE_TABLE)
_SHRINKS = (sqlite3.SQLITE_DELETE, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DROP_TABLE)

_CREATES = {
    sqlite3.SQLITE_CREATE_TABLE: "table",
    sqlite3.SQLITE_CREATE_INDEX: "index",
    sqlite3.SQLITE_CREATE_TRIGGER: "trigger",
    sqlite3.SQLITE_CREATE_VIEW: "view",
}
_DROPS = {
    sqlite3.SQLITE_DROP_TABLE: "table",
    sqlite3.SQLITE_DROP_INDEX: "index",
    sqlite3.SQLITE_DROP_TRIGGER: "trigger",
    sqlite3.SQLITE_DROP_VIEW: "view",
}


def _may_replace(sql: str) -> bool:
    """Whether an INSERT can take the place of rows already there: REPLACE, OR REPLACE, or an upsert."""
    first = keywords(sql, 3)
    if first[:1] == ["REPLACE"] or first[:3] == ["INSERT", "OR", "REPLACE"]:
        return True
    return first[:1] == ["INSERT"] and "conflict" in {t.name for t in tokens(sql)}


def _upsert_only(events: list, table: str) -> bool:
    """An ``ON CONFLICT ... DO UPDATE`` updates the rows it does not add: its UPDATE counters already tell."""
    return any(action == sqlite3.SQLITE_UPDATE and name == table for action, name, *_ in events)


def _reads_only(statement: str) -> bool:
    """Whether a traced statement only reads (a SELECT, a PRAGMA query): ``--sql`` shows what writes."""
    first = keywords(statement, 1)
    if first == ["SELECT"] or first == ["EXPLAIN"] or first == ["VALUES"]:
        return True
    return first == ["PRAGMA"] and "=" not in statement
