"""Reading SQL text without a parser: one tokenizer for every engine, its engine's rules in a ``Dialect``.

The guard (is this statement a ``COMMIT``?), ``executescript`` (where does
each statement end?) and the previews (which table does it name?) all look
inside SQL text. They must agree on what a comment, a string, a quoted name
and a statement boundary is, or a ``COMMIT`` hidden behind a quote slips
past one of them; so there is one reader, and what differs between engines
(SQLite's ``[name]``, PostgreSQL's ``$$`` bodies and nested comments) is data
in the engine's own ``Dialect`` (``planner.engines.sqlite.sql.SQLITE``,
``planner.engines.postgresql.sql.POSTGRESQL``).

Why not the engines' own parsers: ``sqlite3.complete_statement`` needs the
script cut at every ``;`` and glued back (and the tokens are needed anyway);
pglast costs 32 ms to import against 2 ms and refuses the ``?`` and
``:name`` placeholders a catalog shared with SQLite uses
(``docs/architecture.md``, "One SQL tokenizer").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable


def quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier, whatever characters it holds (both engines read ``"..."`` alike)."""
    return '"' + name.replace('"', '""') + '"'


#: Group names inside an alternative, never a token's kind.
_INNER = ("tag", "pyname")


@dataclass(frozen=True, eq=False)
class Dialect:
    """What one engine's SQL text does differently; everything else about reading SQL is shared."""

    name: str
    #: Quoted identifiers, as (opening, closing) characters: ``"`` everywhere, SQLite also `` ` `` and ``[ ]``.
    quotes: tuple[tuple[str, str], ...]
    #: Letters that may stand before a string's quote (``X'00'``), and those making backslash an escape (``E'\n'``).
    string_prefixes: str = ""
    escape_prefixes: str = ""
    #: PostgreSQL's ``standard_conforming_strings``: when off, backslash escapes in every string.
    standard_conforming_strings: bool = True
    dollar_quotes: bool = False
    nested_comments: bool = False
    #: Whether a quoted name compares case-insensitively (SQLite) or as written (PostgreSQL).
    fold_quoted: bool = False
    #: PostgreSQL: ``::`` casts and ``:name``, ``%s``, ``%(name)s`` placeholders are tokens of their own.
    placeholders: bool = False
    #: Statements (their first words, upper-cased, joined by spaces) whose body holds semicolons, and the words
    #: opening that body: SQLite's ``CREATE TRIGGER ... BEGIN ... END``, PostgreSQL's ``BEGIN ATOMIC ... END``.
    body_heads: re.Pattern[str] = re.compile(r"(?!)")
    body_opener: tuple[str, ...] = ("BEGIN",)
    _pattern: re.Pattern[str] = field(init=False, repr=False)
    _cached: Callable[[str, bool], tuple[Token, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        escaped = r"'(?:[^'\\]|''|\\.)*(?:'|\Z)"
        plain = escaped if not self.standard_conforming_strings else r"'(?:[^']|'')*(?:'|\Z)"
        strings = [f"[{self.escape_prefixes}]{escaped}"] if self.escape_prefixes else []
        strings.append(f"[{self.string_prefixes}]?{plain}" if self.string_prefixes else plain)
        quoted = [f"{re.escape(o)}(?:[^{re.escape(c)}]|{re.escape(c * 2)})*(?:{re.escape(c)}|\\Z)" if o == c
                  else f"{re.escape(o)}[^{re.escape(c)}]*(?:{re.escape(c)}|\\Z)" for o, c in self.quotes]
        parts = [r"(?P<space>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))"]
        if self.dollar_quotes:
            # A tagged quote ends at its own tag only: ``$fn$ ... $$ ... $fn$`` nests a quote inside a body.
            parts.append(r"(?P<dollar>\$(?P<tag>[^\W\d]\w*)?\$.*?(?:(?(tag)\$(?P=tag)\$|\$\$)|\Z))")
        parts += [f"(?P<string>{'|'.join(strings)})", f"(?P<quoted>{'|'.join(quoted)})"]
        if self.placeholders:
            parts += [r"(?P<cast>::)", r"(?P<named>:[^\W\d]\w*)", r"(?P<pyformat>%\((?P<pyname>\w+)\)s|%s|%%)"]
        parts += [r"(?P<number>\.?\d[\w.]*)", r"(?P<word>[^\W\d][\w$]*)", r"(?P<punct>.)"]
        object.__setattr__(self, "_pattern", re.compile("|".join(parts), re.DOTALL))
        # Per dialect, so the cache is not keyed (and hashed) on the dialect: the previews read each statement
        # several times, and a data migration runs the same one for every row.
        object.__setattr__(self, "_cached", lru_cache(maxsize=256)(self._tokenize))

    # -- tokens ---------------------------------------------------------------------------

    def tokens(self, sql: str, *, keep_space: bool = False) -> tuple[Token, ...]:
        """The tokens of ``sql``; whitespace and comments only with ``keep_space`` (a comma in a comment splits
        nothing)."""
        return self._cached(sql, keep_space)

    def _tokenize(self, sql: str, keep_space: bool) -> tuple[Token, ...]:
        return tuple(self.scan(sql, keep_space=keep_space))

    def scan(self, sql: str, pos: int = 0, *, keep_space: bool = False) -> Iterator[Token]:
        """The tokens of ``sql`` from ``pos``, one at a time: a caller wanting the first words reads no further."""
        match, nesting = self._pattern.match, self.nested_comments and "/*" in sql
        length = len(sql)
        while pos < length:
            if nesting and sql.startswith("/*", pos):
                end = _comment_end(sql, pos)
                if keep_space:
                    yield Token("space", sql[pos:end], pos, end, self)
                pos = end
                continue
            m = match(sql, pos)
            assert m is not None  # (?P<punct>.) matches any character, so the pattern matches wherever pos < length
            kind = m.lastgroup if m.lastgroup not in _INNER else "punct"
            if keep_space or kind != "space":
                yield Token(kind or "punct", m.group(), pos, m.end(), self)
            pos = m.end()

    def skipped(self, sql: str, pos: int = 0) -> int:
        """Where the whitespace and comments from ``pos`` end."""
        return next((t.start for t in self.scan(sql, pos)), len(sql))

    def keywords(self, sql: str, count: int) -> list[str]:
        """The first ``count`` words of a statement, upper-cased, skipping comments; fewer if a non-word comes."""
        words: list[str] = []
        if count <= 0:
            return words
        for token in self.scan(sql):
            if token.kind != "word":
                break
            words.append(token.text.upper())
            if len(words) == count:
                break
        return words

    # -- statements -----------------------------------------------------------------------

    def split_script(self, script: str) -> Iterator[str]:
        """The statements of a script, in order, without their ``;`` or the comments around them.

        A ``;`` inside a string, a quoted name, a comment, parentheses (a
        PostgreSQL rule's ``DO (...; ...)``) or a body (a trigger's ``BEGIN
        ... END``) splits nothing. A body ends at ``END`` standing alone
        between two semicolons, as SQLite's ``sqlite3_complete`` reads it: a
        ``CASE ... END`` or a column named ``end`` inside does not end it.
        """
        parts = self.tokens(script)
        first, depth, body, run, ends = 0, 0, False, 0, False
        opener = self.body_opener
        for i, token in enumerate(parts):
            if token.kind == "punct" and token.text in "();":
                if token.text == "(":
                    depth += 1
                elif token.text == ")":
                    depth -= 1
                elif depth <= 0 and (not body or (run == 1 and ends)):
                    if i > first:
                        yield script[parts[first].start:parts[i - 1].end]
                    first, depth, body, run = i + 1, 0, False, 0
                    continue
                elif body and depth <= 0:
                    run = 0
                    continue
            if body:
                ends = token.upper == "END" if run == 0 else ends
                run += 1
            elif (depth == 0 and token.upper == opener[0]
                  and [t.upper for t in parts[i:i + len(opener)]] == list(opener)
                  and self.body_heads.match(" ".join(t.upper for t in parts[first:i][:6]))):
                body, run = True, -len(opener) + 1  # the opener's other words are not the body's
        if first < len(parts):
            yield script[parts[first].start:parts[-1].end]


def _comment_end(sql: str, start: int) -> int:
    """Where the nested block comment opening at ``start`` ends (``/* a /* b */ c */`` is one comment in
    PostgreSQL); the text's end if it never does. Read as SQLite reads it, ``/* /* */ x */ COMMIT`` would hide
    nothing, and the guard would not see the COMMIT."""
    depth, pos = 0, start
    while True:
        opening, closing = sql.find("/*", pos), sql.find("*/", pos)
        if closing < 0:
            return len(sql)
        if 0 <= opening < closing:
            depth, pos = depth + 1, opening + 2
            continue
        depth, pos = depth - 1, closing + 2
        if depth == 0:
            return pos


@dataclass(frozen=True)
class Token:
    """One token of SQL text, with where it sits in that text and the dialect that read it."""

    kind: str
    text: str
    start: int
    end: int
    dialect: Dialect = field(repr=False, compare=False)

    @property
    def unquoted(self) -> str:
        """The text a quoted name spells (``"a""b"`` is ``a"b``); any other token's text as written."""
        if self.kind != "quoted":
            return self.text
        close = {"[": "]"}.get(self.text[0], self.text[0])
        return self.text[1:-1].replace(close * 2, close)

    @property
    def name(self) -> str | None:
        """The identifier or keyword this token spells, as the engine compares names; ``None`` for others.

        Unquoted names are lower-cased by both engines; a quoted one keeps
        its case in PostgreSQL and not in SQLite.
        """
        if self.kind == "word":
            return self.text.lower()
        if self.kind == "quoted":
            return self.unquoted.lower() if self.dialect.fold_quoted else self.unquoted
        return None

    @property
    def upper(self) -> str:
        """A word's text upper-cased, for comparing with keywords; ``""`` for anything else."""
        return self.text.upper() if self.kind == "word" else ""
