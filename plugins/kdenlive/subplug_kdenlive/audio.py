"""The sound the subtitles are made from: the rendered timeline, or one clip's file.

The timeline is rendered by melt, MLT's command-line player, which plays a ``.kdenlive``
file exactly as Kdenlive renders it (same mixing, muted tracks, clip speed, effects):
``melt PROJECT -consumer avformat:OUT.wav video_off=1 ar=16000 ac=1 real_time=-1``.
``real_time=-1`` turns frame dropping off (MLT's consumers drop frames to keep up with
the clock by default, which would leave holes in the sound on a busy machine). melt
reports progress on stderr as ``Current Frame: N, percentage: P``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from subplug.errors import SubplugError

_PERCENT = re.compile(rb"percentage:\s*(\d+)")


def melt_binary() -> str:
    """The melt executable, or a ``melt-missing`` error saying how to install it."""
    found = shutil.which("melt") or shutil.which("mlt-melt")
    if found is None:
        raise SubplugError(
            "melt-missing",
            "melt (the MLT command-line tool Kdenlive is built on) is not installed.",
            "Install it: sudo apt install melt (Debian/Ubuntu) or sudo dnf install mlt "
            "(Fedora). Or use --clip ID to make subtitles from one clip's file.",
        )
    return found


def melt_version() -> str | None:
    """``7.12.0`` from ``melt --version``, or ``None`` when melt is missing."""
    binary = shutil.which("melt") or shutil.which("mlt-melt")
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"melt\s+(\d+(?:\.\d+)+)", out.stdout + out.stderr)
    return match.group(1) if match else None


def render_timeline_audio(
    project: Path,
    out_wav: Path,
    on_percent: Callable[[int], None] | None = None,
    *,
    frames: int | None = None,
) -> Path:
    """Render ``project``'s timeline sound to a 16 kHz mono WAV with melt (its first
    ``frames`` frames when given: the timeline's length, as Kdenlive renders it)."""
    command = [
        melt_binary(),
        str(project),
        *(["in=0", f"out={frames - 1}"] if frames else []),
        "-consumer",
        f"avformat:{out_wav}",
        "video_off=1",
        "ar=16000",
        "ac=1",
        "acodec=pcm_s16le",
        "real_time=-1",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tail = bytearray()
    assert process.stderr is not None
    while True:
        chunk = process.stderr.read1(4096) if hasattr(process.stderr, "read1") else b""
        if not chunk:
            break
        tail = (tail + chunk)[-4000:]
        if on_percent is not None:
            found = _PERCENT.findall(chunk)
            if found:
                on_percent(int(found[-1]))
    code = process.wait()
    if code != 0 or not out_wav.exists() or out_wav.stat().st_size <= 44:
        lines = [
            line.strip()
            for line in re.split(rb"[\r\n]", bytes(tail))
            if line.strip() and not _PERCENT.search(line)
        ]
        detail = lines[-1].decode("utf-8", "replace") if lines else f"exit code {code}"
        raise SubplugError(
            "kdenlive-render-failed",
            f"melt could not play the timeline of {project.name}: {detail}.",
            "Check that the project opens in Kdenlive and that its media files are "
            "where the project expects them; or use --clip ID for one clip.",
        )
    return out_wav
