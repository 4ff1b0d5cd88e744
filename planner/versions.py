"""What a version is: the one place that parses, orders and matches them.

A version is written as ASCII digits (``"0027"``) in a file name, a
``depends_on`` list, a ledger row or on the command line, and it means its
number: ``"27"`` and ``"0027"`` are the same version, and ``"0100"`` comes
after ``"0027"`` whatever the widths. The catalog keeps each version spelled
as its file spells it (the *canonical* spelling); everything else is
matched to that spelling by number, here.

A ledger is written by people and by other tools too, so it can hold rows
that are not versions at all (``"abc"``, ``"²"``, ``"0018_consolidated"``).
Such text is never an error to read: ``number`` answers ``None`` for it and
``sort_key`` orders it after every real version, so every command can list it
(as a row with no file) instead of failing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from planner.errors import InvalidVersion

# Digits, ``_``, a slug: the rows APM's later migrations write next to their own (``0018_consolidated``).
_SUFFIXED = re.compile(r"([0-9]+)_[A-Za-z0-9][A-Za-z0-9_.-]*")


def number(text: object) -> int | None:
    """The number ``text`` spells, or ``None`` when it is not a version.

    Only ASCII digits count: ``str.isdigit`` also accepts ``"²"``, which
    ``int`` then rejects, and a ledger row like that must read as "not a
    version", not crash a command.
    """
    if isinstance(text, str) and text.isascii() and text.isdigit():
        return int(text)
    return None


def is_version(text: object) -> bool:
    """Whether ``text`` spells a version (ASCII digits only)."""
    return isinstance(text, str) and text.isascii() and text.isdigit()


def base_version(text: object) -> str | None:
    """The version a suffixed ledger row belongs to (``"0018"`` for ``"0018_consolidated"``), else ``None``.

    APM's later migrations write rows of their own next to the framework's
    plain ``0018``: such a row is a note attached to that version, never a
    version itself (``number`` is ``None`` for it), so it can neither count as
    applied nor be reported as a migration whose file is missing. A plain
    version, and text that is neither (``"abc"``), answer ``None``.
    """
    if not isinstance(text, str) or not text.isascii():
        return None
    match = _SUFFIXED.fullmatch(text)
    return match.group(1) if match else None


def parse(text: str) -> str:
    """A version given by a person (an option, an argument), stripped; ``InvalidVersion`` otherwise.

    An empty or blank value is refused rather than read as "no version":
    ``--rollback ""`` must never turn into a plain apply.
    """
    stripped = text.strip() if isinstance(text, str) else ""
    if not is_version(stripped):
        raise InvalidVersion(text if isinstance(text, str) else "")
    return stripped


def sort_key(text: str) -> tuple[int, int, str]:
    """Order any recorded text: versions by number (then spelling), everything else after, by text."""
    value = number(text)
    return (0, value, text) if value is not None else (1, 0, text)


def ordered(texts: Iterable[str]) -> list[str]:
    """``texts`` sorted by ``sort_key``: how every list of versions is shown."""
    return sorted(texts, key=sort_key)


def same(a: str, b: str) -> bool:
    """Whether two spellings name the same version (``"27"`` and ``"0027"``); non-versions only by text."""
    if a == b:
        return True
    left, right = number(a), number(b)
    return left is not None and left == right


def width(versions: Iterable[str]) -> int:
    """How many digits a catalog writes its versions with (the widest one, at least 4)."""
    return max((len(v) for v in versions if is_version(v)), default=4)


def spell(value: int, digits: int = 4) -> str:
    """``value`` zero-padded to ``digits``: how a new version is written."""
    return str(value).zfill(digits)


def next_free(taken: Iterable[str], digits: int | None = None, *, start: int | None = None) -> str:
    """The lowest version above every version in ``taken`` (or above ``start``), in the catalog's width.

    ``taken`` should hold every number in use anywhere: the catalog's files
    and the ledger's rows. A version whose file was deleted is still in the
    ledger, and reusing its number would give a new file an "applied" row it
    never earned.
    """
    taken = list(taken)
    numbers = [n for n in map(number, taken) if n is not None]
    highest = max(numbers, default=0)
    if start is not None:
        highest = max(highest, start)
    return spell(highest + 1, digits if digits is not None else width(taken))


def free_versions(taken: Iterable[str], count: int, digits: int | None = None) -> list[str]:
    """``count`` distinct versions above everything in ``taken``: renumbering suggestions that never collide."""
    taken = list(taken)
    first = number(next_free(taken, digits)) or 1
    digits = digits if digits is not None else width(taken)
    return [spell(first + i, digits) for i in range(count)]
