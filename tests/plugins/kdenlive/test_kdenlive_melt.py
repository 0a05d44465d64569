"""The subtitles subplug writes are drawn by the real melt, at their times, in both
languages, and the projects otherwise play exactly as before.

Projects: the real Kdenlive files from KDE/kdenlive's tests (22.07, 22.11 and the 24.01
multi-sequence format) and a 24.08 project (ASS tracks) around a real video clip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
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
from subplug.types import Cue, Track
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
