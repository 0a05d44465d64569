"""Cue shaping: from per-chunk transcripts to subtitle cues (pure functions).

The model gives no timestamps, only a text per language for each chunk, and the chunk
carries the speech regions voice activity detection found in it. Shaping one chunk:

1. **Pieces.** The text is cut into cue-sized pieces at word boundaries by dynamic
   programming. Every piece must fit in ``max_lines`` lines of ``max_chars[lang]``
   characters (hard); cuts after sentence ends are preferred over cuts after clause
   punctuation, then before conjunctions and prepositions, then anywhere else, and a cut
   that leaves an article or preposition dangling is avoided (see the word lists below).
2. **Time.** Speech time is shared out in proportion to characters, laid over the speech
   regions only (pauses get no text). A cut near a pause snaps to it, so cues start and
   end with speech. Pieces that would read faster than ``max_cps``, show shorter than
   ``min_duration``, or hold a long pause cost more; a piece longer than
   ``max_duration`` is not allowed unless it is one word.
3. **Both languages together.** All languages of a chunk are cut at the *same* times:
   the source language (the transcription, which follows the audio) chooses the cuts,
   and each other language is cut at the word boundary nearest the same proportional
   position, preferring good break points; the cost of a cut counts every language. So
   the English and Mongolian cues of a chunk change together on screen. When the texts
   are too unequal for a common cut (a piece would not fit its lines), each language
   is cut on its own, still over the same speech time.
4. **Rules.** Cues are separated by ``min_gap``; a cue shorter than its reading time
   (``min_duration``, or characters / ``max_cps``) first borrows time from a neighbour
   that has time to spare, then extends into silence by up to ``max_lead`` before or
   after its speech; cues never leave their chunk and never last over ``max_duration``.

:func:`shape_track` then joins the chunks of one language, merges consecutive cues with
identical text (a model repeating itself) and enforces the gap across chunk boundaries.
A cue that cannot get its gap without vanishing is left out of the track and listed in
:attr:`~subplug.types.Track.dropped` (the engine warns with the count): text is never
lost silently.

Line breaking (where a text may break, the layout in lines) is :mod:`subplug.linebreak`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from subplug.languages import DEFAULT_MAX_CHARS, LANGUAGES
from subplug.linebreak import Words, best_layout, normalise_text
from subplug.types import Cue, CueOptions, SpeechRegion, Track, Transcript

# Weights of the piece cost (see _Segmenter._piece_cost).
_PIECE_COST = 1.0
_CUT_WEIGHT = 1.5
_SHORT_WEIGHT = 12.0
_CPS_WEIGHT = 6.0
_SILENCE_WEIGHT = 4.0
_LONG_WEIGHT = 8.0
_ALIGN_WEIGHT = 0.25
_MERGE_GAP = 1.0
# Snapping cuts to pauses: how far (seconds, and words' worth of speech) a boundary may
# be moved, and how much a good break point counts against distance.
_SNAP_MIN = 0.4
_SNAP_WORDS = 2.5
_SNAP_CUT_WEIGHT = 0.25
_MIN_VISIBLE = 0.1

# -------------------------------------------------------------------- speech time


class _Speech:
    """The speech regions of a chunk as one clock that only runs during speech."""

    def __init__(self, regions: Sequence[SpeechRegion]) -> None:
        self.regions = regions
        self.offsets = [0.0]
        for region in regions:
            self.offsets.append(self.offsets[-1] + region.duration)
        self.total = self.offsets[-1]

    def media_time(self, clock: float, *, ending: bool) -> float:
        """Media time at speech-clock ``clock``. On a region boundary an ending piece
        ends with the earlier region and a starting piece starts with the later one."""
        for index, region in enumerate(self.regions):
            upper = self.offsets[index + 1]
            last = index == len(self.regions) - 1
            if clock < upper or (ending and clock <= upper) or last:
                return min(region.start + max(clock - self.offsets[index], 0.0), region.end)
        return self.regions[-1].end

    def speech_within(self, start: float, end: float) -> float:
        return sum(
            max(0.0, min(end, region.end) - max(start, region.start)) for region in self.regions
        )


def _regions(transcript: Transcript) -> list[SpeechRegion]:
    span = transcript.chunk
    regions: list[SpeechRegion] = []
    for region in sorted(span.regions, key=lambda r: r.start):
        start, end = max(region.start, span.start), min(region.end, span.end)
        if regions and start < regions[-1].end:
            start = regions[-1].end
        if end - start > 1e-6:
            regions.append(SpeechRegion(start, end))
    if not regions and span.end - span.start > 1e-6:
        regions = [SpeechRegion(span.start, span.end)]
    return regions


# ------------------------------------------------------------------- segmentation


@dataclass(frozen=True)
class _Piece:
    start: float
    end: float
    speech_start: float
    speech_end: float
    lines: Mapping[str, tuple[str, ...]]


class _Segmenter:
    """Cuts the texts of one chunk into pieces with shared times (see module doc)."""

    def __init__(
        self,
        texts: Mapping[str, str],
        pilot: str,
        speech: _Speech,
        options: CueOptions,
    ) -> None:
        self.options = options
        self.speech = speech
        self.pilot = pilot
        self.words = {
            lang: Words.of(text, lang, _max_chars(options, lang)) for lang, text in texts.items()
        }
        main = self.words[pilot]
        self.n = len(main)
        total = main.weight(self.n)
        clocks = [speech.total * main.weight(k) / total for k in range(self.n + 1)]
        clocks = self._snap_to_pauses(main, clocks)
        self.start_times = [speech.media_time(c, ending=False) for c in clocks]
        self.end_times = [speech.media_time(c, ending=True) for c in clocks]
        self.maps = {lang: self._map(main, words) for lang, words in self.words.items()}
        self._layouts: dict[tuple[str, int, int], tuple[float, tuple[tuple[int, int], ...]] | None]
        self._layouts = {}

    def _snap_to_pauses(self, main: Words, clocks: Sequence[float]) -> list[float]:
        """Anchor a word boundary on each pause and share time by characters between
        anchors.

        Longest pauses first, the boundary chosen is the one nearest the pause (within
        about two words) that makes a good cut: a sentence end a little further away
        beats a plain word boundary right at the pause. Anchors keep text order. The
        clock is then warped piecewise linearly so each anchor lands exactly on its
        pause: a cue cut there ends with the speech before it and the next starts with
        the speech after it.
        """
        regions = self.speech.regions
        n = self.n
        if len(regions) < 2 or n < 2:
            return list(clocks)
        tolerance = max(_SNAP_MIN, _SNAP_WORDS * self.speech.total / n)
        gaps = sorted(
            range(len(regions) - 1),
            key=lambda k: regions[k + 1].start - regions[k].end,
            reverse=True,
        )
        anchors: dict[int, float] = {}
        current = list(clocks)
        for gap in gaps:
            at = self.speech.offsets[gap + 1]
            candidates = [
                b
                for b in range(1, n)
                if abs(current[b] - at) <= tolerance
                and all((b2 < b) == (at2 < at) and b2 != b for b2, at2 in anchors.items())
            ]
            if not candidates:
                continue
            best = min(
                candidates,
                key=lambda b: (
                    abs(current[b] - at) / tolerance + _SNAP_CUT_WEIGHT * main.cut_costs[b]
                ),
            )
            anchors[best] = at
            current = self._warp(main, anchors)
        return current

    def _warp(self, main: Words, anchors: Mapping[int, float]) -> list[float]:
        """Speech-clock time of every boundary: anchors where given, shared by
        characters in between."""
        points = sorted([(0, 0.0), *anchors.items(), (self.n, self.speech.total)])
        warped = [0.0] * (self.n + 1)
        for (b0, c0), (b1, c1) in zip(points, points[1:], strict=False):
            w0, w1 = main.weight(b0), main.weight(b1)
            for k in range(b0, b1 + 1):
                share = (main.weight(k) - w0) / (w1 - w0) if w1 > w0 else 0.0
                warped[k] = c0 + (c1 - c0) * share
            warped[b0], warped[b1] = c0, c1
        return warped

    def _map(self, main: Words, other: Words) -> list[int]:
        """For each cut of the pilot text, the best cut of ``other`` near the same
        proportional position (identity for the pilot itself)."""
        if other is main:
            return list(range(self.n + 1))
        m = len(other)
        main_total, other_total = main.weight(self.n), other.weight(m)
        mapping = [0]
        for b in range(1, self.n):
            target = main.weight(b) / main_total * other_total
            best, best_cost = 0, math.inf
            for c in range(1, m):
                cost = _ALIGN_WEIGHT * abs(other.weight(c) - target) + other.cut_costs[c]
                if cost < best_cost:
                    best, best_cost = c, cost
            mapping.append(best if m > 1 else 0)
        mapping.append(m)
        return mapping

    def layout(self, lang: str, i: int, j: int) -> tuple[float, tuple[tuple[int, int], ...]] | None:
        key = (lang, i, j)
        if key not in self._layouts:
            self._layouts[key] = best_layout(
                self.words[lang], i, j, _max_chars(self.options, lang), self.options.max_lines
            )
        return self._layouts[key]

    def _piece_cost(self, langs: Sequence[str], i: int, j: int) -> float | None:
        """Cost of one piece from pilot cut i to cut j, or None if not allowed."""
        options = self.options
        start, end = self.start_times[i], self.end_times[j]
        duration = end - start
        if duration <= 0:
            return None
        single = j - i == 1
        if duration > options.max_duration + 1e-9 and not single:
            return None
        cost = _PIECE_COST
        longest = 0
        for lang in langs:
            a, b = self.maps[lang][i], self.maps[lang][j]
            layout = self.layout(lang, a, b)
            if layout is None:
                return None
            cost += layout[0]
            if b < len(self.words[lang]):
                cost += _CUT_WEIGHT * self.words[lang].cut_costs[b]
            longest = max(longest, self.words[lang].length(a, b))
        if duration < options.min_duration:
            cost += _SHORT_WEIGHT * (1 + (options.min_duration - duration) / options.min_duration)
        if duration > options.max_duration:
            cost += _LONG_WEIGHT * (duration - options.max_duration) / options.max_duration
        cps = longest / duration
        if cps > options.max_cps:
            cost += _CPS_WEIGHT * (cps / options.max_cps - 1)
        silence = duration - self.speech.speech_within(start, end)
        cost += _SILENCE_WEIGHT * max(silence, 0.0)
        return cost

    def cuts(self, langs: Sequence[str]) -> list[int] | None:
        """Pilot cut indices 0 = c0 < c1 < … = n of the cheapest segmentation, or None."""
        n = self.n
        main = self.words[self.pilot]
        limit = _max_chars(self.options, self.pilot) * self.options.max_lines
        best: list[float] = [0.0] + [math.inf] * n
        back = [0] * (n + 1)
        for j in range(1, n + 1):
            for i in range(j - 1, -1, -1):
                if i < j - 1 and main.length(i, j) > limit:
                    break
                if best[i] == math.inf:
                    continue
                if any(self.maps[lang][j] <= self.maps[lang][i] for lang in langs):
                    continue
                cost = self._piece_cost(langs, i, j)
                if cost is not None and best[i] + cost < best[j]:
                    best[j], back[j] = best[i] + cost, i
        if best[n] == math.inf:
            return None
        cuts = [n]
        while cuts[-1]:
            cuts.append(back[cuts[-1]])
        return cuts[::-1]

    def pieces(self, cuts: Sequence[int], langs: Sequence[str]) -> list[_Piece]:
        pieces = []
        for i, j in zip(cuts, cuts[1:], strict=False):
            lines = {}
            for lang in langs:
                a, b = self.maps[lang][i], self.maps[lang][j]
                layout = self.layout(lang, a, b)
                assert layout is not None
                lines[lang] = tuple(self.words[lang].text(x, y) for x, y in layout[1])
            start, end = self.start_times[i], self.end_times[j]
            pieces.append(_Piece(start, end, start, end, lines))
        return pieces


def _max_chars(options: CueOptions, lang: str) -> int:
    return int(options.max_chars.get(lang, DEFAULT_MAX_CHARS))


# ------------------------------------------------------------------------- timing


def _reading_time(piece: _Piece, options: CueOptions) -> float:
    chars = max((len(" ".join(lines)) for lines in piece.lines.values()), default=0)
    wanted = max(options.min_duration, chars / options.max_cps)
    return min(wanted, options.max_duration)


def _time_pieces(
    pieces: Sequence[_Piece], chunk_start: float, chunk_end: float, options: CueOptions
) -> list[tuple[float, float]]:
    """Final (start, end) per piece: gaps, borrowing, extension into silence (see the
    module doc). Falls back to an even layout only when the chunk is too short for its
    pieces."""
    gap = options.min_gap
    starts = [p.start for p in pieces]
    ends = [min(p.end, p.start + options.max_duration) for p in pieces]
    need = [_reading_time(p, options) for p in pieces]
    k = len(pieces)

    def slack(index: int) -> float:
        return ends[index] - starts[index] - need[index]

    # Open the gap at each cut, taking it from the cue with more time to spare.
    for i in range(k - 1):
        deficit = gap - (starts[i + 1] - ends[i])
        if deficit > 0:
            if slack(i) >= slack(i + 1):
                ends[i] -= deficit
            else:
                starts[i + 1] += deficit
    # Borrow across shared cuts: move a cut towards the cue with time to spare.
    for _ in range(2):
        for i in range(k - 1):
            if starts[i + 1] - ends[i] > gap + 1e-9:
                continue  # a real pause separates them: nothing to share
            if slack(i) < 0 < slack(i + 1):
                shift = min(-slack(i), slack(i + 1), options.max_lead)
                ends[i] += shift
                starts[i + 1] += shift
            elif slack(i + 1) < 0 < slack(i):
                shift = min(-slack(i + 1), slack(i), options.max_lead)
                ends[i] -= shift
                starts[i + 1] -= shift
    # Extend still-short cues into the silence around their speech.
    for i, piece in enumerate(pieces):
        if slack(i) >= 0:
            continue
        upper = min(
            piece.speech_end + options.max_lead,
            starts[i + 1] - gap if i + 1 < k else chunk_end,
            chunk_end,
        )
        ends[i] = max(ends[i], min(starts[i] + need[i], upper))
        if slack(i) < 0:
            lower = max(
                piece.speech_start - options.max_lead,
                ends[i - 1] + gap if i else chunk_start,
                chunk_start,
            )
            starts[i] = min(starts[i], max(ends[i] - need[i], lower))
    for i in range(k):
        ends[i] = min(ends[i], starts[i] + options.max_duration)
    times = list(zip(starts, ends, strict=True))
    if _valid(times, chunk_start, chunk_end, gap):
        return times
    return _even(k, pieces[0].start, pieces[-1].end, chunk_start, chunk_end, gap, options)


def _valid(times: Sequence[tuple[float, float]], low: float, high: float, gap: float) -> bool:
    eps = 1e-6
    for index, (start, end) in enumerate(times):
        if end - start < _MIN_VISIBLE - eps or start < low - eps or end > high + eps:
            return False
        if index and start - times[index - 1][1] < gap - eps:
            return False
    return True


def _even(
    k: int,
    speech_start: float,
    speech_end: float,
    chunk_start: float,
    chunk_end: float,
    gap: float,
    options: CueOptions,
) -> list[tuple[float, float]]:
    """Equal shares of the speech span (or of the chunk when that is too short)."""
    start, end = speech_start, speech_end
    if (end - start) < k * _MIN_VISIBLE + (k - 1) * gap:
        start, end = chunk_start, chunk_end
    span = end - start
    gap = min(gap, span / (4 * k)) if k > 1 else 0.0
    share = (span - (k - 1) * gap) / k
    times = []
    for index in range(k):
        first = start + index * (share + gap)
        times.append((first, first + min(share, options.max_duration)))
    return times


# ------------------------------------------------------------------------- chunks


def chunk_cues(transcript: Transcript, options: CueOptions) -> dict[str, list[Cue]]:
    """The cues of every language of one chunk, cut at shared times where the texts
    allow (module doc, steps 1–4). Languages with no text are absent."""
    texts = {
        lang: normalise_text(text)
        for lang, text in sorted(transcript.texts.items(), key=lambda item: _order(item[0]))
        if normalise_text(text)
    }
    regions = _regions(transcript)
    if not texts or not regions:
        return {}
    pilot = transcript.source_lang if transcript.source_lang in texts else next(iter(texts))
    assert pilot is not None
    speech = _Speech(regions)
    langs = list(texts)
    segmenter = _Segmenter(texts, pilot, speech, options)
    cuts = segmenter.cuts(langs)
    groups: list[tuple[_Segmenter, list[int], list[str]]]
    if cuts is not None:
        groups = [(segmenter, cuts, langs)]
    else:
        groups = []
        for lang in langs:
            alone = _Segmenter({lang: texts[lang]}, lang, speech, options)
            lone_cuts = alone.cuts([lang])
            assert lone_cuts is not None  # one word per piece always fits
            groups.append((alone, lone_cuts, [lang]))
    result: dict[str, list[Cue]] = {}
    chunk = transcript.chunk
    for seg, group_cuts, group_langs in groups:
        pieces = seg.pieces(group_cuts, group_langs)
        times = _time_pieces(pieces, chunk.start, chunk.end, options)
        for lang in group_langs:
            result[lang] = [
                Cue(start, end, piece.lines[lang])
                for piece, (start, end) in zip(pieces, times, strict=True)
            ]
    return result


def _order(lang: str) -> tuple[int, str]:
    return (LANGUAGES.index(lang) if lang in LANGUAGES else len(LANGUAGES), lang)


# ------------------------------------------------------------------------- tracks


def shape_track(transcripts: Iterable[Transcript], lang: str, options: CueOptions) -> Track:
    """All cues of ``lang`` over the chunks, in time order: each chunk shaped by
    :func:`chunk_cues`, consecutive cues with identical text merged (up to
    ``max_duration``), and at least ``min_gap`` between cues across chunk boundaries.
    Cues that could not fit are in the track's ``dropped``."""
    cues: list[Cue] = []
    for transcript in sorted(transcripts, key=lambda t: (t.chunk.start, t.chunk.index)):
        if not normalise_text(transcript.texts.get(lang, "")):
            continue
        cues.extend(chunk_cues(transcript, options).get(lang, []))
    kept, dropped = _enforce_gaps(_merge_repeats(cues, options), options)
    return Track(lang, tuple(kept), tuple(dropped))


