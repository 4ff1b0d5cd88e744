"""Reading a migrations folder into a ``Catalog``.

Loading never stops at the first problem: a developer fixing a broken catalog
wants every problem in one run, each naming its file. ``scan_catalog`` returns
what loaded and what did not; ``load_catalog`` is the strict form the planner
uses, which raises ``CatalogInvalid`` carrying all of them.

The file format is the seed framework's, so APM's files load as they are:
``migration_<digits>[_<slug>].py``, a docstring whose first line is ``Migration
NNNN: description``, ``upgrade(conn)``, optionally ``downgrade``, ``validate_pre``, ``validate_post``.

Plain SQL migrations: ``migration_<digits>[_<slug>].sql`` read into the same ``Migration`` value.

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
  (as a Python downgrade that only raises; see ``planner.migration``).
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

import contextlib
import functools
import importlib.util
import io
import marshal
import os
import re
import sys
import types
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from planner import versions
from planner.catalog import Catalog, collector_paused
from planner.errors import (
    CatalogError,
    CatalogInvalid,
    CatalogNotFound,
    ConflictingDependencies,
    DuplicateSqlSection,
    DuplicateVersion,
    InvalidTransactional,
    IrreversibleWithDowngrade,
    MalformedDependencies,
    MalformedFileName,
    MalformedSqlDependencies,
    MalformedSqlDirective,
    MigrationImportError,
    MissingUpgrade,
    MissingUpgradeSection,
    UnknownSqlDirective,
    UnreadableMigration,
)
from planner.migration import (
    DECLARED,
    DOCUMENTED,
    DeferredFunction,
    IMPLIED,
    UNEXPLAINED,
    Migration,
    declared_reason,
    does_nothing,
    fold,
    module_locks,
    plain_bindings,
)

try:  # as the standard library's random does: the built-in sha256, without hashlib's OpenSSL start-up (~3 ms)
    from _sha256 import sha256  # type: ignore[import-not-found]  # Python 3.11
except ImportError:
    try:
        from _sha2 import sha256  # type: ignore[import-not-found]  # Python 3.12 and later
    except ImportError:
        from hashlib import sha256  # a build without them

FILE_PREFIX = "migration_"
# PEP 552 flags: hash-based (bit 0), and checked (bit 1) so importlib also verifies it if it reads it.
_HASH_PYC_FLAGS = (0b11).to_bytes(4, "little")
# Versions are ASCII digits only: ``\d`` would also accept other scripts' digits,
# which a ledger row or a ``depends_on`` entry could never spell the same way.
_FILE_NAME = re.compile(r"^migration_(?P<version>[0-9]+)(?:_(?P<slug>[A-Za-z0-9_]+))?\.(?:py|sql)$")
_TITLE = re.compile(r"^\s*Migration\s+(?P<version>[0-9]+)\s*:\s*(?P<description>.*?)\s*$")
_DEPENDENCIES_HEADER = re.compile(r"^\s*Dependencies\s*:\s*$", re.IGNORECASE)
_DEPENDENCY_ITEM = re.compile(r"^\s*[-*]\s*(?:Migration\s+)?(?P<version>[0-9]+)\b", re.IGNORECASE)
_NO_DEPENDENCY_ITEM = re.compile(r"^\s*[-*]\s*None\b", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^\s*[-*]\s+")


@dataclass(frozen=True)
class DocstringInfo:
    """What a migration's docstring says about it."""

    version: str | None
    description: str
    #: None when there is no ``Dependencies:`` section; () when it says ``- None``.
    dependencies: tuple[str, ...] | None


def version_from_file_name(path: Path) -> str | None:
    """The version a file name carries, ``None`` for files that are not migrations.

    A name that starts with ``migration_`` but does not fit the pattern raises:
    silently skipping ``migration_27a.py`` is how a migration goes missing.
    """
    name = path.name
    if not name.startswith(FILE_PREFIX) or not name.endswith((".py", ".sql")):
        return None
    match = _FILE_NAME.match(name)
    if match is None:
        raise MalformedFileName(path)
    return match.group("version")


