"""Which tables a SQLite database has and which of them reference which, kept across a preview's steps.

A previewed step checks the foreign keys of what it touched and of the
children of what it shrank (``StepObserver.foreign_key_tables``). Asking
SQLite for every table's foreign keys after every step reads the whole
schema each time: on a rollback of 500 steps over 1,000 tables that was
most of the preview. The answer changes only when a table is made or
altered, so it is read once and kept, stamped with ``PRAGMA
schema_version``, which SQLite changes with every schema change.

A step that drops a table, or makes or drops an index, view or trigger,
changes the schema version without changing who references whom. The
observer tells the map about such a statement before it runs
(``before_neutral``) and after (``after_neutral``): if the map was right
before, it is right after, with the dropped tables removed, and takes the
new stamp. Anything else that changes the schema, seen or not, leaves the
stamp behind, and the next question reads the schema again. A statement the
observer sees that may change the schema in other ways (``forget``) drops
the map at once, so a savepoint rolled back to an earlier schema version
cannot make an old map look current.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from planner.engines.sqlite.effects import fold


#: Up to how many tables ``ForeignKeyMap.scope`` asks about by name (far below SQLite's limit on parameters).
_FEW = 200


class ForeignKeyMap:
    """The main database's tables, and for each table (folded) the tables whose foreign keys name it."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._version: int | None = None
        self._tables: set[str] = set()
        self._children: dict[str, set[str]] = {}

    def _schema_version(self) -> int:
        return self.conn.execute("PRAGMA main.schema_version").fetchone()[0]

    def _read(self) -> None:
        """Every table, and the foreign keys of those whose SQL mentions ``REFERENCES``.

        Every foreign key, column or table constraint, is written with that
        word, and the text test is a fraction of the pragma's cost. Should a
        migration have made LIKE case-sensitive (``PRAGMA
        case_sensitive_like``), ``'A' LIKE 'a'`` is false and every table is
        asked.
        """
        self._tables = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        children: dict[str, set[str]] = {}
        for child, parent in self.conn.execute(
                "SELECT m.name, f.\"table\" FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS f "
                "WHERE m.type = 'table' AND (m.sql LIKE '%references%' OR NOT 'A' LIKE 'a')"):
            children.setdefault(fold(parent), set()).add(child)
        self._children = children

    def scope(self, touched: Iterable[str], shrunk: Iterable[str]) -> list[str]:
        """The tables among ``touched`` that exist, with the existing children of the ``shrunk`` ones, sorted.

        Nothing shrunk (a step that only made tables or added rows): no children to find, so which of the
        touched tables exist is asked directly, one statement instead of the map's three."""
        touched, shrunk = set(touched), set(shrunk)
        if not shrunk and len(touched) <= _FEW:
            names = sorted(touched)
            return sorted(row[0] for row in self.conn.execute(
                f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({', '.join('?' * len(names))})",
                names))
        version = self._schema_version()
        if version != self._version:
            self._read()
            self._version = version
        scope = set(touched)
        for parent in shrunk:
            scope |= self._children.get(fold(parent), set())
        return sorted(scope & self._tables)

    def forget(self) -> None:
        """A statement may change who references whom, or move the schema back: read it again next time."""
        self._version = None

    def before_neutral(self) -> int | None:
        """A statement that drops tables or changes only indexes, views or triggers is about to run.

        Returns the stamp ``after_neutral`` needs, or ``None`` when the map is
        not current anyway (nothing to carry over).
        """
        if self._version is None:
            return None
        version = self._schema_version()
        return version if version == self._version else None

    def after_neutral(self, stamp: int | None, events: Iterable[tuple]) -> None:
        """That statement ran (``events``: its authorizer's): the map, right before it, is right after it
        without the tables it dropped."""
        if stamp is None or stamp != self._version:
            return
        self._tables.difference_update(table for action, table, _, database, _ in events
                                       if action == sqlite3.SQLITE_DROP_TABLE and database == "main")
        self._version = self._schema_version()
