"""``subplug kdenlive apply`` end to end, as a user runs it: the real CLI, the tiny
Gemma 3n, real speech in a real video clip, melt rendering the timeline's sound and
then the project with its new subtitles.

The tiny model's words are gibberish; what is checked is where they go and when they
show: inside the project in the form its Kdenlive version reads, on the rendered frames
while the speech plays (the clip starts 2 s into the timeline), nowhere else.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pysubs2
import pytest
from kdenlive_projects import make_project, make_speech_clip, only_insertions
from melt_render import changed, frames_inside, frames_outside, render_frames
from subplug.errors import SubplugError
from subplug.testing import FakeBackendPlugin, fake_answer
from subplug.types import (
    BackendOptions,
    BackendRequest,
    CueOptions,
    GenerateOptions,
    JobEvent,
    Task,
)
from subplug_kdenlive import apply, subtitle_track
from subplug_kdenlive.project import KdenliveProject

FPS = 25
SIZE = (320, 180)
POSITION = 50  # the clip starts at frame 50 (2 s) of the timeline
FRAMES = 100  # and lasts 4 s
SPEECH = "Hello world. This is a subtitle test."
#: Padding the VAD adds around speech (subplug.segment.speech_regions).
VAD_PAD = 0.1


@pytest.fixture
def user_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty XDG data folder, so no real Kdenlive autosave is looked at."""
    folder = tmp_path / "xdg-data"
    folder.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(folder))
    return folder


def _project(tmp_path: Path, shape: str) -> Path:
    clip = make_speech_clip(tmp_path / "media", SPEECH, seconds=FRAMES / FPS, size=SIZE)
    return make_project(
        tmp_path / "edit.kdenlive",
        clip,
        shape=shape,
        frames=FRAMES,
        position=POSITION,
        size=SIZE,
    )


def subplug(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``subplug`` command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "subplug", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=dict(os.environ, NO_COLOR="1", COLUMNS="200"),
    )


