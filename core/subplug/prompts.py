"""The nine training instructions, which one to send for a chunk, and the output parser.

This module is the single source of truth for the instruction strings: the backends send
them and the training package (``subplug_training``) builds its samples from them, so
inference always uses the exact wording the adapter was trained on (REFERENCE.md §1).

Instructions are numbered from 1, as in the seed's training code: ``INSTRUCTIONS[0]`` is
instruction 1 and :func:`instruction` takes the 1-based number.

Planning (which instruction to send) is a two-step flow:

* :func:`first_request` is what every chunk gets first. With a known source language and
  both targets it is one combined call (8 for English audio, 9 for Mongolian); with one
  target it is a transcription (4 or 2) or a translation (6 or 7); with ``auto`` it is
  the plain transcription 1.
* :func:`followup_request` says what to send next once the source language of a chunk
  is known (detected from the transcription's script with :func:`detect_language`, or
  because a combined answer lacked its translation): a translation (6 or 7) when the
  other language is a target, else nothing.

:func:`parse_output` turns raw model text into ``{language: text}`` and tolerates the
format drifts the model shows (labels, headings, missing separators, stray tokens).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from subplug.languages import LANGUAGE_NAMES, LANGUAGES, MAX_AUDIO_SECONDS
from subplug.types import Task

# ----------------------------------------------------------------- instructions

INSTRUCTION_TRANSCRIBE = "Transcribe this audio."
"""1: transcription in the audio's own language (language not given)."""
INSTRUCTION_TRANSCRIBE_INTO_MN = "Transcribe this audio into Mongolian."
"""2: Mongolian text (a transcription for Mongolian audio)."""
INSTRUCTION_EN_AUDIO_INTO_MN = "Transcribe this English audio into Mongolian."
"""3: English audio, Mongolian text."""
INSTRUCTION_TRANSCRIBE_INTO_EN = "Transcribe this audio into English."
"""4: English text (a transcription for English audio)."""
INSTRUCTION_MN_AUDIO_INTO_EN = "Transcribe this Mongolian audio into English."
"""5: Mongolian audio, English text."""
INSTRUCTION_TRANSLATE_INTO_MN = "Translate this audio into Mongolian."
"""6: English audio translated into Mongolian."""
INSTRUCTION_TRANSLATE_INTO_EN = "Translate this audio into English."
"""7: Mongolian audio translated into English."""
INSTRUCTION_EN_THEN_MN = "Transcribe this audio into English, and then translate it into Mongolian."
"""8: English audio; English transcription, then Mongolian translation (combined target)."""
INSTRUCTION_MN_THEN_EN = "Transcribe this audio into Mongolian, and then translate it into English."
"""9: Mongolian audio; Mongolian transcription, then English translation (combined target)."""

INSTRUCTIONS: tuple[str, ...] = (
    INSTRUCTION_TRANSCRIBE,
    INSTRUCTION_TRANSCRIBE_INTO_MN,
    INSTRUCTION_EN_AUDIO_INTO_MN,
    INSTRUCTION_TRANSCRIBE_INTO_EN,
    INSTRUCTION_MN_AUDIO_INTO_EN,
    INSTRUCTION_TRANSLATE_INTO_MN,
    INSTRUCTION_TRANSLATE_INTO_EN,
    INSTRUCTION_EN_THEN_MN,
    INSTRUCTION_MN_THEN_EN,
)
"""The nine training instructions in the seed's order; instruction *n* is
``INSTRUCTIONS[n - 1]``."""


@dataclass(frozen=True)
class InstructionSpec:
    """What the seed's training code says about one instruction."""

    number: int
    """1-based instruction number."""
    text: str
    audio_languages: tuple[str, ...]
    """Audio languages the instruction was trained with."""
    output_languages: tuple[str, ...]
    """Languages the target may be in; for combined targets, in section order."""
    all_outputs: bool
    """True for 8 and 9: the target holds every output language (combined format)."""


