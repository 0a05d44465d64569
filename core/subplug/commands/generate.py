"""``subplug generate MEDIA…``: subtitle files for audio and video files."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from subplug.commands.arguments import (
    add_batch_size_argument,
    add_bottom_argument,
    add_engine_arguments,
    add_max_chars_argument,
    add_precision_arguments,
    generate_options,
    prepare_out_dir,
)
from subplug.errors import Cancelled, SubplugError


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("media", nargs="+", type=Path, metavar="MEDIA", help="audio or video files")
    add_engine_arguments(parser, detects="per chunk", formats=True, model_default="gemma3n-en-mn")
    add_precision_arguments(parser)
    add_batch_size_argument(parser)
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


def run(args: argparse.Namespace) -> int:
    from subplug import plugins
    from subplug.engine import Engine
    from subplug.progress import JsonlEvents, RichProgress

    sink: Any = JsonlEvents(sys.stdout) if args.jsonl else RichProgress()
    plugins.register(sink, name="cli-events")
    try:
        options = generate_options(args, out_dir=prepare_out_dir(args.out))
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
    no partial output, exit code 130."""

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
