"""What one step did, as a preview's observer saw it, and the same netted into what a person would say.

``StepObserver`` (``planner.engines.sqlite.observe``) fills a ``StepEffects`` statement by
statement; ``resolve`` nets it at the end of the step: a table dropped and
put back under its name is a rebuild (with its lost columns and rows named),
an index a rebuild recreated is not news, a renamed column is a rename.

Counting, during a SQLite preview, the rows triggers delete and the values an UPDATE changes, as they change.

A statement's ``rowcount`` tells only what it did to its own target. What
it does to each column, and what its triggers delete, is counted by TEMP
triggers (per connection, gone with it, dropped at the end of each step),
per table, column and kind:

* ``overwritten``: a value that existed before the plan and was not NULL,
  whatever it was (a default is a value like any other): loss;
* ``set``: a NULL filled in, or a value the plan wrote (a table it created,
  a column it added, then backfilled; ``effects.PlanWrites``): not loss;
* ``deleted``: a row a trigger deleted.

Why the counts live in Python: a trigger body that writes a TEMP table
costs a write to the TEMP database for every row (a data migration of
50,000 single-row UPDATEs took 1.5x its unwatched run). Here the trigger's
``WHEN`` calls a Python function that adds one to a list and returns NULL,
so the body never runs and nothing is written. SQLite's undo does not reach
a Python list, so the counts follow it by hand, from what the observer sees:

* a statement that fails: SQLite undoes what it did (``ABORT``, the
  default) unless its conflict is resolved by ``FAIL`` (``OR FAIL``, a
  constraint's ``ON CONFLICT FAIL``, a trigger's ``RAISE(FAIL)``), which
  keeps the rows changed before the failure. ``changes()`` tells the two
  apart: SQLite sets it to the rows the failed statement kept, 0 when it
  undid them (``total_changes`` cannot: it keeps what triggers did even
  when the statement is undone). So the counts go back to where the
  statement found them unless it kept rows. An ``executemany`` that fails
  keeps its counts: the statements before the failing one are kept, and
  what the failing one counted before SQLite undid it cannot be told apart,
  so the preview may then report more than is lost, never less;
* ``SAVEPOINT``, ``RELEASE`` and ``ROLLBACK TO``: the counts are kept per
  savepoint, so a rollback to one restores the counts it was made with
  (a savepoint older than the step restores none: nothing of the step is
  left), and triggers made since it, which the rollback removed too, are
  made again when next needed; the triggers and copies live when the
  savepoint was made are live again (the rollback brought them back);
* a step that fails: everything is forgotten, as the rollback forgets it.

Why a copy takes a trigger's place: SQLite runs a row trigger as a
sub-program, about 5,300 instructions for every updated row even when its
``WHEN`` is false, more than a raw single-row UPDATE's own 12,500 less the
statement's start. A data migration updating 50,000 rows one statement at a
time paid 2.3x its loop in plain sqlite3. Once a column's trigger has
counted ``SNAPSHOT_AFTER`` changed values, or 1/32 of its table's rowid
span if that is more, the column (rowid and value) is copied into a TEMP
table in one statement and the trigger dropped; the values that differ
from the copy are counted in one join, ``IS NOT`` with the table's column
on the left (its collation decides, as in the trigger). Copying and
comparing cost about 2,000 instructions a row of the table, so a step pays
for the copy only once it has spent a good part of that on its trigger, and
a step that changes a few rows of a big table copies nothing; a table whose
rowids span more than ``SNAPSHOT_MAX_SPAN`` is never copied (the copy is in
RAM). The copy is compared and let go ("settled") before any statement that
could make one of its rowids stand for another row: an INSERT into the
table (a row deleted and put back under its id is not the old row
changed), an UPDATE of its rowid, a schema change or a PRAGMA; the
column's next UPDATE gets a trigger again. A table without a rowid
(``WITHOUT ROWID``, a view), and a column renamed since its trigger was made
(SQLite renames it in the trigger too), keep their triggers; a trigger
dropped with its table (a table rebuilt by hand) is made again for the table
put in its place. The two ways differ only where
a trigger says more than is lost: a trigger counts every change (a value
changed twice counts twice, a row updated and then deleted counts as
overwritten and as deleted), the copy counts what differs at the end (a
value changed back counts nothing, a row deleted counts as deleted only).
PostgreSQL's preview counts per statement, as the trigger does.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from planner import deferred_dataclass
from planner.preview import DataImpact, ObjectKind, SchemaChange
from planner.engines.sqlite.sql import names, table_xinfo, tokens
from planner.sql import quote_identifier


@deferred_dataclass()
class TableState:
    """What a table held just before it was dropped: rows, columns, and each column's values."""

    rows: int
    columns: list[str]
    #: column -> (non-NULL values that differ from the column's default, non-NULL values)
    values: dict[str, tuple[int, int]]
    #: its ``CREATE TABLE``: a table put back in its place with other named constraints added or dropped them
    sql: str | None = None


