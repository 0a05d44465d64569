"""Latency of live captions (``subplug live``) on a real-time paced speech stream.
Prints figures; asserts nothing.

``python bench/live_latency.py`` builds the tiny offline Gemma 3n, then feeds a
``subplug live`` process (the same command the OBS filter runs) a stream of espeak-ng
speech with pauses, as 48 kHz stereo float PCM written at the pace of a live source
(one 20 ms block every 20 ms of wall-clock time, like OBS's audio thread), for
``--minutes`` (default 10). It prints:

* **latency**: wall-clock seconds from the moment the last word of a phrase was written
  to the engine until the caption covering it came out (median, p95, max). It includes
  the silence the detector waits for before it closes an utterance (``--min-silence``,
  0.4 s by default) and the model's time;
* **lag over time**: per minute of the stream, how far behind the live input the
  engine's backlog reaches (the ``lag`` of its ``stats`` events: input time of the
  newest audio minus the start of the oldest utterance not yet captioned) and the
  median latency; if the model cannot keep up this grows until ``--max-lag`` makes the
  engine drop audio (counted);
* coverage: phrases spoken, captions, utterances merged and dropped.

A baseline run first (``--baseline-minutes``, default 2) uses the fake backend (no model
compute) in the same harness: its latency is the pipeline's own share (pacing, VAD,
silence wait, process and pipes), and the model run's figures are also given as ratios
to it.

``--model PATH|NAME`` measures a real model folder instead of the tiny one (for example
on a GPU machine: ``--device cuda``). ``--json FILE`` writes the figures.

``--random-init e2b --checkpoint DIR`` measures a random-initialised, full-size Gemma 3n
E2B (bench/rtf.py's checkpoint folder, built there when missing), loaded by the real
backend with ``--quantize``/``--vocab`` (default: what ``auto`` picks on this machine). It
runs the live engine in this process with the real prompt layout and decode loop and
exactly as many generated tokens as a real answer would have
(``--answer-tokens-per-second`` of speech, plus 16), since random weights do not stop by
themselves; the caption text is then the fake backend's. So its timings are the real
model's compute; its words mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RATE = 48_000
CHANNELS = 2
BLOCK = 0.02  # seconds of audio per write, as OBS delivers it (about 1024 frames)

PHRASES = (
    "Good morning everyone and welcome to the show.",
    "Today we talk about the weather in the mountains.",
    "The river is high after the rain of last week.",
    "Please speak slowly so that everyone can understand.",
    "We are going to the market tomorrow morning.",
    "Thank you for listening, and see you next time.",
    "The quick brown fox jumps over the lazy dog.",
    "Our next guest has travelled a long way to be here.",
    "Let us look at the numbers for this year.",
    "It is getting colder in the evening now.",
    "A small team can build great things together.",
    "That is all for today, goodbye.",
)


# ------------------------------------------------------------------------- stream


@dataclass(frozen=True)
class Stream:
    """Mono samples at 48 kHz and where the speech in them is (input-clock seconds)."""

    samples: np.ndarray = field(repr=False)
    speech: tuple[tuple[float, float], ...]

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


def make_stream(seconds: float, seed: int = 0) -> Stream:
    """Phrases in turn, with 0.7–2.5 s pauses between them, for about ``seconds``."""
    from subplug.testing.media import speech

    voices = [speech(text, sample_rate=RATE) for text in PHRASES]
    rng = np.random.default_rng(seed)
    total = int(seconds * RATE)
    samples = np.zeros(total, dtype=np.float32)
    spans = []
    position = int(1.0 * RATE)
    turn = 0
    while True:
        voice = voices[turn % len(voices)]
        if position + len(voice) + RATE > total:
            break
        samples[position : position + len(voice)] = voice
        spans.append((position / RATE, (position + len(voice)) / RATE))
        position += len(voice) + int(rng.uniform(0.7, 2.5) * RATE)
        turn += 1
    return Stream(samples, tuple(spans))


# ------------------------------------------------------------------------ one run


@dataclass
class Run:
    """What one engine process said, with the wall-clock time of each line."""

    label: str
    started: float = 0.0
    """Wall clock (``time.monotonic``) at which input second 0 was written."""
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    load_seconds: float = 0.0
    feed_behind_max: float = 0.0
    """How far the feeder itself ever fell behind its schedule (should be ~0)."""


def feed(run: Run, stream: Stream, write: Callable[[bytes], object]) -> None:
    """Write ``stream`` with ``write`` as interleaved float PCM at the pace of a live
    source: block ``n`` (``BLOCK`` seconds) is due ``n * BLOCK`` seconds after
    ``run.started`` (set here); how late the feeder ever was goes to
    ``run.feed_behind_max``."""
    step = int(BLOCK * RATE)
    run.started = time.monotonic()
    for index, first in enumerate(range(0, len(stream.samples), step)):
        due = run.started + index * BLOCK
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            run.feed_behind_max = max(run.feed_behind_max, -wait)
        mono = stream.samples[first : first + step]
        write(np.repeat(mono[:, None], CHANNELS, axis=1).astype("<f4").tobytes())


def run_engine(label: str, command: list[str], env: dict[str, str], stream: Stream) -> Run:
    """Start the engine, wait until it is ready, feed ``stream`` in real time, close
    its input, and collect every event until it exits."""
    run = Run(label)
    began = time.monotonic()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        bufsize=0,
    )
    assert proc.stdin is not None and proc.stdout is not None
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            run.events.append((time.monotonic(), event))
            if event["event"] in ("ready", "error"):
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait()
    run.load_seconds = time.monotonic() - began
    if proc.poll() is not None or not any(e["event"] == "ready" for _, e in run.events):
        raise SystemExit(f"{label}: the engine did not start: {run.events}")
    feed(run, stream, proc.stdin.write)
    proc.stdin.close()
    proc.wait()
    reader.join()
    return run


class _Lines:
    """A text stream for ``run_live``'s events that stamps each line as it arrives."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            self.run.events.append((time.monotonic(), json.loads(line)))
        return len(text)

    def flush(self) -> None:
        pass


