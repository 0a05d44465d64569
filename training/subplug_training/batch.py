"""The effective batch of a run, kept the recipe's on any number of processes, and the
optimiser steps it makes.

A recipe's ``[train]`` batch is written for one process: ``per_device_train_batch_size``
samples per forward pass, ``gradient_accumulation_steps`` passes per optimiser step, so
the seed's 2 × 8 = 16 samples per step. Data-parallel training multiplies that by the
number of model replicas (processes, or GPUs of one process under ``DataParallel``).
:func:`plan_batch` divides the accumulation (and if it must, the per-device batch) so
that a step still sees the recipe's number of samples, and the learning rate and
schedule keep their meaning. :func:`optimiser_steps` counts the steps the transformers
``Trainer`` will make, the way it and accelerate count them.

Pure Python: nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: ``TrainingArguments``' own defaults, for a recipe that leaves the batch out.
DEFAULT_PER_DEVICE = 8
DEFAULT_ACCUMULATION = 1


@dataclass(frozen=True)
class BatchPlan:
    """How the samples of one optimiser step are split over replicas and passes."""

    per_device: int
    """Samples per forward pass in each replica (``per_device_train_batch_size``)."""
    accumulation: int
    """Forward passes per optimiser step (``gradient_accumulation_steps``)."""
    replicas: int
    """Model replicas training together: processes × GPUs per process."""
    recipe_per_device: int
    recipe_accumulation: int

    @property
    def effective(self) -> int:
        """Samples per optimiser step, over all replicas."""
        return self.per_device * self.accumulation * self.replicas

    @property
    def recipe_batch(self) -> int:
        """Samples per optimiser step that the recipe asks for (on one process)."""
        return self.recipe_per_device * self.recipe_accumulation

    @property
    def adjusted(self) -> bool:
        """Whether the per-device batch or the accumulation differ from the recipe's."""
        return (self.per_device, self.accumulation) != (
            self.recipe_per_device,
            self.recipe_accumulation,
        )

    def describe(self) -> str:
        """One line: ``batch 2 × accumulation 4 × 2 processes = 16 samples per step …``."""
        replicas = "process" if self.replicas == 1 else "processes"
        text = (
            f"batch {self.per_device} × accumulation {self.accumulation} × {self.replicas} "
            f"{replicas} = {self.effective} samples per optimiser step"
        )
        recipe = f"{self.recipe_per_device} × {self.recipe_accumulation}"
        if self.effective != self.recipe_batch:
            return (
                f"{text}; the recipe's {recipe} = {self.recipe_batch} cannot be split evenly "
                f"over {self.replicas} {replicas}"
            )
        if self.replicas == 1:
            return f"{text} (the recipe's)"
        return f"{text}, as the recipe's {recipe} on one process"


def recipe_batch(train: Mapping[str, Any]) -> tuple[int, int]:
    """The recipe's per-device batch and accumulation (``TrainingArguments``' defaults
    where it sets none)."""
    return (
        int(train.get("per_device_train_batch_size", DEFAULT_PER_DEVICE)),
        int(train.get("gradient_accumulation_steps", DEFAULT_ACCUMULATION)),
    )


def plan_batch(per_device: int, accumulation: int, replicas: int) -> BatchPlan:
    """Split the recipe's ``per_device × accumulation`` samples per step over ``replicas``.

    The per-device batch is kept when the accumulation can absorb the replicas (it sets
    the memory a replica needs); otherwise the largest smaller per-device batch that
    divides evenly is used. When no split is exact (16 samples over 3 replicas) the
    closest one is chosen, never below one sample per pass, and :meth:`BatchPlan.describe`
    says so.
    """
    if per_device < 1 or accumulation < 1 or replicas < 1:
        raise ValueError("batch sizes and replicas must be at least 1")
    target = per_device * accumulation
    for size in range(per_device, 0, -1):
        if target % (size * replicas) == 0:
            return BatchPlan(size, target // (size * replicas), replicas, per_device, accumulation)
    size = per_device if per_device * replicas <= target else max(1, target // replicas)
    steps = max(1, round(target / (size * replicas)))
    return BatchPlan(size, steps, replicas, per_device, accumulation)


def optimiser_steps(samples: int, plan: BatchPlan, *, epochs: float, max_steps: int = -1) -> int:
    """Optimiser steps of a run over ``samples`` training samples, as the ``Trainer``
    counts them: accelerate shards the batches over the replicas (the last batches
    padded so every replica gets as many), each replica makes
    ``ceil(its batches / accumulation)`` steps per epoch (at least one), and
    ``max_steps > 0`` overrides the epochs."""
    if max_steps > 0:
        return max_steps
    batches = math.ceil(samples / plan.per_device)
    per_replica = math.ceil(batches / plan.replicas)
    per_epoch = max(math.ceil(per_replica / plan.accumulation), 1)
    return math.ceil(epochs * per_epoch)
