"""``apm migrate doctor`` on PostgreSQL: the same questions as ``planner.engines.sqlite.doctor``, asked of a server.

What SQLite's doctor reads from the file, this reads from the server, in a
read-only session (``default_transaction_read_only``): the ledger tables in
the ledger schema and their columns, the ledger against the catalog
(``planner.lint.history_findings``), interrupted ``transactional = False``
steps (the log's ``started`` rows, ``planner.outside``), the drift scratch
databases left on the server (``planner.engines.postgresql.drift`` reads
their names) and the newest ``pg_dump`` backup in the backup folder. There is no integrity or
foreign-key scan to run: the server keeps its pages and enforces every
foreign key itself, which one ``info`` finding says. An unreachable server
or a missing database is raised (``DatabaseUnreachable``, exit 6), not a
finding: there is nothing to diagnose. Nothing here prints.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from planner.engines.postgresql.backup import dump_stem, list_dumps
from planner.engines.postgresql.drift import ScratchDatabase, scratch_databases
from planner.engines.postgresql.ledger import PgLedger, lock_key, quote
from planner.errors import CatalogError, ForeignLedger
from planner.findings import Remedy, age_text, size_text
from planner.ledger import LOG_TABLE, TABLE
from planner.lint import ERROR, INFO, WARNING, Finding, history_findings, tolerant_catalog
from planner.outside import STARTED, findings_for, interrupted_query
from planner.urls import redact, without_password

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
            findings.extend(_timeouts(conn.execute(_TIMEOUTS.format(log=log)).fetchall()))
        findings.extend(_invalid_indexes(conn))
        findings.extend(_scratch(found) for found in scratch_databases(conn) if found.whose != "running")
        latest = conn.execute(f"SELECT action, detail FROM {quote(schema)}.{LOG_TABLE} ORDER BY id DESC LIMIT 1"
                              ).fetchone() if LOG_COLUMNS <= columns.get(LOG_TABLE, set()) else None
    findings.append(Finding(
        INFO, "foreign-keys", None,
        "foreign keys are enforced by the server: PostgreSQL checks each reference when a row is written (a "
        "deferred one at the end of each step), so no committed row can break one; there is nothing to scan",
        None, "database"))
    findings.extend(probe_guarantees(engine))
    if backup_dir is not None:
        findings.extend(_backups(engine, Path(backup_dir), latest))
    return findings


#: The run log's failed attempts that met a limit of the run (a lock timeout, a statement timeout), each with the
#: time of the first success of the same migration and action after it (``None``: none since).
_TIMEOUTS = (
    "SELECT f.version, f.action, f.at, f.detail, (SELECT min(o.at) FROM {log} o WHERE o.version = f.version "
    "AND o.action = f.action AND o.id > f.id AND o.outcome = 'ok') FROM {log} f WHERE f.outcome = 'failed' "
    "AND (f.detail LIKE '%%lock timeout%%' OR f.detail LIKE '%%statement timeout%%') ORDER BY f.id")
_HELD_BY = re.compile(r"held by (.*?); (?:rolled back|its step)")


def _timeouts(rows: list[tuple]) -> list[Finding]:
    """One finding per migration, action and limit met: how many attempts, when, who held the lock.

    Each such attempt was rolled back whole, so the database is as before: never an error. A migration that
    succeeded since is an ``info`` (nothing to do; a pattern to watch), one still waiting a ``warning``.
    """
    grouped: dict[tuple[str, str, str], list[tuple]] = {}
    for version, action, at, detail, later in rows:
        limit = "lock timeout" if "lock timeout" in detail else "statement timeout"
        grouped.setdefault((version, action, limit), []).append((str(at)[:19], detail, later))
    findings = []
    for (version, action, limit), attempts in grouped.items():
        first, last, done = attempts[0][0], attempts[-1][0], attempts[-1][2]
        when = f"at {first} UTC" if first == last else f"from {first} to {last} UTC"  # the log's times are UTC
        held = _HELD_BY.search(attempts[-1][1])
        what = (f"could not get a lock within the lock timeout in {len(attempts)} attempt(s) {when}"
                + (f" (the last held by {held.group(1)})" if held else "")
                if limit == "lock timeout" else
                f"ran past the statement timeout in {len(attempts)} attempt(s) {when}")
        if done is not None:
            findings.append(Finding(INFO, "lock-timeouts", version,
                                    f"migration {version}'s {action} {what}; each attempt was rolled back, and it "
                                    f"succeeded at {str(done)[:19]} UTC: nothing to do", None, "history"))
        else:
            findings.append(Finding(
                WARNING, "lock-timeouts", version,
                f"migration {version}'s {action} {what}; each attempt was rolled back, so the database is as it "
                f"was, and the {action} has not succeeded since",
                Remedy("migrate", note="when the session that held the lock is done, or with a longer "
                                       "lock timeout (statement timeout) or more retries"), "history"))
    return findings


def _invalid_indexes(conn: Any) -> list[Finding]:
    """Indexes a ``CREATE INDEX CONCURRENTLY`` left half-built: the server keeps them but never uses them.

    ``IF NOT EXISTS`` then skips them, so a migration re-run "succeeds" without an index.
    """
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid ORDER BY 1, 2").fetchall()
    return [Finding(
        ERROR, "invalid-index", None,
        f"index {schema}.{name} is invalid (a CREATE INDEX CONCURRENTLY that failed or was stopped): the server "
        f"keeps it up to date but never uses it, and CREATE INDEX ... IF NOT EXISTS skips it",
        Remedy("rebuild-invalid-index", (f"{quote(schema)}.{quote(name)}",)), "database") for schema, name in rows]


#: Whose a scratch database is, as its name tells (``planner.engines.postgresql.drift.Whose``).
_WHOSE = {
    "gone": "on this machine whose process ({pid}) is gone, killed before it could drop it; the next drift check "
            "from this machine against this server as role {owner} (its owner) or a superuser drops it",
    "other-host": "on another machine (process {pid} there) and not dropped",
    "older-release": "of an older apm (process {pid}, on a machine the name does not say) and not dropped",
}


def _scratch(found: ScratchDatabase) -> Finding:
    """A scratch database a drift check made and did not drop (disk space on the server for good), unless a
    session is connected to it: then a drift may be replaying in it, and dropping it would fail that drift."""
    name, owner = quote(found.name), quote(found.owner)
    what = (f"database {name} (owner {owner}) is a scratch database made by a drift check "
            + _WHOSE[found.whose].format(pid=found.pid, owner=owner) if found.whose in _WHOSE else
            f"database {name} (owner {owner}) is named as a drift check's scratch database, but not in the form "
            f"apm gives one, so the name does not say whose: make sure nothing in it is kept on purpose")
    if found.sessions:
        named = ", ".join(f'"{application}"' for application in found.applications)
        return Finding(INFO, "drift-scratch-database", None,
                       f"{what}; {found.sessions} session(s) are connected to it now"
                       f"{f' (application {named})' if named else ''}, so it may be in use: leave it; once no "
                       f"session is connected, doctor gives the statement that drops it", None, "database")
    return Finding(WARNING, "drift-scratch-database", None,
                   f"{what}; no session is connected to it, so nothing is using it now",
                   Remedy.line(f"DROP DATABASE {name} WITH (FORCE)"), "database")


class _Undo(Exception):
    """Leave the probe's transaction by rolling it back."""