INSTRUCTION_SPECS: tuple[InstructionSpec, ...] = (
    InstructionSpec(1, INSTRUCTION_TRANSCRIBE, ("en", "mn"), ("en", "mn"), False),
    InstructionSpec(2, INSTRUCTION_TRANSCRIBE_INTO_MN, ("en", "mn"), ("mn",), False),
    InstructionSpec(3, INSTRUCTION_EN_AUDIO_INTO_MN, ("en",), ("mn",), False),
    InstructionSpec(4, INSTRUCTION_TRANSCRIBE_INTO_EN, ("en", "mn"), ("en",), False),
    InstructionSpec(5, INSTRUCTION_MN_AUDIO_INTO_EN, ("mn",), ("en",), False),
    InstructionSpec(6, INSTRUCTION_TRANSLATE_INTO_MN, ("en",), ("mn",), False),
    InstructionSpec(7, INSTRUCTION_TRANSLATE_INTO_EN, ("mn",), ("en",), False),
    InstructionSpec(8, INSTRUCTION_EN_THEN_MN, ("en",), ("en", "mn"), True),
    InstructionSpec(9, INSTRUCTION_MN_THEN_EN, ("mn",), ("mn", "en"), True),
)
"""Per-instruction facts from the seed's training code, in instruction order."""


def instruction(number: int) -> str:
    """The text of instruction ``number`` (1 to 9)."""
    if not 1 <= number <= len(INSTRUCTIONS):
        raise ValueError(f"instruction numbers run from 1 to {len(INSTRUCTIONS)}, not {number}")
    return INSTRUCTIONS[number - 1]


def instruction_number(text: str) -> int:
    """The 1-based number of an instruction text (exact match)."""
    try:
        return INSTRUCTIONS.index(text) + 1
    except ValueError:
        raise ValueError(f"not a training instruction: {text!r}") from None


def other_language(lang: str) -> str:
    """``mn`` for ``en`` and ``en`` for ``mn``."""
    if lang == "en":
        return "mn"
    if lang == "mn":
        return "en"
    raise ValueError(f"unknown language {lang!r}; expected one of {LANGUAGES}")


def combined_target(first_lang: str, texts: Mapping[str, str]) -> str:
    """The combined target of instructions 8 and 9, source language first.

    ``combined_target("en", {"en": "Hi.", "mn": "Сайн уу."})`` is
    ``"### English\\n\\nHi.\\n\\n---\\n\\n### Mongolian\\n\\nСайн уу."``.
    """
    second = other_language(first_lang)
    sections = []
    for lang in (first_lang, second):
        if lang not in texts:
            raise ValueError(f"combined target needs a {LANGUAGE_NAMES[lang]} text")
        sections.append(f"### {LANGUAGE_NAMES[lang]}\n\n{texts[lang]}")
    return "\n\n---\n\n".join(sections)


def eligible_instructions(audio_lang: str, langs_with_text: Iterable[str]) -> tuple[int, ...]:
    """Instruction numbers a training sample may use, by the seed's rules.

    A paired sample (texts in both languages) may use any instruction trained for its
    audio language; a sample with only its own language's text may use the
    single-output instructions that produce that language (1 and 4 for English,
    1 and 2 for Mongolian).
    """
    have = set(langs_with_text)
    if audio_lang not in LANGUAGES:
        raise ValueError(f"unknown audio language {audio_lang!r}")
    if have >= {"en", "mn"}:
        return tuple(s.number for s in INSTRUCTION_SPECS if audio_lang in s.audio_languages)
    if audio_lang in have:
        return tuple(
            s.number
            for s in INSTRUCTION_SPECS
            if audio_lang in s.audio_languages
            and audio_lang in s.output_languages
            and not s.all_outputs
        )
    return ()


