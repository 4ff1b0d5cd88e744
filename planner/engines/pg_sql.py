"""Reading PostgreSQL's SQL text: statements of a script, placeholders, and the parts the preview needs.

SQLite's rules (``planner.sql``) do not fit: PostgreSQL has dollar-quoted
bodies (``$$ ... $$``), ``::`` casts and ``E'...'`` strings, and psycopg's
placeholders are ``%s`` / ``%(name)s``. One tokenizer serves splitting a
script, translating SQLite's ``?`` and ``:name`` placeholders (so one
catalog runs on both engines) and finding the table and columns of a
``DROP``, ``ALTER``, ``DELETE`` or ``UPDATE`` for the preview.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
      (?P<space>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|\Z))
    | (?P<string>[eEbBxXnN]?'(?:[^'\\]|''|\\.)*(?:'|\Z))
    | (?P<quoted>"(?:[^"]|"")*(?:"|\Z))
    | (?P<cast>::)
    | (?P<named>:[A-Za-z_]\w*)
    | (?P<pyformat>%\((?P<pyname>\w+)\)s|%s|%%)
    | (?P<number>\d[\w.]*)
    | (?P<word>[A-Za-z_][\w$]*)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    end: int

    @property
    def name(self) -> str | None:
        """An identifier as PostgreSQL folds it: unquoted lower-cased, quoted as written."""
        if self.kind == "word":
            return self.text.lower()
        if self.kind == "quoted":
            return self.text[1:-1].replace('""', '"')
        return None

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


def tokens(sql: str, *, keep_space: bool = False) -> list[Token]:
    return [Token(m.lastgroup if m.lastgroup not in ("tag", "pyname") else "punct", m.group(), m.start(), m.end())
            for m in _TOKEN.finditer(sql) if keep_space or m.lastgroup != "space"]


def split_script(script: str) -> Iterator[str]:
    """The statements of a script, each without its ``;``; semicolons inside strings or ``$$`` bodies split nothing."""
    start = 0
    for token in tokens(script):
        if token.kind == "punct" and token.text == ";":
            statement = script[start:token.start].strip()
            if tokens(statement):
                yield statement
            start = token.end
    rest = script[start:].strip()
    if tokens(rest):
        yield rest


def first_keywords(sql: str, count: int) -> list[str]:
    words = []
    for token in tokens(sql):
        if token.kind != "word" or len(words) == count:
            break
        words.append(token.upper)
    return words


def translate_placeholders(sql: str, parameters: object) -> str:
    """SQLite's ``?`` and ``:name`` placeholders as psycopg's ``%s`` and ``%(name)s``.

    Only when the statement uses them (and parameters are given): then a
    literal ``%`` is doubled, as psycopg requires. A statement already
    written with ``%s`` passes through unchanged.
    """
    if parameters is None:
        return sql
    parts = tokens(sql, keep_space=True)
    if not any(t.kind == "named" or (t.kind == "punct" and t.text == "?") for t in parts):
        return sql
    out = []
    for token in parts:
        if token.kind == "punct" and token.text == "?":
            out.append("%s")
        elif token.kind == "named":
            out.append(f"%({token.text[1:]})s")
        elif token.kind in ("pyformat", "string", "quoted", "dollar") or token.text == "%":
            out.append(token.text.replace("%", "%%"))  # psycopg reads % everywhere, literals included
        else:
            out.append(token.text)
    return "".join(out)


# -- what the preview needs to know about a statement ----------------------------------


def _qualified(parts: list[Token], i: int) -> tuple[str | None, int]:
    """A possibly schema-qualified name starting at ``parts[i]``: (``schema.table`` or ``table``, next index)."""
    if i >= len(parts) or parts[i].name is None:
        return None, i
    name = parts[i].name
    i += 1
    while i + 1 < len(parts) and parts[i].text == "." and parts[i + 1].name is not None:
        name = f"{name}.{parts[i + 1].name}"
        i += 2
    return name, i


def _skip(parts: list[Token], i: int, *words: str) -> int:
    while i < len(parts) and parts[i].upper in words:
        i += 1
    return i


def top_level_split(parts: list[Token], separator: str = ",") -> list[list[Token]]:
    """``parts`` split at ``separator`` outside parentheses."""
    groups: list[list[Token]] = [[]]
    depth = 0
    for token in parts:
        if token.text in "([" and token.kind == "punct":
            depth += 1
        elif token.text in ")]" and token.kind == "punct":
            depth -= 1
        if depth == 0 and token.kind == "punct" and token.text == separator:
            groups.append([])
            continue
        groups[-1].append(token)
    return groups


@dataclass(frozen=True)
class Statement:
    """What the preview looks at before a statement runs."""

    kind: str  # drop-table | drop-columns | truncate | delete | update | delete-like | insert | other
    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    #: update: (column, expression text) per SET item; where: the WHERE text; alias: the table's alias.
    assignments: tuple[tuple[str, str], ...] = ()
    where: str | None = None
    alias: str | None = None


def classify(sql: str) -> Statement:
    """The preview's reading of one statement; ``other`` for anything it does not measure."""
    parts = tokens(sql)
    head = [t.upper for t in parts[:3]]
    if head[:2] == ["DROP", "TABLE"]:
        i = _skip(parts, 2, "IF", "EXISTS")
        names = [_qualified(group, 0)[0] for group in top_level_split(parts[i:])]
        return Statement("drop-table", tuple(n for n in names if n))
    if head[:2] == ["ALTER", "TABLE"]:
        i = _skip(parts, 2, "IF", "EXISTS", "ONLY")
        table, i = _qualified(parts, i)
        columns = []
        for group in top_level_split(parts[i:]):
            j = 0
            if j < len(group) and group[j].upper == "DROP":
                j = _skip(group, j + 1, "COLUMN", "IF", "EXISTS")
                if j < len(group) and group[j].upper not in ("CONSTRAINT",) and group[j].name:
                    columns.append(group[j].name)
        if table and columns:
            return Statement("drop-columns", (table,), tuple(columns))
        return Statement("other")
    if head[:1] == ["TRUNCATE"]:
        i = _skip(parts, 1, "TABLE", "ONLY")
        names = [_qualified(group, 0)[0] for group in top_level_split(parts[i:])]
        return Statement("truncate", tuple(n for n in names if n))
    if head[:2] == ["DELETE", "FROM"]:
        table, _ = _qualified(parts, _skip(parts, 2, "ONLY"))
        return Statement("delete", (table,) if table else ())
    if head[:2] == ["INSERT", "INTO"]:
        table, _ = _qualified(parts, 2)
        return Statement("insert", (table,) if table else ())
    if head[:1] == ["UPDATE"]:
        return _update(sql, parts)
    return Statement("other")


