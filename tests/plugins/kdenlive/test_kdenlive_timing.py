"""Pure planning: merging two languages into one track, and moving a clip's cues to
where the clip sits on the timeline."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st
from subplug.types import Cue, Track
from subplug_kdenlive.bilingual import merge_tracks
from subplug_kdenlive.project import Placement
from subplug_kdenlive.timing import place_cues


def _track(lang: str, spans: list[tuple[float, float]]) -> Track:
    return Track(lang, tuple(Cue(s, e, (f"{lang}{i}",)) for i, (s, e) in enumerate(spans)))


@st.composite
def spans(draw: st.DrawFn) -> list[tuple[float, float]]:
    """Sorted, non-overlapping cue spans on a 0.01 s grid."""
    points = sorted(set(draw(st.lists(st.integers(0, 3000), min_size=0, max_size=12, unique=True))))
    pairs = list(zip(points[::2], points[1::2], strict=False))
    return [(a / 100, b / 100) for a, b in pairs if b > a]


@given(spans(), spans())
def test_merged_track_never_overlaps_and_keeps_all_text(
    en: list[tuple[float, float]], mn: list[tuple[float, float]]
) -> None:
    tracks = {"en": _track("en", en), "mn": _track("mn", mn)}
    merged = merge_tracks(tracks, ("en", "mn"))
    for before, after in zip(merged, merged[1:], strict=False):
        assert before.end <= after.start + 1e-9
    lo = min([s for s, _ in en + mn], default=0.0)
    hi = max([e for _, e in en + mn], default=0.0)
    assert all(lo - 1e-9 <= c.start < c.end <= hi + 1e-9 for c in merged)
    shown = {line for cue in merged for line in cue.lines}
    # Every cue long enough not to be a sliver shows up somewhere.
    for lang, track in tracks.items():
        for cue in track.cues:
            if cue.duration >= 0.5:
                assert cue.lines[0] in shown, (lang, cue)
    for cue in merged:
        langs = [line[:2] for line in cue.lines]
        assert langs == sorted(langs)  # English lines above Mongolian ones


def test_merge_absorbs_a_few_frames_of_difference() -> None:
    tracks = {
        "en": Track("en", (Cue(1.0, 2.5, ("Hello.",)),)),
        "mn": Track("mn", (Cue(1.0, 2.6, ("Сайн уу.",)),)),
    }
    assert merge_tracks(tracks) == [Cue(1.0, 2.6, ("Hello.", "Сайн уу."))]


def test_cues_follow_each_use_of_the_clip_and_are_cut_to_the_used_part() -> None:
    fps = Fraction(25)
    cues = [Cue(0.5, 1.5, ("a",)), Cue(3.0, 4.0, ("b",)), Cue(6.0, 7.0, ("c",))]
    # Used twice: frames 50..124 of the file (2.0–5.0 s) at timeline 0 s, and the whole
    # first 2 s of it at timeline 10 s.
    uses = [Placement(0, 50, 124), Placement(250, 0, 49)]
    placed = place_cues(cues, uses, fps)
    assert placed == [
        Cue(1.0, 2.0, ("b",)),  # 3.0–4.0 s of the file, 2 s into the use
        Cue(10.5, 11.5, ("a",)),
    ]


def test_a_cue_clipped_to_a_sliver_is_dropped() -> None:
    placed = place_cues([Cue(0.0, 2.05, ("x",))], [Placement(0, 50, 99)], Fraction(25))
    assert placed == []
