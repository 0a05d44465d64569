"""``subplug kdenlive apply``: generate subtitles and write them into a closed project.

Steps, each failing before anything is written:

1. read and check the project (broken XML, not MLT, no timeline → ``kdenlive-*`` errors);
2. refuse a project Kdenlive has open (:mod:`subplug_kdenlive.safety`);
3. plan the files for the project's Kdenlive version and refuse to replace subtitles
   the user made (unless ``force``);
4. get the sound (melt renders the timeline, or one bin clip's file) and run the engine;
5. back up the project (and any subtitle file about to be replaced), write the subtitle
   files, then the project, each atomically; re-read the result to check it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from subplug.errors import SubplugError
from subplug.types import GenerateOptions, JobEvent, StyleOptions, Track

from subplug_kdenlive import safety, subtitle_track, timing
from subplug_kdenlive.audio import melt_binary, render_timeline_audio
from subplug_kdenlive.project import BinClip, KdenliveProject
from subplug_kdenlive.subtitle_track import Layout

if TYPE_CHECKING:
    from subplug.engine import Engine

EventSink = Callable[[JobEvent], None]


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply`` changed."""

    project: Path
    backup: Path
    layout: Layout
    files: tuple[Path, ...]
    """Subtitle files written (the first one is the track Kdenlive shows)."""
    cues: Mapping[str, int]
    replaced: tuple[Path, ...] = ()
    """Backups of subtitle files that existed and were replaced."""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApplyRequest:
    """Everything ``apply`` needs besides the engine."""

    project: Path
    clip: str | None = None
    """Bin clip id (``kdenlive:id``); ``None`` for the whole timeline."""
    generate: GenerateOptions = field(default_factory=GenerateOptions)
    force: bool = False
    layout: Layout | None = None
    """Force a layout instead of the one the project's Kdenlive version reads."""


def _version() -> str:
    from subplug import __version__

    return __version__


def prepare(
    request: ApplyRequest,
) -> tuple[KdenliveProject, subtitle_track.SubtitlePlan, tuple[str, ...]]:
    """Steps 1–3: the checked project, its plan and warnings (raises on problems)."""
    from subplug.engine import validate

    project = KdenliveProject.load(request.project)
    opened = safety.ensure_closed(project.path, force=request.force)
    validate(request.generate)
    subtitle_plan = subtitle_track.plan(project, request.generate.targets, request.layout)
    subtitle_track.edits(project, subtitle_plan, version=_version(), force=request.force)
    if request.clip is None:
        melt_binary()
        if project.duration() == 0:
            raise SubplugError(
                "kdenlive-empty-timeline",
                f"The timeline of {project.path.name} holds no clips, so there is nothing "
                "to make subtitles for.",
                "Put clips on the timeline in Kdenlive and save, or pick a bin clip with "
                "--clip ID ('subplug kdenlive info PROJECT' lists them).",
            )
    else:
        clip = find_clip(project, request.clip)
        if not clip.resource.exists():
            raise SubplugError(
                "kdenlive-clip-missing",
                f"The file of clip {request.clip} ({clip.resource}) does not exist.",
                "Relink the clip in Kdenlive (or fix the path) and save the project.",
            )
        if not project.placements(request.clip):
            raise SubplugError(
                "kdenlive-clip-not-on-timeline",
                f"Clip {request.clip} ({clip.name}) is not on the timeline, so there is "
                "nowhere to show its subtitles.",
                "Put the clip on the timeline and save, or make subtitle files for it with: "
                f"subplug generate {clip.resource}",
            )
    return project, subtitle_plan, opened.warnings


def find_clip(project: KdenliveProject, clip_id: str) -> BinClip:
    """The bin clip with Kdenlive id ``clip_id`` (a ``kdenlive-unknown-clip`` error
    lists the ids there are)."""
    clips = project.bin_clips()
    for clip in clips:
        if clip.clip_id == clip_id:
            return clip
    known = ", ".join(f"{c.clip_id} ({c.name})" for c in clips) or "none with a file"
    raise SubplugError(
        "kdenlive-unknown-clip",
        f"{project.path.name} has no bin clip with id {clip_id!r}.",
        f"Clips: {known}. 'subplug kdenlive info PROJECT' lists them.",
    )


