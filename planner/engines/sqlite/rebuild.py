"""Rebuilding a table: the schema changes ``ALTER TABLE`` cannot make.

SQLite cannot change a column's type or constraints, add a CHECK or reorder
columns in place. lang_altertable.html ("Making Other Kinds Of Table Schema
Changes") gives the procedure instead, and writing it by hand is how migration
0020 lost ``agents.metadata``. Here the author writes the whole target
``CREATE TABLE``, so every column the table keeps is named on purpose, and
``rebuild_table`` does the rest: copy the rows by column name (through a
conversion expression where asked), swap the tables, and recreate every index,
trigger and view that referred to the old one.

It runs inside the executor's transaction. The executor turns foreign key
enforcement off before BEGIN and runs ``PRAGMA foreign_key_check`` before
COMMIT, so this module never sets ``PRAGMA foreign_keys`` and never begins or
commits. Its work happens inside a SAVEPOINT: a refusal or a failure leaves the
database exactly as it was before the call.

What a ``rebuild_table`` conversion changes: the values of old columns that do not come back the same.

A preview counts them as overwritten, the way PostgreSQL's preview counts
an ``ALTER COLUMN ... TYPE ... USING``: a conversion is loss where it
changes a value (clamping 9 to 5), not where it only renames a column or
stores the same value under another type (``'1'`` as ``1``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from planner.engines.sqlite.sql import CreateTable, names, parse_create_table, table_xinfo, tokens as sql_tokens
from planner.errors import RebuildFailed, RebuildRefused, TableNotFound
from planner.sql import Token, quote_identifier


__all__ = ["drop_columns", "rebuild_table", "table_sql"]

_SAVEPOINT = "apm_rebuild_table"
_TABLE_CONSTRAINTS = {"constraint", "primary", "unique", "check", "foreign"}
_COMMENT_AFTER_COMMA = re.compile(r"[ \t]*--[^\n]*\n")


def _parse_create_table(table: str, sql: str) -> CreateTable:
    """Read the header of ``CREATE TABLE``; refuse anything that would not rebuild ``table`` itself."""
    def refuse(reason: str) -> RebuildRefused:
        return RebuildRefused(table, "the new CREATE TABLE statement", reason,
                              f"Pass the full statement the table should end with: CREATE TABLE {table} (...)")

    try:
        parsed = parse_create_table(sql)
    except ValueError as exc:
        raise refuse(str(exc)) from None
    if parsed.name != table.lower():
        raise refuse(f"creates table {parsed.name}, not {table}")
    return parsed


# -- reading the schema ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str
    type: str
    notnull: bool
    default: str | None
    pk: int
    generated: bool


@dataclass(frozen=True)
class _SchemaObject:
    """An index, trigger or view as ``sqlite_master`` stores it: enough to drop and recreate it."""

    type: str
    name: str
    tbl_name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.type} {self.name}"


def _columns(conn: sqlite3.Connection, table: str) -> list[_Column]:
    rows = table_xinfo(conn, table)
    # hidden is 2 or 3 for generated columns, which cannot be inserted into.
    return [
        _Column(name, kind, bool(nn), default, pk, hidden in (2, 3))
        for name, kind, nn, default, pk, hidden in rows
    ]


def _stored_name(conn: sqlite3.Connection, table: str) -> tuple[str, str]:
    row = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE", (table,)
    ).fetchone()
    if row is None:
        raise TableNotFound(table)
    return row


def table_sql(conn: sqlite3.Connection, table: str) -> str:
    """The ``CREATE TABLE`` statement SQLite keeps for ``table``: the starting point for writing its next shape."""
    return _stored_name(conn, table)[1]


def _dependents(conn: sqlite3.Connection, table: str) -> list[_SchemaObject]:
    """Every index, trigger and view that must be recreated once ``table`` is replaced.

    Indexes and triggers on the table go with it when it is dropped. Views, and
    triggers on other tables or on views, only mention it, but SQLite checks
    them when the new table is renamed into place, so they are dropped and
    recreated too; so is anything that mentions a view dropped on the way.
    Mentions are found by name as a whole identifier: a false match only costs
    an unneeded drop and recreate.
    """
    objects = [
        _SchemaObject(*row)
        for row in conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE type IN ('index', 'trigger', 'view') AND sql IS NOT NULL ORDER BY rowid"
        )
    ]
    gone = {table.lower()}
    found: set[int] = set()  # positions in objects: a trigger and a view may share a name
    grew = True
    while grew:
        grew = False
        for i, obj in enumerate(objects):
            if i in found:
                continue
            if obj.tbl_name.lower() in gone or (obj.type != "index" and gone & names(obj.sql)):
                found.add(i)
                grew = True
                if obj.type == "view":
                    gone.add(obj.name.lower())
    return [obj for i, obj in enumerate(objects) if i in found]


def _referencing_tables(conn: sqlite3.Connection, table: str) -> list[str]:
    rows = conn.execute("SELECT DISTINCT m.name FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS f "
                        "WHERE m.type = 'table' AND f.\"table\" = ? COLLATE NOCASE AND m.name <> ? COLLATE NOCASE",
                        (table, table))
    return [name for (name,) in rows]


def _temporary_name(conn: sqlite3.Connection, table: str) -> str:
    candidate, n = f"_{table}_rebuild", 1
    while conn.execute("SELECT 1 FROM sqlite_master WHERE name = ? COLLATE NOCASE", (candidate,)).fetchone():
        candidate, n = f"_{table}_rebuild{n}", n + 1
    return candidate


# -- doing it -------------------------------------------------------------------------------------


@contextmanager
def _savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    """All or nothing, nested inside whatever transaction the caller (the executor) holds."""
    conn.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        yield
    except BaseException:
        try:
            conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
            conn.execute(f"RELEASE {_SAVEPOINT}")
        except sqlite3.Error:
            pass  # SQLite already rolled back the whole transaction (disk full, interrupt); nothing to undo
        raise
    conn.execute(f"RELEASE {_SAVEPOINT}")


def _run(conn: sqlite3.Connection, table: str, step: str, sql: str, params: tuple = ()) -> None:
    try:
        conn.execute(sql, params)
    except sqlite3.Error as exc:
        raise RebuildFailed(table, step, exc) from exc


def rebuild_table(
    conn: sqlite3.Connection, table: str, create_sql: str, *, convert: Mapping[str, str] | None = None
) -> None:
    """Give ``table`` the shape ``create_sql`` describes, keeping its rows and everything built on it.

    Columns the new table shares with the old one are copied by name;
    ``convert`` maps a new column to an SQL expression over the old columns
    (``{"tier": "CASE tier WHEN 'core' THEN 1 ELSE 2 END"}``); old columns the
    new table lacks are dropped. Foreign keys in other tables name the table,
    so they point at the new one once it is renamed into place; the executor's
    ``foreign_key_check`` catches any row the new shape orphans.

    Raises ``RebuildRefused`` (before or instead of changing anything) for
    what cannot be done safely, ``RebuildFailed`` if SQLite rejects a step;
    in both cases the database is as it was before the call.
    """
    converting = {key.lower(): (key, expr) for key, expr in (convert or {}).items()}
    table, old_sql = _stored_name(conn, table)
    if table.lower().startswith("sqlite_") or sql_tokens(old_sql)[1].name == "virtual":
        raise RebuildRefused(table, f"table {table}", "is an internal or virtual table", "Leave it to SQLite")
    old = _parse_create_table(table, old_sql)
    new = _parse_create_table(table, create_sql)
    children = _referencing_tables(conn, table)
    if children and conn.execute("PRAGMA foreign_keys").fetchone()[0]:
        raise RebuildRefused(
            table, f"table {children[0]}", "references it while foreign key enforcement is on, so dropping "
            "the old table would delete or orphan its rows",
            "Run the rebuild inside a migration (the executor turns enforcement off), or set "
            "PRAGMA foreign_keys=OFF before BEGIN",
        )
    dependents = _dependents(conn, table)
    old_columns = {c.name.lower(): c for c in _columns(conn, table)}
    sequence = _sequence(conn, table)

    with _savepoint(conn):
        temporary = _temporary_name(conn, table)
        _run(conn, table, "creating the new table", new.renamed(temporary))
        new_columns = _columns(conn, temporary)
        _refuse_unsafe(table, new_columns, old_columns, converting, dependents)
        same_rowids = _copy_rows(conn, table, temporary, "without" in old.tail | new.tail, new_columns, old_columns,
                                 converting)
        observe = getattr(conn, "observe_rebuild", None)
        if observe is not None:  # say which columns carry over, and as what (a preview reports renames, not loss)
            # Start-up time: a catalog whose migrations import rebuild_table must not load the preview's modules.
            from planner.engines.sqlite.effects import carried_columns

            carried, dropped = carried_columns([c.name for c in new_columns], [c.name for c in old_columns.values()],
                                               {key: expr for key, (_, expr) in converting.items()})
            changed = (converted_values(conn, table, temporary, carried, old_columns, converting, same_rowids)
                       if getattr(conn, "watched", False) else {})
            observe(table, carried, dropped, [c.name for c in new_columns], changed)

        for obj in reversed(dependents):  # what only mentions the table survives DROP TABLE; clear it first
            if obj.tbl_name.lower() != table.lower():
                _run(conn, table, f"dropping {obj.label}", f"DROP {obj.type.upper()} IF EXISTS {quote_identifier(obj.name)}")
        _run(conn, table, "dropping the old table", f"DROP TABLE {quote_identifier(table)}")
        _run(conn, table, "renaming the new table", f"ALTER TABLE {quote_identifier(temporary)} RENAME TO {quote_identifier(table)}")
        order = {"index": 0, "view": 1, "trigger": 2}  # INSTEAD OF triggers need their view
        for obj in sorted(dependents, key=lambda o: order[o.type]):
            _run(conn, table, f"recreating {obj.label}", obj.sql)

        if sequence is not None and "autoincrement" in names(create_sql):
            # The copy set the counter to the highest id still present; ids of deleted rows must stay used.
            step, counter = "keeping the AUTOINCREMENT counter", max(sequence, _sequence(conn, table) or 0)
            _run(conn, table, step, "DELETE FROM sqlite_sequence WHERE name = ?", (table,))
            _run(conn, table, step, "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, counter))


def _sequence(conn: sqlite3.Connection, table: str) -> int | None:
    """The AUTOINCREMENT counter of ``table``, if it has one yet."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        return None
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ? COLLATE NOCASE", (table,)).fetchone()
    return None if row is None else row[0]


