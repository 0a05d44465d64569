"""Decoding speed and memory: subplug's PyAV decoder against an ``ffmpeg`` pipe.

``python bench/decode.py`` generates a 10-minute video (64x64 H.264 picture, 48 kHz
stereo AAC sound: speech-like chirps over noise) and decodes its sound to 16 kHz mono
float32 three ways:

* ``media.load_pcm`` — what ``subplug generate`` uses (one preallocated array);
* ``media.iter_pcm`` — the streamed form (30 s blocks, only a running sum kept);
* ``ffmpeg -i FILE -vn -ac 1 -ar 16000 -f f32le -`` read from a pipe into one array —
  the baseline.

Times are the best of ``--repeat`` runs, alternated in this process; ratios are against
the ffmpeg pipe. Peak memory is measured in a fresh child process per method (its
peak resident set, ``VmHWM``, plus ffmpeg's own for the pipe) and shown next to a child that only
imports the same libraries. The decoded arrays are compared (length, RMS difference).
Prints figures; asserts nothing.

Options: ``--minutes N`` (default 10), ``--repeat N`` (default 3), ``--media FILE`` (use
an existing file instead of generating one), ``--keep`` (keep the generated file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
MIB = 1024 * 1024


# -------------------------------------------------------------------------- media


def make_video(path: Path, minutes: float) -> Path:
    """A ``minutes``-long mp4: 48 kHz stereo AAC and a tiny H.264 picture."""
    from subplug.testing.media import make_media

    rate = 48_000
    rng = np.random.default_rng(7)
    parts: list[np.ndarray] = []
    seconds = 0.0
    # Ten-second blocks: a few "words" (chirps with a voice-like envelope), then a pause,
    # over quiet noise that differs left and right.
    while seconds < minutes * 60:
        n = 10 * rate
        t = np.arange(n) / rate
        voice = np.zeros(n)
        for start in np.arange(0.5, 7.5, 0.9):
            a, b = int(start * rate), int((start + 0.6) * rate)
            f0 = rng.uniform(110, 220)
            span = t[a:b] - t[a]
            envelope = np.sin(np.pi * span / 0.6) ** 2
            voice[a:b] = 0.3 * envelope * np.sin(2 * np.pi * (f0 + 80 * span) * span)
        left = voice + 0.02 * rng.standard_normal(n)
        right = voice + 0.02 * rng.standard_normal(n)
        parts.append(np.stack([left, right]).astype(np.float32))
        seconds += 10
    return make_media(path, parts, sample_rate=rate, layout="stereo", video=True)


# ------------------------------------------------------------------------ methods


def decode_load_pcm(path: Path) -> np.ndarray:
    from subplug import media

    return media.load_pcm(path)


def decode_iter_pcm(path: Path) -> np.ndarray:
    """Streams the sound and keeps only a summary: what bounded-memory use costs."""
    from subplug import media

    count, total, energy = 0, 0.0, 0.0
    for block in media.iter_pcm(path, block_seconds=30.0):
        count += len(block)
        total += float(block.sum(dtype=np.float64))
        energy += float(np.dot(block, block))
    return np.array([count, total, energy])


def decode_ffmpeg(path: Path) -> np.ndarray:
    command = [
        "ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-vn", "-ac", "1",
        "-ar", str(SAMPLE_RATE), "-f", "f32le", "-",
    ]  # fmt: skip
    global _ffmpeg_peak
    pieces = []
    with subprocess.Popen(command, stdout=subprocess.PIPE) as child:
        assert child.stdout is not None
        while piece := child.stdout.read(1 << 20):
            pieces.append(piece)
            _ffmpeg_peak = max(_ffmpeg_peak, _peak_rss(child.pid))
    data = b"".join(pieces)
    if child.returncode:
        raise RuntimeError(f"ffmpeg failed with exit code {child.returncode}")
    return np.frombuffer(data, dtype="<f4")


METHODS = {
    "load_pcm": decode_load_pcm,
    "iter_pcm": decode_iter_pcm,
    "ffmpeg pipe": decode_ffmpeg,
}


def imports_only(path: Path) -> np.ndarray:
    """The baseline of the PyAV methods: Python, numpy, PyAV and subplug.media loaded."""
    import av  # noqa: F401
    from subplug import media  # noqa: F401

    return np.zeros(0, dtype=np.float32)


def numpy_only(path: Path) -> np.ndarray:
    """The baseline of the ffmpeg pipe: Python and numpy loaded."""
    return np.zeros(0, dtype=np.float32)


BASELINES = {"imports only": imports_only, "numpy only": numpy_only}


# ---------------------------------------------------------------------- measuring

_ffmpeg_peak = 0


def _peak_rss(pid: int | str = "self") -> int:
    """The process's peak resident memory in bytes (``VmHWM``; 0 when unknown).

    Not ``ru_maxrss``: Linux carries that over from the parent across fork and exec, so a
    child started by a big process would report the parent's peak.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def worker(method: str, path: Path) -> None:
    """Run one method in this (fresh) process and print its peak memory as JSON."""
    function = BASELINES.get(method) or METHODS[method]
    started = time.perf_counter()
    result = function(path)
    seconds = time.perf_counter() - started
    own = _peak_rss() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "rss": own, "child_rss": _ffmpeg_peak, "n": len(result)}))


