"""A melt that stalls is stopped, tried once more, then reported; it never hangs a job."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from subplug.errors import SubplugError
from subplug_kdenlive import audio


def _stand_in_melt(folder: Path, body: str) -> Path:
    """A program named ``melt`` first on PATH, recording each start in ``starts``."""
    folder.mkdir()
    script = folder / "melt"
    script.write_text(f"#!/bin/sh\necho start >> '{folder}/starts'\n{body}\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def test_a_stalled_render_is_retried_once_then_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _stand_in_melt(tmp_path / "bin", "exec sleep 600")
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    project = tmp_path / "film.kdenlive"
    project.write_text("<mlt/>", encoding="utf-8")
    began = time.monotonic()
    with pytest.raises(SubplugError) as caught:
        audio.render_timeline_audio(project, tmp_path / "out.wav", stall_seconds=1.0)
    assert caught.value.reference == "kdenlive-render-stalled"
    assert "film.kdenlive" in caught.value.message and caught.value.hint
    assert (fake / "starts").read_text().split() == ["start", "start"]
    assert time.monotonic() - began < 30


def test_a_render_that_keeps_printing_progress_is_not_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slower than the stall limit in total, but printing progress all along.
    body = (
        'for p in 10 30 50 70 90; do printf "Current Frame: 1, percentage: %s\\r" $p >&2; '
        "sleep 0.6; done\n"
        'out="${5#avformat:}"; head -c 1000 /dev/zero > "$out"'
    )
    fake = _stand_in_melt(tmp_path / "bin", body)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    project = tmp_path / "film.kdenlive"
    project.write_text("<mlt/>", encoding="utf-8")
    seen: list[int] = []
    out = audio.render_timeline_audio(
        project, tmp_path / "out.wav", seen.append, frames=10, stall_seconds=1.0
    )
    assert out.stat().st_size == 1000
    assert seen == [10, 30, 50, 70, 90]
    assert (fake / "starts").read_text().split() == ["start"]
