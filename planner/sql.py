"""Reading SQL text without a parser: one tokenizer for every engine, each engine's rules in its ``Dialect``.

The guard (is this statement a ``COMMIT``?), ``executescript`` (where does
each statement end?) and the previews (which table does it name?) must agree
on what a comment, a string, a quoted name and a statement boundary is, or a
``COMMIT`` behind a quote slips past one of them. So there is one reader;
what differs is data in each engine's ``Dialect`` (``engines.sqlite.sql.SQLITE``,
``engines.postgresql.sql.POSTGRESQL``). Why not ``sqlite3.complete_statement``
or pglast: docs/architecture.md, "One SQL tokenizer".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Callable


def quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier, whatever characters it holds (both engines read ``"..."`` alike)."""
    return '"' + name.replace('"', '""') + '"'


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
    _cached: Callable[[str, bool], tuple[Token, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Per dialect, so the cache is not keyed (and hashed) on the dialect: the previews read each statement
        # several times, and a data migration runs the same one for every row.
        object.__setattr__(self, "_cached", lru_cache(maxsize=256)(self._tokenize))

    def _literals(self) -> list[str]:
        """The alternatives both patterns share: whitespace and comments, then dollar quotes, strings, quoted names."""
        escaped = r"'(?:[^'\\]|''|\\.)*(?:'|\Z)"
        plain = escaped if not self.standard_conforming_strings else r"'(?:[^']|'')*(?:'|\Z)"
        strings = [f"[{self.escape_prefixes}]{escaped}"] if self.escape_prefixes else []
        strings.append(f"[{self.string_prefixes}]?{plain}" if self.string_prefixes else plain)
        quoted = [f"{re.escape(o)}(?:[^{re.escape(c)}]|{re.escape(c * 2)})*(?:{re.escape(c)}|\\Z)" if o == c
                  else f"{re.escape(o)}[^{re.escape(c)}]*(?:{re.escape(c)}|\\Z)" for o, c in self.quotes]
        # A tagged quote ends at its own tag only: ``$fn$ ... $$ ... $fn$`` nests a quote inside a body.
        dollar = [r"(?P<dollar>\$(?P<tag>[^\W\d]\w*)?\$.*?(?:(?(tag)\$(?P=tag)\$|\$\$)|\Z))"] if self.dollar_quotes else []
        return [r"(?P<space>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))", *dollar, f"(?P<string>{'|'.join(strings)})",
                f"(?P<quoted>{'|'.join(quoted)})"]

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        """Every token (compiled at first use, not at import: ``apm --help`` reads no SQL)."""
        placeholders = [r"(?P<cast>::)", r"(?P<named>:[^\W\d]\w*)", r"(?P<pyformat>%\((?P<pyname>\w+)\)s|%s|%%)"]
        parts = [*self._literals(), *(placeholders if self.placeholders else []),
                 r"(?P<number>\.?\d[\w.]*)", r"(?P<word>[^\W\d][\w$]*)", r"(?P<punct>.)"]
        return re.compile("|".join(parts), re.DOTALL)

    @cached_property
    def _skeleton(self) -> re.Pattern[str]:
        """What splitting needs: literals, comments, parentheses and semicolons; the rest (words, numbers,
        operators and the whitespace between them) is read a run at a time, 4x faster than token by token. A
        word is read whole (``a$b$`` is a name, not a dollar quote), but not an escape string's prefix."""
        word = f"(?![{self.escape_prefixes}]')[^\\W\\d][\\w$]*" if self.escape_prefixes else r"[^\W\d][\w$]*"
        opening = re.escape("".join(o for o, _ in self.quotes) + "'$;()/-")
        lone = [r"-(?!-)", r"/(?!\*)", r"\$(?!(?:[^\W\d]\w*)?\$)" if self.dollar_quotes else r"\$"]
        run = f"(?P<run>(?:{word}|\\d[\\w.]*|[^\\w{opening}]|{'|'.join(lone)})+)"
        return re.compile("|".join([*self._literals(), r"(?P<punct>[();])", run, r"(?P<other>.)"]), re.DOTALL)

    def _matches(self, pattern: re.Pattern[str], sql: str, pos: int = 0) -> Iterator[tuple[str, int, int]]:
        """``(kind, start, end)`` of each match of ``pattern`` from ``pos``: ``finditer``, except that a block
        comment nests where the dialect says so (the regex would end ``/* a /* b */ c */`` at its first ``*/``,
        and ``/* /* */ x */ COMMIT`` would hide nothing from the guard)."""
        nesting = self.nested_comments and "/*" in sql
        while pos < len(sql):
            for m in pattern.finditer(sql, pos):
                if nesting and m.lastgroup == "space" and sql.startswith("/*", m.start()):
                    pos = _comment_end(sql, m.start())
                    yield "space", m.start(), pos
                    break
                yield m.lastgroup or "other", m.start(), m.end()
            else:
                return

    # -- tokens ---------------------------------------------------------------------------

    def tokens(self, sql: str, *, keep_space: bool = False) -> tuple[Token, ...]:
        """The tokens of ``sql``; whitespace and comments only with ``keep_space`` (a comma in a comment splits
        nothing)."""
        return self._cached(sql, keep_space)

    def _tokenize(self, sql: str, keep_space: bool) -> tuple[Token, ...]:
        return tuple(self.scan(sql, keep_space=keep_space))

    def scan(self, sql: str, pos: int = 0, *, keep_space: bool = False) -> Iterator[Token]:
        """The tokens of ``sql`` from ``pos``, one at a time: a caller wanting the first words reads no further."""
        for kind, start, end in self._matches(self._pattern, sql, pos):
            if keep_space or kind != "space":
                yield Token(kind if kind not in ("tag", "pyname") else "punct", sql[start:end], start, end, self)

    def skipped(self, sql: str, pos: int = 0) -> int:
        """Where the whitespace and comments from ``pos`` end."""
        return next((start for kind, start, _ in self._matches(self._skeleton, sql, pos) if kind != "space"), len(sql))

    def keywords(self, sql: str, count: int, pos: int = 0) -> list[str]:
        """The first ``count`` words of a statement (from ``pos``), upper-cased, skipping comments; fewer if a
        non-word comes."""
        words: list[str] = []
        for kind, start, end in self._matches(self._pattern, sql, pos):
            if len(words) == count or kind not in ("word", "space"):
                break
            if kind == "word":
                words.append(sql[start:end].upper())
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
        pos, opener = 0, self.body_opener[0]
        while pos < len(script):
            start, depth, last = -1, 0, pos
            for kind, at, end in self._matches(self._skeleton, script, pos):
                if kind == "space":
                    continue
                start = at if start < 0 else start
                if kind == "punct" and script[at] == ";" and depth <= 0:
                    # A body opens before its first ";": only a statement naming the opener so far may hold one.
                    if opener in script[start:last].upper() and self._opens_body(script, start):
                        break
                    if last > start:
                        yield script[start:last].rstrip()
                    start, last = -1, end
                elif kind == "punct":
                    depth += {"(": 1, ")": -1}.get(script[at], 0)
                    last = end
                else:
                    last = end
            else:
                if 0 <= start < last:
                    yield script[start:last].rstrip()
                return
            last, pos = self._body_end(script, start)
            yield script[start:last]

    def _opens_body(self, script: str, start: int) -> bool:
        return self.body_heads.match(" ".join(self.keywords(script, 6, start))) is not None

    def _body_end(self, script: str, start: int) -> tuple[int, int]:
        """Where a statement that may hold a body ends, and the next begins: read token by token."""
        opener, matched = self.body_opener, 0
        depth, body, run, ends, last = 0, False, 0, False, start
        for token in self.scan(script, start):
            if token.kind == "punct" and token.text == ";" and depth <= 0:
                if not body or (run == 1 and ends):
                    return last, token.end
                run, last = 0, token.end
                continue
            depth += {"(": 1, ")": -1}.get(token.text, 0) if token.kind == "punct" else 0
            last = token.end
            if body:
                ends, run = (token.upper == "END" if run == 0 else ends), run + 1
            elif depth == 0:
                matched = matched + 1 if token.upper == opener[matched] else int(token.upper == opener[0])
                body = matched == len(opener)
        return last, len(script)


def _comment_end(sql: str, start: int) -> int:
    """Where the nested block comment opening at ``start`` ends; the text's end if it never does."""
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
        """The identifier or keyword this token spells, as the engine compares names (a quoted one keeps its
        case in PostgreSQL, not in SQLite); ``None`` for anything else."""
        if self.kind == "word":
            return self.text.lower()
        if self.kind == "quoted":
            return self.unquoted.lower() if self.dialect.fold_quoted else self.unquoted
        return None

    @property
    def upper(self) -> str:
        """A word's text upper-cased, for comparing with keywords; ``""`` for anything else."""
        return self.text.upper() if self.kind == "word" else ""