def run_in_process(label: str, options: Any, backend: Any, stream: Stream) -> Run:
    """Like :func:`run_engine`, with the live engine in this process and ``backend``
    already loaded (it must not be loaded twice: 10 GiB)."""
    from subplug.live import run_live

    run = Run(label)
    read_fd, write_fd = os.pipe()
    began = time.monotonic()
    engine = threading.Thread(
        target=run_live,
        args=(options, os.fdopen(read_fd, "rb"), _Lines(run)),
        kwargs={"backend": backend, "handle_signals": False},
        daemon=True,
    )
    engine.start()
    while not any(e["event"] == "ready" for _, e in list(run.events)):
        if not engine.is_alive():
            raise SystemExit(f"{label}: the engine did not start: {run.events}")
        time.sleep(0.05)
    run.load_seconds = time.monotonic() - began
    with os.fdopen(write_fd, "wb", buffering=0) as pipe:
        feed(run, stream, pipe.write)
    engine.join()
    return run


class RandomE2BBackend:
    """The real Gemma 3n backend over a random E2B checkpoint (bench/rtf.py builds it),
    loaded with the setting asked for (``--quantize``, ``--vocab``): real features, the
    real prompt and decode loop, and exactly a real answer's number of generated tokens;
    the caption text is the fake backend's."""

    name = "random-e2b"

    def __init__(self, inner: Any, tokens_per_second: float) -> None:
        self.inner = inner
        self.tokens_per_second = tokens_per_second
        self.generated: list[tuple[float, int, float]] = []
        """(seconds of audio, tokens generated, seconds taken) per request."""

    def answer_tokens(self, seconds: float, budget: int) -> int:
        return max(8, min(budget, round(16 + self.tokens_per_second * seconds)))

    def generate(self, requests: Sequence[Any]) -> list[str]:
        import torch
        from subplug.backends.decode import DecodeRow, greedy_decode
        from subplug.testing.fake import fake_answer

        answers = []
        for request in requests:
            began = time.perf_counter()
            n = self.answer_tokens(request.chunk.duration, request.max_new_tokens)
            with torch.inference_mode():
                row = DecodeRow(
                    self.inner.prompt_ids(request.instruction), self.inner.audio_tokens(request), n
                )
                greedy_decode(self.inner.model, [row], pad_id=self.inner.pad_id, stop_ids=[])
            self.generated.append((request.chunk.duration, n, time.perf_counter() - began))
            answers.append(fake_answer(request))
        return answers

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.inner.describe()}


