"""Cue shaping: line breaking, cue cutting and timing (pure functions, property tests)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from subplug.cues import chunk_cues, shape_track
from subplug.linebreak import break_cost, wrap
from subplug.types import ChunkSpan, Cue, CueOptions, SpeechRegion, Transcript

EPS = 1e-6
OPTIONS = CueOptions()

EN_STORY = (
    "So this is the story of how we started the company. It was a cold winter, and "
    "nobody believed in us. But we kept going, day after day, until the first customer "
    "called."
)
MN_STORY = (
    "Энэ бол бид компаниа хэрхэн эхлүүлсэн түүх юм. Хүйтэн өвөл байсан бөгөөд хэн ч "
    "бидэнд итгээгүй. Гэхдээ бид өдөр бүр үргэлжлүүлсээр эхний үйлчлүүлэгч залгах "
    "хүртэл явсан."
)


def _letters(text: str) -> str:
    """The text without whitespace: what must survive cutting and wrapping."""
    return "".join(text.split())


def _chunk(regions: list[tuple[float, float]], pad: float = 0.2, index: int = 0) -> ChunkSpan:
    spans = tuple(SpeechRegion(a, b) for a, b in regions)
    return ChunkSpan(index, max(0.0, spans[0].start - pad), spans[-1].end + pad, spans)


def _check_lines(cue: Cue, max_chars: int, max_lines: int) -> None:
    assert 1 <= len(cue.lines) <= max_lines, cue
    for line in cue.lines:
        assert 0 < len(line) <= max_chars, cue
        assert line == line.strip()


# ------------------------------------------------------------------- break points


@pytest.mark.parametrize(
    ("previous", "following", "lang", "cost"),
    [
        ("company.", "It", "en", 0.0),
        ("done?!", "Then", "en", 0.0),
        ('said."', "Then", "en", 0.0),
        ("Mr.", "Smith", "en", 8.0),  # an abbreviation is not a sentence end
        ("winter,", "and", "en", 1.0),
        ("wait", "— then", "en", 1.0),
        ("cold", "and", "en", 2.0),
        ("house", "with", "en", 2.0),
        ("red", "house", "en", 4.0),
        ("the", "house", "en", 8.0),  # a line must not end with an article
        ("юм.", "Хүйтэн", "mn", 0.0),
        ("байсан", "бөгөөд", "mn", 2.0),  # before a conjunction
        ("гэж", "хэлсэн", "mn", 2.0),  # after a clause-final particle
        ("өвөл", "байсан", "mn", 8.0),  # an auxiliary leans on the word before it
        ("ном", "нь", "mn", 8.0),
        ("улаан", "байшин", "mn", 4.0),
    ],
)
def test_break_cost(previous: str, following: str, lang: str, cost: float) -> None:
    assert break_cost(previous, following, lang) == cost


# ------------------------------------------------------------------- line breaking


def test_short_text_is_one_line() -> None:
    assert wrap("  Hello   there.  ", "en", max_chars=42, max_lines=2) == ("Hello there.",)
    assert wrap("", "en", max_chars=42, max_lines=2) == ()


def test_lines_break_before_a_conjunction_not_after_an_article() -> None:
    lines = wrap(
        "We went to the market because we needed some fresh bread",
        "en",
        max_chars=42,
        max_lines=2,
    )
    assert lines == ("We went to the market", "because we needed some fresh bread")


def test_lines_break_after_a_comma_in_mongolian() -> None:
    lines = wrap(
        "Би өнөөдөр гэртээ оройтож ирсэн, тэгээд нохой аль хэдийн унтсан байсан.",
        "mn",
        max_chars=42,
        max_lines=2,
    )
    assert lines == ("Би өнөөдөр гэртээ оройтож ирсэн,", "тэгээд нохой аль хэдийн унтсан байсан.")


def test_text_that_cannot_fit_is_refused() -> None:
    assert wrap("word " * 30, "en", max_chars=42, max_lines=2) is None


def test_an_overlong_word_is_hard_split_as_a_last_resort() -> None:
    lines = wrap("Supercalifragilisticexpialidocious end", "en", max_chars=20, max_lines=3)
    assert lines is not None
    assert all(len(line) <= 20 for line in lines)
    assert _letters("".join(lines)) == "Supercalifragilisticexpialidociousend"


def _greedy_lines(words: list[str], max_chars: int) -> int:
    """Fewest lines any layout can use: first-fit, with over-long words split."""
    pieces = [w[i : i + max_chars] for w in words for i in range(0, len(w), max_chars)]
    lines, width = 0, max_chars + 1
    for piece in pieces:
        if width + 1 + len(piece) <= max_chars:
            width += 1 + len(piece)
        else:
            lines, width = lines + 1, len(piece)
    return lines


_word = st.text(alphabet="abcdeféxyzабвгдөү,.", min_size=1, max_size=14)


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(_word, min_size=1, max_size=25),
    max_chars=st.integers(10, 50),
    max_lines=st.integers(1, 3),
    lang=st.sampled_from(["en", "mn"]),
)
def test_wrap_properties(words: list[str], max_chars: int, max_lines: int, lang: str) -> None:
    text = " ".join(words)
    lines = wrap(text, lang, max_chars=max_chars, max_lines=max_lines)
    needed = _greedy_lines(words, max_chars)
    if lines is None:
        assert needed > max_lines
        return
    assert needed <= max_lines
    assert len(lines) == needed  # the fewest lines that fit
    assert all(0 < len(line) <= max_chars for line in lines)
    assert _letters("".join(lines)) == _letters(text)
    if all(len(w) <= max_chars for w in words):
        assert " ".join(lines) == text  # no word was split


# ----------------------------------------------------------------- one chunk's cues


def test_a_story_over_three_phrases_is_cut_at_the_pauses_in_both_languages() -> None:
    chunk = _chunk([(1.0, 4.5), (5.2, 9.0), (9.6, 13.0)])
    transcript = Transcript(chunk, "en", {"en": EN_STORY, "mn": MN_STORY})
    result = chunk_cues(transcript, OPTIONS)
    en, mn = result["en"], result["mn"]
    # English and Mongolian change together on screen.
    assert [(c.start, c.end) for c in en] == [(c.start, c.end) for c in mn]
    assert en[0].lines == ("So this is the story", "of how we started the company.")
    # The first pause (4.5–5.2 s) separates the first two cues exactly.
    assert en[0].end == pytest.approx(4.5)
    assert en[1].start == pytest.approx(5.2)
    for track, text in ((en, EN_STORY), (mn, MN_STORY)):
        assert _letters("".join(line for cue in track for line in cue.lines)) == _letters(text)
        for cue in track:
            _check_lines(cue, 42, 2)
            assert OPTIONS.min_duration - EPS <= cue.duration <= OPTIONS.max_duration + EPS
            assert len(" ".join(cue.lines)) / cue.duration <= OPTIONS.max_cps + 1e-3


def test_long_continuous_speech_is_cut_into_cues_of_at_most_seven_seconds() -> None:
    text = " ".join([EN_STORY] * 2)  # 341 characters in 29 s: 11.8 per second
    transcript = Transcript(_chunk([(0.5, 29.5)]), "en", {"en": text})
    cues = chunk_cues(transcript, OPTIONS)["en"]
    assert len(cues) >= 5  # 29 s of speech in cues of at most 7 s
    assert _letters("".join(line for cue in cues for line in cue.lines)) == _letters(text)
    for cue in cues:
        _check_lines(cue, 42, 2)
        assert OPTIONS.min_duration - EPS <= cue.duration <= OPTIONS.max_duration + EPS
        assert len(" ".join(cue.lines)) / cue.duration <= OPTIONS.max_cps + 1e-3
    for left, right in pairwise(cues):
        assert right.start - left.end >= OPTIONS.min_gap - EPS


def test_a_short_word_is_shown_long_enough_to_read() -> None:
    transcript = Transcript(_chunk([(2.0, 2.3)], pad=0.6), "en", {"en": "Yes."})
    (cue,) = chunk_cues(transcript, OPTIONS)["en"]
    assert cue.duration >= OPTIONS.min_duration - EPS
    # It borrows silence around the word, at most max_lead on either side.
    assert cue.start >= 2.0 - OPTIONS.max_lead - EPS
    assert cue.end <= 2.3 + OPTIONS.max_lead + EPS


def test_line_length_is_per_language() -> None:
    options = CueOptions(max_chars={"en": 42, "mn": 20})
    chunk = _chunk([(0.0, 8.0)])
    english = chunk_cues(Transcript(chunk, "en", {"en": EN_STORY[:51]}), options)["en"]
    mongolian = chunk_cues(Transcript(chunk, "mn", {"mn": MN_STORY[:46]}), options)["mn"]
    assert max(len(line) for cue in english for line in cue.lines) > 20
    assert max(len(line) for cue in mongolian for line in cue.lines) <= 20


def test_empty_texts_make_no_cues() -> None:
    transcript = Transcript(_chunk([(0.0, 3.0)]), "en", {"en": "   ", "mn": ""})
    assert chunk_cues(transcript, OPTIONS) == {}


# ------------------------------------------------------------------ property tests

_ALPHABETS = {"en": "abcdefghijklmnopqrstuvwxyz", "mn": "абвгдеёжзийклмноөпрстуүфхцчшэюя"}


@st.composite
def _text(draw: st.DrawFn, lang: str, unique: bool) -> str:
    """Up to 80 words of 1–12 letters, some followed by a comma or full stop. With
    ``unique`` no word occurs twice (so no two cues can have the same text)."""
    count = draw(st.integers(0, 80))
    word = st.text(alphabet=_ALPHABETS[lang], min_size=1, max_size=12)
    if unique:
        chosen = draw(st.lists(word, min_size=count, max_size=count, unique=True))
    else:
        vocabulary = draw(st.lists(word, min_size=1, max_size=20))
        chosen = draw(st.lists(st.sampled_from(vocabulary), min_size=count, max_size=count))
    marks = draw(st.lists(st.sampled_from(["", "", ",", "."]), min_size=count, max_size=count))
    return " ".join(w + m for w, m in zip(chosen, marks, strict=True))


@st.composite
def transcripts(
    draw: st.DrawFn, index: int = 0, at: float | None = None, unique: bool = False
) -> Transcript:
    """A chunk of ≤ 30 s with 1–4 speech regions and texts of any length."""
    t = draw(st.floats(0.0, 100.0)) if at is None else at
    regions = []
    for _ in range(draw(st.integers(1, 4))):
        duration = draw(st.floats(0.2, 9.0))
        regions.append((t, t + duration))
        t += duration + draw(st.floats(0.1, 2.0))
    assume(regions[-1][1] - regions[0][0] <= 29.6)
    pad = draw(st.floats(0.0, 0.2))
    texts = {lang: draw(_text(lang, unique)) for lang in ("en", "mn")}
    source = draw(st.sampled_from(["en", "mn"]))
    return Transcript(_chunk(regions, pad=pad, index=index), source, texts)


def _check_track(cues: list[Cue], chunk: ChunkSpan, options: CueOptions, lang: str) -> None:
    first, last = chunk.regions[0].start, chunk.regions[-1].end
    for cue in cues:
        _check_lines(cue, options.max_chars[lang], options.max_lines)
        assert cue.end > cue.start
        assert cue.duration <= options.max_duration + EPS
        assert chunk.start - EPS <= cue.start and cue.end <= chunk.end + EPS
        assert cue.start >= first - options.max_lead - EPS
        assert cue.end <= last + options.max_lead + EPS
    for left, right in pairwise(cues):
        assert right.start >= left.end - EPS, "cues overlap"


@settings(max_examples=150, deadline=None)
@given(transcript=transcripts())
def test_chunk_cues_properties(transcript: Transcript) -> None:
    result = chunk_cues(transcript, OPTIONS)
    for lang, text in transcript.texts.items():
        if not text.strip():
            assert lang not in result
            continue
        cues = result[lang]
        _check_track(cues, transcript.chunk, OPTIONS, lang)
        # Every word is shown, once, in order.
        assert _letters("".join(line for cue in cues for line in cue.lines)) == _letters(text)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), count=st.integers(1, 4), unique=st.booleans())
def test_shape_track_properties(data: st.DataObject, count: int, unique: bool) -> None:
    chunks: list[Transcript] = []
    at = data.draw(st.floats(0.0, 50.0))
    for index in range(count):
        transcript = data.draw(transcripts(index=index, at=at, unique=unique))
        chunks.append(transcript)
        at = transcript.chunk.end + data.draw(st.floats(0.0, 3.0))
    for lang in ("en", "mn"):
        track = shape_track(reversed(chunks), lang, OPTIONS)
        assert track.lang == lang
        cues = list(track.cues)
        for cue in cues:
            _check_lines(cue, 42, 2)
            assert cue.duration <= OPTIONS.max_duration + EPS
            # Inside a chunk; a repeat merged over two chunks starts and ends in one.
            assert any(t.chunk.start - EPS <= cue.start < t.chunk.end for t in chunks)
            assert any(t.chunk.start < cue.end <= t.chunk.end + EPS for t in chunks)
        for left, right in pairwise(cues):
            assert right.start - left.end >= OPTIONS.min_gap - EPS
        said = " ".join(t.texts.get(lang, "") for t in chunks)
        roomy = all(
            t.chunk.duration >= len(t.texts.get(lang, "").split()) * (0.1 + OPTIONS.min_gap)
            for t in chunks
        )
        shown = "".join(line for cue in cues for line in cue.lines)
        if unique and len(set(said.split())) == len(said.split()):
            # No two cues can be alike, so none is merged away: every letter is either
            # shown or in a cue reported as dropped.
            left_out = "".join(line for cue in track.dropped for line in cue.lines)
            assert sorted(_letters(shown + left_out)) == sorted(_letters(said))
            if roomy:
                # Every chunk has time for a visible cue per word: every word is shown.
                assert not track.dropped
                assert _letters(shown) == _letters(said)


def test_shape_track_merges_a_repeated_cue() -> None:
    first = Transcript(_chunk([(0.0, 2.0)], index=0), "en", {"en": "Thank you."})
    again = Transcript(_chunk([(2.5, 4.0)], index=1), "en", {"en": "Thank you."})
    (cue,) = shape_track([first, again], "en", OPTIONS).cues
    assert cue.lines == ("Thank you.",)
    assert cue.start == pytest.approx(0.0)
    assert cue.end == pytest.approx(4.0)


def test_shape_track_keeps_the_gap_between_touching_chunks() -> None:
    first = Transcript(_chunk([(0.0, 3.0)], pad=0.0, index=0), "en", {"en": "One two three."})
    second = Transcript(_chunk([(3.0, 6.0)], pad=0.0, index=1), "en", {"en": "Four five six."})
    cues = shape_track([first, second], "en", OPTIONS).cues
    assert len(cues) == 2
    assert cues[1].start - cues[0].end >= OPTIONS.min_gap - EPS


def test_text_that_cannot_fit_in_its_time_is_reported_as_dropped() -> None:
    # 300 words for one second of speech: far more cues than the chunk has time for.
    said = " ".join(f"word{i}" for i in range(300))
    crowded = Transcript(_chunk([(0.2, 1.2)], index=0), "en", {"en": said})
    track = shape_track([crowded], "en", OPTIONS)
    assert track.cues and track.dropped
    shown = [w for cue in track.cues for line in cue.lines for w in line.split()]
    left_out = [w for cue in track.dropped for line in cue.lines for w in line.split()]
    assert sorted(shown + left_out) == sorted(said.split())
    for left, right in pairwise(track.cues):
        assert right.start - left.end >= OPTIONS.min_gap - EPS
    roomy = Transcript(_chunk([(0.0, 6.0)], index=0), "en", {"en": EN_STORY})
    assert shape_track([roomy], "en", OPTIONS).dropped == ()
