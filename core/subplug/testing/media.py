"""Real media for tests and plugin authors: tones, silence, espeak-ng speech, any container.

Everything here writes genuine files with PyAV (and speech with the ``espeak-ng``
program), so a test that decodes them exercises the same code paths as a user's film::

    from subplug.testing.media import make_media, speech_clip, tone, silence

    make_media(tmp / "a.mkv", [silence(0.5, 48_000), tone(440, 1.0, 48_000)],
               sample_rate=48_000, layout="5.1", video=True)
    clip = speech_clip(tmp / "talk.mp4", ["Hello world.", "How are you?"], video=True)
    clip.speech  # ((1.0, 1.83), (2.83, 3.9)): where the words really are, in seconds

Clips are meant to be short (seconds): generation is fast and needs no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from subplug.errors import SubplugError
from subplug.types import SAMPLE_RATE

#: Audio codec, video codec and muxer options used for each file extension.
CONTAINERS: dict[str, tuple[str, str | None]] = {
    "wav": ("pcm_s16le", None),
    "flac": ("flac", None),
    "mp3": ("libmp3lame", None),
    "ogg": ("libvorbis", None),
    "opus": ("libopus", None),
    "m4a": ("aac", None),
    "mp4": ("aac", "libx264"),
    "mov": ("aac", "libx264"),
    "mkv": ("ac3", "libx264"),
    "webm": ("libopus", "libvpx"),
}

_CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "vorbis": {"strict": "experimental"},
    "libvorbis": {"q": "4"},
    "libx264": {"preset": "ultrafast", "tune": "zerolatency"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
}

_VIDEO_SIZE = 64
_VIDEO_FPS = 5
_BLOCK_SECONDS = 0.5


@dataclass(frozen=True)
class SpeechClip:
    """A generated clip whose speech positions are known exactly."""

    path: Path
    speech: tuple[tuple[float, float], ...]
    """``(start, end)`` seconds of each spoken phrase, edges trimmed to the voice."""
    duration: float
    texts: tuple[str, ...]


def silence(seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``seconds`` of digital silence, mono float32."""
    return np.zeros(round(seconds * sample_rate), dtype=np.float32)