@dataclass
class StepEffects:
    """What one step did, as the observer saw it; ``resolve`` turns it into changes and impact."""

    created: dict[str, ObjectKind] = field(default_factory=dict)  # name -> kind (table, index, trigger, view)
    owners: dict[str, str] = field(default_factory=dict)  # index or trigger -> its table
    dropped: dict[str, ObjectKind] = field(default_factory=dict)  # name -> kind, for objects that existed before
    #: index, trigger or view that existed before the step and was dropped -> its SQL then: created again under
    #: the same name, it was recreated (a change only if its SQL differs), not added.
    dropped_sql: dict[str, str | None] = field(default_factory=dict)
    dropped_tables: dict[str, TableState] = field(default_factory=dict)
    renamed_tables: dict[str, str] = field(default_factory=dict)  # new name -> old name
    added_columns: list[tuple[str, str]] = field(default_factory=list)
    renamed_columns: list[tuple[str, str, str]] = field(default_factory=list)  # table, old, new
    dropped_columns: list[tuple[str, str, tuple[int, int]]] = field(default_factory=list)
    rebuilds: dict[str, tuple[dict[str, str], list[str]]] = field(default_factory=dict)
    #: a table ``rebuild_table`` rebuilt -> its ``CREATE TABLE`` before
    rebuilt_sql: dict[str, str | None] = field(default_factory=dict)
    #: a table ``rebuild_table`` rebuilt -> the rows it held when the rebuild began (what it copied)
    rebuilt_rows: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    #: Rows deleted from a table this plan created: its own, not loss.
    deleted_own: dict[str, int] = field(default_factory=dict)
    #: (table, old column, values) a ``rebuild_table`` conversion changed, of values from before the plan.
    converted: list[tuple[str, str, int]] = field(default_factory=list)
    inserted: dict[str, int] = field(default_factory=dict)
    rows_before: dict[str, int] = field(default_factory=dict)
    statements: list[str] = field(default_factory=list)
    #: Tables rows were added to, or created with a foreign key (their own foreign keys need checking) ...
    grown: set[str] = field(default_factory=set)
    #: ... and tables rows left, changed, or were dropped or altered (their children's keys need checking too).
    shrunk: set[str] = field(default_factory=set)


class PlanWrites:
    """The tables a plan created and the columns it added to tables it did not, across its steps: what they
    hold, the plan wrote, so changing or deleting it later in the plan loses nothing that existed before.

    Told by where a table or column came from, never by what its values look like (a default is a value
    like any other once it is there). Names are compared lower-cased, as SQLite compares them.
    """

    def __init__(self) -> None:
        #: table -> ``None`` (the plan created it) or the columns the plan added to it
        self._fresh: dict[str, set[str] | None] = {}
        #: a table ``rebuild_table`` is rebuilding -> its fresh columns once the new table is in place
        self._rebuilding: dict[str, set[str] | None] = {}

    def written(self, table: str, column: str | None = None) -> bool:
        """Whether the plan created ``table`` (or added its ``column``)."""
        fresh = self._fresh.get(table.lower(), set())
        return fresh is None or (column is not None and column.lower() in fresh)

    def created(self, table: str) -> None:
        self._fresh[table.lower()] = None

    def dropped(self, table: str) -> None:
        self._fresh.pop(table.lower(), None)

    def renamed(self, old: str, new: str) -> None:
        """``ALTER TABLE old RENAME TO new``; a rebuild's new table taking ``new``'s place included."""
        fresh = self._fresh.pop(old.lower(), set())
        if new.lower() in self._rebuilding:
            fresh = self._rebuilding.pop(new.lower())
        if fresh != set():
            self._fresh[new.lower()] = fresh

    def column_added(self, table: str, column: str) -> None:
        fresh = self._fresh.setdefault(table.lower(), set())
        if fresh is not None:
            fresh.add(column.lower())

    def column_renamed(self, table: str, old: str, new: str) -> None:
        fresh = self._fresh.get(table.lower())
        if fresh is not None and old.lower() in fresh:
            fresh.discard(old.lower())
            fresh.add(new.lower())

    def column_dropped(self, table: str, column: str) -> None:
        fresh = self._fresh.get(table.lower())
        if fresh is not None:
            fresh.discard(column.lower())

    def rebuilding(self, table: str, carried: dict[str, str], columns: Sequence[str]) -> None:
        """``rebuild_table`` is rebuilding ``table``: what the plan wrote stays the plan's; the new table's new
        columns are filled by their defaults."""
        before = self._fresh.get(table.lower(), set())
        if before is None:
            self._rebuilding[table.lower()] = None
            return
        kept = {new.lower() for old, new in carried.items() if old.lower() in before}
        self._rebuilding[table.lower()] = kept | ({c.lower() for c in columns}
                                                  - {new.lower() for new in carried.values()})


