"""``subplug live``: raw PCM on stdin → caption events (JSON lines) on stdout.

Building the parser imports nothing heavy; :func:`run` loads the engine in
:mod:`subplug.live`. The event contract is docs/live.md.
"""

from __future__ import annotations

import argparse
import sys

from subplug.commands.arguments import (
    add_engine_arguments,
    add_precision_arguments,
    backend_options,
)
from subplug.live import LiveOptions

_DEFAULTS = LiveOptions()


def setup(parser: argparse.ArgumentParser) -> None:
    """Add the ``live`` arguments to ``parser``."""
    parser.description = (
        "Read raw interleaved PCM on stdin, find utterances with silero-vad, caption each "
        "in English and Mongolian, and print one JSON object per line on stdout "
        "(events: ready, caption, dropped, stats, error; see docs/live.md)."
    )
    pcm = parser.add_argument_group("input (stdin)")
    pcm.add_argument(
        "--format",
        default=_DEFAULTS.format,
        choices=["f32le", "s16le"],
        help=f"sample format (default: {_DEFAULTS.format})",
    )
    pcm.add_argument(
        "--rate",
        type=int,
        default=_DEFAULTS.rate,
        metavar="HZ",
        help=f"sample rate (default: {_DEFAULTS.rate})",
    )
    pcm.add_argument(
        "--channels",
        type=int,
        default=_DEFAULTS.channels,
        metavar="N",
        help=f"interleaved channels, averaged to mono (default: {_DEFAULTS.channels})",
    )
    model = parser.add_argument_group("model")
    add_engine_arguments(
        model,
        detects="per utterance",
        targets=False,
        source_default=_DEFAULTS.source,
        backend_default=_DEFAULTS.backend,
    )
    add_precision_arguments(model)
    model.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for the model (default: the backend's choice)",
    )
    timing = parser.add_argument_group("utterances and back-pressure")
    timing.add_argument(
        "--vad-threshold",
        type=float,
        default=_DEFAULTS.vad_threshold,
        metavar="P",
        help=f"speech probability that starts an utterance (default: {_DEFAULTS.vad_threshold})",
    )
    timing.add_argument(
        "--min-silence",
        type=float,
        default=_DEFAULTS.min_silence,
        metavar="S",
        help=f"silence that ends an utterance (default: {_DEFAULTS.min_silence} s)",
    )
    timing.add_argument(
        "--max-utterance",
        type=float,
        default=_DEFAULTS.max_utterance,
        metavar="S",
        help=f"longest utterance before a cut (default: {_DEFAULTS.max_utterance} s)",
    )
    timing.add_argument(
        "--max-lag",
        type=float,
        default=_DEFAULTS.max_lag,
        metavar="S",
        help="drop utterances that ended more than S seconds before the "
        f"newest input; 0 never drops (default: {_DEFAULTS.max_lag} s)",
    )
    timing.add_argument(
        "--merge-limit",
        type=float,
        default=_DEFAULTS.merge_limit,
        metavar="S",
        help="merge waiting utterances up to S seconds of audio "
        f"(default: {_DEFAULTS.merge_limit} s)",
    )
    timing.add_argument(
        "--stats-interval",
        type=float,
        default=_DEFAULTS.stats_interval,
        metavar="S",
        help="a stats event every S seconds of input; 0: only "
        f"at the end (default: {_DEFAULTS.stats_interval} s)",
    )


def options_from_args(args: argparse.Namespace) -> LiveOptions:
    """The :class:`~subplug.live.LiveOptions` for parsed arguments (validated)."""
    from subplug.live import validate

    return validate(
        LiveOptions(
            format=args.format,
            rate=args.rate,
            channels=args.channels,
            source=args.source,
            backend=args.backend,
            backend_options=backend_options(args),
            vad_threshold=args.vad_threshold,
            min_silence=args.min_silence,
            max_utterance=args.max_utterance,
            max_lag=args.max_lag,
            merge_limit=args.merge_limit,
            stats_interval=args.stats_interval,
        )
    )


def run(args: argparse.Namespace) -> int:
    """Run a live session on this process's stdin and stdout; return the exit code."""
    from subplug.errors import SubplugError
    from subplug.live import JsonLines, run_live

    try:
        options = options_from_args(args)
    except SubplugError as error:
        JsonLines(sys.stdout)({"event": "error", "error": error.to_dict()})
        raise
    return run_live(options, sys.stdin.buffer, sys.stdout)
