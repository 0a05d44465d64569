"""The tokens English and Mongolian text can need: a vocabulary trimmed for subplug.

Gemma 3n's vocabulary has 262,144 text tokens for ~140 languages. Two tables are indexed
by token id: the token embeddings, which are also the output head (262,400 × 2048, read
in full at every decoding step), and the per-layer embeddings (262,144 × 7,680, the
largest tensor of E2B). subplug only ever reads and writes English and Mongolian, so it
can keep just the rows of the tokens those need:

- tokens whose text is made only of the characters in :data:`ALLOWED_RANGES` (Basic
  Latin, Latin-1 and Latin Extended-A letters — names and loanwords —, Cyrillic including
  Mongolian Ө and Ү, general punctuation, whitespace and a few symbols);
- the 256 byte-fallback tokens, so any character can still be spelled out byte by byte;
- the special and control tokens of the tokenizer (``<bos>``, ``<eos>``, turns, audio);
- every token of the prompts subplug sends (the chat template around each of the nine
  training instructions), so every input id has its row.

:func:`kept_token_ids` returns them sorted. A trimmed model's head scores only these;
whenever the full model's greedy choice is one of them, the trimmed model makes the same
choice with the same logit (the rows are the same; tested in tests/core/test_quant.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: Unicode ranges (inclusive) whose characters English and Mongolian text may contain.
ALLOWED_RANGES: tuple[tuple[int, int], ...] = (
    (0x09, 0x0A),  # tab, line feed
    (0x0D, 0x0D),  # carriage return
    (0x20, 0x7E),  # Basic Latin: letters, digits, punctuation, space
    (0xA0, 0xFF),  # Latin-1 Supplement: é, ü, «», °, …
    (0x100, 0x17F),  # Latin Extended-A
    (0x400, 0x4FF),  # Cyrillic, including Ө ө Ү ү
    (0x2010, 0x205E),  # General Punctuation: dashes, quotes, ellipsis, bullet
    (0x20AC, 0x20AE),  # € ₭ ₮ (₮ is the tögrög sign)
    (0x2116, 0x2116),  # №
    (0x2122, 0x2122),  # ™
)

#: How sentencepiece-style vocabularies write a space.
SPACE_MARK = "\u2581"

_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def allowed_char(char: str) -> bool:
    """True when ``char`` falls in :data:`ALLOWED_RANGES`."""
    code = ord(char)
    return any(low <= code <= high for low, high in ALLOWED_RANGES)


def allowed_piece(piece: str) -> bool:
    """True for a vocabulary piece whose text English or Mongolian can need."""
    text = piece.replace(SPACE_MARK, " ")
    return bool(text) and all(allowed_char(c) for c in text)


@dataclass(frozen=True)
class KeptVocabulary:
    """The token ids a trimmed model keeps, and how many there were."""

    ids: tuple[int, ...]
    """Kept token ids, ascending. Row ``i`` of a trimmed table is token ``ids[i]``."""
    vocab_size: int
    """Ids in the full vocabulary (the model's ``vocab_size``)."""
    reasons: dict[str, int]
    """How many ids were kept for each reason (``text``, ``byte``, ``special``, ``prompt``)."""

    @property
    def dropped(self) -> int:
        return self.vocab_size - len(self.ids)


def kept_token_ids(
    tokenizer: Any, *, vocab_size: int, prompts: Iterable[str] = ()
) -> KeptVocabulary:
    """The ids to keep for English and Mongolian (module docstring), for a Hugging Face
    ``tokenizer``. ``prompts`` are rendered prompt texts whose tokens must be kept;
    ids at or above ``vocab_size`` are ignored."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False) and not str(added.content).startswith("<unused"):
            special.add(int(token_id))
    reasons = {"special": 0, "byte": 0, "text": 0, "prompt": 0}
    kept: set[int] = set()

    def keep(token_id: int, reason: str) -> None:
        if 0 <= token_id < vocab_size and token_id not in kept:
            kept.add(token_id)
            reasons[reason] += 1

    for token_id in sorted(special):
        keep(token_id, "special")
    for piece, token_id in vocab.items():
        if _BYTE_TOKEN.match(piece):
            keep(token_id, "byte")
        elif piece.startswith("<unused"):
            continue
        elif allowed_piece(piece):
            keep(token_id, "text")
    for text in prompts:
        for token_id in tokenizer(text, add_special_tokens=False)["input_ids"]:
            keep(int(token_id), "prompt")
    return KeptVocabulary(tuple(sorted(kept)), vocab_size, reasons)


def row_map(kept: Sequence[int], vocab_size: int) -> Any:
    """An int32 tensor over all ``vocab_size`` ids giving each kept id its row (dropped
    ids get row 0, whose token — ``<pad>`` in Gemma — is always kept)."""
    import torch

    rows = torch.zeros(vocab_size, dtype=torch.int32)
    rows[torch.tensor(list(kept), dtype=torch.long)] = torch.arange(len(kept), dtype=torch.int32)
    return rows
