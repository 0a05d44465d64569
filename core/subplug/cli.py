"""The ``subplug`` command line (argparse + rich).

Building the parser imports no heavy library: ``subplug --help`` stays fast. A user
mistake (:class:`~subplug.errors.SubplugError`) ends in one message with a hint and a
non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from subplug import __version__
from subplug.commands.arguments import (  # noqa: F401  (public: plugins add these options)
    add_bottom_argument,
    add_engine_arguments,
    add_precision_arguments,
    parse_csv,
)
from subplug.errors import Cancelled, SubplugError
from subplug.subcommands import Commands, RunFunction, SetupFunction

# ----------------------------------------------------------------------- parser


def _setup_doctor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="build a tiny model and run the whole pipeline offline",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _run_doctor(args: argparse.Namespace) -> int:
    from subplug import doctor

    return doctor.main(self_test=args.self_test, as_json=args.json)


def _setup_models(parser: argparse.ArgumentParser) -> None:
    from subplug.commands import models

    models.setup(parser)


def _run_models(args: argparse.Namespace) -> int:
    from subplug.commands import models

    return models.run(args)


def _setup_live(parser: argparse.ArgumentParser) -> None:
    from subplug.commands import live

    live.setup(parser)


def _run_live(args: argparse.Namespace) -> int:
    from subplug.commands import live

    return live.run(args)


def _host_command(action: str) -> tuple[SetupFunction, RunFunction]:
    def setup(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("host", metavar="HOST", help="vlc, obs or kdenlive")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def run(args: argparse.Namespace) -> int:
        from subplug.hosts import run_host_action

        return run_host_action(action, args.host, as_json=args.json)

    return setup, run


def _setup_generate(parser: argparse.ArgumentParser) -> None:
    from subplug.commands import generate

    generate.setup(parser)


def _run_generate(args: argparse.Namespace) -> int:
    from subplug.commands import generate

    return generate.run(args)


def core_commands() -> Commands:
    """The commands every install has."""
    commands = Commands()
    commands.add(
        "generate",
        help="make subtitle files for audio/video files",
        setup=_setup_generate,
        run=_run_generate,
    )
    commands.add(
        "live",
        help="live captions: PCM on stdin → JSON caption events on stdout",
        setup=_setup_live,
        run=_run_live,
    )
    commands.add(
        "models",
        help="manage the local model cache (pull, import, list…)",
        setup=_setup_models,
        run=_run_models,
    )
    commands.add(
        "doctor",
        help="check this installation (add --self-test for a full run)",
        setup=_setup_doctor,
        run=_run_doctor,
    )
    for action, text in (
        ("install", "add subplug to a host program (vlc, obs, kdenlive)"),
        ("uninstall", "remove subplug from a host program"),
        ("status", "show whether subplug is installed in a host program"),
    ):
        setup, run = _host_command(action)
        commands.add(action, help=text, setup=setup, run=run)
    return commands


def build_parser() -> tuple[argparse.ArgumentParser, Commands]:
    """The full parser: core commands and those added by plugins."""
    from subplug import plugins

    parser = argparse.ArgumentParser(
        prog="subplug",
        description="Offline bilingual English/Mongolian subtitles with Gemma 3n.",
        epilog="Run 'subplug COMMAND --help' for a command's options. Docs: docs/ in the project.",
    )
    parser.add_argument("--version", action="version", version=f"subplug {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = core_commands()
    plugins.add_commands(commands)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands:
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.setup(child)
        child.set_defaults(_run=command.run)
    return parser, commands


def print_error(error: SubplugError) -> None:
    """One clear message on stderr: what went wrong and what to do."""
    from rich.console import Console
    from rich.markup import escape

    # Messages are plain text: square brackets (subplug[train], paths) are not markup.
    console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    console.print(f"[bold red]error:[/] {escape(error.message)} [dim]\\[{error.reference}][/]")
    if error.context:
        console.print(f"  {escape(error.context)}", style="dim")
    if error.hint:
        console.print(f"[bold]hint:[/] {escape(error.hint)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``subplug`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SUBPLUG_DEBUG") == "1"
    try:
        parser, _ = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        code = args._run(args)
        return 0 if code is None else int(code)
    except SubplugError as error:
        if debug:
            raise
        print_error(error)
        return error.exit_code if not isinstance(error, Cancelled) else 130
    except KeyboardInterrupt:
        if debug:
            raise
        print_error(Cancelled())
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())
