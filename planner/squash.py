"""Squashing: one migration that ``replaces`` a range of the graph (Django's ``squashmigrations``).

``squash(catalog, first, last)`` takes every migration between ``first`` and
``last`` in dependency order (``first``, ``last``, and whatever depends on
``first`` and is needed by ``last``: a convex piece of the graph, so nothing
outside it sits between two of its members), runs them through the real
``Executor`` on a scratch database (after the migrations they need from
outside the range), and reads back what they built (``planner.schema``,
read by the SQLite engine: each object's ``CREATE`` statement).
The new file's ``upgrade`` is those ``CREATE`` statements, its ``downgrade``
the ``DROP``s in reverse, its ``depends_on`` what the range needs from
outside, and its ``replaces`` the range. The catalog does the rest
(``planner.catalog``): the replaced files drop out of the graph, their
dependents depend on the squash, and a ledger holding all of them counts
the squash as applied.

A squash keeps the schema only, so a range whose migrations change rows is
refused, naming them, unless ``schema_only`` says their data is not needed.
A range that alters or drops something made outside it is refused too: a
``CREATE`` cannot say "add a column to a table made earlier". So is a range
the database (``applied``: its ledger, read by the engine, SQLite or
PostgreSQL) has applied only in part: the squash would be partly applied
there, which every plan refuses (``PartiallyAppliedSquash``), so the
database could not migrate until the file was deleted again.

The scratch database is SQLite whichever engine the catalog targets: the
file holds the ``CREATE`` statements as the range ran them on SQLite.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from planner import versions
from planner.catalog import Catalog
from planner.errors import MigrationFileExists, SquashRefused
from planner.migration import Migration
from planner.plan import APPLY, Plan, Step

#: The order objects are created in; dropped in the reverse one.
_KINDS = ("table", "index", "view", "trigger")


@dataclass(frozen=True)
class Squash:
    """A squash ready to write: where, the text, and what it stands for."""

    version: str
    path: Path
    source: str
    replaces: tuple[str, ...]
    depends_on: tuple[str, ...]
    #: (type, name) of every object its upgrade creates, in creation order.
    objects: tuple[tuple[str, str], ...]
    #: Replaced migrations that changed rows (only with ``schema_only``; otherwise a refusal).
    data_migrations: tuple[str, ...]


def squash_range(catalog: Catalog, first: str, last: str) -> list[Migration]:
    """The migrations between ``first`` and ``last`` (both included), in dependency order.

    Refuses (``SquashRefused``) when ``last`` does not depend on ``first``,
    and when the range holds a squash already (squashing one would need its
    replaced files gone first).
    """
    for version in (first, last):
        if (squash := catalog.squash_of(version)) is not None:  # loaded, but outside the graph
            raise SquashRefused(f"cannot squash from or to {version}: squash {squash} replaces it; name {squash} "
                                f"instead, after deleting the files it replaces; nothing was written")
    start, end = catalog.get(first).version, catalog.get(last).version
    graph = catalog.graph
    if start != end and start not in graph.ancestors(end):
        raise SquashRefused(f"cannot squash {start}..{end}: {end} does not depend on {start}, so there is no "
                            f"range between them; nothing was written", kind="no-range")
    members = (graph.descendants(start) | {start}) & (graph.ancestors(end) | {end})
    migrations = catalog.in_order(graph.topological_order(members))
    nested = [m.version for m in migrations if m.replaces]
    if nested:
        raise SquashRefused(f"cannot squash {start}..{end}: {', '.join(nested)} is a squash already; delete "
                            f"the files it replaces first, then squash again; nothing was written",
                            versions=nested)
    return migrations


def squash(catalog: Catalog, first: str, last: str, *, schema_only: bool = False,
           applied: Iterable[str] = ()) -> Squash:
    """Build (without writing) the squash of ``first``..``last``; see the module docstring for the rules.

    ``applied``: the versions the database's ledger records, to refuse a range it applied only in part.
    """
    replaced = squash_range(catalog, first, last)
    refuse_partly_applied(replaced, applied)
    members = {m.version for m in replaced}
    outside = {d for m in replaced for d in m.depends_on if d not in members}
    needed = set().union(*(catalog.graph.ancestors(v) | {v} for v in outside)) if outside else set()
    with tempfile.TemporaryDirectory(prefix="apm-squash-") as scratch:
        db = Path(scratch) / "squash.db"
        _run(catalog, db, catalog.in_order(catalog.graph.topological_order(needed)))
        before = _schema(db)
        data: list[str] = []
        for migration in replaced:
            rows = _fingerprints(db)
            _run(catalog, db, [migration])
            if _changed_rows(rows, _fingerprints(db)):
                data.append(migration.version)
        after = _schema(db)
    span = f"{replaced[0].version}..{replaced[-1].version}"
    if data and not schema_only:
        raise SquashRefused(f"cannot squash {span}: {', '.join(data)} change(s) rows (a data migration), which a "
                            f"squash of the schema would drop; nothing was written", versions=data, kind="data")
    altered = sorted(f"{kind} {name}" for (kind, name), sql in before.items() if after.get((kind, name)) != sql)
    if altered:
        raise SquashRefused(f"cannot squash {span}: it changes or drops {', '.join(altered)}, made outside the "
                            f"range; a squash can only create objects. Start the range at the migration that "
                            f"creates them; nothing was written")
    created = [(key, sql) for key, sql in after.items() if key not in before]
    created.sort(key=lambda item: _KINDS.index(item[0][0]))  # stable: creation order within a kind
    version = versions.next_free([*catalog.versions, *catalog.replaced], versions.width(catalog.versions))
    depends_on = tuple(versions.ordered(outside))
    path = catalog.directory / f"migration_{version}_squash_{replaced[0].version}_{replaced[-1].version}.py"
    source = _source(version, span, replaced, depends_on, created, catalog, data)
    return Squash(version, path, source, tuple(m.version for m in replaced), depends_on,
                  tuple(key for key, _ in created), tuple(data))


def refuse_partly_applied(replaced: list[Migration], applied: Iterable[str]) -> None:
    """``SquashRefused`` when the ledger holds some of the range but not all (any spelling of a version counts)."""
    recorded = {versions.number(v) for v in applied if versions.is_version(v)}
    done = [m.version for m in replaced if m.number in recorded]
    if done and len(done) < len(replaced):
        missing = [m.version for m in replaced if m.number not in recorded]
        span = f"{replaced[0].version}..{replaced[-1].version}"
        raise SquashRefused(f"cannot squash {span}: the database has applied {', '.join(done)} but not "
                            f"{', '.join(missing)}, and a partly applied squash cannot be migrated; nothing was "
                            f"written", versions=missing, kind="partly-applied", target=replaced[-1].version)


def write_squash(squash_: Squash) -> Path:
    """Write the file (never over an existing one) and return its path."""
    try:
        with squash_.path.open("x", encoding="utf-8") as file:
            file.write(squash_.source)
    except FileExistsError as exc:
        raise MigrationFileExists(squash_.path) from exc
    return squash_.path


def _run(catalog: Catalog, db: Path, migrations: list[Migration]) -> None:
    """Apply ``migrations`` on the scratch database with the real executor (a failure is raised as it is)."""
    # start-up time: planner.squash runs without planner.engines.sqlite.runner until _run() needs it
    from planner.engines.sqlite.runner import Executor

    if migrations:
        Executor(db, create=True, catalog=catalog).run(Plan(APPLY, tuple(Step(m, APPLY) for m in migrations)))


def _schema(db: Path) -> dict[tuple[str, str], str]:
    """Every user object's ``CREATE`` statement, by (type, name), in creation order within each kind."""
    # start-up time: planner.squash runs without planner.engines.sqlite until _schema() needs it
    from planner.engines.sqlite import SQLiteEngine

    found = SQLiteEngine(db).schema()
    named = {"table": {n: t.sql for n, t in found.tables.items()}, "index": found.indexes, "view": found.views,
             "trigger": found.triggers}
    return {(kind, name): sql for kind in _KINDS for name, sql in named[kind].items() if sql}