def probe_guarantees(engine: Any) -> list[Finding]:
    """Ask the server for the two behaviours every guarantee rests on, instead of assuming them.

    Engines that speak PostgreSQL's protocol do not all keep its rules: an
    advisory lock may be accepted and do nothing (then concurrent runners are
    not serialized, and a migration can run twice), and DDL may survive a
    ROLLBACK (then a failed step leaves a schema change without its ledger
    row, and the preview changes what it only meant to watch). Two probes on
    two fresh sessions: a second session must fail to take an advisory lock
    the first holds, and a ``CREATE TABLE`` rolled back must be gone. Both
    leave nothing behind; the lock key is apm's own, never the ledger's.
    """
    # optional dependency: psycopg is installed with an extra
    import psycopg

    findings: list[Finding] = []
    key = lock_key(f"probe:{engine.ledger_schema}")
    with engine.session() as holder, engine.session() as other:
        try:
            holder.execute("SELECT pg_advisory_lock(%s)", (key,))
            shared = other.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            if shared:
                other.execute("SELECT pg_advisory_unlock(%s)", (key,))
                findings.append(Finding(
                    ERROR, "advisory-lock-not-exclusive", None,
                    "a second session took an advisory lock another session held: this server does not "
                    "serialize concurrent apm runs, so two of them could apply one migration twice",
                    Remedy("one-run-at-a-time", note="a CI job with a concurrency limit of 1"), "database"))
        except psycopg.Error as exc:
            findings.append(Finding(
                ERROR, "advisory-lock-missing", None,
                f"the server refused advisory locks ({_first_line(exc)}): concurrent apm runs "
                f"cannot be serialized", Remedy("one-run-at-a-time"), "database"))
        finally:
            try:
                holder.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.Error:
                pass  # closing the session releases it anyway
        findings.extend(_probe_transactional_ddl(other, engine.ledger_schema))
    if not findings:
        findings.append(Finding(
            INFO, "engine-guarantees", None,
            "probed: a second session could not take a held advisory lock, and a CREATE TABLE was undone by "
            "ROLLBACK, so runners serialize and each step commits with its ledger row or not at all",
            None, "database"))
    return findings


