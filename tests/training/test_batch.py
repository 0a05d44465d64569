"""The effective batch stays the recipe's on any number of processes, and the step count
matches how accelerate shards the batches and the Trainer counts optimiser steps."""

from __future__ import annotations

import math

import pytest
from accelerate.data_loader import BatchSamplerShard
from hypothesis import given, settings
from hypothesis import strategies as st
from subplug_training.batch import optimiser_steps, plan_batch, recipe_batch
from subplug_training.recipe import load_recipe


def test_the_seeds_batch_over_several_processes() -> None:
    per_device, accumulation = recipe_batch(load_recipe().train)
    assert (per_device, accumulation) == (2, 8)
    one = plan_batch(per_device, accumulation, 1)
    assert (one.per_device, one.accumulation, one.effective, one.adjusted) == (2, 8, 16, False)
    assert one.describe() == (
        "batch 2 × accumulation 8 × 1 process = 16 samples per optimiser step (the recipe's)"
    )
    for replicas, accumulation_then in ((2, 4), (4, 2), (8, 1)):
        plan = plan_batch(2, 8, replicas)
        assert (plan.per_device, plan.accumulation) == (2, accumulation_then)
        assert plan.effective == 16
        assert plan.describe().endswith("as the recipe's 2 × 8 on one process")
    # 16 replicas: one sample per pass keeps 16 (2 per pass would make 32).
    sixteen = plan_batch(2, 8, 16)
    assert (sixteen.per_device, sixteen.accumulation, sixteen.effective) == (1, 1, 16)


def test_a_batch_that_cannot_be_split_evenly_says_so() -> None:
    three = plan_batch(2, 8, 3)
    assert (three.per_device, three.accumulation, three.effective) == (2, 3, 18)
    assert "the recipe's 2 × 8 = 16 cannot be split evenly over 3 processes" in three.describe()
    many = plan_batch(2, 8, 32)
    assert (many.per_device, many.accumulation, many.effective) == (1, 1, 32)


@given(per_device=st.integers(1, 16), accumulation=st.integers(1, 32), replicas=st.integers(1, 64))
def test_the_plan_keeps_the_recipes_batch_whenever_it_can(
    per_device: int, accumulation: int, replicas: int
) -> None:
    target = per_device * accumulation
    plan = plan_batch(per_device, accumulation, replicas)
    assert plan.per_device >= 1 and plan.accumulation >= 1
    assert plan.per_device <= per_device  # never more memory per pass than the recipe's
    exact = any(target % (b * replicas) == 0 for b in range(1, per_device + 1))
    if exact:
        assert plan.effective == target
    else:
        assert plan.effective != target and "cannot be split evenly" in plan.describe()


@settings(deadline=None)
@given(
    samples=st.integers(1, 500),
    per_device=st.integers(1, 8),
    accumulation=st.integers(1, 16),
    replicas=st.integers(1, 8),
    epochs=st.sampled_from([1.0, 2.0, 2.5]),
)
def test_steps_follow_accelerates_sharding(
    samples: int, per_device: int, accumulation: int, replicas: int, epochs: float
) -> None:
    from torch.utils.data import BatchSampler, SequentialSampler

    plan = plan_batch(per_device, accumulation, replicas)
    batches = BatchSampler(SequentialSampler(range(samples)), plan.per_device, drop_last=False)
    # What each process iterates (accelerate pads the last batches: all get as many).
    per_process = {
        len(BatchSamplerShard(batches, replicas, index, even_batches=True))
        for index in range(replicas)
    }
    assert len(per_process) == 1
    [length] = per_process
    # The Trainer's count of optimiser steps per epoch (Trainer.set_initial_training_values).
    per_epoch = max(length // plan.accumulation + int(length % plan.accumulation > 0), 1)
    assert optimiser_steps(samples, plan, epochs=epochs) == math.ceil(epochs * per_epoch)
    assert optimiser_steps(samples, plan, epochs=epochs, max_steps=7) == 7


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        plan_batch(0, 8, 2)
