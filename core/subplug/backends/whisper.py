"""Whisper backend (transformers ``WhisperForConditionalGeneration``), registered as
``whisper``.

What it can do comes from the model's own tokens: a multilingual model transcribes every
language it has a ``<|xx|>`` token for (English and Mongolian for ``whisper-small``),
detects the spoken language itself, and translates into English only (``<|translate|>``);
an English-only model (``*.en``) transcribes English. So English subtitles for Mongolian
speech come from Whisper itself, Mongolian ones for English speech from a text
translator (``--translator``).

A request maps to Whisper's arguments: a transcription with a known source is
``language=SOURCE, task=transcribe``; with the source unknown Whisper detects it; a
translation (Mongolian audio → English) is ``language=mn, task=translate``. Timestamps
are not asked for: cue timing comes from the speech regions of each chunk, as for every
backend. Decoding is greedy, within the request's token budget, and stops a repetition
loop like Gemma 3n's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from subplug.backends import hf_model
from subplug.backends.hf_model import ModelFolder
from subplug.hookspecs import hookimpl
from subplug.types import BackendOptions, BackendRequest, Capabilities, Task

log = logging.getLogger(__name__)

BACKEND_NAME = "whisper"
DEFAULT_MODEL = "whisper-small"
MODEL_TYPES = ("whisper",)
#: Whisper's language tokens for subplug's languages.
LANGUAGE_TOKENS = {"en": "<|en|>", "mn": "<|mn|>"}


def inspect(folder: ModelFolder, options: BackendOptions) -> Capabilities:
    """Languages from the model's generation config (its ``lang_to_id``) or, failing
    that, its tokenizer's added tokens; English-only models transcribe English."""
    generation = hf_model.read_json(folder.path / "generation_config.json") or {}
    multilingual = generation.get("is_multilingual")
    tokens = set(generation.get("lang_to_id") or ()) | _added_tokens(folder)
    if multilingual is False:
        langs: tuple[str, ...] = ("en",)
    else:
        langs = tuple(lang for lang, token in LANGUAGE_TOKENS.items() if token in tokens)
    translate = bool(
        multilingual is not False and "<|translate|>" in (tokens | _task_tokens(generation))
    )
    return Capabilities(
        transcribes=langs,
        translates=tuple((lang, "en") for lang in langs if lang != "en") if translate else (),
        combined=False,
        detects_language=multilingual is not False,
        plain_text=True,
    )


def _added_tokens(folder: ModelFolder) -> set[str]:
    tokenizer = hf_model.read_json(folder.path / "tokenizer.json") or {}
    return {
        str(t.get("content")) for t in tokenizer.get("added_tokens") or () if isinstance(t, dict)
    }


def _task_tokens(generation: Mapping[str, Any]) -> set[str]:
    return {f"<|{task}|>" for task in generation.get("task_to_id") or ()}


class WhisperBackend(hf_model.HfBackend):
    """A loaded Whisper model answering :class:`~subplug.types.BackendRequest` s."""

    name = BACKEND_NAME

    def __init__(self, folder: ModelFolder, options: BackendOptions, caps: Capabilities) -> None:
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        self.capabilities = caps
        self.load(folder, options, WhisperForConditionalGeneration, AutoProcessor)

    def group(self, request: BackendRequest) -> Any:
        """A batch holds requests of one language and task."""
        return _whisper_args(request)

    def _batch(self, requests: Sequence[BackendRequest]) -> list[str]:
        import torch

        where = self.loaded.placement
        features = self.processor.feature_extractor(
            [hf_model.samples_of(r) for r in requests],
            sampling_rate=16_000,
            return_tensors="pt",
            return_attention_mask=True,
        )
        language, task = _whisper_args(requests[0])
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode(), hf_model.quiet_generation():
            ids = self.model.generate(
                features["input_features"].to(where.device, dtype),
                attention_mask=features["attention_mask"].to(where.device),
                language=language,
                task=task,
                return_timestamps=False,
                do_sample=False,
                num_beams=1,
                max_new_tokens=max(r.max_new_tokens for r in requests),
            )
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [
            hf_model.clean_answer(t, r.chunk.index) for t, r in zip(texts, requests, strict=True)
        ]


def _whisper_args(request: BackendRequest) -> tuple[str | None, str]:
    """Whisper's ``(language, task)`` for a request: the audio's language (``None``:
    detect it) and ``transcribe`` or ``translate`` (into English)."""
    task = "translate" if request.task is Task.TRANSLATE else "transcribe"
    return request.source, task


create_backend: hf_model.Factory[WhisperBackend] = hf_model.Factory(
    BACKEND_NAME,
    model_types=MODEL_TYPES,
    default_model=DEFAULT_MODEL,
    inspect=inspect,
    load=WhisperBackend,
)


@hookimpl
def subplug_register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the Whisper backend as ``whisper``."""
    register(BACKEND_NAME, create_backend)
