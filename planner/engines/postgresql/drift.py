"""Drift on PostgreSQL: the applied migrations replayed into a scratch database on the same server.

The replay runs through the database's own engine and runner (one transaction
per step, the ledger in the same schema as the database's), in a database
made for it (``CREATE DATABASE apm_drift_<host>_<pid>_<random> TEMPLATE
template0``) and dropped afterwards, so nothing is created in the database
itself. It is reached from the parsed connection string (``on_database``),
never by editing the URL's text, and the replay runs only once
``current_database()`` says it is there: a ``?dbname=`` or a ``#`` in a
password once sent it into the live database. One a killed drift left is
dropped by the next drift on the same host (``_drop_abandoned``); every one
left, of any host, is reported by the doctor (``scratch_databases``). The role
therefore needs ``CREATEDB``; without it, drift is not checked and the row
says so. A tenant whose schema is not made yet has nothing to compare. A tenant schema (``postgresql://.../db#tenant``)
is replayed into the same schema name, and only that schema's objects of
the live database are compared; a plain database's are ``public``, the
ledger's schema and the schemas its migrations create, never another
tenant's, and a ledger table of any schema is never compared. Both sides are
read into the one schema model (``planner.engines.postgresql.schema``) and
compared, and said, by ``planner.schema.compare``, as SQLite's are:
tables, columns (type, default, nullability, collation, identity),
constraints (primary, unique, foreign, check), indexes, views, triggers,
sequences, types and routines. Grants, comments, ownership, statistics and
data are not compared.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from planner.backups import running
from planner.engines.postgresql.connection import on_database, server_identity
from planner.engines.postgresql.schema import own_schemas, read_schema
from planner.events import StepFinished
from planner.ledger import LOG_TABLE, TABLE
from planner.plan import APPLY, Plan, Step
from planner.schema import Schema
from planner.schema import Difference, DriftUnchecked, Replay, compare, replay_failed
from planner.urls import redact

if TYPE_CHECKING:
    from planner.catalog import Catalog

def differences(engine: Any, catalog: Catalog, applied: Iterable[str],
                replays: dict[Hashable, Replay]) -> list[Difference]:
    """The drift of one PostgreSQL database (or tenant schema) from its applied migrations; ``replays`` keeps
    one replay per (server, applied set, schema) for the caller's life.

    ``engine``: the database's ``planner.engines.postgresql.PostgresEngine`` (its ``session()``, URL and
    ledger schema; the scratch database's engine is made as ``type(engine)``).
    """
    ledger = engine.ledger_schema
    applied = frozenset(applied)
    with engine.session() as conn:
        if not applied and _tenant_not_made(conn, ledger):
            # A new tenant (or a typo): no schema, so no object and nothing applied; its search_path falls
            # through to ``public``, whose objects are no tenant's drift. It is behind, never drifted.
            return []
        # Only the member's own schemas are read: pg_get_viewdef waits for another tenant's tables' locks.
        tenant = own_schemas(conn, ledger)
        live = read_schema(conn, ledger)
    # A database reached with --ledger-schema and its search_path on that schema is a tenant too (as
    # `url#schema` is): only its schema is its migrations' to compare, never the database's public schema.
    schema = ledger if tenant else None
    # The server as libpq reaches it (host or socket folder, port, user, options) and the catalog: two servers
    # behind two sockets share a display string (``app@``), never a replay.
    key = (server_identity(engine.url), str(catalog.directory), applied, schema)
    if key not in replays:
        replays[key] = _replay(engine, catalog, applied, ledger, schema)
    expected = replays[key]
    owned = _owned(expected.state, schema, ledger)
    return compare(expected, _only(live, owned, extensions=schema is None))


def _replay(engine: Any, catalog: Catalog, applied: frozenset[str], ledger: str,
            schema: str | None) -> Replay:
    known, unknown = catalog.split_applied(applied)
    if unknown:
        raise DriftUnchecked(engine.display, f"{', '.join(sorted(unknown))} applied but not in the catalog")
    plan = Plan(APPLY, tuple(Step(m, APPLY) for m in catalog.in_order(catalog.graph.topological_order(known))))
    name = f"{_PREFIX}{_HOST}_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        with engine.session() as conn:
            _drop_abandoned(conn)
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    except Exception as error:
        raise DriftUnchecked(engine.display, f"no scratch database for the replay ({_first(error)}; the role "
                                             f"needs CREATEDB)") from None
    try:
        scratch = type(engine)(on_database(engine.url, name), busy_timeout=engine.busy_timeout,
                               ledger_schema=ledger)
        with scratch.session() as conn:
            reached = conn.execute("SELECT current_database()").fetchone()[0]
        if reached != name:
            # Defence in depth: the replay runs migrations and writes a ledger; never into a live database.
            raise DriftUnchecked(engine.display, f"the scratch connection reached database {reached}, not the "
                                                 f"scratch database {name}; the replay was not run")
        origin: dict = {}
        seen: dict = {}

        def note(event) -> None:
            if isinstance(event, StepFinished):
                with scratch.session() as look:
                    now = read_schema(look, ledger).objects()
                origin.update({k: event.step.version for k, v in now.items() if seen.get(k) != v})
                seen.clear()
                seen.update(now)

        try:
            scratch.runner(catalog=catalog, create=True).migrate(lambda _ledger: plan, on_event=note, plan=plan)
        except Exception as error:
            # What failed, without the runner's "its changes were rolled back": that was the scratch database's.
            failure = getattr(error, "failure", None)
            raise DriftUnchecked(engine.display, replay_failed(redact(failure) if failure else _first(error))) \
                from None
        with scratch.session() as conn:
            made = read_schema(conn, ledger)
        # The scratch database holds only what the migrations made: the schemas in it are theirs.
        expected = _only(made, _owned(made, schema, ledger), extensions=schema is None)
    finally:
        with engine.session() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return Replay(expected, origin)


def _owned(made: Schema, schema: str | None, ledger: str) -> set[str]:
    """The schemas a member's migrations own: a tenant's own schema; for a plain database ``public`` (where
    its unqualified names go), the ledger's schema and every schema its migrations create (``made`` is the
    replay's). Other schemas of the database, other tenants' above all, are not its migrations' to compare."""
    if schema is not None:
        return {schema}
    return {"public", ledger} | {name for kind, name in made.others if kind == "schema"}


