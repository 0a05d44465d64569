"""Voice activity detection and the chunk plan.

The model hears at most 30 s at a time and gives no timestamps, so the media's audio is
cut into chunks of whole speech regions, at pauses. This module has two halves:

* :func:`speech_probabilities` / :func:`speech_regions` run silero-vad (torch, imported
  lazily) over 16 kHz mono audio, 20 s of 32 ms windows per model call, on one torch
  thread, in bounded extra memory;
* everything else is pure planning over :class:`~subplug.types.SpeechRegion` lists and
  per-frame scores: no model, no torch, exhaustively testable.

Typical use::

    scores = speech_probabilities(samples)
    regions = regions_from_scores(scores)
    chunks = plan_chunks(regions, total=scores.total, scores=scores)
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from subplug.types import SAMPLE_RATE, ChunkSpan, SpeechRegion

#: Samples per silero-vad window at 16 kHz.
VAD_WINDOW = 512
#: Seconds between two VAD frames (one probability per window).
VAD_HOP = VAD_WINDOW / SAMPLE_RATE

ProgressCallback = Callable[[float, float], None]
"""Called as ``on_progress(seconds_done, total_seconds)``."""

# Windows per block handed to the model loop: 20 s of audio. Only one block is ever
# converted (when the caller's array is not float32) and progress is reported per block.
_BLOCK_WINDOWS = 625

# Chunk-plan costs. Every chunk costs 1 (one model call, and less context for the model);
# a cut costs _CUT_WEIGHT at a zero-length pause (inside speech), falling off with the
# pause length on a _PAUSE_SCALE seconds scale; a chunk shorter than min_chunk costs up to
# _TINY_WEIGHT more. The weights keep "one chunk when it fits" and "cut at the clearly
# longer pause" ahead of the tiny-chunk preference.
_CUT_WEIGHT = 2.0
_PAUSE_SCALE = 0.25
_TINY_WEIGHT = 0.15
# Tie-break towards the even cut when several frames are (nearly) equally quiet.
_BALANCE_WEIGHT = 0.05
_EPS = 1e-9


# ----------------------------------------------------------------------- frame scores


@dataclass(frozen=True, eq=False)
class FrameScores:
    """Per-frame scores on a fixed hop, starting at 0 s; lower means quieter.

    Speech probabilities from :func:`speech_probabilities`, or any frame energy a caller
    computes (for example RMS per 32 ms). Frame ``i`` covers
    ``[i * hop, (i + 1) * hop)``; its time is its centre.
    """

    values: np.ndarray
    """One score per frame (1-D)."""
    hop: float
    """Seconds between frames."""
    total: float
    """Seconds of audio the frames cover (the last frame may be partial)."""

    def quietest(self, start: float, end: float, *, target: float | None = None) -> float | None:
        """Centre time of the quietest frame whose centre lies in ``[start, end]``.

        Near-ties are broken towards ``target`` (default: the middle of the range).
        Returns ``None`` when no frame centre falls in the range.
        """
        if end < start or len(self.values) == 0:
            return None
        first = max(0, math.ceil(start / self.hop - 0.5))
        last = min(len(self.values) - 1, math.floor(end / self.hop - 0.5))
        if last < first:
            return None
        centres = (np.arange(first, last + 1, dtype=np.float64) + 0.5) * self.hop
        if target is None:
            target = (start + end) / 2
        width = max(end - start, self.hop)
        values = np.asarray(self.values[first : last + 1], dtype=np.float64)
        keys = values + _BALANCE_WEIGHT * np.abs(centres - target) / width
        return float(centres[int(np.argmin(keys))])


# ------------------------------------------------------------------------ silero-vad

#: Torch threads the VAD runs on (restored afterwards). Measured with bench/vad.py on a
#: 2-core machine (docs/performance.md): the batched model is as fast on one thread as on
#: two when the machine is idle, and several times faster when it is busy, where extra
#: threads spin waiting for a core.
VAD_THREADS = 1

_model_lock = threading.Lock()
_model: Any = None
_batched: Any = None
_BATCHED_UNAVAILABLE = object()


def load_vad() -> Any:
    """The process's silero-vad model: a :func:`new_streaming_vad` loaded once, shared by
    :func:`speech_probabilities` (whose calls are serialised). Raises ``ImportError``
    when silero-vad (or torch) is not installed.
    """
    global _model
    if _model is None:
        _model = new_streaming_vad()
    return _model


def new_streaming_vad() -> Any:
    """A silero-vad model of the caller's own, for streaming use: one 32 ms window per
    call, its recurrent state carried from call to call (``reset_states()`` starts
    over), so it must not be shared with another stream. ``subplug live`` loads one per
    session; :func:`load_vad` keeps one for the process.

    Loaded from the wheel's own files (offline). Importing ``silero_vad`` calls
    ``torch.set_num_threads(1)``; the caller's thread setting (which a backend may rely
    on) is put back. Raises ``ImportError`` when silero-vad (or torch) is not installed.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        import silero_vad

        return silero_vad.load_silero_vad()
    finally:
        torch.set_num_threads(threads)


