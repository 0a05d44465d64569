"""Render Kdenlive projects with the real melt and compare the frames.

melt plays a ``.kdenlive`` file the way Kdenlive renders it, subtitle filter included.
Frames come back as raw RGB (no compression, so an unchanged pixel is bit-identical),
rendered with ``real_time=-1`` so no frame is dropped on a busy machine.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from subplug_kdenlive.audio import run_melt

#: A pixel counts as changed when a channel moved by more than this.
THRESHOLD = 24
#: A melt run without a new frame for this long is stalled (a busy machine renders these
#: small projects at several frames a second); it is started again, up to ATTEMPTS runs.
STALL_SECONDS = 30.0
ATTEMPTS = 3


def _melt(project: Path, last: int, out: Path, *consumer: str) -> None:
    """Render frames ``0..last`` of ``project`` (an MLT or Kdenlive file, or a media
    file) with melt's avformat consumer into
    ``out``, with the ``consumer`` properties (and ``real_time=-1``).

    melt runs under the product's watchdog (``subplug_kdenlive.audio.run_melt``): a run
    that renders no new frame for :data:`STALL_SECONDS` (MLT 7.12 sometimes stalls at
    start-up) is killed and started again, so a stall never hangs a test."""
    command = [
        "melt",
        "-progress",
        f"xml:{project}" if project.read_bytes()[:200].lstrip().startswith(b"<") else str(project),
        "in=0",
        f"out={last}",
        "-consumer",
        f"avformat:{out}",
        *consumer,
        "real_time=-1",
    ]
    code, tail = run_melt(command, out, stall_seconds=STALL_SECONDS, attempts=ATTEMPTS)
    assert code == 0, tail.decode("utf-8", "replace")[-2000:]


def render_frames(project: Path, last: int, size: tuple[int, int]) -> np.ndarray:
    """Frames ``0..last`` of ``project`` at ``size`` (width, height) as ``(n, h, w, 3)``."""
    width, height = size
    out = project.with_name(project.name + ".frames.rgb")
    _melt(
        project,
        last,
        out,
        "f=rawvideo",
        "vcodec=rawvideo",
        "pix_fmt=rgb24",
        f"width={width}",
        f"height={height}",
        "an=1",
    )
    frames = np.fromfile(out, dtype=np.uint8)
    out.unlink()
    frames = frames.reshape(-1, height, width, 3)
    assert len(frames) == last + 1, f"melt rendered {len(frames)} frames, not {last + 1}"
    return frames


def render_audio(project: Path, last: int) -> np.ndarray:
    """The sound of frames ``0..last`` of ``project`` as 16-bit samples (48 kHz stereo)."""
    out = project.with_name(project.name + ".sound.wav")
    _melt(project, last, out, "video_off=1", "ar=48000", "ac=2", "acodec=pcm_s16le")
    samples = read_wav(out)
    out.unlink()
    return samples


def read_wav(path: Path) -> np.ndarray:
    """The 16-bit samples of a WAV file."""
    with wave.open(str(path), "rb") as stream:
        return np.frombuffer(stream.readframes(stream.getnframes()), dtype=np.int16)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per frame and pixel: did the picture change (``(n, h, w)`` booleans)."""
    delta = np.abs(before.astype(np.int16) - after.astype(np.int16)).max(axis=3)
    return delta > THRESHOLD


def row_bands(mask: np.ndarray, min_gap: int = 2) -> list[tuple[int, int]]:
    """Runs of rows of one frame's mask that hold changed pixels (text lines), as
    ``(first, last)`` row pairs; runs closer than ``min_gap`` rows are joined."""
    rows = np.nonzero(mask.any(axis=1))[0]
    bands: list[tuple[int, int]] = []
    for row in rows:
        if bands and row - bands[-1][1] <= min_gap:
            bands[-1] = (bands[-1][0], int(row))
        else:
            bands.append((int(row), int(row)))
    return bands


def frames_inside(cues: Sequence[tuple[float, float]], fps: int, count: int) -> list[int]:
    """Frames well inside a cue (one frame of margin at each edge)."""
    return [
        frame
        for frame in range(count)
        if any(start + 1 / fps < frame / fps < end - 1 / fps for start, end in cues)
    ]


def frames_outside(cues: Sequence[tuple[float, float]], fps: int, count: int) -> list[int]:
    """Frames well outside every cue (one frame of margin)."""
    return [
        frame
        for frame in range(count)
        if all(frame / fps < start - 1 / fps or frame / fps > end + 1 / fps for start, end in cues)
    ]