def random_e2b_run(args: argparse.Namespace, stream: Stream) -> tuple[Run, RandomE2BBackend]:
    """Load the random E2B checkpoint (bench/rtf.py's folder) with the asked setting and
    run the engine on ``stream``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rtf import ensure_e2b_folder, gib, rss
    from subplug.backends.gemma3n import Gemma3nBackend
    from subplug.live import LiveOptions
    from subplug.types import BackendOptions

    ensure_e2b_folder(args.checkpoint, args.kept_tokens)
    began = time.perf_counter()
    inner = Gemma3nBackend(
        BackendOptions(
            model=str(args.checkpoint), device="cpu", threads=args.threads,
            quantize=args.quantize, vocab=args.vocab,
        )
    )  # fmt: skip
    took = time.perf_counter() - began
    facts = inner.describe()
    print(f"loaded the random E2B ({facts['quantize']}, {facts['dtype']}, "
          f"{facts['threads']} threads) in {took:.0f} s; resident {gib(rss())} GiB",
          flush=True)  # fmt: skip
    backend = RandomE2BBackend(inner, args.answer_tokens_per_second)
    options = LiveOptions(
        format="f32le", rate=RATE, channels=CHANNELS, source=args.source, max_lag=args.max_lag
    )
    label = f"random-init E2B ({facts['quantize']}), cpu"
    return run_in_process(label, options, backend, stream), backend


# ---------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass
class Figures:
    label: str
    stream_seconds: float
    load_seconds: float
    phrases: int
    captions: int
    phrases_captioned: int
    merged: int
    dropped: int
    dropped_seconds: float
    latency_median: float | None
    latency_p95: float | None
    latency_max: float | None
    engine_latency_median: float | None
    per_minute: list[dict[str, Any]]
    feed_behind_max: float


def analyse(run: Run, stream: Stream) -> Figures:
    """Latency per caption (end of the last phrase it covers → caption out), and the
    backlog's lag and the latency per minute of input."""
    captions = [(t, e) for t, e in run.events if e["event"] == "caption"]
    stats = [e for _, e in run.events if e["event"] == "stats"]
    final = next((e for e in stats if e.get("final")), stats[-1] if stats else {})
    latencies: list[tuple[float, float]] = []  # (input second of speech end, latency)
    covered: set[int] = set()
    for arrived, caption in captions:
        inside = [
            k
            for k, (start, end) in enumerate(stream.speech)
            if min(end, caption["end"]) - max(start, caption["start"]) > 0
        ]
        if not inside:
            continue
        covered.update(inside)
        speech_end = stream.speech[inside[-1]][1]
        latencies.append((speech_end, arrived - (run.started + speech_end)))
    minutes = max(1, int(np.ceil(stream.seconds / 60)))
    per_minute = []
    for minute in range(minutes):
        low, high = minute * 60, (minute + 1) * 60
        lat = [v for at, v in latencies if low <= at < high]
        lags = [e["lag"] for e in stats if not e.get("final") and low < e["input_seconds"] <= high]
        per_minute.append(
            {
                "minute": minute + 1,
                "latency_median": round(statistics.median(lat), 3) if lat else None,
                "backlog_lag_max": round(max(lags), 3) if lags else None,
            }
        )
    values = [v for _, v in latencies]
    engine = [c["latency"] for _, c in captions]
    return Figures(
        label=run.label,
        stream_seconds=round(stream.seconds, 1),
        load_seconds=round(run.load_seconds, 1),
        phrases=len(stream.speech),
        captions=len(captions),
        phrases_captioned=len(covered),
        merged=int(final.get("merged", 0)),
        dropped=int(final.get("dropped", 0)),
        dropped_seconds=float(final.get("dropped_seconds", 0.0)),
        latency_median=round(statistics.median(values), 3) if values else None,
        latency_p95=round(percentile(values, 95) or 0.0, 3) if values else None,
        latency_max=round(max(values), 3) if values else None,
        engine_latency_median=round(statistics.median(engine), 3) if engine else None,
        per_minute=per_minute,
        feed_behind_max=round(run.feed_behind_max, 3),
    )


