"""The state of every database of a fleet, decided from its ledger alone: read-only, nothing written.

Each member's ledger is read through a read-only connection (SQLite's
``mode=ro`` URI: the file, its journal and its folder are left exactly as
they were; not even the ledger tables are created). What the ledger says is
then compared with the catalog, which is loaded once for the whole fleet;
the comparisons are cached per distinct applied set, so a thousand
databases in the same state cost one plan, not a thousand.

A member that cannot be read gets its state and a one-line reason, and the
fleet carries on: one database's problem never hides another's state.

The states a fleet member can be in, as ``apm fleet status`` names them (``--json``: spaces as ``_``).

Reading one member's ledger for ``apm fleet status``: quickly, read-only, and every failure as a state.

An engine with a fast reader of its own (``EngineKind.ledger_reader``: SQLite
opens a file through a ``mode=ro`` URI, so nothing on disk can change, not even
a journal, and reads it in one statement) is read through it; any other through
its engine. A member that cannot be read raises ``Unreadable`` with
its state (``locked``, ``not a database``...) and a one-line reason.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from planner import errors as E
from planner import versions
from planner.errors import DatabaseError, PlanError
from planner.fleet.members import Member
from planner.plan import apply_plan
from planner.urls import redact

if TYPE_CHECKING:
    from planner.catalog import Catalog
    from planner.schema import Difference, Replay


UP_TO_DATE = "up to date"
BEHIND = "behind"
AHEAD = "ahead"
DRIFTED = "drifted"
FAILED = "failed"
LOCKED = "locked"
NOT_A_DATABASE = "not a database"
UNREACHABLE = "unreachable"
FOREIGN_LEDGER = "foreign ledger"
#: ``--drift``: the schema could not be compared (its migrations do not replay); never shown as healthy.
DRIFT_UNCHECKED = "drift unchecked"

#: Every state, in the order a summary names them.
STATES = (UP_TO_DATE, BEHIND, AHEAD, DRIFTED, DRIFT_UNCHECKED, FAILED, LOCKED, NOT_A_DATABASE, UNREACHABLE, FOREIGN_LEDGER)


def json_state(state: str) -> str:
    """A state as ``--json`` spells it: ``up to date`` is ``up_to_date``."""
    return state.replace(" ", "_")


class Reading:
    """What a ledger said, before it is compared with the catalog."""

    __slots__ = ("entries", "last_log", "objects", "checksums")

    def __init__(self, entries: dict[str, str | None], last_log: tuple[str, str, str | None, str] | None,
                 objects: list | None = None, checksums: dict[str, str] | None = None):
        #: Applied version -> when it was applied.
        self.entries = entries
        #: (outcome, version, detail, action) of the log's last row.
        self.last_log = last_log
        #: The schema's objects, read with the ledger when asked (``--drift``), where the reader can.
        self.objects = objects
        #: Applied version -> the checksum its row records (rows without one are left out).
        self.checksums = checksums or {}


class Unreadable(Exception):
    """The member cannot be read: ``state`` says how, the message why."""

    def __init__(self, state: str, reason: str):
        super().__init__(reason)
        self.state = state


#: How long the first reading of a member waits for a lock another process holds (``readings``).
FIRST_PASS_WAIT = 0.5

#: Why a database holding versions the catalog lacks (``ahead``) has no drift check: its migrations cannot be
#: replayed without their files.
UNREPLAYABLE = "the versions the catalog lacks cannot be replayed without their files"


def readings(members: Sequence[Member], busy_timeout: float, ledger_schema: str, jobs: int, objects: bool = False,
             on_wait: Callable[[list[Member], float], None] | None = None):
    """(index in ``members``, member, its ledger or why it cannot be read), ``jobs`` read at a time.

    A member another process holds locked is not waited for in turn: k locked
    members would cost k times ``--busy-timeout`` before the rest is read. Each
    gets a short first wait; those still locked come last, waited out
    together (``on_wait`` is told which, and for how long), so a whole fleet
    waits about one ``--busy-timeout`` at most.
    """
    first_wait = min(busy_timeout, FIRST_PASS_WAIT)
    locked: list[int] = []
    for index, reading in enumerate(_each(members, first_wait, ledger_schema, jobs, objects)):
        if isinstance(reading, Unreadable) and reading.state == LOCKED and busy_timeout > first_wait:
            locked.append(index)
        else:
            yield index, members[index], reading
    if locked:
        if on_wait is not None:
            on_wait([members[index] for index in locked], busy_timeout)
        waited = _each([members[index] for index in locked], busy_timeout, ledger_schema, len(locked), objects)
        for index, reading in zip(locked, waited):
            yield index, members[index], reading


def _each(members: Sequence[Member], busy_timeout: float, ledger_schema: str, jobs: int,
          objects: bool) -> Iterator[Reading | Unreadable]:
    """Each member's reading, in order, ``jobs`` at a time.

    Threads are enough: opening a file and running the statements happen in
    SQLite's C code, which releases the GIL, and that is most of the time.
    """
    def read(candidate: Member) -> Reading | Unreadable:
        try:
            return read_ledger(candidate, busy_timeout, ledger_schema, objects=objects)
        except Unreadable as unreadable:
            return unreadable

    if jobs <= 1 or len(members) < 2:
        for candidate in members:
            yield read(candidate)
        return
    # start-up time: planner.fleet.status runs without concurrent.futures until _each() needs it
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(jobs, 64)) as pool:
        yield from pool.map(read, members)


#: Each engine's fast reader, by its ``"module:function"``: looked up once, not once per member.
_READERS: dict[str, Callable[..., tuple]] = {}


def read_ledger(candidate: Member, busy_timeout: float, ledger_schema: str, *, objects: bool = False) -> Reading:
    """What ``candidate``'s ledger says (with ``objects``, its schema's objects too, where the fast reader reads
    them); ``Unreadable`` with the state when it cannot be read."""
    kind = candidate.kind
    if kind.ledger_reader is None:
        return _read_through_engine(candidate, busy_timeout, ledger_schema)
    read = _READERS.get(kind.ledger_reader)
    if read is None:
        read = _READERS[kind.ledger_reader] = kind.load(kind.ledger_reader)

    def quickly() -> Reading:
        found: list | None = [] if objects else None
        checksums: dict[str, str] = {}
        entries, last_log = read(candidate.real, busy_timeout, objects=found, checksums=checksums)
        return Reading(entries, last_log, found, checksums)

    try:
        return quickly()
    except (E.DatabaseLocked, E.NotADatabase, E.ForeignLedger) as exc:
        raise _unreadable(exc) from None  # a lock was waited out already; the others are what they are
    except DatabaseError:
        pass
    # What the read-only reading cannot read, the engine reads as `apm status` does: a hot journal left by a
    # killed run is rolled back by the engine's first open (what the next writer would do), and anything else
    # is named as the engine names it. Then the quick reading again, for the log's last row.
    try:
        candidate.engine(busy_timeout=busy_timeout, ledger_schema=ledger_schema).applied()
        return quickly()
    except DatabaseError as exc:
        raise _unreadable(exc) from None


# --------------------------------------------------------------------------
# Reading one ledger
# --------------------------------------------------------------------------


def _read_through_engine(candidate: Member, busy_timeout: float, ledger_schema: str) -> Reading:
    engine = candidate.engine(busy_timeout=busy_timeout, ledger_schema=ledger_schema)
    try:
        with engine.reading():
            entries = engine.applied()
            history = engine.history()  # with no version applied yet too: its first migration may have failed
    except DatabaseError as exc:
        raise _unreadable(exc) from None
    last = history[-1] if history else None
    return Reading({v: e.applied_at for v, e in entries.items()},
                   (last.outcome, last.version, last.detail, last.action) if last is not None else None,
                   checksums={v: e.checksum for v, e in entries.items() if e.checksum})


def _unreadable(error: Exception) -> Unreadable:
    """A library error about the database itself, as a state and its one line."""
    if isinstance(error, E.ForeignLedger):
        return Unreadable(FOREIGN_LEDGER, "schema_migrations was made by another tool (columns: "
                                           f"{', '.join(error.columns)})")
    if isinstance(error, (E.DatabaseLocked, TimeoutError)):
        return Unreadable(LOCKED, one_line(error))
    if isinstance(error, E.NotADatabase):
        return Unreadable(NOT_A_DATABASE, one_line(error))
    return Unreadable(UNREACHABLE, one_line(error))


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def one_line(error: BaseException) -> str:
    """An error's message on one line, any password masked."""
    # An error's text is its fact: advice for a one-database command (``--db``) is the command's to add.
    return redact(first_line(str(error)) or type(error).__name__)