def training_target(number: int, audio_lang: str, texts: Mapping[str, str]) -> str:
    """The target text of a training sample for instruction ``number``, by the seed's
    labelling rules: the combined format for 8 and 9; otherwise the audio language's
    text when the instruction may produce it, else the instruction's output language."""
    spec = INSTRUCTION_SPECS[number - 1] if 1 <= number <= 9 else None
    if spec is None:
        raise ValueError(f"instruction numbers run from 1 to 9, not {number}")
    if spec.all_outputs:
        return combined_target(spec.output_languages[0], texts)
    if audio_lang in spec.output_languages and audio_lang in texts:
        return texts[audio_lang]
    for lang in spec.output_languages:
        if lang in texts:
            return texts[lang]
    raise ValueError(f"instruction {number} needs a text in {spec.output_languages}")


# --------------------------------------------------------------------- planning


class PlannedRequest(NamedTuple):
    """One backend call to make for a chunk (unpacks as ``task, instruction, source``)."""

    task: Task
    instruction: str
    source: str | None
    """The audio language when known; ``None`` asks for language detection."""


def first_request(source: str | None, targets: Sequence[str]) -> PlannedRequest:
    """The first call for every chunk, given ``--source`` and ``--targets``.

    * ``auto`` (or ``None``): instruction 1, the language is decided afterwards from the
      transcription's script (:func:`detect_language`) and :func:`followup_request`.
    * known source, both languages wanted: one combined call, 8 (English audio) or 9.
    * known source, only the source language wanted: 4 (English) or 2 (Mongolian), the
      trained transcriptions that name the language.
    * known source, only the other language wanted: 6 or 7 (translation).
    """
    wanted = _targets(targets)
    if source in (None, "auto"):
        return PlannedRequest(Task.TRANSCRIBE, INSTRUCTION_TRANSCRIBE, None)
    assert source is not None
    other = other_language(source)
    if source in wanted and other in wanted:
        text = INSTRUCTION_EN_THEN_MN if source == "en" else INSTRUCTION_MN_THEN_EN
        return PlannedRequest(Task.BOTH, text, source)
    if source in wanted:
        text = INSTRUCTION_TRANSCRIBE_INTO_EN if source == "en" else INSTRUCTION_TRANSCRIBE_INTO_MN
        return PlannedRequest(Task.TRANSCRIBE, text, source)
    return PlannedRequest(Task.TRANSLATE, _translation(source), source)


def followup_request(source: str | None, targets: Sequence[str]) -> PlannedRequest | None:
    """The call to make once a chunk's source language is known and its source text is
    in hand: a translation (6 for English audio, 7 for Mongolian) when the other
    language is a target; ``None`` when nothing more is needed or the language is
    unknown (no letters to judge by)."""
    wanted = _targets(targets)
    if source not in LANGUAGES:
        return None
    if other_language(source) not in wanted:
        return None
    return PlannedRequest(Task.TRANSLATE, _translation(source), source)


def _translation(source: str) -> str:
    return INSTRUCTION_TRANSLATE_INTO_MN if source == "en" else INSTRUCTION_TRANSLATE_INTO_EN


def _targets(targets: Sequence[str]) -> set[str]:
    wanted = set(targets)
    if not wanted or not wanted <= set(LANGUAGES):
        raise ValueError(f"targets must be a non-empty subset of {LANGUAGES}, not {targets!r}")
    return wanted


#: Fixed token allowance per output language.
BASE_NEW_TOKENS = 16
#: Per second of audio and output language. Speech runs at ≤ ~3.5 words/s; Gemma's
#: tokenizer spends ≤ ~2 tokens per English word and more on Cyrillic, so 8 tokens/s is
#: about twice what dense speech needs: a loop of repeated text is cut, real text is not.
TOKENS_PER_SECOND = 8
#: The section headings and separator of the combined format.
COMBINED_FORMAT_TOKENS = 16
#: The largest budget :func:`max_new_tokens_for` gives (a combined answer for 30 s).
MAX_NEW_TOKENS = 2 * (BASE_NEW_TOKENS + TOKENS_PER_SECOND * 30) + COMBINED_FORMAT_TOKENS


