"""melt's watchdog: a render that makes no progress is stopped, tried once more, then
reported; it never hangs a job. Progress is a new frame (or the output growing), not
whatever melt prints: a project whose producers never finish loading keeps melt busy
printing warnings without rendering anything.

The melt here is a stand-in shell script first on PATH, so each case is exact; the real
melt runs under the same watchdog in every other Kdenlive test (``melt_render.py``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from subplug.errors import SubplugError
from subplug_kdenlive import audio


def _stand_in_melt(folder: Path, body: str) -> Path:
    """A program named ``melt`` first on PATH, recording each start in ``starts``."""
    folder.mkdir()
    script = folder / "melt"
    script.write_text(f"#!/bin/sh\necho $$ >> '{folder}/starts'\n{body}\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def _starts(folder: Path) -> list[int]:
    return [int(pid) for pid in (folder / "starts").read_text().split()]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "film.kdenlive"
    path.write_text("<mlt/>", encoding="utf-8")
    return path


def test_a_silent_stall_is_retried_once_then_reported(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _stand_in_melt(tmp_path / "bin", "exec sleep 600")
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SubplugError) as caught:
        audio.render_timeline_audio(project, tmp_path / "out.wav", stall_seconds=1.0)
    assert caught.value.reference == "kdenlive-render-stalled"
    assert "film.kdenlive" in caught.value.message and caught.value.hint
    starts = _starts(fake)
    assert len(starts) == 2 and all(_gone(pid) for pid in starts)


def test_chatter_without_frames_is_not_progress(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Warnings printed for ever (producers failing to load one after another)."""
    body = 'while :; do echo "[producer_xml] failed to load producer \\"x\\"" >&2; sleep 0.1; done'
    fake = _stand_in_melt(tmp_path / "bin", body)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SubplugError) as caught:
        audio.render_timeline_audio(project, tmp_path / "out.wav", stall_seconds=1.0)
    assert caught.value.reference == "kdenlive-render-stalled"
    starts = _starts(fake)
    assert len(starts) == 2 and all(_gone(pid) for pid in starts)


def test_a_render_that_keeps_rendering_frames_is_not_stopped(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slower than the stall limit in total, with a new frame more often than that. The
    # output file is written only at the end, so the frames are the only sign of life.
    body = (
        "for p in 10 30 50 70 90; do "
        'printf "Current Frame: %5d, percentage: %5d\\r" $p $p >&2; sleep 0.6; done\n'
        'for a in "$@"; do case "$a" in avformat:*) out="${a#avformat:}";; esac; done\n'
        'head -c 1000 /dev/zero > "$out"'
    )
    fake = _stand_in_melt(tmp_path / "bin", body)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    seen: list[int] = []
    out = audio.render_timeline_audio(
        project, tmp_path / "out.wav", seen.append, frames=10, stall_seconds=1.0
    )
    assert out.stat().st_size == 1000
    assert seen == [10, 30, 50, 70, 90]
    assert len(_starts(fake)) == 1


def test_melt_is_asked_for_progress_lines(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``-progress`` and without a terminal, melt prints no frame numbers."""
    body = 'echo "$@" > "$(dirname "$0")/args"; exit 3'
    fake = _stand_in_melt(tmp_path / "bin", body)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SubplugError) as caught:
        audio.render_timeline_audio(project, tmp_path / "out.wav", frames=10, stall_seconds=5.0)
    assert caught.value.reference == "kdenlive-render-failed"
    assert (fake / "args").read_text().split()[:2] == ["-progress", str(project)]