@pytest.mark.host
@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "subtitle_name"),
    [("legacy", "edit.kdenlive.srt"), ("sequences", "edit.kdenlive.ass")],
)
def test_apply_timeline_with_tiny_model_then_melt_shows_it(
    melt: str,
    media_tools: None,
    tiny_model: Path,
    user_data: Path,
    tmp_path: Path,
    shape: str,
    subtitle_name: str,
) -> None:
    path = _project(tmp_path, shape)
    original = path.read_bytes()

    # float32: the tiny model's random weights put its end-of-turn token within one bf16
    # rounding of its best token for this speech, so in bf16 (auto on a CPU with native
    # bf16) whether it answers at all turns on how the prefill is split.
    done = subplug(
        "kdenlive", "apply", str(path), "--model", str(tiny_model), "--device", "cpu",
        "--dtype", "fp32", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    backups = sorted(tmp_path.glob("edit.kdenlive.bak*"))
    assert backups == [tmp_path / "edit.kdenlive.bak"] and backups[0].read_bytes() == original
    assert f"backed up {backups[0]}" in done.stderr
    assert f"updated {path}" in done.stderr
    new = path.read_bytes()
    assert only_insertions(original, new)

    # The project points at the subtitle file, in the form its Kdenlive version reads.
    subtitles = tmp_path / subtitle_name
    project = KdenliveProject.load(path)
    timeline = project.timeline()
    (subtitle_filter,) = subtitle_track.subtitle_filters(project, timeline)
    assert project.properties(subtitle_filter)["av.filename"] == str(subtitles)
    listing = project.properties(timeline).get(subtitle_track.SUBTITLES_LIST)
    if shape == "sequences":
        # The tiny model's random words may leave a language without text: that
        # language gets no track, and a warning says so.
        entries = json.loads(listing or "[]")
        names = ["edit.kdenlive.ass", "edit.kdenlive-1.ass", "edit.kdenlive-2.ass"]
        silent = [lang for lang in ("English", "Mongolian") if f"no {lang} text" in done.stderr]
        assert [e["file"] for e in entries] == [
            str(tmp_path / name) for name in (names if not silent else names[:1])
        ]
    else:
        assert listing is None

    # The cues sit where the speech is on the timeline: the clip starts at 2 s. A cue
    # may lead its speech by the VAD's padding plus the lead cue shaping allows.
    events = [e for e in pysubs2.load(str(subtitles)) if e.plaintext.strip()]
    assert events, subtitles.read_text(encoding="utf-8")
    cues = [(e.start / 1000, e.end / 1000) for e in events]
    lead = VAD_PAD + CueOptions().max_lead + 1 / FPS
    start, end = POSITION / FPS, (POSITION + FRAMES) / FPS
    assert all(start - lead <= s < e <= end for s, e in cues), cues

    # melt draws them on exactly those frames, and changes nothing else.
    last = POSITION + FRAMES - 1
    mask = changed(render_frames(backups[0], last, SIZE), render_frames(path, last, SIZE))
    inside = frames_inside(cues, FPS, last + 1)
    outside = frames_outside(cues, FPS, last + 1)
    assert inside and any(frame < POSITION for frame in outside)
    for frame in inside:
        assert mask[frame].sum() > 30, f"no subtitle drawn at frame {frame}"
        assert not mask[frame, : SIZE[1] // 2].any(), f"change above the subtitles, {frame}"
    for frame in outside:
        assert not mask[frame].any(), f"frame {frame} changed outside every cue"


@pytest.mark.slow
def test_apply_clip_puts_its_cues_where_the_clip_sits(
    media_tools: None, tiny_model: Path, user_data: Path, tmp_path: Path
) -> None:
    from subplug.engine import Engine

    path = _project(tmp_path, "legacy")
    options = GenerateOptions(backend_options=BackendOptions(model=str(tiny_model), device="cpu"))
    request = apply.ApplyRequest(project=path, clip="2", generate=options)
    project, plan, _ = apply.prepare(request)
    placed = apply.make_tracks(project, request).tracks
    clip = project.bin_clips()[0].resource
    with Engine() as engine:
        own = engine.generate(clip, replace(options, out_dir=tmp_path / "out")).tracks

    # Each cue of the clip's own subtitles appears 2 s later, where the clip is used.
    shift = POSITION / FPS
    assert any(track.cues for track in own.values())
    for lang, track in own.items():
        assert [(c.start, c.end, c.lines) for c in placed[lang].cues] == [
            (round(c.start + shift, 3), round(c.end + shift, 3), c.lines) for c in track.cues
        ]
    result = apply.write(project, placed, subtitle_plan=plan)
    events = pysubs2.load(str(result.files[0]))
    assert events and all(e.start >= POSITION / FPS * 1000 for e in events)


@pytest.mark.parametrize(
    ("content", "reference"),
    [
        (b"<?xml version='1.0'?>\n<mlt><tractor id='t'><track producer='x'/>", "kdenlive-not-xml"),
        (b"<?xml version='1.0'?><playlist id='main_bin'/>", "kdenlive-not-mlt"),
    ],
)
def test_cli_damaged_project_one_clear_error_file_untouched(
    tmp_path: Path, user_data: Path, content: bytes, reference: str
) -> None:
    path = tmp_path / "broken.kdenlive"
    path.write_bytes(content)
    done = subplug("kdenlive", "apply", str(path), "--model", "/nowhere", cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ")
    assert f"[{reference}]" in done.stderr
    assert "hint: " in done.stderr
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.kdenlive", "xdg-data"]


def test_cli_missing_model_leaves_the_project_alone(
    melt: str, tmp_path: Path, user_data: Path
) -> None:
    clip = tmp_path / "media" / "clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"")  # never read: the model is looked for first
    path = make_project(tmp_path / "edit.kdenlive", clip)
    before = sorted(p.name for p in tmp_path.iterdir())
    original = path.read_bytes()
    done = subplug("kdenlive", "apply", str(path), "--model", str(tmp_path / "nope"), cwd=tmp_path)
    assert done.returncode != 0
    assert "[model-not-found]" in done.stderr and "Traceback" not in done.stderr
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_bad_targets_are_refused_before_anything_runs(tmp_path: Path, user_data: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    path = make_project(tmp_path / "edit.kdenlive", clip)
    request = apply.ApplyRequest(project=path, generate=GenerateOptions(targets=("en", "fr")))
    with pytest.raises(SubplugError) as caught:
        apply.prepare(request)
    assert caught.value.reference == "bad-targets"


def test_no_speech_on_the_timeline_changes_nothing(
    melt: str, fixture_copy, user_data: Path, fake_backend
) -> None:
    # test-mix.kdenlive holds colour clips only: melt renders silence.
    path = fixture_copy("test-mix.kdenlive")
    original = path.read_bytes()
    request = apply.ApplyRequest(project=path, generate=GenerateOptions(backend="fake"))
    with pytest.raises(SubplugError) as caught:
        apply.apply(request)
    assert caught.value.reference == "kdenlive-no-speech"
    assert path.read_bytes() == original
    assert sorted(p.name for p in path.parent.iterdir()) == ["test-mix.kdenlive", "xdg-data"]


def test_cli_info_tells_version_format_and_clips(tmp_path: Path, user_data: Path) -> None:
    clip = tmp_path / "media" / "talk.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"")
    path = make_project(
        tmp_path / "edit.kdenlive", clip, shape="sequences", version="24.08.1", position=25
    )
    done = subplug("kdenlive", "info", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "kdenlive:  24.08.1 (document version 1.1)" in lines
    assert any(
        line.startswith("timeline:  {") and line.endswith("(sequence), 5.0 s") for line in lines
    )
    assert "subtitles: ass -> edit.kdenlive.ass, edit.kdenlive-1.ass, edit.kdenlive-2.ass" in lines
    assert any(
        line.split()[:3] == ["--clip", "2", "talk.mp4"] and "1 place(s)" in line for line in lines
    )


# ------------------------------------------------------------------ what apply says


def _english_only(request: BackendRequest) -> str:
    """A model that never manages Mongolian."""
    if request.task is Task.TRANSLATE:
        return ""
    answer = fake_answer(request)
    return answer.split("---")[0] + "---\n\n### Mongolian\n\n" if "---" in answer else answer


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "files"),
    [("legacy", ["edit.kdenlive.srt"]), ("sequences", ["edit.kdenlive.ass"])],
)
def test_a_language_without_text_gets_no_track_and_a_warning(
    media_tools: None, user_data: Path, tmp_path: Path, shape: str, files: list[str]
) -> None:
    from subplug import plugins

    plugins.register(FakeBackendPlugin(script=_english_only), name="english-only")
    path = _project(tmp_path, shape)
    os.umask(0o022)
    request = apply.ApplyRequest(
        project=path, clip="2", generate=GenerateOptions(backend="fake", source="en")
    )
    result = apply.apply(request)
    assert list(result.cues) == ["en"] and result.cues["en"] > 0
    assert any("Mongolian" in warning for warning in result.warnings), result.warnings
    assert [p.name for p in result.files] == files
    subtitles = pysubs2.load(str(result.files[0]))
    assert subtitles and not any(
        "\u0400" <= ch <= "\u04ff" for event in subtitles for ch in event.plaintext
    )
    if shape == "sequences":
        listing = KdenliveProject.load(path).properties(KdenliveProject.load(path).timeline())
        names = [e["name"] for e in json.loads(listing[subtitle_track.SUBTITLES_LIST])]
        assert names == ["English"]
    # Written like `subplug generate` writes its files: readable by others.
    assert stat.S_IMODE(result.files[0].stat().st_mode) == 0o644


@pytest.mark.slow
@pytest.mark.host
def test_progress_names_the_project_and_ends_done(
    melt: str, media_tools: None, user_data: Path, tmp_path: Path, fake_backend
) -> None:
    from rich.console import Console
    from subplug.progress import RichProgress

    path = _project(tmp_path, "legacy")
    console = Console(record=True, force_terminal=True, width=160, color_system=None)
    display = RichProgress(console=console)
    events: list[JobEvent] = []

    def sink(event: JobEvent) -> None:
        events.append(event)
        display.subplug_job_event(event)

    request = apply.ApplyRequest(project=path, generate=GenerateOptions(backend="fake"))
    try:
        apply.apply(request, events=sink)
    finally:
        display.close()
    # Every event about the sound names the project, never the rendered temporary file.
    assert {e.media for e in events if e.media is not None} == {path}
    stages = [e.data["stage"] for e in events if e.kind == "stage"]
    assert stages[0] == "model-load" and "render-timeline" in stages
    assert stages[-1] == "write" and events[-1].kind == "file-done"
    shown = console.export_text()
    last = shown.strip().splitlines()[-1]
    assert "edit.kdenlive" in last and " done " in f" {last} ", shown
    assert "timeline.wav" not in shown


@pytest.mark.slow
def test_model_options_reach_the_engine(
    media_tools: None, user_data: Path, tmp_path: Path, fake_backend
) -> None:
    """--dtype, --batch-size and --max-chars are passed on, as `generate` passes them."""
    from subplug.cli import main

    path = _project(tmp_path, "legacy")
    code = main(
        [
            "kdenlive",
            "apply",
            str(path),
            "--clip",
            "2",
            "--backend",
            "fake",
            "--source",
            "en",
            "--dtype",
            "fp32",
            "--batch-size",
            "3",
            "--max-chars",
            "16",
        ]
    )
    assert code == 0
    options = fake_backend.instances[-1].options
    assert (options.dtype, options.batch_size) == ("fp32", 3)
    lines = [
        line
        for event in pysubs2.load(str(tmp_path / "edit.kdenlive.srt"))
        for line in event.plaintext.splitlines()
    ]
    assert lines and max(len(line) for line in lines) <= 16, lines
