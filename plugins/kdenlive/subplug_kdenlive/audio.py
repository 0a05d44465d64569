"""The sound the subtitles are made from: the rendered timeline, or one clip's file.

The timeline is rendered by melt, MLT's command-line player, which plays a ``.kdenlive``
file exactly as Kdenlive renders it (same mixing, muted tracks, clip speed, effects):
``melt -progress PROJECT -consumer avformat:OUT.wav video_off=1 ar=16000 ac=1
real_time=-1``. ``real_time=-1`` turns frame dropping off (MLT's consumers drop frames to
keep up with the clock by default, which would leave holes in the sound on a busy
machine). With ``-progress`` melt reports progress on stderr as ``Current Frame: N,
percentage: P`` (without it, and without a terminal, it reports none).
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
_FRAME = re.compile(rb"Current Frame:\s*(\d+)")

#: Seconds without a new frame after which a melt render is stopped and retried.
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

    A render that stalls (see :func:`run_melt`) is stopped and tried once more before it
    is reported as an error.
    """
    command = [
        melt_binary(),
        "-progress",
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
    try:
        code, tail = run_melt(command, out_wav, on_percent, stall_seconds=stall_seconds)
    except MeltStalled as stalled:
        raise SubplugError(
            "kdenlive-render-stalled",
            f"melt stopped making progress while playing the timeline of {project.name} "
            f"(no new frame for {stalled.seconds:.0f} s, {stalled.attempts} times).",
            "Try again; if it keeps happening, check that the project plays in Kdenlive, "
            "or use --clip ID to make subtitles from one clip's file.",
        ) from None
    if code != 0 or not out_wav.exists() or out_wav.stat().st_size <= 44:
        raise SubplugError(
            "kdenlive-render-failed",
            f"melt could not play the timeline of {project.name}: {last_message(tail, code)}.",
            "Check that the project opens in Kdenlive and that its media files are "
            "where the project expects them; or use --clip ID for one clip.",
        )
    return out_wav


def last_message(tail: bytes, code: int) -> str:
    """The last line melt printed that is not a progress line (or the exit code)."""
    lines = [
        line.strip()
        for line in re.split(rb"[\r\n]", bytes(tail))
        if line.strip() and not _PERCENT.search(line)
    ]
    return lines[-1].decode("utf-8", "replace") if lines else f"exit code {code}"


class MeltStalled(Exception):
    """melt rendered no new frame for ``seconds``, on each of ``attempts`` tries."""

    def __init__(self, seconds: float, attempts: int) -> None:
        super().__init__(f"melt rendered no new frame for {seconds:.0f} s ({attempts} tries)")
        self.seconds = seconds
        self.attempts = attempts


def stall_limit() -> float:
    """Seconds without a new frame before melt counts as stalled:
    ``SUBPLUG_MELT_STALL_SECONDS``, else :data:`STALL_SECONDS`."""
    return float(os.environ.get("SUBPLUG_MELT_STALL_SECONDS") or STALL_SECONDS)


def run_melt(
    command: list[str],
    out: Path,
    on_percent: Callable[[int], None] | None = None,
    *,
    stall_seconds: float | None = None,
    attempts: int = 2,
) -> tuple[int, bytes]:
    """Run a melt ``command`` that writes ``out``, with a watchdog; return melt's exit
    code and the end of its stderr.

    melt occasionally stalls at start-up without using any CPU (seen with MLT 7.12 on a
    busy machine), and a project whose producers never finish loading keeps it busy
    while it prints warnings. Progress is a new frame (melt's ``Current Frame: N``
    rising) or ``out`` growing; anything else melt prints is not. A run without
    progress for ``stall_seconds`` (default :func:`stall_limit`) is killed and started
    again, up to ``attempts`` runs in all; then :class:`MeltStalled` is raised.
    """
    seconds = stall_limit() if stall_seconds is None else stall_seconds
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            out.unlink(missing_ok=True)
        code, tail, stalled = _run_melt_once(command, out, on_percent, seconds)
        if not stalled:
            return code, tail
        log.warning(
            "melt rendered no new frame for %.0f s (try %d of %d); stopped it",
            seconds,
            attempt,
            attempts,
        )
    raise MeltStalled(seconds, attempts)


def _run_melt_once(
    command: list[str],
    out: Path,
    on_percent: Callable[[int], None] | None,
    stall_seconds: float,
) -> tuple[int, bytes, bool]:
    """Run melt once; return its exit code, the end of its stderr, and whether it
    stalled. melt is killed when this returns early for any reason (an interrupt
    included), so it never outlives the caller."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    tail = bytearray()
    pending = b""
    frame = -1
    size = -1
    last_progress = time.monotonic()
    stalled = False
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stderr, selectors.EVENT_READ)
            while True:
                if selector.select(timeout=0.5):
                    chunk = os.read(process.stderr.fileno(), 65536)
                    if not chunk:
                        break
                    tail = (tail + chunk)[-4000:]
                    # Progress lines end in \r; keep a partial one for the next read.
                    text = pending + chunk
                    cut = max(text.rfind(b"\r"), text.rfind(b"\n")) + 1
                    complete, pending = text[:cut], text[cut:][-200:]
                    frames = _FRAME.findall(complete)
                    if frames and int(frames[-1]) > frame:
                        frame = int(frames[-1])
                        last_progress = time.monotonic()
                    if on_percent is not None:
                        found = _PERCENT.findall(complete)
                        if found:
                            on_percent(int(found[-1]))
                now_size = out.stat().st_size if out.exists() else -1
                if now_size > size:
                    size, last_progress = now_size, time.monotonic()
                if time.monotonic() - last_progress > stall_seconds:
                    stalled = True
                    break
    finally:
        if process.poll() is None:
            process.kill()
        code = process.wait()
        process.stderr.close()
    return code, bytes(tail), stalled
