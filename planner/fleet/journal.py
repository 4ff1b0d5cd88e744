"""The journal of a fleet run: one JSON line per database as it ends, so a killed run can be resumed.

A run file (``run-<UTC time>-<pid>.jsonl``) starts with the run's request
and its members, then gets one line per database the moment that database
ends, written, flushed and ``fsync``ed before the next database is told
about: a SIGKILL of the fleet command loses no finished database's record.
A line cut short by a kill is ignored when the journal is read back.

A ``--resume`` appends to the same file, so the file is the whole story of
the run.

Journals are kept only while they can matter: a new run's file is removed
when it ends if every one of its databases had nothing to do (nothing to
resume, nothing that happened), and when a run starts, the folder keeps its
newest ``KEEP`` run files (the new one among them) and loses older ones. The
file ``--resume`` would use is never pruned: it is the newest before the
new one starts, so always among those kept. No password is ever written: members are recorded without it, and a
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
from planner.fleet.member_run import SUCCEEDED  # outcomes after which a database needs nothing more from this run

FORMAT = 1
FOLDER = ".apm-fleet"
#: How many run files a folder keeps when a new run starts, the new one included.
KEEP = 10


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Journal:
    """An open run file: each ``record`` is on disk when it returns."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)

    @classmethod
    def start(cls, folder: Path, header: dict[str, Any]) -> Journal:
        """A new run file in ``folder`` (made if missing), its first line the run's ``header``."""
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        journal = cls(folder / f"run-{stamp}-{os.getpid()}.jsonl")
        journal.write({"type": "run", "format": FORMAT, "at": _now(), **header})
        return journal

    def write(self, record: dict[str, Any]) -> None:
        """Append one line, and make it durable before returning."""
        self._file.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        self._file.flush()  # in the kernel now: a SIGKILL of this process cannot lose it
        getattr(os, "fdatasync", os.fsync)(self._file.fileno())  # on disk: nor can a power cut

    def record(self, outcome: dict[str, Any]) -> None:
        self.write({"type": "member", "at": _now(), **outcome})

    def close(self, **fields: Any) -> None:
        if not self._file.closed:
            self.write({"type": "end", "at": _now(), **fields})
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
    use); the files removed. A file that cannot be removed is left: pruning never stops a run."""
    removed = []
    for path in runs(folder)[:-keep] if keep > 0 else runs(folder):
        if spare is not None and path == spare:
            continue
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


@dataclass
class PastRun:
    """A journal read back: the run's header and the last outcome recorded for each member key."""

    path: Path
    header: dict[str, Any]
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def succeeded(self) -> set[str]:
        """Member keys that need nothing more: their last recorded outcome succeeded."""
        return {key for key, record in self.outcomes.items() if record.get("outcome") in SUCCEEDED}


def newest(folder: Path) -> Path:
    """The most recent run file in ``folder``; ``NoJournal`` when there is none."""
    found = runs(folder)
    if not found:
        raise NoJournal(folder)
    return found[-1]


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
