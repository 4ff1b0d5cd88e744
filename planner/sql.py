"""Reading SQL text and SQLite's catalog: the small shared pieces, in one place.

Several modules need to look inside SQL without a full parser: the
connection proxy (the first keywords of a statement, the statements of a
script), the table rebuild (identifiers, parentheses and commas of a
``CREATE TABLE``), the schema snapshot and doctor (quoting names, reading
``PRAGMA table_xinfo``). Each rule lives here once, so they cannot disagree
about what a comment, a quoted name or a statement boundary is.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass


def quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


# -- statements: first keywords, and splitting a script ------------------------------

# Leading whitespace and comments before a statement's first keyword.
SKIP = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*", re.S)
_WORD = re.compile(r"[A-Za-z_]+")


def skipped(sql: str, pos: int = 0) -> int:
    """Where the whitespace and comments from ``pos`` end (``SKIP`` matches the empty text, so it always matches)."""
    match = SKIP.match(sql, pos)
    assert match is not None
    return match.end()


def keywords(sql: str, count: int) -> list[str]:
    """The first ``count`` words of a statement, upper-cased, skipping comments."""
    words: list[str] = []
    pos = 0
    while len(words) < count:
        pos = skipped(sql, pos)
        match = _WORD.match(sql, pos)
        if match is None:
            break
        words.append(match.group().upper())
        pos = match.end()
    return words


def split_script(script: str) -> Iterable[str]:
    """The statements of a script, in order, each complete (triggers' ``BEGIN ... END`` included).

    Pieces between semicolons are joined until ``sqlite3.complete_statement``
    agrees the statement is whole, so a semicolon inside a string literal or
    a trigger body does not split it.
    """
    pieces = script.split(";")
    buffer = ""
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        buffer += piece if i == last else piece + ";"
        if i == last or sqlite3.complete_statement(buffer):
            if keywords(buffer, 1):
                yield buffer[skipped(buffer) :].rstrip()
            buffer = ""


# -- tokens: just enough of a tokenizer to find names, parentheses and commas --------

_TOKEN = re.compile(
    r"""
      (?P<space>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<string>[xX]?'(?:[^']|'')*')
    | (?P<quoted>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
    | (?P<number>\.?\d[\w.]*)
    | (?P<word>[^\W\d][\w$]*)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    """One token of SQL text, with where it sits in that text."""

    kind: str
    text: str
    start: int
    end: int

    @property
    def name(self) -> str | None:
        """The identifier or keyword this token spells, lower-cased as SQLite compares names."""
        if self.kind == "word":
            return self.text.lower()
        if self.kind == "quoted":
            close = {"[": "]"}.get(self.text[0], self.text[0])
            return self.text[1:-1].replace(close * 2, close).lower()
        return None


def tokens(sql: str) -> list[Token]:
    """The tokens of ``sql`` without whitespace and comments (a comma in a comment splits nothing)."""
    return [
        Token(m.lastgroup or "punct", m.group(), m.start(), m.end())
        for m in _TOKEN.finditer(sql)
        if m.lastgroup != "space"
    ]


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


# -- CREATE TABLE: where its name, columns and tail are ----------------------------------


@dataclass(frozen=True)
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
            return unquoted(following)
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
        return unquoted(found[i]), unquoted(found[i + 2])
    return None, None


def unquoted(token) -> str:
    if token.kind == "quoted":
        close = {"[": "]"}.get(token.text[0], token.text[0])
        return token.text[1:-1].replace(close * 2, close)
    return token.text