@dataclass
class MemberStatus:
    """One member's state, and what it was decided from."""

    member: Member
    state: str
    applied: int = 0
    pending: int = 0
    heads: tuple[str, ...] = ()
    last_applied_at: str | None = None
    error: str | None = None
    #: The versions the ledger records as applied (``None`` when it could not be read).
    applied_versions: frozenset[str] | None = None
    #: Applied versions the catalog has no file for (``ahead``).
    unknown: tuple[str, ...] = ()
    #: The schema's differences from its migrations, when drift was checked (``drifted``).
    differences: list[Difference] | None = None
    #: The schema's objects as read with the ledger (``--drift``), until drift is checked.
    objects: list | None = field(default=None, repr=False)
    #: ``failed`` because its last step could not get a lock in time: nothing is wrong with the data, waiting is
    #: the fix (a step outside a transaction may have run part of its work: its note says so).
    lock_timeout: bool = False
    #: Applied versions whose file changed since (the ledger's checksum is another): the database holds what the
    #: old text did. A note, as `apm migrate` warns of it, not a state.
    edited: tuple[str, ...] = ()

    @property
    def needs_attention(self) -> bool:
        return self.state != UP_TO_DATE

    @property
    def also(self) -> tuple[str, ...]:
        """The states beside ``state`` that need attention too: a row has one state (the one whose fix comes
        first: drift before migrating, a failed step's before the rest), and these keep the others visible."""
        if not (self.pending or self.differences):
            return ()  # most rows of a fleet: asked for each row, its JSON and the summary
        found = []
        if self.pending and self.state in (DRIFTED, DRIFT_UNCHECKED, AHEAD):  # failed: its retry applies them
            found.append(BEHIND)
        if self.differences and self.state != DRIFTED:
            found.append(DRIFTED)
        return tuple(found)

    @property
    def shown_state(self) -> str:
        """``behind 3`` rather than ``behind``, ``drifted, behind 3`` for both: what the table shows."""
        also = self.also
        if not (also or self.lock_timeout):
            return f"{BEHIND} {self.pending}" if self.state == BEHIND else self.state
        shown = [f"{BEHIND} {self.pending}" if state == BEHIND else state for state in (self.state, *also)]
        return ", ".join(shown) + (" (lock timeout)" if self.lock_timeout else "")

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "db": self.member.display,
            "state": json_state(self.state),
            # Unread (not a database, locked, unreachable...): unknown, not zero (docs' JSON convention).
            "applied": self.applied if self.applied_versions is not None else None,
            "pending": self.pending if self.applied_versions is not None else None,
            "head": list(self.heads) if self.applied_versions is not None else None,
            "last_applied_at": self.last_applied_at,
            "error": self.error,
            "also": [json_state(state) for state in self.also],
            "lock_timeout": self.lock_timeout,
        }
        if self.unknown:
            document["unknown"] = list(self.unknown)
        if self.edited:
            document["edited"] = list(self.edited)
        if self.differences is not None:
            document["differences"] = [d.to_json() for d in self.differences]
        return document


