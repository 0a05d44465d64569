"""Decode training audio to 16 kHz mono float32 with PyAV, from a file or from bytes.

Files go through :func:`subplug.media.load_pcm`, the engine's own decoder, so a clip is
heard in training exactly as ``subplug generate`` will hear it. Audio stored inside a
dataset (Hugging Face ``datasets`` keep the encoded file's bytes) is decoded with the
same resampler settings. ``datasets`` itself would need torchcodec, which subplug does
not depend on.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from subplug.types import SAMPLE_RATE


class AudioError(Exception):
    """A clip that cannot be decoded; the message says why (it becomes a bad-row reason)."""


def decode_file(path: Path, start: float | None = None, end: float | None = None) -> np.ndarray:
    """Samples of the file at ``path`` (optionally only ``start``–``end`` seconds).

    A whole file is decoded by the engine's decoder. A part of a file (a manifest row of
    a long recording) is decoded from a seek to just before ``start``, so a 30 s row of
    a two-hour film costs 30 s of decoding, not two hours.
    """
    from subplug import media
    from subplug.errors import SubplugError

    try:
        if start is None and end is None:
            return media.load_pcm(path)
        info = media.probe(path)
        stream = media.select_stream(info, None)
    except SubplugError as error:
        raise AudioError(error.message) from None
    return _decode_range(path, stream.index, start or 0.0, end)


#: Seek this far before the wanted start, so the resampler is settled when it begins.
_PREROLL = 0.5


def _decode_range(path: Path, stream_index: int, start: float, end: float | None) -> np.ndarray:
    import av

    pieces: list[np.ndarray] = []
    origin: float | None = None
    try:
        with av.open(str(path.absolute()), "r", metadata_errors="replace") as container:
            stream = container.streams.audio[stream_index]
            base = container.start_time / av.time_base if container.start_time else 0.0
            target = base + max(0.0, start - _PREROLL)
            if target > base and stream.time_base:
                container.seek(int(target / stream.time_base), stream=stream, backward=True)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(stream):
                if origin is None:
                    origin = (frame.time if frame.time is not None else base) - base
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                if end is not None and frame.time is not None and frame.time - base > end:
                    break
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as error:
        raise AudioError(f"not decodable audio ({error})") from None
    if not pieces or origin is None:
        raise AudioError(f"start {start:g} s is past the end of the audio")
    samples = np.concatenate(pieces).astype(np.float32, copy=False)
    first = int(round((start - origin) * SAMPLE_RATE))
    if first >= len(samples):
        raise AudioError(
            f"start {start:g} s is past the end of the audio "
            f"({origin + len(samples) / SAMPLE_RATE:.2f} s)"
        )
    last = len(samples) if end is None else int(round((end - origin) * SAMPLE_RATE))
    return samples[max(first, 0) : last]


def decode_bytes(data: bytes, start: float | None = None, end: float | None = None) -> np.ndarray:
    """Samples of an encoded audio file held in memory (WAV, FLAC, MP3, Opus…)."""
    import av

    if not data:
        raise AudioError("the audio is empty (0 bytes)")
    pieces: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), "r", metadata_errors="replace") as container:
            if not container.streams.audio:
                raise AudioError("the file holds no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as error:
        raise AudioError(f"not decodable audio ({error})") from None
    if not pieces:
        raise AudioError("no sound could be decoded")
    return _cut(np.concatenate(pieces).astype(np.float32, copy=False), start, end)


def _cut(samples: np.ndarray, start: float | None, end: float | None) -> np.ndarray:
    if start is None and end is None:
        return samples
    first = int(round((start or 0.0) * SAMPLE_RATE))
    last = len(samples) if end is None else int(round(end * SAMPLE_RATE))
    if first >= len(samples):
        raise AudioError(
            f"start {start:g} s is past the end of the audio ({len(samples) / SAMPLE_RATE:.2f} s)"
        )
    return samples[first:last]
