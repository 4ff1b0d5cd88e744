"""Drift: does each applied migration's file still say what was applied?

The ledger stores the sha256 of a file when it was applied. A file edited
since then (``changed``) means the database holds what the old text did, not
what the file now says; a file gone (``missing``) means that version can never
be rolled back from this catalog. Rows written by the old framework have no
checksum and are ``unknown`` rather than falsely ``ok``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from planner.catalog import Catalog

OK = "ok"
CHANGED = "changed"
MISSING = "missing"
UNKNOWN = "unknown"
REPLACED = "replaced"


class _Recorded(Protocol):
    checksum: str | None


def file_states(catalog: Catalog, recorded: Mapping[str, _Recorded]) -> dict[str, str]:
    """For each recorded version: ok, changed, missing (no file), unknown (no checksum recorded) or replaced
    (a squash ``replaces`` it)."""
    states: dict[str, str] = {}
    for version, entry in recorded.items():
        canonical = catalog.canonical(version)
        if canonical is None:
            # A row of a migration that a squash replaces is the squash's, whether its file is still there or not.
            states[version] = REPLACED if catalog.squash_of(version) is not None else MISSING
        elif not entry.checksum:
            states[version] = UNKNOWN
        elif entry.checksum == catalog.get(canonical).checksum:
            states[version] = OK
        else:
            states[version] = CHANGED
    return states
