"""``subplug live``: PCM in, caption events out.

The pure parts (utterance detector, backlog policy, PCM decoding) are tested directly;
the engine runs as a real ``subplug live`` process (fake backend through
``SUBPLUG_PLUGINS``) on espeak-ng speech sent as 48 kHz stereo PCM, or in-process where a
test needs a slow backend.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from subplug.errors import SubplugError
from subplug.live import (
    MERGE_GAP,
    InputBuffer,
    LiveOptions,
    PcmBlock,
    PcmDecoder,
    Utterance,
    UtteranceDetector,
    VadSettings,
    merge_chunk,
    plan_work,
    run_live,
    validate,
)
from subplug.testing import FakeBackend
from subplug.testing.fake import EN_WORDS, fake_answer
from subplug.testing.media import silence, speech
from subplug.types import BackendRequest

RATE = 48_000
PHRASES = (
    "Good morning everyone and welcome to the show.",
    "Today we talk about the weather in the mountains.",
    "Thank you for listening.",
)

# ----------------------------------------------------------------------- helpers


def speech_stream(
    texts: Sequence[str], *, lead: float = 1.0, pause: float = 1.2, tail: float = 1.0
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Mono float32 at 48 kHz: silence, phrase, pause, phrase…; and where speech is."""
    parts = [silence(lead, RATE)]
    intervals = []
    position = lead
    for number, text in enumerate(texts):
        if number:
            parts.append(silence(pause, RATE))
            position += pause
        voiced = speech(text, sample_rate=RATE)
        intervals.append((position, position + len(voiced) / RATE))
        parts.append(voiced)
        position += len(voiced) / RATE
    parts.append(silence(tail, RATE))
    return np.concatenate(parts).astype(np.float32), intervals


def pcm(mono: np.ndarray, fmt: str) -> bytes:
    """48 kHz stereo PCM (right channel quieter, so the downmix matters)."""
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    if fmt == "s16le":
        return (np.clip(stereo, -1, 1) * 32767).astype("<i2").tobytes()
    return stereo.astype("<f4").tobytes()


def live_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "subplug", "live", "--backend", "fake", *args]


def live_env() -> dict[str, str]:
    return {**os.environ, "SUBPLUG_PLUGINS": "subplug.testing.fake", "PYTHONUNBUFFERED": "1"}


def events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def of(kind: str, found: Sequence[dict]) -> list[dict]:
    return [e for e in found if e["event"] == kind]


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def assert_captions_match(captions: Sequence[dict], intervals: Sequence[tuple[float, float]]):
    """One caption per phrase, overlapping it and no other, edges within VAD precision."""
    assert len(captions) == len(intervals), (captions, intervals)
    for caption, (start, end) in zip(captions, intervals, strict=True):
        span = (caption["start"], caption["end"])
        assert overlap(span, (start, end)) > 0.8 * (end - start), (span, start, end)
        assert abs(caption["start"] - start) < 0.35, (span, start, end)
        assert abs(caption["end"] - end) < 0.5, (span, start, end)
        assert caption["en"] and caption["mn"]
        assert caption["latency"] >= 0
    for a, b in zip(captions, captions[1:], strict=False):
        assert a["end"] <= b["start"]


def is_fake_caption(caption: dict) -> bool:
    """The English text is what the fake backend says for this caption's index."""
    words = caption["en"].lower().replace(".", "").split()
    expected = [EN_WORDS[(caption["index"] * 7 + i) % len(EN_WORDS)] for i in range(len(words))]
    return words == expected


# ------------------------------------------------------------------ pure: detector


def detect(probs: Sequence[float], settings_: VadSettings) -> list[tuple[int, int]]:
    detector = UtteranceDetector(settings_)
    found = []
    for p in probs:
        found += detector.push(p)
    return found + detector.flush()