@dataclass
class FleetStatus:
    """Every member's status, in fleet order."""

    members: list[MemberStatus] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in self.members:
            counts[status.state] = counts.get(status.state, 0) + 1
        return {state: counts[state] for state in STATES if state in counts}

    @property
    def needs_attention(self) -> bool:
        return any(status.needs_attention for status in self.members)

    @property
    def only_drift(self) -> bool:
        """Whether drift is all that needs attention (its own exit code): not beside anything else, a drifted
        database's being behind included."""
        return all(s.state == DRIFTED and not s.also for s in self.members if s.needs_attention)

    def summary_line(self) -> str:
        """``38 up to date, 3 behind, 2 drifted (1 also behind), 1 failed (1 on a lock timeout)``: each database
        counted once, under its state, and what else holds for some of them in parentheses."""
        extra: dict[str, dict[str, int]] = {}
        for status in self.members:
            if not (status.pending or status.differences or status.lock_timeout):
                continue  # nothing beside its state (``also``): most rows
            for note in [f"also {state}" for state in status.also] + ["on a lock timeout"] * status.lock_timeout:
                extra.setdefault(status.state, {}).setdefault(note, 0)
                extra[status.state][note] += 1
        return ", ".join(f"{count} {state}" + (" (" + ", ".join(f"{n} {note}" for note, n in extra[state].items())
                                               + ")" if state in extra else "")
                         for state, count in self.summary.items()) or "no databases"

    def to_json(self) -> dict[str, Any]:
        return {"databases": [status.to_json() for status in self.members],
                "summary": {json_state(state): count for state, count in self.summary.items()}}