def parse_docstring(doc: str | None) -> DocstringInfo:
    """Read the title line and the ``Dependencies:`` section of a migration docstring."""
    lines = (doc or "").strip().splitlines()
    version = None
    description = ""
    if lines:
        title = _TITLE.match(lines[0])
        if title:
            version, description = title.group("version"), title.group("description")
        else:
            description = lines[0].strip()
    return DocstringInfo(version, description, _documented_dependencies(lines))


def _documented_dependencies(lines: list[str]) -> tuple[str, ...] | None:
    for start, line in enumerate(lines):
        if _DEPENDENCIES_HEADER.match(line):
            break
    else:
        return None
    found: list[str] = []
    items = 0
    for line in lines[start + 1 :]:
        if not line.strip():
            if items:
                break
            continue  # blank lines between the header and its first item
        if not _LIST_ITEM.match(line):
            break
        items += 1
        if _NO_DEPENDENCY_ITEM.match(line):
            continue
        item = _DEPENDENCY_ITEM.match(line)
        if item is None:
            raise ValueError(f"cannot read the Dependencies: line {line.strip()!r}; write '- Migration NNNN (why)'")
        found.append(item.group("version"))
    if not items:
        # Reading an empty section as "no dependencies" would silently make the migration a root.
        raise ValueError("the Dependencies: section lists nothing; write '- None' for a migration that needs none")
    return tuple(found)


def _declared_versions(module: object, name: str) -> tuple[str, ...] | None:
    """A module-level tuple of versions (``depends_on``, ``replaces``), ``None`` when the module has none."""
    if not hasattr(module, name):
        return None
    value = getattr(module, name)
    if not isinstance(value, (tuple, list)):
        raise ValueError(f"{name} must be a tuple or list of version strings, not {type(value).__name__}")
    found = []
    for item in value:
        text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
        if not versions.is_version(text):
            raise ValueError(f"{name} entry {item!r} is not a version string such as '0020'")
        found.append(text)
    return tuple(found)


@functools.lru_cache(maxsize=32)
def _cache_naming(folder: str) -> tuple[str, str] | None:
    """(cache folder, suffix after the stem) of the ``.pyc`` files for sources in ``folder``.

    ``importlib.util.cache_from_source`` computes the same thing for one file,
    at a few microseconds each; a 10,000-file catalog asks it once per folder.
    """
    try:
        probe = importlib.util.cache_from_source(os.path.join(folder, "m.py"))
    except NotImplementedError:  # no cache tag on this Python
        return None
    head, tail = os.path.split(probe)
    return head, tail[1:]  # "m.cpython-311.pyc" -> ".cpython-311.pyc"


def _cache_file(path: Path) -> str | None:
    """Where importlib would cache ``path``'s bytecode, ``None`` where it would not."""
    naming = _cache_naming(os.path.dirname(path))
    if naming is None:
        return None
    folder, suffix = naming
    return os.path.join(folder, path.stem + suffix)


def _compiled(path: Path, source: bytes) -> types.CodeType:
    """The code of ``source``, from the bytecode cache when it holds exactly these bytes.

    The checksum and the code come from one read of the file, so the code that
    runs is the code whose checksum is recorded. The cache is a hash-based
    ``.pyc`` (PEP 552) where importlib would write one: a timestamp-based cache
    could serve stale code after an edit within the same second that kept
    the size. ``sys.dont_write_bytecode`` is respected.
    """
    cache = _cache_file(path)
    key = importlib.util.source_hash(source)
    if cache is not None:
        try:
            with open(cache, "rb") as file:
                data = file.read()
        except OSError:
            data = b""
        if data[:4] == importlib.util.MAGIC_NUMBER and data[4:8] == _HASH_PYC_FLAGS and data[8:16] == key:
            try:
                return marshal.loads(memoryview(data)[16:])
            except (EOFError, ValueError, TypeError):
                pass  # a damaged cache is only a cache: compile again
    code = compile(source, str(path), "exec", dont_inherit=True)
    if cache is not None and not sys.dont_write_bytecode:
        data = importlib.util.MAGIC_NUMBER + _HASH_PYC_FLAGS + key + marshal.dumps(code)
        temporary = f"{cache}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            with open(temporary, "wb") as file:
                file.write(data)
            os.replace(temporary, cache)  # never a half-written cache for a concurrent reader
        except OSError:
            with contextlib.suppress(OSError):  # a read-only folder just means no cache
                os.unlink(temporary)
    return code


