"""Measuring what a PostgreSQL preview's statements lock and rewrite, read from the server, not guessed.

The preview runs each statement inside the real transaction, so the server
can say what it did (``LockWatch`` wraps the preview's observer, which
``postgresql.observe`` keeps to data loss):

* **locks**: after each statement that may lock what it did not create,
  this backend's own granted relation locks (``pg_locks``, our pid),
  kept for relations that existed before the plan (read once at its
  start: oid and file node), with their size (``reltuples``,
  ``pg_relation_size``). A statement that can only lock what it creates
  (``CREATE TABLE`` without ``REFERENCES``, ``PARTITION OF``, ``INHERITS``
  or ``LIKE``; ``CREATE SEQUENCE``/``FUNCTION``/``VIEW``...) and a data
  statement (``INSERT``, ``UPDATE``...: ROW EXCLUSIVE, which blocks no
  reader) are not read after, to keep the preview's cost down; nor is a
  ``DROP TABLE`` of tables without foreign keys or inheritance links (what
  it locks is gone with it, and the scan of ``pg_locks`` grows with every
  lock the transaction holds);
* **rewrites**: a relation of the plan's past whose file node changed
  (a type change, a volatile default, ``SET LOGGED``, ``CLUSTER``,
  ``VACUUM FULL``...; ``TRUNCATE`` is left to the data-loss report);
* **validating scans**: an ``ALTER TABLE`` that adds a constraint or sets
  ``NOT NULL`` is bracketed by the table's scan counters
  (``pg_stat_xact_user_tables``): a scan under its lock is measured;
* **held across**: once a statement holds ACCESS EXCLUSIVE on a table of
  the plan's past, every later statement of the transaction runs under
  it; a preview is one transaction, so later steps count too.
* **held since**: a lock an earlier step of the transaction took shows no
  new row for a later step that takes it again. A later statement that
  names the relation lists it (``LockTaken.held_since``: that step's
  version) and is judged as if it took it, so each step's locks and
  findings are its own, as when it runs alone. A ``VALIDATE CONSTRAINT``
  scanning a table an earlier migration of the same run still holds
  (SHARE or stronger) is ``validate-same-run``: the safe pattern's two
  halves belong in separate runs.

A statement that runs only outside a transaction (``VACUUM FULL``,
``REINDEX SCHEMA``) cannot be measured: ``LockWatch.judged`` gives the
findings its kind implies, for a ``transactional = False`` step run for
real (each of its statements measured in a transaction of its own,
``LockWatch.alone``) and for what a dry run passes over.

Objects created earlier in the same plan have no entry in the first
reading, so nothing about them is ever a finding. Not measured: what
``conn.raw`` runs (one reading at the end of such a step catches its
locks, not its scans); how long the locks would be held on production data.

Lock timeouts with retries are ``postgresql.lock_timeout``.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from typing import Any

from planner.engines.postgresql.sql import _qualified as qualified_name
from planner.engines.postgresql.sql import _skip as skip_words
from planner.engines.postgresql.sql import (
    classify,
    first_keywords,
    rewritten_table,
    tokens,
    top_level_split,
)
from planner.engines.postgresql.schema import OWNED
from planner.engines.postgresql.snapshot import qualified, shown
from planner.engines.postgresql.step_catalog import Statement
from planner.ledger import LOG_TABLE, TABLE
from planner.locks import (
    BLOCKING,
    MODES,
    LockFinding,
    LockPolicy,
    LockSettings,
    LockTaken,
    StepLocks,
    mode_rank,
    short_mode,
    shown_duration,
)
from planner.preview import watched

_USER = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%' "
         "AND n.nspname NOT LIKE 'pg\\_temp%%'")
#: Every relation, so what a statement locks in another schema (a shared one) is known as older than the plan; the
#: size only of those in a schema the run owns (``schema.own_schemas``): ``pg_relation_size`` waits for a lock
#: another session holds on what it measures, and another tenant's relations are not the run's to wait for. (The
#: readings after a statement measure only relations it locked, whichever schema: those wait for nobody.)
_BEFORE = (f"SELECT c.oid, c.relfilenode, c.reltuples::float8, CASE WHEN {OWNED.format(ns='n')} "
           "THEN pg_relation_size(c.oid) END FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
           f"WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I') AND {_USER}")
_LOCKS = ("SELECT l.relation, l.mode, c.relfilenode, c.reltuples::float8, pg_relation_size(c.oid), n.nspname, "
          "c.relname, c.relkind, coalesce(i.indrelid, 0) "
          "FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
          "LEFT JOIN pg_index i ON i.indexrelid = c.oid "
          f"WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted AND {_USER}")
_LOCKS_PREPARED = Statement("lock_reading", _LOCKS)
_SCANS = ("SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) FROM pg_stat_xact_user_tables "
          "WHERE relid = to_regclass(%s)")
_SCANS_AFTER = f"SELECT to_regclass(%s)::oid, ({_SCANS})"
#: The names of the tables that lock more than themselves when dropped: those with a foreign key (dropping one
#: takes ACCESS EXCLUSIVE on the table it references), a partition or an inheritance link. Read once for a
#: run of drops, and again after any other statement that may have added one.
_LINKED = ("SELECT DISTINCT c.relname FROM pg_class c WHERE c.oid IN (SELECT conrelid FROM pg_constraint "
           "WHERE contype = 'f' UNION SELECT inhrelid FROM pg_inherits UNION SELECT inhparent FROM pg_inherits)")
#: Rows read (scanned or fetched) and written per table in this transaction: what a statement under a held ACCESS
#: EXCLUSIVE did to existing tables (a metadata-only ALTER reads and writes none).
_TOUCHED = ("SELECT relid, relname, seq_tup_read + coalesce(idx_tup_fetch, 0), n_tup_ins + n_tup_upd + n_tup_del "
            "FROM pg_stat_xact_user_tables WHERE seq_tup_read + coalesce(idx_tup_fetch, 0) + n_tup_ins + n_tup_upd "
            "+ n_tup_del > 0")
_TOUCHED_PREPARED = Statement("rows_touched", _TOUCHED)
#: Words of a statement that may change which relation a name resolves to (``LockWatch._resolved``).
_RENAMES = re.compile(r"\b(RENAME|SCHEMA|SEARCH_PATH)\b", re.I)
#: Seconds from which a statement run under a held ACCESS EXCLUSIVE counts as work although it touched no rows of
#: an existing table (a function that sleeps or waits, a large INSERT into a new table): readers notice a quarter
#: second, and an instant catalog change stays far below it even on a loaded server.
SLOW = 0.25
_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_$]*(\.[a-z_][a-z0-9_$]*)?$")

#: The user tables a statement that names none may reach: (oid, schema, name, rows estimate, bytes).
_TABLES = ("SELECT c.oid, n.nspname, c.relname, c.reltuples::float8, pg_relation_size(c.oid) FROM pg_class c "
           f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') AND {_USER}")
_HAS_INDEX = "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid)"
_CLUSTERED = "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisclustered)"
_VACUUM_WORDS = {"FULL", "FREEZE", "VERBOSE", "ANALYZE", "ANALYSE"}


def outside_target(sql: str) -> tuple[str, list[str], str, tuple] | None:
    """What a statement that may run only outside a transaction would cost, by its kind: (finding code, the
    tables it names, else the condition on ``pg_class c`` for those it reaches, its parameters); ``None``
    for a statement that blocks nobody (``CONCURRENTLY``, plain ``VACUUM``, ``ANALYZE``) or reaches no user table.
    """
    parts = tokens(sql)
    if not parts:
        return None
    head, i = parts[0].upper, 1
    options: list[str] = []
    if i < len(parts) and parts[i].text == "(":  # VACUUM (FULL, ANALYZE) t; REINDEX (VERBOSE) ...
        close = next((j for j in range(i, len(parts)) if parts[j].text == ")"), len(parts))
        for option in top_level_split(list(parts[i + 1:close])):
            spelled = [t.text.upper() for t in option]
            if spelled and (len(spelled) == 1 or spelled[1] in ("TRUE", "ON", "1", "YES")):
                options.append(spelled[0])
        i = close + 1
    if head == "VACUUM":
        while i < len(parts) and parts[i].upper in _VACUUM_WORDS:
            options.append(parts[i].upper)
            i += 1
        return ("table-rewrite", _names(parts[i:]), "true", ()) if "FULL" in options else None
    if head == "CLUSTER":
        i = skip_words(parts, i, "VERBOSE")
        return "table-rewrite", _names(parts[i:], until="USING"), _CLUSTERED, ()
    if head == "REINDEX" and i < len(parts) and not any(t.upper == "CONCURRENTLY" for t in parts):
        kind, i = parts[i].upper, i + 1
        if kind == "SCHEMA" and i < len(parts) and parts[i].name is not None:
            return "index-not-concurrent", [], f"{_HAS_INDEX} AND n.nspname = %s", (parts[i].name,)
        if kind == "DATABASE":
            return "index-not-concurrent", [], _HAS_INDEX, ()
        if kind == "TABLE":
            return "index-not-concurrent", _names(parts[i:]), _HAS_INDEX, ()
    return None


def _names(parts: Any, until: str = "") -> list[str]:
    """The relation names of a comma-separated list (``t (a, b), s.u``), columns left out."""
    names = []
    for group in top_level_split(list(parts)):
        name, _ = qualified_name(group, 0)
        if name is not None and name.upper() != until:
            names.append(name)
    return names


#: First keywords of statements that take no lock worth reporting (ROW EXCLUSIVE at most) or lock nothing.
_DATA = {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "MERGE", "TABLE", "SET", "SHOW", "COPY",
         "COMMENT", "GRANT", "REVOKE", "SAVEPOINT", "RELEASE", "NOTIFY", "LISTEN", "PREPARE", "EXECUTE"}
#: ``CREATE <word>`` statements that can lock only what they create (unless one of ``_REACHES`` appears).
_CREATES_ONLY = {"TABLE", "SEQUENCE", "FUNCTION", "PROCEDURE", "TYPE", "SCHEMA", "VIEW", "DOMAIN", "EXTENSION",
                 "UNLOGGED", "TEMP", "TEMPORARY", "OR", "ROLE", "AGGREGATE", "COLLATION"}
_REACHES = {"REFERENCES", "PARTITION", "INHERITS", "LIKE", "SELECT", "TRIGGER"}
#: Words of an ``ALTER TABLE`` that may validate existing rows by scanning them.
_VALIDATES = {"NOT", "CONSTRAINT", "CHECK", "FOREIGN", "REFERENCES", "PRIMARY", "UNIQUE"}


#: The benchmark's switch (tests/benchmarks/bench_postgres.py, section 6): ``False`` keeps the watch in
#: place but reads nothing, to measure what the analysis costs. Not a setting: no user turns it off.
MEASURING = True


@lru_cache(maxsize=256)  # asked twice for each statement a preview runs
def measured(query: str) -> bool:
    """Whether a statement may lock a relation it did not create: then its locks are read after it."""
    words = first_keywords(query, 3)
    if not words or words[0] in _DATA:
        return False
    if words[0] == "CREATE" and len(words) > 1 and words[1] in _CREATES_ONLY:
        return any(token.upper in _REACHES for token in tokens(query) if token.kind == "word")
    return True


class LockWatch:
    """The preview's observer (``postgresql.observe.PgObserver``) with the lock measurements beside it.

    Every call the connection and the session make goes to the observer
    first; this only adds its readings. ``steps`` holds one ``StepLocks``
    per step the observer watched, in order, for the runner to attach.
    """

    def __init__(self, inner: Any, conn: Any, policy: LockPolicy, settings: LockSettings, ledger_tables: set[str]):
        self.inner, self.conn, self.policy, self.settings = inner, conn, policy, settings
        self.ledger_tables = ledger_tables
        self.steps: list[StepLocks] = []
        self._before: dict[int, int] | None = None  # oid -> file node, as the plan found them
        #: Per (step, relation) holding ACCESS EXCLUSIVE, what ran under it since: the step that took it first
        #: (kept to the end of the plan), or one that needs it while held (kept to the end of that step).
        self._held: dict[tuple[int, int], _Held] = {}
        #: (relation, mode) already taken in the transaction: the step that took it first, and its version.
        self._taken: dict[tuple[int, str], tuple[StepLocks, str]] = {}
        self._mine: set[tuple[int, str]] = set()  # (relation, mode) the current step has listed and judged
        self._version = "?"
        #: Per relation of the plan's past locked ACCESS EXCLUSIVE: the step's version, the lock, when taken.
        self._exclusive: dict[int, tuple[str, LockTaken, float]] = {}
        self._passed = False  # the statement under way was passed over by a dry run: it did not run
        self._current: StepLocks | None = None
        #: Per relation, its (rows estimate, bytes) when the current step first locked it: every lock and
        #: finding of the step names that size, not one its own later statements grew (an UPDATE, an index).
        self._sizes: dict[int, tuple[float, int]] = {}
        #: Per relation of the plan's past, its (rows estimate, bytes) as last read before any rewrite of it: a
        #: rewrite is seen after it, when the size read is the new file's.
        self._known: dict[int, tuple[float, int]] = {}
        self._declared: float | None = None
        self._scan: tuple[str, int] | None = None
        self._raw = False
        self._measuring = MEASURING
        self._alone = False  # the statement under way is a DROP TABLE that locks only what it drops
        #: Relation names statements spelled, and their oids (``_named``), until a statement may change them.
        self._resolved: dict[str, int | None] = {}
        self._unread: list[str] = []  # the step's statements not read after (data statements, plain drops)
        self._unread_names: list[set[str]] = []  # the relation names each of them spells, parsed when needed
        self._linked: set[str] | None = None  # _LINKED, while no statement since may have changed it
        #: For the statement under way, when a large table's ACCESS EXCLUSIVE is held: those locks, its start,
        #: and the rows touched so far (``_touched``).
        self._work: tuple[list[_Held], float, dict[int, tuple[int, int]]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # -- the session's calls -----------------------------------------------------------

    def start_step(self) -> None:
        self.inner.start_step()
        if self._before is None and self._measuring:
            self._first_reading()
        self._current = StepLocks([], [], [])
        self._sizes, self._mine, self._unread, self._unread_names = {}, set(), [], []
        self._raw = self._passed = False
        self.steps.append(self._current)

    def declare(self, lock_timeout: float | None, version: str = "?") -> None:
        """The step's migration declares its own lock timeout (``None``: the run's); ``version`` names the step in
        what a later step is told about the locks it took."""
        self._declared, self._version = lock_timeout, version

    def end_step(self) -> Any:
        if self._raw and self._current is not None and self._measuring:
            self._read("(statements run through conn.raw)")  # what ran unseen still holds its locks
        self._finish()
        return self.inner.end_step()

    def stop(self) -> None:
        """The step ended early: a failure (all is rolled back) or a rehearsal that cannot go beyond a statement
        (its savepoint is rolled back, releasing what it locked): nothing it took is held for later steps."""
        step = self._current
        self._resolved = {}  # what it created or renamed is undone
        self._taken = {key: owner for key, owner in self._taken.items() if owner[0] is not step}
        self._held = {key: held for key, held in self._held.items() if held.step is not step}
        self._exclusive = {oid: held for oid, held in self._exclusive.items() if held[0] != self._version}
        for held in self._held.values():
            held.forget(self._version)
        self._finish()
        self.inner.stop()

    def alone(self, inner: Any) -> None:
        """The next step is one statement in a transaction of its own (a ``transactional = False`` step, run for
        real), watched by ``inner``: nothing an earlier statement locked is still held, or held across it.

        What existed when the step began stays "before": what its earlier statements created is never a finding.
        """
        self.inner = inner
        self._taken.clear()
        self._held.clear()
        self._linked = None

    def passed_over(self, sql: str) -> None:
        """A dry run passed over ``sql`` (it runs only outside a transaction): its judged findings are its step's."""
        if self._current is not None and self._measuring:
            self._passed = True  # nothing it would lock is read after it: what is held is earlier steps'
            for held in self._held.values():
                held.undo(self._version)
            self._current.findings.extend(self.judged(sql))

    def judged(self, sql: str) -> list[LockFinding]:
        """The findings of a statement that runs only outside a transaction, judged by its kind (it cannot be
        measured: nothing could roll it back).

        ``CONCURRENTLY`` is the safe form, plain ``VACUUM`` and ``ANALYZE`` take SHARE UPDATE EXCLUSIVE: no
        finding. ``VACUUM FULL`` and ``CLUSTER`` rewrite each table they name (all of them, or every clustered
        one, when they name none) under ACCESS EXCLUSIVE: ``table-rewrite``. ``REINDEX SCHEMA``/``DATABASE``
        without ``CONCURRENTLY`` rebuild every index of their tables under SHARE: ``index-not-concurrent``.
        Tables created since the step (or the plan) began are never findings, as in the measured case.
        """
        target = outside_target(sql)
        if target is None:
            return []
        code, names, where, parameters = target
        if self._before is None:
            self._first_reading()
        assert self._before is not None  # _first_reading read it
        if names:
            oids = [row[0] for name in names
                    if (row := self.conn.execute("SELECT to_regclass(%s)::oid", (name,)).fetchone())[0] is not None]
            rows = self.conn.execute(f"{_TABLES} AND c.oid = ANY(%s)", (oids,)).fetchall() if oids else []
        else:
            rows = self.conn.execute(f"{_TABLES} AND {where}", parameters).fetchall()
        statement = " ".join(sql.split())
        found: list[LockFinding] = []
        for oid, schema, name, tuples, size in rows:
            if oid not in self._before or name in self.ledger_tables:
                continue
            relation = shown(schema, name)
            if code == "table-rewrite":
                text = (f"rewrites {relation} ({_size(tuples, size)}) under ACCESS EXCLUSIVE: {_cut(statement)} "
                        f"(judged by its kind: it runs only outside a transaction, so it is not measured)")
                found.append(LockFinding(code, self.policy.level(code), relation, text))
            else:
                text = (f"rebuilds indexes of {relation} ({_size(tuples, size)}) under SHARE, each index under "
                        f"ACCESS EXCLUSIVE: {_cut(statement)} (judged by its kind: it runs only outside a "
                        f"transaction, so it is not measured)")
                found.append(LockFinding(code, self.policy.level(code, self._holds_rows(relation, tuples, size)),
                                         relation, text))
        timeout = self._declared if self._declared is not None else self.settings.lock_timeout
        if found and timeout <= 0:
            found.append(LockFinding(
                "no-lock-timeout", self.policy.level("no-lock-timeout"), found[0].relation,
                f"takes {'ACCESS EXCLUSIVE' if code == 'table-rewrite' else 'SHARE'} on {found[0].relation} with no "
                f"lock timeout: behind a long transaction it would wait without limit, and every query on "
                f"{found[0].relation} would wait behind it"))
        return found

    def unwatched(self) -> None:
        self._raw, self._resolved = True, {}
        self._linked = None
        self.inner.unwatched()

    # -- the connection's calls, per statement -----------------------------------------

    def before(self, sql: str, query: str, parameters: Any) -> None:
        self.inner.before(sql, query, parameters)
        if not self.inner.running or self._current is None or not self._measuring:
            return
        large = [held for held in self._held.values() if held.large]
        # What the statement does under a large table's ACCESS EXCLUSIVE is measured, so that only work (rows
        # read or written, a rewrite, an index build, time) is held against the lock, not instant metadata changes.
        self._work = (large, time.perf_counter(), self._touched()) if large else None
        self._scan = None
        if first_keywords(query, 1)[:1] not in (["ALTER"], ["UPDATE"], ["INSERT"], ["DELETE"], ["SELECT"]) or \
                _RENAMES.search(query):
            self._resolved = {}  # it may create, drop, rename or move relations, or change the search path
        self._alone = self._drops_alone(query)
        table = rewritten_table(query)
        if table is not None and _VALIDATES & {t.upper for t in tokens(query) if t.kind == "word"}:
            row = self.conn.execute(_SCANS, (table,)).fetchone()
            self._scan = (table, row[0])

    def after(self, sql: str, query: str, parameters: Any, rowcount: int) -> None:
        passed, self._passed = self._passed, False
        work, self._work = self._work, None
        if work is not None and not passed:  # read before _read, whose own queries touch rows
            seconds, (read, written) = time.perf_counter() - work[1], _delta(self._touched(), work[2])
        rewrites = len(self._current.rewrites) if self._current is not None else 0
        if self._measuring and self.inner.running and self._current is not None and not passed:
            if measured(query) and not self._alone:
                self._read(" ".join(sql.split()), query)
            else:
                self._unread.append(query)  # its weak locks show at the next reading: whose they are (``_read``)
        if work is not None and not passed and self._current is not None:
            words = first_keywords(query, 3)
            kind = ("index" if words[:1] == ["REINDEX"] or words[:1] == ["CREATE"] and "INDEX" in words[1:3]
                    else "rewrite" if len(self._current.rewrites) > rewrites
                    else "write" if written else "read" if read else "slow" if seconds >= SLOW else None)
            if kind is not None:
                for held in work[0]:
                    held.ran(self._version, " ".join(sql.split()), kind, read, written, seconds)
        self.inner.after(sql, query, parameters, rowcount)

    def _touched(self) -> dict[int, tuple[int, int]]:
        """Rows read and written so far in the transaction, per table of the plan's past (ledger's left out)."""
        before = self._before or {}
        prepared = getattr(self.inner, "prepared", None)  # planned once per preview, as the lock reading is
        rows = (prepared.execute(self.conn, _TOUCHED_PREPARED) if prepared is not None
                else self.conn.execute(_TOUCHED)).fetchall()
        return {oid: (read, written) for oid, name, read, written in rows
                if oid in before and name not in self.ledger_tables}

    # -- the readings ------------------------------------------------------------------------

    def _first_reading(self) -> None:
        """The relations as the plan (or a step outside a transaction) found them: file node, rows, bytes."""
        rows = self.conn.execute(_BEFORE).fetchall()
        self._before = {oid: node for oid, node, _, _ in rows}
        self._known = {oid: (tuples, size) for oid, _, tuples, size in rows if size is not None}

    def _drops_alone(self, query: str) -> bool:
        """Whether ``query`` drops tables that lock nothing else: then no reading follows it.

        A reading after it could not show the dropped tables (their catalog
        rows are gone), and the scan of ``pg_locks`` grows with every lock the
        transaction holds: read after each of a rollback's 500 drops, it made
        the analysis cost a third of the run (docs/performance.md, Locks).
        Which tables have a foreign key or an inheritance link is read once
        (``_LINKED``), and again after any statement that may change it.
        """
        if first_keywords(query, 2) != ["DROP", "TABLE"] or any(t.upper == "CASCADE" for t in tokens(query)):
            if measured(query):
                self._linked = None  # it may add a foreign key or a partition
            return False
        names = classify(query).tables
        if not names or not all(_PLAIN_NAME.match(name) for name in names):
            return False  # a quoted or odd name: read after it rather than compare spellings
        if self._linked is None:
            self._linked = {row[0] for row in self.conn.execute(_LINKED).fetchall()}
        return not any(name.rsplit(".", 1)[-1] in self._linked for name in names)

    def _read(self, statement: str, query: str = "") -> None:
        step = self._current
        assert step is not None and self._before is not None
        prepared = getattr(self.inner, "prepared", None)  # planned once per preview (``postgresql.prepared``)
        rows = (prepared.execute(self.conn, _LOCKS_PREPARED) if prepared is not None
                else self.conn.execute(_LOCKS)).fetchall()
        words = first_keywords(query, 3)
        names: list[str] | None = None

        def spelled() -> list[str]:  # the relations the statement names, parsed only for a lock it may not own
            nonlocal names
            names = _relations_named(query) if names is None else names
            return names

        tables: dict[int, tuple[str, float, int]] = {}
        for oid, mode, node, tuples, size, schema, name, kind, parent in rows:
            if oid not in self._before or name in self.ledger_tables:
                continue  # created by the plan (never a finding), or the ledger's own rows
            rewritten, now = node != self._before[oid], (tuples, size)
            # The size the step found: read before this statement rewrote the table, if it just did.
            tuples, size = self._sizes.setdefault(oid, self._known.get(oid, now) if rewritten else now)
            self._known[oid] = now
            relation = shown(schema, name)
            if rewritten and words[:1] != ["TRUNCATE"]:
                self._before[oid] = node  # one rewrite is told once
                step.rewrites.append(relation)
                if kind not in ("i", "I"):
                    step.findings.append(LockFinding("table-rewrite", self.policy.level("table-rewrite"),
                                                     relation, f"rewrites {relation} ({_size(tuples, size)}) "
                                                     f"under ACCESS EXCLUSIVE: {_cut(statement)}"))
            if kind in ("i", "I"):
                continue  # an index's lock follows its table's
            rank = mode_rank(mode)
            tables[oid] = (relation, tuples, size)
            key = (oid, mode)
            if key in self._mine:
                continue  # listed and judged for an earlier statement of this step
            owner, version = self._taken.get(key, (None, self._version))
            if owner is None:
                if rank < _DATA_LOCKS and oid not in self._named(spelled(), name) and \
                        oid not in self._named_before(name):
                    continue  # a data statement of an earlier step took it, unread: it is no step's of these
                owner, version = self._taken[key] = (step, self._version)
            elif owner is not step and oid not in self._named(spelled(), name):
                continue  # an earlier step's lock on a relation this statement does not name
            # A lock an earlier step took shows no new row when this statement takes it again: the step lists it
            # and is judged as if it took it (a gated index build would hide behind an accepted one otherwise).
            self._mine.add(key)
            taken = LockTaken(relation, mode, None if tuples < 0 else round(tuples), size,
                              None if owner is step else version)
            known = next((lock for lock in step.locks if lock.relation == relation), None)
            if known is None or mode_rank(known.mode) < rank:  # the step's strongest lock on each relation
                if known is not None:
                    step.locks.remove(known)
                step.locks.append(taken)
            self._judge(step, oid, taken, words, statement, tuples, size)
        if self._scan is not None:
            self._scanned(step, words, statement, tables)
            self._scan = None

    def _named(self, names: Any, relname: str) -> set[int]:
        """The oids of the relations ``names`` (those a statement spells where a relation goes, ``_relations_named``)
        spelled ``relname``: a lock an earlier step holds is a statement's too only on a relation it names.

        By oid, as the server resolves the names (search path, schema), not by spelling: a column, an index or a
        table of another schema with the same name is not that relation.
        """
        names = [name for name in names if name.rsplit(".", 1)[-1] == relname]
        wanted = [name for name in names if name not in self._resolved]
        if wanted:
            spelled = [".".join('"' + part.replace('"', '""') + '"' for part in name.split(".")) for name in wanted]
            rows = self.conn.execute("SELECT to_regclass(x)::oid FROM unnest(%s::text[]) AS x", (spelled,))
            self._resolved.update(zip(wanted, (row[0] for row in rows.fetchall())))
        return {oid for name in names if (oid := self._resolved[name]) is not None}

    def _named_before(self, relname: str) -> set[int]:
        """``_named`` for the step's statements not read after: each is parsed once per step."""
        for query in self._unread[len(self._unread_names):]:
            self._unread_names.append(set(_relations_named(query)))
        return self._named({name for spelled in self._unread_names for name in spelled}, relname)

    def _judge(self, step: StepLocks, oid: int, taken: LockTaken, words: list[str], statement: str,
               tuples: float, size: int) -> None:
        relation, rank = taken.relation, mode_rank(taken.mode)
        if taken.mode == "ShareLock" and words[:1] == ["CREATE"] and "INDEX" in words[1:3]:
            rows = self._holds_rows(relation, tuples, size)
            step.findings.append(LockFinding(
                "index-not-concurrent", self.policy.level("index-not-concurrent", rows), relation,
                f"builds an index on {relation} ({_size(tuples, size)}) under SHARE, blocking its writes for the "
                f"whole build: {_cut(statement)}"))
        elif taken.mode == "ShareLock" and words[:1] == ["REINDEX"]:
            rows = self._holds_rows(relation, tuples, size)
            step.findings.append(LockFinding(
                "index-not-concurrent", self.policy.level("index-not-concurrent", rows), relation,
                f"rebuilds indexes of {relation} ({_size(tuples, size)}) under SHARE, each index under ACCESS "
                f"EXCLUSIVE: writes, and reads that use the index, wait for the whole build: {_cut(statement)}"))
        timeout = self._declared if self._declared is not None else self.settings.lock_timeout
        if rank >= BLOCKING and timeout <= 0 and not any(f.code == "no-lock-timeout" for f in step.findings):
            step.findings.append(LockFinding(
                "no-lock-timeout", self.policy.level("no-lock-timeout"), relation,
                f"takes {short_mode(taken.mode)} on {relation} with no lock timeout: behind a long transaction "
                f"it would wait without limit, and every query on {relation} would wait behind it"))
        if taken.mode == "AccessExclusiveLock" and taken.held_since is None:
            self._exclusive.setdefault(oid, (self._version, taken, time.perf_counter()))
        if taken.mode == "AccessExclusiveLock" and (taken.held_since is None or _takes_exclusive(words, statement)):
            estimate = taken.rows if taken.rows is not None else (taken.bytes or 0) // 100
            self._held.setdefault((len(self.steps), oid),
                                  _Held(step, self._version, taken, estimate >= self.policy.large_table_rows))

    def _scanned(self, step: StepLocks, words: list[str], statement: str,
                 tables: dict[int, tuple[str, float, int]]) -> None:
        assert self._scan is not None and self._before is not None  # _read calls it only when both are set
        name, before = self._scan
        oid, now = self.conn.execute(_SCANS_AFTER, (name, name)).fetchone()
        if now <= before or oid not in tables or oid not in self._before:
            return
        relation, tuples, size = tables[oid]
        if relation in step.rewrites:
            return  # the rewrite is the finding: it read every row anyway
        upper = statement.upper()
        code = "set-not-null-scan" if "SET NOT NULL" in upper else "constraint-not-valid-missing"
        rows = self._holds_rows(relation, tuples, size)
        if "VALIDATE CONSTRAINT" in upper:  # the safe pattern's second half: SHARE UPDATE EXCLUSIVE, unless
            # VALIDATE takes less than SHARE itself: anything from SHARE up is an earlier statement's, of this
            # migration or an earlier one of the run, held until the run commits and blocking writes (or reads).
            earlier = [(mode_rank(mode), mode, owner[1], owner[0] is step) for (held, mode), owner in
                       self._taken.items() if held == oid and mode_rank(mode) >= BLOCKING]
            if earlier:
                _, mode, version, own = max(earlier)
                blocked = "reads and writes" if mode == "AccessExclusiveLock" else "writes"
                step.findings.append(LockFinding(
                    "validate-same-run", self.policy.level("validate-same-run", rows), relation,
                    f"scans {relation} ({_size(tuples, size)}) to validate a constraint while {short_mode(mode)} "
                    f"taken by {version}{' (this migration)' if own else ''} earlier in the same run is held (the "
                    f"run is one transaction): {blocked} wait for the scan: {_cut(statement)}"))
            return
        what = "SET NOT NULL" if code == "set-not-null-scan" else "a new constraint"
        step.findings.append(LockFinding(code, self.policy.level(code, rows), relation,
                                         f"scans {relation} ({_size(tuples, size)}) to validate {what} under its "
                                         f"lock: {_cut(statement)}"))

    def _holds_rows(self, relation: str, tuples: float, size: int) -> bool:
        if tuples > 0:
            return True
        if size == 0:
            return False
        return bool(self.conn.execute(f"SELECT EXISTS (SELECT 1 FROM {qualified(relation)})").fetchone()[0])

    def _finish(self) -> None:
        """ACCESS EXCLUSIVE locks on large tables, held while later statements did work under them: a finding of
        the step that took each, worded with what ran under it so far (refreshed at each step's end)."""
        for key, held in list(self._held.items()):
            step, taken, relation = held.step, held.taken, held.taken.relation
            if taken.held_since:
                del self._held[key]  # its step is over: only that step's statements were its own
            if held.first is None or not held.large:
                continue
            since = f" (taken by {taken.held_since})" if taken.held_since else ""
            later = {version: work[0] for version, work in held.work.items() if version != held.version}
            shown_later = ", ".join(list(later)[:3]) + (", ..." if len(later) > 3 else "")
            also = (f", {sum(later.values())} of them in later migrations of the same run ({shown_later}), "
                    f"which is one transaction" if later else "")
            text = (f"holds ACCESS EXCLUSIVE{since} on {relation} "
                    f"({_size(taken.rows if taken.rows is not None else -1, taken.bytes or 0)}) while {held.count} "
                    f"later statement(s) do work under it ({held.what()}){also}, e.g. {_cut(held.first)}: nobody "
                    f"can read {relation} until the plan commits")
            kinds = held.kinds()
            advice = ("keep the statement that takes ACCESS EXCLUSIVE alone in its migration, and "
                      + ", and ".join(_WORK_ADVICE[kind] for kind in _WORK_ADVICE if kind in kinds))
            existing = [f for f in step.findings if f.code == "access-exclusive-held" and f.relation == relation]
            if existing:
                existing[0].text, existing[0].advice = text, advice
            else:
                step.findings.append(LockFinding("access-exclusive-held", self.policy.level("access-exclusive-held"),
                                                 relation, text, advice=advice))