def _refuse_unsafe(table: str, new_columns: list[_Column], old_columns: Mapping[str, _Column],
                   convert: Mapping[str, tuple[str, str]], dependents: list[_SchemaObject]) -> None:
    writable = {c.name.lower() for c in new_columns if not c.generated}
    for key, (name, _) in convert.items():
        if key not in writable:
            raise RebuildRefused(table, f"convert key {name}", "is not a stored column of the new table",
                                 "Name a column of the new CREATE TABLE, or add the column to it")
    single_pk = sum(1 for c in new_columns if c.pk) == 1
    for column in new_columns:
        key = column.name.lower()
        rowid_alias = single_pk and column.pk and column.type.upper() == "INTEGER"
        if (column.notnull and column.default is None and not column.generated and not rowid_alias
                and key not in old_columns and key not in convert):
            raise RebuildRefused(
                table, f"new column {column.name}", "is NOT NULL with no DEFAULT, so existing rows have no value",
                f"Give it a DEFAULT, or pass convert={{'{column.name}': '<expression over the old columns>'}}",
            )
    dropped = set(old_columns) - {c.name.lower() for c in new_columns}
    for obj in dependents:
        used = sorted(dropped & names(obj.sql))
        if used:
            raise RebuildRefused(
                table, obj.label, f"uses column {old_columns[used[0]].name}, which the new table drops",
                f"Drop or rewrite {obj.label} in this migration before the rebuild, or keep the column",
            )


