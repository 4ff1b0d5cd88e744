"""The ledger in a SQLite file: ``schema_migrations`` and ``schema_migrations_log`` (``planner.ledger``).

APM's later framework (docs/coming-from-apm.md) wrote a seven-column table
(``id``, ``rollback_at``, ``rollback_reason``, ``applied_by`` besides the
seed's): it is adopted in place like the seed's, a row with ``rollback_at``
set means "not applied", and suffixed rows its migrations wrote themselves
(``0018_consolidated``) are notes, never versions. A fresh ledger is created
in that same shape (plus ours), because APM's migrations ``INSERT`` into it
with ``applied_by``.

Keeping the executor's ledger rows intact while a migration writes the ledger itself.

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
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from planner import versions
from planner.engines.sqlite.database import DEFAULT_BUSY_TIMEOUT, open_read_only
from planner.errors import ForeignLedger
from planner.ledger import (
    LedgerColumn,
    LedgerEntry,
    LedgerNote,
    LOG_TABLE,
    LogEntry,
    TABLE,
    describe_columns,
    unknown_shape,
)

if TYPE_CHECKING:
    from planner.migration import Migration


# APM's later framework's seven columns, then ours: its migrations write rows with applied_by.
_CREATE_TABLE = f"""
CREATE TABLE {TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL UNIQUE,
    description TEXT,
    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    rollback_at TIMESTAMP DEFAULT NULL,
    rollback_reason TEXT DEFAULT NULL,
    applied_by TEXT DEFAULT NULL,
    checksum TEXT,
    execution_ms INTEGER
)"""

#: What ``applied_by`` says on the rows this project writes (when the table has the column).
APPLIED_BY = "apm-migrate"
#: ``record_applied``'s row in a table with every column (the one ``_CREATE_TABLE`` makes).
_INSERT_APPLIED = (f"INSERT INTO {TABLE} (version, description, checksum, execution_ms, applied_by, applied_at) "
                   f"VALUES (?, ?, ?, ?, ?, CURRENT_TIMESTAMP)")

_ADDED_COLUMNS = (("checksum", "TEXT"), ("execution_ms", "INTEGER"))

#: The seed's three columns: a table with these (and only what this project adds) is upgraded in place.
SEED_COLUMNS = frozenset({"version", "description", "applied_at"})
#: Every column a ledger this project can adopt may have. Anything else means another tool made the
#: table, with its own idea of what a row means, and altering it would corrupt that tool's history.
KNOWN_COLUMNS = SEED_COLUMNS | {name for name, _ in _ADDED_COLUMNS} | {"id", "rollback_at", "rollback_reason",
                                                                         "applied_by"}
#: What ``record_applied`` writes (``applied_by`` when the table has it); SQLite fills ``id`` itself.
_WRITTEN = SEED_COLUMNS | {name for name, _ in _ADDED_COLUMNS} | {"applied_by"}

_CREATE_LOG = f"""
CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    action TEXT NOT NULL,      -- apply | rollback | mark-applied | mark-rolled-back
    at TIMESTAMP NOT NULL,
    checksum TEXT,
    execution_ms INTEGER,
    outcome TEXT NOT NULL,     -- ok | failed | skipped
    detail TEXT
)"""

# One statement answers "is the schema current, and whose is it?", which every transaction asks: the text each
# ledger table was made with (no row: no such table). Names are matched as SQLite matches them, without case.
_SCHEMA_STATE = (f"SELECT lower(name), sql FROM sqlite_master WHERE type = 'table' "
                 f"AND lower(name) IN ('{TABLE}', '{LOG_TABLE}')")

#: A ``CREATE TABLE`` text -> its columns and why they are not a ledger apm knows (``None``: they are). SQLite
#: builds a table's columns from that text alone (``ALTER TABLE ADD COLUMN`` rewrites it), so a fleet of files
#: made by one program reads ``PRAGMA table_info`` once, not once per file.
_SHAPES: dict[str, tuple[list[LedgerColumn], str | None]] = {}
_SHAPES_KEPT = 64


class Ledger:
    """The record of applied migrations in one database.

    Invariant: a row in ``schema_migrations`` means the migration is applied,
    committed in the same transaction as its schema change. The ledger never
    begins or commits; its writes belong to the caller's transaction, which is
    what makes the invariant hold across crashes.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        #: What the last migration wrote to ``schema_migrations`` itself (see ``reconcile``).
        self.migration_writes: str | None = None
        self._inserted_by_migration: set[str] = set()
        #: Whether the step running now is watched (``watch``); a deferred watch is made by ``watch_now``.
        self._watched = False

    def _rows(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        # A migration may have set row_factory on the shared connection; the ledger reads plain tuples.
        cursor = self.conn.cursor()
        cursor.row_factory = None
        return cursor.execute(sql, parameters).fetchall()

    def exists(self) -> bool:
        """Whether ``schema_migrations`` exists (a database never migrated has none)."""
        return bool(self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)))

    def _columns(self) -> set[str]:
        return {str(row[1]).lower() for row in self._rows(f"PRAGMA table_info({TABLE})")}

    def _require_known_shape(self, columns: set[str] | None = None) -> None:
        """Refuse a ``schema_migrations`` that another tool made, before anything reads or alters it.

        ``columns`` (the names) lets a caller that has read them skip the
        catalog read when a name alone already tells (Rails' lone ``version``
        does not: its shape is read in full, one more PRAGMA).
        """
        if columns is not None and not columns:
            return
        self._refuse_foreign(self._shape())

    def _shape(self) -> list[LedgerColumn]:
        return [_column(row) for row in self._rows(f"PRAGMA table_info({TABLE})")]

    def _refuse_foreign(self, shape: list[LedgerColumn]) -> None:
        """``_require_known_shape`` of columns already read: a caller that needs them reads them once."""
        reason = self._foreign_reason(shape)
        if reason is not None:
            self._refuse(shape, reason)

    @staticmethod
    def _foreign_reason(shape: list[LedgerColumn]) -> str | None:
        if not shape:
            return None
        return unknown_shape(shape, required=sorted(SEED_COLUMNS), written=_WRITTEN,
                             text_version=_keeps_text(next((c.type for c in shape if c.name == "version"), "")))

    def _refuse(self, shape: list[LedgerColumn], reason: str) -> None:
        raise ForeignLedger(self._path(), [describe_columns([c]) for c in shape], sorted(KNOWN_COLUMNS), reason)

    def _path(self) -> Path:
        row = self._rows("PRAGMA database_list")[0]
        return Path(row[2] or ":memory:")

    def ensure_schema(self) -> None:
        """Create the ledger tables, or bring a seed-era three-column table up to date in place.

        Only columns are added (``ALTER TABLE ADD COLUMN``), so every existing
        row, and any tool that reads the seed's columns, keeps working. A
        table of any other shape is refused (``ForeignLedger``) untouched.
        """
        shape, complete = self._schema_state()
        if complete:
            return
        present = {column.name for column in shape}
        if not shape:
            self.conn.execute(_CREATE_TABLE)
        else:
            for name, sql_type in _ADDED_COLUMNS:
                if name not in present:
                    self.conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {sql_type}")
        self.conn.execute(_CREATE_LOG)

    def _schema_state(self) -> tuple[list[LedgerColumn], bool]:
        """The ledger's columns (another tool's refused), and whether both tables are complete: then
        ``ensure_schema`` has nothing to do."""
        made = dict(self._rows(_SCHEMA_STATE))
        text = made.get(TABLE)
        if text is None:
            return [], False
        known = _SHAPES.get(text)
        if known is None:
            shape = self._shape()
            known = (shape, self._foreign_reason(shape))
            if len(_SHAPES) < _SHAPES_KEPT:
                _SHAPES[text] = known
        shape, reason = known
        if reason is not None:
            self._refuse(shape, reason)
        present = {column.name for column in shape}
        return shape, LOG_TABLE in made and all(name in present for name, _ in _ADDED_COLUMNS)

    def applied_migrations(self) -> dict[str, LedgerEntry]:
        """Applied migrations by version as recorded; ``{}`` when there is no ledger (nothing is created)."""
        return self.applied_and_complete()[0]

    def applied_and_complete(self) -> tuple[dict[str, LedgerEntry], bool]:
        """``applied_migrations``, and whether ``ensure_schema`` would have nothing to do, read in the same
        statements: a run that read the ledger ahead, and finds inside its write lock that nothing was committed
        since, needs to look at the tables no further."""
        shape, complete = self._schema_state()
        if not shape:
            return {}, False
        columns = {c.name for c in shape}
        wanted = ["version", "description", "applied_at", "checksum", "execution_ms"]
        select = ", ".join(c if c in columns else "NULL" for c in wanted)
        rows = self._rows(f"SELECT {select} FROM {TABLE}{_applied_only(columns)}")
        entries = [LedgerEntry(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows if not is_note(r[0])]
        return {e.version: e for e in sorted(entries, key=lambda e: versions.sort_key(e.version))}, complete

    def applied_versions(self) -> list[str]:
        """Just the applied versions: the cheap read the executor repeats inside each step's lock.

        Rows rolled back by APM's framework (``rollback_at`` set) and notes
        (``0018_consolidated``) are not applied migrations and are left out.
        """
        columns = self._columns()
        if not columns:
            return []
        if not columns <= _WRITTEN | {"id", "rollback_at", "rollback_reason"} or not SEED_COLUMNS <= columns:
            self._require_known_shape(columns)  # the names alone say it is foreign: never count its rows
        rows = self._rows(f"SELECT version FROM {TABLE}{_applied_only(columns)}")
        return [str(r[0]) for r in rows if not is_note(r[0])]

    def notes(self) -> list[LedgerNote]:
        """The rows that are not applied migrations (notes, rolled-back rows), in version order."""
        shape = self._shape()
        if not shape:
            return []
        self._refuse_foreign(shape)
        columns = {c.name for c in shape}
        wanted = ["version", "description", "applied_at", "applied_by", "rollback_at", "rollback_reason"]
        select = ", ".join(c if c in columns else "NULL" for c in wanted)
        found = []
        for version, description, applied_at, applied_by, rollback_at, reason in self._rows(
                f"SELECT {select} FROM {TABLE}"):
            version = str(version)
            base = versions.base_version(version)
            if base is None and rollback_at is None:
                continue  # an applied version, or junk (which lint reports as not-a-version)
            kind = "note" if base is not None else "rolled-back"
            found.append(LedgerNote(version, kind, base, description, applied_at, applied_by, rollback_at, reason))
        return sorted(found, key=lambda n: (versions.sort_key(n.base or n.version), n.version))

    # -- protecting the executor's rows from migrations that write the ledger ----

    def watch(self) -> None:
        """Start noting every change made to ``schema_migrations`` (``planner.engines.sqlite.ledger``)."""
        watch(self.conn, TABLE)
        self._watched = True

    def defer_watch(self) -> None:
        """Watch the step only once ``watch_now`` is called: a previewed step, whose observer sees every statement
        of the migration before it runs and calls it before the first that may write the ledger (or move a
        savepoint, or cannot be prepared). A step that never does pays for no TEMP table and no triggers."""
        self._watched = False

    def watch_now(self) -> None:
        """The deferred watch, made now (once per step): nothing of the migration's has written the ledger yet."""
        if not self._watched:
            self.watch()

    def reconcile(self, version: str) -> str | None:
        """Undo what the migration just run did to the executor's rows; what it wrote is returned as a note.

        A step whose watch was deferred and never made wrote nothing to the ledger: nothing to undo."""
        if not self._watched:
            self.migration_writes, self._inserted_by_migration = None, set()
            return None
        self.migration_writes, self._inserted_by_migration = reconcile(self.conn, TABLE, version)
        return self.migration_writes

    def take_migration_writes(self, detail: str | None) -> str | None:
        """``detail`` with the last ``reconcile``'s note appended, for the step's log row (then forgotten)."""
        writes, self.migration_writes = self.migration_writes, None
        return "; ".join(part for part in (detail, writes) if part) or None

    def record_applied(self, migration: Migration, execution_ms: int | None) -> None:
        """Add ``migration``'s row; the caller commits it with the schema change.

        Times are SQLite's ``CURRENT_TIMESTAMP`` (UTC), the format the seed's rows already use.
        A row already there for the version becomes this row when APM's
        framework rolled it back (kept, with ``rollback_at`` set) or the
        migration just inserted it itself; any other existing row is an
        ``IntegrityError``, as recording an applied migration twice is a bug.
        """
        own = migration.version in self._inserted_by_migration
        try:
            # The table this project makes has every column: one INSERT, without reading them first. Any other
            # shape refuses it as it is prepared (no row written, the transaction goes on), and is read below.
            self.conn.execute(_INSERT_APPLIED, (migration.version, migration.description, migration.checksum,
                                                execution_ms, APPLIED_BY))
            return
        except sqlite3.OperationalError as exc:
            if "no column named" not in str(exc):
                raise
        except sqlite3.IntegrityError:
            pass  # a row already there: decided below, as for any shape
        columns = self._columns()
        later = "rollback_at" in columns
        values = [migration.description, migration.checksum, execution_ms]
        sets = "description = ?, applied_at = CURRENT_TIMESTAMP, checksum = ?, execution_ms = ?"
        if later:
            sets += ", rollback_at = NULL, rollback_reason = NULL"
        if "applied_by" in columns:
            sets += ", applied_by = ?"
            values.append(APPLIED_BY)
        names = ["version", "description", "checksum", "execution_ms"] + (["applied_by"] if "applied_by" in columns
                                                                          else [])
        try:
            # The usual case first: one INSERT. A row already there (rolled back by APM's framework, or
            # inserted by the migration itself) makes it fail alone, without ending the transaction.
            self.conn.execute(
                f"INSERT INTO {TABLE} ({', '.join(names)}, applied_at) "
                f"VALUES ({', '.join('?' * len(names))}, CURRENT_TIMESTAMP)",
                (migration.version, *values),
            )
        except sqlite3.IntegrityError:
            if not (later or own):
                raise
            which = "" if own else " AND rollback_at IS NOT NULL"
            cursor = self.conn.execute(f"UPDATE {TABLE} SET {sets} WHERE version = ?{which}",
                                       (*values, migration.version))
            if not cursor.rowcount:
                raise

    def record_unapplied(self, version: str) -> None:
        """Delete ``version``'s row, however the old framework spelled it (``27`` or ``0027``).

        A rollback by this project deletes, in every ledger shape (APM's
        framework set ``rollback_at`` instead): a row always means applied,
        for ``SELECT MAX(version)`` and for readers that filter on
        ``rollback_at IS NULL`` alike, and the log keeps the history.
        """
        cursor = self.conn.execute(f"DELETE FROM {TABLE} WHERE version = ?", (version,))
        value = versions.number(version)
        if cursor.rowcount == 0 and value is not None:
            # The same rule as planner.versions, in SQL: ASCII digits only, compared as numbers.
            self.conn.execute(f"DELETE FROM {TABLE} WHERE version NOT GLOB '*[^0-9]*' AND version != '' "
                              f"AND CAST(version AS INTEGER) = ?", (value,))

    def log(self, version: str, action: str, outcome: str, checksum: str | None = None, execution_ms: int | None = None,
            detail: str | None = None) -> None:
        """Append one row to the history; the caller commits it."""
        self.conn.execute(f"INSERT INTO {LOG_TABLE} (version, action, at, checksum, execution_ms, outcome, detail) "
                          f"VALUES (?, ?, CURRENT_TIMESTAMP, ?, ?, ?, ?)",
                          (version, action, checksum, execution_ms, outcome, detail))

    def history(self, version: str | None = None) -> list[LogEntry]:
        """Everything done so far (to ``version`` only, if given), oldest first."""
        if not self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LOG_TABLE,)):
            return []
        sql = f"SELECT id, version, action, at, checksum, execution_ms, outcome, detail FROM {LOG_TABLE}"
        if version is None:
            rows = self._rows(sql + " ORDER BY id")
        else:
            rows = self._rows(sql + " WHERE version = ? ORDER BY id", (version,))
        return [LogEntry(*row) for row in rows]


