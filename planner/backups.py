"""What a backup is, whatever the engine: what one holds, and what restoring it does to the ledger.

Each engine writes and reads its own backups (a SQLite file copied with the
online backup API, a PostgreSQL ``pg_dump``); the command lists and
restores them through these values alone, so it never asks which kind it
holds.

Half-written backup files: named after the process writing them, removed once that process is gone.

A backup is written under a private name and published (renamed or linked)
only when complete, so a reader never sees half a backup. A writer killed
with SIGKILL cannot clean up, though, so the private name carries its pid:
the next writer, restore or listing removes every partial file whose
process no longer runs, and never one that a live process is still writing.
Both engines' backups (``planner.engines.sqlite.backup``, ``planner.engines.postgresql.backup``)
use this.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from planner import versions
from planner.ledger import LedgerEntry
from planner.urls import DatabaseName


__all__ = ["BackupInfo", "LedgerDifference", "RestoreResult", "ledger_difference"]


@dataclass(frozen=True)
class BackupInfo:
    """What a backup holds, for listing it: its size, when, and its ledger's head."""

    path: Path
    size: int
    taken: datetime | None
    #: Applied versions in the backup's ledger, ``None`` when the file cannot be read as SQLite.
    applied: dict[str, LedgerEntry] | None
    #: Why the ledger could not be read, else ``None``.
    problem: str | None = None

    @property
    def head(self) -> str | None:
        """The highest applied version: the schema version the backup would restore."""
        versions = [v for v in (self.applied or {}) if v.isdigit()]
        return max(versions, key=int) if versions else None


@dataclass(frozen=True)
class LedgerDifference:
    """What a restore does to the ledger; both lists in version order."""

    #: Applied now, not in the backup: the restore un-applies them (their changes disappear).
    unapplied: tuple[str, ...]
    #: In the backup, not applied now: the restore brings them (back).
    reapplied: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.unapplied or self.reapplied)


def ledger_difference(current: dict[str, LedgerEntry], restored: dict[str, LedgerEntry]) -> LedgerDifference:
    """Compare the ledger of the database now with the ledger it would have after the restore."""
    # Versions compare as numbers: "27" in an old ledger is 0027; rows that are not versions, by text.
    def numbered(entries: dict[str, LedgerEntry]) -> dict[object, str]:
        return {versions.number(v) if versions.is_version(v) else v: v for v in entries}

    now, then = numbered(current), numbered(restored)
    return LedgerDifference(tuple(versions.ordered(now[k] for k in now.keys() - then.keys())),
                            tuple(versions.ordered(then[k] for k in then.keys() - now.keys())))


@dataclass(frozen=True)
class RestoreResult:
    """What ``restore`` did."""

    #: The database as a person reads it (``planner.urls.shown``): the file's path, or the connection
    #: string with its password masked.
    database: DatabaseName
    backup: Path
    #: The copy of the database as it was just before the restore; ``None`` when there was no database.
    safety_backup: Path | None
    difference: LedgerDifference


def partial_path(path: Path, marker: str = ".partial.") -> Path:
    """Where this process writes ``path`` before publishing it: ``<name><marker><pid>``."""
    return path.with_name(f"{path.name}{marker}{os.getpid()}")


def remove_abandoned(folder: Path, prefix: str, marker: str = ".partial.",
                     owns: Callable[[str], bool] | None = None) -> list[Path]:
    """Delete the files ``<prefix>...<marker><pid>`` in ``folder`` whose process is gone; what was deleted.

    ``owns`` narrows the prefix: it is given the name before the marker and says whether the caller's
    backups have it (one tenant's dumps share their database's prefix with the other tenants').
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for partial in folder.glob(glob.escape(prefix) + "*"):
        head, found, pid = partial.name.rpartition(marker)
        if found and pid.isdigit() and len(head) + len(found) >= len(prefix) and int(pid) != os.getpid() \
                and not running(int(pid)) and (owns is None or owns(head)):
            with contextlib.suppress(OSError):
                partial.unlink()
                removed.append(partial)
    return removed


def running(pid: int) -> bool:
    """Whether a process with this id exists (ours to signal or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, even if it is not ours to signal
    return True
