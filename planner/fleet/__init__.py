"""Many databases at once: which databases form a fleet, their states, and staged, parallel, resumable runs.

APM keeps one SQLite database per project, and a team may give each tenant
its own PostgreSQL database or schema. This package is what ``apm fleet``
calls, and what APM can call from its own commands without the CLI:

- ``planner.fleet.members``: ``discover`` (globs, list files, the config's
  patterns) into ``Member`` values, the same file reached twice being one;
- ``planner.fleet.status``: ``fleet_status``, each member's state (the
  names are in ``planner.fleet.states``) from its ledger alone, read by
  ``planner.fleet.ledgers`` (read-only, nothing written);
- ``planner.fleet.member_run``: ``run_member``, one database through the
  single-database run path, as an outcome;
- ``planner.fleet.run``: ``FleetRun``, many members at a time, canaries
  first, stopping after a failure, every outcome journaled
  (``planner.fleet.journal``) so a run can be resumed.

Drift (a schema against its applied migrations) is ``planner.schema_drift``.
The library never prints: progress is reported through callbacks.
"""

from __future__ import annotations

from planner.fleet.members import Member, discover
from planner.fleet.status import FleetStatus, MemberStatus, fleet_status

__all__ = ["Member", "discover", "FleetStatus", "MemberStatus", "fleet_status"]
