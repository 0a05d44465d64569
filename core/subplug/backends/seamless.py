"""SeamlessM4T v2 backend (transformers ``SeamlessM4Tv2ForSpeechToText``), registered as
``seamless``.

SeamlessM4T v2 writes the text of its speech in a target language it is told
(``tgt_lang``): the audio's own language is a transcription, another one a speech
translation. It covers English (``eng``) and Halh Mongolian (``khk``) both ways: the one
public model that translates English and Mongolian speech, so the peer to measure the
Gemma 3n adapter against. It cannot tell which language is spoken: ``--source`` must
name it (subplug's planning says so before any media is decoded).

Only the speech encoder and the text decoder are loaded (the text encoder, the
text-to-unit model and the vocoder of the full checkpoint are skipped). Decoding is
greedy within the request's token budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from subplug.backends import hf_model
from subplug.backends.hf_model import ModelFolder
from subplug.hookspecs import hookimpl
from subplug.prompts import other_language
from subplug.types import BackendOptions, BackendRequest, Capabilities, Task

BACKEND_NAME = "seamless"
DEFAULT_MODEL = "seamless-m4t-v2-large"
MODEL_TYPES = ("seamless_m4t_v2",)
#: SeamlessM4T's codes for subplug's languages.
CODES = {"en": "eng", "mn": "khk"}


def inspect(folder: ModelFolder, options: BackendOptions) -> Capabilities:
    """The languages its text decoder writes (``text_decoder_lang_to_code_id``): each is
    transcribed, and translated into each other one."""
    generation = hf_model.read_json(folder.path / "generation_config.json") or {}
    langs = hf_model.ours(CODES, sorted(generation.get("text_decoder_lang_to_code_id") or ()))
    return Capabilities(
        transcribes=langs,
        translates=tuple((a, b) for a in langs for b in langs if a != b),
        combined=False,
        detects_language=False,
        plain_text=True,
    )


class SeamlessBackend(hf_model.HfBackend):
    """A loaded SeamlessM4T v2 answering :class:`~subplug.types.BackendRequest` s."""

    name = BACKEND_NAME

    def __init__(self, folder: ModelFolder, options: BackendOptions, caps: Capabilities) -> None:
        from transformers import AutoProcessor, SeamlessM4Tv2ForSpeechToText

        self.capabilities = caps
        self.load(folder, options, SeamlessM4Tv2ForSpeechToText, AutoProcessor)

    def group(self, request: BackendRequest) -> Any:
        """A batch holds requests of one target language."""
        return target_code(request)

    def _batch(self, requests: Sequence[BackendRequest]) -> list[str]:
        import torch

        where = self.loaded.placement
        inputs = self.processor(
            audio=[hf_model.samples_of(r) for r in requests],
            sampling_rate=16_000,
            return_tensors="pt",
        )
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode(), hf_model.quiet_generation():
            ids = self.model.generate(
                input_features=inputs["input_features"].to(where.device, dtype),
                attention_mask=inputs["attention_mask"].to(where.device),
                tgt_lang=target_code(requests[0]),
                do_sample=False,
                num_beams=1,
                max_new_tokens=max(r.max_new_tokens for r in requests),
            )
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [
            hf_model.clean_answer(t, r.chunk.index) for t, r in zip(texts, requests, strict=True)
        ]


def target_code(request: BackendRequest) -> str:
    """SeamlessM4T's ``tgt_lang`` for a request: the source for a transcription, the
    other language for a translation (the source is always known here)."""
    source = request.source or "en"
    lang = other_language(source) if request.task is Task.TRANSLATE else source
    return CODES[lang]


create_backend: hf_model.Factory[SeamlessBackend] = hf_model.Factory(
    BACKEND_NAME,
    model_types=MODEL_TYPES,
    default_model=DEFAULT_MODEL,
    inspect=inspect,
    load=SeamlessBackend,
)


@hookimpl
def subplug_register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the SeamlessM4T v2 backend as ``seamless``."""
    register(BACKEND_NAME, create_backend)