class _BatchedVad:
    """silero-vad's 16 kHz model run a block of windows at a time.

    The streaming model computes, for each 32 ms window (with the previous window's
    last 64 samples as context), spectrogram features and a convolutional encoding that
    depend on that window alone, then one step of an LSTM that carries the state, then a
    1x1 convolution and a sigmoid. Here the per-window parts run on a whole block of
    windows as one batch, and the LSTM steps through the block in one call of
    ``torch.nn.LSTM`` with the model's own LSTM cell weights. Same computation, same
    weights; probabilities agree with the window-by-window model to ~1e-5 (rounding
    order), for about a fortieth of the time.
    """

    def __init__(self, model: Any) -> None:
        import torch

        net = model._model
        self.context = int(net.context_size_samples)
        self.stft = net.stft
        self.encoder = net.encoder
        self.head = net.decoder.decoder
        cell = net.decoder.rnn
        self.lstm = torch.nn.LSTM(cell.weight_ih.shape[1], cell.weight_hh.shape[1])
        self.lstm.load_state_dict(
            {
                "weight_ih_l0": cell.weight_ih,
                "weight_hh_l0": cell.weight_hh,
                "bias_ih_l0": cell.bias_ih,
                "bias_hh_l0": cell.bias_hh,
            }
        )
        self.lstm.eval()

    def run(
        self,
        samples: np.ndarray,
        probs: np.ndarray,
        on_block: Callable[[int], None],
    ) -> None:
        """Fill ``probs`` (one per window of ``samples``) block by block; ``on_block`` is
        called with the samples done after each block."""
        import torch

        n = len(samples)
        context = np.zeros(self.context, dtype=np.float32)
        state: Any = None
        block_samples = _BLOCK_WINDOWS * VAD_WINDOW
        for block_start in range(0, n, block_samples):
            piece = samples[block_start : block_start + block_samples]
            windows = -(-len(piece) // VAD_WINDOW)
            # Context, then the block (converted to float32 here, once), zero-padded to
            # whole windows as the streaming model pads the last one.
            buffer = np.zeros(self.context + windows * VAD_WINDOW, dtype=np.float32)
            buffer[: self.context] = context
            buffer[self.context : self.context + len(piece)] = piece
            context = buffer[-self.context :].copy()
            frames = torch.from_numpy(buffer).unfold(0, self.context + VAD_WINDOW, VAD_WINDOW)
            features = self.encoder(self.stft(frames)).squeeze(-1)
            hidden, state = self.lstm(features.unsqueeze(1), state)
            out = self.head(hidden.squeeze(1).unsqueeze(-1))
            first = block_start // VAD_WINDOW
            probs[first : first + windows] = out.reshape(windows, -1).mean(dim=1).numpy()
            del buffer, frames, features, hidden, out
            on_block(block_start + len(piece))


def _batched_vad() -> _BatchedVad | None:
    """The batched runner, or ``None`` when this silero-vad's model is not laid out as
    expected (then the window-by-window model runs)."""
    global _batched
    if _batched is None:
        try:
            _batched = _BatchedVad(load_vad())
        except (AttributeError, TypeError, RuntimeError):
            _batched = _BATCHED_UNAVAILABLE
    return None if _batched is _BATCHED_UNAVAILABLE else _batched


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with torch on ``count`` threads; the caller's setting is restored."""
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def speech_probabilities(
    samples: np.ndarray,
    *,
    on_progress: ProgressCallback | None = None,
    threads: int | None = VAD_THREADS,
    method: str = "batched",
) -> FrameScores:
    """Silero-vad speech probability for every 512-sample window of ``samples``.

    ``samples`` is 16 kHz mono audio (1-D; float32 avoids any conversion). The model's
    recurrent state is carried across the whole array, so results do not depend on any
    block size (beyond float rounding, ~1e-9); extra memory is one 20 s block at most
    plus one float32 per 32 ms of audio (1.3 MB for three hours). The last partial
    window is zero-padded.
    ``on_progress(seconds_done, total_seconds)`` is called after every 20 s of audio.

    ``method="batched"`` (default) runs 20 s of windows per model call
    (:class:`_BatchedVad`); ``"streaming"`` runs silero-vad's own window-by-window
    model, the reference the batched way is checked against (tests, bench/vad.py).
    Torch runs on ``threads`` threads meanwhile (``None``: as the process set it) and
    the process's setting is restored afterwards, so a model backend is unaffected. The
    model is loaded once per process; calls are serialised because it carries state.
    """
    if samples.ndim != 1:
        raise ValueError(f"samples must be 1-D mono audio, got shape {samples.shape}")
    if method not in ("batched", "streaming"):
        raise ValueError(f"method must be 'batched' or 'streaming', not {method!r}")
    n = len(samples)
    total = n / SAMPLE_RATE
    frames = -(-n // VAD_WINDOW)
    probs = np.zeros(frames, dtype=np.float32)
    if frames == 0:
        if on_progress is not None:
            on_progress(0.0, 0.0)
        return FrameScores(probs, VAD_HOP, total)

    import torch

    def on_block(done: int) -> None:
        if on_progress is not None:
            on_progress(done / SAMPLE_RATE, total)

    with _model_lock, _torch_threads(threads), torch.inference_mode():
        batched = _batched_vad() if method == "batched" else None
        if batched is not None:
            batched.run(samples, probs, on_block)
        else:
            _stream(load_vad(), samples, probs, on_block)
    return FrameScores(probs, VAD_HOP, total)


def _stream(model: Any, samples: np.ndarray, probs: np.ndarray, on_block: Any) -> None:
    """silero-vad's own streaming use: one model call per window, state carried."""
    import torch

    n = len(samples)
    block_samples = _BLOCK_WINDOWS * VAD_WINDOW
    model.reset_states()
    frame = 0
    for block_start in range(0, n, block_samples):
        block = np.ascontiguousarray(
            samples[block_start : block_start + block_samples], dtype=np.float32
        )
        tensor = torch.from_numpy(block)
        for offset in range(0, len(block), VAD_WINDOW):
            window = tensor[offset : offset + VAD_WINDOW]
            if len(window) < VAD_WINDOW:
                window = torch.nn.functional.pad(window, (0, VAD_WINDOW - len(window)))
            probs[frame] = model(window, SAMPLE_RATE).item()
            frame += 1
        done = block_start + len(block)
        del tensor, block, window  # free this block before converting the next
        on_block(done)
    model.reset_states()


def regions_from_scores(
    scores: FrameScores,
    *,
    threshold: float = 0.5,
    min_speech: float = 0.25,
    min_silence: float = 0.3,
    pad: float = 0.1,
) -> list[SpeechRegion]:
    """Speech regions from per-frame speech probabilities (pure; silero's rules).

    Speech starts at a frame ``>= threshold`` and stops at a frame below
    ``threshold - 0.15`` (hysteresis); pauses shorter than ``min_silence`` are bridged,
    regions shorter than ``min_speech`` dropped, and the rest padded by ``pad`` on each
    side (never overlapping a neighbour, never beyond ``[0, scores.total]``).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    negative = max(threshold - 0.15, 0.01)
    raw: list[SpeechRegion] = []
    start: float | None = None
    for i, p in enumerate(scores.values.tolist()):
        if start is None:
            if p >= threshold:
                start = i * scores.hop
        elif p < negative:
            raw.append(SpeechRegion(start, min(i * scores.hop, scores.total)))
            start = None
    if start is not None:
        raw.append(SpeechRegion(start, scores.total))
    merged = merge_regions(raw, min_gap=min_silence)
    kept = [r for r in merged if r.duration >= min_speech]
    return pad_regions(kept, pad, scores.total)


def speech_regions(
    samples: np.ndarray,
    *,
    threshold: float = 0.5,
    min_speech: float = 0.25,
    min_silence: float = 0.3,
    pad: float = 0.1,
    on_progress: ProgressCallback | None = None,
) -> list[SpeechRegion]:
    """Speech regions of 16 kHz mono ``samples`` found by silero-vad, in time order.

    :func:`speech_probabilities` followed by :func:`regions_from_scores`; see those for
    the parameters. Call them separately to keep the probabilities for
    :func:`plan_chunks` (they tell it where long speech is quietest).
    """
    scores = speech_probabilities(samples, on_progress=on_progress)
    return regions_from_scores(
        scores, threshold=threshold, min_speech=min_speech, min_silence=min_silence, pad=pad
    )


# ---------------------------------------------------------------- pure region algebra


def merge_regions(regions: Sequence[SpeechRegion], *, min_gap: float) -> list[SpeechRegion]:
    """Sort ``regions`` and merge those separated by less than ``min_gap`` seconds.

    Overlapping or touching regions are always merged; empty regions (``end <= start``)
    are dropped.
    """
    merged: list[SpeechRegion] = []
    for region in sorted(regions, key=lambda r: (r.start, r.end)):
        if region.end <= region.start:
            continue
        if merged:
            last = merged[-1]
            gap = region.start - last.end
            if gap <= 0 or gap < min_gap:
                merged[-1] = SpeechRegion(last.start, max(last.end, region.end))
                continue
        merged.append(region)
    return merged


def pad_regions(regions: Sequence[SpeechRegion], pad: float, total: float) -> list[SpeechRegion]:
    """Widen each region by ``pad`` seconds on both sides, within ``[0, total]``.

    Regions are first sorted and overlapping ones merged. Where two regions are closer
    than ``2 * pad`` they meet in the middle of their gap instead of overlapping.
    """
    ordered = merge_regions(
        [SpeechRegion(max(r.start, 0.0), min(r.end, total)) for r in regions], min_gap=0.0
    )
    padded: list[SpeechRegion] = []
    for i, region in enumerate(ordered):
        before = region.start - ordered[i - 1].end if i > 0 else region.start
        after = ordered[i + 1].start - region.end if i + 1 < len(ordered) else total - region.end
        left = min(pad, before / 2 if i > 0 else before)
        right = min(pad, after / 2 if i + 1 < len(ordered) else after)
        padded.append(SpeechRegion(region.start - max(left, 0.0), region.end + max(right, 0.0)))
    return padded


def split_long_region(
    region: SpeechRegion,
    max_len: float,
    *,
    min_len: float = 1.0,
    scores: FrameScores | None = None,
) -> list[SpeechRegion]:
    """Cut continuous speech longer than ``max_len`` into the fewest touching pieces.

    Each of the ``ceil(duration / max_len)`` pieces is at most ``max_len`` long. Each cut
    goes at the quietest frame of ``scores`` (VAD probabilities or energies) among the
    places that still leave the rest coverable, avoiding pieces shorter than ``min_len``
    where possible; without scores (or no frame in range) the cuts are even. A region
    that fits is returned unchanged.
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    duration = region.duration
    if duration <= max_len + _EPS:
        return [region]
    pieces_needed = math.ceil(duration / max_len - _EPS)
    min_piece = min(max(min_len, 0.0), duration / (2 * pieces_needed))
    pieces: list[SpeechRegion] = []
    prev = region.start
    for j in range(1, pieces_needed):
        rest = pieces_needed - j
        lo = max(region.end - rest * max_len, prev + min_piece)
        hi = min(prev + max_len, region.end - rest * min_piece)
        if lo > hi:
            lo, hi = region.end - rest * max_len, prev + max_len
        target = prev + (region.end - prev) / (rest + 1)
        cut = scores.quietest(lo, hi, target=target) if scores is not None else None
        cut = min(max(target if cut is None else cut, lo), hi)
        pieces.append(SpeechRegion(prev, cut))
        prev = cut
    pieces.append(SpeechRegion(prev, region.end))
    return pieces


# ------------------------------------------------------------------------ chunk plan


def _cut_cost(gap: float) -> float:
    return _CUT_WEIGHT / (1.0 + max(gap, 0.0) / _PAUSE_SCALE)


def _tiny_cost(span: float, min_chunk: float) -> float:
    if min_chunk <= 0 or span >= min_chunk:
        return 0.0
    return _TINY_WEIGHT * (1.0 - span / min_chunk)


def plan_chunks(
    regions: Sequence[SpeechRegion],
    *,
    total: float,
    max_chunk: float = 30.0,
    min_chunk: float = 3.0,
    pad: float = 0.2,
    scores: FrameScores | None = None,
) -> list[ChunkSpan]:
    """Group speech regions into model chunks of at most ``max_chunk`` seconds.

    Regions are clipped to ``[0, total]``, sorted and merged where they overlap. Speech
    longer than ``max_chunk`` is cut with :func:`split_long_region` (at the quietest
    frame of ``scores`` when given). Consecutive regions are then grouped by dynamic
    programming over all cut sets: each chunk costs 1, each cut costs less the longer
    its pause, and a chunk whose speech spans less than ``min_chunk`` costs a little
    more. So speech that fits in one chunk is one chunk, and cuts land in the longest
    pauses rather than the first one that fits.

    Chunks exist only where speech is. Each extends up to ``pad`` seconds into the
    silence around it, never past the middle of the pause to its neighbour, never beyond
    ``[0, total]`` and never beyond ``max_chunk``. ``ChunkSpan.regions`` are the (split)
    speech regions inside; chunks are indexed 0..n-1 in time order. Deterministic.
    """
    if max_chunk <= 0:
        raise ValueError(f"max_chunk must be positive, got {max_chunk}")
    if total < 0 or pad < 0 or min_chunk < 0:
        raise ValueError("total, pad and min_chunk must not be negative")
    clipped = [SpeechRegion(max(r.start, 0.0), min(r.end, total)) for r in regions]
    pieces: list[SpeechRegion] = []
    min_piece = min(min_chunk, max_chunk / 4)
    for region in merge_regions(clipped, min_gap=0.0):
        pieces.extend(split_long_region(region, max_chunk, min_len=min_piece, scores=scores))
    if not pieces:
        return []

    n = len(pieces)
    best = [0.0] + [math.inf] * n
    first_of = [0] * (n + 1)
    for b in range(1, n + 1):
        end = pieces[b - 1].end
        for a in range(b - 1, -1, -1):
            span = end - pieces[a].start
            if span > max_chunk + _EPS and a < b - 1:
                break
            cost = best[a] + 1.0 + _tiny_cost(span, min_chunk)
            if a > 0:
                cost += _cut_cost(pieces[a].start - pieces[a - 1].end)
            if cost < best[b]:
                best[b] = cost
                first_of[b] = a
    groups: list[tuple[SpeechRegion, ...]] = []
    b = n
    while b > 0:
        a = first_of[b]
        groups.append(tuple(pieces[a:b]))
        b = a
    groups.reverse()

    chunks: list[ChunkSpan] = []
    for i, group in enumerate(groups):
        start, end = group[0].start, group[-1].end
        before = start - groups[i - 1][-1].end if i > 0 else start
        after = groups[i + 1][0].start - end if i + 1 < len(groups) else total - end
        left = max(0.0, min(pad, before / 2 if i > 0 else before))
        right = max(0.0, min(pad, after / 2 if i + 1 < len(groups) else after))
        room = max(0.0, max_chunk - (end - start))
        if left + right > room:
            scale = room / (left + right)
            left, right = left * scale, right * scale
        chunks.append(ChunkSpan(i, max(0.0, start - left), min(total, end + right), group))
    return chunks
