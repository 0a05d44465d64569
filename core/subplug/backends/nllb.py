"""NLLB-200 text translator (transformers ``M2M100ForConditionalGeneration`` with the
NLLB tokenizer), registered as translator ``nllb``.

It gives a transcription-only backend (CTC) or one that translates one way only
(Whisper) its other language: ``--translator nllb-200-distilled-600m``. English is
``eng_Latn``, Mongolian ``khk_Cyrl`` (Halh Mongolian, Cyrillic script); the directions it
offers are those whose two language tokens its tokenizer has. Texts are translated in
batches, greedily, with a budget that grows with the source text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from subplug.backends import hf_model
from subplug.backends.hf_model import ModelFolder
from subplug.hookspecs import hookimpl
from subplug.types import BackendOptions, Capabilities

TRANSLATOR_NAME = "nllb"
DEFAULT_MODEL = "nllb-200-distilled-600m"
MODEL_TYPES = ("m2m_100",)
#: NLLB's codes for subplug's languages.
CODES = {"en": "eng_Latn", "mn": "khk_Cyrl"}
#: Texts per model call when ``--batch-size`` does not say.
BATCH = 16


def inspect(folder: ModelFolder, options: BackendOptions) -> Capabilities:
    """The directions between subplug's languages whose codes the tokenizer has."""
    tokenizer = hf_model.read_json(folder.path / "tokenizer.json") or {}
    tokens = {str(t.get("content")) for t in tokenizer.get("added_tokens") or ()}
    config = hf_model.read_json(folder.path / "tokenizer_config.json") or {}
    tokens |= {str(t) for t in config.get("extra_special_tokens") or ()}
    langs = hf_model.ours(CODES, sorted(tokens))
    return Capabilities(
        transcribes=(),
        translates=tuple((a, b) for a in langs for b in langs if a != b),
        combined=False,
        detects_language=False,
        plain_text=True,
    )


class NllbTranslator(hf_model.HfModel):
    """A loaded NLLB model translating texts between English and Mongolian."""

    name = TRANSLATOR_NAME

    def __init__(self, folder: ModelFolder, options: BackendOptions, caps: Capabilities) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.directions = caps.translates
        self.load(folder, options, AutoModelForSeq2SeqLM, AutoTokenizer, per_item_bytes=64 << 20)
        self.batch_size = options.batch_size or BATCH

    def translate(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        """One translation per text, in order; an empty text stays empty."""
        from subplug import memory

        if (source, target) not in self.directions:
            raise ValueError(f"{self.loaded.folder.label} does not translate {source}→{target}")
        todo = [i for i, text in enumerate(texts) if text.strip()]
        results = [""] * len(texts)

        def batch(items: Sequence[int]) -> list[str]:
            return self._batch([texts[i] for i in items], source, target)

        done = memory.run_with_oom_backoff(todo, self.batch_size, batch)
        for i, text in zip(todo, done, strict=True):
            results[i] = text
        return results

    def _batch(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        import torch

        self.processor.src_lang = CODES[source]
        encoded = self.processor(list(texts), return_tensors="pt", padding=True)
        device = self.loaded.placement.device
        longest = int(encoded["input_ids"].shape[1])
        with torch.inference_mode(), hf_model.quiet_generation():
            ids = self.model.generate(
                input_ids=encoded["input_ids"].to(device),
                attention_mask=encoded["attention_mask"].to(device),
                forced_bos_token_id=self.processor.convert_tokens_to_ids(CODES[target]),
                do_sample=False,
                num_beams=1,
                max_new_tokens=16 + 2 * longest,
            )
        decoded = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [hf_model.clean_answer(text, -1) for text in decoded]

    def describe(self) -> dict[str, Any]:
        """Model, device, dtype, directions."""
        where = self.loaded.placement
        return {
            "translator": TRANSLATOR_NAME,
            "model": self.loaded.folder.label,
            "device": where.device,
            "dtype": where.dtype,
            "params": self.loaded.params,
            "directions": ["-".join(d) for d in self.directions],
        }


create_translator: hf_model.Factory[NllbTranslator] = hf_model.Factory(
    TRANSLATOR_NAME,
    model_types=MODEL_TYPES,
    default_model=DEFAULT_MODEL,
    inspect=inspect,
    load=NllbTranslator,
)


@hookimpl
def subplug_register_translators(register: Callable[[str, Any], None]) -> None:
    """Register the NLLB translator as ``nllb``."""
    register(TRANSLATOR_NAME, create_translator)