def _optional_function(module: object, name: str):
    value = getattr(module, name, None)
    return value if callable(value) else None


@functools.lru_cache(maxsize=32)
def application_importable(folder: Path) -> None:
    """Make the application around a catalog importable, as it was when the old framework ran inside it.

    APM's migrations import the application (``from agentpm.core... import
    enums``) at module level. Installed in the environment ``apm`` runs in,
    it imports as it is. From a source tree, the folder above the outermost
    package holding the catalog (each folder up with an ``__init__.py``) is
    the one its imports are relative to; a catalog folder that is no package
    stands for its parent folder. That folder is appended to ``sys.path``
    (after everything installed, so an installed application wins).
    """
    root = folder.resolve()
    while (root / "__init__.py").is_file() and root.parent != root:
        root = root.parent
    if root == folder.resolve():
        root = root.parent
    if str(root) not in sys.path:
        sys.path.append(str(root))


def _execute(module: types.ModuleType, code: types.CodeType, path: Path, version: str) -> None:
    """Run a migration's top level in ``module``: ``MigrationImportError`` for whatever it raises."""
    name = module.__name__
    # Registered while its top level runs, because some code looks its module up
    # there (a dataclass does); removed after, so loading a catalog leaves no trace.
    previous = sys.modules.get(name)
    sys.modules[name] = module
    application_importable(path.parent)
    try:
        # A top-level print() must not reach stdout (--json): see planner.events. Redirected here rather than
        # through planner.events, whose event dataclasses a status or a plan would pay for at every start.
        with contextlib.redirect_stdout(io.StringIO()):
            exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:  # a migration's top level may raise anything
        raise MigrationImportError(path, version, exc) from exc
    finally:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous


def _run_deferred(module: types.ModuleType, code: types.CodeType, path: Path, version: str,
                  bindings: dict[str, object], outcome: list[CatalogError | None]) -> None:
    """Run a module described without running, once (``outcome`` keeps how it went); ``CatalogInvalid`` if it fails.

    Then check that it bound what its bytecode said: the literals equal, each
    function compiled from the code object read. Only an import reaching back
    into the module could differ; a description that no longer holds is a
    catalog error, never a silent change of plan.
    """
    if not outcome:
        try:
            _execute(module, code, path, version)
            changed = [name for name, value in bindings.items()
                       if (getattr(getattr(module, name, None), "__code__", None) is not value
                           if isinstance(value, types.CodeType) else getattr(module, name, None) != value)]
            if changed:
                raise MigrationImportError(path, version, RuntimeError(
                    f"{', '.join(changed)} changed while its top level ran; bind them once, as literals and defs"))
            outcome.append(None)
        except MigrationImportError as exc:
            outcome.append(exc)
    if outcome[0] is not None:
        raise CatalogInvalid(path.parent, [outcome[0]])


