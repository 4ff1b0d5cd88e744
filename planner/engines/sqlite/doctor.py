"""``apm migrate doctor``: the seed's troubleshooting section, run as one read-only command.

The seed guide answers "a migration failed mid-execution" and "rollback
fails" with SQL to paste: ``PRAGMA integrity_check``, ``PRAGMA
foreign_key_check``, ``SELECT * FROM schema_migrations``, ``ls`` the files,
look for a backup. ``diagnose`` runs all of it and says, for each problem,
what it means and the command that fixes it.

It opens the database with ``mode=ro``: a diagnosis must never be the thing
that changed the file (not even by recovering a hot journal, which
``open_read_only`` would do for a normal read). Findings reuse
``planner.lint.Finding``; scope ``database`` is the file and its rows,
``history`` the ledger against the catalog, ``catalog`` the files.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

from planner.engines.sqlite.backup import list_backups
from planner.engines.sqlite.database import DEFAULT_BUSY_TIMEOUT, has_journal, read_only_connection, writable
from planner.engines.sqlite.ledger import Ledger
from planner.errors import CatalogError, DatabaseNotFound, DatabaseReadOnly, NotADatabase
from planner.findings import Remedy, age_text, size_text
from planner.ledger import LOG_TABLE, TABLE
from planner.lint import ERROR, INFO, WARNING, Finding, history_findings, note_findings, tolerant_catalog
from planner.outside import STARTED, findings_for, interrupted_query
from planner.sql import quote_identifier

#: At most this many rows of integrity_check and foreign_key_check become findings; a summary says the rest.
MAX_DETAILS = 20


def diagnose(db_path: Path | str, catalog_dir: Path | str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> list[Finding]:
    """Every finding about ``db_path``: the file, its foreign keys, its ledger against ``catalog_dir``, backups.

    Raises ``DatabaseNotFound`` or ``NotADatabase`` when there is no database
    to diagnose; everything else wrong is a finding. The database is not
    changed, byte for byte.
    """
    db_path = Path(db_path)
    if db_path.exists() and not db_path.is_file():
        raise NotADatabase(db_path)  # a folder is no database, not a missing one
    if not db_path.is_file():
        raise DatabaseNotFound(db_path)
    backups = list_backups(db_path)
    try:
        conn = read_only_connection(db_path, busy_timeout)
    except DatabaseReadOnly:
        if not writable(db_path) or not has_journal(db_path):
            raise
        # A hot journal: a read-only connection may not roll it back, and the diagnosis changes nothing.
        return [_cut_short(db_path)] + _backups(db_path, backups) + _leftover_copies()
    try:
        latest = _latest_log(conn)
        findings = _integrity(conn, db_path, backups)
        damaged = any(f.code == "integrity" for f in findings)
        if not damaged:
            findings.extend(_foreign_keys(conn))
        findings.extend(_ledger(conn, db_path, Path(catalog_dir)))
        findings.extend(interrupted_findings(conn))  # a transactional = False step cut short
    finally:
        conn.close()
    findings.extend(_backups(db_path, backups, latest))
    findings.extend(_leftover_copies())
    return findings


def _latest_log(conn: sqlite3.Connection) -> tuple[str, str | None] | None:
    """The run log's newest (action, detail), where there is a log."""
    try:
        return conn.execute(f"SELECT action, detail FROM {LOG_TABLE} ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.DatabaseError:
        return None  # no log (yet), or not readable: the ledger's findings say so


#: Where versions before the preview copied a database to rehearse on it, and could leave the copy behind.
REHEARSAL_FOLDERS = (Path("/dev/shm"), Path(tempfile.gettempdir()))


def _leftover_copies() -> list[Finding]:
    """Copies older versions of apm left when killed mid-rehearsal: RAM or disk that is never given back.

    Reported, not removed: another user's process could own one, and deleting
    files in a shared folder is the operator's call.
    """
    findings = []
    for folder in dict.fromkeys(REHEARSAL_FOLDERS):
        try:
            leftovers = sorted(p for p in folder.glob("apm-rehearsal-*") if p.is_dir())
        except OSError:
            continue
        for path in leftovers:
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            findings.append(Finding(
                WARNING, "leftover-rehearsal-copy", None,
                f"{path} ({size_text(size)}) is a copy of a database that an older apm left when it was stopped "
                f"mid-rehearsal; this version never copies, so nothing uses it",
                Remedy.line(f"rm -rf {path}"), "database"))
    return findings


def _cut_short(db_path: Path) -> Finding:
    return Finding(
        ERROR, "hot-journal", None,
        f"{db_path}-journal holds a transaction that was cut short (a process killed or a machine stopped "
        f"mid-write); nothing else is read until it is rolled back, which the next command that opens the "
        f"database does",
        Remedy("list", note="opening the database rolls the cut transaction back; then run doctor again"),
        "database")


def _restore_fix(db_path: Path, backups: list[Path]) -> Remedy:
    if backups:
        return Remedy("restore", (str(backups[-1]),), "newest backup; the damaged file is kept as a backup",
                      database=str(db_path))
    return Remedy.line(f"sqlite3 {db_path} .recover | sqlite3 {db_path}.recovered  # no backup exists; salvage what "
                       f"is readable")


def _integrity(conn: sqlite3.Connection, db_path: Path, backups: list[Path]) -> list[Finding]:
    """``PRAGMA integrity_check``: anything but a single ``ok`` means the file itself is damaged."""
    try:
        rows = [
            line.strip()
            for row in conn.execute(f"PRAGMA integrity_check({MAX_DETAILS + 1})").fetchall()
            for line in str(row[0]).splitlines()
            if line.strip() and not line.startswith("*** in database")
        ]
    except sqlite3.DatabaseError as exc:  # a damaged page can stop the check itself
        rows = [f"the check could not finish: {exc}"]
    if rows == ["ok"]:
        return []
    count = f"{MAX_DETAILS}+" if len(rows) > MAX_DETAILS else str(len(rows))
    shown = "; ".join(rows[:3]) + ("; ..." if len(rows) > 3 else "")
    # One finding, not one per damaged page: the fix is the same, and the full list is one command away.
    return [Finding(
        ERROR, "integrity", None,
        f"PRAGMA integrity_check reports {count} problem(s) ({shown}): the database file is damaged, and "
        f"queries may fail or return wrong rows; see all with sqlite3 {db_path} 'PRAGMA integrity_check'",
        _restore_fix(db_path, backups), "database")]


def _foreign_keys(conn: sqlite3.Connection) -> list[Finding]:
    """``PRAGMA foreign_key_check``, each violation named by table, row, column, value and parent."""
    try:
        rows = conn.execute("PRAGMA foreign_key_check").fetchmany(MAX_DETAILS + 1)
    except sqlite3.DatabaseError as exc:
        return [Finding(ERROR, "foreign-key-check", None, f"PRAGMA foreign_key_check failed: {exc}",
                        Remedy("doctor", note="after fixing the problems above"), "database")]
    findings: list[Finding] = []
    keys: dict[str, dict[int, list[tuple]]] = {}
    for table, rowid, parent, fk_id in rows[:MAX_DETAILS]:
        if table not in keys:
            grouped: dict[int, list[tuple]] = {}
            for fk in conn.execute(f"PRAGMA foreign_key_list({quote_identifier(table)})").fetchall():
                grouped.setdefault(fk[0], []).append(fk)  # (id, seq, table, from, to, ...)
            keys[table] = grouped
        columns = [fk[3] for fk in keys[table].get(fk_id, [])]
        targets = [fk[4] or "rowid" for fk in keys[table].get(fk_id, [])]
        values: list[object] = []
        if rowid is not None and columns:
            select = ", ".join(quote_identifier(c) for c in columns)
            row = conn.execute(f"SELECT {select} FROM {quote_identifier(table)} WHERE rowid = ?", (rowid,)).fetchone()
            values = list(row) if row else []
        where = f"rowid = {rowid}" if rowid is not None else "<the row>"
        column_text = ", ".join(columns) or "?"
        value_text = ", ".join(repr(v) for v in values) or "?"
        nullable = ", ".join(f"{quote_identifier(c)} = NULL" for c in columns)
        fix = f"DELETE FROM {quote_identifier(table)} WHERE {where};"
        if nullable:
            fix += f"  -- or: UPDATE {quote_identifier(table)} SET {nullable} WHERE {where};"
        findings.append(Finding(
            ERROR, "foreign-key", None,
            f"{table} row {rowid} has {column_text} = {value_text}, but {parent}({', '.join(targets)}) has no "
            f"such row: the reference is broken, and the next migration's foreign_key_check will fail on it",
            Remedy.line(fix), "database"))
    if len(rows) > MAX_DETAILS:
        findings.append(Finding(ERROR, "foreign-key", None, "foreign_key_check reports more violations than shown",
                                Remedy.line("sqlite3 <db> 'PRAGMA foreign_key_check'"), "database"))
    return findings


def _ledger(conn: sqlite3.Connection, db_path: Path, catalog_dir: Path) -> list[Finding]:
    """The ledger's own shape, then its rows against the catalog."""
    def columns(table: str) -> set[str]:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({quote_identifier(table)})").fetchall()}

    try:
        ledger_columns = columns(TABLE)
        has_log = bool(columns(LOG_TABLE))
        user_tables = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        ).fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return [Finding(ERROR, "ledger-unreadable", None, f"the ledger cannot be read: {exc}",
                        _restore_fix(db_path, list_backups(db_path)), "database")]
    findings: list[Finding] = []
    if not ledger_columns:
        if user_tables:
            findings.append(Finding(
                WARNING, "no-ledger", None,
                f"the database has {user_tables} table(s) but no {TABLE}: apm treats every migration as pending "
                f"and would run 0001 onwards over the existing schema",
                Remedy("mark-applied", ("<V>",), "for each migration already in the schema, oldest first"),
                "history"))
        return findings
    if not {"checksum", "execution_ms"} <= ledger_columns:
        findings.append(Finding(
            WARNING, "legacy-ledger", None,
            f"{TABLE} is the old framework's table ({', '.join(sorted(ledger_columns))}) without checksum "
            f"columns: edits to applied migration files cannot be detected",
            Remedy("migrate", note="upgrades the ledger in place (ALTER TABLE ADD COLUMN) the next time it runs a "
                                   "migration or a mark; no row is lost"), "history"))
    elif not has_log:
        findings.append(Finding(
            WARNING, "missing-log", None,
            f"{LOG_TABLE} is missing, so the history of applies, rollbacks and marks is not kept",
            Remedy("migrate", note="recreates it when it next applies, rolls back or marks a migration; "
                                   "with nothing to do, it waits"), "history"))

    try:
        entries = Ledger(conn).applied_migrations()
    except sqlite3.DatabaseError as exc:
        return findings + [Finding(ERROR, "ledger-unreadable", None, f"{TABLE} cannot be read: {exc}",
                                   _restore_fix(db_path, list_backups(db_path)), "database")]
    try:
        catalog, files, unloadable = tolerant_catalog(catalog_dir)
    except CatalogError as exc:
        return findings + [Finding(ERROR, "catalog-invalid", None, str(exc),
                                   Remedy("check", note="lists every problem of the catalog"), "catalog")]
    findings.extend(history_findings(catalog, entries, files, unloadable))
    findings.extend(note_findings(catalog, Ledger(conn).notes()))
    return findings