def tone(
    freq: float,
    seconds: float,
    sample_rate: int = SAMPLE_RATE,
    *,
    amplitude: float = 0.5,
    fade: float = 0.005,
) -> np.ndarray:
    """A sine tone, mono float32, with ``fade`` seconds of ramp at each end (no clicks)."""
    n = round(seconds * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    signal = amplitude * np.sin(2 * np.pi * freq * t)
    ramp = min(round(fade * sample_rate), n // 2)
    if ramp:
        envelope = np.linspace(0.0, 1.0, ramp)
        signal[:ramp] *= envelope
        signal[n - ramp :] *= envelope[::-1]
    return signal.astype(np.float32)


def _espeak() -> str:
    program = shutil.which("espeak-ng")
    if program is None:
        raise SubplugError(
            "espeak-ng-missing",
            "espeak-ng is needed to synthesise test speech but is not installed.",
            "Install it: sudo apt-get install espeak-ng",
        )
    return program


def speech_wav(path: Path | str, text: str, voice: str = "en", rate: int = 160) -> Path:
    """Speak ``text`` with espeak-ng into a WAV file (22.05 kHz mono s16); return its path.

    ``voice`` is an espeak-ng voice (``en``, ``ru`` for Cyrillic text…), ``rate`` words per
    minute.
    """
    path = Path(path)
    result = subprocess.run(
        [_espeak(), "-v", voice, "-s", str(rate), "-w", str(path), text],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not path.exists():
        raise SubplugError(
            "espeak-ng-failed",
            f"espeak-ng could not speak {text!r} with voice {voice!r}.",
            result.stderr.strip() or "Check the voice name with: espeak-ng --voices",
        )
    return path


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as handle:
        rate = handle.getframerate()
        channels = handle.getnchannels()
        width = handle.getsampwidth()
        raw = handle.readframes(handle.getnframes())
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit WAV, got {8 * width}-bit")
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return samples.reshape(-1, channels).mean(axis=1).astype(np.float32), rate


def resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Resample mono float32 ``samples`` with libswresample (through PyAV)."""
    import av

    if rate == new_rate:
        return np.asarray(samples, dtype=np.float32)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=new_rate)
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
    )
    frame.sample_rate = rate
    frame.pts = 0
    frame.time_base = Fraction(1, rate)
    out = resampler.resample(frame) + resampler.resample(None)
    if not out:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in out]).astype(np.float32)


def speech(
    text: str,
    voice: str = "en",
    rate: int = 160,
    sample_rate: int = SAMPLE_RATE,
    *,
    trim: bool = True,
) -> np.ndarray:
    """``text`` spoken by espeak-ng as mono float32 at ``sample_rate``.

    With ``trim`` the silence espeak-ng leaves around the words is cut off, so the array
    starts and ends with voice (what :func:`speech_clip` relies on for exact intervals).
    """
    with tempfile.TemporaryDirectory(prefix="subplug-speech-") as folder:
        samples, native_rate = _read_wav(speech_wav(Path(folder) / "speech.wav", text, voice, rate))
    if trim:
        loud = np.flatnonzero(np.abs(samples) > 0.01 * float(np.abs(samples).max(initial=0.0)))
        if loud.size:
            samples = samples[loud[0] : loud[-1] + 1]
    return resample(samples, native_rate, sample_rate)


def _channels(layout: str) -> int:
    import av

    return len(av.AudioLayout(layout).channels)


def _as_planes(audio: np.ndarray | Sequence[np.ndarray], channels: int) -> np.ndarray:
    """Concatenate segments into a (channels, samples) float32 array."""
    if isinstance(audio, np.ndarray):
        parts: list[np.ndarray] = [audio]
    else:
        parts = [np.asarray(part) for part in audio]
    shaped = []
    for part in parts:
        part = np.asarray(part, dtype=np.float32)
        if part.ndim == 1:
            part = np.broadcast_to(part, (channels, part.shape[0]))
        if part.shape[0] != channels:
            raise ValueError(f"segment has {part.shape[0]} channels, layout needs {channels}")
        shaped.append(part)
    if not shaped:
        return np.zeros((channels, 0), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(shaped, axis=1), dtype=np.float32)


def _encoder_rate(codec: str, rate: int) -> int:
    import av

    rates = av.codec.Codec(codec, "w").audio_rates
    if not rates or rate in rates:
        return rate
    higher = [r for r in rates if r >= rate]
    return min(higher) if higher else max(rates)


class _AudioWriter:
    """Feeds one (channels, samples) signal through a resampler into an encoder."""

    def __init__(  # type: ignore[no-untyped-def]
        self, container, codec: str, planes: np.ndarray, rate: int, layout: str, start: float
    ):
        self.planes = planes
        self.offset = round(start * rate)
        self.rate = rate
        self.layout = layout
        self.done = 0
        self.stream = container.add_stream(
            codec, rate=_encoder_rate(codec, rate), options=_CODEC_OPTIONS.get(codec)
        )
        self.stream.layout = layout
        self.resampler: Any = None

    def open(self) -> None:
        import av

        context = self.stream.codec_context
        self.resampler = av.AudioResampler(
            format=context.format.name,
            layout=self.layout,
            rate=context.sample_rate,
            frame_size=context.frame_size or None,
        )

    def write_until(self, container, seconds: float | None) -> None:  # type: ignore[no-untyped-def]
        import av

        assert self.resampler is not None
        total = self.planes.shape[1]
        end = total if seconds is None else min(total, round(seconds * self.rate) - self.offset)
        if end > self.done:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(self.planes[:, self.done : end]),
                format="fltp",
                layout=self.layout,
            )
            frame.sample_rate = self.rate
            frame.pts = self.offset + self.done
            frame.time_base = Fraction(1, self.rate)
            self.done = end
            for out in self.resampler.resample(frame):
                container.mux(self.stream.encode(out))
        if seconds is None:
            for out in self.resampler.resample(None):
                container.mux(self.stream.encode(out))
            container.mux(self.stream.encode(None))


def make_media(
    path: Path | str,
    segments: np.ndarray | Sequence[np.ndarray],
    *,
    sample_rate: int = SAMPLE_RATE,
    layout: str = "mono",
    video: bool = False,
    codec: str | None = None,
    extra_streams: Sequence[np.ndarray | Sequence[np.ndarray]] = (),
    languages: Sequence[str | None] = (),
    titles: Sequence[str | None] = (),
    default_stream: int | None = 0,
    audio_start: float = 0.0,
) -> Path:
    """Encode audio (and optionally a small moving picture) into a real media file.

    ``segments`` is one array or a list of arrays played one after another, each mono
    (copied to every channel of ``layout``) or ``(channels, samples)``, float in [-1, 1]
    at ``sample_rate``. The container and default codecs follow the extension (see
    :data:`CONTAINERS`); ``codec`` picks another audio encoder. When the encoder cannot
    take ``sample_rate`` (mp3 at 192 kHz, opus at 44.1 kHz), the nearest rate it takes is
    used. ``extra_streams`` add further audio streams (same rate and layout), so a file
    can hold several; ``languages``/``titles`` tag the audio streams in order and
    ``default_stream`` gets the default disposition. ``video`` adds a 64x64, 5 fps picture
    stream as long as the audio. ``audio_start`` delays the sound's timestamps (the
    picture still starts at 0), as in a file whose audio begins late. The file is written
    atomically. Returns ``path``.
    """
    import av

    path = Path(path)
    extension = path.suffix.lower().lstrip(".")
    if extension not in CONTAINERS:
        raise ValueError(f"unsupported extension {path.suffix!r}; one of {sorted(CONTAINERS)}")
    audio_codec, video_codec = CONTAINERS[extension]
    audio_codec = codec or audio_codec
    if video and video_codec is None:
        raise ValueError(f".{extension} cannot hold video")
    channels = _channels(layout)
    if audio_codec in ("libmp3lame", "mp3") and channels > 2:
        raise ValueError(f"mp3 holds at most 2 channels, not {layout}")
    if not _pyav_has(audio_codec):
        return _make_with_ffmpeg(
            path,
            segments,
            audio_codec,
            sample_rate=sample_rate,
            layout=layout,
            video=video,
            extra_streams=extra_streams,
            languages=languages,
            titles=titles,
            default_stream=default_stream,
            audio_start=audio_start,
        )
    signals = [_as_planes(segments, channels)] + [_as_planes(s, channels) for s in extra_streams]
    duration = max(s.shape[1] for s in signals) / sample_rate + audio_start

    handle, temp_name = tempfile.mkstemp(
        prefix=".subplug-media-", suffix=path.suffix, dir=path.parent
    )
    os.close(handle)
    try:
        with av.open(temp_name, "w", format=_muxer(extension)) as container:
            writers = [
                _AudioWriter(container, audio_codec, planes, sample_rate, layout, audio_start)
                for planes in signals
            ]
            for index, writer in enumerate(writers):
                stream = writer.stream
                if index < len(languages) and languages[index]:
                    stream.metadata["language"] = languages[index]
                if index < len(titles) and titles[index]:
                    stream.metadata["title"] = titles[index]
                stream.disposition = (
                    av.stream.Disposition.default
                    if index == default_stream
                    else av.stream.Disposition(0)
                )
            picture: Any = None
            if video:
                assert video_codec is not None
                picture = container.add_stream(
                    video_codec, rate=_VIDEO_FPS, options=_CODEC_OPTIONS.get(video_codec)
                )
                picture.width = picture.height = _VIDEO_SIZE
                picture.pix_fmt = "yuv420p"
            container.start_encoding()
            for writer in writers:
                writer.open()
            frames = max(1, round(duration * _VIDEO_FPS))
            written = 0
            moment = 0.0
            while moment < duration:
                moment += _BLOCK_SECONDS
                for writer in writers:
                    writer.write_until(container, moment)
                while picture is not None and written < frames and written / _VIDEO_FPS < moment:
                    container.mux(picture.encode(_picture(written)))
                    written += 1
            for writer in writers:
                writer.write_until(container, None)
            if picture is not None:
                container.mux(picture.encode(None))
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def _pyav_has(codec: str) -> bool:
    import av

    try:
        av.codec.Codec(codec, "w")
    except av.codec.codec.UnknownCodecError:
        return False
    return True


def _make_with_ffmpeg(
    path: Path,
    segments: np.ndarray | Sequence[np.ndarray],
    codec: str,
    **options: Any,
) -> Path:
    """Encoders PyAV's own FFmpeg lacks (libvorbis): lossless .mkv first, then ffmpeg."""
    program = shutil.which("ffmpeg")
    if program is None:
        raise SubplugError(
            "ffmpeg-missing",
            f"The {codec} encoder needs the ffmpeg program, which is not installed.",
            "Install it: sudo apt-get install ffmpeg",
        )
    with tempfile.TemporaryDirectory(prefix="subplug-media-") as folder:
        lossless = make_media(Path(folder) / "source.mkv", segments, codec="pcm_f32le", **options)
        target = Path(folder) / f"out{path.suffix}"
        result = subprocess.run(
            [program, "-v", "error", "-nostdin", "-i", str(lossless), "-map", "0"]
            + ["-c:v", "copy", "-c:a", codec, "-f", _muxer(path.suffix.lower().lstrip("."))]
            + [str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg could not encode {path.name}: {result.stderr.strip()}")
        os.replace(target, path)
    return path


def _muxer(extension: str) -> str:
    return {"mkv": "matroska", "m4a": "ipod", "ogg": "ogg", "opus": "opus"}.get(
        extension, extension
    )


def video_only(path: Path | str, seconds: float = 1.0) -> Path:
    """A file with a picture stream and no sound (``.mp4``, ``.mkv``, ``.webm``, ``.mov``)."""
    import av

    path = Path(path)
    extension = path.suffix.lower().lstrip(".")
    video_codec = CONTAINERS.get(extension, ("", None))[1]
    if video_codec is None:
        raise ValueError(f".{extension} cannot hold video")
    with av.open(str(path), "w", format=_muxer(extension)) as container:
        picture: Any = container.add_stream(
            video_codec, rate=_VIDEO_FPS, options=_CODEC_OPTIONS.get(video_codec)
        )
        picture.width = picture.height = _VIDEO_SIZE
        picture.pix_fmt = "yuv420p"
        for index in range(max(1, round(seconds * _VIDEO_FPS))):
            container.mux(picture.encode(_picture(index)))
        container.mux(picture.encode(None))
    return path


def _picture(index: int):  # type: ignore[no-untyped-def]
    import av

    level = (index * 23) % 200 + 28
    pixels = np.full((_VIDEO_SIZE, _VIDEO_SIZE, 3), level, dtype=np.uint8)
    pixels[:, : (index * 3) % _VIDEO_SIZE] = 255 - level
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
    frame.pts = index
    frame.time_base = Fraction(1, _VIDEO_FPS)
    return frame


def speech_clip(
    path: Path | str,
    texts: Sequence[str] = ("Hello world.", "This is a test of subtitles."),
    *,
    voice: str = "en",
    rate: int = 160,
    lead: float = 1.0,
    pause: float = 1.0,
    tail: float = 1.0,
    sample_rate: int = SAMPLE_RATE,
    layout: str = "mono",
    video: bool = False,
    codec: str | None = None,
) -> SpeechClip:
    """Write silence, speech, pause, speech…, silence to ``path`` and say where speech is.

    Each text is spoken by espeak-ng (trimmed to the voice), so the returned intervals
    are the true speech positions to within a few milliseconds of the encoder's
    precision: tests compare VAD regions and cue times against them.
    """
    parts: list[np.ndarray] = [silence(lead, sample_rate)]
    intervals: list[tuple[float, float]] = []
    position = lead
    for number, text in enumerate(texts):
        if number:
            parts.append(silence(pause, sample_rate))
            position += pause
        voiced = speech(text, voice, rate, sample_rate)
        seconds = len(voiced) / sample_rate
        intervals.append((round(position, 4), round(position + seconds, 4)))
        parts.append(voiced)
        position += seconds
    parts.append(silence(tail, sample_rate))
    written = make_media(
        path, parts, sample_rate=sample_rate, layout=layout, video=video, codec=codec
    )
    return SpeechClip(
        path=written, speech=tuple(intervals), duration=position + tail, texts=tuple(texts)
    )