def load_migration(path: Path, version: str, deferred: bool = False) -> Migration:
    """Import one migration file and describe it; dependencies may still need the implied rule.

    A migration with neither ``depends_on`` nor a ``Dependencies:`` section comes
    back with ``dependency_source == IMPLIED`` and no dependencies: only the
    whole catalog knows which version precedes it. With ``deferred``, a file
    whose top level can only bind literals, functions and imports is described
    without running it, its functions ``DeferredFunction``s (``planner.migration.plain_bindings``).
    """
    if path.suffix == ".sql":
        return load_sql_migration(path, version)
    source, checksum = _read(path, version)
    try:
        code = _compiled(path, source)
    except SyntaxError as exc:
        raise UnreadableMigration(path, version, f"syntax error: {exc.msg}", exc.lineno) from exc
    except ValueError as exc:  # null bytes, on Pythons that do not call that a SyntaxError
        raise UnreadableMigration(path, version, str(exc)) from exc
    module = types.ModuleType(f"apm_migration_{version}")
    module.__file__ = str(path)
    bindings = plain_bindings(code) if deferred else None
    view: object = module
    if bindings is None:
        _execute(module, code, path, version)
    else:
        run = functools.partial(_run_deferred, module, code, path, version, bindings, [])
        view = types.SimpleNamespace(**{name: DeferredFunction(name, value, module.__dict__, run)
                                        if isinstance(value, types.CodeType) else value
                                        for name, value in {"__doc__": None, **bindings}.items()})

    upgrade = _optional_function(view, "upgrade")
    if upgrade is None:
        raise MissingUpgrade(path, version)

    try:
        info = parse_docstring(view.__doc__)
        declared = _declared_versions(view, "depends_on")
    except ValueError as exc:
        raise MalformedDependencies(path, version, str(exc)) from exc

    documented = info.dependencies
    if declared is not None and documented is not None:
        if {versions.number(v) for v in declared} != {versions.number(v) for v in documented}:
            raise ConflictingDependencies(path, version, declared, documented)
    if declared is not None:
        depends_on, source_rule = declared, DECLARED
    elif documented is not None:
        depends_on, source_rule = documented, DOCUMENTED
    else:
        depends_on, source_rule = (), IMPLIED

    description = info.description or _slug(path, version)
    transactional = getattr(view, "transactional", True)
    if not isinstance(transactional, bool):
        raise InvalidTransactional(path, version, transactional)
    try:
        replaces = _declared_versions(view, "replaces") or ()
    except ValueError as exc:
        raise MalformedDependencies(path, version, str(exc)) from exc
    downgrade = _optional_function(view, "downgrade")
    irreversible = declared_reason(source, path, downgrade, module.__dict__)  # one that only raises: no downgrade
    return Migration(
        version=version,
        description=description,
        path=path,
        checksum=checksum,
        depends_on=depends_on,
        dependency_source=source_rule,
        doc=(view.__doc__ or "").strip(),
        upgrade=upgrade,
        downgrade=None if irreversible is not None else downgrade,
        validate_pre=_optional_function(view, "validate_pre"),
        validate_post=_optional_function(view, "validate_post"),
        docstring_version=info.version,
        documented_dependencies=documented,
        transactional=transactional,
        replaces=replaces,
        irreversible_reason=irreversible,
        unwritten=("upgrade",) if does_nothing(upgrade) else (),
        **module_locks(path, version, view),  # lock_timeout, allow (planner.locks)
    )


def _read(path: Path, version: str) -> tuple[bytes, str]:
    """A migration file's bytes and their sha256: one read, so the code that runs is the code checksummed."""
    try:
        with open(path, "rb") as file:  # open() directly: Path.read_bytes adds a few us per file
            source = file.read()
    except OSError as exc:
        raise UnreadableMigration(path, version, exc.strerror or str(exc)) from exc
    return source, sha256(source).hexdigest()


def _slug(path: Path, version: str) -> str:
    """The description a file name gives when its text gives none: ``migration_0031_add_index`` -> ``add index``."""
    return path.stem[len(FILE_PREFIX) + len(version):].strip("_").replace("_", " ")


def migration_files(directory: Path) -> tuple[dict[str, Path], list[CatalogError]]:
    """Map each version in a folder to its file, with the naming problems found on the way."""
    problems: list[CatalogError] = []
    by_number: dict[int, list[tuple[str, Path]]] = {}
    # Names from one scandir, sorted as strings: sorting Path objects and
    # stat-ing every entry cost more than a tenth of loading 10,000 files.
    with os.scandir(directory) as scan:
        entries = sorted((entry.name, entry) for entry in scan if entry.name.startswith(FILE_PREFIX))
    for name, entry in entries:
        path = directory / name
        try:
            version = version_from_file_name(path)
        except MalformedFileName as exc:
            problems.append(exc)
            continue
        if version is not None and entry.is_file():
            # _FILE_NAME lets only digits through as the version, so number() is never None here.
            by_number.setdefault(cast(int, versions.number(version)), []).append((version, path))
    files: dict[str, Path] = {}
    for number in sorted(by_number):
        found = by_number[number]
        if len(found) > 1:
            problems.append(DuplicateVersion(found[0][0], [p for _, p in found]))
            continue
        version, path = found[0]
        files[version] = path
    return files, problems