class Comparison:
    """The catalog's view of applied sets, computed once per distinct set (a fleet has few)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._cache: dict[frozenset[str], tuple[int, tuple[str, ...], tuple[str, ...], str | None]] = {}
        self._edited: dict[frozenset[tuple[str, str]], tuple[str, ...]] = {}
        self._checksums: dict[str, str] | None = None

    def edited(self, checksums: dict[str, str]) -> tuple[str, ...]:
        """The applied versions whose file's checksum is not the one recorded (once per distinct ledger)."""
        if self._checksums is None:
            self._checksums = {migration.version: migration.checksum for migration in self.catalog}
        if checksums.items() <= self._checksums.items():
            return ()  # each version the catalog's own, with its file's checksum: the common ledger, one C-level test
        key = frozenset(checksums.items())
        found = self._edited.get(key)
        if found is None:
            changed = []
            for version, recorded in checksums.items():
                canonical = self.catalog.canonical(version)  # None: no file, or a squash replaced it
                if canonical is not None and self.catalog.get(canonical).checksum != recorded:
                    changed.append(canonical)
            found = self._edited[key] = tuple(versions.ordered(changed))
        return found

    def of(self, applied: frozenset[str]) -> tuple[int, tuple[str, ...], tuple[str, ...], str | None]:
        """(pending count, heads, unknown versions, refusal) for ``applied``."""
        found = self._cache.get(applied)
        if found is None:
            found = self._cache[applied] = self._compare(applied)
        return found

    def _compare(self, applied: frozenset[str]) -> tuple[int, tuple[str, ...], tuple[str, ...], str | None]:
        known, unknown = self.catalog.split_applied(applied)
        graph = self.catalog.graph
        heads = tuple(versions.ordered(v for v in known if v in graph
                                       and not any(d in known for d in graph.dependents(v))))
        try:
            pending = len(apply_plan(self.catalog, applied))
        except PlanError as refusal:
            return 0, heads, tuple(versions.ordered(unknown)), str(refusal)
        return pending, heads, tuple(versions.ordered(unknown)), None


def fleet_status(
    members: Sequence[Member],
    catalog: Catalog,
    *,
    busy_timeout: float = 30.0,
    ledger_schema: str = "public",
    drift: Callable[[Member, MemberStatus], list[Difference] | None] | None = None,
    on_member: Callable[[MemberStatus], None] | None = None,
    jobs: int = 1,
    on_wait: Callable[[list[Member], float], None] | None = None,
) -> FleetStatus:
    """Each member's state from its ledger (and, with ``drift``, its schema against its migrations).

    ``drift(member, status)`` returns the member's differences, or ``None``
    when it was not compared; ``DriftChecker.differences`` (below) is one.
    """
    comparison = Comparison(catalog)
    result = FleetStatus()
    placed: list[tuple[int, MemberStatus]] = []  # with its member's place in the fleet (locked ones are read last)
    for index, candidate, reading in readings(members, busy_timeout, ledger_schema, jobs, objects=drift is not None,
                                              on_wait=on_wait):
        status = member_status(candidate, comparison, busy_timeout=busy_timeout, ledger_schema=ledger_schema,
                               reading=reading)
        if drift is not None and status.state in (UP_TO_DATE, BEHIND, AHEAD, FAILED) and not status.unknown:
            try:
                status.differences = drift(candidate, status)
            except Exception as exc:  # one member's replay failing must not hide the others' states
                why = getattr(exc, "reason", None) or one_line(exc)  # DriftUnchecked's reason: its database is the row's
                status.error = status.error or f"drift not checked: {candidate.named(why)}"
                if status.state in (UP_TO_DATE, BEHIND):  # a schema nobody could compare must not look healthy
                    status.state = DRIFT_UNCHECKED
            if status.differences and status.state in (UP_TO_DATE, BEHIND):
                status.state = DRIFTED
        elif drift is not None and status.unknown:
            # Asked for and not done: a row that says nothing of its schema would read as compared and clean.
            status.error = f"{status.error}; drift not checked: {UNREPLAYABLE}"
        status.objects = None  # compared: a long fleet keeps no schema it is done with
        placed.append((index, status))
        if on_member is not None:
            on_member(status)
    result.members = [status for _, status in sorted(placed, key=lambda pair: pair[0])]
    return result


