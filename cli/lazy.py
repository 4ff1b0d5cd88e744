"""Groups whose subcommands are imported when a command line names one, not at every start-up.

Every ``apm`` run pays for importing what it registers: each command module
pulls in the planner modules it uses (and their dataclasses, built at
import). A data migration run with ``apm migrate`` needs none of ``fleet``,
``status``, ``doctor`` or ``graph``, so a subcommand registered with
``add_lazy`` is imported only when the command line names it, or when every
command is wanted (``--help``, completion, or any reader of ``commands``,
such as the docs checks that walk the tree).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import click


def imported(module: str, name: str) -> Callable[[], click.Command]:
    """A loader for ``add_lazy``: the command ``name`` of ``module``, imported when called."""
    return lambda: getattr(importlib.import_module(module), name)


class LazyGroup(click.Group):
    """A ``click.Group`` that also takes subcommands as loaders (``add_lazy``), called the first time needed."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._lazy: dict[str, Callable[[], click.Command]] = {}
        super().__init__(*args, **kwargs)

    def add_lazy(self, name: str, load: Callable[[], click.Command]) -> None:
        """Register ``name``, whose command ``load()`` returns (a command of that name) when first needed."""
        self._lazy[name] = load

    @property  # type: ignore[override]
    def commands(self) -> dict[str, click.Command]:
        """Every subcommand, the lazy ones loaded: whoever reads the whole mapping gets the whole tree."""
        for name in list(self._lazy):
            self._load(name)
        return self._commands

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._commands = value

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        lazy, self._lazy = self._lazy, {}  # click's add_command writes through ``commands``: load nothing for it
        try:
            super().add_command(cmd, name)
        finally:
            self._lazy = lazy

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            self._load(cmd_name)
        return self._commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self._commands, *self._lazy})

    def _load(self, name: str) -> None:
        command = self._lazy.pop(name)()
        self._commands[name] = command
