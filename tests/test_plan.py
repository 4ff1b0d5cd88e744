"""Plans: what an apply or a rollback would run, and every refusal, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.errors import message as command_message
from planner.catalog import Catalog
from planner.errors import (
    InconsistentHistory,
    IrreversibleMigration,
    MigrationNotFound,
    NotApplied,
    PlanError,
    RollbackRefused,
    UnknownAppliedMigration,
)
from planner.loader import load_catalog
from planner.migration import DECLARED, Migration
from planner.plan import APPLY, ROLLBACK, apply_plan, inconsistent_history, rollback_plan, unknown_applied
from tests.conftest import write_migration


@pytest.fixture
def seed(seed_chain: Path) -> Catalog:
    """0001 root, 0020 → 0027 → 0029, and 0030 on 0001 alone."""
    return load_catalog(seed_chain)


def build(dependencies: dict[str, tuple[str, ...]], irreversible: set[str] = frozenset()) -> Catalog:
    """A catalog straight from migration values: no files, for graphs the seed does not have."""

    def noop(conn: object) -> None:
        return None

    migrations = [
        Migration(
            version=v,
            description=f"m{v}",
            path=Path(f"migration_{v}.py"),
            checksum=v,
            depends_on=needs,
            dependency_source=DECLARED,
            doc="",
            upgrade=noop,
            downgrade=None if v in irreversible else noop,
        )
        for v, needs in dependencies.items()
    ]
    catalog, problems = Catalog.build(Path("."), migrations)
    assert problems == []
    return catalog


# -- apply ---------------------------------------------------------------------


def test_apply_everything_pending_in_order(seed: Catalog) -> None:
    plan = apply_plan(seed, [])
    assert plan.direction == APPLY and plan.target is None
    assert plan.versions == ["0001", "0020", "0027", "0029", "0030"]
    assert all(step.direction == APPLY for step in plan.steps)
    assert [step.migration for step in plan] == [seed.get(v) for v in plan.versions]


def test_apply_skips_what_is_applied(seed: Catalog) -> None:
    assert apply_plan(seed, ["0001", "0020"]).versions == ["0027", "0029", "0030"]


def test_apply_with_nothing_pending_is_an_empty_plan(seed: Catalog) -> None:
    plan = apply_plan(seed, seed.versions)
    assert plan.versions == [] and not plan and len(plan) == 0


def test_apply_with_a_target_runs_its_pending_ancestors_and_itself(seed: Catalog) -> None:
    plan = apply_plan(seed, ["0001"], target="0029")
    assert plan.versions == ["0020", "0027", "0029"]
    assert plan.target == "0029"


def test_apply_target_in_another_spelling(seed: Catalog) -> None:
    plan = apply_plan(seed, [], target="27")
    assert plan.versions == ["0001", "0020", "0027"] and plan.target == "0027"


def test_apply_target_already_applied_is_empty(seed: Catalog) -> None:
    assert apply_plan(seed, ["0001", "0020", "0027"], target="0020").versions == []


def test_apply_unknown_target(seed: Catalog) -> None:
    with pytest.raises(MigrationNotFound) as info:
        apply_plan(seed, [], target="0028")
    assert info.value.version == "0028"
    # The library states the fact; the command adds where to look.
    assert str(info.value) == "migration 0028 is not in the catalog"
    assert command_message(info.value) == "migration 0028 is not in the catalog; see `apm migrate --list` for versions"


def test_apply_order_is_numeric_among_ready_migrations() -> None:
    catalog = build({"0100": (), "27": (), "0030": ("0100",), "0005": ("0030",)})
    assert apply_plan(catalog, []).versions == ["27", "0100", "0030", "0005"]


def test_apply_over_a_partial_history_orders_the_pending_ones_numerically() -> None:
    # 0001 needs 0004; once 0004 is applied, 0001 is as ready as 0003 and goes first.
    catalog = build({"0001": ("0004",), "0002": (), "0003": (), "0004": ()})
    assert apply_plan(catalog, ["0004", "0002"]).versions == ["0001", "0003"]


def test_ledger_versions_in_another_spelling_match(seed: Catalog) -> None:
    assert apply_plan(seed, ["1", "20", "027"]).versions == ["0029", "0030"]


def test_unknown_applied_versions_are_kept_and_ignored_by_apply(seed: Catalog) -> None:
    assert apply_plan(seed, ["0001", "0025", "0099"]).versions == ["0020", "0027", "0029", "0030"]


# -- inconsistent history ---------------------------------------------------------


def test_inconsistent_history_is_detected_with_both_versions(seed: Catalog) -> None:
    assert inconsistent_history(seed, ["0001", "0020", "0029"]) == [("0029", "0027")]
    assert inconsistent_history(seed, ["0001", "0020", "0027"]) == []
    assert inconsistent_history(seed, ["0029", "0030"]) == [("0029", "0027"), ("0030", "0001")]


def test_apply_refuses_an_inconsistent_history_with_the_two_ways_out(seed: Catalog) -> None:
    with pytest.raises(InconsistentHistory) as info:
        apply_plan(seed, ["0001", "0020", "0029"])
    assert info.value.pairs == (("0029", "0027"),)
    assert "apm" not in str(info.value)
    message = command_message(info.value)
    assert "0029 is applied but its dependency 0027 is not" in message
    assert "nothing was changed" in message
    assert "`apm migrate --rollback 0029 --cascade`" in message
    assert "`apm migrate --mark-applied 0027`" in message


def test_inconsistent_history_refusal_counts_the_other_pairs(seed: Catalog) -> None:
    with pytest.raises(InconsistentHistory) as info:
        apply_plan(seed, ["0029", "0030"], target="0030")
    assert info.value.pairs == (("0029", "0027"), ("0030", "0001"))
    assert "(and 1 more)" in str(info.value)


# -- rollback ----------------------------------------------------------------------


def test_rollback_a_leaf(seed: Catalog) -> None:
    plan = rollback_plan(seed, seed.versions, "0029")
    assert plan.direction == ROLLBACK and plan.versions == ["0029"]
    assert plan.target == "0029" and plan.cascade is False
    assert all(step.direction == ROLLBACK for step in plan)


def test_rollback_of_a_migration_that_is_not_applied(seed: Catalog) -> None:
    with pytest.raises(NotApplied) as info:
        rollback_plan(seed, ["0001"], "0027")
    assert info.value.version == "0027"
    assert str(info.value) == "migration 0027 is not applied, so there is nothing to roll back"


def test_rollback_of_an_unknown_version(seed: Catalog) -> None:
    with pytest.raises(MigrationNotFound):
        rollback_plan(seed, seed.versions, "0028")


def test_rollback_refused_names_dependents_cascade_order_and_command(seed: Catalog) -> None:
    with pytest.raises(RollbackRefused) as info:
        rollback_plan(seed, ["0001", "0020", "0027", "0029"], "0020")
    error = info.value
    assert error.version == "0020"
    assert error.dependents == ("0027", "0029")
    assert error.cascade_order == ("0029", "0027", "0020")
    assert str(error) == "cannot roll back 0020: applied migration(s) 0027, 0029 depend on it; nothing was changed"
    message = command_message(error)
    assert "cannot roll back 0020: applied migration(s) 0027, 0029 depend on it" in message
    assert "nothing was changed" in message
    assert "0029 then 0027 then 0020" in message
    assert message.endswith("run `apm migrate --rollback 0020 --cascade`")


def test_rollback_dependents_are_only_the_applied_ones(seed: Catalog) -> None:
    plan = rollback_plan(seed, ["0001", "0020", "0030"], "0020")
    assert plan.versions == ["0020"]


def test_cascade_rolls_back_dependents_first(seed: Catalog) -> None:
    plan = rollback_plan(seed, seed.versions, "0001", cascade=True)
    assert plan.versions == ["0030", "0029", "0027", "0020", "0001"]
    assert plan.cascade is True and plan.target == "0001"


def test_cascade_ties_go_highest_version_first() -> None:
    catalog = build({"0001": (), "0002": ("0001",), "0010": ("0001",), "0100": ("0001",), "0003": ("0002",)})
    plan = rollback_plan(catalog, catalog.versions, "0001", cascade=True)
    assert plan.versions == ["0100", "0010", "0003", "0002", "0001"]


def test_cascade_with_nothing_depending_is_just_the_migration(seed: Catalog) -> None:
    assert rollback_plan(seed, seed.versions, "0030", cascade=True).versions == ["0030"]


def test_cascade_follows_dependencies_through_unapplied_migrations() -> None:
    # 0003 needs 0005 (not applied, by a hand-edited ledger), which needs 0004:
    # 0003 must still be rolled back before 0004, although 0004 is the higher version.
    catalog = build({"0001": (), "0004": ("0001",), "0005": ("0004",), "0003": ("0005",)})
    applied = ["0001", "0004", "0003"]
    assert rollback_plan(catalog, applied, "0001", cascade=True).versions == ["0003", "0004", "0001"]
    with pytest.raises(RollbackRefused) as info:
        rollback_plan(catalog, applied, "0001")
    assert info.value.cascade_order == ("0003", "0004", "0001")


def test_rollback_accepts_another_spelling(seed: Catalog) -> None:
    assert rollback_plan(seed, ["1", "20"], "20").versions == ["0020"]


def test_irreversible_migration_refuses_the_whole_plan() -> None:
    catalog = build({"0001": (), "0002": ("0001",), "0003": ("0002",), "0004": ("0003",)}, {"0003", "0002"})
    with pytest.raises(IrreversibleMigration) as info:
        rollback_plan(catalog, catalog.versions, "0001", cascade=True)
    assert info.value.versions == ("0002", "0003")
    message = str(info.value)
    assert "migration(s) 0002, 0003 define no downgrade(conn)" in message
    assert "nothing was changed" in message and "Restore from a backup" in message


def test_irreversible_target_alone(catalog_dir: Path) -> None:
    write_migration(catalog_dir, "0001", downgrade=None)
    catalog = load_catalog(catalog_dir)
    with pytest.raises(IrreversibleMigration) as info:
        rollback_plan(catalog, ["0001"], "0001")
    assert info.value.versions == ("0001",)


def test_refusal_does_not_advise_a_cascade_that_would_be_refused() -> None:
    catalog = build({"0001": (), "0002": ("0001",)}, {"0002"})
    with pytest.raises(RollbackRefused) as info:
        rollback_plan(catalog, catalog.versions, "0001")
    assert info.value.irreversible == ("0002",)
    message = command_message(info.value)
    assert "--cascade`" not in message
    assert "0002 define no downgrade(conn)" in message and "Restore from a backup" in message
    with pytest.raises(IrreversibleMigration):
        rollback_plan(catalog, catalog.versions, "0001", cascade=True)


# -- unknown applied versions --------------------------------------------------------


def test_unknown_applied_versions_are_reported(seed: Catalog) -> None:
    assert unknown_applied(seed, ["0001", "0099", "0025", "27", "legacy"]) == ["0025", "0099", "legacy"]
    assert unknown_applied(seed, seed.versions) == []


def test_unknown_applied_version_cannot_be_rolled_back(seed: Catalog) -> None:
    with pytest.raises(UnknownAppliedMigration) as info:
        rollback_plan(seed, ["0001", "0025"], "0025")
    assert info.value.version == "0025"
    message = str(info.value)
    assert "0025 is recorded as applied but has no file in the catalog" in message
    assert "restore its file from version control" in message


def test_unknown_applied_version_matches_in_another_spelling(seed: Catalog) -> None:
    with pytest.raises(UnknownAppliedMigration):
        rollback_plan(seed, ["0001", "0025"], "25")


def test_unknown_applied_versions_block_rollbacks_unless_applied_before(seed: Catalog) -> None:
    """Issue 22 point 4: a version without a file may depend on what a rollback takes, unless it came first."""
    from planner.errors import MissingFileInScope
    from planner.ledger import LedgerEntry

    with pytest.raises(MissingFileInScope):
        rollback_plan(seed, ["0001", "0099"], "0001")  # bare versions: no time, so no proof
    entries = {"0099": LedgerEntry("0099", None, "2025-01-01 09:00:00"),
               "0001": LedgerEntry("0001", None, "2025-01-01 10:00:00")}
    assert rollback_plan(seed, entries, "0001").versions == ["0001"]


def test_strange_ledger_spellings_do_not_crash(seed: Catalog) -> None:
    # "²" is a digit to str.isdigit() but not to int(): it must be an unknown version, not a ValueError.
    assert unknown_applied(seed, ["\u00b2", "0001"]) == ["\u00b2"]
    assert apply_plan(seed, ["\u00b2", "0001"]).versions == ["0020", "0027", "0029", "0030"]
    with pytest.raises(UnknownAppliedMigration):
        rollback_plan(seed, ["\u00b2"], "\u00b2")
    with pytest.raises(MigrationNotFound):
        rollback_plan(seed, [], "\u00b2")


def test_plan_errors_share_a_base(seed: Catalog) -> None:
    for call in (
        lambda: rollback_plan(seed, [], "0001"),
        lambda: rollback_plan(seed, seed.versions, "0001"),
        lambda: apply_plan(seed, ["0029"]),
        lambda: apply_plan(seed, [], target="9999"),
    ):
        with pytest.raises(PlanError):
            call()
