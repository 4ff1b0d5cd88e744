"""The journal of a fleet run: one JSON line per database as it ends, so a killed run can be resumed.

A run file (``run-<UTC time>-<pid>.jsonl``) starts with the run's request
and its members, then gets one line per database the moment that database
ends, written and flushed to the kernel before the next database is told
about: a SIGKILL of the fleet command loses no finished database's record.
A line cut short by a kill is ignored when the journal is read back.

The header and the last line are also synced to disk; the lines between are
not, one by one (an ``fdatasync`` per database cost a sixth of a fleet run).
A power cut may therefore lose the last records, never a database's own
state: each database commits durably in its own file, and ``--resume`` plans
a database whose record was lost from its own ledger, so what it finished
reads "nothing to do" and nothing runs twice.

A ``--resume`` appends to the same file, so the file is the whole story of
the run.

Journals are kept only while they can matter: a new run's file is removed
when it ends if every one of its databases had nothing to do (nothing to
resume, nothing that happened), and when a run starts, the folder keeps its
newest ``KEEP`` run files (the new one among them) and the newest run of each
fleet, and loses older ones. A resume continues the newest run of its own
fleet only (``resumable``: the same patterns and lists, the same catalog),
never another fleet's. No password is ever written: members are recorded without it, and a
resumed run finds it where libpq looks (``PGPASSWORD``, ``~/.pgpass``) or in
the ``--glob``/``--list`` given again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.errors import NoJournal, UnreadableJournal

#: What became of one database in a run, as its journal line (and the fleet's JSON ``outcome``) says it.
APPLIED = "applied"
ROLLED_BACK = "rolled back"
NOTHING_TO_DO = "nothing to do"
FAILED = "failed"
SKIPPED = "skipped"
NOT_STARTED = "not started"
#: ``--dry-run`` and ``apm fleet plan --rehearse``: the plan ran in a transaction that was rolled back.
REHEARSED = "rehearsed"
#: The request was refused, nothing run: by the planner (``PlanError``: a rollback through a migration without a
#: downgrade, with applied dependents, an inconsistent history; ``apm migrate`` exits 4), or by lock findings at
#: or above the gate that nothing accepted (``allow``, ``--allow``; exit 12). Not a failure: nothing ran and
#: failed; yet not a success either, so ``--resume`` runs it again.
REFUSED = "refused"

SUCCEEDED = frozenset({APPLIED, ROLLED_BACK, NOTHING_TO_DO})
#: Every outcome, in the order a summary lists them (the same order in every run, whatever ended first).
OUTCOMES = (APPLIED, ROLLED_BACK, NOTHING_TO_DO, REHEARSED, SKIPPED, REFUSED, FAILED, NOT_STARTED)


FORMAT = 1
FOLDER = ".apm-fleet"
#: How many run files a folder keeps when a new run starts, the new one included.
KEEP = 10


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Journal:
    """An open run file: each ``record`` is in the kernel when it returns, the header and the end on disk."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)

    @classmethod
    def start(cls, folder: Path, header: dict[str, Any]) -> Journal:
        """A new run file in ``folder`` (made if missing), its first line the run's ``header``."""
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        journal = cls(folder / f"run-{stamp}-{os.getpid()}.jsonl")
        journal.write({"type": "run", "format": FORMAT, "at": now(), **header}, sync=True)
        return journal

    def write(self, record: dict[str, Any], *, sync: bool = False) -> None:
        """Append one line, in the kernel when this returns; on disk too with ``sync``."""
        self._file.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        self._file.flush()  # in the kernel now: a SIGKILL of this process cannot lose it
        if sync:  # on disk: nor can a power cut
            getattr(os, "fdatasync", os.fsync)(self._file.fileno())

    def record(self, outcome: dict[str, Any]) -> None:
        self.write({"type": "member", "at": now(), **outcome})

    def close(self, **fields: Any) -> None:
        if not self._file.closed:
            self.write({"type": "end", "at": now(), **fields}, sync=True)
            self._file.close()

    def discard(self) -> None:
        """Close and remove the file: a run in which no database needed anything leaves no journal."""
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


def runs(folder: Path) -> list[Path]:
    """The folder's run files, oldest first (their names start with the UTC time they started)."""
    return sorted(folder.glob("run-*.jsonl")) if folder.is_dir() else []


