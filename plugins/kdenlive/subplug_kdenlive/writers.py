"""Subtitle text in the forms Kdenlive reads: SRT (one track) and ASS (24.08 and later).

The text itself comes from the core's writers (:mod:`subplug.formats`), so a ``{`` or a
``\\`` in what the model said is made safe exactly as in every file ``subplug generate``
writes, instead of turning into an ASS override tag. What is Kdenlive's own:

* sizes: Kdenlive sizes its own subtitle style from the project (font size = frame
  height / 15, ``SubtitleModel`` constructor in KDE/kdenlive); the ASS here does the
  same, the upper language a little smaller, so text looks like subtitles made in
  Kdenlive at any project resolution;
* layers: Kdenlive's subtitle editor keys events on (layer, start), so each language
  gets its own layer (the bottom language 0) and cues of two languages that start
  together are both kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from subplug import formats
from subplug.types import Cue, StyleOptions, Track, Tracks

from subplug_kdenlive.project import Profile


def render_srt(cues: Sequence[Cue]) -> str:
    """SRT text for ``cues`` (each cue's lines on separate lines)."""
    return formats.srt_text(cues)


def kdenlive_style(profile: Profile, style: StyleOptions | None = None) -> StyleOptions:
    """``style`` sized for a project of ``profile``'s frame, as Kdenlive sizes its own
    subtitles (bottom language height / 15, the other one scaled like the defaults)."""
    style = style or StyleOptions()
    size = max(8, round(profile.height / 15))
    second = max(8, round(size * style.second_font_size / style.font_size))
    return replace(
        style,
        play_res=(profile.width, profile.height),
        font_size=size,
        second_font_size=second,
    )


def render_ass(
    tracks: Mapping[str, Track],
    langs: Sequence[str],
    profile: Profile,
    style: StyleOptions | None = None,
    *,
    title: Path | None = None,
) -> str:
    """ASS text showing ``langs`` of ``tracks`` (those present): ``style.bottom`` at
    the bottom, the other language above it, one layer per language. ``title`` names
    the script (the project file)."""
    import pysubs2

    style = kdenlive_style(profile, style)
    present = [lang for lang in langs if lang in tracks] or list(langs[:1])
    bottom = style.bottom if style.bottom in present else present[-1]
    text = formats.render_ass(
        Tracks(media=title or Path("subtitles"), source_lang=None, tracks=tracks),
        present,
        replace(style, bottom=bottom),
    )
    layer = {
        formats.style_name(lang): index
        for index, lang in enumerate(sorted(present, key=lambda code: code != bottom))
    }
    script = pysubs2.SSAFile.from_string(text)
    for event in script:
        event.layer = layer.get(event.style, 0)
    return script.to_string("ass")