def _only(found: Schema, owned: set[str], *, extensions: bool) -> Schema:
    """The objects in the ``owned`` schemas, never a ledger table (``schema_migrations``, its log) of any
    schema; extensions (database-wide) only for a plain database."""
    schemas = {name for kind, name in found.others if kind == "schema"}

    def mine(qualified: str) -> bool:
        # Names outside ``public`` are shown qualified (``tenant_a.tasks``), ``public``'s are not.
        head = qualified.split("(", 1)[0]
        prefix = head.split(".", 1)[0] if "." in head else ""
        return (prefix if prefix in schemas else "public") in owned

    def other(kind: str, name: str) -> bool:
        return name in owned if kind == "schema" else extensions if kind == "extension" else mine(name)

    return replace(
        found,
        tables={n: t for n, t in found.tables.items() if mine(n) and n.rsplit(".", 1)[-1] not in (TABLE, LOG_TABLE)},
        indexes={n: d for n, d in found.indexes.items() if mine(n)},
        triggers={n: d for n, d in found.triggers.items() if mine(n.rsplit(" on ", 1)[-1])},
        views={n: d for n, d in found.views.items() if mine(n)},
        others={k: d for k, d in found.others.items() if other(*k)},
    )


#: Scratch databases are ``apm_drift_<host>_<pid>_<random>``: ``<host>`` (``_HOST``) says which machine's process
#: made one, so a later drift there can tell one whose process is gone (killed during its replay) from one in use.
#: Releases before the host was named made ``apm_drift_<pid>_<random>`` (``_OLDER``).
_PREFIX = "apm_drift_"
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_SCRATCH = re.compile(rf"^{_PREFIX}([0-9a-f]{{8}})_(\d+)_[0-9a-f]{{8}}$")
_OLDER = re.compile(rf"^{_PREFIX}(\d+)_[0-9a-f]{{8}}$")

