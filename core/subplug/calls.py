"""Which calls make a chunk's texts, planned from what the backend and a text translator
can do (:class:`~subplug.types.Capabilities`). Pure functions: no model, no media.

Three shapes come out of the same rules:

* **one combined call** (Gemma 3n with a known source and both targets): the backend
  has the speech translation and ``combined``, so :data:`~subplug.types.Task.BOTH`;
* **a transcription, then a target-language call** (Qwen3-ASR fine-tunes, SeamlessM4T,
  Whisper into English): the first call transcribes, the follow-up asks the backend
  for the other language of the same audio (``Task.TRANSLATE``);
* **a transcription, then a text translator** (CTC, Whisper into Mongolian): the
  follow-up sends the transcription to the translator.

With ``--source auto`` the first call transcribes with the language unknown when the
backend detects languages; a backend that does not must be told the source, unless it
transcribes only one of subplug's languages (then that is the source).

:func:`check_request` refuses a job the backend and translator cannot serve, with one
clear :class:`~subplug.errors.SubplugError`, before any media is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from subplug import prompts
from subplug.errors import SubplugError
from subplug.languages import LANGUAGES, language_name
from subplug.types import Capabilities

#: What a backend that states no capabilities can do (Gemma 3n with the EN/MN adapter).
DEFAULT_CAPABILITIES = Capabilities()
#: The translator a ``cannot-translate`` hint suggests (a name of the model registry).
SUGGESTED_TRANSLATOR = "nllb-200-distilled-600m"

Direction = tuple[str, str]


def capabilities_of(backend: Any) -> Capabilities:
    """The backend's ``capabilities``, or :data:`DEFAULT_CAPABILITIES`."""
    found = getattr(backend, "capabilities", None)
    return found if isinstance(found, Capabilities) else DEFAULT_CAPABILITIES


def transcribed(caps: Capabilities) -> tuple[str, ...]:
    """subplug's languages the backend transcribes, in subplug's order."""
    return tuple(lang for lang in LANGUAGES if lang in caps.transcribes)


def planned_source(caps: Capabilities, source: str | None) -> str | None:
    """The source language to plan with: ``source`` when given; for ``auto`` ``None``
    (detected from the transcription) when the backend detects languages, else the one
    language it transcribes. Call :func:`check_request` first: an ``auto`` the backend
    cannot serve gives ``None`` here."""
    if source not in (None, "auto"):
        return source
    if caps.detects_language:
        return None
    langs = transcribed(caps)
    return langs[0] if len(langs) == 1 else None


@dataclass(frozen=True)
class FollowUp:
    """What a chunk still needs once its source language and text are known."""

    speech: prompts.PlannedRequest | None
    """A backend call for the other language of the same audio, or ``None``."""
    text: Direction | None
    """A text translation (source, target) of the transcription, or ``None``."""


def first_request(
    caps: Capabilities, source: str | None, targets: Sequence[str]
) -> prompts.PlannedRequest:
    """The first call for every chunk (:func:`subplug.prompts.first_request` for a
    backend that can do everything); ``source`` from :func:`planned_source`.

    A combined call only where the backend has ``combined`` and the speech
    translation; otherwise the transcription, whose translation follows. A translation
    of the audio alone (the source language not wanted) only where the backend has it;
    otherwise the transcription, for the text translator."""
    if source is None:
        return prompts.first_request(None, targets)
    other = prompts.other_language(source)
    wanted = set(targets)
    speech = (source, other) in caps.translates
    if other in wanted and speech and (source not in wanted or caps.combined):
        return prompts.first_request(source, targets)  # combined, or the translation alone
    return prompts.first_request(source, [source])  # the transcription; its translation follows


def follow_up(
    caps: Capabilities,
    translator: Sequence[Direction],
    lang: str | None,
    have: Sequence[str],
    targets: Sequence[str],
) -> FollowUp:
    """What to do for a chunk whose answer is in language ``lang`` and has texts in
    ``have``: ask the backend for the missing target (speech translation), or the text
    translator, or nothing (no letters to judge the language by, nothing missing, or
    no way to get it)."""
    if lang not in LANGUAGES or lang not in have:
        return FollowUp(None, None)
    assert lang is not None
    other = prompts.other_language(lang)
    if other not in targets or other in have:
        return FollowUp(None, None)
    if (lang, other) in caps.translates:
        return FollowUp(prompts.followup_request(lang, targets), None)
    if (lang, other) in translator:
        return FollowUp(None, (lang, other))
    return FollowUp(None, None)


def check_request(
    caps: Capabilities,
    translator: Sequence[Direction],
    source: str,
    targets: Sequence[str],
    *,
    model: str,
    translator_name: str | None = None,
) -> None:
    """Raise :class:`SubplugError` when the backend (``caps``, running ``model``) and
    the text translator (its ``translator`` directions) cannot give every language of
    ``targets`` for audio in ``source`` (``auto``: any language the backend
    transcribes)."""
    langs = transcribed(caps)
    if source == "auto":
        if not langs:
            raise SubplugError(
                "cannot-transcribe",
                f"{model} transcribes neither English nor Mongolian.",
                "Choose a model that does (docs/models.md, 'Choosing a model').",
            )
        if not caps.detects_language and len(langs) > 1:
            raise SubplugError(
                "cannot-detect-language",
                f"{model} cannot tell which language is spoken.",
                "Give it with --source en or --source mn.",
            )
        sources = langs
    else:
        sources = (source,)
    for spoken in sources:
        for target in targets:
            _check_one(caps, translator, spoken, target, model, translator_name)


def _check_one(
    caps: Capabilities,
    translator: Sequence[Direction],
    spoken: str,
    target: str,
    model: str,
    translator_name: str | None,
) -> None:
    heard, wanted = language_name(spoken), language_name(target)
    if target != spoken and (spoken, target) in caps.translates:
        return  # the backend translates the speech itself
    if target != spoken and (spoken, target) not in translator:
        by = f" and {translator_name} does not translate it" if translator_name else ""
        raise SubplugError(
            "cannot-translate",
            f"{model} cannot give {wanted} for {heard} speech{by}.",
            f"Add a text translator, e.g. --translator {SUGGESTED_TRANSLATOR} (subplug "
            f"models pull {SUGGESTED_TRANSLATOR}), or leave {target} out of --targets."
            if translator_name is None
            else f"Use a translator that does, or leave {target} out of --targets.",
        )
    if spoken not in caps.transcribes:  # the text, or the text to translate, is needed
        does = ", ".join(language_name(lang) for lang in transcribed(caps)) or "neither"
        raise SubplugError(
            "cannot-transcribe",
            f"{model} does not transcribe {heard} (it transcribes {does}).",
            f"Choose a model that transcribes {heard} (docs/models.md, 'Choosing a "
            "model'), or give the spoken language with --source.",
        )
