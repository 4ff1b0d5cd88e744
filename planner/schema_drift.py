"""Drift: a live schema against what its applied migrations make, one line per difference.

The migrations the ledger records as applied are replayed, in plan order,
into a scratch database (SQLite in memory), through the same session that
runs them for real (``planner.engines.sqlite.session``, one transaction).
The replay's schema and the live one are compared with the project's one
schema model: ``planner.testing.compare`` reads each side's objects
(``sqlite_master``) and, for tables whose SQL differs, their columns
(``planner.schema``: type, default, nullability, primary key), foreign
keys, and UNIQUE / PRIMARY KEY constraints; what remains of a table's SQL
(CHECK, COLLATE) is compared as normalized text. Indexes, triggers and
views are compared by their SQL.

Not compared: data (migrations that move data replay on empty tables),
``sqlite_sequence`` and SQLite's other internal tables, statistics
(``sqlite_stat*``), the ledger's own tables, and pending migrations (a
database that is behind is not drifted; only what it says it applied is
replayed). Grants do not exist in SQLite.

One replay serves every database in the same state: ``DriftChecker`` keeps
the replays by applied set, so a fleet costs about one replay per distinct
state, plus one read of each live schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from planner.errors import PlanError
from planner.schema_difference import CHANGED, EXTRA, MISSING, Difference, DriftUnchecked

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.fleet.members import Member
    from planner.fleet.status import MemberStatus
    from planner.testing.compare import SchemaState

@dataclass(frozen=True)
class Replay:
    """The schema the applied migrations make, and which migration last made or changed each object."""

    state: SchemaState
    #: (type, name) -> the version that created or last changed it.
    origin: dict[tuple[str, str], str]


def replay(catalog: Catalog, applied: Iterable[str]) -> Replay:
    """Run the ``applied`` migrations, in plan order, on an empty in-memory database; its schema and origins."""
    from planner.engines.sqlite.session import SQLiteSession
    from planner.events import StepFinished
    from planner.plan import APPLY, Plan, Step
    from planner.testing.compare import capture

    known, unknown = catalog.split_applied(applied)
    if unknown:
        raise DriftUnchecked("the database", f"{', '.join(sorted(unknown))} applied but not in the catalog")
    order = catalog.graph.topological_order(known)
    plan = Plan(APPLY, tuple(Step(m, APPLY) for m in catalog.in_order(order)))
    origin: dict[tuple[str, str], str] = {}
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        before = capture(conn).objects
        session = SQLiteSession(conn, plan, path=Path(":memory:"), busy_timeout=0, catalog=catalog, atomic=True)
        try:
            for event in session.atomic():
                if isinstance(event, StepFinished):
                    now = capture(conn).objects  # inside the transaction: what this step made or changed
                    origin.update({key: event.step.version for key, sql in now.items() if before.get(key) != sql})
                    before = now
        except PlanError:
            raise
        except Exception as error:
            raise DriftUnchecked("the database", f"replaying the applied migrations failed: "
                                                 f"{str(error).splitlines()[0] if str(error) else error!r}") from error
        state = capture(conn)
    return Replay(state, origin)


def live_state(path: Path | str, busy_timeout: float = 30.0, *, known_good: bool = False) -> SchemaState:
    """The live schema of a SQLite file, read through a read-only connection (nothing written).

    ``known_good``: the file was just read as a SQLite database (a fleet's
    status did), so its header and first read need not be checked again:
    one statement on a ``mode=ro`` connection instead of three.
    """
    from planner.engines.sqlite.database import read_only_connection
    from planner.testing.compare import capture

    if known_good:
        from urllib.parse import quote

        try:
            with closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=busy_timeout,
                                         isolation_level=None)) as quick:
                return capture(quick)
        except sqlite3.Error:
            pass  # changed since: the careful open below says what is wrong
    conn = read_only_connection(Path(path), busy_timeout)
    try:
        return capture(conn)
    finally:
        conn.close()


def compare(expected: Replay, live: SchemaState) -> list[Difference]:
    """Every difference between what the migrations make (``expected``) and the live schema."""
    from planner.testing import compare as model

    made, found = expected.state.objects, live.objects
    if made == found:
        return []
    changed = {key for key in made.keys() | found.keys() if made.get(key) != found.get(key)}
    tables = sorted(name for kind, name in changed if kind == "table")
    differences = _tables({t: made[("table", t)] for t in tables if ("table", t) in made},
                          {t: found[("table", t)] for t in tables if ("table", t) in found}, expected.origin)
    for kind in ("index", "trigger", "view"):
        for name in sorted(name for k, name in changed if k == kind):
            old, new = made.get((kind, name)), found.get((kind, name))
            what = f"{kind} {name}"
            if old is None:
                differences.append(Difference(what, EXTRA, f"{what} is in the database, not in its migrations"))
            elif new is None:
                differences.append(Difference(what, MISSING, f"{what}{_by(expected.origin, kind, name)} is "
                                                             f"missing from the database"))
            elif model.comparable_sql(old) != model.comparable_sql(new):
                differences.append(Difference(what, CHANGED, f"{what} differs from its migrations"
                                                             f"{_by(expected.origin, kind, name)}: the database "
                                                             f"has {' '.join(new.split())}"))
    return differences


def _by(origin: dict[tuple[str, str], str], kind: str, name: str) -> str:
    version = origin.get((kind, name))
    return f" ({version})" if version else ""


def _tables(made: dict[str, str], found: dict[str, str], origin: dict[tuple[str, str], str]) -> list[Difference]:
    """Tables whose SQL differs, compared column by column, key by key (``planner.testing.compare``)."""
    from planner.schema import diff
    from planner.testing import compare as model

    out: list[Difference] = []
    try:
        expected, actual = model.materialize(made), model.materialize(found)
    except sqlite3.Error:  # a virtual table whose module this SQLite lacks: the SQL text is all there is
        for table in sorted(made.keys() | found.keys()):
            out.append(Difference(f"table {table}", CHANGED, f"table {table} differs from its migrations"
                                                             f"{_by(origin, 'table', table)}"))
        return out
    explained: set[str] = set()
    for change in diff(expected.snapshot, actual.snapshot):
        table = change.table or change.name
        by = _by(origin, "table", table)
        if change.kind == "table" and change.action == "added":
            out.append(Difference(f"table {table}", EXTRA, f"table {table} is in the database, not in its "
                                                           f"migrations"))
        elif change.kind == "table" and change.action == "removed":
            out.append(Difference(f"table {table}", MISSING, f"table {table}{by} is missing from the database"))
        elif change.kind == "column":
            explained.add(table)
            what = f"column {table}.{change.name}"
            if change.action == "added":
                out.append(Difference(what, EXTRA, f"table {table}: column {change.name} is in the database, "
                                                   f"not in its migrations"))
            elif change.action == "removed":
                out.append(Difference(what, MISSING, f"table {table}: column {change.name}{by} is missing from "
                                                     f"the database"))
            else:
                out.append(Difference(what, CHANGED, f"table {table}: column {change.name} is {change.after} in "
                                                     f"the database, {change.before} in its migrations{by}"))
    for table in sorted(expected.snapshot.tables.keys() & actual.snapshot.tables.keys()):
        by = _by(origin, "table", table)
        pairs = [(model.describe_foreign_key, expected.foreign_keys, actual.foreign_keys),
                 (model.describe_constraint, expected.constraints, actual.constraints)]
        for describe, want, have in pairs:
            for key in sorted(want.get(table, frozenset()) - have.get(table, frozenset()), key=repr):
                explained.add(table)
                what = describe(table, key)  # type: ignore[operator]
                out.append(Difference(f"table {table}", MISSING, f"table {table}: {what}{by} is missing from the "
                                                                 f"database"))
            for key in sorted(have.get(table, frozenset()) - want.get(table, frozenset()), key=repr):
                explained.add(table)
                what = describe(table, key)  # type: ignore[operator]
                out.append(Difference(f"table {table}", EXTRA, f"table {table}: {what} is in the database, not in "
                                                               f"its migrations"))
        if table not in explained and model.comparable_sql(made[table]) != model.comparable_sql(found[table]):
            was = [c.name for c in expected.snapshot.tables[table].columns]
            now = [c.name for c in actual.snapshot.tables[table].columns]
            why = f"its columns are in another order ({', '.join(now)}; the migrations make {', '.join(was)})" \
                if was != now and sorted(was) == sorted(now) else "its SQL differs beyond columns and keys (CHECK " \
                                                                  "or COLLATE clauses?)"
            out.append(Difference(f"table {table}", CHANGED, f"table {table} differs from its migrations{by}: "
                                                             f"{why}"))
    return out


class DriftChecker:
    """Drift of many databases, one replay per distinct applied set (``apm fleet status --drift``)."""

    def __init__(self, catalog: Catalog, *, busy_timeout: float = 30.0, ledger_schema: str = "public"):
        self.catalog, self.busy_timeout, self.ledger_schema = catalog, busy_timeout, ledger_schema
        self._replays: dict[frozenset[str], Replay] = {}
        self.replays = 0  # how many replays ran: a fleet in one state needs one

    def expected(self, applied: Iterable[str]) -> Replay:
        key = frozenset(applied)
        found = self._replays.get(key)
        if found is None:
            found = self._replays[key] = replay(self.catalog, key)
            self.replays += 1
        return found

    def differences(self, member: Member, status: MemberStatus) -> list[Difference] | None:
        """``member``'s drift given its status (its applied set); ``None`` where it cannot be compared here."""
        if status.applied_versions is None:
            return None
        return self.of(member, status.applied_versions, known_good=True)

    def of(self, member: Member, applied: Iterable[str], *, known_good: bool = False) -> list[Difference]:
        """``member``'s drift from the migrations ``applied`` (its ledger's set), on either engine."""
        if member.on_server:
            from planner.engines.postgresql.drift import pg_differences

            return pg_differences(member, self.catalog, applied, busy_timeout=self.busy_timeout,
                                  ledger_schema=self.ledger_schema)
        try:
            expected = self.expected(applied)
        except DriftUnchecked as unchecked:
            raise DriftUnchecked(member.display, unchecked.reason) from None
        return compare(expected, live_state(member.real, self.busy_timeout, known_good=known_good))


def drift(catalog: Catalog, path: Path | str, applied: Iterable[str], *, busy_timeout: float = 30.0) -> list[Difference]:
    """One SQLite database's drift (``apm migrate drift``)."""
    try:
        expected = replay(catalog, applied)
    except DriftUnchecked as unchecked:
        raise DriftUnchecked(str(path), unchecked.reason) from None
    return compare(expected, live_state(path, busy_timeout))
