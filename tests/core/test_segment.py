"""Segmentation: silero-vad on real speech, and the pure chunk plan (property tests)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tracemalloc
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from subplug.segment import (
    VAD_HOP,
    VAD_THREADS,
    FrameScores,
    merge_regions,
    pad_regions,
    plan_chunks,
    regions_from_scores,
    speech_probabilities,
    speech_regions,
    split_long_region,
)
from subplug.types import SAMPLE_RATE, ChunkSpan, SpeechRegion

JFK = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "en" / "jfk.flac"
TOL = 1e-9
R = SpeechRegion


# ----------------------------------------------------------------------- strategies


@st.composite
def region_lists(draw: st.DrawFn, *, max_duration: float = 45.0) -> tuple[list[R], float]:
    """Sorted, disjoint speech regions (some longer than 30 s) and the media length."""
    t = draw(st.floats(0.0, 5.0))
    regions = []
    for _ in range(draw(st.integers(0, 25))):
        duration = draw(st.floats(0.05, max_duration))
        regions.append(R(t, t + duration))
        short = st.floats(0.0, 0.6)
        t += duration + draw(st.one_of(short, st.floats(0.6, 12.0)))
    total = (regions[-1].end if regions else t) + draw(st.floats(0.0, 5.0))
    return regions, total


def _check_plan(regions: list[R], total: float, chunks: list[ChunkSpan], max_chunk: float) -> None:
    speech = merge_regions(regions, min_gap=0.0)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.duration <= max_chunk + TOL
        assert chunk.start >= 0.0 and chunk.end <= total + TOL
        assert chunk.regions, "a chunk without speech"
        assert sum(r.duration for r in chunk.regions) > 0
        for region in chunk.regions:
            assert chunk.start - TOL <= region.start < region.end <= chunk.end + TOL
    for left, right in pairwise(chunks):
        assert left.end <= right.start + TOL
    covered = merge_regions([r for c in chunks for r in c.regions], min_gap=0.0)
    assert len(covered) == len(speech)
    for got, want in zip(covered, speech, strict=True):
        assert got.start == pytest.approx(want.start, abs=TOL)
        assert got.end == pytest.approx(want.end, abs=TOL)
    for region in speech:
        for t in np.linspace(region.start, region.end, 7, endpoint=False):
            owners = [c for c in chunks if c.start <= t < c.end]
            assert len(owners) == 1, f"speech at {t} covered by {len(owners)} chunks"


# --------------------------------------------------------------- plan: properties


@settings(max_examples=300, deadline=None)
@given(region_lists(), st.sampled_from([30.0, 10.0, 4.0]))
def test_plan_invariants(case: tuple[list[R], float], max_chunk: float) -> None:
    regions, total = case
    chunks = plan_chunks(regions, total=total, max_chunk=max_chunk)
    _check_plan(regions, total, chunks, max_chunk)
    assert plan_chunks(regions, total=total, max_chunk=max_chunk) == chunks
    assert plan_chunks(regions[::-1], total=total, max_chunk=max_chunk) == chunks


@settings(max_examples=200, deadline=None)
@given(region_lists())
def test_adjacent_chunks_never_fit_together(case: tuple[list[R], float]) -> None:
    regions, total = case
    chunks = plan_chunks(regions, total=total)
    for left, right in pairwise(chunks):
        assert right.regions[-1].end - left.regions[0].start > 30.0


@settings(max_examples=200, deadline=None)
@given(region_lists(max_duration=8.0))
def test_speech_that_fits_is_one_chunk(case: tuple[list[R], float]) -> None:
    regions, total = case
    chunks = plan_chunks(regions, total=total)
    if not regions:
        assert chunks == []
    elif regions[-1].end - regions[0].start <= 30.0:
        assert len(chunks) == 1
        assert chunks[0].regions == tuple(merge_regions(regions, min_gap=0.0))


@st.composite
def two_groups(draw: st.DrawFn) -> tuple[list[R], list[R], float]:
    """Two groups of talk (short pauses inside) that only fit apart, and their long pause."""

    def group(start: float) -> list[R]:
        out, t = [], start
        for _ in range(draw(st.integers(1, 8))):
            duration = draw(st.floats(0.2, 4.0))
            out.append(R(t, t + duration))
            t += duration + draw(st.floats(0.05, 0.5))
        return out

    left = group(draw(st.floats(0.0, 3.0)))
    pause = draw(st.floats(1.5, 10.0))
    right = group(left[-1].end + pause)
    return left, right, pause


@settings(max_examples=300, deadline=None)
@given(two_groups(), st.floats(0.3, 0.95))
def test_cut_lands_in_the_long_pause(case: tuple[list[R], list[R], float], fit: float) -> None:
    left, right, _ = case
    spans = (left[-1].end - left[0].start, right[-1].end - right[0].start)
    whole = right[-1].end - left[0].start
    # Choose a limit both groups fit under but their union does not.
    max_chunk = max(spans) + fit * (whole - max(spans))
    chunks = plan_chunks(left + right, total=right[-1].end + 1.0, max_chunk=max_chunk)
    assert [c.regions for c in chunks] == [tuple(left), tuple(right)]


def test_longest_pause_wins_over_the_first_that_fits() -> None:
    # Greedy filling would cut at 24.4 (the last pause before 30 s); the long pause is at 10.
    regions = [R(0, 9), R(11, 17), R(17.4, 24), R(24.4, 32)]
    chunks = plan_chunks(regions, total=35)
    assert [c.regions for c in chunks] == [(R(0, 9),), (R(11, 17), R(17.4, 24), R(24.4, 32))]
    assert chunks[0].end == pytest.approx(9.2) and chunks[1].start == pytest.approx(10.8)
    assert chunks[0].start == 0.0 and chunks[1].end == pytest.approx(32.2)


def test_padding_stops_midway_and_at_the_media_edges() -> None:
    regions = [R(0.05, 20), R(20.1, 45), R(46, 49.9)]
    chunks = plan_chunks(regions, total=50, max_chunk=30, pad=0.5)
    assert chunks[0].start == 0.0
    assert chunks[0].end == pytest.approx(20.05) and chunks[1].start == pytest.approx(20.05)
    assert chunks[-1].end == pytest.approx(50.0)
    full = plan_chunks([R(1, 31)], total=40, max_chunk=30, pad=0.5)
    assert [(c.start, c.end) for c in full] == [(1, 31)]


def test_plan_clips_and_merges_messy_input() -> None:
    regions = [R(8, 12), R(-2, 3), R(2, 5), R(40, 45), R(6, 6)]
    chunks = plan_chunks(regions, total=42, pad=0.0)
    assert [c.regions for c in chunks] == [(R(0, 5), R(8, 12)), (R(40, 42),)]
    assert plan_chunks([], total=10) == []
    with pytest.raises(ValueError):
        plan_chunks(regions, total=10, max_chunk=0)


# ------------------------------------------------------------- split_long_region


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 100.0), st.floats(0.1, 200.0), st.floats(1.0, 30.0))
def test_split_pieces_touch_cover_and_fit(start: float, duration: float, max_len: float) -> None:
    region = R(start, start + duration)
    pieces = split_long_region(region, max_len)
    assert len(pieces) == max(1, math.ceil(region.duration / max_len - 1e-9))
    assert pieces[0].start == region.start and pieces[-1].end == region.end
    for a, b in pairwise(pieces):
        assert a.end == b.start
    assert all(0 < p.duration <= max_len + TOL for p in pieces)


@settings(max_examples=200, deadline=None)
@given(st.floats(31.0, 57.0), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_split_cuts_at_the_quietest_frame(duration: float, where: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    frames = math.ceil(duration / VAD_HOP)
    values = rng.uniform(0.6, 1.0, frames).astype(np.float32)
    lo, hi = duration - 30.0 + 1.0, 29.0  # a cut here leaves both pieces within 30 s
    dip = lo + where * (hi - lo)
    values[int(dip / VAD_HOP)] = 0.0
    scores = FrameScores(values, VAD_HOP, duration)
    pieces = split_long_region(R(0, duration), 30.0, scores=scores)
    assert len(pieces) == 2
    assert pieces[0].end == pytest.approx(dip, abs=VAD_HOP)


def test_plan_uses_scores_for_long_speech() -> None:
    # 46 s of talk must be cut between 18 s and 32 s; the deepest dip there is at 31 s.
    values = np.full(math.ceil(50 / VAD_HOP), 0.95, dtype=np.float32)
    values[int(10.0 / VAD_HOP) : int(10.3 / VAD_HOP)] = 0.0
    values[int(20.0 / VAD_HOP) : int(20.3 / VAD_HOP)] = 0.3
    values[int(31.0 / VAD_HOP) : int(31.3 / VAD_HOP)] = 0.1
    scores = FrameScores(values, VAD_HOP, 50.0)
    chunks = plan_chunks([R(2, 48)], total=50, scores=scores)
    assert len(chunks) == 2
    assert chunks[0].end == pytest.approx(31.15, abs=0.2)
    assert chunks[0].end == chunks[1].start
    even = plan_chunks([R(2, 48)], total=50)
    assert even[0].end == pytest.approx(25.0)


# --------------------------------------------------------- merge / pad / from scores


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 100), st.floats(0, 10)), max_size=30),
    st.floats(0.0, 2.0),
)
def test_merge_regions_properties(raw: list[tuple[float, float]], min_gap: float) -> None:
    regions = [R(s, s + d) for s, d in raw]
    merged = merge_regions(regions, min_gap=min_gap)
    for a, b in pairwise(merged):
        assert b.start - a.end >= min_gap and b.start > a.end
    for r in regions:
        if r.duration > 0:
            assert any(m.start <= r.start and r.end <= m.end for m in merged)
    assert merge_regions(merged, min_gap=min_gap) == merged


@settings(max_examples=300, deadline=None)
@given(region_lists(max_duration=5.0), st.floats(0.0, 1.0))
def test_pad_regions_properties(case: tuple[list[R], float], pad: float) -> None:
    regions, total = case
    padded = pad_regions(regions, pad, total)
    assert len(padded) == len(merge_regions(regions, min_gap=0.0))
    for a, b in pairwise(padded):
        assert a.end <= b.start + TOL
    for original, p in zip(merge_regions(regions, min_gap=0.0), padded, strict=True):
        assert 0.0 <= p.start <= original.start and original.end <= p.end <= total + TOL
        assert original.start - p.start <= pad + TOL and p.end - original.end <= pad + TOL


def _scores(pattern: list[tuple[int, float]]) -> FrameScores:
    """Frames from (frame count, probability) runs."""
    values = np.concatenate([np.full(n, p, np.float32) for n, p in pattern])
    return FrameScores(values, VAD_HOP, len(values) * VAD_HOP)


def test_regions_from_scores_rules() -> None:
    # Speech, a 6-frame (0.19 s) dip that is bridged, speech, silence, a 3-frame (0.1 s)
    # blip that is dropped, silence, speech that carries on through 0.4 (between the exit
    # threshold 0.35 and the entry threshold 0.5), silence.
    scores = _scores(
        [(32, 0.0), (32, 0.9), (6, 0.1), (32, 0.9), (62, 0.0), (3, 0.9)]
        + [(62, 0.0), (32, 0.9), (31, 0.4), (31, 0.0)]
    )
    regions = regions_from_scores(scores, pad=0.0)
    frames = [(r.start / VAD_HOP, r.end / VAD_HOP) for r in regions]
    assert frames == [
        (pytest.approx(32), pytest.approx(102)),
        (pytest.approx(229), pytest.approx(292)),
    ]
    padded = regions_from_scores(scores, pad=0.1)
    assert padded[0].start == pytest.approx(regions[0].start - 0.1)
    assert padded[1].end == pytest.approx(regions[1].end + 0.1)
    whole = regions_from_scores(_scores([(90, 0.9)]), pad=0.5)
    assert len(whole) == 1 and whole[0].start == 0.0
    assert whole[0].end == pytest.approx(90 * VAD_HOP)


# --------------------------------------------------------------- real silero-vad


def _decode_16k_mono(path: Path) -> np.ndarray:
    parts = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            parts.extend(f.to_ndarray()[0] for f in resampler.resample(frame))
        parts.extend(f.to_ndarray()[0] for f in resampler.resample(None))
    return np.concatenate(parts).astype(np.float32)


@pytest.fixture(scope="module")
def phrases(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Two espeak-ng utterances, trimmed to where the voice really is, at 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng)")
    folder = tmp_path_factory.mktemp("espeak")
    texts = ["The quick brown fox jumps over the lazy dog.", "Please call me back tomorrow."]
    out = []
    for i, text in enumerate(texts):
        wav = folder / f"{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
        samples = _decode_16k_mono(wav)
        loud = np.flatnonzero(np.abs(samples) > 0.02)
        out.append(samples[loud[0] : loud[-1] + 1])
    return out


def _place(total: float, parts: list[tuple[float, np.ndarray]]) -> np.ndarray:
    audio = np.zeros(round(total * SAMPLE_RATE), np.float32)
    for at, samples in parts:
        i = round(at * SAMPLE_RATE)
        audio[i : i + len(samples)] += samples
    return audio


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _noise(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(7)
    return (0.05 * rng.standard_normal(round(seconds * SAMPLE_RATE))).astype(np.float32)


def test_vad_finds_speech_and_ignores_tone_and_noise(phrases: list[np.ndarray]) -> None:
    first, second = phrases
    truth = [(1.5, 1.5 + len(first) / SAMPLE_RATE), (13.0, 13.0 + len(second) / SAMPLE_RATE)]
    audio = _place(18.0, [(1.5, first), (6.0, _tone(3.0)), (9.5, _noise(2.5)), (13.0, second)])
    progress: list[tuple[float, float]] = []
    regions = speech_regions(audio, on_progress=lambda done, total: progress.append((done, total)))
    assert len(regions) == 2, regions
    for region, (start, end) in zip(regions, truth, strict=True):
        assert region.start == pytest.approx(start, abs=0.3)
        assert region.end == pytest.approx(end, abs=0.3)
    assert progress[-1] == (18.0, 18.0)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    chunks = plan_chunks(regions, total=18.0)
    assert len(chunks) == 1 and chunks[0].regions == tuple(regions)


def test_silence_tone_and_noise_make_no_chunk() -> None:
    for audio in (np.zeros(5 * SAMPLE_RATE, np.float32), _tone(5.0, 1000.0), _noise(5.0)):
        regions = speech_regions(audio)
        assert regions == []
        assert plan_chunks(regions, total=5.0) == []
    assert speech_regions(np.zeros(0, np.float32)) == []


def test_speech_across_a_block_boundary_stays_whole(phrases: list[np.ndarray]) -> None:
    # Blocks are 20 s long: this phrase straddles the first boundary.
    first = phrases[0]
    audio = _place(24.0, [(19.0, first)])
    regions = speech_regions(audio)
    assert len(regions) == 1
    assert regions[0].start == pytest.approx(19.0, abs=0.3)
    assert regions[0].end == pytest.approx(19.0 + len(first) / SAMPLE_RATE, abs=0.3)
    whole = speech_probabilities(audio).values
    head = speech_probabilities(audio[: 700 * 512]).values
    # The state runs on across the boundary: a shorter input (whose second block is
    # shorter) gives the same probabilities, to rounding.
    np.testing.assert_allclose(whole[:700], head, rtol=0, atol=1e-6)


def test_batched_vad_matches_silero_window_by_window_on_real_speech(
    phrases: list[np.ndarray],
) -> None:
    first, second = phrases
    # 45 s: speech across both 20 s block boundaries, a tone and noise, float64 input.
    audio = _place(
        45.0, [(1.0, first), (6.0, _tone(2.0)), (18.5, second), (30.0, _noise(3.0)), (39.0, first)]
    ).astype(np.float64)
    batched = speech_probabilities(audio)
    streamed = speech_probabilities(audio, method="streaming")
    assert len(batched.values) == len(streamed.values) == math.ceil(len(audio) / 512)
    np.testing.assert_allclose(batched.values, streamed.values, rtol=0, atol=1e-4)
    assert batched.values.max() > 0.9 and batched.values.min() < 0.05  # real speech, real quiet
    regions = regions_from_scores(batched)
    assert len(regions) == 3
    assert regions == regions_from_scores(streamed)
    total = len(audio) / SAMPLE_RATE
    assert plan_chunks(regions, total=total, scores=batched) == plan_chunks(
        regions, total=total, scores=streamed
    )
    # A length that is not a whole number of windows: the last one is zero-padded alike.
    odd = audio[: 20 * SAMPLE_RATE + 300]
    np.testing.assert_allclose(
        speech_probabilities(odd).values,
        speech_probabilities(odd, method="streaming").values,
        rtol=0,
        atol=1e-4,
    )


def test_vad_runs_on_its_own_thread_count_and_gives_the_callers_back() -> None:
    import torch

    before = torch.get_num_threads()
    seen: list[int] = []
    try:
        torch.set_num_threads(2)  # what a model backend may have chosen
        speech_probabilities(
            _noise(25.0), on_progress=lambda done, total: seen.append(torch.get_num_threads())
        )
        assert seen and set(seen) == {VAD_THREADS}
        assert torch.get_num_threads() == 2
        seen.clear()
        speech_probabilities(
            _noise(1.0),
            threads=None,
            on_progress=lambda done, total: seen.append(torch.get_num_threads()),
        )
        assert set(seen) == {2}  # threads=None: as the process set it
    finally:
        torch.set_num_threads(before)


def test_vad_memory_stays_bounded() -> None:
    # 60 s of float64 audio (7.7 MB): converting it whole would cost 3.8 MB more.
    audio = np.tile(_noise(1.0).astype(np.float64), 60)
    speech_probabilities(audio[:512])
    tracemalloc.start()
    try:
        scores = speech_probabilities(audio)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(scores.values) == math.ceil(len(audio) / 512)
    assert peak < 2_000_000, peak


def test_vad_leaves_torch_threads_and_import_light() -> None:
    code = (
        "import sys, numpy as np\n"
        "import subplug.segment as s\n"
        "assert 'torch' not in sys.modules\n"
        "import torch\n"
        "torch.set_num_threads(2)\n"
        "s.speech_regions(np.zeros(16000, np.float32))\n"
        "print(torch.get_num_threads())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "2"


def test_jfk_is_speech_in_one_chunk() -> None:
    audio = _decode_16k_mono(JFK)
    total = len(audio) / SAMPLE_RATE
    assert total == pytest.approx(11.0, abs=0.1)
    scores = speech_probabilities(audio)
    regions = regions_from_scores(scores)
    assert sum(r.duration for r in regions) > 0.6 * total
    assert regions[0].start < 1.0 and regions[-1].end > total - 1.0
    chunks = plan_chunks(regions, total=total, scores=scores)
    assert len(chunks) == 1
    assert chunks[0].regions == tuple(regions)
