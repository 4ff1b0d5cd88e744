"""Drift: a live schema against what its applied migrations make, one line per difference, on either engine.

The migrations the ledger records as applied are replayed, in plan order,
into a scratch database (SQLite: in memory, through the same session that
runs them for real, ``planner.engines.sqlite.schema.replayed_schema``;
PostgreSQL: ``planner.engines.postgresql.drift``), and both sides are read
into the one schema model (``planner.schema.Schema``) and compared with its
one difference function (``planner.schema.diff``): tables, columns (type,
default, nullability, primary key), foreign keys, primary key, unique and
check constraints, indexes, triggers, views, and what else the engine reads.
Each difference is said in one wording for both engines
(``planner.schema.drift_line``), naming the migration that last made or
changed the object.

Not compared: data (migrations that move data replay on empty tables),
SQLite's internal tables (``sqlite_sequence``, ``sqlite_stat*``), the
ledger's own tables, and pending migrations (a database that is behind is
not drifted; only what it says it applied is replayed). Grants, comments and
ownership are not read.

One replay serves every database in the same state: ``DriftChecker`` keeps
the replays by applied set, so a fleet costs about one replay per distinct
state, plus one read of each live schema.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from planner.errors import PlanError
from planner.schema import Schema
from planner.schema import Difference, DriftUnchecked, Replay, compare

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.fleet.members import Member
    from planner.fleet.status import MemberStatus


def replay(catalog: Catalog, applied: Iterable[str]) -> Replay:
    """Run the ``applied`` migrations, in plan order, on an empty in-memory database; its schema and origins."""
    # start-up time: planner.schema_drift runs without planner.engines.sqlite.schema until replay() needs it
    from planner.engines.sqlite.schema import replayed_schema

    # start-up time: planner.schema_drift runs without planner.plan until replay() needs it
    from planner.plan import APPLY, Plan, Step

    known, unknown = catalog.split_applied(applied)
    if unknown:
        raise DriftUnchecked("the database", f"{', '.join(sorted(unknown))} applied but not in the catalog")
    order = catalog.graph.topological_order(known)
    plan = Plan(APPLY, tuple(Step(m, APPLY) for m in catalog.in_order(order)))
    try:
        state, origin = replayed_schema(catalog, plan)
    except PlanError:
        raise
    except Exception as error:
        raise DriftUnchecked("the database", f"replaying the applied migrations failed: "
                                             f"{str(error).splitlines()[0] if str(error) else error!r}") from error
    return Replay(state, origin)


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
        return self.of(member, status.applied_versions, known_good=True, objects=status.objects)

    def of(self, member: Member, applied: Iterable[str], *, known_good: bool = False,
           objects: list | None = None) -> list[Difference]:
        """``member``'s drift from the migrations ``applied`` (its ledger's set), on either engine; ``objects``:
        its SQLite schema's objects, read with its ledger, which spare a second open of the file."""
        if member.on_server:
            # start-up time: planner.schema_drift runs without planner.engines.postgresql.drift until of() needs it
            from planner.engines.postgresql.drift import pg_differences

            return pg_differences(member, self.catalog, applied, busy_timeout=self.busy_timeout,
                                  ledger_schema=self.ledger_schema)
        try:
            expected = self.expected(applied)
        except DriftUnchecked as unchecked:
            raise DriftUnchecked(member.display, unchecked.reason) from None
        live = _known(objects) if objects is not None else None
        if live is None:  # a table never seen (or no objects): the file is read on its own
            live = _live(member.real, self.busy_timeout, known_good=known_good)
        return compare(expected, live)


def drift(catalog: Catalog, path: Path | str, applied: Iterable[str], *, busy_timeout: float = 30.0) -> list[Difference]:
    """One SQLite database's drift (``apm migrate drift``)."""
    try:
        expected = replay(catalog, applied)
    except DriftUnchecked as unchecked:
        raise DriftUnchecked(str(path), unchecked.reason) from None
    return compare(expected, _live(path, busy_timeout))


def _known(objects: list) -> Schema | None:
    # start-up time: planner.schema_drift runs without planner.engines.sqlite.schema until _known() needs it
    from planner.engines.sqlite.schema import known_schema

    return known_schema(objects)


def _live(path: Path | str, busy_timeout: float, *, known_good: bool = False) -> Schema:
    # start-up time: planner.schema_drift runs without planner.engines.sqlite until _live() needs it
    from planner.engines.sqlite import SQLiteEngine

    return SQLiteEngine(path, busy_timeout=busy_timeout).schema(known_good=known_good)