def _fingerprints(db: Path) -> dict[str, tuple[tuple[str, ...], int, str]]:
    # start-up time: planner.squash runs without planner.engines.sqlite.schema until _fingerprints() needs it
    from planner.engines.sqlite.schema import table_fingerprints

    return table_fingerprints(db)


def _changed_rows(before: dict, after: dict) -> bool:
    """Rows added, removed or changed; a table whose columns changed (a rebuild) counts by its row count."""
    for name, (columns, count, digest) in after.items():
        if name not in before:
            if count:
                return True
            continue
        old_columns, old_count, old_digest = before[name]
        if count != old_count or (columns == old_columns and digest != old_digest):
            return True
    return False


def _source(version: str, span: str, replaced: list[Migration], depends_on: tuple[str, ...],
            created: list[tuple[tuple[str, str], str]], catalog: Catalog, data: list[str]) -> str:
    names = ", ".join(m.version for m in replaced)
    listed = [f"- Migration {v} ({catalog.get(v).description})" for v in depends_on] or ["- None"]
    dropped = f"\nData changes of {', '.join(data)} are not kept (--schema-only).\n" if data else ""
    upgrade = "".join(f"    {sql!r},\n" for _, sql in created)
    downgrade = "".join(f"    {f'DROP {kind.upper()} IF EXISTS ' + _quote(name)!r},\n"
                        for (kind, name), _ in reversed(created))
    return (
        f'"""\nMigration {version}: Squash of {span}\n\n'
        f"Written by `apm migrate squash`: the schema that {names} build, as one migration. A database that\n"
        f"applied all of them counts this one as applied; a fresh database applies this one alone. Delete the\n"
        f"replaced files once every database has applied them (or this).\n{dropped}\n"
        f"Dependencies:\n" + "".join(line + "\n" for line in listed) + '"""\n\n'
        f"depends_on = {depends_on!r}\n"
        f"replaces = {tuple(m.version for m in replaced)!r}\n\n"
        f"UPGRADE = (\n{upgrade})\n\nDOWNGRADE = (\n{downgrade})\n\n\n"
        f"def upgrade(conn):\n    for statement in UPGRADE:\n        conn.execute(statement)\n\n\n"
        f"def downgrade(conn):\n    for statement in DOWNGRADE:\n        conn.execute(statement)\n"
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
