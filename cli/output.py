"""Turning library results into what a person or a script reads.

Tables go through tabulate; ``--json`` output goes through ``emit_json`` so
every command's machine-readable shape is plain, sorted and stable (the shapes
are documented in docs/commands.md).

The progress bar of a long run on a terminal: it fits the width, names the migration running.

A run that sits silent looks hung; a bar that wraps on a narrow terminal
fills the screen. This one redraws one line, cut to the terminal's width.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click

from cli.options import use_color


def terminal_columns() -> int | None:
    """The width of the terminal standard output is shown on; ``None`` for a file or a pipe, where a line is
    never cut: a log or a script keeps every character."""
    import shutil  # start-up time: shutil imports zlib, bz2 and lzma; only a table cut to the terminal needs it

    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table, tabulate's ``simple`` format.

    The common table (one-line text and whole numbers) is laid out here: a
    fleet's thousand rows took tabulate about 45 ms, and its import 20 ms
    more, a third of what `apm fleet status` costs beyond reading the files.
    Anything else (a cell of several lines, colour codes, a float, a ragged
    row) is tabulate's, which knows its rules; tests/test_cli.py holds the two
    to the same output.
    """
    rows = [list(row) for row in rows]
    heads = [str(h) for h in headers]
    plain = all(len(row) == len(heads) and all(v is None or type(v) in (str, int, bool) for v in row) for row in rows)
    cells = [["" if v is None else str(v).strip() for v in row] for row in rows] if plain else []
    if not plain or any("\n" in c or "\x1b" in c for row in [heads, *cells] for c in row):
        # start-up time: cli.output runs without tabulate until a table needs its rules
        from tabulate import tabulate

        return tabulate(rows, headers=heads, tablefmt="simple", disable_numparse=True)
    widths = [len(h) + 2 for h in heads]  # tabulate pads a header by two
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    lines = [heads, ["-" * width for width in widths], *cells]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def emit_json(value: Any) -> None:
    import json  # start-up time: most runs print no JSON

    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def echo(message: str = "", *, fg: str | None = None, bold: bool = False, err: bool = False) -> None:
    """Print a line, styled only where colour is allowed (a terminal, and no NO_COLOR)."""
    if fg or bold:
        message = click.style(message, fg=fg, bold=bold)
    elif "\x1b" not in message:
        # Nothing to strip: click would still ask whether the stream is a terminal, for each line (a fleet's
        # line per database).
        click.echo(message, err=err, color=True)
        return
    click.echo(message, err=err, color=use_color())


def duration(ms: float) -> str:
    """``14 ms``, or ``0.4 ms`` below a millisecond."""
    return f"{ms:.0f} ms" if ms >= 1 else f"{ms:.1f} ms"


def migration_row(migration) -> list[str]:
    return [migration.version, migration.description, ", ".join(migration.depends_on) or "-"]


def plan_json(plan) -> dict[str, Any]:
    steps = [{"version": s.version, "description": s.migration.description, "direction": s.direction,
              "depends_on": list(s.migration.depends_on), "reversible": s.migration.reversible,
              "irreversible": s.migration.irreversible_reason, "transactional": s.migration.transactional}
             for s in plan.steps]
    return {"direction": plan.direction, "target": plan.target, "cascade": plan.cascade, "steps": steps}


def printed_lines(output: str) -> list[str]:
    """What a migration printed, indented under its step's line (``│ ``), blank lines dropped.

    The text was captured so it never reaches stdout on its own (``--json``
    stays one document); a person sees it right after the step it belongs to.
    """
    return [f"    │ {line}" for line in output.splitlines() if line.strip()]


def note_row(note) -> list[str]:
    """A ledger row that is no applied migration (``planner.ledger.LedgerNote``), as ``--show-applied`` lists it.

    The ``file`` column says what it is instead of a file state: ``note`` (of
    version ``0018``, for ``0018_consolidated``) or ``rolled back`` (by APM's
    framework, at ``rollback_at``: pending again).
    """
    if note.kind == "note":
        return [note.version, note.description or "", note.applied_at or "", f"note of {note.base}"]
    return [note.version, note.description or "", note.applied_at or "", f"rolled back {note.rollback_at}"]


def note_json(note) -> dict[str, Any]:
    return {"version": note.version, "description": note.description, "applied_at": note.applied_at,
            "checksum": None, "file": note.kind, "note_of": note.base, "applied_by": note.applied_by,
            "rollback_at": note.rollback_at, "rollback_reason": note.rollback_reason}


def confirm(question: str) -> bool:
    """Ask a yes/no question on stderr; no answer, or the end of input, is a no.

    Not ``click.confirm``: it reads with ``input()``, and a Ctrl-C that
    arrives between the prompt being written and the read starting is only
    noticed once a line is typed, so the command hangs (seen under load).
    Waiting for the answer in 100 ms slices lets Python run the signal
    handler (``cli.errors.catch_interrupts``) within a slice, as the lock
    waits do.
    """
    # start-up time: cli.output runs without select until confirm() needs it
    import select

    while True:
        click.echo(f"{question} [y/N]: ", nl=False, err=True)
        try:
            descriptor = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file (a test's input): read directly
            descriptor = None
        while descriptor is not None and not select.select([descriptor], [], [], 0.1)[0]:
            pass
        line = sys.stdin.readline()
        if not line:
            click.echo("", err=True)
            return False
        answer = line.strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("", "n", "no"):
            return False
        click.echo("Error: invalid input", err=True)


class Progress:
    """A progress bar that fits the terminal, names the migration running, and keeps the finished lines.

    The lines (``Applied 0001 ... (3 ms)``) are printed after the bar, so a
    run ends with the list of what was done and how long each step took.
    """

    def __init__(self, total: int, keep_lines: bool = True):
        self.total = total
        self.count = 0
        self.keep_lines = keep_lines
        self.lines: list[str] = []
        import shutil  # start-up time: shutil imports zlib, bz2 and lzma; only a bar on a terminal needs it

        self.width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        self.current = ""

    def grow(self, steps: int) -> None:
        self.total = self.count + steps

    def show(self, step) -> None:
        self.current = f"{'Applying' if step.direction == 'apply' else 'Rolling back'} {step.migration.label}"
        self._draw()

    def done(self, line: str) -> None:
        self.count += 1
        if self.keep_lines:
            self.lines.append(line)
        self._draw()

    def _draw(self) -> None:
        counter = f" {self.count}/{self.total} "
        bar_width = max(10, min(30, self.width // 3))
        filled = int(bar_width * self.count / self.total) if self.total else bar_width
        bar = "[" + "#" * filled + "-" * (bar_width - filled) + "]"
        room = self.width - len(bar) - len(counter)
        label = self.current if len(self.current) <= room else self.current[: max(0, room - 1)] + "…"
        text = f"{bar}{counter}{label}"[: self.width]
        click.echo("\r" + text.ljust(self.width), nl=False)

    def close(self) -> None:
        click.echo("\r" + " " * self.width + "\r", nl=False)
        if not self.keep_lines:
            return
        for line in self.lines:
            echo(line, fg="yellow" if line.startswith("Skipped") else None)
        applied = sum(1 for line in self.lines if not line.startswith("Skipped"))
        echo(f"{applied} of {self.total} step(s) done")