def peak_memory(method: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", method, str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--media", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return 0
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed: the baseline cannot run (apt install ffmpeg)")
        return 1

    import av

    folder = Path(tempfile.mkdtemp(prefix="subplug-bench-decode-"))
    try:
        if args.media is not None:
            path = args.media
        else:
            started = time.perf_counter()
            path = make_video(folder / "ten minutes.mp4", args.minutes)
            made = time.perf_counter() - started
            print(f"generated {path.name}: {path.stat().st_size / MIB:.1f} MiB in {made:.1f} s")
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            duration = float(container.duration / av.time_base) if container.duration else 0.0
            print(
                f"media: {duration:.1f} s, audio {stream.codec_context.name} "
                f"{stream.sample_rate} Hz {stream.layout.name}, "
                f"video: {'yes' if container.streams.video else 'no'}"
            )
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, PyAV {av.__version__}"
        )

        times: dict[str, list[float]] = {name: [] for name in METHODS}
        outputs: dict[str, np.ndarray] = {}
        for _ in range(max(1, args.repeat)):
            for name, function in METHODS.items():
                started = time.perf_counter()
                outputs[name] = function(path)
                times[name].append(time.perf_counter() - started)
        baseline = min(times["ffmpeg pipe"])

        memory = {name: peak_memory(name, path) for name in [*METHODS, *BASELINES]}
        print()
        print(f"{'method':<13} {'best s':>7} {'x realtime':>10} {'vs ffmpeg':>9}  peak memory")
        for name in METHODS:
            best = min(times[name])
            peak = memory[name]
            base = memory["numpy only" if name == "ffmpeg pipe" else "imports only"]
            extra = peak["rss"] - base["rss"]
            text = f"{peak['rss'] / MIB:4.0f} MiB (+{extra / MIB:.0f} over its imports)"
            if name == "ffmpeg pipe":
                text += f" + ffmpeg process {peak['child_rss'] / MIB:.0f} MiB"
            print(f"{name:<13} {best:7.2f} {duration / best:10.0f} {best / baseline:9.2f}  {text}")
        for name in BASELINES:
            print(f"{name:<13} {'':>7} {'':>10} {'':>9}  {memory[name]['rss'] / MIB:4.0f} MiB")
        print(f"runs: {', '.join(f'{n} {[round(t, 2) for t in ts]}' for n, ts in times.items())}")

        ours, theirs = outputs["load_pcm"], outputs["ffmpeg pipe"]
        n = min(len(ours), len(theirs))
        rms = float(np.sqrt(np.mean((ours[:n] - theirs[:n]) ** 2)))
        level = float(np.sqrt(np.mean(theirs[:n] ** 2)))
        summary = outputs["iter_pcm"]
        print(
            f"\noutput: load_pcm {len(ours)} samples, ffmpeg {len(theirs)} samples "
            f"({(len(ours) - len(theirs)) / SAMPLE_RATE * 1000:+.1f} ms); RMS difference "
            f"{rms:.2e} ({20 * np.log10(max(rms, 1e-12) / max(level, 1e-12)):.0f} dB below "
            f"the signal); iter_pcm saw {int(summary[0])} samples"
        )
        print(f"one decoded copy of the sound: {len(ours) * 4 / MIB:.0f} MiB of float32")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