def _backups(db_path: Path, backups: list[Path], latest: tuple[str, str | None] | None = None) -> list[Finding]:
    """Each backup with its age and the command that restores it; a warning when there is none. Right after a
    restore (``latest``: the run log's newest action and detail), the safety copy it took gets no command: its
    restore would undo the one just done."""
    if not backups:
        return [Finding(
            WARNING, "no-backups", None,
            f"no backup of {db_path.name} is next to it ({db_path.name}.backup.*): a damaged file or a bad "
            f"rollback could not be undone",
            Remedy.line(f"sqlite3 {db_path} \".backup '{db_path}.backup.$(date +%Y%m%d_%H%M%S)'\""), "database")]
    now = time.time()
    findings = []
    for path in reversed(backups):  # newest first: the one to restore
        stat = path.stat()
        findings.append(Finding(
            INFO, "backup", None,
            f"backup {path.name}, {age_text(now - stat.st_mtime)} old, {size_text(stat.st_size)}",
            None if latest is not None and latest[0] == "restore" and (latest[1] or "").endswith(f" is in {path.name}") else
            Remedy("restore", (str(path),), database=str(db_path)), "database", path))
    return findings


def interrupted_findings(conn: sqlite3.Connection) -> list[Finding]:
    """One error per non-transactional step whose ``started`` row has no later ``ok`` row, with what to check.

    Any later ``ok`` row for the version settles it (a re-run, or a mark
    once someone checked the schema); a later ``started`` row is judged on its own.
    """
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LOG_TABLE,)).fetchone():
        return []
    return findings_for(conn.execute(interrupted_query(LOG_TABLE), (STARTED, STARTED)).fetchall())
