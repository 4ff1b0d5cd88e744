"""What a database's schema is, and what changed between two moments: pure data, no opinions.

A ``SchemaSnapshot`` records the user's objects only: tables (their columns
as ``PRAGMA table_xinfo`` reports them, and how many rows each holds),
indexes, triggers and views. SQLite's internals (``sqlite_%``) and the
ledger's own tables are left out, because the rehearsal diffs snapshots taken
around each migration and the ledger row every step writes is not a change
the operator asked about.

``diff`` compares two snapshots and returns ``SchemaChange`` values that each
describe themselves in one line, so the rehearsal, the CLI and the JSON output
all say the same thing the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from planner.engines.sqlite.sql import table_xinfo
from planner.sql import quote_identifier

#: Tables the ledger owns: never part of a snapshot (their indexes and triggers neither).
LEDGER_TABLES = ("schema_migrations", "schema_migrations_log")

ObjectKind = Literal["table", "column", "index", "trigger", "view", "constraint", "function", "rows", "values"]
Action = Literal["added", "removed", "changed", "renamed", "rebuilt"]


def _normalized(sql: str | None) -> str:
    # sqlite_master keeps SQL as written; a rebuild may change only whitespace.
    return " ".join((sql or "").split())


@dataclass(frozen=True)
class Column:
    """One column, as ``PRAGMA table_xinfo`` describes it."""

    name: str
    type: str
    notnull: bool
    #: The default as SQL text (``'{}'``, ``CURRENT_TIMESTAMP``), ``None`` when there is none.
    default: str | None
    #: Position in the primary key (1-based), 0 when the column is not part of it.
    pk: int
    #: 0 for ordinary columns, 2 or 3 for generated ones, 1 for virtual tables' hidden columns.
    hidden: int = 0

    def definition(self) -> str:
        """``TEXT NOT NULL DEFAULT '{}'``: how a change line shows a column."""
        parts = [self.type or "(no type)"]
        if self.notnull:
            parts.append("NOT NULL")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.pk:
            parts.append("PRIMARY KEY")
        if self.hidden in (2, 3):
            parts.append("GENERATED")
        return " ".join(parts)


@dataclass(frozen=True)
class Table:
    """A table: its SQL, its columns in order, and its row count (``None`` when not counted)."""

    name: str
    sql: str
    columns: tuple[Column, ...]
    rows: int | None

    def column(self, name: str) -> Column | None:
        """The column called ``name`` (SQLite compares column names without case)."""
        wanted = name.lower()
        return next((c for c in self.columns if c.name.lower() == wanted), None)


@dataclass(frozen=True)
class SchemaSnapshot:
    """The user-visible schema of one database at one moment."""

    tables: Mapping[str, Table] = field(default_factory=dict)
    #: name -> SQL, for indexes, triggers and views. Automatic indexes (no SQL) are not listed.
    indexes: Mapping[str, str] = field(default_factory=dict)
    triggers: Mapping[str, str] = field(default_factory=dict)
    views: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data: tables with columns and rows, and name -> SQL for the rest."""
        return {
            "tables": {
                name: {
                    "sql": table.sql,
                    "rows": table.rows,
                    "columns": [
                        {"name": c.name, "type": c.type, "notnull": c.notnull, "default": c.default,
                         "pk": c.pk, "hidden": c.hidden}
                        for c in table.columns
                    ],
                }
                for name, table in self.tables.items()
            },
            "indexes": dict(self.indexes),
            "triggers": dict(self.triggers),
            "views": dict(self.views),
        }


@dataclass(frozen=True)
class SchemaChange:
    """One difference between two snapshots.

    ``name`` is the object's name (the column's for ``column``, the table's
    for ``rows``); ``table`` is the table a column belongs to. ``before`` and
    ``after`` are the definitions (SQL or column definition) or, for
    ``rows``, the row counts; ``None`` on the side where the object is absent.
    """

    kind: ObjectKind
    action: Action
    name: str
    table: str | None = None
    before: str | int | None = None
    after: str | int | None = None

    @property
    def qualified_name(self) -> str:
        """``agents.metadata`` for a column, ``reviews.rating_range`` for a constraint, the plain name otherwise."""
        return f"{self.table}.{self.name}" if self.kind in ("column", "constraint") and self.table else self.name

    def describe(self) -> str:
        """One line in the rehearsal's words: ``drops column agents.metadata (TEXT DEFAULT '{}')``."""
        if self.kind == "rows" and self.action == "added":
            rows = "1 row" if self.after == 1 else f"{self.after} rows"
            return f"inserts {rows} into {self.name}"
        if self.kind == "rows" and self.action == "removed":  # rows of a table the same plan created
            rows = "1 row" if self.before == 1 else f"{self.before} rows"
            return f"deletes {rows} of {self.name} (rows this plan wrote)"
        if self.kind == "values":  # changed, but none held data from before the plan (NULL, or the plan's own)
            values = "1 value" if self.after == 1 else f"{self.after} values"
            return f"sets {values} of {self.table}.{self.name} (none held data from before this plan)"
        if self.action == "renamed":
            if self.kind == "column":
                return f"renames column {self.table}.{self.before} to {self.after}"
            return f"renames {self.kind} {self.before} to {self.after}"
        if self.action == "rebuilt":
            return f"rebuilds table {self.name} (copies its rows into the new shape)"
        if self.kind == "rows":
            before, after = int(self.before or 0), int(self.after or 0)
            delta = after - before
            verb = "deletes" if delta < 0 else "inserts"
            rows = "1 row" if abs(delta) == 1 else f"{abs(delta)} rows"
            return f"{verb} {rows} of {self.name} ({before} → {after})"
        what = f"{self.kind} {self.qualified_name}"
        if self.action == "added":
            detail = f" ({self.after})" if self.kind == "column" and self.after else ""
            return f"adds {what}{detail}"
        if self.action == "removed":
            detail = f" ({self.before})" if self.kind == "column" and self.before else ""
            return f"drops {what}{detail}"
        if self.kind == "column":
            return f"changes {what}: {self.before} → {self.after}"
        return f"changes {what} (its SQL differs)"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "action": self.action,
            "name": self.name,
            "table": self.table,
            "before": self.before,
            "after": self.after,
            "text": self.describe(),
        }


