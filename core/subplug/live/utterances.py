"""Finding utterances in the stream: 16 kHz audio → silero-vad probabilities, one per
32 ms window → :class:`Utterance` s with their samples.

:class:`UtteranceDetector` is the pure state machine over probabilities (testable
without a model); :class:`PcmSegmenter` runs decoder, VAD and detector over PCM blocks
and keeps the sample history an utterance still needs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from subplug.live.options import LiveOptions
from subplug.live.pcm import PcmDecoder
from subplug.types import SAMPLE_RATE

if TYPE_CHECKING:
    import numpy as np

#: silero-vad's window at 16 kHz (32 ms).
WINDOW = 512


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


class PcmSegmenter:
    """Decoder + VAD + detector + sample history: PCM blocks in, utterances out.

    ``vad`` is a streaming silero-vad model of this segmenter's own
    (:func:`subplug.segment.new_streaming_vad`): its state follows this stream.
    """

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
        """Decode a block of whole frames read at ``arrived``; return the utterances it
        closed."""
        samples = self.decoder.feed(data)
        return self._push(samples, arrived)

    def flush(self) -> list[Utterance]:
        """End of input: the utterances still open or held by the decoder."""
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
