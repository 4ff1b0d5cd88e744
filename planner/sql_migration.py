"""Plain SQL migrations: ``migration_<digits>[_<slug>].sql`` read into the same ``Migration`` value.

People coming from Flyway or Django's ``RunSQL`` write schema changes as SQL,
and a Python wrapper around one ``executescript`` call is noise. A SQL file
carries the same facts as a Python one, in comments at its top::

    -- Migration 0031: Add index on tasks.status
    --
    -- Why the index exists (free text, shown on the catalog page).
    -- depends_on: 0030, 0027
    -- upgrade
    CREATE INDEX idx_tasks_status ON tasks(status);
    -- downgrade
    DROP INDEX idx_tasks_status;

The rules, precisely:

* The **header** is every line before the ``-- upgrade`` marker. Each is blank
  or a ``--`` comment; SQL there is an error (it would belong to no section).
* Its first comment line may be the title ``-- Migration NNNN: description``
  (as the first docstring line of a Python file). Without one, the
  description comes from the file name's slug.
* A header line ``-- <lowercase_name>: value`` is a **directive**. There are
  five. ``irreversible: why`` says the migration cannot be undone, and why:
  it has no downgrade, and a rollback through it is refused quoting ``why``
  (as a Python downgrade that only raises; see ``planner.irreversible``).
  The same line may instead be the only content of the ``-- downgrade``
  section; with SQL in that section it is an error either way, since which
  one is meant cannot be guessed. ``transactional: false`` (or ``true``, the default) runs the
  migration outside a transaction, for statements SQLite refuses inside one
  (``VACUUM``). ``lock_timeout: 5s`` and ``allow: table-rewrite, ...`` are
  the Python file's ``lock_timeout`` and ``allow`` (``planner.locks``). ``depends_on``: versions separated by commas or spaces; empty means
  a root. Without it the migration depends on the previous version in number
  order, as a Python file without ``depends_on`` does. Any other name is an
  error, so ``-- depend_on: 0030`` cannot silently make a migration implied.
* ``-- upgrade`` and ``-- downgrade`` (a line with only that word, any case)
  start the two sections. ``upgrade`` is required and comes first;
  ``downgrade`` is optional (without it the migration cannot be rolled back;
  ``-- irreversible: why`` says so on purpose and gives the reason);
  each must hold at least one statement and appear once.
* The checksum is the sha256 of the file's bytes, as for Python files.

Each section runs through ``conn.executescript`` on the connection the
executor passes, which runs it statement by statement inside the step's
transaction, so a SQL migration commits together with its ledger row exactly
like a Python one, and the executor cannot tell them apart.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

from planner.errors import (
    DuplicateSqlSection,
    IrreversibleWithDowngrade,
    MalformedSqlDependencies,
    MalformedSqlDirective,
    MissingUpgradeSection,
    UnknownSqlDirective,
    UnreadableMigration,
)
from planner.irreversible import UNEXPLAINED, fold
from planner.migration import DECLARED, IMPLIED, Migration

SUFFIX = ".sql"
#: The directives a header may carry; anything else shaped like one is a typo.
DIRECTIVES = ("depends_on", "transactional", "irreversible", "lock_timeout", "allow")

_SQL_TITLE = re.compile(r"^Migration\s+(?P<version>[0-9]+)\s*:\s*(?P<description>.*?)\s*$")
_SECTION = re.compile(r"^--\s*(?P<name>upgrade|downgrade)\s*$", re.IGNORECASE)
_DIRECTIVE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_]*)\s*:(?P<value>.*)$")
_VERSION = re.compile(r"[0-9]+")
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?(?:\*/|\Z)", re.S)
_IRREVERSIBLE = re.compile(r"^--\s*irreversible\s*:(?P<reason>.*)$", re.IGNORECASE)


def run_script(script: str, conn) -> None:
    """A section's body: the executor's connection keeps it inside the step's transaction."""
    conn.executescript(script)


def _has_statement(sql: str) -> bool:
    return bool(_COMMENTS.sub("", sql).strip(" \t\r\n;"))


