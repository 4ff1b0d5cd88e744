"""``apm migrate check``: everything wrong with a catalog (and, given a database, its history), at once.

The loader already knows every way a file can fail to load; a lint's job is
to report all of them in one run, plus what loads fine but will hurt later:
a dependency that exists only because of file numbering, a migration that
cannot be rolled back, a title that names another version. Given a database,
it also compares the ledger with the files, because a CI job is where an
edited applied migration should be caught, not the operator's terminal.

Each ``Finding`` carries what it means and the line or command that fixes
it. ``check_catalog`` never raises for a broken catalog (that is what it
reports); only an unreadable database raises its ``DatabaseError``.

Severities and scopes are in ``planner.findings``.

Why a docstring title naming another version is an *error*: the file name
is what the loader, the ledger and every plan use, so a title such as
``Migration 0026:`` in ``migration_0027.py`` is almost always a copied file
whose docstring still describes its original, including the
``Dependencies:`` section the loader trusts when there is no ``depends_on``,
and the generated catalog page and diagrams publish that wrong title.
Fixing it is one line; letting it merge is how the graph starts lying.

Drift: does each applied migration's file still say what was applied?

The ledger stores the sha256 of a file when it was applied. A file edited
since then (``changed``) means the database holds what the old text did, not
what the file now says; a file gone (``missing``) means that version can never
be rolled back from this catalog. Rows written by the old framework have no
checksum and are ``unknown`` rather than falsely ``ok``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from planner import versions
from planner.catalog import Catalog
from planner.errors import (
    CatalogError,
    CatalogNotFound,
    ConflictingDependencies,
    DependencyCycle,
    DuplicateVersion,
    MalformedDependencies,
    MalformedFileName,
    MigrationImportError,
    MissingUpgrade,
    PartiallyAppliedSquash,
    SelfDependency,
    SqlMigrationError,
    UnknownDependency,
    UnreadableMigration,
)
from planner.findings import ERROR, INFO, WARNING, Finding, Remedy
from planner.loader import migration_files, scan_catalog
from planner.migration import IMPLIED
from planner.plan import inconsistent_history

if TYPE_CHECKING:
    from planner.engines.base import Engine


def check_catalog(directory: Path | str, engine: Engine | None = None) -> list[Finding]:
    """Every finding for the catalog in ``directory`` and, given a database's ``engine``, for its ledger.

    Catalog
    findings come first, in version order; ledger findings follow. A
    database that is not there yet (a file not made, a database the server
    does not have) is an empty history, said in an ``info`` finding; one that
    is there but cannot be read raises its ``DatabaseError``.
    """
    directory = Path(directory)
    try:
        migrations, problems = scan_catalog(directory)
    except CatalogNotFound as exc:
        return [Finding(ERROR, "catalog-not-found", None, str(exc),
                        Remedy("make-catalog", (str(directory),)), path=directory)]
    unloadable = {p.versions[0] for p in problems if p.versions}
    catalog, graph_problems = Catalog.build(directory, migrations, unloadable=unloadable)
    files, _ = migration_files(directory)
    recorded = engine.applied_if_exists() if engine is not None else None
    entries = recorded or {}
    # A free version for every file of a shared version but the keeper: above every version in use, in the files
    # and in the ledger (a deleted file's number is still recorded), and distinct across all the suggestions.
    # start-up time: apm migrate imports this module for file_states() alone, without planner.renumber
    from planner.renumber import plan_renumbering

    renumbering = plan_renumbering(problems, [*files, *entries], recorded, engine.display if engine else None)

    findings = [_problem_finding(p, renumbering) for p in [*problems, *graph_problems]]
    for migration in catalog:
        findings.extend(_migration_findings(migration))
    findings.sort(key=_catalog_order)

    if engine is not None and recorded is None:
        findings.append(Finding(INFO, "no-database", None,
                                f"{engine.display} does not exist yet: the catalog was checked against an empty "
                                f"history", None, "history"))
    elif engine is not None:
        findings.extend(history_findings(catalog, entries, files, unloadable))
        findings.extend(note_findings(catalog, engine.notes()))
    return findings


def note_findings(catalog, notes: list) -> list[Finding]:
    """``info`` for each ledger row that is no applied migration (``planner.ledger.LedgerNote``): never blocks.

    APM's migrations write rows of their own (``0018_consolidated``) and its
    framework kept rolled-back rows (``rollback_at`` set). Neither is an
    applied migration nor a missing file; each is shown so nobody wonders.
    """
    findings = []
    for note in notes:
        known = catalog.canonical(note.base or note.version) is not None
        if note.kind == "note":
            where = "" if known else f" (no migration_{note.base} file is in the catalog)"
            message = (f"schema_migrations holds {note.version!r}, a row migration {note.base} wrote itself"
                       f"{where}: kept as a note; it is not a migration and changes no plan")
        else:
            reason = f" ({note.rollback_reason})" if note.rollback_reason else ""
            pending = "so the next apm run applies it again" if known else "and no file of it is in the catalog"
            message = (f"{note.version} was rolled back by APM's framework at {note.rollback_at}{reason}; its row "
                       f"is kept but it is not applied, {pending}")
        findings.append(Finding(INFO, "ledger-note" if note.kind == "note" else "rolled-back-row",
                                note.base or note.version, message, None, "history"))
    return findings


def _catalog_order(finding: Finding) -> tuple[int, int, str]:
    number = versions.number(finding.version) if finding.version else None
    return (-1 if number is None else number, 0 if finding.severity == ERROR else 1, finding.code)


def _depends_line(versions: tuple[str, ...] | list[str]) -> str:
    """``depends_on = ("0019",)``, spelled as the shipped migrations spell it."""
    items = ", ".join(f'"{v}"' for v in versions)
    return f"depends_on = ({items},)" if len(versions) == 1 else f"depends_on = ({items})"


def _depends_fix(migration) -> str:
    """The line that makes an implied dependency explicit, in the file's own language."""
    if migration.path.suffix == ".sql":
        return f"-- depends_on: {', '.join(migration.depends_on)}".rstrip()
    return _depends_line(migration.depends_on)


