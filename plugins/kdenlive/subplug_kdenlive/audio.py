"""The sound the subtitles are made from: the rendered timeline, or one clip's file.

The timeline is rendered by melt, MLT's command-line player, which plays a ``.kdenlive``
file exactly as Kdenlive renders it (same mixing, muted tracks, clip speed, effects):
``melt PROJECT -consumer avformat:OUT.wav video_off=1 ar=16000 ac=1 real_time=-1``.
``real_time=-1`` turns frame dropping off (MLT's consumers drop frames to keep up with
the clock by default, which would leave holes in the sound on a busy machine). melt
reports progress on stderr as ``Current Frame: N, percentage: P``.
"""

from __future__ import annotations

import logging
import os
import re
import selectors
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from subplug.errors import SubplugError

log = logging.getLogger(__name__)

_PERCENT = re.compile(rb"percentage:\s*(\d+)")

#: Seconds without any sign of progress after which a melt render is stopped and retried.
STALL_SECONDS = 60.0


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
    stall_seconds: float | None = None,
) -> Path:
    """Render ``project``'s timeline sound to a 16 kHz mono WAV with melt (its first
    ``frames`` frames when given: the timeline's length, as Kdenlive renders it).

    melt occasionally stalls at start-up without using any CPU (seen with MLT 7.12 on a
    busy machine); a render that shows no progress for ``stall_seconds`` (default
    :data:`STALL_SECONDS`, ``SUBPLUG_MELT_STALL_SECONDS`` overrides) is stopped and tried
    once more before it is reported as an error.
    """
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
    if stall_seconds is None:
        stall_seconds = float(os.environ.get("SUBPLUG_MELT_STALL_SECONDS", STALL_SECONDS))
    for attempt in range(2):
        code, tail, stalled = _run_melt(command, out_wav, on_percent, stall_seconds)
        if not stalled:
            break
        log.warning(
            "melt showed no progress for %.0f s rendering %s (attempt %d); stopped it",
            stall_seconds,
            project.name,
            attempt + 1,
        )
    if stalled:
        raise SubplugError(
            "kdenlive-render-stalled",
            f"melt stopped making progress while playing the timeline of {project.name} "
            f"(no progress for {stall_seconds:.0f} s, twice).",
            "Try again; if it keeps happening, check that the project plays in Kdenlive, "
            "or use --clip ID to make subtitles from one clip's file.",
        )
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


def _run_melt(
    command: list[str],
    out_wav: Path,
    on_percent: Callable[[int], None] | None,
    stall_seconds: float,
) -> tuple[int, bytearray, bool]:
    """Run melt once; return its exit code, the end of its stderr, and whether it stalled.

    Progress is anything melt prints or the output file growing; a run with none for
    ``stall_seconds`` is killed.
    """
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    tail = bytearray()
    size = -1
    last_progress = time.monotonic()
    stalled = False
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while True:
            if selector.select(timeout=1.0):
                chunk = process.stderr.read1(4096)
                if not chunk:
                    break
                last_progress = time.monotonic()
                tail = (tail + chunk)[-4000:]
                if on_percent is not None:
                    found = _PERCENT.findall(chunk)
                    if found:
                        on_percent(int(found[-1]))
                continue
            now_size = out_wav.stat().st_size if out_wav.exists() else -1
            if now_size != size:
                size, last_progress = now_size, time.monotonic()
            elif time.monotonic() - last_progress > stall_seconds:
                stalled = True
                process.kill()
                break
    code = process.wait()
    process.stderr.close()
    return code, tail, stalled
