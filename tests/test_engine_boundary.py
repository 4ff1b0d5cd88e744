"""The engine boundary holds: the step protocol is engine-free, and a third engine is one small session class.

``MemorySession`` below is a whole engine's running part in about forty
lines: a "database" that is a dict, transactions that are copies. If the
loops in ``planner.session`` leaked anything of SQLite or PostgreSQL, this
engine could not run them; the tests check it gets the same guarantees (a
failing step rolled back alone, an atomic plan all or nothing, a preview
that commits nothing unless accepted, marks refused as on a real engine).
"""

from __future__ import annotations

import ast
import copy
from contextlib import contextmanager
from pathlib import Path

import pytest

from planner.errors import AlreadyApplied, LedgerChanged, MigrationFailed
from planner.ledger import APPLY, FAILED, OK, ROLLBACK, SKIPPED
from planner.migration import Migration
from planner.plan import Plan, Step
from planner.preview import Preview
from planner.marks import record_mark, record_marks
from planner.session import Session

ROOT = Path(__file__).resolve().parent.parent

#: Modules that must not know which engine runs them.
ENGINE_FREE = ["planner/session.py", "planner/plan.py", "planner/graph.py", "planner/catalog.py",
               "planner/marks.py", "planner/lint.py", "planner/preview.py", "planner/events.py"]
ENGINE_MODULES = {"sqlite3", "psycopg"}  # and every planner.engines module but base


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", ENGINE_FREE)
def test_the_planner_and_the_step_protocol_import_no_engine(module):
    names = imported(ROOT / module)
    leaked = {n for n in names if n in ENGINE_MODULES or n.startswith("planner.engines.")
              and n not in {"planner.engines.base"}}
    assert not leaked, f"{module} imports engine-specific modules: {sorted(leaked)}"


def test_the_cli_never_asks_which_engine_it_has():
    """Engine choice is made once (``Settings.engine``); commands call the engine, they do not branch on it."""
    offenders = []
    for path in sorted((ROOT / "cli").glob("*.py")):
        if path.name == "options.py":  # where the choice is made
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "db_url is not None" in line or "db_url is None" in line:
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders


# -- a third engine: a dict ------------------------------------------------------------


class MemoryLedger:
    def __init__(self, db: dict):
        self.db = db

    def applied_versions(self) -> list[str]:
        return list(self.db["ledger"])

    def applied_migrations(self) -> dict:
        return dict.fromkeys(self.db["ledger"])

    def log(self, version, action, outcome, checksum=None, execution_ms=None, detail=None) -> None:
        self.db["log"].append((version, action, outcome, detail))


class MemoryConnection:
    """What a migration receives: it can write tables, and nothing ends our transaction."""

    tampered = None

    def __init__(self, db: dict, observer):
        self.db, self.observer = db, observer

    def put(self, table: str, row: object) -> None:
        if self.observer is not None:
            self.observer.statements.append(f"put {table}")
        self.db["tables"].setdefault(table, []).append(row)

    def drop(self, table: str) -> None:
        self.db["tables"].pop(table)


class MemorySession(Session):
    """The five things an engine supplies, over a dict; transactions are deep copies."""

    def __init__(self, store: dict, plan: Plan, **kwargs):
        super().__init__(store, MemoryLedger(store["db"]), plan, **kwargs)
        self.store = store

    @contextmanager
    def transaction(self):
        working = copy.deepcopy(self.store["db"])
        committed, self.store["db"] = self.store["db"], working
        self.ledger.db = working
        try:
            yield
        except BaseException:
            self.store["db"] = self.ledger.db = committed
            self._applied = None
            raise

    def applied_now(self) -> set[str]:
        if self._applied is None:
            self._applied = self.read_applied()
        return self._applied

    def connection_for(self, step, observer=None):
        return MemoryConnection(self.store["db"], observer)

    def verify(self, step, proxy, observer=None) -> None:
        pass

    def record(self, step, execution_ms, action=None, detail=None) -> None:
        ledger = self.store["db"]["ledger"]
        if step.direction == APPLY:
            ledger.append(step.version)
        else:
            ledger.remove(step.version)
        self.ledger.log(step.version, action or step.direction, OK, detail=detail)