def carried_columns(new: list[str], old: list[str], convert: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Which old columns a rebuild carries over (old name -> new name), and which it drops.

    A column copied by name, or read by a ``convert`` expression (keyed by
    the new column, lower-cased), carries over under that new column's
    name: ``convert={"c": "b"}`` is a rename of b to c, not a loss.
    """
    new_names = {name.lower(): name for name in new}
    old_names = {name.lower(): name for name in old}
    carried = {name: new_names[key] for key, name in old_names.items() if key in new_names and key not in convert}
    for key, expression in convert.items():
        for used in sorted(names(expression) & old_names.keys()):
            carried.setdefault(old_names[used], new_names.get(key, key))
    return carried, [name for name in old if name not in carried]


def named_constraints(sql: str | None) -> set[str]:
    """The names a ``CREATE TABLE`` gives its constraints (``CONSTRAINT rating_range CHECK (...)``): a rebuild
    that adds or drops one says so, in the words PostgreSQL's preview uses for ``ADD CONSTRAINT``. Unnamed
    constraints have no name to tell them by; the rebuild line covers them."""
    found = tokens(sql or "")
    return {found[i + 1].text.strip('"`[]') for i, token in enumerate(found[:-1])
            if token.kind == "word" and token.name == "constraint" and found[i + 1].name is not None}


def resolve(
    effects: StepEffects,
    counts: dict[tuple[str, str, str], int],
    columns_of: Callable[[str], list[str] | None],
    row_count: Callable[[str], int],
    sql_of: Callable[[str], str | None] = lambda name: None,
) -> tuple[list[SchemaChange], list[DataImpact]]:
    """Net a step's effects into schema changes and data impact, as a person would describe them."""
    changes: list[SchemaChange] = []
    impact: list[DataImpact] = []
    rebuilt: set[str] = set()
    for table, state in effects.dropped_tables.items():
        now = columns_of(table)
        if now is None:  # gone for good
            impact.append(DataImpact("dropped-table", table, count=max(state.rows, 0),
                                     before=state.rows, after=None))
            changes.append(SchemaChange("table", "removed", table))
            continue
        rebuilt.add(table)
        if table in effects.rebuilds:
            continue  # rebuild_table said what it carries and drops
        kept = {c.lower() for c in now}
        for column in state.columns:
            if column.lower() not in kept:
                effects.dropped_columns.append((table, column, state.values.get(column, (0, 0))))
        after = row_count(table)
        if after < state.rows:
            impact.append(DataImpact("deleted-rows", table, count=state.rows - after, before=state.rows, after=after))
    for table in sorted(rebuilt):
        changes.append(SchemaChange("table", "rebuilt", table, table=table))
        before = effects.rebuilt_sql.get(table) or effects.dropped_tables[table].sql
        old_names, new_names = named_constraints(before), named_constraints(sql_of(table))
        changes += [SchemaChange("constraint", "removed", name, table=table) for name in sorted(old_names - new_names)]
        changes += [SchemaChange("constraint", "added", name, table=table) for name in sorted(new_names - old_names)]
    for table, (carried, _) in sorted(effects.rebuilds.items()):
        for old, new in sorted(carried.items()):
            if old.lower() != new.lower():
                changes.append(SchemaChange("column", "renamed", new, table=table, before=old, after=new))
    for new, old in sorted(effects.renamed_tables.items()):
        if old in effects.created or new in rebuilt or old == new:
            continue
        if old in effects.dropped_tables:
            continue
        changes.append(SchemaChange("table", "renamed", new, before=old, after=new))
    for name, kind in sorted(effects.created.items()):
        if name in rebuilt or effects.owners.get(name) in rebuilt:
            continue  # a rebuilt table, and the indexes and triggers it got back
        if name in effects.dropped_sql:  # dropped and made again (a rebuild recreates the views over its table)
            old_sql, new_sql = effects.dropped_sql[name], sql_of(name)
            if " ".join((old_sql or "").split()) != " ".join((new_sql or "").split()):
                changes.append(SchemaChange(kind, "changed", name, before=old_sql, after=new_sql))
            continue
        changes.append(SchemaChange(kind, "added", name))
    for name, kind in sorted(effects.dropped.items()):
        if kind == "table" or name in effects.created:
            continue
        changes.append(SchemaChange(kind, "removed", name))
    for table, column in effects.added_columns:
        changes.append(SchemaChange("column", "added", column, table=table))
    for table, old, new in effects.renamed_columns:
        changes.append(SchemaChange("column", "renamed", new, table=table, before=old, after=new))
    for table, column, (non_default, non_null) in effects.dropped_columns:
        changes.append(SchemaChange("column", "removed", column, table=table))
        impact.append(DataImpact("dropped-column", table, column, count=non_default, non_null=non_null))
    for table, column, n in effects.converted:
        impact.append(DataImpact("overwritten-values", table, column, count=n))
    for (table, column, how), n in sorted(counts.items()):
        if how == "overwritten":
            impact.append(DataImpact("overwritten-values", table, column, count=n))
        elif how == "set":
            changes.append(SchemaChange("values", "changed", column, table=table, after=n))
        else:
            effects.deleted[table] = effects.deleted.get(table, 0) + n
    for table, n in sorted(effects.deleted.items()):
        if columns_of(table) is None:
            continue
        rows_before = effects.rows_before.get(table)
        impact.append(DataImpact("deleted-rows", table, count=n, before=rows_before,
                                 after=None if rows_before is None else row_count(table)))
    for table, n in sorted(effects.deleted_own.items()):
        if columns_of(table) is not None:
            changes.append(SchemaChange("rows", "removed", table, table=table, before=n))
    for table, n in sorted(effects.inserted.items()):
        changes.append(SchemaChange("rows", "added", table, table=table, after=n))
    return changes, impact


#: The SQL function the triggers' ``WHEN`` calls (per connection, like the TEMP triggers).
FUNCTION = "apm_preview_count"
_KINDS = ("set", "overwritten")  # slot offsets 0 and 1 of an UPDATE counter; a DELETE counter uses offset 0
#: A column's trigger gives way to a copy once it has counted this many changed values, or 1/32 of its table's
#: rowid span if that is more (a row trigger is about 5,300 instructions an updated row, copying and comparing a
#: row about 2,000): a data migration that updates most of a table pays for a few thousand triggers, and one
#: that updates a few rows of a big table copies nothing.
SNAPSHOT_AFTER = 1000
_SNAPSHOT_SHARE = 32
#: A table whose rowids span more than this keeps its triggers: its copy, in RAM, would be too big.
SNAPSHOT_MAX_SPAN = 1_000_000
_NEVER = sys.maxsize

Key = tuple[str, str]  # (table, column); column "" for a DELETE counter


class ValueCounters:
    """The counters of one preview connection, set up lazily: a step that updates nothing pays nothing.

    A column is counted by a trigger until it has counted its share, then by a copy of the column (why, and
    what the copy must let go before: the module's "Why a copy takes a trigger's place").
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        #: The counts, two slots per counted (table, column); the SQL function adds to it in place. Changed
        #: only in place (the function and the observer hold it): empty while the step counts nothing.
        self.tally: list[int] = []
        self._slots: dict[Key, int] = {}  # first slot of each key, for the step
        #: The live trigger of each key. Changed only in place (the observer holds it): truthy while one counts.
        self.triggers: dict[Key, str] = {}
        #: The live copy of each UPDATE key: (TEMP table, the table's rowid name, whether the plan wrote the column).
        self._snapshots: dict[Key, tuple[str, str, bool]] = {}
        #: Per key whose trigger may give way to a copy: its count at which it does, and whether the plan wrote it.
        self._limits: dict[Key, tuple[int, bool]] = {}
        #: ``sum(tally)`` below which no trigger has counted its share (``StepObserver.run`` compares).
        self.check_at = _NEVER
        #: table -> (rowid name, its alias, span, its columns lower-cased), or None: ``_rowid``
        self._rowids: dict[str, tuple[str, str, int, frozenset[str]] | None] = {}
        self._tables: list[str] = []  # every TEMP table made in the step, dropped at its end
        #: (name, counts, triggers, copies, limits) when each savepoint was made, innermost last
        self._savepoints: list[tuple[str, list[int], dict, dict, dict]] = []
        #: The counts before the statement running now (``StepObserver.run`` sets it), to undo them if it fails.
        self.mark: list[int] | None = None
        self._registered = False
        self._serial = 0  # names are never reused within a connection: a rolled-back one may come back
        #: Called when copies are settled: a text learned while its column was copied has no counter now, so
        #: what was learned must be learned again (``StepObserver`` makes it its memo's ``forget``).
        self.settled: Callable[[], None] = lambda: None

    # -- what to count ---------------------------------------------------------------------

    def deletes(self, table: str) -> None:
        """Count the rows deleted from ``table`` (by a trigger: ``rowcount`` does not see them)."""
        key = (table, "")
        if not self._counting(key):
            slot = self._slot(key)
            self._create(key, f"AFTER DELETE ON main.{quote_identifier(table)} WHEN {FUNCTION}({slot})")

    def updates(self, table: str, column: str, written_by_plan: bool) -> None:
        """Count the values of ``table.column`` an UPDATE changes; all as ``set`` if the plan wrote the column."""
        key = (table, column)
        if key in self._snapshots or self._counting(key):
            return
        rowid = self._rowid(table)
        moves = rowid is None or column.lower() in ("rowid", rowid[1])  # the authorizer says ROWID for its aliases
        if moves and self._snapshots:
            self.settle(table)  # its rowids are about to stand for other rows
        slot = self._slot(key)
        quoted = quote_identifier(column)
        which = str(slot) if written_by_plan else f"{slot} + (OLD.{quoted} IS NOT NULL)"
        self._create(key, f"AFTER UPDATE OF {quoted} ON main.{quote_identifier(table)} "
                          f"WHEN OLD.{quoted} IS NOT NEW.{quoted} AND {FUNCTION}({which})")
        if not moves and rowid is not None and rowid[2] <= SNAPSHOT_MAX_SPAN:
            limit = self._counted(key) + max(SNAPSHOT_AFTER, rowid[2] // _SNAPSHOT_SHARE)
            self._limits[key] = (limit, written_by_plan)
            self._recheck()

    def inserting(self, table: str) -> None:
        """An INSERT into ``table`` is about to run: a rowid it takes may be one a copy holds for a deleted row."""
        if self._snapshots:
            self.settle(table)

    # -- triggers giving way to copies --------------------------------------------------------

    def snapshot_due(self) -> bool:
        """Replace each trigger that has counted its share by a copy of its column; whether one was made (the
        statements learned so far must then be looked at again: an INSERT must settle the copy before it runs)."""
        made = False
        for key, (limit, _) in list(self._limits.items()):
            if self._counted(key) >= limit:
                made = self._snapshot(key) or made
        self._recheck()
        return made

    def settle(self, table: str | None = None) -> None:
        """Count what differs from the copies of ``table`` (all tables: ``None``) now, and let them go: the
        statement about to run could make a rowid stand for another row. Its columns get triggers again when
        next updated."""
        keys = [key for key in self._snapshots if table is None or fold(key[0]) == fold(table)]
        if keys:
            self.settled()
        for key in keys:
            name, rowid, written = self._snapshots.pop(key)
            self._compare(key, name, rowid, written)
            # Emptied, not dropped: SQLite refuses to drop a table while any statement of the connection reads.
            self.conn.execute(f"DELETE FROM temp.{quote_identifier(name)}")
        if table is None:
            self._rowids.clear()  # a schema change may give a table a rowid alias, or take its rowid

    def _snapshot(self, key: Key) -> bool:
        """Copy ``key``'s column in place of its trigger; ``False`` when it keeps its trigger (the schema changed
        since the trigger was made: no rowid now, or the column renamed)."""
        table, column = key
        _, written = self._limits.pop(key)  # copied or not, not asked again
        found = self._rowid(table) if self._counting(key) else None
        # The column may have been renamed since (SQLite renames it in the trigger too).
        if found is None or column.lower() in ("rowid", found[1]) or column.lower() not in found[3]:
            return False
        name = self._name()
        # Made from its SELECT: rows appended as read, no key to check (``k`` is a plain column); ``v`` takes the
        # column's affinity, so it holds the values exactly as stored.
        self.conn.execute(f"CREATE TEMP TABLE {quote_identifier(name)} AS SELECT t.{found[0]} AS k, "
                          f"t.{quote_identifier(column)} AS v FROM main.{quote_identifier(table)} AS t")
        self._tables.append(name)
        self.conn.execute(f"DROP TRIGGER temp.{quote_identifier(self.triggers.pop(key))}")
        self._snapshots[key] = (name, found[0], written)
        return True

    def _compare(self, key: Key, name: str, rowid: str, written: bool) -> None:
        """Add the values of ``key`` that differ from its copy ``name`` to its counts (rows deleted since are
        not compared: the DELETE counted them). The copy is read in order and the table looked up by rowid
        (``CROSS JOIN`` keeps that order); the table's column on the left, so its collation decides, as in the
        trigger's ``OLD.c IS NOT NEW.c``."""
        table, column = key
        changed, held = self.conn.execute(
            f"SELECT COUNT(*), COUNT(s.v) FROM temp.{quote_identifier(name)} AS s "
            f"CROSS JOIN main.{quote_identifier(table)} AS t ON t.{rowid} = s.k "
            f"WHERE t.{quote_identifier(column)} IS NOT s.v").fetchone()
        overwritten = 0 if written else held
        slot = self._slots[key]
        self.tally[slot] += changed - overwritten
        self.tally[slot + 1] += overwritten

    def _rowid(self, table: str) -> tuple[str, str, int, frozenset[str]] | None:
        """``table``'s rowid (a name for it no column takes, its alias column lower-cased, the span of its
        values) and its columns, or ``None``: no rowid to copy by (``WITHOUT ROWID``, a view, every name taken)."""
        if table in self._rowids:
            return self._rowids[table]
        columns = table_xinfo(self.conn, table)
        names = {name.lower() for name, *_ in columns}
        keys = [(name, kind) for name, kind, _, _, pk, _ in columns if pk]
        alias = keys[0][0].lower() if len(keys) == 1 and keys[0][1].upper() == "INTEGER" else ""
        found = None
        free = next((name for name in ("rowid", "_rowid_", "oid") if name not in names), None)
        if free is not None:
            quoted = quote_identifier(table)
            try:  # two subqueries: each min or max alone is one seek
                low, high = self.conn.execute(f"SELECT (SELECT min({free}) FROM main.{quoted}), "
                                              f"(SELECT max({free}) FROM main.{quoted})").fetchone()
            except sqlite3.Error:
                pass
            else:
                found = (free, alias, 0 if low is None else high - low + 1, frozenset(names))
        self._rowids[table] = found
        return found

    def _counting(self, key: Key) -> bool:
        """Whether ``key``'s trigger is there: dropping its table drops it (a table rebuilt by hand), and the
        table of the same name after it must be counted again."""
        name = self.triggers.get(key)
        if name is None:
            return False
        if self.conn.execute("SELECT 1 FROM temp.sqlite_master WHERE type = 'trigger' AND name = ?",
                             (name,)).fetchone() is not None:
            return True
        del self.triggers[key]
        self._limits.pop(key, None)
        return False

    def _counted(self, key: Key) -> int:
        slot = self._slots[key]
        return self.tally[slot] + self.tally[slot + 1]

    def _recheck(self) -> None:
        """``check_at``: the least total at which some trigger may have counted its share (other keys' counts
        only grow, so the total reaches it first)."""
        total = sum(self.tally)
        self.check_at = min((limit - self._counted(key) + total for key, (limit, _) in self._limits.items()),
                            default=_NEVER)

    # -- following SQLite's undo -------------------------------------------------------------

    def statement_failed(self, many: bool) -> None:
        """The statement (``many``: the ``executemany``) raised: its counts go unless SQLite kept some of its
        changes (``FAIL``), or the ``executemany`` ran some statements before the failing one."""
        mark, self.mark = self.mark, None
        if mark is None or many or not self.triggers or self.tally == mark:
            return  # (with no trigger live, nothing counted while it ran, and the mark is an earlier statement's)
        # No statement ran since the failed one: changes() is still what SQLite set for it.
        if not self.conn.execute("SELECT changes()").fetchone()[0]:
            self._restore(mark)

    def savepoint(self, operation: str, name: str) -> None:
        """The migration's ``SAVEPOINT`` / ``RELEASE`` / ``ROLLBACK TO`` ran (``operation``: SQLite's
        authorizer word, ``BEGIN``, ``RELEASE`` or ``ROLLBACK``)."""
        name = name.lower()  # SQLite compares savepoint names without case
        operation = operation.upper()
        if operation == "BEGIN":
            self._savepoints.append((name, self.tally.copy(), dict(self.triggers), dict(self._snapshots),
                                     dict(self._limits)))
            return
        where = next((i for i in range(len(self._savepoints) - 1, -1, -1) if self._savepoints[i][0] == name), None)
        if operation == "RELEASE":
            if where is not None:
                del self._savepoints[where:]
            return
        if operation != "ROLLBACK":
            return
        # The rollback undid the triggers and copies made since, and brought back those dropped or emptied since:
        # what was live when the savepoint was made is live again.
        if where is None:  # made before this step: the step's work is undone, its counts with it
            self._savepoints.clear()
            self._restore([], {}, {}, {})
        else:
            del self._savepoints[where + 1:]  # ROLLBACK TO keeps the savepoint itself
            self._restore(*self._savepoints[where][1:])

    # -- the step's end --------------------------------------------------------------------

    def take(self) -> dict[tuple[str, str, str], int]:
        """What the step's counters counted, per (table, column, kind); the counters are removed."""
        self.settle()
        counts: dict[tuple[str, str, str], int] = {}
        tally = self.tally
        for (table, column), slot in self._slots.items():
            kinds = _KINDS if column else ("deleted",)
            for offset, kind in enumerate(kinds):
                if tally[slot + offset]:
                    counts[(table, column, kind)] = tally[slot + offset]
        for name in self.triggers.values():
            self.conn.execute(f"DROP TRIGGER IF EXISTS temp.{quote_identifier(name)}")
        for name in self._tables:
            try:
                self.conn.execute(f"DROP TABLE IF EXISTS temp.{quote_identifier(name)}")
            except sqlite3.OperationalError:  # a statement still reads: it is empty, and gone with the connection
                pass
        self.forget()
        return counts

    def forget(self) -> None:
        """The step failed (its rollback removed the triggers with everything else), or its counts were taken."""
        self.tally.clear()  # in place: the SQL function holds this list
        self.triggers.clear()  # in place: the observer holds it
        self._slots.clear()
        self._snapshots.clear()
        self._limits.clear()
        self._rowids.clear()
        self._tables.clear()
        self._savepoints.clear()
        self.check_at = _NEVER
        self.mark = None

    # -- inside --------------------------------------------------------------------------------

    def _slot(self, key: Key) -> int:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = len(self.tally)
            self.tally.extend((0, 0))
        return slot

    def _restore(self, counts: list[int], triggers: dict | None = None, snapshots: dict | None = None,
                 limits: dict | None = None) -> None:
        """Put the counts back as they were (slots made since start again from zero); with the rest, the
        triggers and copies live then."""
        self.tally[:] = counts + [0] * (len(self.tally) - len(counts))
        if triggers is not None:
            self.triggers.clear()
            self.triggers.update(triggers)
            self._snapshots = dict(cast(dict, snapshots))
            self._limits = dict(cast(dict, limits))
            self._rowids.clear()
        self._recheck()

    def _name(self) -> str:
        name = f"apm_preview_{self._serial}"
        self._serial += 1
        return name

    def _create(self, key: Key, when: str) -> None:
        if not self._registered:
            tally = self.tally

            def count(slot: int) -> None:
                tally[slot] += 1  # NULL: the WHEN is false, so the trigger's body never runs

            self.conn.create_function(FUNCTION, 1, count)
            self._registered = True
        name = self._name()
        self.triggers[key] = name
        self.conn.execute(f"CREATE TEMP TRIGGER {quote_identifier(name)} {when} BEGIN SELECT NULL; END")


#: SQLite's NOCASE folds ASCII letters only; so does this.
_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name: str) -> str:
    """``name`` as SQLite's ``COLLATE NOCASE`` compares it."""
    return name.translate(_FOLD)