#: What ran under a held ACCESS EXCLUSIVE, and the advice that fits it (after "keep the statement that takes it
#: alone in its migration, and").
_WORK_ADVICE = {
    "write": "run backfills in their own steps",
    "read": "run what reads its rows (a check, a report, INSERT ... SELECT) in its own step",
    "index": "build indexes with CREATE INDEX CONCURRENTLY in a migration of their own with transactional = False",
    "rewrite": "avoid the rewrite under it (see table-rewrite), or give it a step of its own",
    "slow": "move the slow statements to their own steps",
}


class _Held:
    """An ACCESS EXCLUSIVE lock a step holds, and the work done under it since: counted as it runs, so a plan of a
    thousand steps on one table costs a thousand additions, not a thousand lists read at each step's end."""

    __slots__ = ("step", "version", "taken", "large", "first", "count", "work", "_last")

    def __init__(self, step: StepLocks, version: str, taken: LockTaken, large: bool):
        self.step, self.version, self.taken, self.large = step, version, taken, large
        self.first: str | None = None  # the first statement that did work under it: the finding's example
        self.count = 0
        #: Per version, in plan order: [statements, rows read, rows written, seconds, {kind: statements}] of the
        #: work done under it.
        self.work: dict[str, list[Any]] = {}
        self._last: tuple[str, int, int, float, str] | None = None  # what was counted last (``undo``)

    def ran(self, version: str, statement: str, kind: str, read: int, written: int, seconds: float) -> None:
        if self.taken.held_since and version != self.version:
            return  # what later migrations run under it is the finding of the step that took it
        self.count += 1
        self.first = self.first or statement
        work = self.work.setdefault(version, [0, 0, 0, 0.0, {}])
        work[0], work[1], work[2], work[3] = work[0] + 1, work[1] + read, work[2] + written, work[3] + seconds
        work[4][kind] = work[4].get(kind, 0) + 1
        self._last = (version, read, written, seconds, kind)

    def undo(self, version: str) -> None:
        """The statement counted last did not run under it (a dry run passed over it, running a stand-in)."""
        if self._last is None or self._last[0] != version or version not in self.work:
            return
        _, read, written, seconds, kind = self._last
        work = self.work[version]
        work[0], work[1], work[2], work[3] = work[0] - 1, work[1] - read, work[2] - written, work[3] - seconds
        work[4][kind] -= 1
        self.count -= 1
        if not work[0]:
            del self.work[version]
        self.first = self.first if self.count else None
        self._last = None

    def forget(self, version: str) -> None:
        """A step's statements were rolled back (a rehearsal that could not go on): none ran under it."""
        self.count -= self.work.pop(version, [0])[0]
        self.first = self.first if self.count else None

    def kinds(self) -> dict[str, int]:
        """Per kind of work (``_WORK_ADVICE``), the statements that did it under the lock."""
        kinds: dict[str, int] = {}
        for work in self.work.values():
            for kind, count in work[4].items():
                kinds[kind] = kinds.get(kind, 0) + count
        return {kind: count for kind, count in kinds.items() if count}

    def what(self) -> str:
        """The work done under it, in words: ``wrote 200 rows, built 1 index``."""
        read, written, seconds = (sum(work[i] for work in self.work.values()) for i in (1, 2, 3))
        kinds = self.kinds()
        parts = [f"built {kinds['index']} index(es)" if "index" in kinds else "",
                 f"{kinds['rewrite']} rewrite(s)" if "rewrite" in kinds else "",
                 f"wrote {written} rows" if written else "", f"read {read} rows" if read else "",
                 f"{kinds['slow']} slow statement(s)" if "slow" in kinds else "", f"{seconds:.2f} s on this database"]
        return ", ".join(part for part in parts if part)


