"""Renumbering files that share a version: what ``apm migrate check`` suggests, and ``check --fix`` does.

Of two files sharing a version (``migration_0002_wishlist.sql`` from one
branch, ``migration_0002_coupons.sql`` from another), one may already be
applied, and the ledger says which: its row for that version holds the
sha256 of the file that ran. That file keeps the version; renumbering it
would leave its partner counted as applied without ever having run, and the
renamed file pending, to run a second time. Every other file gets a distinct
free version (above every version in the files and the ledger, so no
suggestion collides with another or with an applied row) and, unless it
declares its own dependencies, ``depends_on = ("0002",)`` so it comes right
after the file that keeps the version. A docstring title naming the old
version is retitled, or ``check`` would then call it a copied file.

When the ledger cannot tell (its row has no checksum, as rows another
framework wrote; or no file, or more than one, has the recorded checksum),
nothing is decided: the version is ``Undecided`` and ``--fix`` refuses,
saying why. When the database has no row for the version, or there is no
database to ask, none of the files was applied there: the first by name
keeps the version, and the reason says so, since another database may have
applied another of them.

The renumbered files were never applied here: once renumbered they are
pending, and ``apm migrate`` WILL run them. The finding says so; ``--fix``
shows every change before making it.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from planner import versions
from planner.errors import DuplicateVersion


class _Recorded(Protocol):
    @property
    def checksum(self) -> str | None: ...  # read-only, so a frozen LedgerEntry fits


@dataclass(frozen=True)
class Renumbering:
    """One file of a shared version, moved to a free one."""

    path: Path
    old: str
    new: str
    #: The file that keeps ``old``: the one the ledger says was applied, or the first by name when none was.
    keeper: Path
    #: The line added to keep the order; ``None`` when the file declares its own dependencies.
    depends_line: str | None
    #: Why ``keeper`` keeps the version, as a sentence about the ledger.
    why: str = ""

    @property
    def target(self) -> Path:
        return self.path.with_name(self.path.name.replace(f"migration_{self.old}", f"migration_{self.new}", 1))

    def describe(self) -> str:
        """``rename A -> B; add depends_on = ("0021",)``: what ``--fix`` will do, shown first."""
        text = f"rename {self.path.name} -> {self.target.name}"
        if self.depends_line:
            text += f"; add {self.depends_line}"
        return text + f"; retitle 'Migration {self.old}' -> 'Migration {self.new}' if its docstring says so"


@dataclass(frozen=True)
class Undecided:
    """A shared version whose applied file the ledger cannot name: no file of it may be renumbered."""

    version: str
    paths: tuple[Path, ...]
    reason: str


@dataclass(frozen=True)
class RenumberingPlan:
    """Every renumbering of a catalog's shared versions, and the versions that cannot be decided."""

    changes: list[Renumbering] = field(default_factory=list)
    undecided: list[Undecided] = field(default_factory=list)
    #: Shared version (as its problem names it) -> why its keeper keeps it.
    reasons: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.changes or self.undecided)


def plan_renumbering(problems: list, taken: list[str], ledger: Mapping[str, _Recorded] | None = None,
                     database: str | None = None, *,
                     fleet: Mapping[str, Mapping[str, _Recorded]] | None = None) -> RenumberingPlan:
    """The renumbering of every file but the keeper of each shared version; ``taken`` is every version in use.

    ``ledger`` is the database's applied rows (``None``: no database was
    given, or it does not exist yet) and ``database`` how messages name it.
    ``fleet`` (database name -> its applied rows) asks every database of a
    fleet instead: a version keeps the file they all applied.
    """
    shared = [p for p in problems if isinstance(p, DuplicateVersion)]
    decided: list[tuple[DuplicateVersion, Path, str]] = []
    undecided: list[Undecided] = []
    for problem in shared:
        keeper, reason = _fleet_keeper(problem, fleet) if fleet is not None else _keeper(problem, ledger, database)
        if keeper is None:
            undecided.append(Undecided(problem.versions[0], problem.paths, reason))
        else:
            decided.append((problem, keeper, reason))
    extra = [(problem, keeper, reason, path) for problem, keeper, reason in decided
             for path in problem.paths if path != keeper]
    # The shared versions are in use too (the loader leaves them out of its files): never suggest one of them.
    free = versions.free_versions([*taken, *(_version_of(path) for p in shared for path in p.paths)], len(extra))
    changes = [Renumbering(path, _version_of(path), new, keeper, _depends_line(path, _version_of(keeper)), reason)
               for (problem, keeper, reason, path), new in zip(extra, free)]
    return RenumberingPlan(changes, undecided, {problem.versions[0]: reason for problem, _, reason in decided})


