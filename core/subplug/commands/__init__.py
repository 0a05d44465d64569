"""Subcommands of the ``subplug`` command line, one module per command group.

Each module provides ``setup(parser)`` (adds its arguments and sub-subcommands) and
``run(args) -> int``; ``subplug.cli`` wires them in.
"""
