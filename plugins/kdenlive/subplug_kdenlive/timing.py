"""Move subtitles made for one clip to where that clip sits on the timeline.

A clip used on the timeline shows frames ``clip_in..clip_out`` of its file starting at
timeline frame ``position``. A cue at time ``t`` of the file appears at
``position/fps + t - clip_in/fps``; cues outside the used part are cut away (or
clipped to it). A clip used several times gets its cues at every place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

from subplug.types import Cue, Track

from subplug_kdenlive.project import Placement

#: Cue pieces shorter than this after clipping are dropped (seconds).
MIN_VISIBLE = 0.2


def place_cues(cues: Sequence[Cue], placements: Sequence[Placement], fps: Fraction) -> list[Cue]:
    """``cues`` (times in the clip's file) at every ``placement`` on the timeline."""
    rate = float(fps)
    out: list[Cue] = []
    for placement in placements:
        used_start = placement.clip_in / rate
        used_end = (placement.clip_out + 1) / rate
        offset = placement.position / rate - used_start
        for cue in cues:
            start = max(cue.start, used_start)
            end = min(cue.end, used_end)
            if end - start < MIN_VISIBLE:
                continue
            out.append(Cue(round(start + offset, 3), round(end + offset, 3), cue.lines))
    out.sort(key=lambda c: (c.start, c.end))
    return _no_overlap(out)


def _no_overlap(cues: list[Cue]) -> list[Cue]:
    """Where two placements overlap on the timeline (a clip on two tracks at once),
    end the earlier cue when the next one starts."""
    result: list[Cue] = []
    for cue in cues:
        if result and cue.start < result[-1].end:
            last = result[-1]
            if cue.start - last.start < MIN_VISIBLE:
                continue
            result[-1] = Cue(last.start, cue.start, last.lines)
        result.append(cue)
    return result


def place_tracks(
    tracks: Mapping[str, Track], placements: Sequence[Placement], fps: Fraction
) -> dict[str, Track]:
    """Every track of ``tracks`` moved onto the timeline."""
    return {
        lang: Track(track.lang, tuple(place_cues(track.cues, placements, fps)))
        for lang, track in tracks.items()
    }