@lru_cache(maxsize=64)  # the same nine rows for every database of a fleet: made once, not once per database
def _column(row: tuple) -> LedgerColumn:
    """A ``PRAGMA table_info`` row as a ``LedgerColumn``; an ``INTEGER PRIMARY KEY`` is the rowid, filled by SQLite."""
    _, name, declared, not_null, default, pk = row
    declared = str(declared or "").lower()
    rowid = bool(pk) and declared == "integer"
    return LedgerColumn(str(name).lower(), declared, bool(not_null), default is not None or rowid)


def _keeps_text(declared: str) -> bool:
    """Whether a column of this declared type stores ``'0001'`` as given (TEXT or BLOB affinity, SQLite's rules)."""
    declared = declared.lower()
    if "int" in declared:
        return False
    return any(word in declared for word in ("char", "clob", "text")) or declared == "" or "blob" in declared


def _applied_only(columns: set[str]) -> str:
    """The WHERE clause that leaves out rows APM's framework rolled back (kept, with ``rollback_at`` set)."""
    return " WHERE rollback_at IS NULL" if "rollback_at" in columns else ""


def is_note(version: object) -> bool:
    return versions.base_version(str(version)) is not None


def read_notes(path: Path | str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> list[LedgerNote]:
    """``path``'s ledger rows that are not applied migrations, read without creating anything."""
    conn = open_read_only(path, busy_timeout)
    if conn is None:
        return []
    try:
        return Ledger(conn).notes()
    finally:
        conn.close()


def read_history(path: Path | str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                 version: str | None = None) -> list[LogEntry]:
    """``path``'s log (of ``version`` only), oldest first, read without creating anything."""
    conn = open_read_only(path, busy_timeout)
    if conn is None:
        return []
    try:
        return Ledger(conn).history(version)
    finally:
        conn.close()


def read_ledger(path: Path | str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> dict[str, LedgerEntry]:
    """What ``path``'s ledger records, read without creating the file or any table.

    A missing file or a database that was never migrated reads as ``{}``:
    nothing is applied there yet.
    """
    conn = open_read_only(path, busy_timeout)
    if conn is None:
        return {}
    try:
        return Ledger(conn).applied_migrations()
    finally:
        conn.close()



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


_READS = frozenset((sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_PRAGMA))


def may_write_ledger(events: list[tuple]) -> bool:
    """Whether a statement may change ``schema_migrations``, by its authorizer events (its triggers' included):
    anything naming the table but a read, or a savepoint (a watch made inside one of the migration's savepoints
    would be undone by its ``ROLLBACK TO``, so it is made before the first)."""
    return any(action == sqlite3.SQLITE_SAVEPOINT or (action not in _READS and TABLE in (
        (arg1 or "").lower(), (arg2 or "").lower())) for action, arg1, arg2, *_ in events)


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
