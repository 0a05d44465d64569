"""The ``subplug kdenlive`` command: ``apply``, ``info`` and ``job`` (the clip job).

Parsers are built without importing anything heavy; work happens in the ``run`` functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from subplug.commands.arguments import (
    add_batch_size_argument,
    add_bottom_argument,
    add_engine_arguments,
    add_max_chars_argument,
    add_precision_arguments,
    generate_options,
)
from subplug.commands.generate import sigterm_interrupts
from subplug.errors import Cancelled, SubplugError


def _engine_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser)
    add_precision_arguments(parser)
    add_batch_size_argument(parser)
    add_bottom_argument(parser)
    add_max_chars_argument(parser)


def setup(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``subplug kdenlive``."""
    sub = parser.add_subparsers(dest="kdenlive_command", metavar="ACTION")
    apply_parser = sub.add_parser(
        "apply",
        help="write EN/MN subtitles into a (closed) Kdenlive project",
        description="Generate English/Mongolian subtitles for a project's timeline (or one "
        "clip) and write them into the project as its subtitle track, in the format the "
        "project's Kdenlive version reads. The project is backed up first; close it in "
        "Kdenlive before running this.",
    )
    apply_parser.add_argument("project", type=Path, metavar="PROJECT.kdenlive")
    which = apply_parser.add_mutually_exclusive_group()
    which.add_argument(
        "--timeline",
        action="store_true",
        help="use the sound of the whole timeline, rendered by melt (default)",
    )
    which.add_argument(
        "--clip", metavar="ID", help="use one bin clip's file; subtitles follow it on the timeline"
    )
    _engine_arguments(apply_parser)
    apply_parser.add_argument(
        "--kdenlive-version",
        metavar="X.Y",
        help="write for this Kdenlive version instead of the one that "
        "saved the project (24.08+ gets several .ass tracks)",
    )
    apply_parser.add_argument(
        "--force",
        action="store_true",
        help="go ahead even if the project looks open in Kdenlive or "
        "already has subtitles (backups are still made)",
    )
    apply_parser.set_defaults(_kdenlive=_run_apply)

    info_parser = sub.add_parser("info", help="show a project's version, subtitle format and clips")
    info_parser.add_argument("project", type=Path, metavar="PROJECT.kdenlive")
    info_parser.set_defaults(_kdenlive=_run_info)

    job_parser = sub.add_parser(
        "job",
        help="the Kdenlive clip job: subtitles for one file, progress for Kdenlive",
        description="Run by Kdenlive's clip job 'Generate EN/MN subtitles': writes the "
        "bilingual .ass to OUTPUT and one .srt per language beside it, printing "
        "'percentage: N' lines on stderr.",
    )
    job_parser.add_argument("media", type=Path, metavar="SOURCE")
    job_parser.add_argument("output", type=Path, metavar="OUTPUT")
    job_parser.add_argument(
        "--home",
        metavar="PATH",
        help="subplug's data folder (models), percent-encoded (Kdenlive splits a job's "
        "parameters at spaces); 'subplug install kdenlive' puts SUBPLUG_HOME here, so a "
        "Kdenlive started from the desktop finds the same models. Overrides SUBPLUG_HOME.",
    )
    _engine_arguments(job_parser)
    job_parser.set_defaults(_kdenlive=_run_job)


def run(args: argparse.Namespace) -> int:
    """Dispatch ``subplug kdenlive ACTION``."""
    action = getattr(args, "_kdenlive", None)
    if action is None:
        print(
            "usage: subplug kdenlive {apply,info,job} ... (see subplug kdenlive --help)",
            file=sys.stderr,
        )
        return 2
    return int(action(args) or 0)


def _run_apply(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from subplug_kdenlive.apply import ApplyRequest, apply
    from subplug_kdenlive.project import parse_version
    from subplug_kdenlive.subtitle_track import choose_layout

    layout = None
    if args.kdenlive_version:
        parsed = parse_version(args.kdenlive_version)
        if parsed is None:
            raise SubplugError(
                "bad-kdenlive-version",
                f"--kdenlive-version {args.kdenlive_version!r} is not a version.",
                "Give it like 22.12 or 24.08.",
            )
        layout = choose_layout(parsed)
    request = ApplyRequest(
        project=args.project.expanduser(),
        clip=args.clip,
        generate=generate_options(args),
        force=args.force,
        layout=layout,
    )
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    sink = _progress_sink()
    try:
        with sigterm_interrupts():
            result = apply(request, events=sink.subplug_job_event if sink else None)
    except (KeyboardInterrupt, Cancelled):
        raise SubplugError(
            "interrupted",
            "Stopped; the project was not changed.",
            "Run the command again when you are ready.",
            exit_code=130,
        ) from None
    finally:
        if sink is not None:
            sink.close()
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(str(warning))}")
    console.print(f"[green]backed up[/] {escape(str(result.backup))}")
    for path in result.replaced:
        console.print(f"[green]backed up[/] {escape(str(path))}")
    for path in result.files:
        console.print(f"[green]wrote[/] {escape(str(path))}")
    cues = ", ".join(f"{lang}: {count}" for lang, count in result.cues.items())
    console.print(
        f"[green]updated[/] {escape(str(result.project))} "
        f"({result.layout.value} subtitles; cues {cues})"
    )
    return 0


def _progress_sink() -> Any:
    if not sys.stderr.isatty():
        return None
    from subplug.progress import RichProgress

    return RichProgress()


def _run_info(args: argparse.Namespace) -> int:
    from subplug_kdenlive import subtitle_track
    from subplug_kdenlive.project import KdenliveProject

    project = KdenliveProject.load(args.project.expanduser())
    timeline = project.timeline()
    plan = subtitle_track.plan(project, ("en", "mn"))
    print(f"project:   {project.path}")
    print(
        f"kdenlive:  {project.doc_properties.get('kdenliveversion') or 'unknown'} "
        f"(document version {project.document_version or 'unknown'})"
    )
    seconds = project.duration() / float(project.profile.fps)
    print(
        f"timeline:  {timeline.id}{' (sequence)' if project.has_sequences else ''}, {seconds:.1f} s"
    )
    print(f"subtitles: {plan.layout.value} -> " + ", ".join(str(f.path.name) for f in plan.files))
    existing = subtitle_track.existing_subtitles(project, timeline)
    ours = [
        f
        for f in subtitle_track.subtitle_filters(project, timeline)
        if subtitle_track.MARK in project.properties(f)
    ]
    if existing:
        print(f"existing:  {'; '.join(existing)} (apply needs --force)")
    elif ours:
        print("existing:  subtitles made by subplug (apply replaces them)")
    clips = project.bin_clips()
    print("clips:" if clips else "clips:     none with a file")
    for clip in clips:
        places = project.placements(clip.clip_id)
        where = f"{len(places)} place(s) on the timeline" if places else "not on the timeline"
        print(f"  --clip {clip.clip_id:<4} {clip.name}  [{where}]  {clip.resource}")
    return 0


def _run_job(args: argparse.Namespace) -> int:
    import os
    from urllib.parse import unquote

    from subplug_kdenlive.job import run_job

    if args.home:
        os.environ["SUBPLUG_HOME"] = unquote(args.home)
    options = generate_options(args)
    try:
        with sigterm_interrupts():
            return run_job(args.media.expanduser(), args.output.expanduser(), options)
    except (KeyboardInterrupt, Cancelled):
        raise Cancelled("Stopped; finished chunks are kept for the next run.") from None
