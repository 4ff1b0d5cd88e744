"""What a ``rebuild_table`` conversion changes: the values of old columns that do not come back the same.

A preview counts them as overwritten, the way PostgreSQL's preview counts
an ``ALTER COLUMN ... TYPE ... USING``: a conversion is loss where it
changes a value (clamping 9 to 5), not where it only renames a column or
stores the same value under another type (``'1'`` as ``1``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from planner.sql import quote_identifier


def converted_values(
    conn: sqlite3.Connection,
    table: str,
    temporary: str,
    carried: Mapping[str, str],
    old_columns: Mapping[str, Any],
    convert: Mapping[str, tuple[str, str]],
    same_rowids: bool,
) -> dict[str, int]:
    """Per old column a ``convert`` rewrites, the values that existed and do not come back the same (clamping 9
    to 5 changes one; ``CAST(price AS INTEGER)`` changes 19.99, not 20.0), as PostgreSQL's preview counts an
    ``ALTER COLUMN ... TYPE ... USING``. A conversion that merges several old columns into one is not counted.

    The new value is read from the new table where each row kept its rowid (so the new column's type applies,
    as it does to what is stored), else the expression is compared on the old table.
    """
    pairs = []  # (old column, new column, expression)
    for key, (name, expression) in convert.items():
        sources = [old for old, new in carried.items() if new.lower() == key]
        old = key if key in old_columns else (sources[0].lower() if len(sources) == 1 else None)
        if old is not None and old in old_columns and old_columns[old].name in carried:
            pairs.append((old_columns[old].name, name, expression))
    if not pairs:
        return {}
    if same_rowids:
        sums = [f"COALESCE(SUM(o.{quote_identifier(old)} IS NOT NULL AND o.{quote_identifier(old)} IS NOT "
                f"n.{quote_identifier(new)}), 0)" for old, new, _ in pairs]
        sql = (f"SELECT {', '.join(sums)} FROM {quote_identifier(table)} AS o "
               f"JOIN {quote_identifier(temporary)} AS n ON n.rowid = o.rowid")
    else:
        sums = [f"COALESCE(SUM({quote_identifier(old)} IS NOT NULL AND {quote_identifier(old)} IS NOT ({expression})),"
                f" 0)" for old, _, expression in pairs]
        sql = f"SELECT {', '.join(sums)} FROM {quote_identifier(table)}"
    row = conn.execute(sql).fetchone()
    return {old: int(n) for (old, _, _), n in zip(pairs, row)}
