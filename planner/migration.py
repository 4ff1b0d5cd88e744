"""One migration: what a file declares, once it has been loaded.

A ``Migration`` is a plain value. It knows its version, its description, what it
depends on (and why: declared, documented or implied by numbering), the sha256
of its file for drift detection, and the functions the executor calls. It holds
no connection and does no I/O, so plans can be computed and compared freely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from planner.transaction_guard import GuardedConnection

#: What a migration's ``upgrade``/``downgrade`` and validators are called with: the engine's guarded connection.
MigrationFunction = Callable[["GuardedConnection"], object]
ValidationFunction = Callable[["GuardedConnection"], bool]

#: Where a migration's dependencies came from, first rule that applies wins.
DECLARED = "depends_on"  # a module-level depends_on
DOCUMENTED = "docstring"  # the docstring's Dependencies: section
IMPLIED = "implied"  # the previous version in numeric order (the old linear framework)


@dataclass(frozen=True, eq=False)
class Migration:
    """A loaded migration file.

    Equality is by version and checksum: two loads of the same unchanged file
    are the same migration, which is what plan comparisons need.
    """

    version: str
    description: str
    path: Path
    checksum: str
    depends_on: tuple[str, ...]
    dependency_source: str
    doc: str
    upgrade: MigrationFunction
    downgrade: MigrationFunction | None = None
    validate_pre: ValidationFunction | None = None
    validate_post: ValidationFunction | None = None
    #: The version the docstring's first line names, when it names one (lint compares it to the file name).
    docstring_version: str | None = None
    #: The versions the docstring's Dependencies: section lists, when it has one (lint compares them).
    documented_dependencies: tuple[str, ...] | None = field(default=None)
    #: ``False`` for statements SQLite refuses inside a transaction (``VACUUM``): the step runs on its own,
    #: in autocommit, and its ledger row is written right after it succeeds.
    transactional: bool = True
    #: The versions a squashed migration stands for (``replaces``); ``()`` for an ordinary migration.
    replaces: tuple[str, ...] = ()
    #: Why the file says it cannot be undone, when it says so (a ``downgrade`` that only raises, a SQL
    #: file's ``-- irreversible:``); ``downgrade`` is then ``None``, as for a file without one
    #: (``planner.irreversible``).
    irreversible_reason: str | None = None
    #: The parts whose body does nothing yet (``"upgrade"``, and a SQL file's ``"downgrade"``): an
    #: unfilled scaffold. It loads, so every command that reads still works; ``check`` flags it and a run
    #: refuses to apply it (``planner.plan.refuse_empty_upgrades``).
    unwritten: tuple[str, ...] = ()
    #: Seconds this migration's step may wait for a lock (``lock_timeout = "5s"`` in the file; 0: no limit);
    #: ``None``: the run's (``planner.locks``).
    lock_timeout: float | None = None
    #: The lock findings this migration accepts (``allow = ["index-not-concurrent"]``; ``planner.locks``).
    allow: tuple[str, ...] = ()

    @property
    def number(self) -> int:
        """The numeric value of the version: what ordering and duplicate checks use."""
        return int(self.version)  # the loader admits only ASCII digits (planner.versions)

    @property
    def reversible(self) -> bool:
        """Whether a rollback can run this migration's ``downgrade``."""
        return self.downgrade is not None

    @property
    def rollback_refusal(self) -> str | None:
        """Why a rollback cannot run this migration, as a message continues after its version; ``None`` if it can."""
        if self.downgrade is not None:
            return None
        if self.irreversible_reason is not None:
            return f'is irreversible ("{self.irreversible_reason}")'
        return "defines no downgrade(conn)"

    @property
    def label(self) -> str:
        """``0027 Add metadata``: how diagrams and tables name a migration."""
        return f"{self.version} {self.description}".strip()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Migration):
            return NotImplemented
        return (self.version, self.checksum) == (other.version, other.checksum)

    def __hash__(self) -> int:
        return hash((self.version, self.checksum))

    def __repr__(self) -> str:
        return f"<Migration {self.version} {self.description!r}>"


def _nothing(conn: object) -> None:
    pass


def does_nothing(function: Callable[..., object]) -> bool:
    """Whether ``function``'s body is empty: ``pass``, ``...``, a docstring, comments (an unfilled scaffold).

    Read from its bytecode, which is as short as an empty function's and names
    nothing, on every Python version; no source is parsed, so loading 100,000
    migrations pays nothing for it.
    """
    code = getattr(function, "__code__", None)
    return code is not None and not code.co_names and len(code.co_code) <= len(_nothing.__code__.co_code)


class LockFields(TypedDict):
    """``module_locks``'s result, spread into ``Migration(...)``: the names and types of its two fields."""

    lock_timeout: float | None
    allow: tuple[str, ...]


def module_locks(path: Path, version: str, module: object) -> LockFields:
    """A Python migration's ``lock_timeout`` and ``allow``, checked (``planner.locks``), as ``Migration`` fields."""
    declared_timeout, declared_allow = getattr(module, "lock_timeout", None), getattr(module, "allow", ())
    if declared_timeout is None and declared_allow == ():
        return {"lock_timeout": None, "allow": ()}  # most files declare neither: no need to load planner.locks
    from planner.locks import checked_declarations  # start-up time: every command loads the catalog

    lock_timeout, allow = checked_declarations(path, version, declared_timeout, declared_allow)
    return {"lock_timeout": lock_timeout, "allow": allow}