def _problem_finding(problem: CatalogError, renumbering: Any) -> Finding:
    """A loader or graph error as a finding, with the fix that error calls for."""
    version = problem.versions[0] if problem.versions else None
    path = problem.path
    name = path.name if path else f"migration_{version}.py"
    code, fix = "catalog-error", None
    if isinstance(problem, MalformedFileName):
        code, fix = "malformed-file-name", f"git mv {name} migration_<digits>_<slug>.py"
    elif isinstance(problem, DuplicateVersion):
        return _duplicate_finding(problem, renumbering)
    elif isinstance(problem, UnreadableMigration):
        where = f" line {problem.line}" if problem.line else ""
        code, fix = "unreadable-migration", f"fix {name}{where}: {problem.reason}"
    elif isinstance(problem, MigrationImportError):
        code, fix = "import-error", f"python {path}  # fix what its top level raises" if path else None
        if problem.module:
            fix = f"run apm in the virtualenv where {problem.module.split('.')[0]} is installed, or install it there"
    elif isinstance(problem, SqlMigrationError):
        code, fix = "sql-migration-format", f"edit {name} at line {problem.line} (see docs/migrations-guide.md, SQL migrations)"
    elif isinstance(problem, MissingUpgrade):
        code, fix = "missing-upgrade", f"add to {name}: def upgrade(conn: sqlite3.Connection) -> None:"
    elif isinstance(problem, ConflictingDependencies):
        documented = tuple(problem.documented)
        code = "docstring-dependencies"
        fix = (f"in {name}, write {_depends_line(documented)} or make the docstring's Dependencies: list "
               f"{', '.join(problem.declared) or '- None'}")
    elif isinstance(problem, MalformedDependencies):
        code = "malformed-dependencies"
        fix = f"in {name}, write depends_on = (\"NNNN\",) and Dependencies: items as '- Migration NNNN (why)'"
    elif isinstance(problem, UnknownDependency):
        code = "unknown-dependency"
        fix = f"remove {problem.dependency!r} from {problem.version}'s depends_on, or add migration_{problem.dependency}.py"
        version = problem.version
    elif isinstance(problem, SelfDependency):
        code, fix = "self-dependency", f"remove {version!r} from {name}'s depends_on"
    elif isinstance(problem, DependencyCycle):
        code = "dependency-cycle"
        fix = f"remove one dependency along {' → '.join(problem.cycle)}"
    return Finding(ERROR, code, version, str(problem), Remedy.line(fix) if fix else None, "catalog", path)