def _keeper(problem: DuplicateVersion, ledger: Mapping[str, _Recorded] | None,
            database: str | None) -> tuple[Path | None, str]:
    """The file of a shared version that keeps it, and why; ``None`` and the reason when the ledger cannot tell."""
    first = problem.paths[0]
    version = problem.versions[0]
    names = " and ".join(p.name for p in problem.paths)
    if ledger is None:
        where = (f"{database} does not exist yet, so none of them was applied there" if database is not None
                 else "no database was given to ask which of them was applied")
        return first, (f"{where}, so {first.name} keeps {version} as the first by name; if a database applied "
                       f"another of them, renumber with that database named instead")
    database = database or "the database"
    number = versions.number(version)
    rows = [entry for recorded, entry in ledger.items() if versions.number(recorded) == number]
    if not rows:
        return first, (f"{database}'s ledger records no {version}, so none of them was applied there and "
                       f"{first.name} keeps {version} as the first by name; if another database applied another "
                       f"of them, renumber with that database named instead")
    recorded = {entry.checksum for entry in rows if entry.checksum}
    if not recorded:
        return None, (f"{database}'s ledger records {version} as applied but without a checksum (another tool "
                      f"or a mark wrote the row), so it cannot tell which of {names} ran")
    matching = [path for path in problem.paths if _checksum(path) in recorded]
    if len(matching) == 1:
        others = " and ".join(p.name for p in problem.paths if p != matching[0])
        return matching[0], (f"{database}'s ledger holds the checksum of {matching[0].name} for {version}, so it "
                             f"keeps {version}; {others} never ran there")
    if not matching:
        return None, (f"{database}'s ledger records {version} with a checksum that none of {names} has (the file "
                      f"that ran was edited since, or is not among them), so it cannot tell which ran")
    return None, (f"{' and '.join(p.name for p in matching)} are byte for byte the file {database}'s ledger "
                  f"records for {version}, so it cannot tell which ran; delete the copy")


def _fleet_keeper(problem: DuplicateVersion, fleet: Mapping[str, Mapping[str, _Recorded]]) -> tuple[Path | None, str]:
    """The file every database of a fleet that applied the version applied; ``None`` when one cannot tell or they
    disagree: one renumbering cannot fit databases that ran different files under the same version."""
    version, first = problem.versions[0], problem.paths[0]
    number = versions.number(version)
    ran: dict[Path, list[str]] = {}  # file -> the databases whose ledger holds its checksum for the version
    for name, ledger in fleet.items():
        if any(versions.number(recorded) == number for recorded in ledger):
            keeper, reason = _keeper(problem, ledger, name)
            if keeper is None:
                return None, reason
            ran.setdefault(keeper, []).append(name)
    if not ran:
        return first, (f"none of the fleet's {len(fleet)} database(s) records {version}, so {first.name} keeps "
                       f"{version} as the first by name")
    if len(ran) > 1:
        return None, ("the fleet's databases disagree: " + "; ".join(
            f"{_some(names)} applied {path.name}" for path, names in ran.items()) + ", so no renumbering fits them all")
    ((keeper, names),) = ran.items()
    others = " and ".join(p.name for p in problem.paths if p != keeper)
    return keeper, (f"{_some(names)} of the fleet's {len(fleet)} database(s) hold the checksum of {keeper.name} for "
                    f"{version} and none another file's, so it keeps {version}; {others} never ran there")


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _checksum(path: Path) -> str | None:
    """The sha256 of a file's bytes, as the ledger records it (``None`` when it cannot be read)."""
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except OSError:
        return None


def _version_of(path: Path) -> str:
    # start-up time: planner.renumber runs without planner.loader until _version_of() needs it
    from planner.loader import version_from_file_name

    return version_from_file_name(path) or ""


def _depends_line(path: Path, keeps: str) -> str | None:
    """The line that keeps the file after its partner, unless it already says what it depends on."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        source = ""
    if path.suffix == ".sql":
        return None if re.search(r"^\s*--\s*depends_on\s*:", source, re.M) else f"-- depends_on: {keeps}"
    if re.search(r"^depends_on\s*[:=]", source, re.M) or re.search(r"^\s*Dependencies\s*:\s*$", source, re.M):
        return None
    return f'depends_on = ("{keeps}",)'


def apply_renumbering(changes: list[Renumbering]) -> None:
    """Make the changes: write each file's new text under its new name, then remove the old name."""
    for change in changes:
        source = change.path.read_text(encoding="utf-8")
        source = re.sub(rf"(Migration\s+){re.escape(change.old)}(\s*:)", rf"\g<1>{change.new}\g<2>", source, count=1)
        if change.depends_line:
            source = _with_line(source, change.depends_line, change.path.suffix == ".sql")
        target = change.target
        if target.exists():
            raise FileExistsError(f"{target} exists; nothing renamed for {change.path.name}")
        target.write_text(source, encoding="utf-8")
        os.unlink(change.path)


def _with_line(source: str, line: str, sql: bool) -> str:
    """``source`` with ``line`` after its docstring and leading imports (a SQL file: at the top)."""
    comment = "  # runs right after the file that kept its version (apm migrate check --fix)"
    if sql:
        return f"{line}\n{source}"
    lines = source.splitlines(keepends=True)
    after = 0
    try:
        body = ast.parse(source).body
    except SyntaxError:
        body = []
    for node in body:
        is_doc = isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant)
        if is_doc or isinstance(node, (ast.Import, ast.ImportFrom)):
            after = node.end_lineno or after
        else:
            break
    return "".join(lines[:after]) + f"\n{line}{comment}\n" + "".join(lines[after:])
