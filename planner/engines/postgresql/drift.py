"""Drift on PostgreSQL: the applied migrations replayed into a scratch database on the same server.

The replay runs through the member's own engine and runner (one transaction
per step, the ledger in the same schema as the member's), in a database
made for it (``CREATE DATABASE apm_drift_<pid>_<random> TEMPLATE
template0``) and dropped afterwards, so nothing is created in the member's
database. The role therefore needs ``CREATEDB``; without it, drift is not
checked and the row says so. A tenant schema (``postgresql://.../db#tenant``)
is replayed into the same schema name, and only that schema's objects of
the live database are compared; a plain database's are ``public``, the
ledger's schema and the schemas its migrations create, never another
tenant's, and a ledger table of any schema is never compared. Lines use
``planner.schema_drift``'s words (``table tasks: column due ...``). The comparison is the migration tests' one
model (``planner.testing.pg_compare``): tables, columns (type, default,
nullability, collation, identity), constraints (primary, unique, foreign,
check), indexes, views, triggers, sequences, types and routines. Grants,
comments, ownership, statistics and data are not compared.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit, urlunsplit

from planner.schema_difference import CHANGED, EXTRA, MISSING, Difference, DriftUnchecked

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.engines.postgresql import PostgresEngine
    from planner.fleet.members import Member

#: One replay per (applied set, schema), kept for the command's life: a fleet costs one per distinct state.
_replays: dict[tuple[str, frozenset[str], str | None], tuple[Mapping, dict]] = {}


def pg_differences(member: Member, catalog: Catalog, applied: Iterable[str], *, busy_timeout: float = 30.0,
                   ledger_schema: str = "public") -> list[Difference]:
    """The drift of one PostgreSQL database (or tenant schema) from its applied migrations."""
    from planner.testing.pg_compare import capture_pg

    engine = member.engine(busy_timeout=busy_timeout, ledger_schema=ledger_schema)
    ledger = member.schema or ledger_schema
    # A database reached with --ledger-schema and its search_path on that schema is a tenant too (as
    # `url#schema` is): only its schema is its migrations' to compare, never the database's public schema.
    schema = member.schema or (ledger if engine.tenant else None)
    applied = frozenset(applied)
    with engine.session() as conn:
        live = capture_pg(conn, ledger).objects
    server = _server_key(member.real)
    key = (server, applied, schema)
    if key not in _replays:
        _replays[key] = _replay(member, catalog, applied, engine, ledger, schema)
    expected, origin = _replays[key]
    owned = _owned(expected, schema, ledger)
    return _compare(expected, _only(live, owned, extensions=schema is None), origin)


def _replay(member: Member, catalog: Catalog, applied: frozenset[str], engine, ledger: str, schema: str | None):
    from planner.engines import engine_for
    from planner.events import StepFinished
    from planner.plan import APPLY, Plan, Step
    from planner.testing.pg_compare import capture_pg

    known, unknown = catalog.split_applied(applied)
    if unknown:
        raise DriftUnchecked(member.display, f"{', '.join(sorted(unknown))} applied but not in the catalog")
    plan = Plan(APPLY, tuple(Step(m, APPLY) for m in catalog.in_order(catalog.graph.topological_order(known))))
    name = f"apm_drift_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        with engine.session() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    except Exception as error:
        raise DriftUnchecked(member.display, f"no scratch database for the replay ({_first(error)}; the role "
                                             f"needs CREATEDB)") from None
    try:
        # A postgresql:// URL, so the registry's engine is PostgreSQL's (the Engine protocol has no session()).
        scratch = cast("PostgresEngine", engine_for(_with_database(member.real, name), busy_timeout=engine.busy_timeout,
                                                    ledger_schema=ledger))
        origin: dict = {}
        seen: dict = {}

        def note(event) -> None:
            if isinstance(event, StepFinished):
                with scratch.session() as look:
                    now = capture_pg(look, ledger).objects
                origin.update({k: event.step.version for k, v in now.items() if seen.get(k) != v})
                seen.clear()
                seen.update(now)

        try:
            scratch.runner(catalog=catalog, create=True).migrate(lambda _ledger: plan, on_event=note, plan=plan)
        except Exception as error:
            raise DriftUnchecked(member.display, f"replaying the applied migrations failed: {_first(error)}") \
                from None
        with scratch.session() as conn:
            made = capture_pg(conn, ledger).objects
        # The scratch database holds only what the migrations made: the schemas in it are theirs.
        expected = _only(made, _owned(made, schema, ledger), extensions=schema is None)
    finally:
        with engine.session() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return expected, origin


def _owned(objects: Mapping, schema: str | None, ledger: str) -> set[str]:
    """The schemas a member's migrations own: a tenant's own schema; for a plain database ``public`` (where
    its unqualified names go), the ledger's schema and every schema its migrations create (``objects`` is the
    replay's). Other schemas of the database, other tenants' above all, are not its migrations' to compare."""
    if schema is not None:
        return {schema}
    return {"public", ledger} | {key[2] for key in objects if key[0] == "schema"}


