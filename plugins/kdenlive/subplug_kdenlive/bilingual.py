"""One subtitle track that shows two languages, for Kdenlive versions with one track.

English and Mongolian cues are shaped separately, so their times need not line up. The
merged track cuts the time line at every cue boundary of either language; each piece
shows the lines of every language active in it, in ``order`` (English above Mongolian
by default, the order the bilingual ASS uses: Mongolian at the bottom). Neighbouring
pieces with the same text become one cue, and slivers shorter than ``min_piece`` (a
boundary that differs by a few frames between languages) are absorbed by a neighbour so
text does not flicker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from subplug.types import Cue, Track

#: Pieces shorter than this are merged into a neighbour (seconds; ~6 frames at 25 fps).
MIN_PIECE = 0.25


def active_lines(track: Track, start: float, end: float) -> tuple[str, ...]:
    """Lines of ``track``'s cue covering most of ``[start, end)`` (none if no cue)."""
    best: Cue | None = None
    best_overlap = 0.0
    for cue in track.cues:
        overlap = min(cue.end, end) - max(cue.start, start)
        if overlap > best_overlap:
            best, best_overlap = cue, overlap
    return best.lines if best is not None else ()


def merge_tracks(
    tracks: Mapping[str, Track],
    order: Sequence[str] = ("en", "mn"),
    *,
    min_piece: float = MIN_PIECE,
) -> list[Cue]:
    """One list of cues showing each language of ``order`` present in ``tracks``."""
    langs = [lang for lang in order if lang in tracks]
    bounds = sorted(
        {t for lang in langs for cue in tracks[lang].cues for t in (cue.start, cue.end)}
    )
    pieces: list[Cue] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        if end - start <= 1e-6:
            continue
        lines: list[str] = []
        for lang in langs:
            lines.extend(active_lines(tracks[lang], start, end))
        if lines:
            pieces.append(Cue(start, end, tuple(lines)))
    return _absorb_slivers(_join_equal(pieces), min_piece)


def _join_equal(pieces: list[Cue]) -> list[Cue]:
    joined: list[Cue] = []
    for piece in pieces:
        last = joined[-1] if joined else None
        if last is not None and last.lines == piece.lines and abs(last.end - piece.start) < 1e-6:
            joined[-1] = Cue(last.start, piece.end, last.lines)
        else:
            joined.append(piece)
    return joined


def _absorb_slivers(pieces: list[Cue], min_piece: float) -> list[Cue]:
    """Give each too-short piece's time to the touching neighbour with more text."""
    result = list(pieces)
    changed = True
    while changed:
        changed = False
        for i, piece in enumerate(result):
            if piece.duration >= min_piece:
                continue
            before = (
                result[i - 1] if i > 0 and abs(result[i - 1].end - piece.start) < 1e-6 else None
            )
            after = (
                result[i + 1]
                if i + 1 < len(result) and abs(result[i + 1].start - piece.end) < 1e-6
                else None
            )
            if before is None and after is None:
                continue
            if after is None or (before is not None and len(before.lines) >= len(after.lines)):
                result[i - 1] = Cue(before.start, piece.end, before.lines)  # type: ignore[union-attr]
            else:
                result[i + 1] = Cue(piece.start, after.end, after.lines)
            del result[i]
            result = _join_equal(result)
            changed = True
            break
    return result
