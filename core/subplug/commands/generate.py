"""``subplug generate MEDIA…``: subtitle files for audio and video files.

One media file runs through the engine as it always has. Several files, a folder
(``--recursive``), a glob or a ``--manifest`` make a job (:mod:`subplug.jobs`):
cross-file batching on this machine, or a Ray cluster with ``--ray``; files finished
by an earlier run are skipped, and one bar shows the whole job.
"""

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
    parser.add_argument(
        "media",
        nargs="*",
        type=Path,
        metavar="MEDIA",
        help="audio or video files, folders (with --recursive) or quoted globs ('talks/**/*.mp4')",
    )
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
        help="output folder (default: next to each media file); a folder's tree is mirrored there",
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
    job = parser.add_argument_group("many files (docs/archive.md)")
    job.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="subtitle the media files in the folders given, sub-folders included",
    )
    job.add_argument(
        "--manifest",
        type=Path,
        default=None,
        metavar="FILE",
        help='a file of media paths, one a line, or JSON lines with per-file "source" and "out"',
    )
    job.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help="write one row per file (done, skipped, failed): JSON lines, or CSV for .csv",
    )
    job.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="files decoded ahead at once (default: CPUs less one, 1-4; with --ray: "
        "model actors, default one per GPU or 1)",
    )
    job.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster: no ADDRESS starts one on this machine, 'auto' joins "
        "the running one (needs subplug[cluster])",
    )


def run(args: argparse.Namespace) -> int:
    from subplug.engine import Engine
    from subplug.progress import JsonlEvents, RichProgress

    out_dir = prepare_out_dir(args.out)
    files = _job_files(args, out_dir)
    if files is not None:
        return _run_job(args, files, out_dir)
    sink: Any = JsonlEvents(sys.stdout) if args.jsonl else RichProgress()
    with _events_to(sink, jsonl=args.jsonl):
        options = generate_options(args, out_dir=out_dir)
        with sigterm_interrupts(), Engine() as engine:
            results = engine.run(args.media, options)
    if not args.jsonl:
        sink.summary(results)
    return 0 if all(r is not None for r in results) else 1


def _job_files(args: argparse.Namespace, out_dir: Path | None) -> list[Any] | None:
    """The files of a job, or ``None`` for one media file given as it is (the engine's
    own path). Usage errors (a glob matching nothing, a bad manifest) raise here."""
    from subplug.jobs.inputs import expand, is_glob

    if args.workers is not None and args.workers < 1:
        raise SubplugError(
            "bad-workers",
            f"--workers must be 1 or more, not {args.workers}.",
            "Leave it out to let subplug choose.",
        )
    if args.ray is not None and not _is_ray_address(args.ray):
        # "--ray FOLDER": the optional ADDRESS took the first media path.
        args.media.insert(0, Path(args.ray))
        args.ray = "local"
    if not args.media and args.manifest is None:
        raise SubplugError(
            "no-media-given",
            "No media to subtitle.",
            "Give media files, a folder with --recursive, a quoted glob or --manifest FILE.",
        )
    single = (
        len(args.media) == 1
        and args.manifest is None
        and not args.recursive
        and args.ray is None
        and args.report is None
        and not (is_glob(str(args.media[0])) and not args.media[0].exists())
    )
    if single:
        return None
    files = expand(args.media, recursive=args.recursive, manifest=args.manifest, out=out_dir)
    if not files:
        raise SubplugError(
            "no-media-found",
            "No media files found in " + ", ".join(str(m) for m in args.media) + ".",
            "Media files are found by their ending (.mp4, .mkv, .wav, .mp3…); list others "
            "in a --manifest or name them with a glob.",
        )
    return files


def _is_ray_address(text: str) -> bool:
    """``local``, ``auto``, ``ray://…`` or ``HOST:PORT``."""
    return (
        text in ("local", "auto")
        or text.startswith("ray://")
        or (":" in text and text.rsplit(":", 1)[1].isdigit())
    )


def _run_job(args: argparse.Namespace, files: list[Any], out_dir: Path | None) -> int:
    """A job of many files (module docstring); exit code 1 when some failed."""

    if args.ray is not None:
        from subplug.jobs.cluster import import_ray

        import_ray()  # before anything: without the extra, say how to install it
    from subplug.jobs.display import JobDisplay
    from subplug.jobs.run import run_job
    from subplug.progress import JsonlEvents

    sink: Any = JsonlEvents(sys.stdout) if args.jsonl else JobDisplay()
    with _events_to(sink, jsonl=args.jsonl):
        options = generate_options(args, out_dir=out_dir)
        report = args.report.expanduser() if args.report is not None else None
        with sigterm_interrupts():
            state, code = run_job(
                options, files, ray=args.ray, workers=args.workers, report_path=report
            )
    if not args.jsonl:
        sink.summary(state.report)
    return code


@contextlib.contextmanager
def _events_to(sink: Any, *, jsonl: bool) -> Iterator[None]:
    """The run's events go to ``sink`` (a plugin while the block runs, closed after).
    Ctrl-C outside the model stage (which raises Cancelled itself: decoding, writing…)
    becomes :class:`Cancelled`; with ``jsonl`` a fatal error is also a JSON line."""
    from subplug import plugins

    plugins.register(sink, name="cli-events")
    try:
        yield
    except KeyboardInterrupt:
        cancelled = Cancelled()
        if jsonl:
            sink.fatal(cancelled)
        raise cancelled from None
    except SubplugError as error:
        if jsonl:
            sink.fatal(error)
        raise
    finally:
        plugins.unregister(sink)
        sink.close()


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