def test_detector_finds_speech_between_silences() -> None:
    s = VadSettings(threshold=0.5, min_silence=3, min_speech=2, max_length=100, cut_search=5)
    probs = [0.0] * 5 + [0.9] * 10 + [0.1] * 5 + [0.8] * 4 + [0.0] * 10
    assert detect(probs, s) == [(5, 15), (20, 24)]


def test_detector_bridges_short_pauses_and_ignores_blips() -> None:
    s = VadSettings(threshold=0.5, min_silence=4, min_speech=3, max_length=100, cut_search=5)
    # a 2-window pause inside speech is bridged; a 1-window blip later is ignored
    probs = [0.9] * 6 + [0.1] * 2 + [0.9] * 6 + [0.0] * 8 + [0.9] + [0.0] * 8
    assert detect(probs, s) == [(0, 14)]


def test_detector_cuts_long_speech_at_its_quietest_point() -> None:
    s = VadSettings(threshold=0.5, min_silence=5, min_speech=1, max_length=20, cut_search=8)
    probs = [0.9] * 15 + [0.4] + [0.9] * 30 + [0.0] * 10
    found = detect(probs, s)
    assert found[0] == (0, 16)  # cut just after the dip at window 15
    assert all(end - start <= 20 for start, end in found)
    assert found[-1][1] == 46