def _probe_transactional_ddl(conn: Any, schema: str) -> list[Finding]:
    # optional dependency: psycopg is installed with an extra
    import psycopg

    table = f"{quote(schema)}.{quote(f'apm_probe_{os.getpid()}')}"
    try:
        with conn.transaction():
            conn.execute(f"CREATE TABLE {table} (id INT)")
            raise _Undo
    except _Undo:
        pass
    except psycopg.Error as exc:
        return [Finding(INFO, "ddl-not-probed", None,
                        f"could not probe transactional DDL in schema {schema} ({_first_line(exc)})", None,
                        "database")]
    if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
        return []
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    return [Finding(
        ERROR, "ddl-not-transactional", None,
        "a CREATE TABLE survived the ROLLBACK of its transaction: a failed step could leave its schema change "
        "without its ledger row, and the preview would change what it only meant to watch",
        Remedy("no-preview"), "database")]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact(lines[0] if lines else type(exc).__name__)


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
            f"run 0001 onwards over the existing schema (or the ledger is in another schema: the ledger_schema setting "
            "names it)",
            Remedy("baseline", ("<V>",), "V: the newest migration whose changes are already in the schema"),
            "history")]
    findings = []
    for table, wanted in ((TABLE, LEDGER_COLUMNS), (LOG_TABLE, LOG_COLUMNS)):
        missing = wanted - columns.get(table, set())
        if table in columns and missing:
            findings.append(Finding(
                ERROR, "ledger-shape", None,
                f"{schema}.{table} lacks the column(s) {', '.join(sorted(missing))} that apm reads and writes: "
                f"another tool made it, or it was altered by hand, and apm cannot use it as it is",
                Remedy("inspect-ledger", (f"{schema}.{table}",), "compare with docs/postgresql.md"), "history"))
    if LOG_TABLE not in columns:
        findings.append(Finding(
            WARNING, "missing-log", None,
            f"{schema}.{LOG_TABLE} is missing, so the history of applies, rollbacks and marks is not kept",
            Remedy("migrate", note="recreates it when it next applies, rolls back or marks a migration; "
                                   "with nothing to do, it waits"), "history"))
    return findings


def _history(conn: Any, schema: str, catalog_dir: Path) -> list[Finding]:
    """The ledger's rows against the catalog, as far as the catalog loads."""
    try:
        entries = PgLedger(conn, schema).applied_migrations()
    except ForeignLedger as exc:  # every column apm needs is there, and more that another tool needs
        return [Finding(ERROR, "ledger-shape", None, str(exc),
                        Remedy("inspect-ledger", (f"{schema}.{TABLE}",)), "history")]
    try:
        catalog, files, unloadable = tolerant_catalog(catalog_dir)
    except CatalogError as exc:
        return [Finding(ERROR, "catalog-invalid", None, str(exc),
                        Remedy("check", note="lists every problem of the catalog"), "catalog")]
    return history_findings(catalog, entries, files, unloadable) if catalog is not None else []


def _backups(engine: Any, folder: Path, latest: tuple | None = None) -> list[Finding]:
    """The newest ``pg_dump`` file of this database in the backup folder, or a warning that there is none.

    ``latest``: the run log's newest (action, detail). Right after a restore the newest dump is its safety
    dump: restoring it would undo the restore, so it is not offered as a fix.
    """
    dumps = list_dumps(engine.url, folder, engine.ledger_schema)
    if not dumps:
        # A tenant's own dumps hold its schema alone, as apm's would (planner.engines.postgresql.backup).
        only = engine.ledger_schema if engine.tenant else ""
        return [Finding(
            WARNING, "no-backups", None,
            f"no pg_dump backup of this database is in {folder}: a bad rollback could not be undone",
            Remedy("pg-dump", (only, f"{folder}/{dump_stem(engine.url, engine.ledger_schema)}"
                                     f".$(date +%Y%m%d_%H%M%S).dump", without_password(engine.url)),
                   "the password from PGPASSWORD or ~/.pgpass"),
            "database")]
    newest = dumps[-1]
    stat = newest.stat()
    return [Finding(
        INFO, "backup", None,
        f"newest backup {newest.name}, {age_text(time.time() - stat.st_mtime)} old, {size_text(stat.st_size)} "
        f"({len(dumps)} in {folder})",
        None if latest is not None and latest[0] == "restore" and (latest[1] or "").endswith(f" is in {newest.name}") else
        Remedy("restore", (str(newest),), "one transaction under the lock, after a safety dump"),
        "database", newest)]