# --------------------------------------------------------------------------
# Reading a snapshot
# --------------------------------------------------------------------------

_OBJECTS = """
SELECT type, name, tbl_name, sql FROM sqlite_master
WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
  AND tbl_name NOT IN ({ledger})
ORDER BY type, name
""".format(ledger=", ".join(f"'{t}'" for t in LEDGER_TABLES))


def snapshot(conn: sqlite3.Connection, *, count_rows: bool = True) -> SchemaSnapshot:
    """Read the schema (and each table's row count) in one consistent read.

    When ``conn`` is not inside a transaction, the reads are wrapped in one,
    so a writer on another connection cannot slip a change between the
    schema and the counts. ``count_rows=False`` skips the ``COUNT(*)`` scans
    for callers that only need the shape.
    """
    cursor = conn.cursor()
    cursor.row_factory = None  # a migration may have set row_factory on a shared connection
    own_transaction = not conn.in_transaction
    if own_transaction:
        cursor.execute("BEGIN")
    try:
        tables: dict[str, Table] = {}
        indexes: dict[str, str] = {}
        triggers: dict[str, str] = {}
        views: dict[str, str] = {}
        for kind, name, _table, sql in cursor.execute(_OBJECTS).fetchall():
            if kind == "table":
                columns = tuple(
                    Column(col, kind, bool(notnull), default, pk, hidden)
                    for col, kind, notnull, default, pk, hidden in table_xinfo(conn, name)
                )
                rows = None
                if count_rows:
                    rows = cursor.execute(f"SELECT COUNT(*) FROM {quote_identifier(name)}").fetchone()[0]
                tables[name] = Table(name, sql or "", columns, rows)
            elif kind == "index" and sql:
                indexes[name] = sql
            elif kind == "trigger":
                triggers[name] = sql or ""
            elif kind == "view":
                views[name] = sql or ""
    finally:
        if own_transaction and conn.in_transaction:
            cursor.execute("COMMIT")
    return SchemaSnapshot(tables, indexes, triggers, views)


# --------------------------------------------------------------------------
# Comparing two snapshots
# --------------------------------------------------------------------------


def diff(before: SchemaSnapshot, after: SchemaSnapshot) -> list[SchemaChange]:
    """Everything that differs, in a stable order: tables, columns, indexes, triggers, views, rows.

    A table present on both sides whose columns differ is reported column by
    column; when only its constraints changed (same columns, different SQL),
    as one ``table changed``. Row counts are compared for tables present on
    both sides and counted on both; a dropped table's rows are the
    rehearsal's business, since only it can say what they held.
    """
    changes: list[SchemaChange] = []
    for name in sorted(before.tables.keys() - after.tables.keys()):
        changes.append(SchemaChange("table", "removed", name, before=before.tables[name].sql))
    for name in sorted(after.tables.keys() - before.tables.keys()):
        changes.append(SchemaChange("table", "added", name, after=after.tables[name].sql))
    common = sorted(before.tables.keys() & after.tables.keys())
    for name in common:
        changes.extend(_table_changes(before.tables[name], after.tables[name]))
    for kind, old, new in (
        ("index", before.indexes, after.indexes),
        ("trigger", before.triggers, after.triggers),
        ("view", before.views, after.views),
    ):
        changes.extend(_named_sql_changes(cast(ObjectKind, kind), old, new))  # a literal of the tuple above
    for name in common:
        old_rows, new_rows = before.tables[name].rows, after.tables[name].rows
        if old_rows is not None and new_rows is not None and old_rows != new_rows:
            changes.append(SchemaChange("rows", "changed", name, table=name, before=old_rows, after=new_rows))
    return changes


def _table_changes(old: Table, new: Table) -> list[SchemaChange]:
    changes: list[SchemaChange] = []
    old_columns = {c.name.lower(): c for c in old.columns}
    new_columns = {c.name.lower(): c for c in new.columns}
    for key, column in old_columns.items():
        if key not in new_columns:
            changes.append(SchemaChange("column", "removed", column.name, old.name, before=column.definition()))
    for key, column in new_columns.items():
        if key not in old_columns:
            changes.append(SchemaChange("column", "added", column.name, old.name, after=column.definition()))
    for key, column in old_columns.items():
        other = new_columns.get(key)
        if other is not None and other.definition() != column.definition():
            changes.append(
                SchemaChange("column", "changed", column.name, old.name, column.definition(), other.definition())
            )
    if not changes and _normalized(old.sql) != _normalized(new.sql):
        changes.append(SchemaChange("table", "changed", old.name, before=old.sql, after=new.sql))
    return changes


def _named_sql_changes(kind: ObjectKind, old: Mapping[str, str], new: Mapping[str, str]) -> list[SchemaChange]:
    changes: list[SchemaChange] = []
    for name in sorted(old.keys() - new.keys()):
        changes.append(SchemaChange(kind, "removed", name, before=old[name]))
    for name in sorted(new.keys() - old.keys()):
        changes.append(SchemaChange(kind, "added", name, after=new[name]))
    for name in sorted(old.keys() & new.keys()):
        if _normalized(old[name]) != _normalized(new[name]):
            changes.append(SchemaChange(kind, "changed", name, before=old[name], after=new[name]))
    return changes