def max_new_tokens_for(seconds: float, task: Task) -> int:
    """A generous generation budget for ``seconds`` of audio.

    ``16 + 8 × seconds`` tokens per output language, plus 16 for the combined format's
    headings and separator, with ``seconds`` clamped to 1–30 (the model hears at most
    30 s). So 24–256 tokens for a single output and 64–528 for a combined one.
    """
    span = min(max(float(seconds), 1.0), MAX_AUDIO_SECONDS)
    outputs = 2 if task is Task.BOTH else 1
    budget = outputs * (BASE_NEW_TOKENS + math.ceil(TOKENS_PER_SECOND * span))
    if task is Task.BOTH:
        budget += COMBINED_FORMAT_TOKENS
    return min(budget, MAX_NEW_TOKENS)


# ---------------------------------------------------------------------- scripts

#: Share of a text's letters one script must have for :func:`detect_language` to call
#: it confidently (the parser's ``strong`` checks use it).
STRONG_SHARE = 0.8


def script_counts(text: str) -> tuple[int, int]:
    """(Cyrillic letters, Latin letters) in ``text``; digits, punctuation, spaces and
    other scripts count as neither."""
    cyrillic = latin = 0
    for char in text:
        if not char.isalpha():
            continue
        code = ord(char)
        if 0x0400 <= code <= 0x052F or 0x1C80 <= code <= 0x1C8F or 0xA640 <= code <= 0xA69F:
            cyrillic += 1
        elif (
            code < 0x0250
            or 0x1E00 <= code <= 0x1EFF
            or unicodedata.name(char, "").startswith("LATIN")
        ):
            latin += 1
    return cyrillic, latin


def detect_language(text: str, *, strong: bool = False) -> str | None:
    """``mn`` when most letters are Cyrillic, ``en`` when most are Latin, else ``None``.

    Digits, punctuation and whitespace are ignored, so ``"2024 онд Google компани"`` is
    ``mn``. A tie or a text without letters is ``None``. With ``strong=True`` the
    winning script must hold at least :data:`STRONG_SHARE` of the letters. (Any
    Cyrillic text counts as Mongolian: it is the only Cyrillic language we produce.)
    """
    cyrillic, latin = script_counts(text)
    letters = cyrillic + latin
    if not letters or cyrillic == latin:
        return None
    lang, share = ("mn", cyrillic / letters) if cyrillic > latin else ("en", latin / letters)
    if strong and share < STRONG_SHARE:
        return None
    return lang


# ---------------------------------------------------------------------- parsing

