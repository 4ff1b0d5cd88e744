"""Which databases form a fleet: glob patterns, list files and the config's ``fleet`` patterns, deduplicated.

A member is one database: a SQLite file, a PostgreSQL URL, or one tenant
schema of a PostgreSQL database (``postgresql://host/db#tenant``: the part
after ``#`` names the schema that holds both the tenant's tables and its
ledger). The same database reached twice is one member, the first spelling
met shown: a file by its real path (a symlink, ``./a`` and ``a``), a URL by
the connection it names (``planner.urls.connection_identity``: ``postgres://``
or ``postgresql://``, the keyword form, its parameters in any order).

A pattern or a list that names nothing is an error naming it
(``EmptyPattern``): a typo must not look like an empty, healthy fleet.
"""

from __future__ import annotations

import glob as globbing
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from planner.engines import EngineKind, engine_for, kind_of, on_server
from planner.errors import EmptyPattern, NoFleet
from planner.urls import connection_identity, display_name, split_schema, tenant_url, without_password


def _on_server(text: str) -> bool:
    return on_server(text)


@dataclass(frozen=True)
class Member:
    """One database of a fleet.

    ``db`` is how it was given (a path as the pattern or list spelled it, or a
    URL) and is never shown for a URL: ``display`` is, without its password.
    ``real`` is the file's real path (SQLite) or the connection string to use
    (PostgreSQL, with the tenant's ``search_path`` when it names a schema).
    """

    db: str
    real: str
    schema: str | None = None
    #: What makes two spellings one database: the file's (device, inode), or its real path when it is missing.
    identity: object = None
    #: The run's ledger schema (``--ledger-schema``), for naming a URL that sets that schema's ``search_path``
    #: itself (``?options=-csearch_path%3Dt``) as a single-database command names it: ``url#t``.
    ledger: str | None = None

    def __repr__(self) -> str:
        # ``db`` and ``real`` may hold a password: a caller logging a member (or a status or an outcome that
        # holds one) must not log it.
        return f"Member({self.display!r}, schema={self.schema!r})"

    @property
    def on_server(self) -> bool:
        return self.schema is not None or self.real.startswith(("postgresql://", "postgres://")) or \
            ("=" in self.real and _on_server(self.real))

    @property
    def display(self) -> str:
        """The member as every output names it: the path as given, or the URL with its password masked."""
        if not self.on_server:
            return self.db

        return display_name(self.real, self.schema or self.ledger)

    def with_ledger(self, schema: str) -> Member:
        """The member in a run whose ledger schema is ``schema``: a URL setting that schema's ``search_path`` is
        then named ``url#schema``, as ``apm migrate --db URL --ledger-schema schema`` names it."""
        return replace(self, ledger=schema) if self.on_server and not self.schema else self

    def named(self, text: str) -> str:
        """``text`` (a message about this database) naming it as every output does: an engine names a file by
        the absolute path it opened, the fleet by the path as given, and one member has one name."""
        return text if self.on_server else text.replace(self.real, self.db)

    @cached_property
    def key(self) -> str:
        """What identifies the member across runs (the journal): the real path, or the URL without password.

        The path with its symlinks resolved: a resume that spells a database otherwise (``link.db`` for
        ``p1/a.db``) must still find its record, or the database would be left out of the resume. Resolved
        once per member (``realpath`` asks the file system about every folder of the path): the journal's
        header and each outcome's record both name it.
        """
        if not self.on_server:
            return os.path.realpath(self.real)

        return without_password(self.db)

    @property
    def kind(self) -> EngineKind:
        """The registered engine the member's database belongs to."""
        # The text, not ``_target``: the registry reads it as ``on_server`` does, and building a Path per member
        # cost as much as the rest of the lookup (``apm fleet status`` asks once per member).
        return kind_of(self.real)

    @cached_property
    def _target(self) -> str | Path:
        return self.real if self.on_server else Path(self.real)

    def engine(self, *, busy_timeout: float, ledger_schema: str = "public", backup_dir: Path | None = None):
        """The member as a ``planner.engines.Engine``: a tenant's schema is its ledger schema."""
        return engine_for(self._target, busy_timeout=busy_timeout, ledger_schema=self.schema or ledger_schema,
                          backup_dir=backup_dir)


