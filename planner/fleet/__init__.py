"""Many databases at once: which databases form a fleet, their states, and staged, parallel, resumable runs.

APM keeps one SQLite database per project, and a team may give each tenant
its own PostgreSQL database or schema. This package is what ``apm fleet``
calls, and what APM can call from its own commands without the CLI:

- ``planner.fleet.members``: ``discover`` (globs, list files, the config's
  patterns) into ``Member`` values, the same file reached twice being one;
- ``planner.fleet.status``: ``fleet_status``, each member's state (the
  names are in ``planner.fleet.status``) from its ledger alone, read by
  ``planner.fleet.status`` (read-only, nothing written);
- ``planner.fleet.run``: ``run_member``, one database through the
  single-database run path, as an outcome;
- ``planner.fleet.run``: ``FleetRun``, many members at a time, canaries
  first, stopping after a failure, every outcome journaled
  (``planner.fleet.run``) so a run can be resumed.

Drift (a schema against its applied migrations) is each engine's ``drift``, asked
for many databases by ``planner.fleet.status.DriftChecker``.
The library never prints: progress is reported through callbacks.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The public names, each imported from its module on first use: ``apm fleet status`` must not pay for the run.
_NAMES = {
    "Member": "planner.fleet.members", "discover": "planner.fleet.members",
    "FleetStatus": "planner.fleet.status", "MemberStatus": "planner.fleet.status",
    "fleet_status": "planner.fleet.status", "DriftChecker": "planner.fleet.status",
    "FleetRun": "planner.fleet.run", "FleetResult": "planner.fleet.run", "Request": "planner.fleet.run",
    "MemberOutcome": "planner.fleet.run", "run_member": "planner.fleet.run", "canaries": "planner.fleet.run",
}

__all__ = list(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'planner.fleet' has no attribute {name!r}")

    return getattr(importlib.import_module(module), name)