def _only(objects: Mapping, owned: set[str], *, extensions: bool) -> dict:
    """The objects in the ``owned`` schemas, never a ledger table (``schema_migrations``, its log) of any
    schema, nor its columns and constraints; extensions (database-wide) only for a plain database."""
    from planner.ledger import LOG_TABLE, TABLE

    schemas = {key[2] for key in objects if key[0] == "schema"}

    def schema_of(qualified: str) -> str:
        # Names outside ``public`` are shown qualified (``tenant_a.tasks``), ``public``'s are not.
        head = qualified.split("(", 1)[0]
        prefix = head.split(".", 1)[0] if "." in head else ""
        return prefix if prefix in schemas else "public"

    def ledger_table(qualified: str) -> bool:
        return qualified.rsplit(".", 1)[-1] in (TABLE, LOG_TABLE)

    kept: dict = {}
    for key, value in objects.items():
        kind, owner, name = key
        if kind == "schema":
            mine = name in owned
        elif kind == "extension":
            mine = extensions
        elif kind == "table" or owner:
            table = owner or name
            mine = not ledger_table(table) and schema_of(table) in owned
        else:
            mine = schema_of(name) in owned
        if mine:
            kept[key] = value
    return kept


def _compare(expected: Mapping, live: Mapping, origin: Mapping) -> list[Difference]:
    from planner.testing.pg_compare import PART_KINDS, SHOWN_KINDS, describe_key

    if expected == live:
        return []
    changed = sorted((k for k in expected.keys() | live.keys() if expected.get(k) != live.get(k)),
                     key=lambda k: (k[0] != "table", k))
    tables_then = {k[2] for k in expected if k[0] == "table"}
    tables_now = {k[2] for k in live if k[0] == "table"}
    whole = (tables_then ^ tables_now)
    out: list[Difference] = []
    for key in changed:
        kind, owner, name = key
        if kind in PART_KINDS and owner in whole:
            continue  # a table that appeared or vanished is one line, not one per column
        old, new = expected.get(key), live.get(key)
        what = describe_key(key, old if old is not None else new or "")
        # SQLite's words (``planner.schema_drift``): a table's part is named after its table, so the same hand
        # change reads the same on either engine.
        line = f"table {owner}: {'column ' + name if kind == 'column' else what}" if kind in PART_KINDS else what
        by = f" ({origin[key]})" if key in origin else ""
        if old is None:
            out.append(Difference(what, EXTRA, f"{line} is in the database, not in its migrations"))
        elif new is None:
            out.append(Difference(what, MISSING, f"{line}{by} is missing from the database"))
        elif kind in SHOWN_KINDS:
            out.append(Difference(what, CHANGED, f"{line} is {new} in the database, {old} in its migrations{by}"))
        else:
            out.append(Difference(what, CHANGED, f"{line} differs from its migrations{by}"))
    return out


def _with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (its other parameters, a tenant's search_path too, kept)."""
    if url.lower().startswith(("postgresql://", "postgres://")):
        return urlunsplit(urlsplit(url)._replace(path="/" + name))
    if re.search(r"\bdbname\s*=", url):
        return re.sub(r"\bdbname\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", f"dbname={name}", url)
    return f"{url} dbname={name}"


def _server_key(url: str) -> str:
    from planner.urls import without_password

    return without_password(url).split("/")[2] if "://" in url else without_password(url)


def _first(error: BaseException) -> str:
    from planner.urls import redact

    text = str(error).strip().splitlines()
    return redact(text[0] if text else type(error).__name__)


def replays_made() -> int:
    """How many replays this process made (a fleet in one state needs one)."""
    return len(_replays)


