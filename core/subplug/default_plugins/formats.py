"""The core's subtitle writers, registered like any plugin's: ``ass`` (both languages in
one file), ``srt`` and ``vtt`` (one file per language)."""

from __future__ import annotations

from collections.abc import Callable

from subplug.hookspecs import hookimpl
from subplug.types import SubtitleFormat


@hookimpl
def subplug_register_formats(register: Callable[[SubtitleFormat], None]) -> None:
    """Register the ASS, SRT and WebVTT writers of :mod:`subplug.formats`."""
    from subplug import formats

    register(SubtitleFormat("ass", bilingual=True, write=formats.render_ass))
    register(SubtitleFormat("srt", bilingual=False, write=formats.render_srt))
    register(SubtitleFormat("vtt", bilingual=False, write=formats.render_vtt))
