"""PostgreSQL's reading of SQL text: its ``Dialect``, placeholders, and the parts the preview needs.

The tokenizer is the engine-free one (``planner.sql``); what is PostgreSQL's
is here: dollar-quoted bodies (``$$ ... $$``), nested block comments,
``E'...'`` strings (the only ones where backslash escapes, as
``standard_conforming_strings`` has it since PostgreSQL 9.1), ``BEGIN ATOMIC
... END`` function bodies, ``::`` casts and psycopg's ``%s`` / ``%(name)s``
placeholders. On top of it: translating SQLite's ``?`` and ``:name``
placeholders (so one catalog runs on both engines) and finding the table and
columns of a ``DROP``, ``ALTER``, ``DELETE`` or ``UPDATE`` for the preview.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from planner.sql import Dialect, Token

POSTGRESQL = Dialect(
    "postgresql",
    quotes=(('"', '"'),),
    string_prefixes="bBxXnN",
    escape_prefixes="eE",
    dollar_quotes=True,
    nested_comments=True,
    placeholders=True,
    body_heads=re.compile(r"CREATE (?:OR REPLACE )?(?:FUNCTION|PROCEDURE)\b"),
    body_opener=("BEGIN", "ATOMIC"),
)

tokens = POSTGRESQL.tokens
split_script = POSTGRESQL.split_script


@lru_cache(maxsize=256)
def _lead(sql: str) -> tuple[str, ...]:
    return tuple(POSTGRESQL.keywords(sql, 3))


def first_keywords(sql: str, count: int) -> list[str]:
    """The first ``count`` words of a statement, upper-cased (``Dialect.keywords``). The first three are read once
    per statement's text: the preview and its lock watch ask five times for each statement a migration runs."""
    return list(_lead(sql)[:count]) if count <= 3 else POSTGRESQL.keywords(sql, count)


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


def _qualified(parts: Sequence[Token], i: int) -> tuple[str | None, int]:
    """A possibly schema-qualified name starting at ``parts[i]``: (``schema.table`` or ``table``, next index)."""
    if i >= len(parts) or parts[i].name is None:
        return None, i
    name = parts[i].name
    i += 1
    while i + 1 < len(parts) and parts[i].text == "." and parts[i + 1].name is not None:
        name = f"{name}.{parts[i + 1].name}"
        i += 2
    return name, i


def _skip(parts: Sequence[Token], i: int, *words: str) -> int:
    while i < len(parts) and parts[i].upper in words:
        i += 1
    return i


def top_level_split(parts: Sequence[Token], separator: str = ",") -> list[list[Token]]:
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
    #: update: (column, expression text) per SET item; where: the WHERE text; alias: the table's alias;
    #: source: the text of ``UPDATE ... FROM source``.
    assignments: tuple[tuple[str, str], ...] = ()
    where: str | None = None
    alias: str | None = None
    source: str | None = None
    #: truncate: ``TRUNCATE ... CASCADE`` also empties the tables whose foreign keys point at these.
    cascade: bool = False
    #: ``ALTER TABLE``: (column, new type, ``USING`` expression or None) per ``ALTER COLUMN ... TYPE``.
    retyped: tuple[tuple[str, str, str | None], ...] = ()


@lru_cache(maxsize=256)  # the observer and its lock watch both ask; a data migration repeats one text
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
        columns: list[str] = []
        retyped: list[tuple[str, str, str | None]] = []
        for group in top_level_split(parts[i:]):
            if group and group[0].upper == "DROP":
                j = _skip(group, 1, "COLUMN", "IF", "EXISTS")
                if j < len(group) and group[j].upper not in ("CONSTRAINT",) and (name := group[j].name):
                    columns.append(name)
            elif group and group[0].upper == "ALTER" and (found := _retype(sql, group)) is not None:
                retyped.append(found)
        if table and (columns or retyped):
            return Statement("drop-columns" if columns else "retype", (table,), tuple(columns), retyped=tuple(retyped))
        return Statement("other")
    if head[:1] == ["TRUNCATE"]:
        i = _skip(parts, 1, "TABLE", "ONLY")
        names = [_qualified(group, 0)[0] for group in top_level_split(parts[i:])]
        cascade = any(t.upper == "CASCADE" for t in parts)
        return Statement("truncate", tuple(n for n in names if n), cascade=cascade)
    if head[:2] == ["DELETE", "FROM"]:
        table, _ = _qualified(parts, _skip(parts, 2, "ONLY"))
        return Statement("delete", (table,) if table else ())
    if head[:2] == ["INSERT", "INTO"]:
        table, _ = _qualified(parts, 2)
        return Statement("insert", (table,) if table else ())
    if head[:1] == ["UPDATE"]:
        return _update(sql, parts)
    return Statement("other")