def _copy_rows(conn: sqlite3.Connection, table: str, temporary: str, without_rowid: bool, new_columns: list[_Column],
               old_columns: Mapping[str, _Column], convert: Mapping[str, tuple[str, str]]) -> bool:
    """Copy the rows into the new table; whether each kept its rowid (so old and new rows can be paired)."""
    targets, sources = [], []
    for column in new_columns:
        key = column.name.lower()
        if column.generated:
            continue
        if key in convert:
            sources.append(convert[key][1])
        elif key in old_columns:
            sources.append(quote_identifier(old_columns[key].name))
        else:
            continue  # a new column: its DEFAULT fills it
        targets.append(quote_identifier(column.name))
    if not targets:
        raise RebuildRefused(
            table, "the new CREATE TABLE statement", "shares no column with the old table, so every row would be lost",
            "Keep at least one column, or map new columns to old ones with convert",
        )
    # A table without INTEGER PRIMARY KEY still has rowids that code may rely on: keep them too.
    has_alias = any(c.pk and c.type.upper() == "INTEGER" for c in new_columns) and sum(
        1 for c in new_columns if c.pk
    ) == 1
    shadowed = {"rowid", "oid", "_rowid_"} & (set(old_columns) | {c.name.lower() for c in new_columns})
    same_rowids = False
    if not has_alias and not without_rowid and not shadowed:
        targets.insert(0, "rowid")
        sources.insert(0, "rowid")
        same_rowids = True
    elif has_alias:  # the alias column is the rowid: copied as it was, the rows keep their rowids
        alias = next(c.name.lower() for c in new_columns if c.pk)
        same_rowids = alias in old_columns and alias not in convert
    _run(
        conn, table, "copying the rows",
        f"INSERT INTO {quote_identifier(temporary)} ({', '.join(targets)}) SELECT {', '.join(sources)} FROM {quote_identifier(table)}",
    )
    return same_rowids


def _is_table_constraint(tokens: Sequence[Token]) -> bool:
    """Whether a definition is a table constraint rather than a column (a quoted "check" is a column)."""
    return tokens[0].kind == "word" and tokens[0].name in _TABLE_CONSTRAINTS


