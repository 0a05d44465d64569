"""Probe media files and decode their sound to 16 kHz mono float32, with PyAV.

* :func:`probe` says what a file holds (:class:`~subplug.types.MediaInfo`).
* :func:`select_stream` picks the audio stream ``--audio-stream`` names (or the default).
* :func:`iter_pcm` streams the sound in blocks; :func:`load_pcm` fills one array.

Every mistake a user can make with the file itself (missing, a folder, empty, not media,
no sound, a stream that does not exist, unreadable) is found before decoding starts and
raised as one :class:`~subplug.errors.SubplugError`. Samples keep the media's clock: a
stream that starts late or loses packets is padded with silence, so sample ``n`` is
always at ``n / 16000`` seconds from the start of the file.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from subplug.errors import SubplugError
from subplug.types import SAMPLE_RATE, AudioStreamInfo, MediaInfo

if TYPE_CHECKING:
    import av.audio.stream
    import av.container

log = logging.getLogger(__name__)

#: Timestamp jumps larger than this (seconds) are filled with silence.
GAP_TOLERANCE = 0.04

_PROGRESS_INTERVAL = 0.25
_SUBTITLE_FORMATS = frozenset({"srt", "ass", "webvtt", "microdvd", "subviewer", "sami", "lrc"})
_PICTURE_FORMATS = frozenset({"image2", "gif", "apng", "webp_pipe"})


class MediaWarning(UserWarning):
    """Decoding went on past damage in the file (skipped packets, a cut-off end)."""


def probe(path: Path | str) -> MediaInfo:
    """Open ``path`` and describe its container and audio streams; decode nothing.

    Raises :class:`SubplugError` (``media-not-found``, ``media-is-directory``,
    ``media-empty``, ``media-permission-denied``, ``media-unreadable``) when the file
    cannot be read as media. A file without sound is described, not refused:
    :func:`select_stream` refuses it.
    """
    path = Path(path)
    with _open(path) as container:
        return _describe(path, container)


def select_stream(info: MediaInfo, index: int | None) -> AudioStreamInfo:
    """The audio stream numbered ``index`` among the audio streams of ``info``.

    ``None`` picks the stream marked default in the file, else the first one. Raises
    ``media-no-audio`` when there is no audio stream and ``audio-stream-out-of-range``
    (listing the streams there are) when ``index`` names none.
    """
    streams = info.audio_streams
    if not streams:
        if info.container in _PICTURE_FORMATS or info.container.endswith("_pipe"):
            hint = (
                "It is a still picture. Subtitles are made from sound: give a video or audio file."
            )
        elif info.has_video:
            hint = (
                "The file has only video. Subtitles are made from the sound: use the file "
                "that carries the soundtrack."
            )
        elif info.container in _SUBTITLE_FORMATS:
            hint = "It is a subtitle file. Give the video or audio file it belongs to."
        else:
            hint = "Subtitles are made from the sound: use a file with an audio track."
        raise SubplugError(
            "media-no-audio",
            f"{info.path.name} has no audio stream.",
            hint,
            context=str(info.path),
        )
    if index is None:
        return next((s for s in streams if s.default), streams[0])
    if not 0 <= index < len(streams):
        available = "; ".join(describe_stream(s) for s in streams)
        count = f"{len(streams)} audio stream" + ("s" if len(streams) != 1 else "")
        raise SubplugError(
            "audio-stream-out-of-range",
            f"Audio stream {index} does not exist: {info.path.name} has {count} "
            f"(numbered 0 to {len(streams) - 1}).",
            f"Choose one with --audio-stream N. Available: {available}.",
            context=str(info.path),
        )
    return streams[index]


def describe_stream(stream: AudioStreamInfo) -> str:
    """One line for a person: ``1: aac, mon "Commentary", stereo, 48 kHz (default)``."""
    text = f"{stream.index}: {stream.codec}"
    if stream.language:
        text += f", {stream.language}"
    if stream.title:
        text += f' "{stream.title}"'
    text += f", {stream.layout}, {stream.sample_rate / 1000:g} kHz"
    if stream.default:
        text += " (default)"
    return text


def iter_pcm(
    path: Path | str, stream: int | None = None, *, block_seconds: float = 30.0
) -> Iterator[np.ndarray]:
    """Decode one audio stream of ``path`` to 16 kHz mono float32, ``block_seconds`` at a time.

    The file is checked (and the stream chosen as :func:`select_stream` does) when this
    is called, so bad input raises here, before any block. Blocks are new arrays of
    exactly ``block_seconds`` of audio except the last. Damaged packets are skipped with
    a :class:`MediaWarning` (their time filled with silence); if nothing at all can be
    decoded, ``media-unreadable`` is raised.
    """
    if not block_seconds > 0:
        raise ValueError(f"block_seconds must be positive, got {block_seconds}")
    path = Path(path)
    container, av_stream, expected = _open_stream(path, stream)
    block = max(1, round(block_seconds * SAMPLE_RATE))
    return _blocks(_pieces(container, av_stream, path, expected), block)


def load_pcm(
    path: Path | str,
    stream: int | None = None,
    *,
    on_progress: Callable[[float, float | None], None] | None = None,
) -> np.ndarray:
    """Decode one audio stream of ``path`` into a single 16 kHz mono float32 array.

    The array is allocated once from the probed duration and filled in place (grown
    geometrically when the file is longer than it says, trimmed at the end), so a
    three-hour film costs one copy of its audio (~0.7 GB), never two.
    ``on_progress(seconds_decoded, total_seconds_or_None)`` is called a few times a
    second and once at the end. Errors as for :func:`iter_pcm`.
    """
    path = Path(path)
    container, av_stream, expected = _open_stream(path, stream)
    capacity = int(expected * SAMPLE_RATE) + SAMPLE_RATE if expected else 60 * SAMPLE_RATE
    samples = np.empty(capacity, dtype=np.float32)
    filled = 0
    last_report = time.monotonic()
    for piece in _pieces(container, av_stream, path, expected):
        end = filled + len(piece)
        if end > len(samples):
            samples.resize(max(end, len(samples) * 3 // 2), refcheck=False)
        samples[filled:end] = piece
        filled = end
        if on_progress is not None and time.monotonic() - last_report >= _PROGRESS_INTERVAL:
            on_progress(filled / SAMPLE_RATE, expected)
            last_report = time.monotonic()
    samples.resize(filled, refcheck=False)
    if on_progress is not None:
        on_progress(filled / SAMPLE_RATE, expected)
    return samples


# --------------------------------------------------------------------------- opening


def _check_file(path: Path) -> None:
    """Refuse what is plainly not a readable media file, with the reason."""
    where = str(path)
    try:
        with path.open("rb") as handle:
            first = handle.read(1)
    except FileNotFoundError:
        folder = path.parent
        hint = (
            f"Check the name; the folder {folder} does not exist either."
            if not folder.exists()
            else "Check the name and the folder (quote paths with spaces)."
        )
        raise SubplugError(
            "media-not-found", f"No such file: {path}", hint, context=where
        ) from None
    except IsADirectoryError:
        raise SubplugError(
            "media-is-directory",
            f"{path} is a folder, not a media file.",
            "Give a video or audio file inside it, or subtitle every media file in it "
            "with: subplug generate --recursive FOLDER",
            context=where,
        ) from None
    except PermissionError:
        raise SubplugError(
            "media-permission-denied",
            f"Permission denied reading {path}.",
            "Make the file readable for your user (for example: chmod u+r FILE).",
            context=where,
        ) from None
    except OSError as error:
        raise SubplugError(
            "media-unreadable",
            f"Cannot read {path}: {error.strerror or error}.",
            "Check that the disk or network share holding it is available.",
            context=where,
        ) from None
    if not first:
        raise SubplugError(
            "media-empty",
            f"{path} is empty (0 bytes).",
            "The file may still be copying or downloading; wait for it to finish.",
            context=where,
        )


def _open(path: Path) -> av.container.InputContainer:
    import av

    _check_file(path)
    # An absolute path never looks like an FFmpeg protocol prefix ("clip:1.mp4").
    name = str(path.absolute())
    try:
        return av.open(name, metadata_errors="replace")
    except av.error.PermissionError:
        raise SubplugError(
            "media-permission-denied",
            f"Permission denied reading {path}.",
            "Make the file readable for your user (for example: chmod u+r FILE).",
            context=str(path),
        ) from None
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise SubplugError(
            "media-unreadable",
            f"{path.name} is not a media file subplug can read, or it is damaged "
            "(cut off or corrupt).",
            "Check that it plays in a media player; if it was copied or downloaded, get it again.",
            context=f"{path}: {error}",
        ) from None


def _describe(path: Path, container: av.container.InputContainer) -> MediaInfo:
    import av

    audio = []
    for position, stream in enumerate(container.streams.audio):
        context = stream.codec_context
        language = stream.metadata.get("language")
        audio.append(
            AudioStreamInfo(
                index=position,
                codec=context.codec.canonical_name if context is not None else "unknown",
                sample_rate=int(stream.sample_rate or 0),
                channels=int(stream.channels or 0),
                layout=stream.layout.name if stream.channels else "unknown",
                language=language if language and language != "und" else None,
                title=stream.metadata.get("title") or None,
                default=bool(stream.disposition & av.stream.Disposition.default),
            )
        )
    has_video = any(
        not stream.disposition & av.stream.Disposition.attached_pic
        for stream in container.streams.video
    )
    duration = container.duration / av.time_base if container.duration else None
    return MediaInfo(
        path=path,
        container=container.format.name,
        duration=duration,
        audio_streams=tuple(audio),
        has_video=has_video,
        size_bytes=os.path.getsize(path),
    )


def _open_stream(
    path: Path, index: int | None
) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream, float | None]:
    """Open ``path``, check the stream choice and the decoder; return what decoding needs."""
    container = _open(path)
    try:
        info = _describe(path, container)
        chosen = select_stream(info, index)
        stream = container.streams.audio[chosen.index]
        if stream.codec_context is None:
            raise SubplugError(
                "media-unsupported-codec",
                f"Audio stream {chosen.index} of {path.name} uses a codec this PyAV build "
                "cannot decode.",
                "Convert the sound first, e.g.: ffmpeg -i IN -vn -c:a flac OUT.flac",
                context=str(path),
            )
        stream.codec_context.thread_type = "AUTO"
        expected = None
        if stream.duration and stream.time_base:
            expected = float(stream.duration * stream.time_base)
        elif info.duration:
            expected = info.duration
    except BaseException:
        container.close()
        raise
    return container, stream, expected


# -------------------------------------------------------------------------- decoding


def _blocks(pieces: Iterator[np.ndarray], block: int) -> Iterator[np.ndarray]:
    buffer = np.empty(block, dtype=np.float32)
    filled = 0
    for piece in pieces:
        while len(piece):
            take = min(block - filled, len(piece))
            buffer[filled : filled + take] = piece[:take]
            filled += take
            piece = piece[take:]
            if filled == block:
                yield buffer
                buffer = np.empty(block, dtype=np.float32)
                filled = 0
    if filled:
        yield buffer[:filled].copy()


def _new_resampler() -> Any:
    import av

    # Fixed 4096-sample output frames: far fewer Python round trips than one per packet.
    return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE, frame_size=4096)


def _pieces(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    path: Path,
    expected: float | None,
) -> Iterator[np.ndarray]:
    """16 kHz mono float32 arrays in order, gaps filled; closes ``container`` when done."""
    import av

    origin = container.start_time / av.time_base if container.start_time is not None else 0.0
    resampler = _new_resampler()
    fed = 0.0  # seconds of input pushed into the resampler, silence included
    decoded = 0
    skipped = 0
    damaged_at: float | None = None
    try:
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as error:
                # The container itself is broken from here on (cut off, garbage).
                damaged_at = origin + fed
                log.debug("demuxing %s stopped: %s", path, error)
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                skipped += 1
                log.debug("skipping a damaged packet in %s: %s", path, error)
                continue
            for frame in frames:
                if not frame.samples:
                    continue
                when = frame.time
                gap = 0.0 if when is None else when - (origin + fed)
                if gap > GAP_TOLERANCE:
                    # Lost packets or a late start: drain what came before, then silence.
                    for out in resampler.resample(None):
                        yield out.to_ndarray().reshape(-1)
                    resampler = _new_resampler()
                    pad = round(gap * SAMPLE_RATE)
                    fed += pad / SAMPLE_RATE
                    yield np.zeros(pad, dtype=np.float32)
                try:
                    outputs = resampler.resample(frame)
                except ValueError:
                    # The stream changed rate, layout or format mid-way: drain, start over.
                    outputs = resampler.resample(None)
                    resampler = _new_resampler()
                    outputs += resampler.resample(frame)
                fed += frame.samples / frame.sample_rate
                decoded += 1
                for out in outputs:
                    yield out.to_ndarray().reshape(-1)
        # The resampler holds up to one output frame back: flush it.
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1)
    finally:
        container.close()
    if not decoded:
        raise SubplugError(
            "media-unreadable",
            f"No sound could be decoded from {path.name}: the audio is damaged or empty.",
            "Check that it plays in a media player; if it was copied or downloaded, get it again.",
            context=f"{path}: {skipped} damaged packet(s)",
        )
    if skipped:
        warnings.warn(
            MediaWarning(
                f"{path.name}: skipped {skipped} damaged audio packet(s); their time is "
                "silent, so words there may be missing from the subtitles."
            ),
            stacklevel=2,
        )
    if damaged_at is not None:
        warnings.warn(
            MediaWarning(
                f"{path.name}: the file is damaged or cut off after "
                f"{math.floor(damaged_at)} s; only the sound before that was decoded."
            ),
            stacklevel=2,
        )
    elif expected and expected - fed > max(1.0, 0.05 * expected):
        warnings.warn(
            MediaWarning(
                f"{path.name}: the sound ends at {fed:.1f} s although the file says it lasts "
                f"{expected:.1f} s; it may be cut off."
            ),
            stacklevel=2,
        )
