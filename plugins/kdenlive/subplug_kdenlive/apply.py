"""``subplug kdenlive apply``: generate subtitles and write them into a closed project.

Steps, each failing before anything is written:

1. read and check the project (broken XML, unknown encoding, not MLT, no timeline →
   ``kdenlive-*`` errors);
2. refuse a project Kdenlive has open (:mod:`subplug_kdenlive.safety`);
3. plan the files for the project's Kdenlive version and refuse to replace subtitles
   the user made (unless ``force``); refuse a timeline whose media files are missing and
   a project folder that cannot be written, before any long work;
4. get the sound (melt renders the timeline, or one bin clip's file) and run the engine;
5. keep only the languages the model gave text for (a warning names the others), then
   write the subtitle files and the project as one unit (:func:`safety.write_files`:
   backups first, all or nothing); re-read the result to check it.
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
    safety.check_writable_folder(project.path.resolve().parent, "the project's folder")
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
        check_media(project)
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


def check_media(project: KdenliveProject) -> None:
    """Fail (``kdenlive-media-missing``) when clips on the timeline have sound files that
    are not there: melt would play silence for them, and the subtitles would miss their
    speech (or "no speech" would be all there is to say)."""
    used = project.used_clip_ids()
    missing = [
        clip
        for clip in project.bin_clips()
        if clip.clip_id in used and clip.has_sound and not clip.resource.exists()
    ]
    if not missing:
        return
    shown = ", ".join(str(clip.resource) for clip in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    raise SubplugError(
        "kdenlive-media-missing",
        f"{len(missing)} media file{'s' if len(missing) > 1 else ''} on the timeline of "
        f"{project.path.name} {'are' if len(missing) > 1 else 'is'} missing: {shown}{more}.",
        "Open the project in Kdenlive and relink the missing clips (it offers to when the "
        "project opens), save and close it, then run this again; or use --clip ID for one "
        "clip whose file is there.",
    )


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


@dataclass(frozen=True)
class Made:
    """What :func:`make_tracks` made: the tracks on the timeline's clock, and what the
    engine warned about."""

    tracks: dict[str, Track]
    warnings: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    """The engine's warning references (``no-speech``, ``no-text``…)."""


def make_tracks(
    project: KdenliveProject,
    request: ApplyRequest,
    *,
    events: EventSink | None = None,
    engine_factory: Callable[..., Engine] | None = None,
) -> Made:
    """Step 4: subtitle tracks on the timeline's clock.

    The model is loaded first, so a missing or broken model is reported before melt
    spends time rendering the timeline. Events about the sound (the rendered timeline
    lives in a temporary file) name the project."""
    from subplug import plugins
    from subplug.engine import Engine, validate

    forward = events or plugins.job_event
    references: list[str] = []

    def relabel(event: JobEvent) -> None:
        if event.kind == "warning":
            references.append(str(event.data.get("reference", "")))
        forward(event if event.media is None else replace(event, media=project.path))

    factory = engine_factory or Engine
    engine = factory(events=relabel)
    try:
        with tempfile.TemporaryDirectory(prefix="subplug-kdenlive-") as folder:
            # The engine writes no file here (out_dir only satisfies its output check).
            # A rendered timeline is a new file each time: no journal to resume from.
            options = validate(
                replace(
                    request.generate,
                    out_dir=Path(folder),
                    overwrite=True,
                    resume=request.generate.resume and request.clip is not None,
                )
            )
            relabel(JobEvent("file-start", project.path, {"index": 0, "total_files": 1}))
            load_backend = getattr(engine, "backend", None)
            if load_backend is not None:
                load_backend(options)
            if request.clip is None:
                media = Path(folder) / f"{project.path.stem}-timeline.wav"
                _render_timeline(project, media, relabel)
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
    return Made(tracks, tuple(generated.warnings), tuple(references))


def _render_timeline(project: KdenliveProject, media: Path, events: EventSink) -> None:
    """melt renders the timeline's sound to ``media``, reporting progress as events."""
    frames = project.duration()
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
    warnings: tuple[str, ...] = (),
) -> ApplyResult:
    """Step 5: write the subtitle files and the project as one unit (backups first;
    nothing changes unless everything can be written), then check the result."""
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
    items = [(path, text.encode("utf-8")) for path, text in texts.items()]
    written = safety.write_files([*items, (project.path, new_data)])
    backups = written.backups
    return ApplyResult(
        project=project.path,
        backup=backups[project.path],
        layout=subtitle_plan.layout,
        files=tuple(item.path for item in subtitle_plan.files),
        cues={lang: len(track.cues) for lang, track in tracks.items()},
        replaced=tuple(backups[path] for path in texts if path in backups),
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
    project, _, warnings = prepare(request)
    made = make_tracks(project, request, events=events, engine_factory=engine_factory)
    # Like ``subplug generate``, a language without text gets no track (never an empty
    # one); the engine's warning says which.
    tracks = {lang: track for lang, track in made.tracks.items() if track.cues}
    where = f"clip {request.clip}" if request.clip else "the timeline"
    if not tracks and "no-text" in made.references:
        raise SubplugError(
            "kdenlive-no-text",
            f"The model gave no text for the speech in {where} of {project.path.name}; "
            "the project was not changed.",
            "Check the model with 'subplug doctor', or give the spoken language with --source.",
        )
    if not tracks:
        raise SubplugError(
            "kdenlive-no-speech",
            f"No speech was found in {where} of {project.path.name}; the project was not changed.",
            "Check that the timeline's audio tracks are not muted, or pick a clip with --clip.",
        )
    subtitle_plan = subtitle_track.plan(project, tuple(tracks), request.layout)
    if events is not None:
        events(JobEvent("stage", project.path, {"stage": "write"}))
    result = write(
        project,
        tracks,
        subtitle_plan=subtitle_plan,
        force=request.force,
        style=request.generate.style,
        warnings=(*warnings, *made.warnings),
    )
    if events is not None:
        outputs = [
            {"path": str(item.path), "format": result.layout.value, "langs": list(item.langs)}
            for item in subtitle_plan.files
        ]
        done = {"outputs": outputs, "cues": dict(result.cues), "source_lang": None}
        events(JobEvent("file-done", project.path, done))
    return result
