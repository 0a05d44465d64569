"""The subtitles subplug writes are drawn by the real melt, at their times, in both
languages, and the projects otherwise play exactly as before.

Projects: the real Kdenlive files from KDE/kdenlive's tests (22.07, 22.11 and the 24.01
multi-sequence format) and a 24.08 project (ASS tracks) around a real video clip.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pysubs2
import pytest
from kdenlive_projects import make_project, make_speech_clip
from melt_render import (
    changed,
    frames_inside,
    frames_outside,
    render_audio,
    render_frames,
    row_bands,
)
from subplug.types import BackendRequest, Cue, GenerateOptions, Task, Track
from subplug_kdenlive import apply
from subplug_kdenlive.project import KdenliveProject
from subplug_kdenlive.subtitle_track import Layout

pytestmark = pytest.mark.host

FPS = 25
#: Render size for the 1080p fixtures (melt scales; 640×360 keeps two text lines apart).
SIZE = (640, 360)
CUES = [(0.4, 1.2), (1.6, 2.4)]
LAST = 69  # frames 0..69: 2.8 s


@pytest.fixture
def two_language_tracks() -> dict[str, Track]:
    english = ("Hello world.", "Second line.")
    mongolian = ("Сайн байна уу.", "Хоёр дахь мөр.")
    return {
        "en": Track("en", tuple(Cue(s, e, (t,)) for (s, e), t in zip(CUES, english, strict=True))),
        "mn": Track(
            "mn", tuple(Cue(s, e, (t,)) for (s, e), t in zip(CUES, mongolian, strict=True))
        ),
    }


def _check_render(original: Path, edited: Path, size: tuple[int, int]) -> None:
    """Text in the bottom third, two lines, during the cues; no change anywhere else."""
    before = render_frames(original, LAST, size)
    after = render_frames(edited, LAST, size)
    mask = changed(before, after)
    height = size[1]
    inside = frames_inside(CUES, FPS, LAST + 1)
    outside = frames_outside(CUES, FPS, LAST + 1)
    assert inside and outside
    for frame in inside:
        assert mask[frame].sum() > 200, f"no subtitle drawn at frame {frame}"
        assert not mask[frame, : height * 2 // 3].any(), f"change above the subtitles, {frame}"
        bands = row_bands(mask[frame])
        assert len(bands) == 2, f"frame {frame}: expected an English and a Mongolian line"
    for frame in outside:
        assert not mask[frame].any(), f"frame {frame} changed outside every cue"


@pytest.mark.parametrize("name", ["av.kdenlive", "test-mix.kdenlive", "test-nesting.kdenlive"])
def test_real_projects_show_both_languages_in_melt(
    melt: str, fixture_copy, two_language_tracks, name: str
) -> None:
    path = fixture_copy(name)
    original = path.with_name("original-" + name)
    shutil.copyfile(path, original)
    result = apply.write(KdenliveProject.load(path), two_language_tracks)
    assert result.layout is Layout.SRT
    _check_render(original, path, SIZE)


def test_real_project_sound_is_unchanged(melt: str, fixture_copy, two_language_tracks) -> None:
    # av.kdenlive's blipflash clip beeps once a second: there is sound to compare.
    path = fixture_copy("av.kdenlive")
    original = path.with_name("original.kdenlive")
    shutil.copyfile(path, original)
    apply.write(KdenliveProject.load(path), two_language_tracks)
    before = render_audio(original, LAST)
    after = render_audio(path, LAST)
    assert np.abs(before).max() > 1000, "the fixture should beep"
    assert np.array_equal(before, after)


def test_kdenlive_24_08_ass_tracks_show_both_languages_in_melt(
    melt: str, media_tools: None, tmp_path: Path, two_language_tracks
) -> None:
    clip = make_speech_clip(tmp_path, seconds=3.0, size=(640, 360))
    path = make_project(
        tmp_path / "edit.kdenlive", clip, shape="sequences", frames=75, size=(640, 360)
    )
    original = tmp_path / "original.kdenlive"
    shutil.copyfile(path, original)
    result = apply.write(KdenliveProject.load(path), two_language_tracks)
    assert result.layout is Layout.ASS
    _check_render(original, path, (640, 360))


# ------------------------------------------------------------ model text stays text

#: What the model says: ``{\i1}`` would turn italics on and hide itself, ``\N`` would
#: break the line, if the text reached the subtitle file as it is.
TAG_LIKE_TEXT = r"Say {\i1}hi\N now."
#: What the core's writers put in the file for it: braces as parentheses, each backslash
#: followed by an invisible word joiner, so no renderer reads a code there.
WRITTEN_TEXT = "Say (\\\u2060i1)hi\\\u2060N now."
#: Plain text of the same length, drawn on one line: what the tricky text must look like.
PLAIN_TEXT = "Say (xi1)hixN now."


def _answer(english: str) -> Callable[[BackendRequest], str]:
    """A model that hears ``english`` and translates it as "Сайн уу."."""

    def answer(request: BackendRequest) -> str:
        if request.task is Task.TRANSCRIBE:
            return english
        if request.task is Task.TRANSLATE:
            return "Сайн уу."
        return f"### English\n\n{english}\n\n---\n\n### Mongolian\n\nСайн уу."

    return answer


def _apply_with_model(folder: Path, clip: Path, shape: str, english: str) -> tuple[Path, Path]:
    """A project around ``clip`` in ``folder``, with subtitles from a model saying
    ``english``; returns the project and its unedited copy."""
    from subplug import plugins
    from subplug.testing import FakeBackendPlugin

    folder.mkdir()
    version = "22.12.3" if shape == "legacy" else "24.08.1"
    path = make_project(
        folder / "edit.kdenlive", clip, shape=shape, version=version, frames=75, size=(640, 360)
    )
    original = folder / "original.kdenlive"
    shutil.copyfile(path, original)
    name = f"model-{folder.name}"
    plugins.register(FakeBackendPlugin(script=_answer(english)), name=name)
    try:
        request = apply.ApplyRequest(
            project=path, clip="2", generate=GenerateOptions(backend="fake", source="en")
        )
        apply.apply(request)
    finally:
        plugins.unregister(name=name)
    return path, original


def _text_rows(path: Path, original: Path, frame: int) -> tuple[int, int, int]:
    """First and last changed row at ``frame`` and how many pixels changed."""
    mask = changed(
        render_frames(original, frame, (640, 360)), render_frames(path, frame, (640, 360))
    )
    rows = np.nonzero(mask[frame].any(axis=1))[0]
    assert len(rows), f"nothing drawn at frame {frame}"
    return int(rows[0]), int(rows[-1]), int(mask[frame].sum())


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["legacy", "sequences"])
def test_model_text_with_ass_codes_is_shown_as_text(
    melt: str,
    media_tools: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    clip = make_speech_clip(tmp_path / "media", seconds=3.0, size=(640, 360))
    tricky, tricky_original = _apply_with_model(tmp_path / "tricky", clip, shape, TAG_LIKE_TEXT)
    plain, plain_original = _apply_with_model(tmp_path / "plain", clip, shape, PLAIN_TEXT)

    # The project's subtitle file holds the text as the core writes it (and as
    # `subplug generate` would): no override block, no line break code.
    subtitles = tricky.with_name(tricky.name + (".srt" if shape == "legacy" else ".ass"))
    text = subtitles.read_text(encoding="utf-8")
    assert WRITTEN_TEXT in text and "{" not in text.split("[Events]")[-1]
    cue = next(e for e in pysubs2.load(str(subtitles)) if WRITTEN_TEXT in e.text)
    frame = round((cue.start + cue.end) / 2000 * FPS)

    # melt draws it on one line, like plain text of the same length: a line break or
    # italics would change the height or the shape of the text block.
    top, bottom, pixels = _text_rows(tricky, tricky_original, frame)
    plain_top, plain_bottom, plain_pixels = _text_rows(plain, plain_original, frame)
    assert (top, bottom) == (plain_top, plain_bottom)
    assert abs(pixels - plain_pixels) < 0.2 * plain_pixels
    picture = render_frames(tricky, frame, (640, 360))[frame]
    keep_frame(picture, f"kdenlive-tag-like-{shape}.png", tmp_path)


def keep_frame(picture: np.ndarray, name: str, folder: Path) -> Path:
    """Save a frame for people to look at: in ``folder`` and in ``$SUBPLUG_ARTIFACTS``."""
    import os

    from PIL import Image

    path = folder / name
    Image.fromarray(picture).save(path)
    artifacts = os.environ.get("SUBPLUG_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(artifacts) / name)
    return path