#: Modes up to which a lock may be a data statement's (not read after it): first seen by a later statement that
#: does not name its relation, it is not that step's.
_DATA_LOCKS = MODES.index("ShareUpdateExclusiveLock")
#: Words after which a statement names a relation (a list of them after some): ``ALTER TABLE t``, ``FROM t``,
#: ``CREATE INDEX ... ON t``, ``REFERENCES t``, ``INHERITS (t)``, ``TRUNCATE a, b``...
_RELATION_BEFORE = {"INTO", "TABLE", "JOIN", "FROM", "UPDATE", "REFERENCES", "ONLY", "ON", "TRUNCATE", "LOCK",
                    "VIEW", "EXISTS", "LIKE", "OF", "PARTITION", "INHERITS", "USING", "CLUSTER"}


def _relations_named(query: str) -> list[str]:
    """The names ``query`` spells where a relation goes, schema-qualified as written, not its columns' names."""
    parts, names = tokens(query), []
    for i, token in enumerate(parts):
        if token.kind != "word" or token.upper not in _RELATION_BEFORE:
            continue
        j = i + 2 if i + 1 < len(parts) and parts[i + 1].text == "(" else i + 1
        while True:
            name, j = qualified_name(parts, j)
            if name is None:
                break
            names.append(name)
            if j >= len(parts) or parts[j].text != ",":
                break
            j += 1
    return names


