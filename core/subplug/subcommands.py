"""What ``subplug_register_commands`` receives: a registry of subcommands.

The command line (:mod:`subplug.cli`) builds one, adds the core commands and passes it to
every plugin; each entry is a name, a help line, ``setup(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from subplug.errors import SubplugError

RunFunction = Callable[[argparse.Namespace], "int | None"]
SetupFunction = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class _Command:
    name: str
    help: str
    setup: SetupFunction
    run: RunFunction


class Commands:
    """What ``subplug_register_commands`` receives: a way to add subcommands."""

    def __init__(self) -> None:
        self._commands: dict[str, _Command] = {}

    def add(self, name: str, *, help: str, setup: SetupFunction, run: RunFunction) -> None:
        """Add subcommand ``name``; ``setup(parser)`` adds its arguments, ``run(args)``
        does the work and returns an exit code (``None`` means 0)."""
        if name in self._commands:
            raise SubplugError(
                "duplicate-command",
                f"Two plugins add a command named {name!r}.",
                "Disable one with SUBPLUG_DISABLED_PLUGINS.",
            )
        self._commands[name] = _Command(name, help, setup, run)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._commands.values())

    def __contains__(self, name: object) -> bool:
        return name in self._commands
