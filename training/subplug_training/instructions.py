"""Which instruction each training sample gets, and its target text.

The instruction strings, the rules saying which instructions a sample may use, and the
target format all come from :mod:`subplug.prompts` (the one source of truth the engine
also uses), so an adapter is trained on exactly the words ``subplug generate`` sends.

Two modes:

* ``"seed"``: the seed's rule. One instruction per sample, drawn with
  ``random.choice`` among those its texts allow, from one ``random.Random(seed)``
  consumed in the seed's order (sources in :data:`~subplug_training.data.SEED_ORDER`,
  each source's training rows, then its test rows). The seed's own script drew inside
  ``datasets.map(num_proc=8)`` worker processes, which Python reseeds from the OS
  after ``fork``, so its exact draws cannot be reproduced by anyone; this is the
  single-process draw its code describes.
* a tuple of instruction numbers: every sample gets each listed instruction its texts
  allow (no draw). ``(1, 6, 7)`` trains what ``subplug generate`` asks with
  ``--source auto``; ``(8, 9)`` what it asks with a known source.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from subplug.prompts import INSTRUCTION_SPECS, eligible_instructions, training_target
from subplug.types import Task

from subplug_training.data import SPLITS, RowId, ScanResult, seed_shuffle


@dataclass(frozen=True)
class Sample:
    """One training (or evaluation) example: a row's audio, an instruction, a target."""

    source: str
    """Name of the source the row comes from."""
    row: RowId
    key: str
    audio_language: str
    instruction: int
    """1-based instruction number (:data:`subplug.prompts.INSTRUCTIONS`)."""
    target: str
    texts: Mapping[str, str]
    seconds: float


@dataclass(frozen=True)
class SamplePlan:
    """The samples of a run: training samples in training order, and test samples."""

    train: tuple[Sample, ...]
    test: tuple[Sample, ...]

    def counts(self, split: str) -> dict[int, int]:
        """Samples per instruction number in ``split``."""
        counts: dict[int, int] = {}
        for sample in self.train if split == "train" else self.test:
            counts[sample.instruction] = counts.get(sample.instruction, 0) + 1
        return dict(sorted(counts.items()))


def choose(
    audio_language: str, texts: Mapping[str, str], mode: str | Sequence[int], rng: random.Random
) -> list[int]:
    """Instruction numbers for one row: one draw (``"seed"``) or each listed one that fits."""
    allowed = eligible_instructions(audio_language, texts)
    if not allowed:
        return []
    if isinstance(mode, str):
        return [rng.choice(allowed)]  # "seed"
    return [number for number in mode if number in allowed]


def plan_samples(results: Sequence[ScanResult], mode: str | Sequence[int], seed: int) -> SamplePlan:
    """Turn scanned sources (in the seed's order) into samples.

    Instructions are drawn (or listed) source by source, training rows before test rows;
    the training samples are then concatenated in source order and shuffled as
    ``datasets``' ``shuffle(seed=seed)`` does.
    """
    rng = random.Random(seed)
    by_split: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    for result in results:
        for split in SPLITS:
            for kept in result.kept.get(split, []):
                for number in choose(kept.audio_language, kept.texts, mode, rng):
                    by_split[split].append(
                        Sample(
                            source=result.source.name,
                            row=kept.row,
                            key=kept.key,
                            audio_language=kept.audio_language,
                            instruction=number,
                            target=training_target(number, kept.audio_language, kept.texts),
                            texts=kept.texts,
                            seconds=kept.seconds,
                        )
                    )
    train = by_split["train"]
    order = seed_shuffle(len(train), seed)
    return SamplePlan(tuple(train[i] for i in order), tuple(by_split["test"]))


# ------------------------------------------------------------------ asking


@dataclass(frozen=True)
class Expectation:
    """How an instruction is asked for one sample and what its answer is compared with."""

    task: Task
    source: str | None
    """What the parser is told about the source language (``None`` for instruction 1,
    as ``subplug generate --source auto`` asks it)."""
    outputs: tuple[str, ...]
    """Output languages, in answer order."""


def expectation(number: int, audio_language: str) -> Expectation:
    """The task, parser hint and output languages of instruction ``number`` on audio in
    ``audio_language`` (mirrors :func:`subplug.prompts.training_target`)."""
    spec = INSTRUCTION_SPECS[number - 1]
    if spec.all_outputs:
        return Expectation(Task.BOTH, audio_language, spec.output_languages)
    if audio_language in spec.output_languages:
        source = None if number == 1 else audio_language
        return Expectation(Task.TRANSCRIBE, source, (audio_language,))
    return Expectation(Task.TRANSLATE, audio_language, (spec.output_languages[0],))
