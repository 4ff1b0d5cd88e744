"""Half-written backup files: named after the process writing them, removed once that process is gone.

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
from pathlib import Path


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
