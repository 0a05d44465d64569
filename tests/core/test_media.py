"""subplug.media: probing and decoding real media files made with PyAV, ffmpeg and espeak-ng."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from subplug import media
from subplug.errors import SubplugError
from subplug.testing.media import (
    make_media,
    silence,
    speech_clip,
    tone,
    video_only,
)
from subplug.types import SAMPLE_RATE

JFK = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "en" / "jfk.flac"

#: Samples a lossy encoder may add at the end (one codec frame), at the encoded rate.
PADDING = {"aac": 1024, "ac3": 1536, "mp3": 1152, "vorbis": 2048, "opus": 960}

VIDEO = ("mp4", "mkv", "webm", "mov")
AUDIO = ("wav", "flac", "mp3", "ogg", "opus", "m4a")


def envelope(samples: np.ndarray, window: float = 0.01) -> np.ndarray:
    """RMS per ``window`` seconds."""
    size = round(window * SAMPLE_RATE)
    count = len(samples) // size
    return np.sqrt((samples[: count * size].reshape(count, size) ** 2).mean(axis=1))


def loud_span(samples: np.ndarray, threshold: float = 0.05) -> tuple[float, float]:
    """First and last moment (seconds, 10 ms resolution) where the RMS is above threshold."""
    loud = np.flatnonzero(envelope(samples) > threshold)
    assert loud.size, "no sound at all"
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


def peak_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(samples))


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def tolerance(path: Path) -> float:
    """±20 ms, plus one codec frame for encoders that pad the end."""
    stream = media.probe(path).audio_streams[0]
    return 0.02 + PADDING.get(stream.codec, 0) / stream.sample_rate


def check_tone_clip(path: Path, samples: np.ndarray) -> None:
    """0.5 s silence, 1 s of 440 Hz, 0.5 s silence: right length, time, pitch and level."""
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert abs(len(samples) / SAMPLE_RATE - 2.0) <= tolerance(path)
    start, end = loud_span(samples)
    assert abs(start - 0.5) <= 0.02
    assert abs(end - 1.5) <= 0.02
    middle = samples[round(0.6 * SAMPLE_RATE) : round(1.4 * SAMPLE_RATE)]
    assert abs(peak_frequency(middle) - 440) <= 2
    assert rms(middle) > 0.2
    assert rms(samples[: round(0.45 * SAMPLE_RATE)]) < 1e-3
    assert rms(samples[round(1.55 * SAMPLE_RATE) : round(1.95 * SAMPLE_RATE)]) < 1e-3


def tone_clip(path: Path, rate: int, layout: str, video: bool) -> Path:
    return make_media(
        path,
        [silence(0.5, rate), tone(440, 1.0, rate), silence(0.5, rate)],
        sample_rate=rate,
        layout=layout,
        video=video,
    )


# ----------------------------------------------------------------------- containers


@pytest.mark.parametrize("extension", VIDEO + AUDIO)
def test_every_container_decodes_to_16k_mono_with_the_tone_in_place(
    tmp_path: Path, extension: str
) -> None:
    video = extension in VIDEO
    path = tone_clip(tmp_path / f"clip.{extension}", 48_000, "stereo", video)

    info = media.probe(path)
    assert info.has_video is video
    assert info.size_bytes == path.stat().st_size
    assert len(info.audio_streams) == 1
    assert info.audio_streams[0].channels == 2
    assert info.duration is not None
    assert abs(info.duration - 2.0) <= tolerance(path)

    check_tone_clip(path, media.load_pcm(path))


@pytest.mark.parametrize(
    ("rate", "layout"),
    [(8_000, "mono"), (44_100, "stereo"), (48_000, "5.1"), (192_000, "stereo")],
)
@pytest.mark.parametrize("extension", ["wav", "flac", "m4a"])
def test_rates_and_layouts(tmp_path: Path, rate: int, layout: str, extension: str) -> None:
    path = tone_clip(tmp_path / f"clip.{extension}", rate, layout, video=False)
    stream = media.probe(path).audio_streams[0]
    assert stream.channels == {"mono": 1, "stereo": 2, "5.1": 6}[layout]
    if extension != "m4a":  # AAC tops out at 96 kHz: the helper encodes 192 kHz at 96 kHz
        assert stream.sample_rate == rate
    check_tone_clip(path, media.load_pcm(path))


def test_downmix_keeps_a_voice_in_one_channel_only(tmp_path: Path) -> None:
    """Film dialogue sits in the centre channel; a mono downmix must keep it."""
    rate = 48_000
    planes = np.zeros((6, rate), dtype=np.float32)
    planes[2] = tone(440, 1.0, rate)  # FC in FFmpeg's 5.1 order: FL FR FC LFE BL BR
    path = make_media(tmp_path / "centre.mkv", planes, sample_rate=rate, layout="5.1")
    samples = media.load_pcm(path)
    assert abs(peak_frequency(samples[4000:12000]) - 440) <= 2
    assert rms(samples[4000:12000]) > 0.2


def test_left_channel_only_survives_the_downmix(tmp_path: Path) -> None:
    rate = 44_100
    planes = np.stack([tone(660, 1.0, rate), silence(1.0, rate)])
    path = make_media(tmp_path / "left.flac", planes, sample_rate=rate, layout="stereo")
    samples = media.load_pcm(path)
    assert abs(peak_frequency(samples[4000:12000]) - 660) <= 2
    assert rms(samples[4000:12000]) > 0.1


@pytest.mark.parametrize("extension", ["mp4", "mkv"])
def test_audio_that_starts_late_keeps_the_media_clock(tmp_path: Path, extension: str) -> None:
    path = make_media(
        tmp_path / f"late.{extension}",
        [tone(440, 1.0, 48_000), silence(0.5, 48_000)],
        sample_rate=48_000,
        layout="stereo",
        video=True,
        audio_start=0.7,
    )
    samples = media.load_pcm(path)
    start, end = loud_span(samples)
    assert abs(start - 0.7) <= 0.02
    assert abs(end - 1.7) <= 0.02


def test_speech_is_where_the_clip_says(tmp_path: Path) -> None:
    clip = speech_clip(
        tmp_path / "talk.mp4",
        ["Hello world.", "Subtitles for everyone."],
        lead=0.8,
        pause=1.2,
        tail=0.6,
        sample_rate=44_100,
        layout="stereo",
        video=True,
    )
    samples = media.load_pcm(clip.path)
    assert abs(len(samples) / SAMPLE_RATE - clip.duration) <= tolerance(clip.path)
    (first_start, first_end), (second_start, second_end) = clip.speech
    assert first_start == pytest.approx(0.8, abs=1e-3)

    def part(start: float, end: float) -> np.ndarray:
        return samples[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]

    quiet = max(
        rms(part(0.0, first_start - 0.05)),
        rms(part(first_end + 0.05, second_start - 0.05)),
        rms(part(second_end + 0.05, clip.duration)),
    )
    assert quiet < 1e-3
    assert rms(part(first_start, first_end)) > 0.02
    assert rms(part(second_start, second_end)) > 0.02
    start, end = loud_span(samples, threshold=0.005)
    assert abs(start - first_start) <= 0.03
    assert abs(end - second_end) <= 0.03


# ---------------------------------------------------------------------- stream choice


@pytest.fixture(scope="module")
def two_streams(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("streams")
    return make_media(
        folder / "two.mkv",
        tone(440, 1.0, 48_000),
        extra_streams=[tone(880, 1.0, 48_000)],
        sample_rate=48_000,
        layout="stereo",
        video=True,
        languages=["eng", "mon"],
        titles=["Original", "Монгол"],
        default_stream=1,
    )


def test_probe_lists_audio_streams_with_language_and_default(two_streams: Path) -> None:
    info = media.probe(two_streams)
    assert [s.index for s in info.audio_streams] == [0, 1]
    assert [s.language for s in info.audio_streams] == ["eng", "mon"]
    assert [s.title for s in info.audio_streams] == ["Original", "Монгол"]
    assert [s.default for s in info.audio_streams] == [False, True]
    assert info.has_video
    assert media.select_stream(info, None).index == 1
    assert media.select_stream(info, 0).index == 0


@pytest.mark.parametrize(("stream", "frequency"), [(0, 440), (1, 880), (None, 880)])
def test_audio_stream_selection_decodes_that_stream(
    two_streams: Path, stream: int | None, frequency: int
) -> None:
    samples = media.load_pcm(two_streams, stream)
    assert abs(peak_frequency(samples[2000:14000]) - frequency) <= 2
    blocks = list(media.iter_pcm(two_streams, stream))
    assert np.array_equal(np.concatenate(blocks), samples)


@pytest.mark.parametrize("index", [2, 7, -1])
def test_audio_stream_out_of_range_lists_the_streams(two_streams: Path, index: int) -> None:
    with pytest.raises(SubplugError) as raised:
        media.load_pcm(two_streams, index)
    error = raised.value
    assert error.reference == "audio-stream-out-of-range"
    assert str(index) in error.message
    assert error.hint is not None
    for fact in ("0: ac3, eng", "1: ac3, mon", "Монгол", "(default)"):
        assert fact in error.hint


def test_first_stream_when_none_is_default(tmp_path: Path) -> None:
    path = make_media(
        tmp_path / "plain.ogg",
        tone(440, 1.0, 16_000),
        extra_streams=[tone(880, 1.0, 16_000)],
        default_stream=None,
    )
    info = media.probe(path)
    assert not any(s.default for s in info.audio_streams)
    assert media.select_stream(info, None).index == 0


# -------------------------------------------------------------------------- streaming


def test_iter_pcm_blocks_concatenate_to_load_pcm(tmp_path: Path) -> None:
    path = make_media(
        tmp_path / "blocks.mp4",
        [tone(300, 1.3, 44_100), silence(0.4, 44_100), tone(500, 1.3, 44_100)],
        sample_rate=44_100,
        layout="stereo",
        video=True,
    )
    blocks = list(media.iter_pcm(path, block_seconds=0.7))
    whole = media.load_pcm(path)
    size = round(0.7 * SAMPLE_RATE)
    assert all(len(b) == size for b in blocks[:-1])
    assert 0 < len(blocks[-1]) <= size
    assert all(b.dtype == np.float32 for b in blocks)
    assert np.array_equal(np.concatenate(blocks), whole)


def test_progress_reports_end_at_the_decoded_length(tmp_path: Path) -> None:
    path = tone_clip(tmp_path / "p.m4a", 48_000, "stereo", video=False)
    calls: list[tuple[float, float | None]] = []
    samples = media.load_pcm(path, on_progress=lambda done, total: calls.append((done, total)))
    assert calls
    done, total = calls[-1]
    assert done == len(samples) / SAMPLE_RATE
    assert total is not None and abs(total - 2.0) <= tolerance(path)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


@pytest.mark.parametrize("muxer", ["matroska", "adts"])
def test_unknown_or_wrong_duration_grows_the_buffer(tmp_path: Path, muxer: str) -> None:
    """A live-written .mkv has no duration and raw AAC guesses it: both longer than 60 s."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("the ffmpeg program is needed to write a stream without a duration")
    path = tmp_path / ("live.mkv" if muxer == "matroska" else "raw.aac")
    codec = "flac" if muxer == "matroska" else "aac"
    with path.open("wb") as out:
        subprocess.run(
            [ffmpeg, "-v", "error", "-nostdin", "-f", "lavfi", "-i", "sine=f=440:r=8000:d=70"]
            + ["-c:a", codec, "-f", muxer, "-"],
            stdout=out,
            check=True,
        )
    samples = media.load_pcm(path)
    assert abs(len(samples) / SAMPLE_RATE - 70.0) <= 0.2
    assert samples.flags.owndata  # trimmed in place, not a view of a larger buffer
    assert abs(peak_frequency(samples[-SAMPLE_RATE:]) - 440) <= 2


