"""The backlog policy (pure): which waiting utterances are dropped, which are merged
into one request, and how many such groups go to the model as one batch.

Utterances that ended more than ``max_lag`` seconds before the newest input are dropped,
so captions never fall ever further behind; the rest are merged oldest first into
groups of at most ``merge_limit`` seconds of audio (:data:`MERGE_GAP` between them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from subplug.live.utterances import Utterance
from subplug.types import SAMPLE_RATE, AudioChunk, ChunkSpan, SpeechRegion

if TYPE_CHECKING:
    import numpy as np

#: Silence put between utterances merged into one request.
MERGE_GAP = 0.3


@dataclass(frozen=True)
class WorkPlan:
    """What the model thread does next: drop some utterances, caption some groups."""

    dropped: tuple[Utterance, ...]
    groups: tuple[tuple[Utterance, ...], ...]
    """Each merged into one request (a caption); all sent to the model as one batch.
    Empty when only drops were due."""
    rest: tuple[Utterance, ...]

    @property
    def batch(self) -> tuple[Utterance, ...]:
        """The first group (the one-group plan of earlier versions)."""
        return self.groups[0] if self.groups else ()


def plan_work(
    waiting: Sequence[Utterance],
    head: float,
    *,
    max_lag: float,
    merge_limit: float,
    max_groups: int = 1,
) -> WorkPlan:
    """The backlog policy (pure).

    1. Drop every waiting utterance that ended more than ``max_lag`` seconds before
       ``head`` (the input clock of the newest audio read); ``max_lag == 0`` never drops.
    2. Take the oldest remaining utterance and merge the following ones into it while the
       merged audio (their durations plus :data:`MERGE_GAP` between them) stays within
       ``merge_limit`` seconds: a group. Form up to ``max_groups`` groups that way, in
       order.
    """
    if max_lag > 0:
        dropped = tuple(u for u in waiting if head - u.end > max_lag)
        kept = [u for u in waiting if head - u.end <= max_lag]
    else:
        dropped, kept = (), list(waiting)
    groups: list[tuple[Utterance, ...]] = []
    taken = 0
    while taken < len(kept) and len(groups) < max(1, max_groups):
        group: list[Utterance] = []
        total = 0.0
        for utterance in kept[taken:]:
            extra = utterance.duration + (MERGE_GAP if group else 0.0)
            if group and total + extra > merge_limit:
                break
            group.append(utterance)
            total += extra
        groups.append(tuple(group))
        taken += len(group)
    return WorkPlan(dropped, tuple(groups), tuple(kept[taken:]))


def merge_chunk(batch: Sequence[Utterance], index: int) -> AudioChunk:
    """One model input for ``batch``: the utterances' audio with short silences between."""
    import numpy as np

    gap = np.zeros(int(MERGE_GAP * SAMPLE_RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    for k, utterance in enumerate(batch):
        if k:
            parts.append(gap)
        parts.append(utterance.samples.astype(np.float32, copy=False))
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    regions = tuple(SpeechRegion(u.start, u.end) for u in batch)
    span = ChunkSpan(index, batch[0].start, batch[-1].end, regions)
    return AudioChunk(span, samples)
