"""Prompts: the nine training instructions, the choice per ``--source``, and the tolerant
parser of model output with each drift the model is known to show."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from subplug import prompts
from subplug.prompts import (
    combined_target,
    detect_language,
    first_request,
    followup_request,
    max_new_tokens_for,
    parse_output,
)
from subplug.types import Task

# The seed's training strings (REFERENCE.md §1), copied here on purpose: the test pins
# the wording the adapter was trained on, so an edit to prompts.py cannot drift from it.
SEED_INSTRUCTIONS = [
    "Transcribe this audio.",
    "Transcribe this audio into Mongolian.",
    "Transcribe this English audio into Mongolian.",
    "Transcribe this audio into English.",
    "Transcribe this Mongolian audio into English.",
    "Translate this audio into Mongolian.",
    "Translate this audio into English.",
    "Transcribe this audio into English, and then translate it into Mongolian.",
    "Transcribe this audio into Mongolian, and then translate it into English.",
]

EN = "Hello there, how are you today?"
MN = "Сайн байна уу, өнөөдөр ямар байна?"


# ------------------------------------------------------------------ instructions


def test_the_nine_instructions_are_the_training_strings() -> None:
    assert list(prompts.INSTRUCTIONS) == SEED_INSTRUCTIONS
    for number, text in enumerate(SEED_INSTRUCTIONS, start=1):
        assert prompts.instruction(number) == text
        assert prompts.instruction_number(text) == number
        assert prompts.INSTRUCTION_SPECS[number - 1].text == text
        assert prompts.INSTRUCTION_SPECS[number - 1].number == number


@pytest.mark.parametrize("number", [0, 10, -1])
def test_instruction_numbers_outside_1_to_9_are_refused(number: int) -> None:
    with pytest.raises(ValueError, match="1 to 9"):
        prompts.instruction(number)


def test_an_untrained_wording_is_not_an_instruction() -> None:
    with pytest.raises(ValueError, match="not a training instruction"):
        prompts.instruction_number("Transcribe this audio")  # no full stop


def test_combined_target_is_the_seed_format() -> None:
    assert combined_target("en", {"en": "Hi.", "mn": "Сайн уу."}) == (
        "### English\n\nHi.\n\n---\n\n### Mongolian\n\nСайн уу."
    )
    assert combined_target("mn", {"en": "Hi.", "mn": "Сайн уу."}) == (
        "### Mongolian\n\nСайн уу.\n\n---\n\n### English\n\nHi."
    )


def test_training_eligibility_follows_the_seed_rules() -> None:
    # Paired English audio: every instruction trained for English audio.
    assert prompts.eligible_instructions("en", ["en", "mn"]) == (1, 2, 3, 4, 6, 8)
    assert prompts.eligible_instructions("mn", ["en", "mn"]) == (1, 2, 4, 5, 7, 9)
    # Mongolian-only samples use 1 or 2.
    assert prompts.eligible_instructions("mn", ["mn"]) == (1, 2)
    assert prompts.eligible_instructions("en", ["mn"]) == ()
    texts = {"en": "Hi.", "mn": "Сайн уу."}
    assert prompts.training_target(1, "mn", texts) == "Сайн уу."
    assert prompts.training_target(6, "en", texts) == "Сайн уу."
    assert prompts.training_target(9, "mn", texts) == combined_target("mn", texts)


# ---------------------------------------------------------------------- planning


@pytest.mark.parametrize(
    ("source", "targets", "number", "task", "known"),
    [
        ("auto", ("en", "mn"), 1, Task.TRANSCRIBE, None),
        ("auto", ("en",), 1, Task.TRANSCRIBE, None),
        (None, ("mn",), 1, Task.TRANSCRIBE, None),
        ("en", ("en", "mn"), 8, Task.BOTH, "en"),
        ("mn", ("mn", "en"), 9, Task.BOTH, "mn"),
        ("en", ("en",), 4, Task.TRANSCRIBE, "en"),
        ("mn", ("mn",), 2, Task.TRANSCRIBE, "mn"),
        ("en", ("mn",), 6, Task.TRANSLATE, "en"),
        ("mn", ("en",), 7, Task.TRANSLATE, "mn"),
    ],
)
def test_first_request_per_source(
    source: str | None, targets: tuple[str, ...], number: int, task: Task, known: str | None
) -> None:
    planned = first_request(source, targets)
    assert planned.instruction == prompts.instruction(number)
    assert planned.task is task
    assert planned.source == known


@pytest.mark.parametrize(
    ("source", "targets", "number"),
    [
        ("en", ("en", "mn"), 6),
        ("mn", ("en", "mn"), 7),
        ("en", ("en",), None),
        ("mn", ("mn",), None),
        (None, ("en", "mn"), None),
    ],
)
def test_followup_after_detection(
    source: str | None, targets: tuple[str, ...], number: int | None
) -> None:
    planned = followup_request(source, targets)
    if number is None:
        assert planned is None
    else:
        assert planned is not None
        assert planned.instruction == prompts.instruction(number)
        assert planned.task is Task.TRANSLATE


def test_bad_targets_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        first_request("en", ())
    with pytest.raises(ValueError):
        first_request("en", ("de",))


def test_token_budget_grows_with_audio_and_is_capped() -> None:
    assert max_new_tokens_for(0.2, Task.TRANSCRIBE) == max_new_tokens_for(1.0, Task.TRANSCRIBE)
    assert max_new_tokens_for(10, Task.TRANSCRIBE) < max_new_tokens_for(20, Task.TRANSCRIBE)
    assert max_new_tokens_for(10, Task.BOTH) > 2 * max_new_tokens_for(10, Task.TRANSLATE)
    assert max_new_tokens_for(300, Task.BOTH) == max_new_tokens_for(30, Task.BOTH)
    assert max_new_tokens_for(30, Task.BOTH) == prompts.MAX_NEW_TOKENS


# ----------------------------------------------------------------------- scripts


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Hello world", "en"),
        ("Сайн байна уу", "mn"),
        ("2024 онд Google компани", "mn"),
        ("2024 онд Google-д", "en"),  # more Latin letters than Cyrillic
        ("12:30 — 45%", None),
        ("", None),
        ("Ab Аб", None),  # a tie
        ("Café naïve", "en"),
    ],
)
def test_detect_language_by_script(text: str, lang: str | None) -> None:
    assert detect_language(text) == lang


def test_strong_detection_needs_a_clear_majority() -> None:
    mixed = "Hello world Сайн"  # 10 Latin, 4 Cyrillic letters
    assert detect_language(mixed) == "en"
    assert detect_language(mixed, strong=True) is None


# ----------------------------------------------------------------------- parsing

DRIFTS = {
    "trained format": f"### English\n\n{EN}\n\n---\n\n### Mongolian\n\n{MN}",
    "missing separator": f"### English\n\n{EN}\n\n### Mongolian\n\n{MN}",
    "other heading level": f"## English\n{EN}\n---\n# Mongolian\n{MN}",
    "colon labels": f"English: {EN}\nMongolian: {MN}",
    "labels on their own line": f"English:\n{EN}\n\nMongolian:\n{MN}",
    "bold labels": f"**English:** {EN}\n\n**Mongolian:** {MN}",
    "Mongolian-language labels": f"Англи хэл: {EN}\nМонгол хэл: {MN}",
    "swapped order": f"### Mongolian\n\n{MN}\n\n---\n\n### English\n\n{EN}",
    "stray whitespace": (
        f"\n\n   ### English  \n\n\n  {EN}   \n\t\n---\n\n### Mongolian\n\n  {MN}\n\n"
    ),
    "no labels at all": f"{EN}\n\n{MN}",
    "code fence": f"```\n### English\n{EN}\n---\n### Mongolian\n{MN}\n```",
    "end-of-turn and junk": f"### English\n{EN}\n---\n### Mongolian\n{MN}<end_of_turn>\nmore",
    "leading model turn": f"<start_of_turn>model\n### English\n{EN}\n### Mongolian\n{MN}",
    "crlf line ends": f"### English\r\n\r\n{EN}\r\n\r\n---\r\n\r\n### Mongolian\r\n\r\n{MN}",
    "zero-width characters": f"### English\n\n\u200b{EN}\n\n---\n\n### Mongolian\n\n{MN}\ufeff",
    "translation qualifier": f"English transcription: {EN}\nMongolian translation: {MN}",
    "bare headings kept out": f"Transcription:\n{EN}\n\nTranslation:\n{MN}",
    "bracketed labels": f"[English] {EN}\n[Mongolian] {MN}",
}


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_combined_answers_parse_despite_drift(drift: str) -> None:
    assert parse_output(DRIFTS[drift], Task.BOTH, "en") == {"en": EN, "mn": MN}


def test_order_of_the_result_follows_the_answer() -> None:
    assert list(parse_output(DRIFTS["swapped order"], Task.BOTH, "en")) == ["mn", "en"]


def test_a_label_in_the_wrong_script_is_overruled() -> None:
    # The model labelled the sections the wrong way round; the scripts are plain.
    answer = f"### English\n\n{MN}\n\n---\n\n### Mongolian\n\n{EN}"
    assert parse_output(answer, Task.BOTH, "mn") == {"mn": MN, "en": EN}


def test_a_missing_section_is_filled_from_unlabelled_text() -> None:
    answer = f"### English\n\n{EN}\n\n{MN}"
    assert parse_output(answer, Task.BOTH, "en") == {"en": EN, "mn": MN}


def test_a_combined_answer_with_one_language_returns_what_is_there() -> None:
    assert parse_output(f"### English\n\n{EN}", Task.BOTH, "en") == {"en": EN}


def test_duplicated_sections_keep_the_first() -> None:
    answer = f"English: {EN}\nMongolian: {MN}\nEnglish: something else entirely"
    assert parse_output(answer, Task.BOTH, "en") == {"en": EN, "mn": MN}


def test_text_that_starts_with_a_language_word_is_not_a_label() -> None:
    answer = "English is spoken here."
    assert parse_output(answer, Task.TRANSCRIBE, "en") == {"en": answer}


@pytest.mark.parametrize(
    ("answer", "task", "source", "expected"),
    [
        (EN, Task.TRANSCRIBE, "en", {"en": EN}),
        (MN, Task.TRANSCRIBE, "mn", {"mn": MN}),
        (MN, Task.TRANSLATE, "en", {"mn": MN}),
        (EN, Task.TRANSLATE, "mn", {"en": EN}),
        (MN, Task.TRANSCRIBE, None, {"mn": MN}),
        # The model answered in the other language: the script wins.
        (MN, Task.TRANSCRIBE, "en", {"mn": MN}),
        # Labels on a single answer are dropped.
        (f"Mongolian: {MN}", Task.TRANSLATE, "en", {"mn": MN}),
        # No letters: only the task can say which language it is.
        ("1, 2, 3.", Task.TRANSCRIBE, "en", {"en": "1, 2, 3."}),
        ("1, 2, 3.", Task.TRANSCRIBE, None, {}),
        ("", Task.BOTH, "en", {}),
        ("<end_of_turn>", Task.TRANSCRIBE, "en", {}),
    ],
)
def test_single_answers(
    answer: str, task: Task, source: str | None, expected: dict[str, str]
) -> None:
    assert parse_output(answer, task, source) == expected


def test_a_multi_line_transcription_is_joined() -> None:
    answer = "Hello there,\nhow are you\n\ntoday?"
    assert parse_output(answer, Task.TRANSCRIBE, "en") == {"en": "Hello there, how are you today?"}


# The alphabet of each language, with spaces and light punctuation.
_en_text = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz ABC,.?!'"), min_size=1, max_size=80
).filter(lambda t: sum(c.isalpha() for c in t) >= 1)
_mn_text = st.text(
    alphabet=st.sampled_from("абвгдеёжзийклмноөпрстуүфхцчшщъыьэюя АБВ,.?!"), min_size=1, max_size=80
).filter(lambda t: sum(c.isalpha() for c in t) >= 1)


@settings(max_examples=200, deadline=None)
@given(en=_en_text, mn=_mn_text, source=st.sampled_from(["en", "mn"]))
def test_combined_target_round_trips_through_the_parser(en: str, mn: str, source: str) -> None:
    answer = combined_target(source, {"en": en, "mn": mn})
    parsed = parse_output(answer, Task.BOTH, source)
    assert parsed == {
        "en": prompts.normalise_whitespace(en),
        "mn": prompts.normalise_whitespace(mn),
    }
    assert list(parsed)[0] == source