# ---------------------------------------------------------------------- real fixture


def test_jfk_fixture_matches_ffmpeg() -> None:
    info = media.probe(JFK)
    assert info.container == "flac"
    assert info.duration == pytest.approx(11.0, abs=0.02)
    (stream,) = info.audio_streams
    assert (stream.codec, stream.sample_rate, stream.channels) == ("flac", 44_100, 2)

    samples = media.load_pcm(JFK)
    assert samples.dtype == np.float32
    assert abs(len(samples) / SAMPLE_RATE - 11.0) <= 0.02
    assert rms(samples) > 0.01
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is not None:
        reference = np.frombuffer(
            subprocess.run(
                [ffmpeg, "-v", "error", "-nostdin", "-i", str(JFK)]
                + ["-f", "f32le", "-ac", "1", "-ar", "16000", "-"],
                capture_output=True,
                check=True,
            ).stdout,
            dtype=np.float32,
        )
        assert len(reference) == len(samples)
        assert float(np.abs(reference - samples).max()) < 1e-3


# ------------------------------------------------------------------------ bad input


def expect_error(path: Path, reference: str) -> SubplugError:
    """Every entry point refuses ``path`` with ``reference``, before decoding anything."""
    errors = []
    for call in (
        lambda: media.probe(path),
        lambda: media.load_pcm(path),
        lambda: media.iter_pcm(path),  # raises on the call, not on the first block
    ):
        with pytest.raises(SubplugError) as raised:
            call()
        assert raised.value.reference == reference
        assert raised.value.hint
        errors.append(raised.value)
    return errors[0]


