"""SQLite's reading of SQL text and of its catalog: its ``Dialect``, and the parts the rebuild and preview need.

The tokenizer is the engine-free one (``planner.sql``); what is SQLite's is
here: ``[name]`` and backtick names, names compared without case, triggers'
``BEGIN ... END`` bodies; where the name, columns and tail of a ``CREATE
TABLE`` are (the table rebuild); the names an ``ALTER TABLE`` renames (the
preview); and ``PRAGMA table_xinfo`` read as plain tuples.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from planner import deferred_dataclass
from planner.sql import Dialect, quote_identifier

SQLITE = Dialect("sqlite", quotes=(('"', '"'), ("`", "`"), ("[", "]")), string_prefixes="xX", fold_quoted=True,
                 body_heads=re.compile(r"(?:EXPLAIN (?:QUERY PLAN )?)?CREATE (?:TEMP |TEMPORARY )?TRIGGER\b"))

tokens = SQLITE.tokens
keywords = SQLITE.keywords
skipped = SQLITE.skipped
split_script = SQLITE.split_script


def names(sql: str) -> set[str]:
    """Every identifier ``sql`` mentions as a whole word, never inside a string literal."""
    return {t.name for t in tokens(sql) if t.name is not None}


# -- the catalog ------------------------------------------------------------------------

XinfoRow = tuple[str, str, int, "str | None", int, int]


def table_xinfo(conn: sqlite3.Connection, table: str) -> list[XinfoRow]:
    """``(name, type, notnull, default, pk, hidden)`` of each column, in order, as plain tuples.

    ``table_xinfo`` rather than ``table_info`` so generated columns are seen
    (``hidden`` 2 or 3); read through a fresh cursor with no row factory,
    since a migration may have set one on the shared connection.
    """
    cursor = conn.cursor()
    cursor.row_factory = None
    return [
        (row[0], row[1] or "", int(row[2]), row[3], int(row[4]), int(row[5]))
        for row in cursor.execute(
            'SELECT name, type, "notnull", dflt_value, pk, hidden FROM pragma_table_xinfo(?) ORDER BY cid', (table,)
        ).fetchall()
    ]


def compile_only(conn: sqlite3.Connection, sql: str, parameters: Any = ()) -> None:
    """Prepare ``sql`` as ``EXPLAIN``, so SQLite checks it and calls the authorizer, and execute none of it.

    Everything asked of an ``EXPLAIN`` here happens while it is prepared: an
    error (no such table, a broken trigger) is raised, and the authorizer
    called, then. Its rows (the program's opcodes, about 30 for a small
    ``CREATE TABLE``, eight values each) are never read: reading them was a
    tenth of a fleet run's cost per database. The cursor is closed, so no
    statement is left running to hold a table (a ``DROP TABLE`` refuses while
    one does).
    """
    cursor = conn.execute("EXPLAIN " + sql, parameters)
    cursor.close()


# -- CREATE TABLE: where its name, columns and tail are ----------------------------------


@deferred_dataclass(frozen=True)
class CreateTable:
    """Where the parts of a ``CREATE TABLE name (body) tail`` statement are, as offsets into its text."""

    sql: str
    name: str
    name_span: tuple[int, int]
    body_span: tuple[int, int]
    tail: set[str]

    def renamed(self, new_name: str) -> str:
        start, end = self.name_span
        return self.sql[:start] + quote_identifier(new_name) + self.sql[end:]

    def definitions(self) -> list[tuple[int, int]]:
        """Spans of the top-level comma-separated column definitions and table constraints."""
        start, end = self.body_span
        spans, depth, part_start = [], 0, start
        for token in tokens(self.sql[:end]):
            if token.start < start or token.kind != "punct":
                continue
            if token.text == "(":
                depth += 1
            elif token.text == ")":
                depth -= 1
            elif token.text == "," and depth == 0:
                spans.append((part_start, token.start))
                part_start = token.end
        spans.append((part_start, end))
        return spans


def parse_create_table(sql: str) -> CreateTable:
    """Where the name, column list and tail of a ``CREATE TABLE`` are; ``ValueError`` saying why it is not one.

    Only tables of the main schema with a column list are read: a ``CREATE
    TABLE ... AS SELECT`` has nothing to rebuild from.
    """
    found = tokens(sql)
    refuse = ValueError
    words = [t.name for t in found[:6]]
    if words[:2] != ["create", "table"]:
        raise refuse("does not start with CREATE TABLE")
    i = 2
    if words[2:5] == ["if", "not", "exists"]:
        i = 5
    if len(found) < i + 2 or found[i].name is None:
        raise refuse("names no table")
    name_token, i = found[i], i + 1
    name_start = name_token.start
    if found[i].text == "." and len(found) > i + 1:
        if name_token.name != "main":
            raise refuse(f"creates its table in schema {name_token.name}, not main")
        name_token, i = found[i + 1], i + 2
    if i >= len(found) or found[i].text != "(":
        raise refuse("has no column list in parentheses (CREATE TABLE ... AS SELECT cannot be rebuilt)")
    depth = 0
    for close in found[i:]:
        depth += {"(": 1, ")": -1}.get(close.text, 0) if close.kind == "punct" else 0
        if depth == 0:
            break
    else:
        raise refuse("has unbalanced parentheses")
    tail = {t.name for t in found if t.start >= close.end and t.name}
    # A name after "main." is unchecked: "CREATE TABLE main.((a))" (which SQLite rejects) gets None here;
    # refusing it would change behaviour, so it is left for a fix of its own.
    return CreateTable(sql, name_token.name, (name_start, name_token.end), (found[i].end, close.start), tail)  # type: ignore[arg-type]


# -- names in ALTER TABLE --------------------------------------------------------------------


def name_after(sql: str, keyword: str) -> str | None:
    """The identifier right after ``keyword`` (its last occurrence) in ``sql``, unquoted."""
    found = tokens(sql)
    for i in range(len(found) - 2, -1, -1):
        if found[i].name == keyword and found[i].kind == "word":
            following = found[i + 1]
            if following.kind == "word" and following.name == "column" and i + 2 < len(found):
                following = found[i + 2]
            return following.unquoted
    return None


def renamed_column(sql: str) -> tuple[str | None, str | None]:
    """``(old, new)`` of ``ALTER TABLE t RENAME [COLUMN] old TO new``."""
    found = tokens(sql)
    names = [t.name for t in found]
    if "rename" not in names:
        return None, None
    i = names.index("rename") + 1
    if i < len(found) and found[i].kind == "word" and found[i].name == "column":
        i += 1
    if i + 2 < len(found) and found[i + 1].name == "to":
        return found[i].unquoted, found[i + 2].unquoted
    return None, None

