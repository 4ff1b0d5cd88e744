"""Keeping the executor's ledger rows intact while a migration writes the ledger itself.

APM's later migrations treat ``schema_migrations`` as theirs: the
consolidation migration runs ``DELETE FROM schema_migrations`` and inserts
``0018_consolidated``, later ones insert and update rows. Inside our
transaction that would erase the rows recording the steps before it, and
the files must stay untouched. So, for the length of each migration, temporary
triggers (per connection, never in the file) copy every row the migration
deletes, changes or inserts into a temporary table; afterwards ``reconcile``
puts back the rows of plain versions exactly as they were, and keeps what the
migration wrote of its own (its notes). Watching costs one small delete and
one small read per step, whatever the size of the ledger.

A migration that drops the ledger table (and its triggers with it) fails: we
could no longer say what it held.
"""

from __future__ import annotations

import sqlite3

from planner import versions

CHANGES = "apm_ledger_changes"
_TRIGGER = "apm_ledger_watch"
#: (trigger suffix, event, which row image is copied): OLD for deletes and updates, NEW for inserts.
_EVENTS = (("delete", "DELETE", "OLD"), ("update", "UPDATE", "OLD"), ("insert", "INSERT", "NEW"))


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in conn.execute(f"PRAGMA main.table_info({table})").fetchall()]


def _watching(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_temp_master WHERE type = 'trigger' AND name = ?",
                        (f"{_TRIGGER}_insert",)).fetchone() is not None


def watch(conn: sqlite3.Connection, table: str) -> None:
    """Empty the change table, creating it and the triggers first when this connection has none.

    Temporary objects are transactional: after a rolled-back step they are
    gone, so their existence is checked every time (one indexed read).
    """
    if _watching(conn):
        conn.execute(f"DELETE FROM temp.{CHANGES}")
        return
    columns = _columns(conn, table)
    conn.execute(f"DROP TABLE IF EXISTS temp.{CHANGES}")
    conn.execute(f"CREATE TEMP TABLE {CHANGES} (change TEXT, {', '.join(columns)})")
    for suffix, event, image in _EVENTS:
        values = ", ".join(f"{image}.{c}" for c in columns)
        conn.execute(f"CREATE TEMP TRIGGER {_TRIGGER}_{suffix} AFTER {event} ON main.{table} BEGIN "
                     f"INSERT INTO {CHANGES} VALUES ('{suffix}', {values}); END")


def reconcile(conn: sqlite3.Connection, table: str, version: str) -> tuple[str | None, set[str]]:
    """Restore the plain-version rows migration ``version`` deleted or changed; describe what it wrote.

    Rows of plain versions that existed before the step (the executor's and
    the old framework's records) come back as they were, ``id`` included.
    Rows it inserted stay: a suffixed row is a note, and a plain row for its
    own version becomes the executor's row when the step is recorded. Returns
    the note (``None`` when the migration did not touch the ledger) and the
    versions of the rows it inserted.
    """
    if not _watching(conn):
        raise RuntimeError(f"migration {version} dropped or replaced {table}, so the record of the migrations "
                           f"applied before it would be lost")
    cursor = conn.cursor()
    cursor.row_factory = None
    changes = cursor.execute(f"SELECT * FROM temp.{CHANGES} ORDER BY rowid").fetchall()
    if not changes:
        return None, set()
    columns = [d[0] for d in cursor.description][1:]
    at = columns.index("version")
    originals: dict[str, tuple] = {}
    inserted: list[str] = []
    changed: list[str] = []
    for change, *row in changes:
        row_version = str(row[at])
        if change == "insert":
            inserted.append(row_version)
        else:
            if row_version not in inserted and row_version not in originals:
                originals[row_version] = tuple(row)
            if change == "update":
                changed.append(row_version)
    restored = []
    for row_version, row in originals.items():
        if versions.number(row_version) is None:
            continue  # a note or a row that is no version: the migration may do what it likes with those
        current = cursor.execute(f"SELECT * FROM main.{table} WHERE version = ?", (row_version,)).fetchone()
        if current is not None and tuple(current) == row:
            continue
        conn.execute(f"DELETE FROM main.{table} WHERE version = ?", (row_version,))
        placeholders = ", ".join("?" * len(columns))
        try:
            conn.execute(f"INSERT INTO main.{table} ({', '.join(columns)}) VALUES ({placeholders})", row)
        except sqlite3.IntegrityError:  # its id was taken by a row the migration wrote: keep the row, new id
            kept = [(c, v) for c, v in zip(columns, row) if c != "id"]
            conn.execute(f"INSERT INTO main.{table} ({', '.join(c for c, _ in kept)}) "
                         f"VALUES ({', '.join('?' * len(kept))})", [v for _, v in kept])
        restored.append(row_version)
    conn.execute(f"DELETE FROM temp.{CHANGES}")
    return _describe(version, inserted, changed, restored, len(changes)), set(inserted)


def _describe(version: str, inserted: list[str], changed: list[str], restored: list[str], total: int) -> str:
    parts = [f"migration {version} wrote {total} change(s) to schema_migrations itself"]
    if inserted:
        parts.append("inserted " + ", ".join(dict.fromkeys(inserted)))
    notes = [v for v in dict.fromkeys(changed) if v not in restored]
    if notes:
        parts.append("updated " + ", ".join(notes))
    if restored:
        parts.append("restored the executor's rows " + ", ".join(versions.ordered(restored)))
    return "; ".join(parts)