def shape_tracks(
    transcripts: Sequence[Transcript], langs: Sequence[str], options: CueOptions
) -> dict[str, Track]:
    """:func:`shape_track` for each of ``langs``."""
    return {lang: shape_track(transcripts, lang, options) for lang in langs}


def _merge_repeats(cues: Sequence[Cue], options: CueOptions) -> list[Cue]:
    merged: list[Cue] = []
    for cue in cues:
        if merged:
            last = merged[-1]
            if " ".join(cue.lines) == " ".join(last.lines) and cue.start - last.end <= _MERGE_GAP:
                end = min(max(last.end, cue.end), last.start + options.max_duration)
                merged[-1] = Cue(last.start, end, last.lines)
                continue
        merged.append(cue)
    return merged


def _enforce_gaps(cues: Sequence[Cue], options: CueOptions) -> tuple[list[Cue], list[Cue]]:
    """At least ``min_gap`` between consecutive cues: shorten the earlier cue, then (if
    it would vanish) start the later one later; a cue that still cannot fit is dropped
    rather than overlapping. That only happens to a chunk with more cues than it has
    tenths of a second (a model answer far longer than its audio could hold) or with
    overlapping chunks. Returns the cues kept and those dropped."""
    out: list[Cue] = []
    dropped: list[Cue] = []
    for cue in cues:
        if out:
            last = out[-1]
            deficit = options.min_gap - (cue.start - last.end)
            if deficit > 0:
                take = min(deficit, max(0.0, last.duration - _MIN_VISIBLE))
                out[-1] = last = Cue(last.start, last.end - take, last.lines)
                deficit -= take
            if deficit > 0:
                if cue.duration - deficit < _MIN_VISIBLE:
                    dropped.append(cue)
                    continue
                cue = Cue(cue.start + deficit, cue.end, cue.lines)
        out.append(cue)
    return out, dropped
