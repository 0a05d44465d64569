"""How fast Gemma 3n E2B will run here: a short measured probe, not a guess.

``subplug doctor`` runs :func:`probe` (about a second): with the int8 kernel ``auto``
picks on this CPU, it measures how fast weights stream through a one-row product (what
bounds a decoding step: every weight is read once per token) and how many int8
operations a 256-row product does per second (what bounds the audio encoder and the
prefill). E2B's own sizes then give the time per 30 s chunk; the ratios between those
kernel figures and whole-model ones come from bench/rtf.py on random-init E2B
(docs/performance.md), so the estimate carries the model's overheads (attention,
norms, Python) as measured there, not as assumed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

#: E2B, int8 with the trimmed vocabulary (counted on the meta device): bytes of weights
#: read per decoding step — the language model's int8 projections (1.844 B), its small
#: float32 ones (39.6 M × 4 bytes) and a head of ~131 k kept rows …
E2B_STEP_BYTES = 1_844_445_184 + 4 * 39_569_760 + 131_072 * 2048
#: … and int8 operations (2 per multiply-add) per 30 s chunk in the audio encoder's
#: projections (0.681 B weights, 750 frames after sub-sampling) and in the prefill's
#: (~215 prompt tokens).
E2B_ENCODER_OPS = 2 * 750 * 681_050_112
E2B_PREFILL_OPS = 2 * 215 * 1_844_445_184
#: Whole-model time ÷ kernel-only prediction, from bench/rtf.py (random-init E2B,
#: int8-trim, one thread, AVX2 only) beside this probe's figures on the same machine
#: (docs/performance.md, "Calibrating doctor's estimate"): steps 1.16, encoder 1.29,
#: prefill 1.35. (Natively, before the allocator change, 1.14, 2.18 and 2.62.)
STEP_OVERHEAD = 1.16
ENCODER_OVERHEAD = 1.3
PREFILL_OVERHEAD = 1.35
#: A batch of 8 decoding steps costs this many single steps (bench/rtf.py: 2.62 with
#: AVX2 only; 2.4 natively before the allocator change).
BATCH8_STEP_COST = 2.6
#: Tokens of a bilingual answer for 30 s of speech.
ANSWER_TOKENS = 240
CHUNK_SECONDS = 30.0


@dataclass(frozen=True)
class SpeedEstimate:
    """What :func:`probe` measured and what it means for E2B."""

    kernel: str
    threads: int
    stream_gbs: float
    """Weights streamed through one-row int8 products, GB/s."""
    gemm_gops: float
    """int8 operations per second in 256-row products, billions."""
    step_s: float
    """Estimated E2B decoding step, one chunk at a time."""
    chunk_s: float
    """Estimated model seconds per 30 s chunk, one at a time."""
    rtf_batch1: float
    rtf_batch8: float
    probe_seconds: float


def probe(kernel: str = "fbgemm", *, matrices: int = 8) -> SpeedEstimate:
    """Measure this CPU with ``kernel`` (on torch's current threads) and estimate E2B."""
    import torch

    from subplug.quant import kernels as qk

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    shape = (8192, 2048)
    built = []
    for _ in range(matrices):  # 16 MiB each: together more than a CPU cache holds
        values = torch.full(shape, 3, dtype=torch.int8)  # speed does not depend on values
        weights = qk.Int8Weights(values, torch.full((shape[0],), 0.01))
        built.append(
            {"fbgemm": qk.PackedInt8, "int-mm": qk.PerTokenInt8}.get(kernel, qk.WeightOnlyInt8)(
                weights
            )
        )
    row = torch.randn(1, shape[1], generator=generator)
    rows = torch.randn(256, shape[1], generator=generator)
    with torch.inference_mode():
        for layer in built:  # warm-up
            layer(row)
        rounds = 3
        began = time.perf_counter()
        for _ in range(rounds):
            for layer in built:
                layer(row)
        stream = rounds * matrices * shape[0] * shape[1] / (time.perf_counter() - began)
        built[0](rows)
        began = time.perf_counter()
        for layer in built[:2]:
            layer(rows)
        gemm = 2 * 2 * 256 * shape[0] * shape[1] / (time.perf_counter() - began)
    step = E2B_STEP_BYTES / stream * STEP_OVERHEAD
    fixed = E2B_ENCODER_OPS / gemm * ENCODER_OVERHEAD + E2B_PREFILL_OPS / gemm * PREFILL_OVERHEAD
    chunk = fixed + ANSWER_TOKENS * step
    batch8 = fixed + ANSWER_TOKENS * step * BATCH8_STEP_COST / 8
    return SpeedEstimate(
        kernel=kernel,
        threads=torch.get_num_threads(),
        stream_gbs=stream / 1e9,
        gemm_gops=gemm / 1e9,
        step_s=step,
        chunk_s=chunk,
        rtf_batch1=chunk / CHUNK_SECONDS,
        rtf_batch8=batch8 / CHUNK_SECONDS,
        probe_seconds=time.perf_counter() - started,
    )