def scan_catalog(directory: Path | str, deferred: bool = False) -> tuple[list[Migration], list[CatalogError]]:
    """Load every migration in a folder, collecting problems instead of raising them.

    ``deferred``: run no module that can be described without running (``load_migration``); what cannot
    be imported is then reported when its code is needed (``planner.migration.load_code``), not here.

    Returns the migrations that loaded (in numeric order, implied dependencies
    filled in) and every file-level problem. Graph-level problems (unknown
    dependencies, cycles) are found when the ``Catalog`` is built.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CatalogNotFound(directory)
    files, problems = migration_files(directory)
    # A duplicated version still precedes the next one: the migration after it
    # must imply a dependency on it (reported once, as the duplicate), not
    # silently on the version before.
    duplicated = [p.versions[0] for p in problems if isinstance(p, DuplicateVersion)]
    entries: list[tuple[str, Path | None]] = [*files.items(), *((v, None) for v in duplicated)]
    entries.sort(key=lambda entry: versions.sort_key(entry[0]))
    loaded: list[Migration] = []
    previous: str | None = None
    # Every file adds objects that all stay alive: see planner.catalog.
    with collector_paused():
        for version, path in entries:
            if path is not None:
                try:
                    migration = load_migration(path, version, deferred)
                except CatalogError as exc:
                    problems.append(exc)
                else:
                    if migration.dependency_source == IMPLIED and previous is not None:
                        migration = replace(migration, depends_on=(previous,))
                    loaded.append(migration)
            previous = version
    return loaded, problems


def load_catalog(directory: Path | str, deferred: bool = False) -> Catalog:
    """Load a folder strictly: a ``Catalog`` whose graph is a DAG, or ``CatalogInvalid`` with every problem.

    ``deferred`` is for a command that may need none of the migrations' code: see ``scan_catalog``.
    """
    directory = Path(directory)
    migrations, problems = scan_catalog(directory, deferred)
    unloadable = {p.versions[0] for p in problems if p.versions}
    catalog, graph_problems = Catalog.build(directory, migrations, unloadable=unloadable)
    problems.extend(graph_problems)
    if problems:
        raise CatalogInvalid(directory, problems)
    return catalog


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
    source, checksum = _read(path, version)
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
            elif name == "irreversible":
                if irreversible is not None:
                    raise DuplicateSqlSection(path, version, number,
                                              f"second `-- irreversible:` (the first is on line "
                                              f"{irreversible_line}); give one reason")
                irreversible, irreversible_line = fold(directive.group("value")) or UNEXPLAINED, number
            elif name in ("lock_timeout", "allow"):
                value = directive.group("value").strip()
                locks[name] = value if name == "lock_timeout" else [c for c in re.split(r"[,\s]+", value) if c]
            elif name not in DIRECTIVES:
                raise UnknownSqlDirective(path, version, number,
                                          f"unknown header directive `{name}:`; the header knows "
                                          f"{', '.join(DIRECTIVES)} (write prose with a capital letter, "
                                          f"or not as `word:`)")
            elif depends_on is not None:
                raise DuplicateSqlSection(path, version, number,
                                          f"second `-- depends_on:` (the first is on line {depends_line}); "
                                          f"list every dependency on one line")
            else:
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

    description = (title.group("description") if title else "") or _slug(path, version)
    downgrade = scripts.get("downgrade")
    # start-up time: planner.loader runs without planner.locks until load_sql_migration() needs it
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
