"""A reference runner of APM's later framework, as issue 17 describes it, for tests/test_apm_framework.py.

It does what that framework did, nothing more: the ledger is its seven-column
``schema_migrations``; migrations are keyed by version, so of files sharing
one only the first in path order runs; pending means no row with
``rollback_at IS NULL``; each migration runs, then its row is inserted
(``applied_by`` set); a rollback runs ``downgrade`` and sets ``rollback_at``
and ``rollback_reason``, keeping the row. Migrations' own ledger writes go
straight through, which is how the consolidation's ``DELETE`` erases the
rows before it.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path

LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL UNIQUE,
    description TEXT,
    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    rollback_at TIMESTAMP DEFAULT NULL,
    rollback_reason TEXT DEFAULT NULL,
    applied_by TEXT DEFAULT NULL
)"""


def catalog(folder: Path) -> dict[str, Path]:
    """Version -> file, the old loader's way: the first file of each version, in path order, wins."""
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("migration_*.py")):
        found.setdefault(path.stem.split("_")[1], path)
    return dict(sorted(found.items(), key=lambda item: int(item[0])))


def _module(path: Path):
    root = str(path.parent.parent)  # the application package sits next to the catalog package
    if root not in sys.path:
        sys.path.append(root)
    spec = importlib.util.spec_from_file_location(f"old_framework_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def migrate(db: Path, folder: Path) -> list[str]:
    """Apply what the framework considers pending; the versions it ran."""
    conn = sqlite3.connect(db)
    try:
        conn.execute(LEDGER)
        conn.commit()
        ran = []
        for version, path in catalog(folder).items():
            applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations WHERE rollback_at IS NULL")}
            if version in applied:
                continue
            module = _module(path)
            module.upgrade(conn)
            description = (module.__doc__ or "").strip().splitlines()[0].split(":", 1)[-1].strip()
            conn.execute("DELETE FROM schema_migrations WHERE version = ?", (version,))  # a rolled-back row
            conn.execute("INSERT INTO schema_migrations (version, description, applied_by) VALUES (?, ?, ?)",
                         (version, description, "aipm-cli"))
            conn.commit()
            ran.append(version)
        return ran
    finally:
        conn.close()


def rollback(db: Path, folder: Path, version: str, reason: str) -> None:
    """Run ``downgrade`` and keep the row, with ``rollback_at`` and ``rollback_reason`` set."""
    conn = sqlite3.connect(db)
    try:
        _module(catalog(folder)[version]).downgrade(conn)
        conn.execute("UPDATE schema_migrations SET rollback_at = CURRENT_TIMESTAMP, rollback_reason = ? "
                     "WHERE version = ?", (reason, version))
        conn.commit()
    finally:
        conn.close()


def schema(db: Path) -> dict[str, str]:
    """Every table, index, view and trigger but the ledgers', by name, with its SQL."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {name: sql for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'schema_migrations%' "
            "AND name NOT LIKE 'sqlite_%'")}
    finally:
        conn.close()


def rows(db: Path, sql: str, parameters: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, parameters).fetchall()
    finally:
        conn.close()
