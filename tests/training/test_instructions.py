"""Instruction choice follows the seed's rules; splits and shuffles are datasets' own."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from subplug.prompts import INSTRUCTIONS
from subplug_training.data import Kept, ScanResult, Source, seed_shuffle, seed_split
from subplug_training.instructions import choose, plan_samples

# The seed's table (fine_tune_gemma3n_on_audio.py), written out independently:
# instruction text → (audio languages, output languages, all outputs required).
SEED_TABLE = {
    "Transcribe this audio.": (("en", "mn"), ("en", "mn"), False),
    "Transcribe this audio into Mongolian.": (("en", "mn"), ("mn",), False),
    "Transcribe this English audio into Mongolian.": (("en",), ("mn",), False),
    "Transcribe this audio into English.": (("en", "mn"), ("en",), False),
    "Transcribe this Mongolian audio into English.": (("mn",), ("en",), False),
    "Translate this audio into Mongolian.": (("en",), ("mn",), False),
    "Translate this audio into English.": (("mn",), ("en",), False),
    "Transcribe this audio into English, and then translate it into Mongolian.": (
        ("en",),
        ("en", "mn"),
        True,
    ),
    "Transcribe this audio into Mongolian, and then translate it into English.": (
        ("mn",),
        ("mn", "en"),
        True,
    ),
}
PAIRED = {"en": "Hello world.", "mn": "Сайн уу, дэлхий."}


def seed_possible(audio: str, texts: dict[str, str]) -> list[int]:
    """The seed's possible_instructions, as instruction numbers."""
    both = bool(texts.get("en")) and bool(texts.get("mn"))
    numbers = []
    for number, (text, (audios, outputs, all_out)) in enumerate(SEED_TABLE.items(), 1):
        assert INSTRUCTIONS[number - 1] == text  # subplug.prompts holds the seed's strings
        if both:
            ok = audio in audios
        else:
            ok = bool(texts.get(audio)) and audio in audios and audio in outputs and not all_out
        if ok:
            numbers.append(number)
    return numbers


@pytest.mark.parametrize(
    ("audio", "texts", "expected"),
    [
        ("en", PAIRED, [1, 2, 3, 4, 6, 8]),
        ("mn", PAIRED, [1, 2, 4, 5, 7, 9]),
        ("en", {"en": "Hello."}, [1, 4]),
        ("mn", {"mn": "Сайн уу."}, [1, 2]),
        ("mn", {"en": "Hello."}, []),
    ],
)
def test_eligible_instructions_are_the_seeds(audio, texts, expected) -> None:  # type: ignore[no-untyped-def]
    assert seed_possible(audio, texts) == expected
    assert choose(audio, texts, (1, 2, 3, 4, 5, 6, 7, 8, 9), random.Random(0)) == expected


def _result(name: str, rows: list[tuple[str, dict[str, str]]], split: str = "train") -> ScanResult:
    source = Source(name, {"p": []}, {split: []}, None, {}, Path("."))
    kept = {"train": [], "test": []}
    for index, (audio, texts) in enumerate(rows):
        kept[split].append(Kept(("p", index), f"{name}/p/{index}", audio, texts, 2.0))
    return ScanResult(source, kept, Counter(), {})


def test_seed_mode_draws_one_instruction_per_sample_like_random_choice() -> None:
    rows = [("en", PAIRED)] * 3000 + [("mn", PAIRED)] * 3000 + [("mn", {"mn": "Сайн."})] * 600
    plan = plan_samples([_result("mbspeech", rows)], "seed", 42)
    assert len(plan.train) == len(rows)
    # The same draws random.Random(42).choice makes over the rows, in order.
    rng = random.Random(42)
    expected = [rng.choice(seed_possible(audio, texts)) for audio, texts in rows]
    by_row = {sample.row[1]: sample.instruction for sample in plan.train}
    assert [by_row[i] for i in range(len(rows))] == expected
    # Distribution: each allowed instruction about equally often, nothing else.
    for audio, texts, first, last in (("en", PAIRED, 0, 3000), ("mn", PAIRED, 3000, 6000)):
        counts = Counter(by_row[i] for i in range(first, last))
        assert sorted(counts) == seed_possible(audio, texts)
        assert all(400 <= n <= 600 for n in counts.values()), counts  # 500 ± 4.5 sd
    mono = Counter(by_row[i] for i in range(6000, 6600))
    assert sorted(mono) == [1, 2] and all(240 <= n <= 360 for n in mono.values())
    # Fixed seed, fixed plan; another seed, other draws.
    assert plan_samples([_result("mbspeech", rows)], "seed", 42) == plan
    assert plan_samples([_result("mbspeech", rows)], "seed", 7).train != plan.train