@settings(max_examples=200, deadline=None)
@given(
    probs=st.lists(st.floats(0.0, 1.0), max_size=400),
    min_silence=st.integers(1, 15),
    min_speech=st.integers(1, 10),
    max_length=st.integers(4, 120),
)
def test_detector_properties(
    probs: list[float], min_silence: int, min_speech: int, max_length: int
) -> None:
    s = VadSettings(
        threshold=0.5,
        min_silence=min_silence,
        min_speech=min_speech,
        max_length=max_length,
        cut_search=max(1, max_length // 4),
    )
    found = detect(probs, s)
    previous_end = 0
    for start, end in found:
        assert previous_end <= start < end <= len(probs)  # ordered, disjoint, in range
        assert end - start <= max_length
        assert max(probs[start:end]) >= s.neg_threshold  # never pure silence
        previous_end = end
    # every loud window of a long enough loud run is inside an utterance
    run = max(min_speech, 1)
    for i in range(len(probs) - run + 1):
        if all(p >= 0.5 for p in probs[i : i + run]):
            assert any(start <= i < end for start, end in found), (i, found)


# -------------------------------------------------------------------- pure: backlog


def utterance(start: float, end: float) -> Utterance:
    return Utterance(start, end, np.zeros(int((end - start) * 16_000), np.float32))


def test_plan_work_drops_old_and_merges_waiting() -> None:
    waiting = [utterance(0, 2), utterance(3, 5), utterance(20, 23), utterance(24, 26)]
    plan = plan_work(waiting, head=30.0, max_lag=15.0, merge_limit=10.0)
    assert [u.start for u in plan.dropped] == [0, 3]
    assert [u.start for u in plan.batch] == [20, 24]
    assert plan.rest == ()


def test_plan_work_zero_lag_never_drops() -> None:
    waiting = [utterance(0, 2), utterance(3, 5)]
    plan = plan_work(waiting, head=1000.0, max_lag=0.0, merge_limit=30.0)
    assert plan.dropped == () and len(plan.batch) == 2


@settings(max_examples=200, deadline=None)
@given(
    durations=st.lists(st.floats(0.1, 8.0), min_size=0, max_size=12),
    gap=st.floats(0.0, 3.0),
    extra=st.floats(0.0, 60.0),
    max_lag=st.sampled_from([0.0, 5.0, 15.0]),
    merge_limit=st.floats(8.0, 30.0),
)
def test_plan_work_properties(
    durations: list[float], gap: float, extra: float, max_lag: float, merge_limit: float
) -> None:
    waiting, t = [], 0.0
    for d in durations:
        waiting.append(utterance(t, t + d))
        t += d + gap
    head = t + extra
    plan = plan_work(waiting, head, max_lag=max_lag, merge_limit=merge_limit)
    # nothing lost or invented, order kept
    assert sorted(plan.dropped + plan.batch + plan.rest, key=lambda u: u.start) == waiting
    assert list(plan.batch + plan.rest) == [u for u in waiting if u not in plan.dropped]
    for u in plan.dropped:
        assert max_lag > 0 and head - u.end > max_lag
    for u in plan.batch + plan.rest:
        assert max_lag == 0 or head - u.end <= max_lag
    if plan.batch:
        merged = sum(u.duration for u in plan.batch) + MERGE_GAP * (len(plan.batch) - 1)
        assert len(plan.batch) == 1 or merged <= merge_limit + 1e-9
    assert bool(plan.batch) == bool(waiting) or len(plan.dropped) == len(waiting)


@settings(max_examples=200, deadline=None)
@given(
    durations=st.lists(st.floats(0.1, 8.0), min_size=0, max_size=16),
    merge_limit=st.floats(8.0, 30.0),
    max_groups=st.integers(1, 6),
)
def test_plan_work_forms_up_to_max_groups_of_merged_utterances(
    durations: list[float], merge_limit: float, max_groups: int
) -> None:
    waiting, t = [], 0.0
    for d in durations:
        waiting.append(utterance(t, t + d))
        t += d + 0.5
    plan = plan_work(waiting, t, max_lag=0.0, merge_limit=merge_limit, max_groups=max_groups)
    flat = [u for group in plan.groups for u in group]
    assert flat + list(plan.rest) == waiting, "order kept, nothing lost"
    assert len(plan.groups) <= max_groups
    assert not plan.rest or len(plan.groups) == max_groups
    for group in plan.groups:
        merged = sum(u.duration for u in group) + MERGE_GAP * (len(group) - 1)
        assert len(group) == 1 or merged <= merge_limit + 1e-9
    single = plan_work(waiting, t, max_lag=0.0, merge_limit=merge_limit)
    assert single.groups[:1] == plan.groups[:1] and single.batch == plan.batch


def test_merge_chunk_keeps_every_utterance_and_its_times() -> None:
    batch = [utterance(1.0, 2.0), utterance(4.0, 4.5)]
    chunk = merge_chunk(batch, 7)
    assert chunk.index == 7
    assert (chunk.span.start, chunk.span.end) == (1.0, 4.5)
    assert [(r.start, r.end) for r in chunk.span.regions] == [(1.0, 2.0), (4.0, 4.5)]
    assert len(chunk.samples) == 16_000 + int(MERGE_GAP * 16_000) + 8_000


# ---------------------------------------------------------------- PCM decoding


@pytest.mark.parametrize("fmt", ["f32le", "s16le"])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_decoder_downmixes_and_resamples_48k(fmt: str, channels: int) -> None:
    seconds = 1.0
    t = np.arange(int(RATE * seconds)) / RATE
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frames = np.repeat(tone[:, None], channels, axis=1)
    frames[:, 0] *= 0.0 if channels > 1 else 1.0  # the mean, not the first channel
    if fmt == "s16le":
        raw = (frames * 32767).astype("<i2").tobytes()
    else:
        raw = frames.astype("<f4").tobytes()
    decoder = PcmDecoder(fmt, RATE, channels)
    frame_bytes = decoder.frame_bytes
    rng = np.random.default_rng(0)
    out, position = [], 0
    while position < len(raw):  # uneven blocks, whole frames each
        size = int(rng.integers(1, 3000)) * frame_bytes
        out.append(decoder.feed(raw[position : position + size]))
        position += size
    out.append(decoder.flush())
    y = np.concatenate(out)
    assert abs(len(y) - 16_000 * seconds) <= 2
    expected_amplitude = 0.5 * (channels - 1) / channels if channels > 1 else 0.5
    spectrum = np.abs(np.fft.rfft(y[1000:15000]))
    peak_hz = np.argmax(spectrum) * 16_000 / len(y[1000:15000])
    assert abs(peak_hz - 440) < 3
    assert abs(np.abs(y[1000:15000]).max() - expected_amplitude) < 0.02


def test_input_buffer_drops_oldest_and_leaves_a_gap() -> None:
    buffer = InputBuffer(max_frames=100, frame_bytes=4)
    for first in range(0, 200, 40):
        buffer.put(PcmBlock(first, bytes(160), 0.0))
    blocks = buffer.take(0.0)
    assert blocks is not None
    assert [b.first_frame for b in blocks] == [120, 160]  # 0, 40, 80 were dropped
    buffer.close()
    assert buffer.take(0.0) is None


def test_validate_rejects_bad_options() -> None:
    for options, reference in [
        (LiveOptions(format="u8"), "bad-pcm-format"),
        (LiveOptions(rate=100), "bad-sample-rate"),
        (LiveOptions(channels=0), "bad-channels"),
        (LiveOptions(source="fr"), "bad-source"),
        (LiveOptions(max_utterance=40), "bad-max-utterance"),
        (LiveOptions(max_lag=-1), "bad-max-lag"),
    ]:
        with pytest.raises(SubplugError) as caught:
            validate(options)
        assert caught.value.reference == reference


# ------------------------------------------------------------ the real command


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, list[tuple[float, float]]]:
    return speech_stream(PHRASES)