#: Whose a scratch database is, as far as its name tells: this host's drift still running (or this process's),
#: this host's whose process is gone, another host's, an older release's (no host in the name), or a name of the
#: prefix in no form apm makes.
Whose = Literal["running", "gone", "other-host", "older-release", "unknown"]


@dataclass(frozen=True)
class ScratchDatabase:
    """A database on the server named as a drift's scratch database, and who is connected to it now."""

    name: str
    whose: Whose
    #: The process (on the machine that made it) named in it, when the name has one.
    pid: int | None
    #: The role that owns it: only that role (or a superuser) may drop it.
    owner: str
    #: The client sessions connected to it now (``pg_stat_activity``), and their application names.
    sessions: int
    applications: tuple[str, ...]


def scratch_databases(conn: Any) -> list[ScratchDatabase]:
    """Every database of ``conn``'s server whose name starts as a scratch database's, whoever made it.

    The one reading of the names: what the next drift here drops (``_drop_abandoned``) and what
    ``apm migrate doctor`` reports are told apart by it, never by a second copy of the pattern.
    """
    rows = conn.execute(
        "SELECT d.datname, pg_get_userbyid(d.datdba), count(a.pid), coalesce(array_agg(DISTINCT "
        "a.application_name) FILTER (WHERE a.application_name <> ''), '{}') FROM pg_database d LEFT JOIN "
        "pg_stat_activity a ON a.datid = d.oid AND a.backend_type = 'client backend' "
        "WHERE starts_with(d.datname, %s) GROUP BY d.datname, d.datdba ORDER BY 1", (_PREFIX,)).fetchall()
    return [ScratchDatabase(name, *_whose(name), owner, sessions, tuple(applications))
            for name, owner, sessions, applications in rows]


def _whose(name: str) -> tuple[Whose, int | None]:
    if match := _SCRATCH.match(name):
        pid = int(match.group(2))
        if match.group(1) != _HOST:
            return "other-host", pid
        # A pid another process took since reads as running: never dropped (nor reported) while that one runs.
        return ("running" if pid == os.getpid() or running(pid) else "gone"), pid
    if match := _OLDER.match(name):
        return "older-release", int(match.group(1))
    return "unknown", None


def _drop_abandoned(conn: Any) -> list[str]:
    """Drop the scratch databases this host's killed drift runs left (``kill -9`` skips the ``finally``); the
    names dropped. Another host's, a live process's and an older release's (no host in the name) stay: their
    owner may still be replaying (``apm migrate doctor`` reports them with the statement that drops them)."""
    dropped = []
    for scratch in scratch_databases(conn):
        if scratch.whose != "gone":
            continue
        with contextlib.suppress(Exception):  # another role's, or dropped by a drift beside us: not ours to fail on
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch.name}" WITH (FORCE)')
            dropped.append(scratch.name)
    return dropped


def _tenant_not_made(conn: Any, ledger: str) -> bool:
    """Whether ``ledger`` is a tenant's schema (first on the connection's search_path, as ``url#schema`` puts
    it) that the database does not have yet."""
    if ledger == "public":
        return False
    path, missing = conn.execute("SELECT current_setting('search_path'), NOT EXISTS "
                                 "(SELECT FROM pg_namespace WHERE nspname = %s)", (ledger,)).fetchone()
    return bool(missing) and _first_on_path(path) == ledger


def _first_on_path(setting: str) -> str:
    """The first schema of a ``search_path`` setting, as the server reads it (a quoted name as written, an
    unquoted one in lower case)."""
    text = setting.strip()
    if not text.startswith('"'):
        return text.split(",", 1)[0].strip().lower()
    name, at = [], 1
    while at < len(text):
        if text[at] == '"':
            if text[at + 1:at + 2] != '"':
                break
            at += 1
        name.append(text[at])
        at += 1
    return "".join(name)


def _first(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    # DriftUnchecked says "nothing was changed" itself: the scratch side's error saying it too would stutter.
    return redact(text[0] if text else type(error).__name__).removesuffix("; nothing was changed")
