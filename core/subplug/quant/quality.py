"""How close a quantised (or trimmed) model stays to the float one.

Measured teacher-forced: the float model answers a prompt greedily; then both models read
that same answer, and at every step their logits are compared — the share of steps where
both pick the same next token (top-1 agreement) and the mean cosine similarity of the two
logit vectors. With a trimmed vocabulary both are compared over the kept tokens, and the
share of steps whose float choice is a kept token is reported beside them.

bench/rtf.py reports these figures for full-size E2B; ``subplug models optimize
--check`` records them for a real model, and ``auto`` does not load a saved copy whose
agreement is below :data:`MIN_AGREEMENT` (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: The top-1 agreement below which ``auto`` does not use a quantised setting.
MIN_AGREEMENT = 0.99


@dataclass(frozen=True)
class Agreement:
    """Teacher-forced comparison of a candidate model with the reference."""

    steps: int
    top1: float
    """Share of steps where both choose the same token."""
    cosine: float
    """Mean cosine similarity of the two logit vectors."""
    in_kept: float
    """Share of steps whose reference choice is a kept token (1.0 untrimmed)."""

    def merge(self, other: Agreement) -> Agreement:
        """The figures over both sets of steps."""
        steps = self.steps + other.steps
        if not steps:
            return self

        def mean(a: float, b: float) -> float:
            return (a * self.steps + b * other.steps) / steps

        return Agreement(
            steps,
            mean(self.top1, other.top1),
            mean(self.cosine, other.cosine),
            mean(self.in_kept, other.in_kept),
        )

    def to_json(self) -> dict[str, float | int]:
        return {
            "steps": self.steps,
            "top1": round(self.top1, 5),
            "cosine": round(self.cosine, 6),
            "in_kept": round(self.in_kept, 5),
        }


def compare(
    reference: torch.Tensor, candidate: torch.Tensor, kept_ids: Sequence[int] | None = None
) -> Agreement:
    """Agreement of ``candidate`` logits ``[steps, V']`` with ``reference`` ``[steps, V]``
    (``V'`` = the kept ids' count when ``kept_ids`` is given, else ``V``)."""
    if reference.shape[0] != candidate.shape[0]:
        raise ValueError("both must have logits for the same steps")
    steps = reference.shape[0]
    if not steps:
        return Agreement(0, 1.0, 1.0, 1.0)
    in_kept = 1.0
    if kept_ids is not None:
        index = torch.tensor(list(kept_ids), dtype=torch.long)
        full_choice = reference.argmax(dim=-1)
        kept_set = torch.zeros(reference.shape[-1], dtype=torch.bool)
        kept_set[index] = True
        in_kept = float(kept_set[full_choice].float().mean())
        reference = reference.index_select(-1, index)
    ref = reference.float()
    cand = candidate.float()
    top1 = float((ref.argmax(dim=-1) == cand.argmax(dim=-1)).float().mean())
    cosine = float(torch.nn.functional.cosine_similarity(ref, cand, dim=-1).mean())
    return Agreement(steps, top1, cosine, in_kept)