def resolve_keys(members: Iterable[Member]) -> None:
    """Each file member's ``key`` (its real path), resolved together: a folder the members share is asked about
    once, where ``realpath`` walks every folder of every path again (a run's journal names each member by its key).
    """
    folders: dict[str, str] = {}
    for candidate in members:
        if not candidate.on_server and "key" not in candidate.__dict__:
            candidate.__dict__["key"] = _real_path(candidate.real, folders)  # where ``cached_property`` keeps it


def _real_path(path: str, folders: dict[str, str]) -> str:
    """``os.path.realpath`` of an absolute, normalized ``path`` (``Member.real``), its folders' real paths kept in
    ``folders``: only the components no earlier path shared are asked about (one ``lstat`` each)."""
    parent, name = os.path.split(path)
    if not name:
        return path  # the root
    real_parent = folders.get(parent)
    if real_parent is None:
        real_parent = folders[parent] = _real_path(parent, folders)
    candidate = os.path.join(real_parent, name)
    return os.path.realpath(candidate) if os.path.islink(candidate) else candidate


def member(db: str, *, cwd: Path | str | None = None) -> Member:
    """One database as given: a URL (``#schema`` for a tenant schema) or a path relative to ``cwd``."""
    text = db.strip()
    if on_server(text):
        url, schema = split_schema(text)
        return Member(text, tenant_url(url, schema) if schema else url, schema, identity=connection_identity(url))
    real = os.path.normpath(os.path.join(cwd or os.getcwd(), os.path.expanduser(text)))
    return Member(text, real, identity=_identity(real))


def discover(
    *,
    globs: Sequence[str] = (),
    lists: Sequence[Path | str] = (),
    configured: Sequence[str] = (),
    cwd: Path | None = None,
    order: Sequence[tuple[str, str]] | None = None,
) -> list[Member]:
    """The fleet named by ``globs``, ``lists`` and (when neither is given) the config's ``configured`` patterns.

    Globs are relative to ``cwd`` (``~`` expanded, ``**`` recursive). A list file holds one database a line (a path relative
    to ``cwd``, or a URL); ``#`` starts a comment. Members keep the order
    they were found in, sorted within each glob: the globs, then the lists,
    unless ``order`` gives them as they were given (``("glob", pattern)``,
    ``("list", file)``), a list before a glob included. Order decides which
    spelling names a database given twice (the first), so it is the user's.
    """
    cwd = cwd or Path.cwd()
    found: list[Member] = []
    if globs or lists:
        sources = order if order is not None else \
            [("glob", str(g)) for g in globs] + [("list", str(item)) for item in lists]
        for kind, source in sources:
            found += _globbed(source, "glob pattern", cwd) if kind == "glob" else _listed(Path(source), cwd)
    elif configured:
        for pattern in configured:
            found += _globbed(pattern, "fleet pattern", cwd)
    else:
        raise NoFleet()
    return dedupe(found)


def identity(catalog: Path, *, globs: Sequence[str] = (), lists: Sequence[Path | str] = (),
             configured: Sequence[str] = (), cwd: Path | None = None) -> dict[str, Any]:
    """Which fleet this is, as its run's journal records it so that a resume continues that fleet's run only:
    ``named_by``, each glob and list file made absolute (``projects/*`` given in two folders names two fleets),
    the config's patterns when neither is given (``None`` when nothing names a fleet), URLs without their
    password, sorted (the same patterns in another order are the same fleet); and the ``catalog`` folder."""
    cwd = cwd or Path.cwd()

    def absolute(text: str) -> str:
        return without_password(text) if on_server(text) else \
            os.path.normpath(os.path.join(cwd, os.path.expanduser(text)))

    named = sorted([f"glob {absolute(str(g))}" for g in globs] + [f"list {absolute(str(f))}" for f in lists]) \
        if globs or lists else sorted(f"fleet {absolute(str(p))}" for p in configured)
    return {"named_by": named or None, "catalog": absolute(str(catalog))}


def dedupe(members: Iterable[Member]) -> list[Member]:
    """``members`` without repeats of the same database (real path, or connection and schema), first spelling
    kept."""
    seen: set[tuple[object, str | None]] = set()
    unique = []
    for candidate in members:
        key = (candidate.identity if candidate.identity is not None else candidate.real, candidate.schema)
        if key not in seen:
            seen.add(key)
            unique.append(candidate)
    return unique


