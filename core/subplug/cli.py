"""The ``subplug`` command line (argparse + rich).

Building the parser imports no heavy library: ``subplug --help`` stays fast. A user
mistake (:class:`~subplug.errors.SubplugError`) ends in one message with a hint and a
non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from subplug import __version__
from subplug.errors import Cancelled, SubplugError

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


# ----------------------------------------------------------------------- parser


def parse_csv(value: str) -> tuple[str, ...]:
    """An argparse ``type``: ``"en, mn"`` → ``("en", "mn")`` (empty parts dropped)."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def add_engine_arguments(
    parser: argparse._ActionsContainer,
    *,
    detects: str = "",
    targets: bool = True,
    formats: bool = False,
    model_default: str = "the backend's",
    source_default: str = "auto",
    backend_default: str = "gemma3n",
) -> None:
    """Add the options of a command that runs the engine, in this order: ``--source``,
    ``--targets`` (when ``targets``), ``--format`` (when ``formats``; dest ``formats``),
    ``--model``, ``--backend`` and ``--device``.

    ``detects`` says what auto-detection works on, for the ``--source`` help ("per
    chunk"); ``model_default`` names the model used when ``--model`` is left out, in
    its help. ``parser`` may be an argument group.
    """
    detects_help = f"auto detects it {detects}" if detects else "auto detects it"
    parser.add_argument(
        "--source",
        default=source_default,
        choices=["auto", "en", "mn"],
        help=f"spoken language; {detects_help} (default: {source_default})",
    )
    if targets:
        parser.add_argument(
            "--targets",
            default="en,mn",
            type=parse_csv,
            metavar="LANGS",
            help="subtitle languages, comma-separated (default: en,mn)",
        )
    if formats:
        parser.add_argument(
            "--format",
            dest="formats",
            default="ass,srt",
            type=parse_csv,
            metavar="FORMATS",
            help="ass (bilingual), srt, vtt; comma-separated (default: ass,srt)",
        )
    parser.add_argument(
        "--model",
        default=None,
        metavar="NAME|PATH",
        help=f"model cache name or folder (default: {model_default})",
    )
    parser.add_argument(
        "--backend",
        default=backend_default,
        metavar="NAME",
        help=f"model backend (default: {backend_default})",
    )
    parser.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto, cuda, cuda:N, mps or cpu (default: auto)",
    )


def add_bottom_argument(parser: argparse._ActionsContainer, *, where: str = "") -> None:
    """Add ``--bottom``, the language shown at the bottom of bilingual subtitles;
    ``where`` ends its help's first part (" in the .ass")."""
    parser.add_argument(
        "--bottom",
        choices=["en", "mn"],
        default="mn",
        help=f"language shown at the bottom{where} (default: mn)",
    )


def add_precision_arguments(parser: argparse._ActionsContainer) -> None:
    """Add ``--dtype`` and ``--batch-size``, which :func:`generate_options` reads."""
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bf16", "fp16", "fp32", "bf16-upcast"],
        help="compute precision (default: the fastest measured for the device; "
        "bf16-upcast: CPU, bf16 weights with float32 matrix products)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="chunks per model call (default: from free memory)",
    )


def add_max_chars_argument(parser: argparse._ActionsContainer) -> None:
    """Add ``--max-chars``, which :func:`generate_options` reads."""
    parser.add_argument(
        "--max-chars",
        type=int,
        default=42,
        metavar="N",
        help="characters per subtitle line (default: 42)",
    )


def _setup_generate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("media", nargs="+", type=Path, metavar="MEDIA", help="audio or video files")
    add_engine_arguments(parser, detects="per chunk", formats=True, model_default="gemma3n-en-mn")
    add_precision_arguments(parser)
    parser.add_argument(
        "--no-merge",
        action="store_true",
        help="keep a LoRA adapter unmerged (slower; for comparisons)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: next to each media file)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing subtitle files (a .bak copy is kept)",
    )
    parser.add_argument(
        "--audio-stream",
        type=int,
        default=None,
        metavar="N",
        help="audio stream to use, counting audio streams from 0",
    )
    add_bottom_argument(parser, where=" in the .ass")
    add_max_chars_argument(parser)
    parser.add_argument(
        "--max-chunk",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="longest audio the model hears at once, 1-30 (default: 30)",
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="ignore results of an earlier interrupted run"
    )
    parser.add_argument(
        "--jsonl",
        action="store_true",
        help="print JSON lines for programs (docs/jsonl.md) instead of bars",
    )


