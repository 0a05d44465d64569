"""The repetition guard: speech models loop on music and silence ("thank you thank you
…"). Pure functions on text and token ids, tested with hypothesis."""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"\S+\s*")
_PUNCT = re.compile(r"[^\w]+", re.UNICODE)


def _min_repeats(period: int, min_span: int) -> int:
    """Consecutive repeats of a ``period``-word unit that count as a loop."""
    return max(3, -(-min_span // period))


def trim_repetition(
    text: str,
    *,
    max_period: int = 40,
    min_span: int = 8,
    char_max_period: int = 8,
    char_min_repeats: int = 10,
) -> tuple[str, bool]:
    """Collapse repetition loops in model output to their first occurrence.

    A loop is a unit of ``p`` words (compared case- and punctuation-insensitively)
    repeated at least ``max(3, ceil(min_span / p))`` times in a row: eight times for one
    word, four for two, three for longer units. The run is replaced by its first
    occurrence; a final, cut-off partial repetition is dropped as well. Runs of a short
    character unit (≤ ``char_max_period`` characters, ≥ ``char_min_repeats`` times, as in
    "hahahaha…" or "ааааа…") collapse the same way. Returns the text and whether
    anything was trimmed. Pure function.
    """
    words = [(m.group(0), m.start()) for m in _WORD.finditer(text)]
    norm = [_PUNCT.sub("", w).casefold() or w.strip() for w, _ in words]
    n = len(words)
    kept: list[str] = [text[: words[0][1]]] if words else [text]
    trimmed = False
    i = 0
    while i < n:
        skip = 0
        for period in range(1, min(max_period, (n - i) // 2) + 1):
            unit = norm[i : i + period]
            repeats = 1
            while norm[i + repeats * period : i + (repeats + 1) * period] == unit:
                repeats += 1
            if repeats < _min_repeats(period, min_span):
                continue
            end = i + repeats * period
            rest = n - end
            # A last, partial repetition (cut off by the token budget, maybe mid-word).
            if (
                0 < rest <= period
                and norm[end : n - 1] == unit[: rest - 1]
                and unit[rest - 1].startswith(norm[n - 1])
            ):
                end = n
            skip = end - i
            kept.extend(w for w, _ in words[i : i + period])
            break
        if skip:
            trimmed = True
            i += skip
        else:
            kept.append(words[i][0])
            i += 1
    result = "".join(kept)
    pattern = re.compile(rf"(.{{1,{char_max_period}}}?)\1{{{char_min_repeats - 1},}}", re.DOTALL)
    collapsed = pattern.sub(lambda m: m.group(1), result)
    trimmed = trimmed or collapsed != result
    if trimmed:
        collapsed = collapsed.rstrip()
    return collapsed, trimmed


def token_loop_at_end(
    ids: Sequence[int], *, max_period: int = 32, min_repeats: int = 4, min_span: int = 24
) -> bool:
    """True when ``ids`` ends with a unit of ≤ ``max_period`` tokens repeated at least
    ``max(min_repeats, ceil(min_span / period))`` times: generation is looping and can
    stop (the text guard then trims it). Pure function."""
    n = len(ids)
    for period in range(1, max_period + 1):
        need = max(min_repeats, -(-min_span // period))
        if need * period > n:
            break
        tail = ids[n - period :]
        if all(ids[n - (k + 1) * period : n - k * period] == tail for k in range(1, need)):
            return True
    return False