def _globbed(pattern: str, source: str, cwd: Path) -> list[Member]:
    if on_server(pattern):  # a URL in a config's fleet list is a member, not a pattern
        return [member(pattern, cwd=cwd)]
    expanded = os.path.expanduser(pattern)
    folder = os.fspath(cwd)  # once: joining a Path converts it for every match
    head, tail = _literal_tail(expanded)
    if tail:
        members = _matched_with_tail(head, tail, folder)
    else:
        members = [_found(path, folder) for path in sorted(globbing.glob(expanded, root_dir=folder, recursive=True))]
    if not members:
        raise EmptyPattern(source, pattern, "matches no database" + (
            f" (relative to {folder})" if not os.path.isabs(expanded) else ""))
    return members  # a folder the pattern matches is kept: its row says it is not a database


def _literal_tail(pattern: str) -> tuple[str, str]:
    """``pattern`` as (its part up to the last component with a wildcard, the plain components after it):
    ``projects/*/.aipm/data/aipm.db`` is ``projects/*`` and ``.aipm/data/aipm.db``. No tail (``""``) where the
    split would not match what glob matches: a recursive ``**`` (it also matches no folder at all), a tail with
    an empty component (``//``, a trailing ``/``: glob then wants folders), or no wildcard before the tail."""
    parts = pattern.split(os.sep)
    last = max((index for index, part in enumerate(parts) if globbing.has_magic(part)), default=-1)
    if last < 0 or last == len(parts) - 1 or "**" in pattern or "" in parts[last + 1:]:
        return pattern, ""
    return os.sep.join(parts[:last + 1]), os.sep.join(parts[last + 1:])


def _matched_with_tail(head: str, tail: str, folder: str) -> list[Member]:
    """What ``glob(head/tail)`` matches, as members, for a plain ``tail``: ``head`` globbed, then each match's
    ``tail`` looked up with the one ``stat`` a member needs anyway (its identity), where glob would ask the
    file system about every folder of the tail first (three ``lstat`` a project's database)."""
    found = []
    for path in sorted(os.path.join(match, tail) for match in globbing.glob(head, root_dir=folder)):  # as glob sorts
        real = os.path.normpath(os.path.join(folder, path))
        identity = _identity(real, matched=True)
        if identity is not None:
            found.append(Member(path, real, identity=identity))
    return found


def _found(path: str, folder: str) -> Member:
    """A file glob found: never a URL (the file system named it) and never ``~``-expanded again."""
    real = os.path.normpath(os.path.join(folder, path))
    return Member(path, real, identity=_identity(real))


def _identity(real: str, *, matched: bool = False) -> object:
    """What makes two spellings of the file ``real`` one member: its (device, inode), or its real path where it
    cannot be read. With ``matched``, ``None`` where glob would not match it (glob keeps what ``lexists`` finds,
    a dangling symlink too)."""
    try:
        # One stat instead of realpath's walk over every folder: a symlink and its target share an inode.
        found = os.stat(real)
        return found.st_dev, found.st_ino
    except OSError:
        if matched and not os.path.lexists(real):
            return None
        return os.path.realpath(real)


def _listed(path: Path, cwd: Path) -> list[Member]:
    """The members a list file names, one a line: a ``#`` at the start of a line or after a blank starts a
    comment (``h/x#1.db`` is a path; ``h/y #2.db`` is ``h/y``, so a path holding `` #`` is written quoted,
    ``"h/y #2.db"``). A URL line is its first word, so its tenant ``#schema`` is kept."""
    target = path if path.is_absolute() else cwd / path
    try:
        text = target.read_text(encoding="utf-8-sig")  # a BOM (Notepad, PowerShell) is no part of the first entry
    except (OSError, UnicodeDecodeError) as exc:
        raise EmptyPattern("list file", str(path), f"cannot be read ({getattr(exc, 'strerror', None) or exc})") \
            from exc
    entries = []
    for line in text.splitlines():
        line = line.strip()
        quoted = re.match(r"""(["'])(.+?)\1\s*(?:#.*)?$""", line)
        if quoted:
            entry = quoted.group(2)
        elif line.lower().startswith(("postgresql://", "postgres://")):
            entry = line.split()[0]  # a URL's "#" names a tenant schema; a comment follows a space
        else:  # a path, or libpq's keyword form ("password=a#b" keeps its "#")
            entry = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if entry:
            entries.append(member(entry, cwd=cwd))
    if not entries:
        raise EmptyPattern("list file", str(path), "names no database (only blank lines and comments)")
    return entries
