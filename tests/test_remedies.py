"""A finding's fix is a ``Remedy`` (facts: an action and its arguments); the command spells it as a line.

The library's callers that are not the command (the pytest plugin, a fleet,
a program) read the remedy's plain form, which names no ``apm`` command and
no option; ``apm migrate check`` and ``doctor`` spell every action the
library can return (``tests/test_doctor.py`` and ``test_lint.py`` pin the
lines themselves).
"""

from __future__ import annotations

import re
import typing

import pytest

from cli.safety import render_remedy
from planner.findings import Action, Finding, Remedy

COMMAND_OR_OPTION = re.compile(r"\bapm (migrate|fleet|status|agents|config)\b|(?<![\w-])--[a-z]")

#: A remedy of each action, with arguments as the library gives them.
SAMPLES = {
    "line": Remedy.line("DELETE FROM t WHERE rowid = 1;"),
    "migrate": Remedy("migrate", note="recreates it"),
    "check": Remedy("check", note="lists every problem of the catalog"),
    "doctor": Remedy("doctor"),
    "list": Remedy("list", note="opening the database rolls it back"),
    "restore": Remedy("restore", ("/backups/app db.dump",), "newest backup"),
    "mark-applied": Remedy("mark-applied", ("0003",)),
    "baseline": Remedy("baseline", ("<V>",)),
    "target": Remedy("target", ("0004",)),
    "mark-applied-or-cascade": Remedy("mark-applied-or-cascade", ("0002", "0005")),
    "settle-outside-step": Remedy("settle-outside-step", ("rollback", "0007")),
    "renumber": Remedy("renumber", ("git mv migration_2_a.py migration_0008_a.py",)),
    "make-catalog": Remedy("make-catalog", ("/srv/migrations",)),
    "restore-file": Remedy("restore-file", ("/srv/migrations", "0002")),
    "rebuild-invalid-index": Remedy("rebuild-invalid-index", ('public."ix"',)),
    "one-run-at-a-time": Remedy("one-run-at-a-time", note="a CI job with a concurrency limit of 1"),
    "no-preview": Remedy("no-preview"),
    "inspect-ledger": Remedy("inspect-ledger", ("public.schema_migrations",)),
    "pg-dump": Remedy("pg-dump", ("tenant", "/dumps/apm.$(date +%s).dump", "postgresql://app@h/apm"), "password"),
}


def test_every_action_has_a_sample_here():
    assert set(SAMPLES) == set(typing.get_args(Action))


@pytest.mark.parametrize("action", sorted(SAMPLES))
def test_the_command_spells_every_action_and_the_library_names_no_command(action: str):
    remedy = SAMPLES[action]
    line = render_remedy(remedy, "apm --db x.db migrate")
    assert line.strip() and "None" not in line
    assert not COMMAND_OR_OPTION.search(str(remedy)), str(remedy)  # what the pytest plugin shows


def test_the_options_given_are_repeated_in_every_apm_command_of_a_line():
    remedy = Remedy("mark-applied-or-cascade", ("0002", "0005"))
    assert render_remedy(remedy, "apm --db 'my app.db' migrate") == (
        "apm --db 'my app.db' migrate --mark-applied 0002  # if its changes are in the schema; otherwise "
        "apm --db 'my app.db' migrate --rollback 0005 --cascade")


def test_a_restore_names_its_database_however_the_users_was_found():
    """The doctor's restore line names the file to restore into, whatever options were given."""
    remedy = Remedy("restore", ("/data/app db.db.backup.1",), database="/data/app db.db")
    assert render_remedy(remedy, "apm --migrations-dir m migrate") == \
        "apm --db '/data/app db.db' migrate restore '/data/app db.db.backup.1'"


def test_a_finding_shows_and_serializes_its_remedy_as_the_renderer_spells_it():
    finding = Finding("error", "inconsistent-history", "0005", "0005 is applied but 0002 is not",
                      Remedy("mark-applied", ("0002",)), "history")
    assert finding.describe(render_remedy).endswith("fix: apm migrate --mark-applied 0002")
    assert finding.to_json(render_remedy)["fix"] == "apm migrate --mark-applied 0002"
    assert Finding("info", "backup", None, "m").to_json(render_remedy)["fix"] is None