@pytest.mark.parametrize("fmt", ["s16le", "f32le"])
def test_live_captions_speech_at_input_clock_times(
    fmt: str, clip: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    mono, intervals = clip
    done = subprocess.run(
        live_command("--format", fmt, "--rate", str(RATE), "--channels", "2", "--source", "en"),
        input=pcm(mono, fmt),
        capture_output=True,
        env=live_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    found = events(done.stdout.decode())
    assert found[0]["event"] == "ready" and found[0]["input"]["channels"] == 2
    assert all(e["v"] == 1 for e in found)
    captions = of("caption", found)
    assert_captions_match(captions, intervals)
    assert all(is_fake_caption(c) for c in captions)
    assert [c["source_lang"] for c in captions] == ["en"] * len(captions)
    final = of("stats", found)[-1]
    assert final["final"] and final["captions"] == len(PHRASES) and final["dropped"] == 0
    assert abs(final["input_seconds"] - len(mono) / RATE) < 0.01


def test_live_flushes_the_last_utterance_at_eof(
    clip: tuple[np.ndarray, list[tuple[float, float]]],
) -> None:
    mono, intervals = clip
    cut = int(intervals[-1][1] * RATE)  # stream ends as the last phrase ends
    done = subprocess.run(
        live_command("--format", "f32le", "--rate", str(RATE), "--channels", "2"),
        input=pcm(mono[:cut], "f32le"),
        capture_output=True,
        env=live_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    captions = of("caption", events(done.stdout.decode()))
    assert_captions_match(captions, intervals)
    assert captions[-1]["end"] <= cut / RATE + 1e-3


@pytest.mark.slow
def test_live_sigterm_captions_what_was_heard_and_exits_0(
    clip: tuple[np.ndarray, list[tuple[float, float]]],
) -> None:
    mono, intervals = clip
    cut = int((intervals[-1][0] + 0.6 * (intervals[-1][1] - intervals[-1][0])) * RATE)
    proc = subprocess.Popen(
        live_command("--format", "s16le", "--rate", str(RATE), "--channels", "2"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=live_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(pcm(mono[:cut], "s16le"))  # mid-phrase; stdin stays open
    proc.stdin.flush()
    seen = []
    deadline = time.monotonic() + 60
    while len(of("caption", seen)) < len(intervals) - 1 and time.monotonic() < deadline:
        seen.append(json.loads(proc.stdout.readline()))
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    proc.stdin.close()
    assert proc.returncode == 0, err.decode()
    found = seen + events(rest.decode())
    captions = of("caption", found)
    assert len(captions) == len(intervals)
    last_start, _ = intervals[-1]
    assert abs(captions[-1]["start"] - last_start) < 0.35
    assert captions[-1]["end"] <= cut / RATE + 1e-3
    assert of("stats", found)[-1]["final"]


@pytest.mark.parametrize(
    ("args", "reference", "message"),
    [
        (["--rate", "5"], "bad-sample-rate", "Sample rate 5 Hz"),
        (["--channels", "0"], "bad-channels", "channels"),
        (["--max-utterance", "60"], "bad-max-utterance", "--max-utterance"),
        (["--backend", "nope"], "unknown-backend", "nope"),
    ],
)
def test_live_bad_arguments_give_one_clear_error(
    args: list[str], reference: str, message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "subplug", "live", *args],
        input=b"",
        capture_output=True,
        env=live_env(),
        timeout=60,
    )
    assert done.returncode == 2
    stderr = done.stderr.decode()
    assert message in stderr and "Traceback" not in stderr
    (error,) = of("error", events(done.stdout.decode()))
    assert error["error"]["reference"] == reference and error["error"]["hint"]


def test_live_unknown_format_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "subplug", "live", "--format", "u8"],
        input=b"",
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid choice: 'u8'" in done.stderr.decode()


# --------------------------------------------------------- slow model, in-process


def test_slow_backend_drops_and_merges_by_policy() -> None:
    texts = [
        f"Number {word} is here."
        for word in ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    ]
    mono, intervals = speech_stream(texts, pause=0.8)
    calls: list[BackendRequest] = []

    def slow(request: BackendRequest) -> str:
        calls.append(request)
        time.sleep(2.0)
        return fake_answer(request)

    read_end, write_end = os.pipe()
    reader = os.fdopen(read_end, "rb")

    def produce() -> None:  # all at once: the input clock runs far ahead of the model
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(pcm(mono, "f32le"))

    threading.Thread(target=produce, daemon=True).start()
    out = io.StringIO()
    options = LiveOptions(format="f32le", rate=RATE, channels=2, source="en", max_lag=6.0)
    code = run_live(options, reader, out, backend=FakeBackend(script=slow), handle_signals=False)
    assert code == 0
    found = events(out.getvalue())
    captions, dropped = of("caption", found), of("dropped", found)
    final = of("stats", found)[-1]
    # every phrase is either captioned (alone or merged) or reported as dropped
    assert final["utterances"] == len(texts)
    assert final["dropped"] == len(dropped) > 0
    assert final["dropped_seconds"] == pytest.approx(sum(d["seconds"] for d in dropped), abs=0.01)
    assert all(d["reason"] == "backlog" for d in dropped)
    assert final["merged"] > 0 and any(c["utterances"] > 1 for c in captions)
    assert sum(c["utterances"] for c in captions) + len(dropped) == len(texts)
    assert len(calls) == len(captions) < len(texts)
    # what was dropped is old: it ended more than max_lag before the newest audio
    for d in dropped:
        assert final["input_seconds"] - d["end"] > 6.0
    # merged captions span the phrases they hold
    for c in captions:
        inside = [iv for iv in intervals if overlap((c["start"], c["end"]), iv) > 0]
        assert len(inside) == c["utterances"]


@pytest.mark.slow
def test_live_stops_when_the_reader_of_its_events_goes_away(
    clip: tuple[np.ndarray, list[tuple[float, float]]],
) -> None:
    """`subplug live … | head -1`: once nobody reads its output, the engine stops
    instead of running until killed (exit 141, as a process ended by SIGPIPE)."""
    mono, _ = clip
    proc = subprocess.Popen(
        live_command("--format", "f32le", "--rate", str(RATE), "--channels", "2"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=live_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first["event"] == "ready"
    proc.stdout.close()  # like head -1: the reader has gone
    # stdin stays open and keeps bringing speech: only the closed output can stop it
    block = pcm(mono, "f32le")
    while proc.poll() is None:
        try:
            proc.stdin.write(block)
            proc.stdin.flush()
        except BrokenPipeError:
            break
    assert proc.wait(timeout=120) == 141, proc.stderr.read().decode() if proc.stderr else ""
