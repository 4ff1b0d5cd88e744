"""The progress bar of a long run on a terminal: it fits the width, names the migration running.

A run that sits silent looks hung; a bar that wraps on a narrow terminal
fills the screen. This one redraws one line, cut to the terminal's width.
"""

from __future__ import annotations

import click

from cli.output import echo


class Progress:
    """A progress bar that fits the terminal, names the migration running, and keeps the finished lines.

    The lines (``Applied 0001 ... (3 ms)``) are printed after the bar, so a
    run ends with the list of what was done and how long each step took.
    """

    def __init__(self, total: int, keep_lines: bool = True):
        import shutil

        self.total = total
        self.count = 0
        self.keep_lines = keep_lines
        self.lines: list[str] = []
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