def test_missing_file(tmp_path: Path) -> None:
    error = expect_error(tmp_path / "nope.mp4", "media-not-found")
    assert "nope.mp4" in error.message


def test_directory(tmp_path: Path) -> None:
    expect_error(tmp_path, "media-is-directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    expect_error(path, "media-empty")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.mp4", b"these are my notes, not a video\n" * 20),
        ("noise.mkv", np.random.default_rng(3).integers(0, 256, 50_000, np.uint8).tobytes()),
    ],
)
def test_not_media(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    expect_error(path, "media-unreadable")


def test_truncated_mp4_is_unreadable(tmp_path: Path) -> None:
    path = tone_clip(tmp_path / "whole.mp4", 48_000, "stereo", video=True)
    cut = tmp_path / "cut.mp4"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: gone
    expect_error(cut, "media-unreadable")


def test_video_without_sound(tmp_path: Path) -> None:
    path = video_only(tmp_path / "silent film.mp4", 1.0)
    info = media.probe(path)
    assert info.has_video and not info.audio_streams
    with pytest.raises(SubplugError) as raised:
        media.load_pcm(path)
    assert raised.value.reference == "media-no-audio"
    assert "only video" in (raised.value.hint or "")
    with pytest.raises(SubplugError, match="no audio stream"):
        media.iter_pcm(path)


def test_subtitle_file_given_as_media(tmp_path: Path) -> None:
    path = tmp_path / "film.en.srt"
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\nHello\n", encoding="utf-8")
    with pytest.raises(SubplugError) as raised:
        media.select_stream(media.probe(path), None)
    assert raised.value.reference == "media-no-audio"
    assert "subtitle file" in (raised.value.hint or "")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read files without permission"
)
def test_permission_denied(tmp_path: Path) -> None:
    path = tone_clip(tmp_path / "locked.wav", 16_000, "mono", video=False)
    path.chmod(0)
    try:
        expect_error(path, "media-permission-denied")
    finally:
        path.chmod(0o644)