def idle(outcomes: list[str], members: int) -> bool:
    """Whether a run's journal records nothing worth keeping: every one of its ``members`` databases ended,
    each with nothing to do."""
    return len(outcomes) == members > 0 and all(outcome == "nothing to do" for outcome in outcomes)


def prune(folder: Path, *, keep: int = KEEP, spare: Path | None = None) -> list[Path]:
    """Remove all but the newest ``keep`` run files of ``folder``, never ``spare`` (the file a resume would
    use) nor the newest run of each fleet (runs of other fleets must not push out the one a fleet resumes
    from); the files removed. A file that cannot be removed is left: pruning never stops a run."""
    removed, fleets = [], set()
    for age, path in enumerate(reversed(runs(folder))):  # newest first
        fleet = _fleet_of(path)
        newest_of_its_fleet = fleet not in fleets
        fleets.add(fleet)
        if age < keep or newest_of_its_fleet or path == spare:
            continue
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def _fleet_of(path: Path) -> str | None:
    """The fleet a run file's header names (``members.identity``, as JSON), ``None`` when it names none."""
    try:
        with open(path, encoding="utf-8") as file:
            header = json.loads(file.readline())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    fleet = header.get("fleet") if isinstance(header, dict) else None
    return json.dumps(fleet, sort_keys=True) if fleet is not None else None


@dataclass
class PastRun:
    """A journal read back: the run's header and the last outcome recorded for each member key."""

    path: Path
    header: dict[str, Any]
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def succeeded(self) -> set[str]:
        """Member keys that need nothing more: their last recorded outcome succeeded."""
        return {key for key, record in self.outcomes.items() if record.get("outcome") in SUCCEEDED}


def resumable(folder: Path, fleet: dict[str, Any], keys: set[str] | None = None) -> PastRun:
    """The newest run of ``fleet`` in ``folder``: ``{"named_by", "catalog"}`` as the headers record it
    (``members.identity``), or a run of this catalog on exactly the databases
    named now (``keys``: the same fleet named otherwise, a symlink for a path). Otherwise, and always when no
    fleet is named (``named_by`` ``None``), ``NoJournal`` describing each journal there: a resume never
    continues another fleet's run, and a person must see which to name (``--journal FILE``)."""
    found = runs(folder)
    if not found:
        raise NoJournal(folder)
    pasts = []
    for path in reversed(found):  # newest first
        try:
            pasts.append(read(path))
        except UnreadableJournal:
            continue  # not a run this project wrote: never resumed unless named (and then refused by read)
    # With no fleet named, nothing is "mine": the newest run of the catalog here may be another fleet's (a command
    # pasted in another folder once continued that folder's rollback), and which run to continue is the person's.
    mine = [past for past in pasts if past.header.get("fleet") == fleet or (
        (past.header.get("fleet") or {}).get("catalog") == fleet.get("catalog")
        and {m.get("key") for m in past.header.get("members", [])} == keys)] if fleet.get("named_by") else []
    if mine:
        return mine[0]
    raise NoJournal(folder, [_described(past, fleet) for past in pasts] or [p.name for p in found],
                    named=fleet.get("named_by") is not None)


def _described(past: PastRun, fleet: dict[str, Any]) -> str:
    """``run-....jsonl (glob /home/me/projects/*, 3 of 40 databases not succeeded)``: which fleet it ran."""
    recorded = past.header.get("fleet") or {}
    what = ", ".join(recorded.get("named_by") or ["databases named by no pattern" if recorded else "an older run"])
    if recorded.get("catalog") not in (None, fleet.get("catalog")):
        what += f", catalog {recorded['catalog']}"
    total = len(past.header.get("members", []))
    return f"{past.path.name} ({what}, {total - len(past.succeeded())} of {total} databases not succeeded)"


def read(path: Path) -> PastRun:
    """The run recorded in ``path``; a last line cut short by a kill is ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableJournal(path, getattr(exc, "strerror", None) or str(exc)) from exc
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the line a kill interrupted: that database's record was never complete
    if not records or records[0].get("type") != "run" or records[0].get("format") != FORMAT:
        raise UnreadableJournal(path, "it does not start with a fleet run's header")
    past = PastRun(path, records[0])
    for record in records[1:]:
        if record.get("type") == "member" and "key" in record:
            past.outcomes[record["key"]] = record
    return past
