"""Hook implementations of subplug_training (entry point ``training`` of the ``subplug``
group): the ``train`` and ``eval`` commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from subplug.hookspecs import hookimpl

if TYPE_CHECKING:
    from subplug.cli import Commands


@hookimpl
def subplug_register_commands(cli: Commands) -> None:
    """Add ``subplug train`` and ``subplug eval``."""
    from subplug_training import commands

    cli.add("train", help=commands.TRAIN_HELP, setup=commands.setup_train, run=commands.run_train)
    cli.add("eval", help=commands.EVAL_HELP, setup=commands.setup_eval, run=commands.run_eval)