def drop_columns(conn: sqlite3.Connection, table: str, *columns: str) -> None:
    """Rebuild ``table`` without ``columns``, deriving the new statement from the stored one.

    Refuses, naming it, a table constraint or another column's definition that
    mentions a dropped column: rewriting a CHECK or a composite key is a choice
    the author has to make with ``rebuild_table``.
    """
    table, old_sql = _stored_name(conn, table)
    dropping = {c.lower(): c for c in columns}
    create = _parse_create_table(table, old_sql)
    pieces: list[tuple[str, str]] = []  # (definition, the comment after its comma)
    for start, end in create.definitions():
        text = old_sql[start:end]
        note = _COMMENT_AFTER_COMMA.match(text)
        if note and pieces:  # `b TEXT, -- why b` describes b, not the next definition
            pieces[-1] = (pieces[-1][0], note.group())
            text = text[note.end() :]
        pieces.append((text, ""))
    kept: list[tuple[str, str]] = []
    found: set[str] = set()
    for text, comment in pieces:
        tokens = sql_tokens(text)
        if not tokens:
            continue
        first, constraint = tokens[0].name, _is_table_constraint(tokens)
        if not constraint and first in dropping:
            found.add(first)
            continue
        used = sorted({t.name for t in tokens[0 if constraint else 1 :] if t.name is not None} & set(dropping))
        if used:
            what = f"table constraint {' '.join(text.split())!r}" if constraint else f"column {tokens[0].text}"
            raise RebuildRefused(table, what, f"uses column {dropping[used[0]]}, which is being dropped",
                                 "Write the new CREATE TABLE yourself and call rebuild_table")
        kept.append((text, comment))
    for key, name in dropping.items():
        if key not in found:
            raise RebuildRefused(table, f"column {name}", "does not exist", "Check the names; table_sql shows them")
    if all(_is_table_constraint(sql_tokens(text)) for text, _ in kept):
        raise RebuildRefused(table, "drop_columns", "would leave the table with no columns", "Drop the table instead")
    start, end = create.body_span
    body = old_sql[start:end]
    trailing = body[len(body.rstrip()):]
    lead = pieces[0][0][: len(pieces[0][0]) - len(pieces[0][0].lstrip())]
    kept[0] = (lead + kept[0][0].lstrip(), kept[0][1])  # where the old first definition started
    last = len(kept) - 1
    definitions = "".join(text + ("," if i < last else "") + note for i, (text, note) in enumerate(kept)).rstrip()
    if "--" in definitions[sql_tokens(definitions)[-1].end :] and "\n" not in trailing:
        trailing = "\n"  # the last kept line ends in a comment that would swallow the closing parenthesis
    new_sql = old_sql[:start] + definitions + trailing + old_sql[end:]
    rebuild_table(conn, table, new_sql)


def converted_values(
    conn: sqlite3.Connection,
    table: str,
    temporary: str,
    carried: Mapping[str, str],
    old_columns: Mapping[str, Any],
    convert: Mapping[str, tuple[str, str]],
    same_rowids: bool,
) -> dict[str, int]:
    """Per old column a ``convert`` rewrites, the values that existed and do not come back the same (clamping 9
    to 5 changes one; ``CAST(price AS INTEGER)`` changes 19.99, not 20.0), as PostgreSQL's preview counts an
    ``ALTER COLUMN ... TYPE ... USING``. A conversion that merges several old columns into one is not counted.

    The new value is read from the new table where each row kept its rowid (so the new column's type applies,
    as it does to what is stored), else the expression is compared on the old table.
    """
    pairs = []  # (old column, new column, expression)
    for key, (name, expression) in convert.items():
        sources = [old for old, new in carried.items() if new.lower() == key]
        old = key if key in old_columns else (sources[0].lower() if len(sources) == 1 else None)
        if old is not None and old in old_columns and old_columns[old].name in carried:
            pairs.append((old_columns[old].name, name, expression))
    if not pairs:
        return {}
    if same_rowids:
        sums = [f"COALESCE(SUM(o.{quote_identifier(old)} IS NOT NULL AND o.{quote_identifier(old)} IS NOT "
                f"n.{quote_identifier(new)}), 0)" for old, new, _ in pairs]
        sql = (f"SELECT {', '.join(sums)} FROM {quote_identifier(table)} AS o "
               f"JOIN {quote_identifier(temporary)} AS n ON n.rowid = o.rowid")
    else:
        sums = [f"COALESCE(SUM({quote_identifier(old)} IS NOT NULL AND {quote_identifier(old)} IS NOT ({expression})),"
                f" 0)" for old, _, expression in pairs]
        sql = f"SELECT {', '.join(sums)} FROM {quote_identifier(table)}"
    row = conn.execute(sql).fetchone()
    return {old: int(n) for (old, _, _), n in zip(pairs, row)}
