"""Subtitle writers: ASS, SRT and WebVTT text over pysubs2.

* :func:`render_ass` puts every language in one file with a named style per language
  (``EN``, ``MN``): :attr:`StyleOptions.bottom` at the bottom (Alignment 2) in the main
  font size, the other in the smaller second size, laid out per cue just above the
  bottom-language lines shown at the same time — one line or two, or at the bottom
  margin when there are none (``second_position="above"``) — or at the top of the frame
  (``"top"``, Alignment 8). DejaVu Sans (has Cyrillic), white and pale-yellow text,
  black outline and a soft shadow, sizes in the script's PlayRes pixels.
* :func:`render_srt` / :func:`render_vtt` write one language per file; :func:`srt_text`
  writes given cues (hosts that merge languages into one cue).
* :func:`output_path` names files ``NAME.en-mn.ass``, ``NAME.en.srt``, ``NAME.mn.vtt``.

Writing the files safely is :mod:`subplug.files`' job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pysubs2

from subplug.files import printable_name
from subplug.types import Cue, StyleOptions, SubtitleFormat, Tracks

#: Text colour per role (pysubs2 colours are RGBA with 0 = opaque).
_MAIN_COLOUR = pysubs2.Color(255, 255, 255, 0)
_SECOND_COLOUR = pysubs2.Color(255, 236, 150, 0)
_OUTLINE_COLOUR = pysubs2.Color(0, 0, 0, 0)
_SHADOW_COLOUR = pysubs2.Color(0, 0, 0, 128)
#: Line height of DejaVu Sans as a share of the font size (ascent + descent ≈ 1.16).
_LINE_HEIGHT = 1.2


def style_name(lang: str) -> str:
    """The ASS style of a language: ``EN``, ``MN``…"""
    return lang.upper()


def _safe_text(lines: Sequence[str]) -> str:
    """Cue lines as ASS event text. Braces would start override blocks, in ASS and in
    pysubs2's SRT/VTT writers alike, so they become parentheses. A backslash stays a
    backslash, followed by an invisible WORD JOINER (U+2060), so ``\\N``, ``\\h`` or
    ``\\i1`` in the text are never read as codes (a look-alike such as U+FF3C is missing
    from common fonts, DejaVu Sans included, and would show as a box)."""
    cleaned = (line.replace("\\", "\\\u2060").replace("{", "(").replace("}", ")") for line in lines)
    return r"\N".join(cleaned)


def _events(cues: Iterable[Cue], style: str) -> list[pysubs2.SSAEvent]:
    return [
        pysubs2.SSAEvent(
            start=round(cue.start * 1000),
            end=round(cue.end * 1000),
            text=_safe_text(cue.lines),
            style=style,
        )
        for cue in cues
    ]


def _cues(tracks: Tracks, lang: str) -> tuple[Cue, ...]:
    track = tracks.tracks.get(lang)
    return track.cues if track is not None else ()


def render_ass(tracks: Tracks, langs: Sequence[str], style: StyleOptions) -> str:
    """One ASS script holding ``langs``, each in its own style (see the module doc)."""
    if not langs:
        raise ValueError("render_ass needs at least one language")
    if style.second_position not in ("above", "top"):
        raise ValueError(f"second_position must be 'above' or 'top', not {style.second_position!r}")
    width, height = style.play_res
    bottom = style.bottom if style.bottom in langs else langs[0]
    outline = max(1.0, round(height / 360, 1))
    shadow = max(0.5, round(height / 1080, 1))
    margin_v = round(height * 0.045)
    margin_h = round(width * 0.05)

    subs = pysubs2.SSAFile()
    subs.info.update(
        {
            "Title": printable_name(tracks.media),
            "PlayResX": str(width),
            "PlayResY": str(height),
            "ScaledBorderAndShadow": "yes",
            "WrapStyle": "0",
        }
    )
    subs.styles.clear()
    bottom_lines = max((len(c.lines) for c in _cues(tracks, bottom)), default=1) or 1
    # The style's margin fits the bottom language's tallest cue; each event sets its own.
    raised = round(
        margin_v + bottom_lines * style.font_size * _LINE_HEIGHT + 0.4 * style.second_font_size
    )
    for lang in langs:
        main = lang == bottom
        top = not main and style.second_position == "top"
        subs.styles[style_name(lang)] = pysubs2.SSAStyle(
            fontname=style.font,
            fontsize=style.font_size if main else style.second_font_size,
            primarycolor=_MAIN_COLOUR if main else _SECOND_COLOUR,
            secondarycolor=_MAIN_COLOUR if main else _SECOND_COLOUR,
            outlinecolor=_OUTLINE_COLOUR,
            backcolor=_SHADOW_COLOUR,
            borderstyle=1,
            outline=outline,
            shadow=shadow,
            alignment=pysubs2.Alignment.TOP_CENTER if top else pysubs2.Alignment.BOTTOM_CENTER,
            marginl=margin_h,
            marginr=margin_h,
            marginv=margin_v if main or top else raised,
            encoding=1,
        )
    events = []
    bottom_cues = _cues(tracks, bottom)
    for lang in langs:
        made = _events(_cues(tracks, lang), style_name(lang))
        if lang != bottom and style.second_position == "above":
            # Laid out per cue: just above the bottom language's lines shown at the same
            # time (one line or two), or at the bottom margin when none is shown.
            for event, cue in zip(made, _cues(tracks, lang), strict=True):
                under = max(
                    (len(c.lines) for c in bottom_cues if c.start < cue.end and cue.start < c.end),
                    default=0,
                )
                event.marginv = (
                    margin_v
                    if not under
                    else round(
                        margin_v
                        + under * style.font_size * _LINE_HEIGHT
                        + 0.4 * style.second_font_size
                    )
                )
        events.extend(made)
    # Same start: the bottom language first, so players that stack collisions agree.
    order = {style_name(lang): index for index, lang in enumerate([bottom, *langs])}
    events.sort(key=lambda e: (e.start, order[e.style], e.end))
    subs.events = events
    return subs.to_string("ass")


def _single(langs: Sequence[str], name: str) -> str:
    if len(langs) != 1:
        raise ValueError(f"{name} holds one language per file, got {list(langs)}")
    return langs[0]


def render_srt(tracks: Tracks, langs: Sequence[str], style: StyleOptions | None = None) -> str:
    """SubRip text of the one language in ``langs`` (``style`` is unused)."""
    return srt_text(_cues(tracks, _single(langs, "SRT")))


def srt_text(cues: Iterable[Cue]) -> str:
    """SubRip text of ``cues`` as given, their text made safe like every subtitle subplug
    writes. :func:`render_srt` uses it; a host that puts several languages in one cue
    (Kdenlive before 24.08 has one subtitle track) calls it with its merged cues."""
    subs = pysubs2.SSAFile()
    subs.events = sorted(_events(cues, "Default"), key=lambda e: e.start)
    return subs.to_string("srt")


def _vtt_escape(cue: Cue) -> Cue:
    lines = tuple(
        line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for line in cue.lines
    )
    return Cue(cue.start, cue.end, lines)


def render_vtt(tracks: Tracks, langs: Sequence[str], style: StyleOptions | None = None) -> str:
    """WebVTT text of the one language in ``langs``; ``&``, ``<`` and ``>`` are written
    as character references, as WebVTT requires (``style`` is unused)."""
    lang = _single(langs, "WebVTT")
    subs = pysubs2.SSAFile()
    cues = (_vtt_escape(cue) for cue in _cues(tracks, lang))
    subs.events = sorted(_events(cues, "Default"), key=lambda e: e.start)
    return subs.to_string("vtt")


# ------------------------------------------------------------------------- files


def output_path(
    media: Path, out_dir: Path | None, fmt: SubtitleFormat, langs: Sequence[str]
) -> Path:
    """Where a subtitle file for ``media`` goes: ``NAME.en-mn.ass``, ``NAME.en.srt``…
    next to the media, or in ``out_dir``."""
    media = Path(media)
    folder = Path(out_dir) if out_dir is not None else media.parent
    return folder / f"{media.stem}.{'-'.join(langs)}.{fmt.extension}"