def _retype(sql: str, group: Sequence[Token]) -> tuple[str, str, str | None] | None:
    """``ALTER [COLUMN] c [SET DATA] TYPE t [USING e]``: (c, t, e or None); ``None`` for any other ``ALTER``."""
    j = _skip(group, 1, "COLUMN")
    if j >= len(group) or group[j].upper == "CONSTRAINT" or (column := group[j].name) is None:
        return None
    k = _skip(group, j + 1, "SET", "DATA")
    if k + 1 >= len(group) or group[k].upper != "TYPE":
        return None
    using = next((n for n in range(k + 1, len(group)) if group[n].upper == "USING"), None)
    last = (using if using is not None else len(group)) - 1
    if last <= k:
        return None
    expression = sql[group[using + 1].start:group[-1].end] if using is not None and using + 1 < len(group) else None
    return column, sql[group[k + 1].start:group[last].end], expression


def _update(sql: str, parts: Sequence[Token]) -> Statement:
    """``UPDATE t [AS a] SET c = e, ... [FROM s] [WHERE w] [RETURNING r]``; a row assignment is ``delete-like``."""
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
    depth, at = 0, {}
    for k, token in enumerate(body):
        depth += token.text == "(" and token.kind == "punct"
        depth -= token.text == ")" and token.kind == "punct"
        if depth == 0 and token.upper in ("FROM", "WHERE", "RETURNING") and token.upper not in at:
            at[token.upper] = k
    if "WHERE" in at and at["WHERE"] + 1 < len(body) and body[at["WHERE"] + 1].upper == "CURRENT":
        return Statement("delete-like", (table,))  # WHERE CURRENT OF a cursor
    ends = sorted(at.values()) + [len(body)]

    def clause(word: str) -> str | None:
        if word not in at:
            return None
        start = at[word] + 1
        end = min(e for e in ends if e > at[word])
        return sql[body[start].start:body[end - 1].end] if end > start else None

    items = body[:ends[0]]
    assignments = []
    for group in top_level_split(items):
        if len(group) < 3 or group[1].text != "=" or group[0].name is None:
            return Statement("delete-like", (table,))
        assignments.append((group[0].name, sql[group[2].start:group[-1].end]))
    return Statement("update", (table,), assignments=tuple(assignments), where=clause("WHERE"), alias=alias,
                     source=clause("FROM"))


# -- statements that may destroy what they do not name ---------------------------------

#: Words that take a parenthesis without being a function call.
_NOT_CALLS = {"IN", "EXISTS", "ANY", "ALL", "SOME", "VALUES", "AS", "ON", "OVER", "FILTER", "WITHIN", "CONFLICT",
              "ROW", "ARRAY", "CAST", "AND", "OR", "NOT", "WHERE", "SELECT", "SET", "RETURNING", "WITH", "LATERAL",
              "DISTINCT", "BY", "THEN", "ELSE", "WHEN", "CASE", "USING", "COALESCE", "NULLIF", "GREATEST", "LEAST",
              "EXTRACT", "INTERVAL"}
#: After these a name followed by a parenthesis is a table and its columns (``INSERT INTO t (a, b)``).
_TABLE_BEFORE = {"INTO", "TABLE", "JOIN", "FROM", "UPDATE", "REFERENCES", "ONLY"}
_RUNS_EXPRESSIONS = {"SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES"}


@lru_cache(maxsize=256)  # asked several times for each statement a preview runs
def may_drop_unnamed(sql: str) -> bool:
    """Whether the statement may drop tables or columns it does not name.

    ``DROP ... CASCADE`` and ``ALTER ... CASCADE`` take dependents with
    them (the tables of a schema, columns of a dropped type, inheriting
    tables); ``DROP OWNED`` and ``DROP EXTENSION`` drop what belongs to
    them; ``DO`` and ``CALL`` run code whose statements the preview never
    sees.
    """
    words = [t.upper for t in tokens(sql) if t.kind == "word"]
    if not words:
        return False
    if words[0] in ("DO", "CALL"):
        return True
    if words[0] == "DROP":
        return words[1:2] in (["OWNED"], ["EXTENSION"]) or "CASCADE" in words
    return words[0] == "ALTER" and "CASCADE" in words


