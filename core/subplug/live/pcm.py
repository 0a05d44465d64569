"""Raw PCM input of ``subplug live``: the sample formats it reads, the decoder to 16 kHz
mono, and the bounded buffer between the reader thread and the segmenter."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from subplug.types import SAMPLE_RATE

if TYPE_CHECKING:
    import numpy as np

#: Sample formats ``subplug live`` reads: name → bytes per sample.
PCM_FORMATS: Mapping[str, int] = {"f32le": 4, "s16le": 2}


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
class PcmBlock:
    """Whole frames read from stdin, as the reader thread hands them on."""

    first_frame: int
    """Frame number (frames read since the stream started) of the block's first frame."""
    data: bytes
    arrived: float
    """``time.monotonic()`` when it was read."""


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
        self._blocks: deque[PcmBlock] = deque()
        self._frames = 0
        self._closed = False
        self._cond = threading.Condition()

    def put(self, block: PcmBlock) -> None:
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

    def take(self, timeout: float) -> list[PcmBlock] | None:
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
