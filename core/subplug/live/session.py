"""One ``subplug live`` run: the threads, the backlog between them, and the events.

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
model together as one batch (up to the backend's batch size), each its own caption.
Times in events are on the input clock: seconds of audio read since the stream started.
The event contract is docs/live.md.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

from subplug.errors import SubplugError
from subplug.jsonl import JsonLinesWriter, header
from subplug.live.backlog import merge_chunk, plan_work
from subplug.live.options import LiveOptions, validate
from subplug.live.pcm import PCM_FORMATS, InputBuffer, PcmBlock
from subplug.live.utterances import PcmSegmenter, Utterance
from subplug.types import Backend


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


EventWriter = Callable[[dict[str, Any]], None]


#: Exit code when the reader of the events went away (as a process killed by SIGPIPE).
OUTPUT_GONE = 141


class JsonLines:
    """The live engine's event lines (:class:`subplug.jsonl.JsonLinesWriter`), timed
    from the session's start."""

    def __init__(self, stream: IO[str]) -> None:
        self.writer = JsonLinesWriter(stream)
        self.started = time.monotonic()

    @property
    def broken(self) -> bool:
        """The reader has gone."""
        return self.writer.broken

    def __call__(self, event: dict[str, Any]) -> None:
        name = event.pop("event")
        self.writer.write({**header(name, time.monotonic() - self.started), **event})


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
        self._emit = emit
        self.stats = LiveStats()
        self._output_gone = False
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

    def emit(self, event: dict[str, Any]) -> None:
        """Write one event; when the reader of our output has gone (a closed pipe), stop
        at once: there is nobody to caption for."""
        self._emit(event)
        if getattr(self._emit, "broken", False) and not self._output_gone:
            self._output_gone = True
            self.stop()
            with self._lock:
                self._waiting.clear()
                self._lock.notify_all()

    def run(self) -> int:
        """Run until end of input or :meth:`stop`; return the exit code."""
        from subplug.segment import new_streaming_vad

        reader = threading.Thread(target=self._read, name="subplug-live-reader", daemon=True)
        reader.start()  # first, so stdin is drained while torch and the models load
        segmenter = threading.Thread(
            target=self._segment, args=(new_streaming_vad(),), name="subplug-live-vad", daemon=True
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
        if self._output_gone:
            return OUTPUT_GONE
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
                    self._input.put(PcmBlock(frames, data[:whole], time.monotonic()))
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
            segmenter = PcmSegmenter(self.options, vad)
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
                while not self._waiting and not self._segmenting_done and not self._output_gone:
                    self._lock.wait(0.25)
                if self._output_gone:
                    return OUTPUT_GONE
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
        if self._backend is None:
            from subplug import plugins

            self._backend = plugins.load_backend(self.options.backend, self.options.backend_options)
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