#: What ``CREATE`` may make without running a query over rows (``CREATE TABLE ... AS`` and materialized views do).
_CREATES_QUIETLY = {"TABLE", "VIEW", "SEQUENCE", "TYPE", "SCHEMA", "FUNCTION", "PROCEDURE", "TRIGGER", "DOMAIN",
                    "INDEX", "UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED", "OR", "REPLACE", "RECURSIVE", "CONSTRAINT"}
_QUIET = {"COMMENT", "GRANT", "REVOKE", "SET", "RESET", "SHOW", "ANALYZE", "SAVEPOINT", "RELEASE"}


@lru_cache(maxsize=256)  # asked several times for each statement a preview runs
def leaves_rows_alone(sql: str) -> bool:
    """Whether the statement cannot delete or update a row, even through a trigger or a function.

    ``CREATE TABLE t (...)``, ``CREATE INDEX``, ``CREATE FUNCTION``,
    ``COMMENT``, ``GRANT``, and a ``DROP`` of what it names (the rows of a
    table it drops are counted from its text; no ``DELETE`` trigger fires)...
    A step made only of these needs no reading of the row counters, which
    costs a scan of every table's statistics.
    """
    words = [t.upper for t in tokens(sql) if t.kind == "word"]
    if not words:
        return True
    if words[0] in _QUIET:
        return True
    if words[0] == "DROP":
        return not may_drop_unnamed(sql)
    if words[0] != "CREATE" or "AS" in words and "TABLE" in words[1:4] or "MATERIALIZED" in words[1:4]:
        return False
    return all(word in _CREATES_QUIETLY for word in words[1:2])


@lru_cache(maxsize=256)  # asked several times for each statement a preview runs
def rewritten_table(sql: str) -> str | None:
    """The table an ``ALTER TABLE`` or ``CLUSTER`` names: it may rewrite it (a new storage file) keeping its rows."""
    parts = tokens(sql)
    head = [t.upper for t in parts[:2]]
    if head == ["ALTER", "TABLE"]:
        return _qualified(parts, _skip(parts, 2, "IF", "EXISTS", "ONLY"))[0]
    if head[:1] == ["CLUSTER"]:
        return _qualified(parts, _skip(parts, 1, "VERBOSE"))[0]
    return None


def indexed_table(sql: str) -> str | None:
    """The table a ``CREATE [UNIQUE] INDEX ... ON [ONLY] t`` or ``REINDEX TABLE t`` builds indexes on: the
    statement takes its lock on that table whether or not the transaction held it already."""
    parts = tokens(sql)
    upper = [t.upper for t in parts]
    if upper[:1] == ["REINDEX"] and "TABLE" in upper[1:4]:
        return _qualified(parts, _skip(parts, upper.index("TABLE") + 1, "CONCURRENTLY"))[0]
    if upper[:1] != ["CREATE"] or "INDEX" not in upper[1:3] or "ON" not in upper:
        return None
    return _qualified(parts, _skip(parts, upper.index("ON") + 1, "ONLY"))[0]


def called_names(sql: str) -> set[str]:
    """Names a data statement calls as functions (``SELECT f(1)``, ``INSERT ... VALUES (s.g())``), lower-cased.

    Only candidates: the observer asks the server which of them are
    functions of a user schema (those may run any statement).
    """
    parts = tokens(sql)
    if not parts or parts[0].upper not in _RUNS_EXPRESSIONS:
        return set()
    names = set()
    for k in range(len(parts) - 1):
        token, following = parts[k], parts[k + 1]
        if following.text != "(" or following.kind != "punct" or token.name is None or token.upper in _NOT_CALLS:
            continue
        start = k
        while start >= 2 and parts[start - 1].text == "." and parts[start - 2].name is not None:
            start -= 2
        if start > 0 and parts[start - 1].upper in _TABLE_BEFORE:
            continue
        names.add(token.name)
    return names
