"""The constraints, triggers and functions of a PostgreSQL database, as a preview step found and left them.

``pg_class`` holds tables, views and indexes (``pg_snapshot``); a ``CHECK``
added to a table, a trigger or a function lives in ``pg_constraint``,
``pg_trigger`` and ``pg_proc``, where a dropped trigger may leave its table's
``pg_class`` row untouched. Without them a step that only adds a constraint,
or drops a trigger and its function, read as "no schema or data change",
while SQLite's preview names the trigger.

Read whole once, then per step only what the step wrote, the way
``pg_step_catalog`` reads relations: the rows of a catalog whose insert and
update counters moved, newer than the last reading (``age(xmin)``), and, when
a delete counter moved, the oids still there. The ledger's tables, the
constraints behind a table's creation (its keys are the table's, as on
SQLite) and what an extension installed are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from planner.engines.postgresql.snapshot import shown
from planner.ledger import LOG_TABLE, TABLE
from planner.schema import SchemaChange

_TRIGGER, _CONSTRAINT, _PROC = ("'pg_catalog.pg_trigger'::regclass", "'pg_catalog.pg_constraint'::regclass",
                                "'pg_catalog.pg_proc'::regclass")
_USER = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%' "
         "AND n.nspname NOT LIKE 'pg_temp%%'")
_LEDGER = f"c.relname NOT IN ('{TABLE}', '{LOG_TABLE}')"

#: (oid, kind, name, schema, table) of every user trigger, constraint and function passing the gates:
#: ``{trigger}``, ``{constraint}``, ``{function}`` are each a condition on that catalog's row alias.
OBJECTS_OF = f"""
SELECT t.oid::bigint AS oid, 'trigger' AS kind, t.tgname::text AS name, n.nspname::text AS schema,
       c.relname::text AS tbl
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND {_USER} AND {_LEDGER} AND {{trigger}}
UNION ALL
SELECT k.oid::bigint, 'constraint', k.conname::text, n.nspname::text, c.relname::text
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype IN ('c', 'f', 'p', 'u', 'x') AND {_USER} AND {_LEDGER} AND {{constraint}}
UNION ALL
SELECT p.oid::bigint, 'function', p.proname::text, n.nspname::text, NULL
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {_USER} AND {{function}}
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = {_PROC} AND d.objid = p.oid AND d.deptype = 'e')
"""
_ALL = OBJECTS_OF.format(trigger="TRUE", constraint="TRUE", function="TRUE").replace("%%", "%")


def _counted(what: str, table: str) -> str:
    return " + ".join(f"pg_stat_get_xact_tuples_{kind}({table})" for kind in what.split())


#: The gates of a step reading: each catalog's inserts and updates, and their deletes together.
GATES = ", ".join((_counted("inserted updated", _TRIGGER), _counted("inserted updated", _CONSTRAINT),
                   _counted("inserted updated", _PROC),
                   f"{_counted('deleted', _TRIGGER)} + {_counted('deleted', _CONSTRAINT)} + "
                   f"{_counted('deleted', _PROC)}"))


def _written(alias: str, catalog: str, gate: str) -> str:
    return (f"(SELECT {_counted('inserted updated', catalog)} > %({gate})s) "
            f"AND age({alias}.xmin) < (SELECT age(%(step)s::xid))")


#: Two columns for ``pg_step_catalog``'s statement: the objects written since the last reading, as JSON
#: (NULL when there are none), and, if some were deleted, the oids of all that remain (else NULL).
STEP_COLUMNS = f"""
(SELECT json_agg(json_build_array(o.oid, o.kind, o.name, o.schema, o.tbl)) FROM ({OBJECTS_OF.format(
    trigger=_written("t", _TRIGGER, "trigger_writes"), constraint=_written("k", _CONSTRAINT, "constraint_writes"),
    function=_written("p", _PROC, "function_writes"))}) o),
CASE WHEN {_counted('deleted', _TRIGGER)} + {_counted('deleted', _CONSTRAINT)} + {_counted('deleted', _PROC)}
          > %(object_deletes)s
     THEN ARRAY(SELECT oid::bigint FROM pg_trigger UNION ALL SELECT oid::bigint FROM pg_constraint
                UNION ALL SELECT oid::bigint FROM pg_proc) END
"""


@dataclass
class Objects:
    """Constraints, triggers and functions by oid: (kind, name as shown, table as shown or ``None``)."""

    known: dict[int, tuple[str, str, str | None]] = field(default_factory=dict)

    @classmethod
    def read(cls, conn: Any) -> Objects:
        with conn.cursor() as cursor:
            cursor.execute(_ALL)
            return cls(dict(_entries(cursor.fetchall())))

    def update(self, written: list | None, present: list[int] | None) -> tuple[dict, dict]:
        """Take a step's reading in; return what it added and what it removed (oid -> entry)."""
        added: dict[int, tuple[str, str, str | None]] = {}
        removed: dict[int, tuple[str, str, str | None]] = {}
        if present is not None:
            remaining = set(present)
            for oid in [oid for oid in self.known if oid not in remaining]:
                removed[oid] = self.known.pop(oid)
        for oid, entry in _entries(written or []):
            before = self.known.get(oid)
            if before != entry:
                if before is not None:
                    removed[oid] = before  # renamed: the old name went, the new one came
                added[oid] = self.known[oid] = entry
        return added, removed


def _entries(rows: list) -> list[tuple[int, tuple[str, str, str | None]]]:
    return [(oid, (kind, name if table is None and schema == "public" else
                   (f"{schema}.{name}" if table is None else name),
                   None if table is None else shown(schema, table)))
            for oid, kind, name, schema, table in rows]


def object_changes(added: dict, removed: dict, tables_added: set[str], tables_removed: set[str]) -> list[SchemaChange]:
    """The lines for what a step added and removed, by name: a constraint of a table the step created or
    dropped is part of that table (SQLite's preview has no separate line for it either)."""
    def names(entries: dict) -> set[tuple[str, str, str | None]]:
        return set(entries.values())

    new, old = names(added), names(removed)
    changes = []
    for kind, name, table in sorted(old - new, key=_order):
        if not (kind == "constraint" and table in tables_removed):
            changes.append(SchemaChange(kind, "removed", name, table))  # type: ignore[arg-type]
    for kind, name, table in sorted(new - old, key=_order):
        if not (kind == "constraint" and table in tables_added):
            changes.append(SchemaChange(kind, "added", name, table))  # type: ignore[arg-type]
    return changes


def _order(entry: tuple[str, str, str | None]) -> tuple[str, str, str]:
    return entry[0], entry[1], entry[2] or ""