_SPECIAL_TOKEN = re.compile(
    r"<(?:/?s|bos|eos|pad|unk|mask|start_of_turn|end_of_turn|start_of_audio|end_of_audio"
    r"|audio_soft_token|start_of_image|end_of_image|image_soft_token)>",
    re.IGNORECASE,
)
_END_TOKEN = re.compile(r"<(?:end_of_turn|eos|/s)>", re.IGNORECASE)
_TURN_START = re.compile(r"^\s*<start_of_turn>\s*model\s*\n", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(?:```|~~~)[\w-]*\s*$")
_RULE = re.compile(r"^\s*(?:[-*_=—–]\s*){3,}$")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))

_LANGUAGE_WORDS = {
    "english": "en",
    "eng": "en",
    "en": "en",
    "англи": "en",
    "англи хэл": "en",
    "англи хэлээр": "en",
    "англи хэлний": "en",
    "mongolian": "mn",
    "mongol": "mn",
    "mon": "mn",
    "mn": "mn",
    "монгол": "mn",
    "монгол хэл": "mn",
    "монгол хэлээр": "mn",
    "монгол хэлний": "mn",
}
_QUALIFIERS = (
    r"(?:\s+(?:translation|transcription|transcript|text|version|орчуулга|текст|хувилбар))?"
    r"(?:\s*\([^()\n]{0,40}\))?"
)
_LABEL = re.compile(
    r"^\s*(?P<heading>\#{1,6}\s*)?(?P<open>[*_]{1,3})?\s*(?P<lbr>\[)?\s*"
    r"(?P<name>english|eng|en|mongolian|mongol|mon|mn"
    r"|англи(?:\s+хэл(?:ээр|ний)?)?|монгол(?:\s+хэл(?:ээр|ний)?)?)"
    + _QUALIFIERS
    + r"\s*(?P<rbr>\])?\s*(?P<close1>[*_]{1,3})?\s*(?P<colon>[:：])?\s*(?P<close2>[*_]{1,3})?"
    r"[ \t]*(?P<rest>.*)$",
    re.IGNORECASE,
)
# Headings the model sometimes writes that name no language; dropped.
_BARE_HEADING = re.compile(
    r"^\s*(?:\#{1,6}\s*|[*_]{2}\s*)?(?:transcription|transcript|translation|орчуулга)"
    r"\s*(?:[*_]{2})?\s*[:：]?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Block:
    lang: str | None
    text: str
    labelled: bool


def normalise_whitespace(text: str) -> str:
    """Collapse every run of whitespace (newlines, tabs, no-break spaces) to one space,
    drop zero-width characters and trim the ends."""
    return " ".join(text.translate(_INVISIBLE).split())


def parse_output(text: str, task: Task, source: str | None) -> dict[str, str]:
    """Turn one raw model answer into ``{language: text}``.

    Tolerates what the model drifts into: ``### English`` with any heading level,
    ``English:`` / ``**English**`` / ``Монгол:`` labels (inline or on their own line),
    a missing ``---`` separator, swapped sections, stray blank lines, code fences,
    leftover ``<end_of_turn>`` / ``<eos>`` tokens (anything after the first one is
    dropped), and no labels at all (paragraphs are then told apart by script). A label
    whose text is plainly in the other script (≥ 80 % of its letters) is overruled by
    the script. Duplicated sections: the first one wins; labelled sections win over
    unlabelled text. Whitespace inside each text is collapsed.

    ``Task.BOTH`` returns every language found (normally both). Single-output tasks
    return exactly one entry: the expected language (the source for a transcription,
    the other language for a translation, the script's language when ``source`` is
    ``None``), or the other language when the answer is plainly in it. Returns ``{}``
    for an empty answer or one whose language cannot be told.
    """
    blocks = _blocks(_clean(text))
    if not blocks:
        return {}
    found: dict[str, str] = {}
    for labelled in (True, False):
        for block in blocks:
            if block.labelled == labelled and block.lang and block.lang not in found:
                found[block.lang] = block.text
    undecided = [b.text for b in blocks if b.lang is None]

    expected = _expected(task, source)
    if task is Task.BOTH:
        missing = [lang for lang in expected if lang not in found]
        if undecided and len(missing) == 1:
            found[missing[0]] = " ".join(undecided)
        return {lang: found[lang] for lang in _order(found, blocks)}

    if not found:
        # No letters anywhere (numbers, punctuation): only the task can say.
        lang = expected[0] if expected else None
        return {lang: " ".join(undecided)} if lang else {}
    # Source unknown, or the answer is in the other language: the first one found.
    expected_found = len(expected) == 1 and expected[0] in found
    lang = expected[0] if expected_found else _order(found, blocks)[0]
    if len(found) == 1 and not any(block.labelled for block in blocks):
        return {lang: " ".join(block.text for block in blocks)}
    return {lang: found[lang]}


def _expected(task: Task, source: str | None) -> tuple[str, ...]:
    if source not in LANGUAGES:
        return LANGUAGES if task is Task.BOTH else ()
    assert source is not None
    if task is Task.BOTH:
        return (source, other_language(source))
    if task is Task.TRANSLATE:
        return (other_language(source),)
    return (source,)


def _order(found: Mapping[str, str], blocks: Sequence[_Block]) -> list[str]:
    order: list[str] = []
    for labelled_only in (True, False):
        for block in blocks:
            lang = block.lang
            wanted = block.labelled or not labelled_only
            if wanted and lang is not None and lang in found and lang not in order:
                order.append(lang)
    return order


def _clean(text: str) -> str:
    text = text.translate(_INVISIBLE).replace("\r\n", "\n").replace("\r", "\n")
    text = _TURN_START.sub("", text)
    end = _END_TOKEN.search(text)
    while end is not None and not text[: end.start()].strip():
        text = text[end.end() :]
        end = _END_TOKEN.search(text)
    if end is not None:
        text = text[: end.start()]
    text = _SPECIAL_TOKEN.sub("", text)
    return "\n".join(line for line in text.split("\n") if not _FENCE.match(line))


def _label(line: str) -> tuple[str, str, bool] | None:
    """``(language, rest of line, marked)`` when ``line`` is a language label;
    ``marked`` says it had a heading, colon, bold or brackets (a plain ``English`` on
    its own line is a label only if text follows it)."""
    match = _LABEL.match(line)
    if match is None:
        return None
    name = " ".join(match["name"].lower().split())
    lang = _LANGUAGE_WORDS.get(name)
    if lang is None:
        return None
    rest = match["rest"].strip()
    bold = bool(match["open"] and (match["close1"] or match["close2"]))
    bracketed = bool(match["lbr"] and match["rbr"])
    marked = bool(match["heading"] or match["colon"] or bold or bracketed)
    if len(name) <= 3 and not marked:
        return None  # a bare "en" or "mn" on a line is more likely text than a label
    if rest and not (match["colon"] or bold or bracketed):
        return None  # "English is spoken here." is text, not a label
    return lang, rest, marked


@dataclass
class _Section:
    lang: str | None
    lines: list[str]
    line: str = ""
    """The label line itself."""
    marked: bool = True


def _paragraphs(lines: Sequence[str]) -> list[str]:
    paragraphs: list[str] = []
    current: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(normalise_whitespace(" ".join(current)))
            current = []
    return paragraphs


def _blocks(text: str) -> list[_Block]:
    """Split cleaned text into language blocks, in order."""
    sections = [_Section(None, [])]
    for line in text.split("\n"):
        if _BARE_HEADING.match(line):
            sections[-1].lines.append("")
            continue
        label = _label(line)
        if label is not None:
            lang, rest, marked = label
            sections.append(_Section(lang, [rest] if rest else [], line, marked))
            continue
        sections[-1].lines.append("" if _RULE.match(line) else line)
    # A plain language name with nothing under it is text ("English" said aloud).
    merged: list[_Section] = []
    for section in sections:
        has_body = any(line.strip() for line in section.lines)
        if section.lang is not None and not section.marked and not has_body and merged:
            merged[-1].lines.append(section.line)
            continue
        merged.append(section)

    blocks: list[_Block] = []
    for section in merged:
        if section.lang is None:
            blocks.extend(_unlabelled(section.lines))
            continue
        paragraphs = _paragraphs(section.lines)
        if not paragraphs:
            continue
        # Paragraphs plainly in another script than the section's first one were
        # left without their own label: they are unlabelled text.
        reference = detect_language(paragraphs[0], strong=True) or section.lang
        split = next(
            (
                k
                for k, paragraph in enumerate(paragraphs[1:], start=1)
                if detect_language(paragraph, strong=True) not in (None, reference)
            ),
            len(paragraphs),
        )
        body = " ".join(paragraphs[:split])
        lang = section.lang
        plain = detect_language(body, strong=True)
        if plain is not None and plain != lang:
            lang = plain
        blocks.append(_Block(lang, body, True))
        if split < len(paragraphs):
            blocks.extend(_unlabelled([line for p in paragraphs[split:] for line in (p, "")]))
    return blocks


def _unlabelled(lines: Sequence[str]) -> list[_Block]:
    """Paragraphs of unlabelled text grouped by script; paragraphs whose script is not
    clear join their neighbour."""
    paragraphs = _paragraphs(lines)
    groups: list[tuple[str | None, list[str]]] = []
    for paragraph in paragraphs:
        lang = detect_language(paragraph, strong=True)
        if groups and (lang is None or groups[-1][0] in (None, lang)):
            previous, texts = groups[-1]
            groups[-1] = (previous or lang, [*texts, paragraph])
        else:
            groups.append((lang, [paragraph]))
    blocks = []
    for lang, texts in groups:
        body = " ".join(texts)
        blocks.append(_Block(lang or detect_language(body), body, False))
    return blocks