def generate_options(args: argparse.Namespace, **fields: Any) -> Any:
    """The :class:`~subplug.types.GenerateOptions` of a command's parsed arguments.

    Reads what :func:`add_engine_arguments`, :func:`add_precision_arguments`,
    :func:`add_max_chars_argument` and :func:`add_bottom_argument` add; an argument a
    command does not have keeps the option's default. ``fields`` set other options
    (``formats``, ``out_dir``…). Raises ``bad-batch-size`` or ``bad-max-chars``."""
    from subplug.types import BackendOptions, CueOptions, GenerateOptions, StyleOptions

    batch_size = getattr(args, "batch_size", None)
    max_chars = getattr(args, "max_chars", 42)
    if batch_size is not None and batch_size < 1:
        raise SubplugError(
            "bad-batch-size",
            f"--batch-size must be at least 1, not {batch_size}.",
            "Leave it out to size batches from free memory.",
        )
    if not 10 <= max_chars <= 100:
        raise SubplugError(
            "bad-max-chars",
            f"--max-chars must be between 10 and 100, not {max_chars}.",
            "42 is the usual limit for English subtitles (Netflix), 39 for Cyrillic.",
        )
    defaults = BackendOptions()
    options = GenerateOptions(
        source=args.source,
        targets=args.targets,
        backend=args.backend,
        backend_options=BackendOptions(
            model=args.model,
            device=args.device,
            dtype=getattr(args, "dtype", defaults.dtype),
            batch_size=batch_size,
            merge_adapter=not getattr(args, "no_merge", False),
        ),
        cues=CueOptions(max_chars={"en": max_chars, "mn": max_chars}),
        style=StyleOptions(bottom=getattr(args, "bottom", StyleOptions().bottom)),
    )
    return replace(options, **fields)


def _generate_options(args: argparse.Namespace) -> Any:
    options = generate_options(
        args,
        formats=args.formats,
        overwrite=args.overwrite,
        audio_stream=args.audio_stream,
        max_chunk=args.max_chunk,
        resume=not args.no_resume,
    )
    if args.out is not None:
        out = args.out.expanduser()
        if out.exists() and not out.is_dir():
            raise SubplugError(
                "out-not-a-folder",
                f"--out {out} is a file, not a folder.",
                "Give a folder for --out (it is created when missing).",
            )
        if not out.exists():
            try:
                out.mkdir(parents=True)
            except OSError as exc:
                raise SubplugError(
                    "output-not-writable",
                    f"Cannot create the output folder {out}: {exc.strerror}.",
                    "Choose a folder you can write to with --out.",
                ) from exc
        args.out = out
    return replace(options, out_dir=args.out)


def _run_generate(args: argparse.Namespace) -> int:
    from subplug import plugins
    from subplug.engine import Engine
    from subplug.progress import JsonlEvents, RichProgress

    sink: Any = JsonlEvents(sys.stdout) if args.jsonl else RichProgress()
    plugins.register(sink, name="cli-events")
    try:
        options = _generate_options(args)
        with sigterm_interrupts(), Engine() as engine:
            results = engine.run(args.media, options)
    except KeyboardInterrupt:
        # Outside the model stage (which raises Cancelled itself): decoding, writing…
        cancelled = Cancelled()
        if args.jsonl:
            sink.fatal(cancelled)
        raise cancelled from None
    except SubplugError as error:
        if args.jsonl:
            sink.fatal(error)
        raise
    finally:
        plugins.unregister(sink)
        sink.close()
    if not args.jsonl:
        sink.summary(results)
    return 0 if all(r is not None for r in results) else 1


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a host program cancelling the job) stops like Ctrl-C: journal kept,
    no partial output, exit code 130. Commands that plugins add use it too."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