def migration(version: str, depends_on: tuple[str, ...] = (), upgrade=None, downgrade=None) -> Migration:
    return Migration(version=version, description=f"m{version}", path=Path(f"m_{version}.py"),
                     checksum=version, depends_on=depends_on, dependency_source="depends_on", doc="",
                     upgrade=upgrade or (lambda conn: conn.put(f"t{version}", version)),
                     downgrade=downgrade or (lambda conn: conn.drop(f"t{version}")))


def fail(conn) -> None:
    conn.put("half", "done")
    raise RuntimeError("boom")


@pytest.fixture
def store() -> dict:
    return {"db": {"tables": {}, "ledger": [], "log": []}}


def chain(*extra: Migration) -> Plan:
    one, two = migration("0001"), migration("0002", ("0001",))
    return Plan(APPLY, tuple(Step(m, APPLY) for m in (one, two, *extra)))


def test_step_by_step_a_failure_rolls_back_its_step_alone(store):
    plan = chain(migration("0003", ("0002",), upgrade=fail))
    with pytest.raises(MigrationFailed, match="boom"):
        list(MemorySession(store, plan).stepwise())
    db = store["db"]
    assert db["ledger"] == ["0001", "0002"]
    assert set(db["tables"]) == {"t0001", "t0002"}  # "half" was rolled back with its step
    assert [(v, outcome) for v, _, outcome, _ in db["log"]] == [("0001", OK), ("0002", OK), ("0003", FAILED)]


def test_atomic_is_all_or_nothing(store):
    plan = chain(migration("0003", ("0002",), upgrade=fail))
    with pytest.raises(MigrationFailed):
        list(MemorySession(store, plan, atomic=True).atomic())
    assert store["db"]["ledger"] == [] and store["db"]["tables"] == {}
    list(MemorySession(store, chain(), atomic=True).atomic())
    assert store["db"]["ledger"] == ["0001", "0002"]


def test_a_step_already_done_is_skipped_and_logged(store):
    list(MemorySession(store, chain()).stepwise())
    events = list(MemorySession(store, chain()).stepwise())
    assert [type(e).__name__ for e in events] == ["StepStarted", "StepSkipped"] * 2
    assert [outcome for _, _, outcome, _ in store["db"]["log"][-2:]] == [SKIPPED, SKIPPED]


def test_a_rollback_with_an_applied_dependent_outside_the_plan_is_refused_inside_the_lock(store):
    plan = chain()
    list(MemorySession(store, plan).stepwise())
    rollback = Plan(ROLLBACK, (Step(plan.steps[0].migration, ROLLBACK),))
    # Without a catalog the session knows the dependents the plan shows it; here 0002 is applied and depends on 0001.
    session = MemorySession(store, Plan(ROLLBACK, (Step(plan.steps[1].migration, ROLLBACK),)))
    session.use(rollback)
    with pytest.raises(LedgerChanged):
        list(session.stepwise())
    assert store["db"]["ledger"] == ["0001", "0002"]


class Watcher:
    def __init__(self):
        self.statements: list[str] = []

    def start_step(self):
        self.statements = []

    def end_step(self):
        return [], [], list(self.statements)

    def stop(self):
        pass


@pytest.mark.parametrize("accepted", [False, True])
def test_the_preview_runs_the_plan_once_and_commits_only_if_accepted(store, accepted):
    result = Preview(chain())
    MemorySession(store, chain(), atomic=True).preview(result, Watcher(), accept=lambda preview: accepted)
    assert [s.sql for s in result.steps] == [["put t0001"], ["put t0002"]]
    assert result.committed is accepted
    assert store["db"]["ledger"] == (["0001", "0002"] if accepted else [])


def test_marks_refuse_as_on_any_engine(store):
    plan = chain()
    record_marks(MemorySession(store, plan), list(plan.steps), "baseline")
    assert store["db"]["ledger"] == ["0001", "0002"] and store["db"]["tables"] == {}  # nothing was run
    with pytest.raises(AlreadyApplied):
        record_mark(MemorySession(store, plan), plan.steps[0], "mark-applied")
