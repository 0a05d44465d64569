"""Streaming mode: raw PCM in, caption events (JSON lines) out. Used by the OBS filter.

::

    stdin ──reader thread──▶ input buffer (bounded; oldest audio dropped on overflow)
          ──segmenter thread: downmix, resample to 16 kHz, silero-vad──▶ utterances
          ──backlog (drop what is too old, merge what waits)──▶ model thread
          ──▶ one ``caption`` line per utterance on stdout

The producer is never blocked: the reader thread always drains stdin. When the model is
slower than speech, utterances queue in the backlog; the model thread then merges every
waiting utterance that fits into one request (``merged``) and drops those that ended
more than ``max_lag`` seconds before the newest input (``dropped``, ``dropped_seconds``),
so captions never fall ever further behind. Several merged groups that wait go to the
model together as one batch (up to the backend's batch size), each its own caption: on a
CPU a batch of 8 decodes in about 1.6 times the time of one, so a busy stream is worked
off several times faster than one group at a time. Times in events are on the input clock:
seconds of audio read since the stream started. The event contract is docs/live.md.

The pure parts (:class:`UtteranceDetector`, :func:`plan_work`) are testable without a
model or threads.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from subplug import JSONL_VERSION
from subplug.errors import SubplugError
from subplug.types import (
    SAMPLE_RATE,
    AudioChunk,
    Backend,
    BackendOptions,
    ChunkSpan,
    SpeechRegion,
)

if TYPE_CHECKING:
    import numpy as np

#: Sample formats ``subplug live`` reads: name → bytes per sample.
PCM_FORMATS: Mapping[str, int] = {"f32le": 4, "s16le": 2}
SOURCES = ("auto", "en", "mn")
#: silero-vad's window at 16 kHz (32 ms).
WINDOW = 512
#: Silence put between utterances merged into one request.
MERGE_GAP = 0.3
#: The model's input limit (seconds of audio per request).
MODEL_LIMIT = 30.0


@dataclass(frozen=True)
class LiveOptions:
    """Everything ``subplug live`` can be told. Checked by :func:`validate`."""

    format: str = "f32le"
    """Sample format of stdin: ``f32le`` (float) or ``s16le`` (16-bit integer)."""
    rate: int = 48_000
    """Sample rate of stdin in Hz (8 000 … 192 000)."""
    channels: int = 1
    """Interleaved channels on stdin (1 … 8); they are averaged to mono."""
    source: str = "auto"
    """Spoken language: ``en``, ``mn`` or ``auto`` (detected per utterance)."""
    backend: str = "gemma3n"
    backend_options: BackendOptions = field(default_factory=BackendOptions)
    vad_threshold: float = 0.5
    """silero-vad speech probability that starts an utterance."""
    min_silence: float = 0.4
    """Seconds of silence that end an utterance."""
    min_speech: float = 0.25
    """Utterances shorter than this are ignored (clicks, coughs)."""
    max_utterance: float = 8.0
    """An utterance longer than this is cut at its quietest point in the last second."""
    pad: float = 0.1
    """Seconds of audio kept before and after the speech of an utterance."""
    max_lag: float = 15.0
    """A waiting utterance that ended more than this many seconds before the newest input
    is dropped instead of captioned. ``0`` never drops anything: the reader then waits for
    the engine when its buffer is full (for files, not live streams)."""
    merge_limit: float = 24.0
    """Waiting utterances are merged into one request up to this many seconds of audio."""
    input_buffer: float = 30.0
    """Seconds of raw input held while the segmenter is busy; older audio is dropped
    (unless ``max_lag`` is 0)."""
    stats_interval: float = 10.0
    """A ``stats`` event every this many seconds of input (``0``: only at the end)."""


def validate(options: LiveOptions) -> LiveOptions:
    """Check ``options`` before any model is loaded; raise :class:`SubplugError`."""

    def bad(reference: str, message: str, hint: str) -> SubplugError:
        return SubplugError(reference, message, hint)

    if options.format not in PCM_FORMATS:
        raise bad(
            "bad-pcm-format",
            f"Unknown sample format {options.format!r}.",
            f"Use one of: {', '.join(PCM_FORMATS)}.",
        )
    if not 8_000 <= options.rate <= 192_000:
        raise bad(
            "bad-sample-rate",
            f"Sample rate {options.rate} Hz is out of range.",
            "Give --rate between 8000 and 192000 (OBS uses 48000).",
        )
    if not 1 <= options.channels <= 8:
        raise bad(
            "bad-channels",
            f"{options.channels} channels is out of range.",
            "Give --channels between 1 and 8.",
        )
    if options.source not in SOURCES:
        raise bad(
            "bad-source",
            f"Unknown source language {options.source!r}.",
            f"Use one of: {', '.join(SOURCES)}.",
        )
    if not 0.05 <= options.vad_threshold <= 0.95:
        raise bad("bad-vad-threshold", "--vad-threshold must be between 0.05 and 0.95.", "")
    if not 0.1 <= options.min_silence <= 5.0:
        raise bad("bad-min-silence", "--min-silence must be between 0.1 and 5 seconds.", "")
    if not 1.0 <= options.max_utterance <= MODEL_LIMIT:
        raise bad(
            "bad-max-utterance",
            f"--max-utterance must be between 1 and {MODEL_LIMIT:g} seconds.",
            "The model reads at most 30 s of audio per request.",
        )
    if not options.max_utterance <= options.merge_limit <= MODEL_LIMIT:
        raise bad(
            "bad-merge-limit",
            f"--merge-limit must be between --max-utterance and {MODEL_LIMIT:g} seconds.",
            "",
        )
    if options.max_lag < 0:
        raise bad("bad-max-lag", "--max-lag cannot be negative.", "Use 0 to never drop audio.")
    if not 1.0 <= options.input_buffer <= 600.0:
        raise bad("bad-input-buffer", "--input-buffer must be between 1 and 600 s.", "")
    if options.stats_interval < 0:
        raise bad("bad-stats-interval", "--stats-interval cannot be negative.", "")
    return options


# ---------------------------------------------------------------- utterance finding


@dataclass(frozen=True)
class VadSettings:
    """The detector's settings in VAD windows (32 ms each)."""

    threshold: float = 0.5
    min_silence: int = 12
    min_speech: int = 8
    max_length: int = 250
    cut_search: int = 31
    """Windows at the end of an over-long utterance searched for the quietest cut point."""

    @property
    def neg_threshold(self) -> float:
        return max(self.threshold - 0.15, 0.01)

    @classmethod
    def from_options(cls, options: LiveOptions) -> VadSettings:
        per_second = SAMPLE_RATE / WINDOW
        max_length = max(2, int(options.max_utterance * per_second))
        return cls(
            threshold=options.vad_threshold,
            min_silence=max(1, round(options.min_silence * per_second)),
            min_speech=max(1, round(options.min_speech * per_second)),
            max_length=max_length,
            cut_search=min(max(1, round(per_second)), max_length // 2),
        )


class UtteranceDetector:
    """Turns speech probabilities, one per VAD window, into utterances.

    Pure state machine: :meth:`push` takes the next window's probability and returns
    the utterances it closed as ``(first_window, end_window)`` (end exclusive). Speech
    starts at a window with probability ``≥ threshold`` and goes on while windows stay
    ``≥ threshold − 0.15``; ``min_silence`` quieter windows in a row end it. An
    utterance reaching ``max_length`` windows is cut at its quietest window among the
    last ``cut_search`` and speech continues from there. Utterances shorter than
    ``min_speech`` windows are discarded.
    """

    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self.window = 0
        self._start: int | None = None
        self._last_speech = 0
        self._silence = 0
        self._probs: list[float] = []

    @property
    def in_speech(self) -> bool:
        return self._start is not None

    @property
    def speech_start(self) -> int | None:
        """First window of the utterance in progress, if any."""
        return self._start

    def push(self, prob: float) -> list[tuple[int, int]]:
        """Feed the next window's speech probability; return the utterances it closed."""
        s = self.settings
        i = self.window
        self.window += 1
        closed: list[tuple[int, int]] = []
        if self._start is None:
            if prob >= s.threshold:
                self._start, self._last_speech, self._silence = i, i, 0
                self._probs = [prob]
            return closed
        self._probs.append(prob)
        if prob >= s.neg_threshold:
            self._last_speech, self._silence = i, 0
        else:
            self._silence += 1
            if self._silence >= s.min_silence:
                closed.extend(self._close(self._last_speech + 1))
                return closed
        if i + 1 - self._start >= s.max_length:
            closed.extend(self._cut())
        return closed

    def flush(self) -> list[tuple[int, int]]:
        """End of input: close the utterance in progress."""
        if self._start is None:
            return []
        return self._close(self._last_speech + 1)

    def _close(self, end: int) -> list[tuple[int, int]]:
        start = self._start
        assert start is not None
        self._start = None
        self._probs = []
        if end - start >= self.settings.min_speech:
            return [(start, end)]
        return []

    def _cut(self) -> list[tuple[int, int]]:
        start = self._start
        assert start is not None
        s = self.settings
        length = len(self._probs)
        search = range(length - s.cut_search, length)
        quietest = min(search, key=lambda k: (self._probs[k], -k))
        cut = start + quietest + 1 if quietest < length - 1 else start + length
        kept = self._probs[cut - start :]
        closed = [(start, cut)]
        if kept and max(kept) >= s.neg_threshold:
            self._start, self._probs = cut, kept
            last = max(k for k, p in enumerate(kept) if p >= s.neg_threshold)
            self._last_speech = cut + last
            self._silence = len(kept) - 1 - last
        else:
            self._start, self._probs, self._silence = None, [], 0
        return closed


# ------------------------------------------------------------------------ backlog


@dataclass(frozen=True, eq=False)
class Utterance:
    """A stretch of speech found in the stream, with its 16 kHz mono samples."""

    start: float
    end: float
    samples: np.ndarray = field(repr=False)
    arrived: float = 0.0
    """``time.monotonic()`` when its last sample was read from stdin."""

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class WorkPlan:
    """What the model thread does next: drop some utterances, caption some groups."""

    dropped: tuple[Utterance, ...]
    groups: tuple[tuple[Utterance, ...], ...]
    """Each merged into one request (a caption); all sent to the model as one batch.
    Empty when only drops were due."""
    rest: tuple[Utterance, ...]

    @property
    def batch(self) -> tuple[Utterance, ...]:
        """The first group (the one-group plan of earlier versions)."""
        return self.groups[0] if self.groups else ()


def plan_work(
    waiting: Sequence[Utterance],
    head: float,
    *,
    max_lag: float,
    merge_limit: float,
    max_groups: int = 1,
) -> WorkPlan:
    """The backlog policy (pure).

    1. Drop every waiting utterance that ended more than ``max_lag`` seconds before
       ``head`` (the input clock of the newest audio read); ``max_lag == 0`` never drops.
    2. Take the oldest remaining utterance and merge the following ones into it while the
       merged audio (their durations plus :data:`MERGE_GAP` between them) stays within
       ``merge_limit`` seconds: a group. Form up to ``max_groups`` groups that way, in
       order.
    """
    if max_lag > 0:
        dropped = tuple(u for u in waiting if head - u.end > max_lag)
        kept = [u for u in waiting if head - u.end <= max_lag]
    else:
        dropped, kept = (), list(waiting)
    groups: list[tuple[Utterance, ...]] = []
    taken = 0
    while taken < len(kept) and len(groups) < max(1, max_groups):
        group: list[Utterance] = []
        total = 0.0
        for utterance in kept[taken:]:
            extra = utterance.duration + (MERGE_GAP if group else 0.0)
            if group and total + extra > merge_limit:
                break
            group.append(utterance)
            total += extra
        groups.append(tuple(group))
        taken += len(group)
    return WorkPlan(dropped, tuple(groups), tuple(kept[taken:]))


def merge_chunk(batch: Sequence[Utterance], index: int) -> AudioChunk:
    """One model input for ``batch``: the utterances' audio with short silences between."""
    import numpy as np

    gap = np.zeros(int(MERGE_GAP * SAMPLE_RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    for k, utterance in enumerate(batch):
        if k:
            parts.append(gap)
        parts.append(utterance.samples.astype(np.float32, copy=False))
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    regions = tuple(SpeechRegion(u.start, u.end) for u in batch)
    span = ChunkSpan(index, batch[0].start, batch[-1].end, regions)
    return AudioChunk(span, samples)


# -------------------------------------------------------------------------- input


class PcmDecoder:
    """Raw interleaved PCM bytes → 16 kHz mono float32, in a stream.

    Channels are averaged, then PyAV's resampler (libswresample) converts the rate,
    keeping its filter state across blocks. Blocks must hold whole frames.
    """

    def __init__(self, fmt: str, rate: int, channels: int) -> None:
        import av

        self.fmt, self.rate, self.channels = fmt, rate, channels
        self.frame_bytes = PCM_FORMATS[fmt] * channels
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def feed(self, block: bytes) -> np.ndarray:
        """Convert whole frames; return the 16 kHz samples ready so far."""
        import numpy as np

        if self.fmt == "f32le":
            data = np.frombuffer(block, dtype="<f4")
        else:
            data = np.frombuffer(block, dtype="<i2").astype(np.float32) / 32768.0
        mono = data.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
        mono = np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0)
        return self._resample(np.ascontiguousarray(mono, dtype=np.float32))

    def flush(self) -> np.ndarray:
        """End of input: the samples the resampler still holds."""
        return self._resample(None)

    def _resample(self, mono: np.ndarray | None) -> np.ndarray:
        import av
        import numpy as np

        if mono is not None and self.rate == SAMPLE_RATE:
            return mono
        frame = None
        if mono is not None:
            if not len(mono):
                return mono
            frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
            frame.sample_rate = self.rate
        out = [f.to_ndarray()[0] for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


@dataclass(frozen=True)
class _Block:
    first_frame: int
    data: bytes
    arrived: float


class InputBuffer:
    """Bounded queue between the reader thread and the segmenter.

    With ``drop`` (live streams), :meth:`put` never blocks: past ``max_frames`` the oldest
    blocks are dropped (the segmenter sees the gap from the frame numbers and reports
    it). Without it (``--max-lag 0``, files), :meth:`put` waits for room instead.
    """

    def __init__(self, max_frames: int, frame_bytes: int, *, drop: bool = True) -> None:
        self.max_frames = max_frames
        self.frame_bytes = frame_bytes
        self.drop = drop
        self._blocks: deque[_Block] = deque()
        self._frames = 0
        self._closed = False
        self._cond = threading.Condition()

    def put(self, block: _Block) -> None:
        frames = len(block.data) // self.frame_bytes
        with self._cond:
            while not self.drop and self._blocks and self._frames + frames > self.max_frames:
                if self._closed:
                    break
                self._cond.wait(0.25)
            if self._closed:
                return
            self._blocks.append(block)
            self._frames += frames
            while self._frames > self.max_frames and len(self._blocks) > 1:
                old = self._blocks.popleft()
                self._frames -= len(old.data) // self.frame_bytes
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, timeout: float) -> list[_Block] | None:
        """Every waiting block (possibly none after ``timeout``); ``None`` once closed
        and empty."""
        with self._cond:
            if not self._blocks and not self._closed:
                self._cond.wait(timeout)
            if not self._blocks:
                return None if self._closed else []
            blocks = list(self._blocks)
            self._blocks.clear()
            self._frames = 0
            self._cond.notify_all()
            return blocks


# --------------------------------------------------------------------------- stats


@dataclass
class LiveStats:
    """Counters reported in ``stats`` events (guarded by the session's lock)."""

    input_seconds: float = 0.0
    utterances: int = 0
    captions: int = 0
    merged: int = 0
    dropped: int = 0
    dropped_seconds: float = 0.0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def as_event(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "input_seconds": round(self.input_seconds, 3),
            "utterances": self.utterances,
            "captions": self.captions,
            "merged": self.merged,
            "dropped": self.dropped,
            "dropped_seconds": round(self.dropped_seconds, 3),
            "errors": self.errors,
            "latency_median": round(statistics.median(lat), 3) if lat else None,
            "latency_max": round(max(lat), 3) if lat else None,
        }


# ------------------------------------------------------------------------- session


EventWriter = Callable[[dict[str, Any]], None]


class JsonLines:
    """Writes one JSON object per line, flushed, from any thread."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.broken = False
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        line = {"v": JSONL_VERSION, "event": event.pop("event")}
        line["time"] = round(time.monotonic() - self.started, 3)
        line.update(event)
        text = json.dumps(line, ensure_ascii=False) + "\n"
        with self._lock:
            if self.broken:
                return
            try:
                self.stream.write(text)
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.broken = True


class LiveSession:
    """One ``subplug live`` run: threads, backlog, events. See the module docstring."""

    def __init__(
        self,
        options: LiveOptions,
        stdin: IO[bytes],
        emit: EventWriter,
        *,
        backend: Backend | None = None,
    ) -> None:
        self.options = validate(options)
        self.stdin = stdin
        self.emit = emit
        self.stats = LiveStats()
        self._backend = backend
        self._own_backend = backend is None
        self._lock = threading.Condition()
        self._waiting: list[Utterance] = []
        self._busy: Utterance | None = None
        self._segmenting_done = False
        self._head = 0.0
        self._stop = threading.Event()
        self._crashed = False
        self._frame_bytes = PCM_FORMATS[options.format] * options.channels
        self._input = InputBuffer(
            max(1, int(options.input_buffer * options.rate)),
            self._frame_bytes,
            drop=options.max_lag > 0,
        )
        self._next_stats = options.stats_interval or float("inf")
        self._caption_index = 0

    # ----------------------------------------------------------------- control

    def stop(self) -> None:
        """Finish early (SIGTERM): stop reading, caption what was heard, then return."""
        self._stop.set()
        self._input.close()

    def run(self) -> int:
        """Run until end of input or :meth:`stop`; return the exit code."""
        reader = threading.Thread(target=self._read, name="subplug-live-reader", daemon=True)
        reader.start()  # first, so stdin is drained while torch and the models load
        segmenter = threading.Thread(
            target=self._segment, args=(_load_vad(),), name="subplug-live-vad", daemon=True
        )
        segmenter.start()
        try:
            backend = self._load_backend()
        except SubplugError as error:
            self.stop()
            self._error(error)
            raise
        self.emit(
            {
                "event": "ready",
                "backend": self.options.backend,
                "model": dict(backend.describe()),
                "source": self.options.source,
                "input": {
                    "format": self.options.format,
                    "rate": self.options.rate,
                    "channels": self.options.channels,
                },
            }
        )
        try:
            code = self._work(backend)
        finally:
            segmenter.join()
            if self._own_backend:
                backend.close()
        if self._crashed:
            code = 1
        with self._lock:
            final = self.stats.as_event()
        self.emit({"event": "stats", "final": True, "lag": 0.0, "backlog": 0, **final})
        return code

    # ---------------------------------------------------------------- threads

    def _read(self) -> None:
        """Reader thread: drain stdin as fast as it comes, never waiting on anyone."""
        read = _raw_reader(self.stdin)
        leftover = b""
        frames = 0
        try:
            while not self._stop.is_set():
                data = read(1 << 16)
                if not data:
                    break
                data = leftover + data
                whole = len(data) - len(data) % self._frame_bytes
                leftover = data[whole:]
                if whole:
                    self._input.put(_Block(frames, data[:whole], time.monotonic()))
                    frames += whole // self._frame_bytes
        except (OSError, ValueError):
            pass
        finally:
            self._input.close()

    def _segment(self, vad: Any) -> None:
        """Segmenter thread: decode, VAD, cut utterances, hand them to the backlog."""
        import torch

        # silero-vad runs one 32 ms window at a time: tiny operations that a second
        # thread only slows down (on a busy 2-core machine, 2 threads made it slower
        # than real time). With OpenMP this setting belongs to this thread alone, so
        # the model keeps its threads.
        torch.set_num_threads(1)
        try:
            segmenter = _Segmenter(self.options, vad)
            expected = 0
            while True:
                blocks = self._input.take(0.25)
                if blocks is None:
                    break
                for block in blocks:
                    if block.first_frame > expected:
                        skipped = block.first_frame - expected
                        start = expected / self.options.rate
                        for utterance in segmenter.gap(skipped / self.options.rate):
                            self._offer(utterance)
                        self._report_drop(start, start + skipped / self.options.rate, "input")
                    expected = block.first_frame + len(block.data) // self._frame_bytes
                    for utterance in segmenter.feed(block.data, block.arrived):
                        self._offer(utterance)
                    self._advance(expected / self.options.rate)
            for utterance in segmenter.flush():
                self._offer(utterance)
        except Exception as exc:  # a bug: report it as an event, then end the session
            self._crashed = True
            self._error(
                SubplugError(
                    "live-crashed", f"Audio processing failed: {type(exc).__name__}: {exc}"
                )
            )
            self.stop()
            raise
        finally:
            with self._lock:
                self._segmenting_done = True
                self._lock.notify_all()

    def _work(self, backend: Backend) -> int:
        """Model thread (the caller's): caption utterances as the backlog policy says."""
        from subplug.transcribe import batch_size_of

        failures = 0
        groups = batch_size_of(backend, self.options.backend_options.batch_size)
        while True:
            with self._lock:
                while not self._waiting and not self._segmenting_done:
                    self._lock.wait(0.25)
                if not self._waiting and self._segmenting_done:
                    return 0
                plan = plan_work(
                    self._waiting,
                    self._head,
                    max_lag=self.options.max_lag,
                    merge_limit=self.options.merge_limit,
                    max_groups=groups,
                )
                self._waiting = list(plan.rest)
                self._busy = plan.batch[0] if plan.batch else None
            for utterance in plan.dropped:
                self._report_drop(utterance.start, utterance.end, "backlog")
            if not plan.groups:
                continue
            try:
                self._caption(backend, plan.groups)
                failures = 0
            except SubplugError as error:
                failures += 1
                self._error(error)
            except Exception as exc:  # a failing model must not stop the captions
                failures += 1
                self._error(
                    SubplugError(
                        "backend-failed",
                        f"The model failed on {plan.groups[0][0].start:.1f}–"
                        f"{plan.groups[-1][-1].end:.1f} s: {type(exc).__name__}: {exc}",
                        "Run 'subplug doctor'; the stream goes on with the next utterance.",
                    )
                )
            finally:
                with self._lock:
                    self._busy = None
            if failures >= 3:
                self.stop()
                return 1

    # ---------------------------------------------------------------- helpers

    def _load_backend(self) -> Backend:
        if self._backend is not None:
            return self._backend
        from subplug import plugins

        factories = plugins.backends()
        if self.options.backend not in factories:
            raise SubplugError(
                "unknown-backend",
                f"No backend named {self.options.backend!r}.",
                f"Installed backends: {plugins.names(factories) or 'none'}.",
            )
        self._backend = factories[self.options.backend](self.options.backend_options)
        return self._backend

    def _offer(self, utterance: Utterance) -> None:
        with self._lock:
            self._waiting.append(utterance)
            self.stats.utterances += 1
            self._lock.notify_all()

    def _advance(self, head: float) -> None:
        with self._lock:
            self._head = head
            self.stats.input_seconds = head
            due = head >= self._next_stats
            if due:
                self._next_stats += self.options.stats_interval
                waiting = list(self._waiting) + ([self._busy] if self._busy else [])
                oldest = min((u.start for u in waiting), default=head)
                event = {
                    "event": "stats",
                    "final": False,
                    "lag": round(max(0.0, head - oldest), 3),
                    "backlog": len(self._waiting),
                    **self.stats.as_event(),
                }
        if due:
            self.emit(event)

    def _caption(self, backend: Backend, groups: Sequence[Sequence[Utterance]]) -> None:
        """Caption ``groups`` (each merged into one request) in one batched model call;
        a caption line per group, in order."""
        from subplug.transcribe import transcribe

        chunks = []
        for group in groups:
            chunks.append(merge_chunk(group, self._caption_index))
            self._caption_index += 1
        transcripts = transcribe(backend, chunks, self.options.source, ("en", "mn"))
        for group, chunk, transcript in zip(groups, chunks, transcripts, strict=True):
            latency = time.monotonic() - group[-1].arrived
            with self._lock:
                self.stats.captions += 1
                self.stats.merged += len(group) - 1
                self.stats.latencies.append(latency)
            self.emit(
                {
                    "event": "caption",
                    "index": chunk.index,
                    "start": round(group[0].start, 3),
                    "end": round(group[-1].end, 3),
                    "en": transcript.texts.get("en"),
                    "mn": transcript.texts.get("mn"),
                    "source_lang": transcript.source_lang,
                    "latency": round(latency, 3),
                    "utterances": len(group),
                }
            )

    def _report_drop(self, start: float, end: float, reason: str) -> None:
        with self._lock:
            self.stats.dropped += 1
            self.stats.dropped_seconds += end - start
            totals = {
                "dropped": self.stats.dropped,
                "dropped_seconds": round(self.stats.dropped_seconds, 3),
            }
        self.emit(
            {
                "event": "dropped",
                "reason": reason,
                "start": round(start, 3),
                "end": round(end, 3),
                "seconds": round(end - start, 3),
                **totals,
            }
        )

    def _error(self, error: SubplugError) -> None:
        with self._lock:
            self.stats.errors += 1
        self.emit({"event": "error", "error": error.to_dict()})


class _Segmenter:
    """Decoder + VAD + detector + sample history: PCM blocks in, utterances out."""

    def __init__(self, options: LiveOptions, vad: Any) -> None:
        import numpy as np

        self.options = options
        self.vad = vad
        self.settings = VadSettings.from_options(options)
        self.pad = int(options.pad * SAMPLE_RATE)
        self._new_stream()
        self.offset = 0  # 16 kHz sample index of window 0 of the current detector
        self.history = np.zeros(0, dtype=np.float32)
        self.history_start = 0  # 16 kHz sample index of history[0]
        self.pending = np.zeros(0, dtype=np.float32)
        self.last_end = 0
        self.arrivals: deque[tuple[int, float]] = deque()

    def _new_stream(self) -> None:
        self.decoder = PcmDecoder(self.options.format, self.options.rate, self.options.channels)
        self.detector = UtteranceDetector(self.settings)
        self.vad.reset_states()

    @property
    def position(self) -> int:
        """16 kHz samples decoded so far (the end of the history)."""
        return self.history_start + len(self.history)

    def feed(self, data: bytes, arrived: float) -> list[Utterance]:
        samples = self.decoder.feed(data)
        return self._push(samples, arrived)

    def flush(self) -> list[Utterance]:
        found = self._push(self.decoder.flush(), time.monotonic())
        found += self._finish(self.detector.flush(), final=True)
        return found

    def gap(self, seconds: float) -> list[Utterance]:
        """Audio was dropped before reaching us: close what was heard, skip the gap."""
        import numpy as np

        found = self.flush()
        skip = int(round(seconds * SAMPLE_RATE))
        end = self.position + len(self.pending) + skip
        self.history = np.zeros(0, dtype=np.float32)
        self.history_start = end
        self.pending = np.zeros(0, dtype=np.float32)
        self.offset = end
        self.last_end = end
        self._new_stream()
        return found

    def _push(self, samples: np.ndarray, arrived: float) -> list[Utterance]:
        import numpy as np
        import torch

        if not len(samples):
            return []
        self.history = np.concatenate([self.history, samples])
        self.arrivals.append((self.position, arrived))
        data = np.concatenate([self.pending, samples]) if len(self.pending) else samples
        whole = len(data) - len(data) % WINDOW
        self.pending = data[whole:]
        found: list[Utterance] = []
        if whole:
            windows = torch.from_numpy(np.ascontiguousarray(data[:whole])).view(-1, WINDOW)
            with torch.no_grad():
                for window in windows:
                    prob = float(self.vad(window, SAMPLE_RATE).item())
                    found += self._finish(self.detector.push(prob), final=False)
        self._trim()
        return found

    def _finish(self, spans: Sequence[tuple[int, int]], *, final: bool) -> list[Utterance]:
        found = []
        for first, end_window in spans:
            start = max(self.offset + first * WINDOW - self.pad, self.last_end, self.history_start)
            end = self.offset + end_window * WINDOW
            cut = self.detector.speech_start == end_window  # cut mid-speech: no padding
            if not cut:
                end += self.pad
            end = min(end, self.position)
            if end <= start:
                continue
            samples = self.history[start - self.history_start : end - self.history_start].copy()
            self.last_end = end
            found.append(
                Utterance(start / SAMPLE_RATE, end / SAMPLE_RATE, samples, self._arrival(end))
            )
        return found

    def _arrival(self, sample: int) -> float:
        for end, arrived in self.arrivals:
            if end >= sample:
                return arrived
        return time.monotonic()

    def _trim(self) -> None:
        """Keep only the history an utterance may still need."""
        first = self.detector.speech_start
        if first is not None:
            keep = self.offset + first * WINDOW - self.pad
        else:
            keep = self.position - len(self.pending) - self.pad - WINDOW
        keep = max(keep, self.history_start)
        if keep - self.history_start > SAMPLE_RATE:
            self.history = self.history[keep - self.history_start :]
            self.history_start = keep
        while len(self.arrivals) > 1 and self.arrivals[0][0] < self.history_start:
            self.arrivals.popleft()


def _load_vad() -> Any:
    """silero-vad's streaming model. Its import sets torch to one thread: undo that so the
    backend keeps its threads."""
    import torch

    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad

    model = load_silero_vad()
    torch.set_num_threads(threads)
    return model


def _raw_reader(stream: IO[bytes]) -> Callable[[int], bytes]:
    """A read function that returns what is available (≥ 1 byte, ``b""`` at EOF).

    Reads the file descriptor directly when there is one, so a reader thread blocked in
    it never holds the lock of ``sys.stdin.buffer`` at interpreter shutdown.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        read1 = getattr(stream, "read1", None)
        return read1 if read1 is not None else stream.read
    return lambda size: os.read(fd, size)


@contextlib.contextmanager
def _sigterm_stops(session: LiveSession) -> Iterator[None]:
    """SIGTERM (and SIGINT) → a clean stop that captions what was heard. A second
    signal exits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            os._exit(128 + signum)
        received.append(signum)
        session.stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_live(
    options: LiveOptions,
    stdin: IO[bytes],
    stdout: IO[str],
    *,
    backend: Backend | None = None,
    handle_signals: bool = True,
) -> int:
    """Run a live session from ``stdin`` to ``stdout`` (JSON lines); return the exit code.

    A :class:`SubplugError` (bad options, unknown backend, model not found) is written as
    an ``error`` event and re-raised for the command line to print. ``backend`` injects an
    already-loaded backend (tests, benches); it is not closed.
    """
    emit = JsonLines(stdout)
    try:
        session = LiveSession(options, stdin, emit, backend=backend)
    except SubplugError as error:
        emit({"event": "error", "error": error.to_dict()})
        raise
    if not handle_signals:
        return session.run()
    with _sigterm_stops(session):
        return session.run()