def load_sql_migration(path: Path, version: str) -> Migration:
    """Read one SQL migration file, or raise the ``CatalogError`` naming its file and line."""
    try:
        with open(path, "rb") as file:
            source = file.read()
    except OSError as exc:
        raise UnreadableMigration(path, version, exc.strerror or str(exc)) from exc
    checksum = hashlib.sha256(source).hexdigest()
    try:
        text = source.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableMigration(path, version, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc

    lines = text.splitlines()
    doc: list[str] = []
    title: re.Match[str] | None = None
    depends_on: tuple[str, ...] | None = None
    depends_line = 0
    transactional = True
    irreversible: str | None = None
    irreversible_line = 0
    locks: dict[str, object] = {}  # lock_timeout, allow (planner.locks)
    sections: dict[str, list[str]] = {}
    starts: dict[str, int] = {}
    current: str | None = None
    for number, line in enumerate(lines, 1):
        marker = _SECTION.match(line.strip())
        if marker:
            name = marker.group("name").lower()
            if name in sections:
                raise DuplicateSqlSection(path, version, number,
                                          f"second `-- {name}` marker (the first is on line {starts[name]}); "
                                          f"merge the two sections")
            if name == "downgrade" and "upgrade" not in sections:
                raise MissingUpgradeSection(path, version, number,
                                            "`-- downgrade` comes before `-- upgrade`; put the upgrade section first")
            sections[name], starts[name], current = [], number, name
            continue
        if current is not None:
            sections[current].append(line)
            continue
        stripped = line.strip()
        if not stripped:
            doc.append("")
            continue
        if not stripped.startswith("--"):
            raise MissingUpgradeSection(path, version, number,
                                        "SQL before the `-- upgrade` marker; start the migration's SQL with a "
                                        "line `-- upgrade`")
        comment = stripped[2:].strip()
        if title is None and not any(doc) and _SQL_TITLE.match(comment):
            title = _SQL_TITLE.match(comment)
            doc.append(comment)
            continue
        directive = _DIRECTIVE.match(comment)
        # `Note: ...` is prose; `depends_on:` in any case is the directive; any other lowercase `name:` a typo.
        if directive and (directive.group("name").lower() in DIRECTIVES or directive.group("name").islower()):
            name = directive.group("name").lower()
            if name == "transactional":
                transactional = _boolean(path, version, number, directive.group("value"))
                doc.append(comment)
                continue
            if name == "irreversible":
                if irreversible is not None:
                    raise DuplicateSqlSection(path, version, number,
                                              f"second `-- irreversible:` (the first is on line "
                                              f"{irreversible_line}); give one reason")
                irreversible, irreversible_line = fold(directive.group("value")) or UNEXPLAINED, number
                doc.append(comment)
                continue
            if name in ("lock_timeout", "allow"):
                value = directive.group("value").strip()
                locks[name] = value if name == "lock_timeout" else [c for c in re.split(r"[,\s]+", value) if c]
                doc.append(comment)
                continue
            if name not in DIRECTIVES:
                raise UnknownSqlDirective(path, version, number,
                                          f"unknown header directive `{name}:`; the header knows "
                                          f"{', '.join(DIRECTIVES)} (write prose with a capital letter, "
                                          f"or not as `word:`)")
            if depends_on is not None:
                raise DuplicateSqlSection(path, version, number,
                                          f"second `-- depends_on:` (the first is on line {depends_line}); "
                                          f"list every dependency on one line")
            depends_on, depends_line = _dependencies(path, version, number, directive.group("value")), number
        doc.append(comment)

    if "upgrade" not in sections:
        raise MissingUpgradeSection(path, version, max(len(lines), 1),
                                    "no `-- upgrade` marker; put the migration's SQL after a line `-- upgrade`")
    scripts: dict[str, str] = {}
    unwritten: list[str] = []
    for name, body in sections.items():
        script = "\n".join(body).strip("\n")
        declared = _irreversible_marker(body, starts[name]) if name == "downgrade" else None
        if declared is not None and (irreversible is not None or _has_statement(script)):
            what = (f"line {irreversible_line} already says `-- irreversible:`" if irreversible is not None
                    else "the section also holds SQL")
            raise IrreversibleWithDowngrade(path, version, declared[0],
                                            f"`-- irreversible:` in the `-- downgrade` section, but {what}; "
                                            f"keep either the downgrade's SQL or one `-- irreversible:` line")
        if declared is not None:
            irreversible, irreversible_line = declared[1], declared[0]
            continue  # the section only says there is no way back: the migration has no downgrade
        if not _has_statement(script):
            # Loaded all the same (an unfilled `apm migrate new --sql`): reading commands keep working, `check`
            # flags it, a run refuses to apply it (and an empty downgrade is no downgrade: never a silent undo).
            unwritten.append(name)
            continue
        if name == "downgrade" and irreversible is not None:
            raise IrreversibleWithDowngrade(path, version, starts[name],
                                            f"line {irreversible_line} says `-- irreversible:` but the file "
                                            f"has a `-- downgrade` section; delete one of them")
        scripts[name] = script

    description = title.group("description") if title else ""
    description = description or path.stem[len("migration_") + len(version):].strip("_").replace("_", " ")
    downgrade = scripts.get("downgrade")
    from planner.locks import checked_declarations

    lock_timeout, allow = checked_declarations(path, version, locks.get("lock_timeout"), locks.get("allow", ()))
    return Migration(
        version=version,
        description=description,
        path=path,
        checksum=checksum,
        depends_on=depends_on or (),
        dependency_source=DECLARED if depends_on is not None else IMPLIED,
        doc="\n".join(doc).strip("\n"),
        upgrade=functools.partial(run_script, scripts.get("upgrade", "")),
        downgrade=functools.partial(run_script, downgrade) if downgrade is not None else None,
        docstring_version=title.group("version") if title else None,
        documented_dependencies=None,
        transactional=transactional,
        irreversible_reason=irreversible,
        unwritten=tuple(unwritten),
        lock_timeout=lock_timeout,
        allow=allow,
    )


def _irreversible_marker(body: list[str], start: int) -> tuple[int, str] | None:
    """(line, reason) of a ``-- irreversible: why`` line in a section that starts on line ``start``."""
    for offset, line in enumerate(body, 1):
        found = _IRREVERSIBLE.match(line.strip())
        if found:
            return start + offset, fold(found.group("reason")) or UNEXPLAINED
    return None


def _boolean(path: Path, version: str, line: int, value: str) -> bool:
    """``-- transactional: false`` (or ``true``); anything else is refused rather than guessed."""
    word = value.strip().lower()
    if word not in ("true", "false"):
        raise MalformedSqlDirective(path, version, line,
                                    f"transactional must be true or false, not {value.strip()!r}")
    return word == "true"


def _dependencies(path: Path, version: str, line: int, value: str) -> tuple[str, ...]:
    versions = value.replace(",", " ").split()
    for item in versions:
        if not _VERSION.fullmatch(item):
            raise MalformedSqlDependencies(path, version, line,
                                           f"depends_on entry {item!r} is not a version such as 0030; "
                                           f"write `-- depends_on: 0030, 0027` (empty for a root)")
    return tuple(versions)


def sql_migration_source(version: str, description: str, dependencies: list[tuple[str, str]]) -> str:
    """The text of a new SQL migration: header, and two sections left for the author to fill.

    The sections hold only comments, so a run refuses to apply the file
    (``EmptyUpgrade``) and ``check`` flags it until someone writes the SQL:
    an unfinished migration can never be applied by accident, while every
    command that only reads still works.
    """
    lines = [f"-- Migration {version}: {' '.join(description.split())}", "--",
             "-- Explain what this migration changes and why (replace this line)."]
    for dependency, about in dependencies:
        lines.append(f"--   needs {dependency}" + (f" ({about})" if about else ""))
    lines += [
        f"-- depends_on: {', '.join(v for v, _ in dependencies)}".rstrip(),
        "",
        "-- upgrade",
        "-- Write the forward change here, e.g. CREATE INDEX idx_tasks_status ON tasks(status);",
        "",
        "-- downgrade",
        "-- Undo the upgrade here, e.g. DROP INDEX idx_tasks_status; delete this section if it cannot be undone.",
        "",
    ]
    return "\n".join(lines)
