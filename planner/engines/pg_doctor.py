"""``apm migrate doctor`` on PostgreSQL: the same questions as ``planner.doctor``, asked of a server.

What SQLite's doctor reads from the file, this reads from the server, in a
read-only session (``default_transaction_read_only``): the ledger tables in
the ledger schema and their columns, the ledger against the catalog
(``planner.lint.history_findings``), interrupted ``transactional = False``
steps (the log's ``started`` rows, ``planner.nontransactional``) and the
newest ``pg_dump`` backup in the backup folder. There is no integrity or
foreign-key scan to run: the server keeps its pages and enforces every
foreign key itself, which one ``info`` finding says. An unreachable server
or a missing database is raised (``DatabaseUnreachable``, exit 6), not a
finding: there is nothing to diagnose. Nothing here prints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from planner.engines.pg_backup import dump_stem, list_dumps
from planner.engines.pg_ledger import PgLedger, quote
from planner.errors import CatalogError
from planner.ledger import LOG_TABLE, TABLE
from planner.lint import ERROR, INFO, WARNING, Finding, history_findings
from planner.nontransactional import STARTED, findings_for, interrupted_query

#: The columns apm reads and writes; more are allowed, fewer make the ledger unusable.
LEDGER_COLUMNS = {"version", "description", "applied_at", "checksum", "execution_ms"}
LOG_COLUMNS = {"id", "version", "action", "at", "checksum", "execution_ms", "outcome", "detail"}


def diagnose_postgres(engine: Any, catalog_dir: Path | str, backup_dir: Path | None = None) -> list[Finding]:
    """Every finding about ``engine``'s database (a ``PostgresEngine``); it is not changed."""
    schema = engine.ledger_schema
    with engine.session() as conn:
        conn.execute("SET default_transaction_read_only = on")  # a diagnosis never writes
        columns = _columns(conn, schema)
        findings = _shape(conn, schema, columns)
        if LEDGER_COLUMNS <= columns.get(TABLE, set()):
            findings.extend(_history(conn, schema, Path(catalog_dir)))
        if LOG_COLUMNS <= columns.get(LOG_TABLE, set()):
            log = f"{quote(schema)}.{LOG_TABLE}"
            rows = conn.execute(interrupted_query(log, "%s"), (STARTED, STARTED)).fetchall()
            findings.extend(findings_for([(v, a, str(at)[:19], detail) for v, a, at, detail in rows]))
    findings.append(Finding(
        INFO, "foreign-keys", None,
        "foreign keys are enforced by the server: PostgreSQL checks each reference when a row is written (a "
        "deferred one at the end of each step), so no committed row can break one; there is nothing to scan",
        None, "database"))
    if backup_dir is not None:
        findings.extend(_backups(engine, Path(backup_dir)))
    return findings


def _columns(conn: Any, schema: str) -> dict[str, set[str]]:
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name IN (%s, %s)", (schema, TABLE, LOG_TABLE)).fetchall()
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(table, set()).add(column)
    return columns


def _shape(conn: Any, schema: str, columns: dict[str, set[str]]) -> list[Finding]:
    """The ledger tables: missing, or missing columns apm needs."""
    ledger = f"{schema}.{TABLE}"
    if TABLE not in columns:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
                              "('pg_catalog', 'information_schema')").fetchone()[0]
        if not tables:
            return []
        return [Finding(
            WARNING, "no-ledger", None,
            f"the database has {tables} table(s) but no {ledger}: apm treats every migration as pending and would "
            f"run 0001 onwards over the existing schema (or the ledger is in another schema: --ledger-schema)",
            "apm migrate --baseline <V>  # V: the newest migration whose changes are already in the schema",
            "history")]
    findings = []
    for table, wanted in ((TABLE, LEDGER_COLUMNS), (LOG_TABLE, LOG_COLUMNS)):
        missing = wanted - columns.get(table, set())
        if table in columns and missing:
            findings.append(Finding(
                ERROR, "ledger-shape", None,
                f"{schema}.{table} lacks the column(s) {', '.join(sorted(missing))} that apm reads and writes: "
                f"another tool made it, or it was altered by hand, and apm cannot use it as it is",
                f"psql -c '\\d {schema}.{table}'  # compare with docs/postgresql.md; or choose another "
                f"--ledger-schema", "history"))
    if LOG_TABLE not in columns:
        findings.append(Finding(
            WARNING, "missing-log", None,
            f"{schema}.{LOG_TABLE} is missing, so the history of applies, rollbacks and marks is not kept",
            "apm migrate  # recreates it the next time it runs a migration or a mark", "history"))
    return findings


def _history(conn: Any, schema: str, catalog_dir: Path) -> list[Finding]:
    """The ledger's rows against the catalog, as far as the catalog loads."""
    from planner.doctor import _tolerant_catalog

    entries = PgLedger(conn, schema).applied_migrations()
    try:
        catalog, files, unloadable = _tolerant_catalog(catalog_dir)
    except CatalogError as exc:
        return [Finding(ERROR, "catalog-invalid", None, str(exc),
                        "apm migrate check  # lists every problem of the catalog", "catalog")]
    return history_findings(catalog, entries, files, unloadable) if catalog is not None else []


def _backups(engine: Any, folder: Path) -> list[Finding]:
    """The newest ``pg_dump`` file of this database in the backup folder, or a warning that there is none."""
    from planner.doctor import _age, _size

    dumps = list_dumps(engine.url, folder)
    if not dumps:
        return [Finding(
            WARNING, "no-backups", None,
            f"no pg_dump backup of this database is in {folder}: a bad rollback could not be undone",
            f"pg_dump --format=custom --file {folder}/{dump_stem(engine.url)}.$(date +%Y%m%d_%H%M%S).dump "
            f"'{engine.display}'",
            "database")]
    newest = dumps[-1]
    stat = newest.stat()
    return [Finding(
        INFO, "backup", None,
        f"newest backup {newest.name}, {_age(time.time() - stat.st_mtime)} old, {_size(stat.st_size)} "
        f"({len(dumps)} in {folder})",
        f"pg_restore --clean --if-exists -d '{engine.display}' {newest}", "database", newest)]
