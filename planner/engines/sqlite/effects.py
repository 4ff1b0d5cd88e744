"""What one step did, as a preview's observer saw it, and the same netted into what a person would say.

``StepObserver`` (``planner.engines.sqlite.observe``) fills a ``StepEffects`` statement by
statement; ``resolve`` nets it at the end of the step: a table dropped and
put back under its name is a rebuild (with its lost columns and rows named),
an index a rebuild recreated is not news, a renamed column is a rename.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from planner.preview import DataImpact
from planner.schema import ObjectKind, SchemaChange
from planner.engines.sqlite.sql import names, tokens


@dataclass
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
    #: Tables rows were added to or created (their own foreign keys need checking) ...
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
