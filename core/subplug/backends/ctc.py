"""CTC backend (transformers ``AutoModelForCTC``: wav2vec2/MMS, HuBERT, WavLM…),
registered as ``ctc``.

A CTC model transcribes only, in the languages it was trained for, and cannot tell
which one is spoken: ``--source`` must name it unless the model has one language. The
other subtitle language comes from a text translator (``--translator``).

Languages. An MMS-style model (``facebook/mms-1b-all``) has a vocabulary per language
(a nested ``vocab.json``) and an adapter per language (``adapter.<code>.safetensors``;
the main weights hold English, ``eng``): it transcribes each of subplug's languages
with both (English ``eng``, Mongolian ``khk`` or ``mon``). A model with one flat
vocabulary (a fine-tune such as ``sut0/mms-1b-itelmen-fold1``) transcribes the language
of its letters: Cyrillic → Mongolian, Latin → English (``subplug-capabilities.json``
says otherwise where that guess is wrong).

Decoding is greedy CTC (the most likely token per frame, repeats and blanks
collapsed), in batches of one language; switching languages loads that language's
adapter and vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from subplug.backends import hf_model
from subplug.backends.hf_model import ModelFolder
from subplug.errors import SubplugError
from subplug.hookspecs import hookimpl
from subplug.prompts import script_counts
from subplug.types import BackendOptions, BackendRequest, Capabilities

BACKEND_NAME = "ctc"
DEFAULT_MODEL = "mms-1b-all"
MODEL_TYPES = (
    "wav2vec2",
    "wav2vec2-conformer",
    "wav2vec2-bert",
    "hubert",
    "wavlm",
    "data2vec-audio",
)
#: MMS language codes for subplug's languages, preferred first.
CODES: Mapping[str, tuple[str, ...]] = {"en": ("eng",), "mn": ("khk", "mon")}
#: The language of an MMS model's main weights (what transformers loads by default).
MAIN_CODE = "eng"


def languages(folder: ModelFolder) -> dict[str, str | None]:
    """subplug's languages the model transcribes → the code of the adapter and
    vocabulary to use (``None``: a single-language model's own weights)."""
    vocab = hf_model.read_json(folder.path / "vocab.json") or {}
    nested = bool(vocab) and all(isinstance(v, dict) for v in vocab.values())
    if not nested:
        cyrillic, latin = script_counts("".join(vocab))
        if not cyrillic and not latin:
            return {}
        return {"mn" if cyrillic > latin else "en": None}
    adapters = {
        path.name.split(".")[1]
        for path in folder.path.glob("adapter.*.*")
        if path.suffix in (".safetensors", ".bin")
    }
    usable = {code for code in vocab if code in adapters or code == MAIN_CODE}
    found: dict[str, str | None] = {}
    for lang, codes in CODES.items():
        code = next((c for c in codes if c in usable), None)
        if code is not None:
            found[lang] = code
    return found


def inspect(folder: ModelFolder, options: BackendOptions) -> Capabilities:
    """Transcription only, in :func:`languages`; no language detection."""
    return Capabilities(
        transcribes=tuple(languages(folder)),
        translates=(),
        combined=False,
        detects_language=False,
        plain_text=True,
    )


class CtcBackend(hf_model.HfBackend):
    """A loaded CTC model answering :class:`~subplug.types.BackendRequest` s."""

    name = BACKEND_NAME

    def __init__(self, folder: ModelFolder, options: BackendOptions, caps: Capabilities) -> None:
        from transformers import AutoModelForCTC, AutoProcessor

        self.capabilities = caps
        self.codes = {
            lang: code for lang, code in languages(folder).items() if lang in caps.transcribes
        }
        if not self.codes:  # stated by subplug-capabilities.json, not found in the files
            self.codes = dict.fromkeys(caps.transcribes)
        first = next(iter(self.codes.values()), None)
        adapter: dict[str, Any] = (
            {} if first is None else {"target_lang": first, "ignore_mismatched_sizes": True}
        )
        self.load(
            folder, options, AutoModelForCTC, AutoProcessor, per_item_bytes=128 << 20, **adapter
        )
        self.current = first
        if first is not None:
            self.processor.tokenizer.set_target_lang(first)

    def group(self, request: BackendRequest) -> Any:
        """A batch holds requests of one language (every request is read as a
        transcription in its ``source`` language)."""
        return self._language(request)

    def _language(self, request: BackendRequest) -> str:
        lang = request.source or next(iter(self.codes))
        if lang not in self.codes:
            raise SubplugError(
                "cannot-transcribe",
                f"{self.loaded.folder.label} does not transcribe {lang}.",
                "Give --source a language the model transcribes.",
            )
        return lang

    def _use(self, lang: str) -> None:
        code = self.codes[lang]
        if code is None or code == self.current:
            return
        self.model.load_adapter(code, local_files_only=True)
        self.processor.tokenizer.set_target_lang(code)
        self.current = code

    def _batch(self, requests: Sequence[BackendRequest]) -> list[str]:
        import torch

        self._use(self._language(requests[0]))
        where = self.loaded.placement
        inputs = self.processor(
            [hf_model.samples_of(r) for r in requests],
            sampling_rate=16_000,
            padding=True,
            return_tensors="pt",
        )
        dtype = next(self.model.parameters()).dtype
        values = inputs["input_values"].to(where.device, dtype)
        mask = inputs.get("attention_mask")
        with torch.inference_mode():
            logits = self.model(
                values, attention_mask=None if mask is None else mask.to(where.device)
            ).logits
        ids = logits.argmax(dim=-1).cpu()
        texts = self.processor.batch_decode(ids)
        return [
            hf_model.clean_answer(t, r.chunk.index) for t, r in zip(texts, requests, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        """Model, device, dtype, sizes and the adapter codes used per language."""
        return {**super().describe(), "languages": dict(self.codes)}


create_backend: hf_model.Factory[CtcBackend] = hf_model.Factory(
    BACKEND_NAME,
    model_types=MODEL_TYPES,
    default_model=DEFAULT_MODEL,
    inspect=inspect,
    load=CtcBackend,
)


@hookimpl
def subplug_register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the CTC backend as ``ctc``."""
    register(BACKEND_NAME, create_backend)
