"""Subtitle text in the forms Kdenlive reads: SRT (one track) and ASS (24.08 and later).

Kdenlive sizes its own subtitle style from the project: font size = frame height / 15
(``SubtitleModel`` constructor in KDE/kdenlive). The ASS written here does the same, so
text looks the same size as subtitles made in Kdenlive, at any project resolution:
the bottom language at height/15, the other one a little smaller, above it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from subplug.types import Cue, StyleOptions, Track

from subplug_kdenlive.project import Profile

#: ASS style name per language.
STYLE_NAMES = {"en": "English", "mn": "Mongolian"}


def _ssa_time(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


def render_srt(cues: Sequence[Cue]) -> str:
    """SRT text for ``cues`` (each cue's lines on separate lines)."""
    import pysubs2

    subs = pysubs2.SSAFile()
    for cue in cues:
        subs.append(
            pysubs2.SSAEvent(
                start=_ssa_time(cue.start), end=_ssa_time(cue.end), text=r"\N".join(cue.lines)
            )
        )
    return subs.to_string("srt")


def render_ass(
    tracks: Mapping[str, Track],
    langs: Sequence[str],
    profile: Profile,
    style: StyleOptions | None = None,
) -> str:
    """ASS text showing ``langs`` of ``tracks``: ``style.bottom`` at the bottom, the
    other language above it. Each language has its own style and layer (Kdenlive's
    subtitle editor keeps events of different layers apart)."""
    import pysubs2

    style = style or StyleOptions()
    present = [lang for lang in langs if lang in tracks]
    bottom = style.bottom if style.bottom in present else (present[-1] if present else "mn")
    subs = pysubs2.SSAFile()
    subs.info["PlayResX"] = str(profile.width)
    subs.info["PlayResY"] = str(profile.height)
    subs.info["WrapStyle"] = "0"
    subs.info["ScaledBorderAndShadow"] = "yes"
    size = max(8, round(profile.height / 15))
    second = max(8, round(size * style.second_font_size / style.font_size))
    margin = max(4, round(profile.height / 30))
    bottom_lines = (
        max((len(cue.lines) for cue in tracks[bottom].cues), default=1) if bottom in tracks else 1
    )
    subs.styles.clear()
    for layer, lang in enumerate(sorted(present, key=lambda code: code != bottom)):
        raised = lang != bottom
        subs.styles[STYLE_NAMES.get(lang, lang)] = pysubs2.SSAStyle(
            fontname=style.font,
            fontsize=second if raised else size,
            primarycolor=pysubs2.Color(255, 255, 255)
            if not raised
            else pysubs2.Color(255, 240, 170),
            outlinecolor=pysubs2.Color(0, 0, 0),
            backcolor=pysubs2.Color(0, 0, 0, 128),
            outline=max(1.0, size / 18),
            shadow=0,
            alignment=pysubs2.Alignment.BOTTOM_CENTER,
            marginl=margin,
            marginr=margin,
            marginv=margin + (round(bottom_lines * size * 1.25) if raised else 0),
        )
        for cue in tracks[lang].cues:
            subs.append(
                pysubs2.SSAEvent(
                    start=_ssa_time(cue.start),
                    end=_ssa_time(cue.end),
                    text=r"\N".join(cue.lines),
                    style=STYLE_NAMES.get(lang, lang),
                    layer=layer,
                )
            )
    subs.sort()
    return subs.to_string("ass")