def show(f: Figures, baseline: Figures | None) -> None:
    def s(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f} s"

    def ratio(value: float | None, base: float | None) -> str:
        if value is None or not base:
            return ""
        return f" ({value / base:.1f}× baseline)"

    b = baseline
    print(f"\n== {f.label}: {f.stream_seconds:.0f} s of paced input (engine ready in "
          f"{f.load_seconds:.0f} s)")  # fmt: skip
    print(
        f"phrases {f.phrases}, captioned {f.phrases_captioned} "
        f"({100 * f.phrases_captioned / max(1, f.phrases):.0f} %), captions {f.captions}, "
        f"utterances merged {f.merged}, dropped {f.dropped} ({f.dropped_seconds:.1f} s)"
    )
    print(
        "latency end of speech → caption: median "
        f"{s(f.latency_median)}{ratio(f.latency_median, b and b.latency_median)}, "
        f"p95 {s(f.latency_p95)}{ratio(f.latency_p95, b and b.latency_p95)}, "
        f"max {s(f.latency_max)}"
    )
    print(f"engine-reported latency (last sample read → caption): median "
          f"{s(f.engine_latency_median)}")  # fmt: skip
    print("minute  latency median  backlog lag max")
    for row in f.per_minute:
        print(
            f"{row['minute']:>6}  {s(row['latency_median']):>14}  {s(row['backlog_lag_max']):>15}"
        )
    if f.feed_behind_max > 0.1:
        print(f"note: the feeder fell up to {f.feed_behind_max:.2f} s behind its schedule "
              "(machine busy)")  # fmt: skip


def machine() -> str:
    """CPU, cores and load: what the figures depend on."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return f"{model}; {os.cpu_count()} CPUs; load average {load[0]:.1f}"


# ------------------------------------------------------------------------- main


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="model run (default 10)")
    parser.add_argument(
        "--baseline-minutes", type=float, default=2.0, help="fake-backend run; 0 skips it"
    )
    parser.add_argument("--model", help="model folder or cache name (default: the tiny model)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda… (default cpu)")
    parser.add_argument("--threads", type=int, help="CPU threads for the model")
    parser.add_argument("--source", default="en", choices=["en", "mn", "auto"])
    parser.add_argument("--max-lag", type=float, default=15.0, help="engine's --max-lag")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--random-init", choices=["e2b"], help="a random-initialised full-size model (CPU)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="random-init: bench/rtf.py's random E2B folder (built there when missing)",
    )
    parser.add_argument("--quantize", default="auto", help="random-init: the model setting")
    parser.add_argument("--vocab", default="auto", help="random-init: the model setting")
    parser.add_argument("--kept-tokens", type=int, default=131_072, help=argparse.SUPPRESS)
    parser.add_argument(
        "--answer-tokens-per-second",
        type=float,
        default=9.0,
        help="random-init: tokens a bilingual answer has per second of speech (default 9)",
    )
    args = parser.parse_args(argv)
    if args.random_init and args.checkpoint is None:
        parser.error("--random-init needs --checkpoint DIR (bench/rtf.py's E2B folder)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    print(f"machine: {machine()}")
    base_command = [
        sys.executable, "-m", "subplug", "live",
        "--format", "f32le", "--rate", str(RATE), "--channels", str(CHANNELS),
        "--source", args.source, "--max-lag", str(args.max_lag), "--stats-interval", "10",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: list[Figures] = []
    baseline = None
    if args.baseline_minutes > 0:
        stream = make_stream(args.baseline_minutes * 60)
        run = run_engine(
            "baseline: fake backend (no model)",
            [*base_command, "--backend", "fake"],
            {**env, "SUBPLUG_PLUGINS": "subplug.testing.fake"},
            stream,
        )
        baseline = analyse(run, stream)
        show(baseline, None)
        results.append(baseline)
    if args.random_init:
        stream = make_stream(args.minutes * 60)
        run, backend = random_e2b_run(args, stream)
        figures = analyse(run, stream)
        show(figures, baseline)
        results.append(figures)
        if backend.generated:
            per = [(t, n, s) for t, n, s in backend.generated]
            print(
                "model requests: "
                + ", ".join(f"{t:.1f} s audio → {n} tokens in {s:.0f} s" for t, n, s in per)
            )
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="subplug-live-bench-") as folder:
        model = args.model
        label = f"model {model}"
        if model is None:
            from subplug.testing.tiny import build_tiny_model

            model = str(build_tiny_model(Path(folder) / "tiny"))
            label = "tiny Gemma 3n (random weights)"
        command = [*base_command, "--model", model, "--device", args.device]
        if args.threads:
            command += ["--threads", str(args.threads)]
        stream = make_stream(args.minutes * 60)
        figures = analyse(run_engine(f"{label}, {args.device}", command, env, stream), stream)
    show(figures, baseline)
    results.append(figures)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