def test_targets_follow_the_seeds_labels() -> None:
    rows = [("en", PAIRED), ("mn", PAIRED), ("mn", {"mn": "Баярлалаа."})]
    plan = plan_samples([_result("ted-en", rows)], tuple(range(1, 10)), 42)
    targets = {(s.row[1], s.instruction): s.target for s in plan.train}
    assert targets[(0, 1)] == "Hello world." and targets[(1, 1)] == "Сайн уу, дэлхий."
    assert targets[(0, 2)] == targets[(0, 3)] == targets[(0, 6)] == "Сайн уу, дэлхий."
    assert targets[(1, 4)] == targets[(1, 5)] == targets[(1, 7)] == "Hello world."
    assert targets[(0, 8)] == (
        "### English\n\nHello world.\n\n---\n\n### Mongolian\n\nСайн уу, дэлхий."
    )
    # Mongolian audio: the Mongolian section first.
    assert targets[(1, 9)] == (
        "### Mongolian\n\nСайн уу, дэлхий.\n\n---\n\n### English\n\nHello world."
    )
    assert {n for (row, n) in targets if row == 2} == {1, 2}
    assert targets[(2, 1)] == targets[(2, 2)] == "Баярлалаа."


def test_listed_instructions_give_every_sample_each_that_fits() -> None:
    rows = [("en", PAIRED), ("mn", PAIRED), ("en", {"en": "Hi there."})]
    plan = plan_samples([_result("manifest:x", rows)], (1, 6, 7), 42)
    got = sorted((s.row[1], s.instruction) for s in plan.train)
    assert got == [(0, 1), (0, 6), (1, 1), (1, 7), (2, 1)]


def test_draws_run_through_sources_in_order_train_before_test() -> None:
    first = _result("mbspeech", [("mn", {"mn": "Нэг."})] * 5)
    held = _result("mbspeech", [("mn", {"mn": "Хоёр."})] * 5, split="test")
    first.kept["test"] = held.kept["test"]
    second = _result("common-voice", [("mn", {"mn": "Гурав."})] * 5)
    plan = plan_samples([first, second], "seed", 42)
    rng = random.Random(42)
    draws = [rng.choice([1, 2]) for _ in range(15)]
    train = {(s.source, s.row[1]): s.instruction for s in plan.train}
    assert [train[("mbspeech", i)] for i in range(5)] == draws[:5]
    assert [s.instruction for s in plan.test] == draws[5:10]
    assert [train[("common-voice", i)] for i in range(5)] == draws[10:]
    # Training samples are shuffled as datasets' shuffle(seed=42) orders 10 rows.
    concatenated = [("mbspeech", i) for i in range(5)] + [("common-voice", i) for i in range(5)]
    order = seed_shuffle(10, 42)
    assert [(s.source, s.row[1]) for s in plan.train] == [concatenated[i] for i in order]


def test_split_and_shuffle_are_datasets_own() -> None:
    import datasets

    for count in (1, 9, 10, 11, 137):
        table = datasets.Dataset.from_dict({"i": list(range(count))})
        if count > 1:
            split = table.train_test_split(test_size=0.1, seed=42)
            train, test = seed_split(count, 0.1, 42)
            assert split["train"]["i"] == train and split["test"]["i"] == test
        assert table.shuffle(seed=42)["i"] == seed_shuffle(count, 42)
    assert seed_split(5, 0.0, 42) == ([0, 1, 2, 3, 4], [])