def _takes_exclusive(words: list[str], statement: str) -> bool:
    """Whether a statement on a relation an earlier step holds ACCESS EXCLUSIVE would take it itself (the server
    shows no new lock to tell): most ``ALTER TABLE`` forms, ``DROP``, ``TRUNCATE``; a ``VALIDATE CONSTRAINT`` or
    an index build takes a weaker one, and the earlier step's finding already covers what runs under it."""
    return words[:1] in (["ALTER"], ["DROP"], ["TRUNCATE"], ["LOCK"]) and "VALIDATE CONSTRAINT" not in statement.upper()


def _delta(now: dict[int, tuple[int, int]], before: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """Rows read and written between two ``_touched`` readings."""
    read = sum(pair[0] - before.get(oid, (0, 0))[0] for oid, pair in now.items())
    return read, sum(pair[1] - before.get(oid, (0, 0))[1] for oid, pair in now.items())


def _size(tuples: float, size: int) -> str:
    rows = "rows unknown (never analysed)" if tuples < 0 else f"~{round(tuples)} rows"
    return f"{rows}, {size} bytes"


def _cut(statement: str) -> str:
    return statement if len(statement) <= 80 else statement[:77] + "..."


def lock_watch(observer: Any, conn: Any, engine: Any, settings: LockSettings) -> LockWatch:
    """The preview's observer with the lock measurements beside it, under the engine's policy."""
    policy = engine.lock_policy or LockPolicy()
    return LockWatch(observer, conn, policy, settings, {TABLE, LOG_TABLE})


def attach(preview: Any, watch: LockWatch) -> None:
    """Each watched step's ``StepLocks`` on its ``PreviewStep``, its accepted findings marked.

    The watch saw the steps the session started, in order (``preview.watched``); a migration's ``allow`` is
    checked against its own step's findings only.
    """
    migrations = {step.version: step.migration for step in preview.plan.steps}
    preview.held_exclusive = _held_too_long(watch)
    created: set[str | tuple[str, str]] = set()  # what the plan made so far: tables and (table, column) pairs
    for record, report in zip(watched(preview.steps), watch.steps):
        record.locks = report
        report.findings.extend(renames(record.changes, created, watch.policy))
        migration = migrations.get(record.version)
        watch.policy.accept(report.findings, migration.allow if migration is not None else ())


def renames(changes: list, created: set[str | tuple[str, str]], policy: LockPolicy) -> list[LockFinding]:
    """``rename`` findings for a step's renamed tables, views, indexes and columns that existed before the plan.

    The preview tells a rename by oid (attnum for a column), not by name (``snapshot.schema_changes``). The
    statement is instant; what breaks is the application, whose queries still say the old name once it commits.
    ``created`` gathers what the plan made, step by step: renaming that (``CREATE TABLE t_new ...`` then ``RENAME
    TO t``) is building a new object, never a finding.
    """
    found = []
    for change in changes:
        if change.kind not in ("table", "view", "index", "column"):
            continue  # rows, values, keys, functions...: no name an application's query spells
        if change.action == "added":
            created.add(change.name if change.table is None else (change.table, change.name))
        elif change.action == "renamed" and change.kind == "column":
            if change.table in created or (change.table, change.before) in created:
                created.add((change.table, change.after))
                continue
            found.append(LockFinding("rename", policy.level("rename"), change.table,
                                     f"renames column {change.table}.{change.before} to {change.after}: queries "
                                     f"that name {change.before} fail once it commits"))
        elif change.action == "renamed":
            # Its columns the plan made keep that under the new name.
            created.update([(change.after, pair[1]) for pair in created if isinstance(pair, tuple)
                            and pair[0] == change.before])
            if change.before in created:
                created.add(change.after)
                continue
            who = ("what names it (ON CONFLICT ON CONSTRAINT for the constraint it backs, scripts)"
                   if change.kind == "index" else "queries that name it")
            found.append(LockFinding("rename", policy.level("rename"), change.before,
                                     f"renames {change.kind} {change.before} to {change.after}: {who} fail once "
                                     f"it commits"))
    return found


def _held_too_long(watch: LockWatch) -> list[dict]:
    """ACCESS EXCLUSIVE locks on tables holding rows held so far (the transaction has ended, or is about to commit)
    longer than the lock timeout: the lock timeout bounds how long the preview WAITS for a lock, never how long it
    HOLDS one, and a dry run or check on a live database holds what the run would, until it rolls back."""
    now, limit = time.perf_counter(), watch.settings.lock_timeout
    held = []
    for version, taken, started in watch._exclusive.values():
        seconds = now - started
        if seconds <= limit or not (taken.rows or taken.bytes):
            continue
        rows = f"~{taken.rows} rows" if taken.rows is not None else f"{taken.bytes} bytes"
        text = (f"this preview held ACCESS EXCLUSIVE on {taken.relation} ({rows}) for {seconds:.1f} s (taken by "
                f"{version}), longer than the lock timeout ({shown_duration(limit)}): every query on "
                f"{taken.relation} waited for it. A preview takes the locks the run takes: on a live database, "
                f"preview a restored copy instead")
        held.append({"relation": taken.relation, "rows": taken.rows, "taken_by": version,
                     "held_ms": round(seconds * 1000, 1), "text": text})
    return held
