"""Where migrations import SQLite's table rebuild from: ``from planner.rebuild import rebuild_table``.

The procedure is SQLite's and lives in its engine (``planner.engines.sqlite.rebuild``).
This name stays because applied migrations use it (APM's 0020 and 0027, and the
guide's example): a migration's file is checksummed once applied, so it cannot
be edited to import from the new place.
"""

from __future__ import annotations

from planner.engines.sqlite.rebuild import drop_columns, rebuild_table, table_sql

__all__ = ["drop_columns", "rebuild_table", "table_sql"]
