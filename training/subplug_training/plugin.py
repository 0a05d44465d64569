"""Hook implementations of subplug_training (entry point ``training`` of the ``subplug``
group): the ``train`` and ``eval`` commands and a doctor check."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from subplug.hookspecs import hookimpl

if TYPE_CHECKING:
    from subplug.subcommands import Commands
    from subplug.types import DoctorCheck


@hookimpl
def subplug_register_commands(cli: Commands) -> None:
    """Add ``subplug train`` and ``subplug eval``."""
    from subplug_training import commands

    cli.add("train", help=commands.TRAIN_HELP, setup=commands.setup_train, run=commands.run_train)
    cli.add("eval", help=commands.EVAL_HELP, setup=commands.setup_eval, run=commands.run_eval)


@hookimpl
def subplug_doctor_checks(register: Callable[[DoctorCheck], None]) -> None:
    """Report whether the training libraries (the ``train`` extra) are installed."""
    from subplug_training.extras import doctor_checks

    for check in doctor_checks():
        register(check)
