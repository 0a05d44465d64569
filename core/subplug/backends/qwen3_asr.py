"""Qwen3-ASR backend (transformers' native ``Qwen3ASRForConditionalGeneration``; the
``qwen-asr`` package pins transformers 4.57 and cannot share subplug's environment),
registered as ``qwen3-asr``.

Qwen3-ASR answers ``language <Name><asr_text><text>``. Its ``language`` names the
language of the *text* (unlike Whisper's, which names the audio's): the prompt is
prefilled with ``language <Name><asr_text>`` and the model writes the text in that
language. So one call transcribes (the audio's own language) or, on a fine-tune trained
for it (``voiceping-ai/qwen3-asr-ja-en-speech-translation`` for Japanese), translates
(the other language): subplug asks for the transcription, then for the target language.
Without a language the model detects the spoken one itself.

What it can do: the base model transcribes the languages of transformers'
``LANGUAGE_CODE_TO_NAME`` (English among subplug's; Mongolian is not one of its 30) and
translates nothing; a fine-tune states more in ``subplug-capabilities.json`` (see
:mod:`subplug.backends.hf_model`). Decoding is greedy within the request's budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from subplug.backends import hf_model
from subplug.backends.hf_model import ModelFolder
from subplug.hookspecs import hookimpl
from subplug.languages import LANGUAGE_NAMES
from subplug.prompts import other_language
from subplug.types import BackendOptions, BackendRequest, Capabilities, Task

BACKEND_NAME = "qwen3-asr"
DEFAULT_MODEL = "qwen3-asr-1.7b"
MODEL_TYPES = ("qwen3_asr",)
#: Where the answer's text starts (after ``language <Name>``).
ASR_TEXT = "<asr_text>"


def inspect(folder: ModelFolder, options: BackendOptions) -> Capabilities:
    """Transcription of the languages the Qwen3-ASR processor names (English), with
    language detection; no translation unless the folder states it."""
    from subplug.languages import LANGUAGES

    known = {
        "ar",
        "yue",
        "zh",
        "cs",
        "da",
        "nl",
        "en",
        "fil",
        "fi",
        "fr",
        "de",
        "el",
        "hi",
        "hu",
        "id",
        "it",
        "ja",
        "ko",
        "mk",
        "ms",
        "fa",
        "pl",
        "pt",
        "ro",
        "ru",
        "es",
        "sv",
        "th",
        "tr",
        "vi",
    }  # fmt: skip  (transformers' LANGUAGE_CODE_TO_NAME)
    return Capabilities(
        transcribes=tuple(lang for lang in LANGUAGES if lang in known),
        translates=(),
        combined=False,
        detects_language=True,
        plain_text=True,
    )


class Qwen3AsrBackend(hf_model.HfBackend):
    """A loaded Qwen3-ASR answering :class:`~subplug.types.BackendRequest` s."""

    name = BACKEND_NAME

    def __init__(self, folder: ModelFolder, options: BackendOptions, caps: Capabilities) -> None:
        from transformers import AutoProcessor, Qwen3ASRForConditionalGeneration

        self.capabilities = caps
        self.load(folder, options, Qwen3ASRForConditionalGeneration, AutoProcessor)
        self.processor.tokenizer.padding_side = "left"

    def prompt(self, language: str | None) -> str:
        """The chat prompt for one clip, prefilled with ``language <Name><asr_text>``
        (``None``: the model says the language itself)."""
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": [{"type": "text", "text": ""}]},
            {"role": "user", "content": [{"type": "audio", "audio": "<audio>"}]},
        ]
        if language is None:
            return str(
                self.processor.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            )
        prefill = f"language {LANGUAGE_NAMES[language]}{ASR_TEXT}"
        messages.append({"role": "assistant", "content": [{"type": "text", "text": prefill}]})
        return str(
            self.processor.apply_chat_template(
                messages, tokenize=False, continue_final_message=True
            )
        )

    def group(self, request: BackendRequest) -> Any:
        """A batch holds requests answered in one language (:func:`text_language`)."""
        return text_language(request)

    def _batch(self, requests: Sequence[BackendRequest]) -> list[str]:
        import torch

        where = self.loaded.placement
        prompt = self.prompt(text_language(requests[0]))
        inputs = self.processor(
            text=[prompt] * len(requests),
            audio=[hf_model.samples_of(r) for r in requests],
            return_tensors="pt",
        )
        dtype = next(self.model.parameters()).dtype
        inputs = {
            key: value.to(where.device, dtype)
            if key == "input_features"
            else value.to(where.device)
            for key, value in inputs.items()
            if hasattr(value, "to")
        }
        with torch.inference_mode(), hf_model.quiet_generation():
            ids = self.model.generate(
                **inputs,
                do_sample=False,
                num_beams=1,
                max_new_tokens=max(r.max_new_tokens for r in requests),
            )
        new = ids[:, inputs["input_ids"].shape[1] :]
        texts = self.processor.batch_decode(new, skip_special_tokens=True)
        return [
            hf_model.clean_answer(_after_marker(t), r.chunk.index)
            for t, r in zip(texts, requests, strict=True)
        ]


def text_language(request: BackendRequest) -> str | None:
    """The language the answer is to be in: the source for a transcription, the other
    language for a translation, ``None`` (the model decides) when the source is unknown."""
    if request.source is None:
        return None
    return other_language(request.source) if request.task is Task.TRANSLATE else request.source


def _after_marker(text: str) -> str:
    """The text after ``language <Name><asr_text>`` when the model wrote it itself."""
    head, marker, rest = text.partition(ASR_TEXT)
    return rest if marker else head


create_backend: hf_model.Factory[Qwen3AsrBackend] = hf_model.Factory(
    BACKEND_NAME,
    model_types=MODEL_TYPES,
    default_model=DEFAULT_MODEL,
    inspect=inspect,
    load=Qwen3AsrBackend,
)


@hookimpl
def subplug_register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the Qwen3-ASR backend as ``qwen3-asr``."""
    register(BACKEND_NAME, create_backend)