def test_audio_that_never_decodes_is_unreadable(tmp_path: Path) -> None:
    path = make_media(tmp_path / "ok.m4a", tone(440, 2.0, 48_000), sample_rate=48_000)
    data = bytearray(path.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    assert 0 < start < end
    data[start:end] = np.random.default_rng(1).integers(0, 256, end - start, np.uint8).tobytes()
    broken = tmp_path / "broken.m4a"
    broken.write_bytes(bytes(data))
    assert media.probe(broken).audio_streams  # the index is fine…
    with pytest.raises(SubplugError) as raised:  # …the sound is not
        media.load_pcm(broken)
    assert raised.value.reference == "media-unreadable"


def test_damaged_packets_are_skipped_and_the_clock_kept(tmp_path: Path) -> None:
    rate = 44_100
    path = make_media(
        tmp_path / "long.mp4",
        [tone(440, 10.0, rate), silence(1.0, rate), tone(880, 1.0, rate)],
        sample_rate=rate,
        layout="stereo",
        video=True,
    )
    data = bytearray(path.read_bytes())
    at = len(data) // 3
    data[at : at + 3000] = np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))

    with pytest.warns(media.MediaWarning, match=r"skipped \d+ damaged"):
        samples = media.load_pcm(damaged)
    assert abs(len(samples) / SAMPLE_RATE - 12.0) <= tolerance(damaged)
    level = envelope(samples)
    assert level[1000:1100].max() < 0.01  # 10–11 s: the pause, still at 10–11 s
    assert level[1102:1198].min() > 0.1  # 11–12 s: the last tone
    assert abs(peak_frequency(samples[176_000:190_000]) - 880) <= 2


def test_cut_off_file_warns_and_keeps_what_is_there(tmp_path: Path) -> None:
    path = make_media(tmp_path / "whole.mkv", tone(440, 12.0, 48_000), sample_rate=48_000)
    cut = tmp_path / "cut.mkv"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(media.MediaWarning, match="cut off"):
        samples = media.load_pcm(cut)
    assert 4.0 < len(samples) / SAMPLE_RATE < 8.0
    assert rms(samples[: 3 * SAMPLE_RATE]) > 0.2


def test_good_files_raise_no_warnings(tmp_path: Path) -> None:
    path = tone_clip(tmp_path / "fine.webm", 48_000, "stereo", video=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        media.load_pcm(path)


# ------------------------------------------------------------------------------ paths


@pytest.mark.parametrize(
    "relative",
    [
        "my clips/Сайн байна уу — интервью 1.mp4",
        "Улаанбаатар/звук.flac",
        "clip:01 [final].mkv",  # looks like an FFmpeg protocol prefix
    ],
)
def test_awkward_paths(tmp_path: Path, relative: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    tone_clip(path, 48_000, "stereo", video=path.suffix != ".flac")
    monkeypatch.chdir(path.parent)
    for name in (path, Path(path.name), str(path)):
        info = media.probe(name)
        assert len(info.audio_streams) == 1
    check_tone_clip(path, media.load_pcm(Path(path.name)))
    missing = path.with_name("нет " + path.name)
    with pytest.raises(SubplugError) as raised:
        media.load_pcm(missing)
    assert raised.value.reference == "media-not-found"
    assert missing.name in raised.value.message