def make_tracks(
    project: KdenliveProject,
    request: ApplyRequest,
    *,
    events: EventSink | None = None,
    engine_factory: Callable[..., Engine] | None = None,
) -> dict[str, Track]:
    """Step 4: subtitle tracks on the timeline's clock.

    The model is loaded first, so a missing or broken model is reported before melt
    spends time rendering the timeline."""
    from subplug.engine import Engine, validate

    factory = engine_factory or Engine
    engine = factory(events=events)
    try:
        with tempfile.TemporaryDirectory(prefix="subplug-kdenlive-") as folder:
            options = validate(replace(request.generate, out_dir=Path(folder), overwrite=True))
            load_backend = getattr(engine, "backend", None)
            if load_backend is not None:
                load_backend(options)
            if request.clip is None:
                media = Path(folder) / f"{project.path.stem}-timeline.wav"
                _render_timeline(project, media, events)
            else:
                media = find_clip(project, request.clip).resource
            generated = engine.generate(media, options)
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    tracks = dict(generated.tracks)
    if request.clip is not None:
        tracks = timing.place_tracks(tracks, project.placements(request.clip), project.profile.fps)
    return tracks


def _render_timeline(project: KdenliveProject, media: Path, events: EventSink | None) -> None:
    """melt renders the timeline's sound to ``media``, reporting progress as events."""
    frames = project.duration()
    if events is None:
        render_timeline_audio(project.path, media, frames=frames)
        return
    events(JobEvent("stage", media, {"stage": "render-timeline"}))
    render_timeline_audio(
        project.path,
        media,
        on_percent=lambda percent: events(JobEvent("render-progress", media, {"percent": percent})),
        frames=frames,
    )


def write(
    project: KdenliveProject,
    tracks: Mapping[str, Track],
    *,
    subtitle_plan: subtitle_track.SubtitlePlan | None = None,
    force: bool = False,
    style: StyleOptions | None = None,
    stamp: str | None = None,
    warnings: tuple[str, ...] = (),
) -> ApplyResult:
    """Step 5: back up, write subtitle files and the project, check the result."""
    langs = tuple(lang for lang in tracks)
    subtitle_plan = subtitle_plan or subtitle_track.plan(project, langs)
    try:
        current = project.path.read_bytes()
    except OSError as exc:
        raise SubplugError("kdenlive-project-unreadable", f"Cannot read {project.path}.") from exc
    if current != project.data:
        raise SubplugError(
            "kdenlive-project-changed",
            f"{project.path.name} changed while the subtitles were being made (was it saved "
            "in Kdenlive?). Nothing was written.",
            "Close the project in Kdenlive and run the command again.",
        )
    changes = subtitle_track.edits(project, subtitle_plan, version=_version(), force=force)
    new_data = project.apply(changes)
    _verify(new_data, project, subtitle_plan)
    texts = subtitle_track.render(subtitle_plan, tracks, project, style)
    stamp = stamp or safety.timestamp()
    project_backup = safety.backup(project.path, stamp)
    replaced = tuple(safety.backup(path, stamp) for path in texts if path.exists())
    for path, text in texts.items():
        safety.write_atomic(path, text.encode("utf-8"))
    safety.write_atomic(project.path, new_data)
    return ApplyResult(
        project=project.path,
        backup=project_backup,
        layout=subtitle_plan.layout,
        files=tuple(item.path for item in subtitle_plan.files),
        cues={lang: len(track.cues) for lang, track in tracks.items()},
        replaced=replaced,
        warnings=warnings,
    )


def _verify(
    new_data: bytes, project: KdenliveProject, subtitle_plan: subtitle_track.SubtitlePlan
) -> None:
    """The edited bytes still parse, and the timeline has exactly our filter."""
    edited = KdenliveProject.parse(new_data, project.path)
    timeline = edited.by_id(subtitle_plan.timeline_id) or edited.timeline()
    filters = subtitle_track.subtitle_filters(edited, timeline)
    names = [edited.properties(f).get("av.filename") for f in filters]
    if names != [str(subtitle_plan.active.path)]:
        raise AssertionError(f"edited project has subtitle filters {names}")


def apply(
    request: ApplyRequest,
    *,
    events: EventSink | None = None,
    engine_factory: Callable[..., Engine] | None = None,
) -> ApplyResult:
    """Generate subtitles for ``request.project`` and write them into it."""
    project, subtitle_plan, warnings = prepare(request)
    tracks = make_tracks(project, request, events=events, engine_factory=engine_factory)
    if not any(track.cues for track in tracks.values()):
        raise SubplugError(
            "kdenlive-no-speech",
            f"No speech was found in {'clip ' + request.clip if request.clip else 'the timeline'} "
            f"of {project.path.name}; the project was not changed.",
            "Check that the timeline's audio tracks are not muted, or pick a clip with --clip.",
        )
    return write(
        project,
        tracks,
        subtitle_plan=subtitle_plan,
        force=request.force,
        style=request.generate.style,
        warnings=warnings,
    )