def _duplicate_finding(problem: DuplicateVersion, renumbering: Any) -> Finding:
    """A shared version: which file keeps it and why (from the ledger), and the renames; or why none can be chosen."""
    version = problem.versions[0]
    undecided = next((u for u in renumbering.undecided if u.version == version), None)
    if undecided is not None:
        return Finding(ERROR, "duplicate-version", version,
                       f"{problem}. {undecided.reason}: find out which one ran, then rename every other file to a "
                       f"free version (the automatic renumbering refuses until then)",
                       Remedy.line(f"sha256sum {' '.join(p.name for p in problem.paths)}  # and compare with "
                                   f"schema_migrations.checksum, or with the schema"), "catalog", problem.path)
    changes = [c for c in renumbering.changes if c.path in problem.paths]
    moves = "; ".join(f"git mv {c.path.name} {c.target.name}"
                      + (f"; add to {c.target.name}: {c.depends_line}" if c.depends_line else "")
                      for c in changes)
    moved = ", ".join(c.path.name for c in changes)
    it, is_ = ("it", "is") if len(changes) == 1 else ("them", "are")
    return Finding(ERROR, "duplicate-version", version,
                   f"{problem}. {renumbering.reasons[version]}. Once renumbered, {moved} {is_} pending and WILL run "
                   f"on every database; read {it} first (or delete {it})",
                   Remedy("renumber", (moves,)), "catalog", problem.path)


def _migration_findings(migration) -> list[Finding]:
    """Advice about a migration that loaded: implicit dependencies, no downgrade, a title naming another version."""
    findings: list[Finding] = []
    name = migration.path.name
    if migration.dependency_source == IMPLIED:
        if migration.depends_on:
            meaning = (f"{migration.version} depends on {', '.join(migration.depends_on)} only because that "
                       f"file comes before it; a migration numbered in between would silently change that")
        else:
            meaning = (f"{migration.version} is a root only because no file comes before it; "
                       f"an older-numbered file added later would silently become its dependency")
        findings.append(Finding(WARNING, "implied-dependency", migration.version, meaning,
                                Remedy.line(f"add to {name}: {_depends_fix(migration)}"), "catalog", migration.path))
    for part in migration.unwritten:
        findings.append(Finding(
            ERROR, f"empty-{part}", migration.version,
            f"{name}: its {part} does nothing yet (an unfilled scaffold?)"
            + ("; apm refuses to apply it until it does" if part == "upgrade" else
               "; a rollback would refuse it as having no downgrade"),
            Remedy.line(f"write the {part} in {name}" + (
                ", or delete the file" if part == "upgrade" else
                ", or, if it cannot be undone, replace it with one line `-- irreversible: why`")),
            "catalog", migration.path))
    if migration.irreversible_reason is not None:
        # Declared on purpose (a downgrade that only raises, `-- irreversible:`): a fact to show, not advice.
        findings.append(Finding(
            INFO, "irreversible", migration.version,
            f"{migration.version} {migration.rollback_refusal}: a rollback through it (or a cascade past it) is "
            f"refused before anything runs, and only a backup can undo it",
            None, "catalog", migration.path))
    elif not migration.reversible and "downgrade" not in migration.unwritten:
        findings.append(Finding(
            WARNING, "no-downgrade", migration.version,
            f"{migration.version} defines no downgrade(conn), so it (and everything it depends on) can never "
            f"be rolled back; only a backup can undo it",
            Remedy.line(f"add to {name}: " + ("a `-- downgrade` section after the upgrade"
                                              if migration.path.suffix == ".sql"
                                              else "def downgrade(conn: sqlite3.Connection) -> None:")),
            "catalog", migration.path))
    documented = migration.docstring_version
    if documented is not None and not versions.same(documented, migration.version):
        findings.append(Finding(
            ERROR, "docstring-version", migration.version,
            f"{name}'s docstring says 'Migration {documented}' but the file is version {migration.version}; "
            f"the file name is what counts, so the docstring probably describes another migration",
            Remedy.line(f"in {name}, make the first docstring line 'Migration {migration.version}: "
                        f"{migration.description}'"),
            "catalog", migration.path))
    return findings


