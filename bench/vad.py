"""Speech detection speed: silero-vad window by window against the batched way.

``python bench/vad.py`` builds a long 16 kHz mono track from real speech (espeak-ng
sentences in English and in the Russian voice, with pauses, a tone and noise between
them; one minute of it, repeated with fresh noise) and runs
``segment.speech_probabilities`` on it:

* ``streaming`` — silero-vad's own use: one model call per 32 ms window, the state
  carried from call to call (what subplug did before; the baseline);
* ``batched`` — what subplug does now: 20 s of windows per call, the per-window
  layers as one batch and the LSTM stepping through the block in one call.

Each runs on 1 and on 2 torch threads, once on the machine as it is ("as is") and once
with a busy-loop process per CPU beside it ("loaded"), the situation in which the VAD
was once seen to take 18 s instead of 0.2 s. Times are the best of ``--repeat`` runs,
wall clock and the process's CPU seconds; ratios are against ``streaming`` on the same
threads and load. The two methods' probabilities, speech regions and chunk plans are
compared. Prints figures; asserts nothing.

Options: ``--minutes N`` (default 10), ``--repeat N`` (default 2), ``--no-load`` (skip
the loaded runs), ``--threads 1,2``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

SAMPLE_RATE = 16_000

SENTENCES = (
    ("en", "Good evening, and welcome to the programme."),
    ("en", "Tonight we look at how the weather shapes the lives of herders in the north."),
    ("ru", "Добрый вечер, сегодня мы поговорим о погоде."),
    ("en", "Thank you for watching, and see you next week."),
    ("ru", "Спасибо, что смотрели нашу передачу."),
)


def make_track(minutes: float) -> np.ndarray:
    """``minutes`` of 16 kHz mono: real speech with pauses, a tone and noise."""
    from subplug.testing.media import speech_wav

    rng = np.random.default_rng(11)
    folder = _tmp()
    phrases = []
    for i, (voice, text) in enumerate(SENTENCES):
        wav = speech_wav(os.path.join(folder, f"{i}.wav"), text, voice=voice)
        phrases.append(_read_16k(wav))
    shutil.rmtree(folder, ignore_errors=True)
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    minute: list[np.ndarray] = []
    while sum(len(p) for p in minute) < 60 * SAMPLE_RATE:
        for phrase in phrases:
            minute.append(phrase)
            minute.append(np.zeros(int(rng.uniform(0.4, 1.5) * SAMPLE_RATE), np.float32))
        minute.append(tone)
        minute.append(np.zeros(SAMPLE_RATE, np.float32))
    one = np.concatenate(minute)[: 60 * SAMPLE_RATE]
    copies = int(np.ceil(minutes))
    track = np.concatenate(
        [one + 0.01 * rng.standard_normal(len(one)).astype(np.float32) for _ in range(copies)]
    )
    return track[: int(minutes * 60 * SAMPLE_RATE)].astype(np.float32)


def _tmp() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="subplug-bench-vad-")


def _read_16k(path: os.PathLike[str] | str) -> np.ndarray:
    from subplug import media

    return media.load_pcm(path)


@contextmanager
def busy_machine(enabled: bool) -> Iterator[int]:
    """One busy-loop process per CPU for the duration (ended by pid afterwards)."""
    children: list[subprocess.Popen[bytes]] = []
    if enabled:
        for _ in range(os.cpu_count() or 2):
            children.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(0.5)
    try:
        yield len(children)
    finally:
        for child in children:
            child.kill()
            child.wait()


def timed(
    samples: np.ndarray, method: str, threads: int, repeat: int
) -> tuple[float, float, object]:
    """Best wall and CPU seconds of ``repeat`` runs, and the last result."""
    from subplug import segment

    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(max(1, repeat)):
        wall, cpu = time.perf_counter(), time.process_time()
        result = segment.speech_probabilities(samples, threads=threads, method=method)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-load", action="store_true")
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is not installed: no speech to measure on (apt install espeak-ng)")
        return 1

    import torch
    from subplug import segment

    started = time.perf_counter()
    samples = make_track(args.minutes)
    seconds = len(samples) / SAMPLE_RATE
    windows = -(-len(samples) // segment.VAD_WINDOW)
    print(f"track: {seconds / 60:.1f} min of speech, pauses, tone and noise ({windows} windows)")
    print(f"made in {time.perf_counter() - started:.1f} s")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start; torch {torch.__version__}, "
        f"silero-vad model loaded in-process"
    )
    segment.speech_probabilities(samples[: SAMPLE_RATE * 2], method="streaming")
    segment.speech_probabilities(samples[: SAMPLE_RATE * 2])

    thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    loads = [False] if args.no_load else [False, True]
    rows = []
    results: dict[str, object] = {}
    for loaded in loads:
        with busy_machine(loaded) as busy:
            for threads in thread_counts:
                for method in ("streaming", "batched"):
                    wall, cpu, result = timed(samples, method, threads, args.repeat)
                    results[method] = result
                    rows.append((loaded, busy, threads, method, wall, cpu))

    print()
    print(
        f"{'machine':<10} {'threads':>7} {'method':<10} {'wall s':>8} {'CPU s':>7} "
        f"{'ms/window':>9} {'x realtime':>10} {'vs streaming':>12} {'2 h film':>9}"
    )
    for loaded, busy, threads, method, wall, cpu in rows:
        base = next(
            r[4] for r in rows if r[0] == loaded and r[2] == threads and r[3] == "streaming"
        )
        label = f"loaded+{busy}" if loaded else "as is"
        film = wall * 7200 / seconds
        print(
            f"{label:<10} {threads:>7} {method:<10} {wall:8.2f} {cpu:7.2f} "
            f"{1000 * wall / windows:9.3f} {seconds / wall:10.0f} {base / wall:11.1f}x "
            f"{film:8.0f}s"
        )
    for loaded in loads:
        for method in ("streaming", "batched"):
            by_threads = {r[2]: r[4] for r in rows if r[0] == loaded and r[3] == method}
            if 1 in by_threads and 2 in by_threads:
                label = "loaded" if loaded else "as is"
                print(
                    f"{label}, {method}: 2 threads take {by_threads[2] / by_threads[1]:.2f}x "
                    "the time of 1"
                )

    stream = results["streaming"]
    batch = results["batched"]
    assert isinstance(stream, segment.FrameScores) and isinstance(batch, segment.FrameScores)
    diff = float(np.max(np.abs(stream.values - batch.values)))
    near = int(np.sum(np.abs(stream.values - 0.5) < 1e-3))
    same_regions = segment.regions_from_scores(stream) == segment.regions_from_scores(batch)
    regions = segment.regions_from_scores(batch)
    plan_a = segment.plan_chunks(regions, total=seconds, scores=stream)
    plan_b = segment.plan_chunks(regions, total=seconds, scores=batch)
    print(
        f"\nagreement: largest probability difference {diff:.1e}; {len(regions)} speech "
        f"regions, identical: {'yes' if same_regions else 'NO'}; chunk plans "
        f"({len(plan_b)} chunks) identical: {'yes' if plan_a == plan_b else 'NO'}; "
        f"windows within 1e-3 of the 0.5 threshold: {near}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