def _update(sql: str, parts: list[Token]) -> Statement:
    """``UPDATE t [AS a] SET c = e, ... [WHERE w]``; a ``FROM``, ``RETURNING`` or row assignment is ``other``."""
    table, i = _qualified(parts, _skip(parts, 1, "ONLY"))
    if table is None:
        return Statement("other")
    alias = None
    if i < len(parts) and parts[i].upper == "AS":
        i += 1
    if i < len(parts) and parts[i].upper != "SET" and parts[i].name:
        alias, i = parts[i].name, i + 1
    if i >= len(parts) or parts[i].upper != "SET":
        return Statement("other")
    body = parts[i + 1:]
    depth, where_at = 0, None
    for k, token in enumerate(body):
        depth += token.text == "(" and token.kind == "punct"
        depth -= token.text == ")" and token.kind == "punct"
        if depth == 0 and token.upper in ("FROM", "RETURNING"):
            return Statement("delete-like", (table,))
        if depth == 0 and token.upper == "WHERE":
            where_at = k
            break
    items = body if where_at is None else body[:where_at]
    assignments = []
    for group in top_level_split(items):
        if len(group) < 3 or group[1].text != "=" or group[0].name is None:
            return Statement("delete-like", (table,))
        assignments.append((group[0].name, sql[group[2].start:group[-1].end]))
    where = None if where_at is None else sql[body[where_at + 1].start:] if where_at + 1 < len(body) else None
    return Statement("update", (table,), assignments=tuple(assignments), where=where, alias=alias)
