"""Tokenizer vocabularies for the tiny offline models, trained here in a fraction of a
second on English and Mongolian text (:data:`subplug.testing.tiny.CORPUS`).

Two kinds, as the real models use them: byte-level BPE (GPT-2 style: Whisper, Qwen)
and SentencePiece-style BPE over ``▁``-marked words (NLLB, SeamlessM4T). Both cover
every character of the corpus, Cyrillic included.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from subplug.testing.tiny import CORPUS

#: Extra text for the vocabularies: what the tiny models' tests say.
EXTRA_TEXT = (
    "Hello world.",
    "Good morning, how are you?",
    "Өглөөний мэнд, сайн байна уу?",
    "Баярлалаа, баяртай.",
)


def _merges(model: dict[str, object]) -> list[tuple[str, str]]:
    raw = model["merges"]
    assert isinstance(raw, list)
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in raw]  # type: ignore[misc]


def byte_level_bpe(
    size: int, specials: Sequence[str] = ()
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary of about ``size`` entries (``specials`` first) and
    its merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(specials),
        show_progress=False,
    )
    tokenizer.train_from_iterator([*CORPUS, *EXTRA_TEXT] * 2, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], _merges(model)


def metaspace_bpe(
    size: int, specials: Sequence[str] = ()
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A BPE vocabulary over ``▁``-marked words (SentencePiece style) of about ``size``
    entries (``specials`` first) and its merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=specials[0] if specials else None))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=size, special_tokens=list(specials), show_progress=False
    )
    tokenizer.train_from_iterator([*CORPUS, *EXTRA_TEXT] * 2, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], _merges(model)
