"""Line breaking for subtitles: where a text may break, and the best layout in lines.

:func:`break_cost` rates a break between two words for English or Mongolian (sentence
ends best, then clause punctuation, then before conjunctions and prepositions; never
leaving an article dangling or starting a line with a Mongolian enclitic; word lists
below). :class:`Words` holds a text as tokens with O(1) span lengths, and
:func:`best_layout`/:func:`wrap` choose the fewest lines that fit, then the most balanced
layout with the best break points. A single word longer than a line is hard-split into
line-sized parts, only as a last resort; those parts join without a space. Pure
functions; :mod:`subplug.cues` cuts cues with them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BALANCE_WEIGHT = 6.0
"""Weight of the squared imbalance of line lengths in a layout."""

# --------------------------------------------------------------------- word lists


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


EN_BREAK_BEFORE: frozenset[str] = _word_set(
    """and but or nor so yet because although though while whereas unless until since
    that which who whom whose when where why how if whether than as to of in on at for
    with from by about into onto over under after before between through during without
    within against among across along around behind beyond like"""
)
"""English conjunctions and prepositions: a line may start with one."""

EN_NO_LINE_END: frozenset[str] = EN_BREAK_BEFORE | _word_set(
    """a an the my your his her its our their this these those some any no every each
    mr mrs ms dr st jr prof vs i i'm i'll i've i'd"""
)
"""English words a line should not end with (they belong to what follows)."""

MN_BREAK_BEFORE: frozenset[str] = _word_set(
    """ба болон бөгөөд гэхдээ харин тэгээд тэгэхээр тэгэхэд гэвч эсвэл буюу хэрэв хэрвээ
    тиймээс иймээс гэтэл мөн бас хэдийгээр түүнчлэн учир яагаад"""
)
"""Mongolian conjunctions that open a clause: a line may start with one."""

MN_BREAK_AFTER: frozenset[str] = _word_set(
    """учраас тул гэж гэвэл бол ч дээр доор дотор хойно өмнө хамт тухай руу рүү уруу үрүү
    шиг хүртэл хойш болохоор"""
)
"""Mongolian clause-final particles and postpositions (Mongolian puts them after the
word they govern, so a line may end with one)."""

MN_NO_LINE_START: frozenset[str] = _word_set(
    """нь ч л юм уу үү вэ бэ шүү даа дээ биз байна байсан юмаа"""
)
"""Mongolian enclitics and auxiliaries that lean on the word before them: a line should
not start with one."""

_TRAILING = "\"'”’»)]"
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*$")
_CLAUSE_END = re.compile(r"(?:[,;:]+[\"'”’»)\]]*|\s?[—–])$")
_ABBREVIATION = re.compile(r"^(?:mr|mrs|ms|dr|st|jr|sr|prof|vs|etc|e\.g|i\.e)\.$", re.I)
_STRIP = "\"'“”‘’«»()[]{}.,;:!?…—–-"

HARD_SPLIT_COST = 40.0
"""Breaking inside an over-long word: only when nothing else fits."""


def normalise_text(text: str) -> str:
    """Collapse whitespace runs to single spaces and trim (what cues are made of)."""
    return " ".join(text.split())


def break_cost(previous: str, following: str, lang: str) -> float:
    """How bad it is to break a line or cut a cue between two words (0 best).

    0 after a sentence end; 1 after a comma, semicolon, colon or dash; 2 before a
    conjunction or preposition (English) / before a conjunction or after a clause-final
    particle or postposition (Mongolian); 4 anywhere else; 8 when the break would leave
    an article, preposition or conjunction at a line end (English) or start a line with
    an enclitic (Mongolian).
    """
    key_prev = previous.strip(_STRIP).lower()
    key_next = following.strip(_STRIP).lower()
    if _SENTENCE_END.search(previous) and not _ABBREVIATION.match(previous):
        return 0.0
    if _CLAUSE_END.search(previous) or following[:1] in "—–":
        return 1.0
    if lang == "mn":
        if key_next in MN_NO_LINE_START:
            return 8.0
        if key_next in MN_BREAK_BEFORE or key_prev in MN_BREAK_AFTER:
            return 2.0
        return 4.0
    if key_prev in EN_NO_LINE_END or _ABBREVIATION.match(previous):
        return 8.0
    if key_next in EN_BREAK_BEFORE:
        return 2.0
    return 4.0


# ------------------------------------------------------------------------ tokens


@dataclass(frozen=True)
class Words:
    """A text as tokens, with character offsets for O(1) length of any span."""

    lang: str
    tokens: tuple[str, ...]
    glued: tuple[bool, ...]
    """glued[k]: token k continues token k-1 (a hard-split word): no space between."""
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    cut_costs: tuple[float, ...]
    """cut_costs[k]: cost of breaking before token k (index 0 unused)."""

    @classmethod
    def of(cls, text: str, lang: str, max_chars: int) -> Words:
        tokens: list[str] = []
        glued: list[bool] = []
        for word in text.split():
            parts = [word[i : i + max_chars] for i in range(0, len(word), max_chars)]
            for index, part in enumerate(parts):
                tokens.append(part)
                glued.append(index > 0)
        starts, ends, position = [], [], 0
        for index, token in enumerate(tokens):
            if index and not glued[index]:
                position += 1
            starts.append(position)
            position += len(token)
            ends.append(position)
        costs = [0.0] + [
            HARD_SPLIT_COST if glued[k] else break_cost(tokens[k - 1], tokens[k], lang)
            for k in range(1, len(tokens))
        ]
        return cls(lang, tuple(tokens), tuple(glued), tuple(starts), tuple(ends), tuple(costs))

    def __len__(self) -> int:
        return len(self.tokens)

    def length(self, i: int, j: int) -> int:
        """Characters of tokens[i:j] on one line."""
        return self.ends[j - 1] - self.starts[i] if j > i else 0

    def text(self, i: int, j: int) -> str:
        out: list[str] = []
        for k in range(i, j):
            if k > i and not self.glued[k]:
                out.append(" ")
            out.append(self.tokens[k])
        return "".join(out)

    def weight(self, k: int) -> float:
        """Position of boundary k (before token k) in characters, trailing space
        included, so the share of speech time is proportional to characters."""
        if k >= len(self.tokens):
            return float(self.ends[-1] + 1) if self.tokens else 0.0
        return float(self.starts[k])


def best_layout(
    words: Words, i: int, j: int, max_chars: int, max_lines: int
) -> tuple[float, tuple[tuple[int, int], ...]] | None:
    """Best line layout of tokens[i:j]: (cost, ((start, end), …)) or None if it needs
    more than ``max_lines`` lines. The fewest lines win; then balance and break points."""
    if j <= i:
        return None
    if words.length(i, j) <= max_chars:
        return 0.0, ((i, j),)
    total = words.length(i, j)
    for lines in range(2, max_lines + 1):
        ideal = total / lines
        # best[k][m]: cheapest way to put tokens[i:m] on k lines.
        best: list[dict[int, tuple[float, tuple[tuple[int, int], ...]]]] = [{i: (0.0, ())}]
        for _ in range(lines):
            layer: dict[int, tuple[float, tuple[tuple[int, int], ...]]] = {}
            for start, (cost, spans) in best[-1].items():
                for end in range(start + 1, j + 1):
                    length = words.length(start, end)
                    if length > max_chars:
                        break
                    step = BALANCE_WEIGHT * ((length - ideal) / max_chars) ** 2
                    if end < j:
                        step += words.cut_costs[end]
                    candidate = (cost + step, (*spans, (start, end)))
                    if end not in layer or candidate[0] < layer[end][0]:
                        layer[end] = candidate
            best.append(layer)
        if j in best[-1]:
            return best[-1][j]
    return None


def wrap(text: str, lang: str, *, max_chars: int, max_lines: int) -> tuple[str, ...] | None:
    """Break ``text`` into at most ``max_lines`` lines of at most ``max_chars``
    characters, or ``None`` when it does not fit. Uses the fewest lines, then the most
    balanced layout with the best break points (:func:`break_cost`)."""
    words = Words.of(normalise_text(text), lang, max_chars)
    if not len(words):
        return ()
    layout = best_layout(words, 0, len(words), max_chars, max_lines)
    if layout is None:
        return None
    return tuple(words.text(a, b) for a, b in layout[1])
