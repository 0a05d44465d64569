"""A small archive for the job tests: 12 good media files of mixed length, format and
folder, and three hostile ones, built once per test session (espeak-ng speech)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from subplug.testing.media import speech_clip, video_only

#: Relative path → phrases. Each file says something of its own, so no two chunks of
#: the archive have the same samples.
GOOD: dict[str, tuple[str, ...]] = {
    "talks/opening.mp4": ("Good morning and welcome.", "Today we open the archive."),
    "talks/weather.wav": ("The weather in the mountains is cold.",),
    "talks/history.ogg": (
        "Long ago the river was wider.",
        "People crossed it on wooden boats.",
        "Now there is a bridge.",
    ),
    "talks/short.mp3": ("Yes.",),
    "radio/news.flac": ("Here is the news.", "Prices went up this week."),
    "radio/music talk.m4a": ("That song was from nineteen seventy.",),
    "radio/interview.mkv": (
        "Thank you for coming to the studio.",
        "It is a pleasure to be here.",
        "Tell us about your work.",
        "I record the old songs of the steppe.",
    ),
    "radio/call-in.opus": ("Hello, am I on the air?", "Yes you are, go ahead."),
    "deep/er/lecture.webm": ("The lecture begins with a question.", "What is a language?"),
    "deep/er/notes.wav": ("Chapter two, the sounds of speech.",),
    "deep/sermon.mp4": ("Let us sit quietly for a moment.", "Then we will read together."),
    "deep/story.ogg": ("Once upon a time there lived a horse.", "It ran faster than wind."),
}
HOSTILE = ("talks/broken.mp3", "radio/cut off.mp4", "deep/silent film.mp4")


@dataclass(frozen=True)
class Archive:
    root: Path
    good: tuple[Path, ...]
    hostile: tuple[Path, ...]


def build(root: Path) -> Archive:
    """The archive under ``root``."""
    good = []
    for relative, phrases in GOOD.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        video = path.suffix in (".mp4", ".mkv", ".webm")
        speech_clip(path, phrases, pause=1.0, video=video)
        good.append(path)
    broken, cut, silent = (root / name for name in HOSTILE)
    broken.write_text("this is not audio\n", encoding="utf-8")
    data = (root / "talks/opening.mp4").read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    video_only(silent, 1.0)
    return Archive(root, tuple(good), (broken, cut, silent))


def copy(archive: Archive, root: Path) -> Archive:
    """A private copy of ``archive`` under ``root``."""
    shutil.copytree(archive.root, root)
    return Archive(
        root,
        tuple(root / p.relative_to(archive.root) for p in archive.good),
        tuple(root / p.relative_to(archive.root) for p in archive.hostile),
    )


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }
