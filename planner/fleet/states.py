"""The states a fleet member can be in, as ``apm fleet status`` names them (``--json``: spaces as ``_``)."""

from __future__ import annotations

UP_TO_DATE = "up to date"
BEHIND = "behind"
AHEAD = "ahead"
DRIFTED = "drifted"
FAILED = "failed"
LOCKED = "locked"
NOT_A_DATABASE = "not a database"
UNREACHABLE = "unreachable"
FOREIGN_LEDGER = "foreign ledger"

#: Every state, in the order a summary names them.
STATES = (UP_TO_DATE, BEHIND, AHEAD, DRIFTED, FAILED, LOCKED, NOT_A_DATABASE, UNREACHABLE, FOREIGN_LEDGER)


def json_state(state: str) -> str:
    """A state as ``--json`` spells it: ``up to date`` is ``up_to_date``."""
    return state.replace(" ", "_")
