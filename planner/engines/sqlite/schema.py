"""SQLite's schema read into ``planner.schema.Schema``: ``sqlite_master`` and the pragmas, in five queries.

Each pragma is read as a table-valued function joined with ``sqlite_master``
(``pragma_table_xinfo(m.name)``), so a schema of any size costs the same five
statements: objects, columns, foreign keys, UNIQUE / PRIMARY KEY constraints
(the automatic indexes behind them, which are the constraint's, not
indexes of their own), and, when asked, row counts. The stairway reads a
schema four times per migration, so this stays cheap. SQLite's internals
(``sqlite_%``) and the ledger's tables are left out, with their indexes and
triggers. CHECK constraints and COLLATE clauses, which no pragma gives, are
read from the table's SQL with the project's tokenizer (``clauses``).

``broken_objects`` is here as well: views and triggers that no longer
compile, which only SQLite lets exist; and the two readings drift makes:
``file_schema`` (a live file, read-only) and ``replayed_schema`` (what the
applied migrations make, replayed in memory).
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from planner.engines.sqlite.database import read_only_connection
from planner.engines.sqlite.sql import compile_only, parse_create_table, table_xinfo, tokens
from planner.errors import PlanError
from planner.schema import (LEDGER_TABLES, Column, Constraint, DriftUnchecked, ForeignKey, Replay, Schema, Table,
                            replay_failed)
from planner.sql import quote_identifier

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.plan import Plan

_USER = ("{m}.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND {m}.tbl_name NOT IN ("
         + ", ".join(f"'{t}'" for t in LEDGER_TABLES) + ")")
_OBJECTS = f"SELECT type, name, sql FROM sqlite_master m WHERE {_USER.format(m='m')} ORDER BY rowid"
_TABLES = f"sqlite_master m WHERE m.type = 'table' AND {_USER.format(m='m')}"
_COLUMNS = (f'SELECT m.name, p.name, p.type, p."notnull", p.dflt_value, p.pk, p.hidden '
            f"FROM {_TABLES.replace('WHERE', ', pragma_table_xinfo(m.name) p WHERE')} ORDER BY m.rowid, p.cid")
_FOREIGN_KEYS = (f'SELECT m.name, f.id, f.seq, f."table", f."from", f."to", f.on_update, f.on_delete, f."match" '
                 f"FROM {_TABLES.replace('WHERE', ', pragma_foreign_key_list(m.name) f WHERE')}")
_KEYS = (f"SELECT m.name, i.name, i.origin, c.name "
         f"FROM {_TABLES.replace('WHERE', ', pragma_index_list(m.name) i, pragma_index_info(i.name) c WHERE')} "
         f"AND i.origin IN ('u', 'pk') ORDER BY m.name, i.name, c.seqno")
_ORIGINS = {"u": "unique constraint", "pk": "primary key"}


#: A table's details by (name, SQL): SQLite derives its columns and keys from its SQL alone, so a table read once
#: is read for good. The stairway reads a schema four times a migration and a fleet's drift the same schema on
#: every database; this keeps each read at one query for what did not change.
_DETAILS: dict[tuple[str, str], Table] = {}
_DETAILS_KEPT = 4096
#: More unknown tables than this are read with one query per pragma for all tables, not three per table.
_ONE_BY_ONE = 8


def read_schema(conn: sqlite3.Connection, *, count_rows: bool = False) -> Schema:
    """The schema of ``conn`` (and, with ``count_rows``, each table's row count) in one consistent read.

    One query when every table's SQL was seen before and rows are not
    counted (a fleet's drift reads a thousand such schemas). Otherwise, when
    ``conn`` is not inside a transaction, the reads are wrapped in one, so a
    writer on another connection cannot slip a change between them.
    """
    cursor = conn.cursor()
    cursor.row_factory = None  # a migration may have set row_factory on a shared connection
    objects = cursor.execute(_OBJECTS).fetchall()
    listed = [(name, sql or "") for kind, name, sql in objects if kind == "table"]
    if count_rows or any(key not in _DETAILS for key in listed):
        own_transaction = not conn.in_transaction
        if own_transaction:
            cursor.execute("BEGIN")
        try:
            if own_transaction:  # read again inside the transaction: what the pragmas will describe
                objects = cursor.execute(_OBJECTS).fetchall()
                listed = [(name, sql or "") for kind, name, sql in objects if kind == "table"]
            if len(_DETAILS) > _DETAILS_KEPT:
                _DETAILS.clear()  # before choosing what to read: every table then read again
            unknown = [name for name, sql in listed if (name, sql) not in _DETAILS]
            if unknown:
                _learn(cursor, objects, unknown)
            tables = _known(listed)
            if count_rows:
                tables = {name: replace(t, rows=_count(cursor, name)) for name, t in tables.items()}
        finally:
            if own_transaction and conn.in_transaction:
                cursor.execute("COMMIT")
    else:
        tables = _known(listed)
    return _schema(tables, objects)


def known_schema(rows: list[Any]) -> Schema | None:
    """The schema ``sqlite_master``'s ``rows`` (type, name, tbl_name, sql) describe, when each table's SQL was
    read before (a fleet's drift: each file's objects read with its ledger); ``None`` when a table must be read."""
    objects = [(kind, name, sql) for kind, name, table, sql in rows  # the user's, as ``_USER`` keeps them
               if not name.lower().startswith("sqlite_") and table not in LEDGER_TABLES]
    listed = [(name, sql or "") for kind, name, sql in objects if kind == "table"]
    if any(key not in _DETAILS for key in listed):
        return None
    return _schema(_known(listed), objects)


def _schema(tables: dict[str, Table], objects: list[Any]) -> Schema:
    named = {kind: {name: sql or "" for k, name, sql in objects if k == kind and (sql or kind != "index")}
             for kind in ("index", "trigger", "view")}
    return Schema(tables, named["index"], named["trigger"], named["view"])


def _known(listed: list[tuple[str, str]]) -> dict[str, Table]:
    return {name: _DETAILS.get((name, sql)) or Table(name, sql, ()) for name, sql in listed}


def _learn(cursor: sqlite3.Cursor, objects: list[Any], unknown: list[str]) -> None:
    """Read the pragmas of the ``unknown`` tables into ``_DETAILS``."""
    rows: tuple[list[Any], list[Any], list[Any]] | None = None
    if len(unknown) > _ONE_BY_ONE:
        try:
            rows = (cursor.execute(_COLUMNS).fetchall(), cursor.execute(_FOREIGN_KEYS).fetchall(),
                    cursor.execute(_KEYS).fetchall())
        except sqlite3.Error:  # a virtual table whose module this SQLite lacks: read the tables one by one
            rows = None
    if rows is None:
        rows = _one_by_one(cursor, unknown)
    wanted = set(unknown)
    for name, table in _tables(objects, *rows).items():
        if name in wanted:
            _DETAILS[(name, table.sql)] = table


def _count(cursor: sqlite3.Cursor, table: str) -> int | None:
    try:
        return cursor.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)}").fetchone()[0]
    except sqlite3.Error:  # a virtual table whose module is missing cannot be counted
        return None


def _one_by_one(cursor: sqlite3.Cursor, tables: list[str]) -> tuple[list[Any], list[Any], list[Any]]:
    columns: list[Any] = []
    foreign_keys: list[Any] = []
    keys: list[Any] = []
    for table in tables:
        for query, into in ((_COLUMNS, columns), (_FOREIGN_KEYS, foreign_keys), (_KEYS, keys)):
            try:
                into += cursor.execute(query.replace("m.type = 'table'", "m.type = 'table' AND m.name = ?"),
                                       (table,)).fetchall()
            except sqlite3.Error:
                pass  # this table's module is missing: its SQL is all the model gets
    return columns, foreign_keys, keys


def _tables(objects: list[Any], columns: list[Any], foreign_keys: list[Any], keys: list[Any]) -> dict[str, Table]:
    by_table: dict[str, list[Column]] = {}
    for table, name, type_, notnull, default, pk, hidden in columns:
        by_table.setdefault(table, []).append(Column(name, type_ or "", bool(notnull), default, int(pk), int(hidden)))
    grouped: dict[tuple[str, int], list[Any]] = {}
    for row in foreign_keys:
        grouped.setdefault((row[0], row[1]), []).append(row)
    fks: dict[str, set[ForeignKey]] = {}
    for (table, _), rows in grouped.items():
        rows.sort(key=lambda row: row[2])  # by seq: the key's column order
        first = rows[0]
        fks.setdefault(table, set()).add(ForeignKey(
            tuple(str(row[4]).lower() for row in rows), str(first[3]).lower(),
            tuple(None if row[5] is None else str(row[5]).lower() for row in rows), first[6], first[7], first[8]))
    indexed: dict[tuple[str, str, str], list[str]] = {}
    for table, index, origin, column in keys:
        indexed.setdefault((table, index, origin), []).append(str(column).lower())
    constraints: dict[str, set[Constraint]] = {}
    for (table, _, origin), names in indexed.items():
        constraints.setdefault(table, set()).add(Constraint(_ORIGINS[origin], tuple(names)))  # type: ignore[arg-type]
    tables = {}
    for kind, name, sql in objects:
        if kind != "table":
            continue
        columns = by_table.get(name, [])
        collations, checks, rest, parts = clauses(sql or "", [c.name for c in columns])
        tables[name] = Table(name, sql or "", tuple(replace(c, collation=collations.get(c.name.lower(), ""))
                                                    for c in columns),
                             None, frozenset(fks.get(name, ())), frozenset(constraints.get(name, set()) | checks),
                             rest=rest, parts=parts)
    return tables


#: Words that start a table constraint in a ``CREATE TABLE``'s column list (anything else starts a column).
_TABLE_CONSTRAINT = {"constraint", "check", "primary", "unique", "foreign"}
_LITERAL = {"null", "true", "false", "current_time", "current_date", "current_timestamp"}


def clauses(sql: str, columns: list[str]) -> tuple[dict[str, str], frozenset[Constraint], str,
                                                   tuple[tuple[str, str], ...]]:
    """What a table's SQL says that its pragmas do not: each column's COLLATE (lower-cased name -> upper-cased
    collation, BINARY being the default), its CHECK constraints, the rest of the SQL (``Table.rest``), and that
    rest by part (``Table.parts``: each column definition or table constraint, then what follows the list).

    Read with the project's tokenizer, so case, quoting and spacing are no difference: the rest is the tokens
    joined by one space, names lower-cased, without the CHECK and COLLATE clauses (compared as constraints and
    columns) and with a literal default's parentheses dropped (``DEFAULT (0)`` is ``DEFAULT 0``, as the
    pragma already says it). A table with no column list (a virtual table) is its whole SQL evened out.
    """
    try:
        created = parse_create_table(sql)
    except ValueError:
        return {}, frozenset(), " ".join(_word(t) for t in tokens(sql)), ()
    every = tokens(sql)
    known = {c.lower(): c.lower() for c in columns}
    collations: dict[str, str] = {}
    checks: set[Constraint] = set()
    skipped: set[int] = set()  # indexes of the tokens left out of the rest
    at_token = 0
    spans: list[tuple[list[int], int, int]] = []
    for start, end in created.definitions():  # in order, as the tokens are: one pass over them
        while at_token < len(every) and every[at_token].start < start:
            at_token += 1
        part = []
        while at_token < len(every) and every[at_token].start < end:
            part.append(at_token)
            at_token += 1
        spans.append((part, start, end))
        if not part:
            continue
        first = every[part[0]]
        column = first.name if first.kind == "quoted" or first.name not in _TABLE_CONSTRAINT else None
        j = 0
        while j < len(part):
            token = every[part[j]]
            word = token.name if token.kind == "word" else None
            if word == "constraint" and j + 2 < len(part) and every[part[j + 2]].name == "check":
                name, at = every[part[j + 1]].unquoted, j
                j += 2
                token, word = every[part[j]], "check"
            else:
                name, at = "", j
            if word == "check" and j + 1 < len(part) and every[part[j + 1]].text == "(":
                close = _closing(every, part, j + 1)
                inside = [every[i] for i in part[j + 2:close]]
                reads = tuple(dict.fromkeys(known[t.name] for t in inside if t.name in known))
                shown = "CHECK " + " ".join(sql[every[part[j + 1]].start:every[part[close]].end].split())
                checks.add(Constraint("check constraint", reads, "check ( " + " ".join(map(_word, inside)) + " )",
                                      name=name, shown=shown))
                skipped.update(part[at:close + 1])
                j = close + 1
            elif word == "collate" and column is not None and j + 1 < len(part):
                collation = every[part[j + 1]].unquoted.upper()
                collations[column] = "" if collation == "BINARY" else collation
                skipped.update(part[j:j + 2])
                j += 2
            elif word == "default" and j + 1 < len(part) and every[part[j + 1]].text == "(":
                close = _closing(every, part, j + 1)
                inside = [every[i] for i in part[j + 2:close]]
                literal = (len(inside) == 1 and (inside[0].kind in ("number", "string") or inside[0].name in _LITERAL)
                           or len(inside) == 2 and inside[0].text in "+-" and inside[1].kind == "number")
                if literal:
                    skipped.update((part[j + 1], part[close]))
                j = close + 1
            else:
                j += 1
    closed = created.body_span[1] + 1  # just past the column list's closing parenthesis
    parts = [(" ".join(_word(every[i]) for i in part if i not in skipped), " ".join(sql[start:end].split()))
             for part, start, end in spans]
    parts.append((" ".join(_word(t) for t in every if t.start >= closed), " ".join(sql[closed:].split())))
    return (collations, frozenset(checks), " ".join(_word(t) for i, t in enumerate(every) if i not in skipped),
            tuple(parts))


def _closing(every: tuple[Any, ...], part: list[int], opening: int) -> int:
    """The place in ``part`` of the parenthesis closing the one at ``part[opening]``."""
    depth = 0
    for j in range(opening, len(part)):
        text = every[part[j]].text if every[part[j]].kind == "punct" else ""
        depth += {"(": 1, ")": -1}.get(text, 0)
        if depth == 0:
            return j
    return len(part) - 1


def _word(token: Any) -> str:
    """A token as compared: a name lower-cased and unquoted, anything else (a string, a number) as written."""
    return token.name if token.name is not None else token.text


def broken_objects(conn: sqlite3.Connection) -> dict[str, str]:
    """Each view and trigger that no longer compiles, with SQLite's reason: ``{"view v": "no such table: x"}``.

    SQLite accepts ``CREATE VIEW`` over a table that is not there, and a
    ``DROP TABLE`` or a rebuild leaves the views and triggers that used it in
    place; they fail only when something compiles them, which may be a later
    migration's ``ALTER TABLE``. Preparing ``SELECT * FROM v LIMIT 0`` compiles
    a view; ``EXPLAIN`` of a statement that fires a trigger (nothing runs)
    compiles the trigger. When a statement fires several triggers and fails,
    each is compiled alone, the others dropped inside a savepoint undone at once.
    """
    found: dict[str, str] = {}
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type IN ('view', 'trigger') "
                        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type DESC, name").fetchall()
    for kind, name, _, _ in rows:
        if kind == "view":
            try:
                conn.execute(f"SELECT * FROM main.{quote_identifier(name)} LIMIT 0").fetchall()
            except sqlite3.Error as exc:
                found[f"view {name}"] = str(exc)
    triggers = [(name, table, sql or "") for kind, name, table, sql in rows if kind == "trigger"]
    for name, table, sql in triggers:
        if f"view {table}" in found:
            continue  # its view is broken already: that is the news
        event = next((t.name for t in tokens(sql) if t.name in ("insert", "update", "delete")), None)
        columns = [column for column, *_ in table_xinfo(conn, table)]
        quoted = quote_identifier(table)
        statement = {"insert": f"INSERT INTO main.{quoted} DEFAULT VALUES",
                     "delete": f"DELETE FROM main.{quoted}",
                     "update": f"UPDATE main.{quoted} SET " + ", ".join(
                         f"{quote_identifier(c)} = {quote_identifier(c)}" for c in columns)}.get(event or "")
        if statement is None or (event == "update" and not columns):
            continue
        siblings = [other for other, on, _ in triggers if on.lower() == table.lower() and other != name]
        try:
            compile_only(conn, statement)
            continue
        except sqlite3.Error as exc:
            reason = str(exc)
        if siblings:  # which of the table's triggers is it? compile this one alone
            conn.execute("SAVEPOINT apm_compiles")
            try:
                for other in siblings:
                    conn.execute(f"DROP TRIGGER main.{quote_identifier(other)}")
                compile_only(conn, statement)
                reason = ""
            except sqlite3.Error as exc:
                reason = str(exc)
            finally:
                conn.execute("ROLLBACK TO apm_compiles")
                conn.execute("RELEASE apm_compiles")
        if reason:
            found[f"trigger {name}"] = reason
    return found


def replayed_schema(catalog: Catalog, plan: Plan) -> tuple[Schema, dict[tuple[str, str], str]]:
    """The schema ``plan`` makes on an empty database in memory, and which step last made or changed each object.

    The steps run through the session that runs them for real, in one
    transaction; step by step when a ``transactional = False`` step (VACUUM)
    cannot run inside one (harmless on a scratch database in memory). The
    origins are keyed as ``Schema.objects`` keys them. Whatever a migration
    raises propagates.
    """
    # start-up time: planner.engines.sqlite.schema runs without planner.engines.sqlite.runner until replayed_schema() needs it
    from planner.engines.sqlite.runner import SQLiteSession

    # start-up time: planner.engines.sqlite.schema runs without planner.events until replayed_schema() needs it
    from planner.events import StepFinished

    origin: dict[tuple[str, str], str] = {}
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        before = read_schema(conn).objects()
        whole = all(step.migration.transactional for step in plan.steps)
        session = SQLiteSession(conn, plan, path=Path(":memory:"), busy_timeout=0, catalog=catalog, atomic=whole)
        for event in session.atomic() if whole else session.stepwise():
            if isinstance(event, StepFinished):
                now = read_schema(conn).objects()  # inside the transaction: what this step made or changed
                origin.update({key: event.step.version for key, value in now.items() if before.get(key) != value})
                before = now
        return read_schema(conn), origin


def replay(catalog: Catalog, applied: frozenset[str], display: str) -> Replay:
    """The ``applied`` migrations run, in plan order, on an empty in-memory database: its schema and origins.

    ``DriftUnchecked`` (naming the database as ``display``) when a version is not in the catalog or a
    migration fails in the replay: its drift cannot be told then.
    """
    # start-up time: planner.engines.sqlite.schema runs without planner.plan until replay() needs it
    from planner.plan import APPLY, Plan, Step

    known, unknown = catalog.split_applied(applied)
    if unknown:
        raise DriftUnchecked(display, f"{', '.join(sorted(unknown))} applied but not in the catalog")
    order = catalog.graph.topological_order(known)
    plan = Plan(APPLY, tuple(Step(m, APPLY) for m in catalog.in_order(order)))
    try:
        state, origin = replayed_schema(catalog, plan)
    except PlanError:
        raise
    except Exception as error:
        # What failed, without the runner's "the whole plan was rolled back": that was the scratch database's.
        first = getattr(error, "failure", None) or (str(error).splitlines()[0] if str(error) else repr(error))
        raise DriftUnchecked(display, replay_failed(first)) from error
    return Replay(state, origin)


def file_schema(path: Path, busy_timeout: float, *, known_good: bool = False) -> Schema:
    """The schema of a SQLite file, read through a read-only connection (nothing written).

    ``known_good``: the file was just read as a SQLite database (a fleet's
    status did), so its header and first read need not be checked again:
    one open on a ``mode=ro`` connection instead of three statements.
    """
    if known_good:
        try:
            with closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=busy_timeout,
                                         isolation_level=None)) as quick:
                return read_schema(quick)
        except sqlite3.Error:
            pass  # changed since: the careful open below says what is wrong
    with closing(read_only_connection(path, busy_timeout)) as conn:
        return read_schema(conn)


def table_fingerprints(path: Path) -> dict[str, tuple[tuple[str, ...], int, str]]:
    """Each user table's (columns, row count, hash of its rows): enough for squash to see whether a migration
    changed rows (the schema alone cannot say)."""
    with closing(sqlite3.connect(path)) as conn:
        found = {}
        for name in read_schema(conn).tables:
            cursor = conn.execute(f"SELECT * FROM {quote_identifier(name)}")
            columns = tuple(d[0] for d in cursor.description)
            digest, count = hashlib.sha256(), 0
            for row in cursor:
                digest.update(repr(row).encode())
                count += 1
            found[name] = (columns, count, digest.hexdigest())
        return found