def member_status(candidate: Member, comparison: Comparison, *, busy_timeout: float = 30.0,
                  ledger_schema: str = "public", reading: Reading | Unreadable | None = None) -> MemberStatus:
    """One member's state, from its ledger alone (``reading``, when it was already read)."""
    try:
        if reading is None:
            reading = read_ledger(candidate, busy_timeout, ledger_schema)
        if isinstance(reading, Unreadable):
            raise reading
    except Unreadable as unreadable:
        return MemberStatus(candidate, unreadable.state, error=candidate.named(str(unreadable)))
    applied = frozenset(reading.entries)
    pending, heads, unknown, refusal = comparison.of(applied)
    status = MemberStatus(candidate, UP_TO_DATE, len(applied), pending, heads,
                          max(map(str, filter(None, reading.entries.values())), default=None),
                          applied_versions=applied, unknown=unknown, objects=reading.objects,
                          edited=comparison.edited(reading.checksums))
    if _failure_stands(reading.last_log, applied, comparison):
        assert reading.last_log is not None  # _failure_stands says so; mypy cannot see through the call
        outcome, version, detail, action = reading.last_log
        status.state, status.error = FAILED, f"{version} failed: {first_line(detail) or 'no detail recorded'}"
        if any(words in (detail or "") for words in _LOCK_TIMEOUT):
            status.lock_timeout = True
            inside = version in comparison.catalog and comparison.catalog.get(version).transactional
            status.error = (f"{version} stopped on a lock timeout, " + (
                "nothing of it was applied: the data are fine; retry once the lock is free" if inside else
                "outside a transaction: what it ran before the timeout stays; retry once the lock is free")
                + f" ({first_line(detail)})")
    elif refusal is not None:
        status.state, status.error = FAILED, refusal
    elif unknown:
        status.state = AHEAD
        status.error = f"applied but not in the catalog: {', '.join(unknown)}"
    elif pending:
        status.state = BEHIND
    return status


def _failure_stands(last_log: tuple[str, str, str | None, str] | None, applied: frozenset[str],
                    comparison: Comparison) -> bool:
    """Whether the log's last row is a failure this catalog's retry would still meet.

    A failed apply stands while its version is still not applied, a failed
    rollback while it is still applied. A failure of a version the catalog does
    not hold (a run with another catalog), or one undone since (a mark, a run
    of another tool), is history, not the database's state: a dashboard that
    stayed red after the database was put right would be read as noise.
    """
    if last_log is None or last_log[0] != "failed":
        return False
    version, action = last_log[1], last_log[3]
    if version not in comparison.catalog:
        return False
    if action == "apply":
        return version not in applied
    if action == "rollback":
        return version in applied
    return True


#: A log row's detail for a step that could not get a lock in time: ``StepLocked``'s words ("could not get its
#: lock within the lock timeout (...)", "lock timeout (...) on attempt 1 of 3") or the server's own for SQLSTATE
#: 55P03 (a timeout, or NOWAIT).
_LOCK_TIMEOUT = ("lock timeout (", "due to lock timeout", "could not obtain lock on")


def count_states(statuses: Iterable[MemberStatus]) -> dict[str, int]:
    """How many members are in each state (for a caller summarizing its own selection)."""
    return FleetStatus(list(statuses)).summary


class DriftChecker:
    """Drift of many databases (``apm fleet status --drift``), each through its own engine's ``drift``.

    The replays are kept for the checker's life under the keys each engine chooses (the applied set; on a
    server, also the server and the tenant schema), so a fleet in one state pays for one replay.
    """

    def __init__(self, catalog: Catalog, *, busy_timeout: float = 30.0, ledger_schema: str = "public"):
        self.catalog, self.busy_timeout, self.ledger_schema = catalog, busy_timeout, ledger_schema
        self.replays: dict[Hashable, Replay] = {}

    def differences(self, member: Member, status: MemberStatus) -> list[Difference] | None:
        """``member``'s drift given its status (its applied set); ``None`` where it cannot be compared here."""
        if status.applied_versions is None:
            return None
        return self.of(member, status.applied_versions, objects=status.objects)

    def of(self, member: Member, applied: Iterable[str], *, objects: list | None = None) -> list[Difference]:
        """``member``'s drift from the migrations ``applied`` (its ledger's set); errors name it as given.
        ``objects``: its schema's objects, read with its ledger, which spare a second open of the file."""
        # start-up time: planner.fleet.status runs without planner.schema until a drift is asked for
        from planner.schema import DriftUnchecked

        engine = member.engine(busy_timeout=self.busy_timeout, ledger_schema=self.ledger_schema)
        try:
            return engine.drift(self.catalog, applied, self.replays, objects=objects)
        except DriftUnchecked as unchecked:
            raise DriftUnchecked(member.display, unchecked.reason) from None
