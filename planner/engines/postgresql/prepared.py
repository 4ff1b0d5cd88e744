"""The preview's per-step readings, prepared on the server once per preview under names of our own.

psycopg prepares a statement once it has run five times, and forgets every
statement it prepared (``DEALLOCATE ALL``) when a statement it has not seen
before reports ``DROP`` or ``ALTER``: a dropped or altered object may change
what a prepared plan returns. In a preview every step's statement is new
text, so in a rollback (each step a ``DROP TABLE``) or a run of ``ALTER
TABLE`` steps nothing stayed prepared: the server parsed and planned the
step's catalog reading (``postgresql.step_catalog``, a 5 kB statement) and
the lock reading again at every step, more than half of its time in a
rollback of 500 (docs/performance.md, PostgreSQL).

So the runner turns psycopg's preparing off for the preview
(``prepare_threshold = None``, which also keeps it from ever sending
``DEALLOCATE ALL``), and the readings run as ``EXECUTE`` of a statement
this module ``PREPARE``\\ s on first use. The name is new for each preview
(a process counter), so a preview never meets a statement of an earlier one
on the same connection: ``PREPARE`` is not undone by a rollback. A
migration's own ``DEALLOCATE`` (seen by the observer) or code run through
``conn.raw`` makes the set prepare again, under new names, before its next use.

The migration's statements are not prepared during a preview: each runs
once, and a data migration that repeats one thousands of times pays its
parsing (tens of microseconds) each time.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

_PREVIEWS = itertools.count(1)
_NAMED = re.compile(r"%\((\w+)\)s")


class Statement:
    """A statement with ``%(name)s`` placeholders, as ``PREPARE`` wants it: ``$n`` and their types."""

    def __init__(self, name: str, sql: str, types: dict[str, str] | None = None):
        order: list[str] = []

        def numbered(match: re.Match) -> str:
            if match.group(1) not in order:
                order.append(match.group(1))
            return f"${order.index(match.group(1)) + 1}"

        self.name = name
        # Sent without parameters, so psycopg leaves the text alone: its doubled %% become single again.
        self.text = _NAMED.sub(numbered, sql).replace("%%", "%")
        self.order = tuple(order)
        self.types = tuple((types or {})[key] for key in order)


class PreparedSet:
    """The statements one preview prepared on its connection, run by name."""

    def __init__(self) -> None:
        self._suffix = f"{os.getpid()}_{next(_PREVIEWS)}"
        self._names: dict[str, str] = {}

    def execute(self, conn: Any, statement: Statement, parameters: dict[str, Any] | None = None,
                then: str = "") -> Any:
        """A cursor holding ``statement``'s rows; prepared first when this preview has not yet.

        ``then``: statements without parameters sent behind it in the same round trip (one simple query), whose
        results the cursor skips: the preview opens the next step's savepoint this way.
        """
        import psycopg

        name = self._names.get(statement.name)
        if name is None:
            name = f"apm_{statement.name}_{self._suffix}"
            types = f" ({', '.join(statement.types)})" if statement.types else ""
            conn.execute(f"PREPARE {name}{types} AS {statement.text}")
            self._names[statement.name] = name
        # EXECUTE is a utility statement: its arguments cannot be bound parameters, so the client fills them in.
        cursor = psycopg.ClientCursor(conn)
        values = [(parameters or {})[key] for key in statement.order]
        arguments = f"({', '.join(['%s'] * len(values))})" if values else ""
        after = f"; {then.replace('%', '%%')}" if then else ""
        return cursor.execute(f"EXECUTE {name}{arguments}{after}", values or None)

    def forget(self) -> None:
        """The migration may have deallocated them (``DEALLOCATE``, ``conn.raw``): prepare again on next use,
        under new names, since whether the old ones still exist is not known (and asking costs a round trip)."""
        self._names.clear()
        self._suffix = f"{os.getpid()}_{next(_PREVIEWS)}"
