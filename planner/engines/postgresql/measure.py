"""The preview's counting queries on PostgreSQL: what a table, a column or an update holds before it is destroyed.

Each runs inside a savepoint of the migration's transaction, so a query
that fails (a table that is not there, an expression that cannot be
evaluated apart from its statement) returns ``None`` and never aborts the
migration: what could not be counted here is then reported from the
server's row counters, or marked as not counted.
"""

from __future__ import annotations

from typing import Any

from planner.engines.postgresql.ledger import quote
from planner.engines.postgresql.snapshot import qualified
from planner.preview import DataImpact

#: Defaults that give a new value on every row: a column holding them differs from its default everywhere.
_VOLATILE = ("nextval", "now(", "random(", "clock_timestamp", "gen_random", "uuid")

#: A table and every table that inherits from it (partitions included): dropping it drops them all.
_FAMILY = """
WITH RECURSIVE family(oid) AS (SELECT %s::regclass::oid
  UNION SELECT i.inhrelid FROM pg_inherits i JOIN family f ON i.inhparent = f.oid)
SELECT array_agg(oid::bigint) FROM family
"""
#: Tables whose foreign keys point, directly or not, at the given ones: ``TRUNCATE ... CASCADE`` empties them.
_REFERENCING = """
WITH RECURSIVE refs(oid) AS (SELECT unnest(%s::regclass[])::oid
  UNION SELECT c.conrelid FROM pg_constraint c JOIN refs r ON c.confrelid = r.oid WHERE c.contype = 'f')
SELECT r.oid::bigint, n.nspname, k.relname FROM refs r JOIN pg_class k ON k.oid = r.oid
JOIN pg_namespace n ON n.oid = k.relnamespace WHERE r.oid <> ALL(%s::regclass[]::oid[])
"""
# Which names are functions of a user schema, and whether any such function could drop something: a body
# mentioning DROP, ALTER or EXECUTE (dynamic SQL), or a language whose body cannot be read (C, plpython...).
_USER_FUNCTION = r"""
SELECT array(SELECT DISTINCT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.proname = ANY(%s)),
       EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               JOIN pg_language l ON l.oid = p.prolang
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND (l.lanname NOT IN ('sql', 'plpgsql') OR p.prosrc ~* '\m(drop|alter|execute)\M'))
"""
_ANCESTORS = """
WITH RECURSIVE up(child, parent) AS (SELECT o, o FROM unnest(%s::oid[]) AS o
  UNION SELECT up.child, i.inhparent FROM up JOIN pg_inherits i ON i.inhrelid = up.parent)
SELECT child::bigint, array_agg(parent::bigint) FROM up WHERE child <> parent GROUP BY child
"""


def fetch(conn: Any, sql: str, parameters: Any = None, *, rows: bool = False) -> Any:
    """One row (or every row) of a counting query, inside a savepoint; ``None`` if it failed."""
    try:
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute(sql, parameters)
            return cursor.fetchall() if rows else cursor.fetchone()
    except Exception:  # the migration's own statement will meet the real problem, if any
        return None


def table_rows(conn: Any, table: str, *, only: bool = False) -> tuple[int, list[int]] | None:
    """Rows of ``table`` (its inheriting tables' too unless ``only``), and the oids of the table's family."""
    name = qualified(table)
    row = fetch(conn, f"SELECT count(*), ({_FAMILY}) FROM {'ONLY ' if only else ''}{name}", (name,))
    return None if row is None else (row[0], list(row[1] or []))


def family(conn: Any, table: str) -> list[int]:
    """Oids of ``table`` and of every table inheriting from it (none if there is no such table)."""
    row = fetch(conn, _FAMILY, (qualified(table),))
    return [] if row is None else list(row[0] or [])


def dropped_column(conn: Any, table: str, column: str) -> tuple[DataImpact, list[int]] | None:
    """The values a dropped column holds that differ from its default (its inheriting tables' included), and
    the oids of the table's family, whose column of that name goes with it."""
    name = qualified(table)
    found = fetch(conn, "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
                        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                        "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
                  (name, column))
    if found is None:
        return None  # no such column (DROP COLUMN IF EXISTS): nothing is lost
    expression = found[0]
    differs = ""
    if expression and not any(word in expression.lower() for word in _VOLATILE):
        differs = f" AND {quote(column)} IS DISTINCT FROM ({expression})"
    row = fetch(conn, f"SELECT count(*) FILTER (WHERE {quote(column)} IS NOT NULL{differs}), "
                      f"count({quote(column)}), ({_FAMILY}) FROM {name}", (name,))
    if row is None:
        return None
    return DataImpact("dropped-column", table, column, count=row[0], non_null=row[1]), list(row[2] or [])


def retyped_values(conn: Any, table: str, column: str, type_: str, using: str | None) -> DataImpact | None:
    """Non-NULL values of ``column`` that ``ALTER COLUMN ... TYPE`` changes: those that do not come back the
    same when the new value is cast back to the old type (``19.99`` as ``integer`` is ``20``; a ``USING
    left(c, 2)`` keeps two characters). Widening a type changes none. A value that cannot be cast back is
    not counted, and makes the step unchecked. ``None`` when nothing changes, or there is no such column."""
    name = qualified(table)
    found = fetch(conn, "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                        "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
                  (name, column))
    if found is None:
        return None  # no such column: the migration's own statement will say so
    new = f"({using})::{type_}" if using else f"{quote(column)}::{type_}"
    row = fetch(conn, f"SELECT count(*) FILTER (WHERE {quote(column)} IS NOT NULL "
                      f"AND ({new})::{found[0]} IS DISTINCT FROM {quote(column)}) FROM {name}")
    if row is None:
        return DataImpact("overwritten-values", table, column, counted=False)
    return DataImpact("overwritten-values", table, column, count=row[0]) if row[0] else None


def referencing_tables(conn: Any, tables: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """(oid, schema, name) of the tables ``TRUNCATE ... CASCADE`` on ``tables`` also empties."""
    names = [qualified(t) for t in tables]
    return fetch(conn, _REFERENCING, (names, names), rows=True) or []


def user_functions(conn: Any, names: set[str]) -> tuple[set[str], bool]:
    """Which of ``names`` are functions or procedures of a user schema, and whether any function of a user
    schema could drop a table or column (if none could, calling them needs no watching).

    Unknown (the query failed) counts as all of them, able to drop: the statement is then watched, which only
    costs time.
    """
    row = fetch(conn, _USER_FUNCTION, (sorted(names),))
    return (set(names), True) if row is None else (set(row[0]), bool(row[1]))


def ancestors(conn: Any, oids: list[int]) -> dict[int, list[int]]:
    """Each table's parents, grandparents...: a partition's counters belong to the table a statement named."""
    return {child: parents for child, parents in fetch(conn, _ANCESTORS, (oids,), rows=True) or []}
