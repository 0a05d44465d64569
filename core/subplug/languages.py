"""The facts about languages and the model's hearing that every part of subplug shares.

One home, imported by the engine, the live engine, prompts, cue shaping, the command
line and the host adapters: change a fact here and it changes everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Languages subplug produces (ISO 639-1 codes).
LANGUAGES: tuple[str, ...] = ("en", "mn")
#: What ``--source`` accepts: a language, or ``auto`` (detected from each chunk's script).
SOURCES: tuple[str, ...] = ("auto", *LANGUAGES)
#: How messages, file headers and subtitle styles name each language.
LANGUAGE_NAMES: Mapping[str, str] = {"en": "English", "mn": "Mongolian"}
#: The longest audio Gemma 3n hears at once (seconds): every clip becomes 188 audio
#: tokens for at most 30 s; longer input would be truncated.
MAX_AUDIO_SECONDS = 30.0
#: Characters per subtitle line by default (Netflix's English rule; Russian, the closest
#: Cyrillic precedent, uses 39).
DEFAULT_MAX_CHARS = 42


def language_name(code: str) -> str:
    """``English`` for ``en``; an unknown code names itself."""
    return LANGUAGE_NAMES.get(code, code)
