"""Call planning from backend capabilities (subplug.calls) and the chunk→texts exchange
that follows it (subplug.transcribe): pure planning tests, and the exchange with fake
backends of each shape (combined, transcribe + target-language call, transcribe + text
translator), registered nowhere: the exchange takes the backend object."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from subplug import calls, prompts
from subplug.errors import SubplugError
from subplug.loading import WithTranslator
from subplug.testing.fake import FakeBackend
from subplug.transcribe import transcribe
from subplug.types import AudioChunk, BackendRequest, Capabilities, ChunkSpan, Task

GEMMA = calls.DEFAULT_CAPABILITIES
WHISPER = Capabilities(
    transcribes=("en", "mn"),
    translates=(("mn", "en"),),
    combined=False,
    detects_language=True,
    plain_text=True,
)
CTC = Capabilities(
    transcribes=("en", "mn"), translates=(), combined=False, detects_language=False, plain_text=True
)
SEAMLESS = Capabilities(
    transcribes=("en", "mn"),
    translates=(("en", "mn"), ("mn", "en")),
    combined=False,
    detects_language=False,
    plain_text=True,
)
ENGLISH_ONLY = Capabilities(
    transcribes=("en",), translates=(), combined=False, detects_language=False, plain_text=True
)
BOTH_WAYS = (("en", "mn"), ("mn", "en"))

sources = st.sampled_from(["auto", "en", "mn"])
targets = st.sampled_from([("en",), ("mn",), ("en", "mn"), ("mn", "en")])


# --------------------------------------------------------------------- planning


@given(sources, targets)
def test_a_backend_that_can_do_everything_is_planned_as_gemma_3n_always_was(
    source: str, wanted: tuple[str, ...]
) -> None:
    planned = calls.planned_source(GEMMA, source)
    assert planned == (None if source == "auto" else source)
    assert calls.first_request(GEMMA, planned, wanted) == prompts.first_request(source, wanted)
    for lang in ("en", "mn"):
        for have in ((lang,), (lang, prompts.other_language(lang))):
            then = calls.follow_up(GEMMA, (), lang, have, wanted)
            expected = None if len(have) == 2 else prompts.followup_request(lang, wanted)
            assert then == calls.FollowUp(expected, None)


def test_without_a_combined_call_the_transcription_comes_first() -> None:
    first = calls.first_request(SEAMLESS, "en", ("en", "mn"))
    assert first.task is Task.TRANSCRIBE and first.source == "en"
    then = calls.follow_up(SEAMLESS, (), "en", ("en",), ("en", "mn"))
    assert then.speech == prompts.followup_request("en", ("en", "mn")) and then.text is None
    # Only the other language wanted: one speech translation, no transcription.
    alone = calls.first_request(SEAMLESS, "en", ("mn",))
    assert alone.task is Task.TRANSLATE and alone.source == "en"


def test_a_direction_the_backend_lacks_goes_to_the_text_translator() -> None:
    # Whisper: Mongolian speech → English itself; English speech → Mongolian by text.
    assert calls.follow_up(WHISPER, BOTH_WAYS, "mn", ("mn",), ("en", "mn")).speech is not None
    then = calls.follow_up(WHISPER, BOTH_WAYS, "en", ("en",), ("en", "mn"))
    assert then == calls.FollowUp(None, ("en", "mn"))
    # Only Mongolian wanted from English speech: transcribe, then translate the text.
    first = calls.first_request(WHISPER, "en", ("mn",))
    assert first.task is Task.TRANSCRIBE and first.source == "en"
    # Nothing to translate with: nothing follows.
    assert calls.follow_up(CTC, (), "en", ("en",), ("en", "mn")) == calls.FollowUp(None, None)


def test_auto_is_the_only_language_of_a_backend_that_cannot_detect() -> None:
    assert calls.planned_source(ENGLISH_ONLY, "auto") == "en"
    assert calls.planned_source(WHISPER, "auto") is None
    calls.check_request(ENGLISH_ONLY, BOTH_WAYS, "auto", ("en", "mn"), model="m")


@pytest.mark.parametrize(
    ("caps", "translator", "source", "wanted", "reference", "words"),
    [
        (ENGLISH_ONLY, BOTH_WAYS, "mn", ("en", "mn"), "cannot-transcribe", "not transcribe Mongo"),
        (CTC, BOTH_WAYS, "auto", ("en",), "cannot-detect-language", "--source en"),
        (CTC, (), "en", ("en", "mn"), "cannot-translate", "--translator nllb-200"),
        (WHISPER, (), "auto", ("en", "mn"), "cannot-translate", "Mongolian for English"),
        (WHISPER, (("mn", "en"),), "en", ("mn",), "cannot-translate", "does not translate it"),
        (Capabilities(transcribes=("fr",)), (), "auto", ("en",), "cannot-transcribe", "neither"),
    ],
)  # fmt: skip
def test_a_job_the_models_cannot_serve_is_one_clear_error(
    caps: Capabilities,
    translator: Sequence[tuple[str, str]],
    source: str,
    wanted: tuple[str, ...],
    reference: str,
    words: str,
) -> None:
    with pytest.raises(SubplugError) as raised:
        calls.check_request(
            caps,
            translator,
            source,
            wanted,
            model="the-model",
            translator_name="the-translator" if translator else None,
        )
    assert raised.value.reference == reference
    assert words in f"{raised.value.message} {raised.value.hint}"


@given(sources, targets)
def test_what_the_check_allows_the_exchange_can_give(source: str, wanted: tuple[str, ...]) -> None:
    """For every capability shape: a job the check lets through has a first call the
    backend can make and, for each language it could be in, a way to every target."""
    for caps, translator in ((GEMMA, ()), (WHISPER, BOTH_WAYS), (CTC, BOTH_WAYS), (SEAMLESS, ())):
        try:
            calls.check_request(caps, translator, source, wanted, model="m")
        except SubplugError:
            continue
        planned = calls.planned_source(caps, source)
        first = calls.first_request(caps, planned, wanted)
        assert first.task is not Task.BOTH or caps.combined
        assert first.source is not None or caps.detects_language
        if first.task is Task.TRANSLATE:
            assert (first.source, prompts.other_language(first.source or "en")) in caps.translates
        for lang in [planned] if planned else list(caps.transcribes):
            gives = {lang} if first.task is Task.TRANSCRIBE else set(wanted)
            then = calls.follow_up(caps, translator, lang, tuple(gives), wanted)
            if then.speech is not None or then.text is not None:
                gives.add(prompts.other_language(lang))
            assert set(wanted) <= gives, (caps, source, wanted, lang)


# ---------------------------------------------------------------- the exchange


class Shaped(FakeBackend):
    """The fake backend with stated capabilities; plain answers where they say so."""

    def __init__(self, caps: Capabilities) -> None:
        super().__init__(script=self.answer)
        self.capabilities = caps

    def answer(self, request: BackendRequest) -> str:
        index = request.chunk.index
        if request.task is Task.BOTH:
            return f"### English\n\nHello {index}.\n\n---\n\n### Mongolian\n\nСайн {index}."
        lang = request.source or "en"
        if request.task is Task.TRANSLATE:
            lang = prompts.other_language(lang)
        return f"Hello {request.chunk.index}." if lang == "en" else f"Сайн {request.chunk.index}."


class Dictionary:
    name = "dictionary"
    directions = BOTH_WAYS

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str, str]] = []
        self.closed = False

    def translate(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        self.calls.append((list(texts), source, target))
        word = "Сайн" if target == "mn" else "Hello"
        return [f"{word} {text.split()[-1]}" for text in texts]

    def close(self) -> None:
        self.closed = True

    def describe(self) -> dict[str, str]:
        return {"translator": "dictionary"}


def _chunks(count: int = 2) -> list[AudioChunk]:
    return [
        AudioChunk(ChunkSpan(i, 2.0 * i, 2.0 * i + 1.0, ()), np.zeros(16_000, np.float32))
        for i in range(count)
    ]


def test_gemma_shape_is_one_combined_call() -> None:
    backend = Shaped(GEMMA)
    out = transcribe(backend, _chunks(), "en", ("en", "mn"))
    assert [[r.task for r in call] for call in backend.calls] == [[Task.BOTH, Task.BOTH]]
    assert [t.texts for t in out] == [
        {"en": "Hello 0.", "mn": "Сайн 0."},
        {"en": "Hello 1.", "mn": "Сайн 1."},
    ]


def test_seamless_shape_is_a_transcription_then_a_target_language_call() -> None:
    backend = Shaped(SEAMLESS)
    out = transcribe(backend, _chunks(), "mn", ("en", "mn"))
    assert [[(r.task, r.source) for r in call] for call in backend.calls] == [
        [(Task.TRANSCRIBE, "mn")] * 2,
        [(Task.TRANSLATE, "mn")] * 2,
    ]
    assert out[1].texts == {"mn": "Сайн 1.", "en": "Hello 1."} and out[1].source_lang == "mn"


def test_ctc_shape_is_a_transcription_then_the_text_translator() -> None:
    backend = Shaped(CTC)
    translator = Dictionary()
    both = WithTranslator(backend, translator)
    fractions: list[float] = []
    out = transcribe(both, _chunks(), "en", ("mn", "en"), progress=fractions.append)
    assert [[r.task for r in call] for call in backend.calls] == [[Task.TRANSCRIBE] * 2]
    assert translator.calls == [(["Hello 0.", "Hello 1."], "en", "mn")]
    assert out[0].texts == {"en": "Hello 0.", "mn": "Сайн 0."}
    assert out[0].raw == ("Hello 0.", "Сайн 0.")
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    both.close()
    assert backend.closed and translator.closed


def test_whisper_shape_translates_mongolian_itself_and_english_by_text() -> None:
    backend = Shaped(WHISPER)
    translator = Dictionary()
    both = WithTranslator(backend, translator)
    out = transcribe(both, _chunks(1), "mn", ("en", "mn"))
    assert [[r.task for r in call] for call in backend.calls] == [
        [Task.TRANSCRIBE],
        [Task.TRANSLATE],
    ]
    assert translator.calls == [] and out[0].texts == {"mn": "Сайн 0.", "en": "Hello 0."}
    out = transcribe(both, _chunks(1), "en", ("en", "mn"))
    assert translator.calls == [(["Hello 0."], "en", "mn")] and out[0].texts["mn"] == "Сайн 0."


def test_auto_source_with_a_detecting_backend_reads_the_language_from_the_script() -> None:
    backend = Shaped(WHISPER)
    backend.script = lambda request: "Сайн уу." if request.task is Task.TRANSCRIBE else "Hello."
    out = transcribe(WithTranslator(backend, Dictionary()), _chunks(1), "auto", ("en", "mn"))
    assert out[0].source_lang == "mn" and out[0].texts == {"mn": "Сайн уу.", "en": "Hello."}
    assert backend.calls[0][0].source is None and backend.calls[1][0].task is Task.TRANSLATE


def test_plain_answers_are_taken_as_they_are_in_the_language_asked_for() -> None:
    """A plain backend's Latin-looking Mongolian (names, random tiny models) stays
    Mongolian: only instruction-following answers go through the tolerant parser."""
    backend = Shaped(CTC)
    backend.script = lambda request: "English: Ulaanbaatar"
    (out,) = transcribe(backend, _chunks(1), "mn", ("mn",))
    assert out.texts == {"mn": "English: Ulaanbaatar"}