def missing_file_name(version: str) -> str:
    """How a deleted migration's file is named: the ledger records its version, never its name or extension."""
    return f"migration_{version} file (.py or .sql)"


def history_findings(catalog, entries: dict, files: dict[str, Path], unloadable: AbstractSet[str] = frozenset()) -> list[Finding]:
    """Findings for a ledger (``read_ledger``'s mapping) against a catalog; shared with the doctor."""
    by_number = {versions.number(v): p for v, p in files.items()}
    unloadable_numbers = {versions.number(v) for v in unloadable} - {None}
    findings: list[Finding] = []
    for version, state in file_states(catalog, entries).items():
        number = versions.number(version)
        if state == CHANGED:
            migration = catalog.get(version)
            findings.append(Finding(
                ERROR, "edited-after-apply", migration.version,
                f"{migration.path.name} changed since {migration.version} was applied "
                f"({entries[version].applied_at or 'unknown time'}): the database holds what the old text did, "
                f"not what the file says now",
                Remedy.line(f"git log -p -- {migration.path}  # restore the applied text, and put the change in a "
                            f"new migration"),
                "history", migration.path))
        elif state == MISSING:
            if number is not None and number in unloadable_numbers:
                # Its file is there but does not load: already reported as a catalog error; compare bytes.
                path = by_number.get(number)
                if path is not None and entries[version].checksum:
                    if hashlib.sha256(path.read_bytes()).hexdigest() != entries[version].checksum:
                        findings.append(Finding(
                            ERROR, "edited-after-apply", version,
                            f"{path.name} changed since {version} was applied (and no longer loads)",
                            Remedy.line(f"git log -p -- {path}"), "history", path))
                continue
            if number is None:
                findings.append(Finding(
                    ERROR, "not-a-version", version,
                    f"schema_migrations holds the row {version!r}, which is not a version (digits only), so no "
                    f"migration file can match it: a hand edit or another tool wrote it, and apm treats it like "
                    f"a migration whose file is missing",
                    Remedy.line(f"sqlite3 <db> \"SELECT * FROM schema_migrations WHERE version = '{version}'\"  "
                                f"# find out what wrote it before deleting the row"), "history", None))
                continue
            described = entries[version].description
            kept = (f"the ledger keeps its description, {described!r}, not its file name" if described
                    else "the ledger keeps no file name")
            findings.append(Finding(
                ERROR, "missing-file", version,
                f"{version} is recorded as applied but no {missing_file_name(version)} is in {catalog.directory} "
                f"({kept}): it can never be rolled back, and what it did is undocumented here",
                Remedy("restore-file", (str(catalog.directory), version)),
                "history", None))
    if getattr(catalog, "has_squashes", False):
        for squash, (rows, missing) in sorted(catalog.squash_states(list(entries)).items()):
            if missing:
                problem = PartiallyAppliedSquash(squash, versions.ordered(rows), missing)
                findings.append(Finding(
                    ERROR, "partially-applied-squash", squash, str(problem),
                    Remedy("target", (missing[-1],), f"with {squash}'s file moved out of the folder, then put it "
                                                      f"back"), "history", None))
    for applied, missing in inconsistent_history(catalog, entries):
        findings.append(Finding(
            ERROR, "inconsistent-history", applied,
            f"{applied} is applied but its dependency {missing} is not, so the schema is not what the graph "
            f"says; apm refuses to apply anything until this is resolved",
            Remedy("mark-applied-or-cascade", (missing, applied)),
            "history", None))
    return findings


def tolerant_catalog(directory: Path) -> tuple:
    """The catalog as far as it loads: a doctor diagnoses a database even when some files are broken."""
    migrations, problems = scan_catalog(directory)
    unloadable = {p.versions[0] for p in problems if p.versions}
    catalog, _ = Catalog.build(directory, migrations, unloadable=unloadable)
    files, _ = migration_files(directory)
    return catalog, files, unloadable


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
