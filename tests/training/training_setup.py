"""Shared settings of the training tests: the round-trip clips, names and recipe."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The two clips of the round trip: what is said (and with which espeak-ng voice), and
#: the translation. The Mongolian sentence is read by the Russian voice (there is no
#: Mongolian one; both use Cyrillic).
CLIPS = {
    "en": {"voice": "en", "text_en": "Hello world.", "text_mn": "Сайн уу, дэлхий."},
    "mn": {"voice": "ru", "text_mn": "Сайн байна уу.", "text_en": "Hello."},
}
BASE_NAME = "tiny-base"
ADAPTER_NAME = "tiny-en-mn"
#: The round trip's recipe: the packaged one with a tiny model's learning settings
#: (REFERENCE.md §1: lr 1e-3..2e-3 learns two clips in a few dozen steps).
ROUND_TRIP_RECIPE = f"""\
extends = "gemma3n-en-mn"

[model]
base = "{BASE_NAME}"

[data]
holdout = 0.0
instructions = [1, 6, 7]

[train]
per_device_train_batch_size = 4
gradient_accumulation_steps = 1
learning_rate = 2e-3
lr_scheduler_type = "constant"
max_steps = 60
gradient_checkpointing = false
logging_steps = 20
save_steps = 1000
"""


@dataclass(frozen=True)
class Trained:
    """The session's trained adapter and everything made for it."""

    home: Path
    folder: Path
    manifest: Path
    clips: dict[str, Path]
    exit_code: int
    output: str


def need_espeak() -> None:
    """Skip (with the reason) when espeak-ng is missing."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng)")


def write_manifest(path: Path, clips: dict[str, Path]) -> Path:
    """A manifest of the round-trip clips (paths relative to the manifest)."""
    import json

    lines = []
    for lang, clip in CLIPS.items():
        target = path.parent / clips[lang].name
        if not target.exists():
            shutil.copyfile(clips[lang], target)
        row = {"audio": target.name, "audio_language": lang}
        row.update({k: v for k, v in clip.items() if k.startswith("text_")})
        lines.append(json.dumps(row, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
