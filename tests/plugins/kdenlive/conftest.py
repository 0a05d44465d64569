"""Fixtures for the Kdenlive adapter's tests: the real Kdenlive project files from
``../shared/fixtures/kdenlive`` and hand-made subtitle tracks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from subplug.types import Cue, Track

FIXTURE_NAMES = ("av.kdenlive", "test-mix.kdenlive", "test-nesting.kdenlive")


@pytest.fixture
def kdenlive_fixtures(shared_dir: Path) -> Path:
    """The folder of real Kdenlive projects (from KDE/kdenlive's tests/dataset)."""
    folder = shared_dir / "fixtures" / "kdenlive"
    missing = [name for name in FIXTURE_NAMES if not (folder / name).exists()]
    if missing:
        pytest.skip(f"Kdenlive fixtures missing in {folder}: {', '.join(missing)}")
    return folder


@pytest.fixture
def fixture_copy(kdenlive_fixtures: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``fixture_copy(name)``: a copy of a fixture project in a fresh folder."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copyfile(kdenlive_fixtures / name, target)
        return target

    return copy


@pytest.fixture
def hand_tracks() -> dict[str, Track]:
    """Two short bilingual cues, with English and Mongolian boundaries a bit apart."""
    return {
        "en": Track("en", (Cue(1.0, 2.5, ("Hello world.",)), Cue(3.0, 4.4, ("Second line.",)))),
        "mn": Track("mn", (Cue(1.0, 2.6, ("Сайн байна уу.",)), Cue(3.0, 4.4, ("Хоёр дахь мөр.",)))),
    }


@pytest.fixture(scope="session")
def melt() -> str:
    """The real melt (MLT's command-line player), or a skip saying it is missing."""
    found = shutil.which("melt")
    if found is None:
        pytest.skip("melt not installed (Debian/Ubuntu: apt install melt)")
    return found


@pytest.fixture(scope="session")
def media_tools() -> None:
    """ffmpeg and espeak-ng, which make the speech clips, or a skip saying which is missing."""
    missing = [tool for tool in ("ffmpeg", "espeak-ng") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (needed to make speech clips)")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma 3n built offline (its text is gibberish, its timing is real)."""
    from subplug.testing.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-gemma3n"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a real 1 MiB file system, to fill up (see ``disk.py``)."""
    from disk import small_file_system

    with small_file_system(tmp_path / "small-disk") as folder:
        yield folder
