"""Hook implementations of subplug_kdenlive, registered through the ``subplug``
entry-point group: the ``kdenlive`` command, the ``kdenlive`` host and doctor checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from subplug.hookspecs import hookimpl

if TYPE_CHECKING:
    from subplug.subcommands import Commands
    from subplug.types import DoctorCheck, HostAdapter


@hookimpl
def subplug_register_commands(cli: Commands) -> None:
    from subplug_kdenlive import commands

    cli.add(
        "kdenlive",
        help="write EN/MN subtitles into a Kdenlive project (apply, info, job)",
        setup=commands.setup,
        run=commands.run,
    )


@hookimpl
def subplug_register_hosts(register: Callable[[HostAdapter], None]) -> None:
    from subplug_kdenlive.host import KdenliveHost

    register(KdenliveHost())


@hookimpl
def subplug_doctor_checks(register: Callable[[DoctorCheck], None]) -> None:
    from subplug_kdenlive.checks import doctor_checks

    for check in doctor_checks():
        register(check)
