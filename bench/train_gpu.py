"""The seed's training run on GPUs, measured in one command: samples/s per GPU for a
randomly initialised Gemma 3n E2B (the real shape, audio-only, bfloat16) trained with the
seed's recipe, on one GPU and on every visible GPU (one process per GPU, torchrun), and
what that means against the seed's ~4 h for its 2-epoch run on one RTX 4090.

    python bench/train_gpu.py                       # every visible GPU
    python bench/train_gpu.py --samples 20000       # and the hours for 2 epochs of them

The seed's recipe: LoRA r 32 on its plain module list (audio tower included), its labels
(prompt trained too), per-device batch 2 × accumulation 8, gradient checkpointing,
bfloat16. Each sample carries ``--seconds`` of audio (noise: speed does not depend on
the values) and an answer of ``--answer-words`` words; the real data's mix of clip and
answer lengths sets the real speed, so treat the estimate as that of data like this.
``--samples``: the training samples of your data (``subplug train --dry-run`` prints
them). Each row is measured by ``bench/train_step.py`` in processes of its own. Nothing
is asserted; without a CUDA GPU it says what it would run and stops.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import train_step  # noqa: E402  (the bench next to this file)

SEED_HOURS = 4.0
SEED_EPOCHS = 2
SEED_GPU = "one RTX 4090"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per sample")
    parser.add_argument("--answer-words", type=int, default=30, help="words per answer")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs (default: all visible)")
    parser.add_argument("--samples", type=int, default=None, help="training samples to plan")
    args = parser.parse_args()

    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = min(args.gpus or count, count)
    runs = sorted({1, gpus}) if gpus else [1, 2]
    bench = argparse.Namespace(
        steps=args.steps,
        warmup=args.warmup,
        batch=2,
        accumulation=8,
        seconds=args.seconds,
        answer_words=args.answer_words,
        device="cuda",
        threads=None,
        full_size=True,
    )
    if not gpus:
        print(train_step.describe_full_size())
        print(
            "No CUDA GPU here. On a GPU machine this runs, for 1 GPU and for every visible "
            f"GPU ({', '.join(str(n) for n in runs)} here if there were 2):"
        )
        for n in runs:
            print(f"  {' '.join(train_step.child_command(bench, 'seed', n))}")
        return 2

    rows = []
    for n in runs:
        row = train_step.measure(bench, "seed", n)
        if row is None:
            return 1
        rows.append(row)
    print(
        f"E2B shape, random weights, the seed's recipe on {rows[0]['device']}: batch 2 × "
        f"accumulation 8 per GPU, {args.seconds:g} s audio and {args.answer_words} words "
        "per sample"
    )
    print(
        f"{'GPUs':>5}{'s/step':>9}{'samples/step':>14}{'samples/s':>11}{'per GPU':>9}"
        f"{'scaling':>9}{'peak GiB/GPU':>14}"
    )
    one = rows[0]["samples_per_second"]
    for row in rows:
        n = row["processes"]
        print(
            f"{n:>5}{row['seconds_per_step']:>9.2f}{row['samples_per_step']:>14}"
            f"{row['samples_per_second']:>11.2f}{row['samples_per_second'] / n:>9.2f}"
            f"{row['samples_per_second'] / (n * one):>9.2f}{row['peak_mib'] / 1024:>14.1f}"
        )
    in_seed_time = one * SEED_HOURS * 3600 / SEED_EPOCHS
    print(
        f"The seed trained {SEED_EPOCHS} epochs in ~{SEED_HOURS:g} h on {SEED_GPU}; at "
        f"{one:.2f} samples/s one of these GPUs does {SEED_EPOCHS} epochs of "
        f"{in_seed_time:,.0f} samples in that time."
    )
    if args.samples:
        for row in rows:
            hours = SEED_EPOCHS * args.samples / row["samples_per_second"] / 3600
            print(
                f"  {SEED_EPOCHS} epochs of {args.samples:,} samples on {row['processes']} "
                f"GPU(s): {hours:.1f} h"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
