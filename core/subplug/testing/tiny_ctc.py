"""A tiny random MMS-style wav2vec2 CTC model with a real processor, built offline
(``python -m subplug.testing tiny-model --family ctc DIR``).

Like ``facebook/mms-1b-all`` at toy sizes: a convolutional feature encoder and a
transformer with attention adapters (``adapter_attn_dim``); a nested ``vocab.json``
with one character vocabulary per language (``eng``: Latin letters, ``khk``: Cyrillic
letters, ``|`` between words); the main weights hold the English adapter and head, and
``adapter.eng.safetensors`` and ``adapter.khk.safetensors`` each language's, so
switching languages is the real ``load_adapter``. A real ``Wav2Vec2Processor``
(feature extractor with attention mask, ``Wav2Vec2CTCTokenizer``). Weights are
random: the letters are nonsense; the head's bias keeps the other specials out and
favours word breaks, so there are words to read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Characters of each language's vocabulary (after the specials and ``|``).
LETTERS = {
    "eng": "abcdefghijklmnopqrstuvwxyz'",
    "khk": "абвгдеёжзийклмноөпрстуүфхцчшщъыьэюя",
}
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "|")
#: The head's bias towards ``|`` (a word break), so the nonsense has words.
WORD_BREAK_BIAS = 1.0


def vocabularies() -> dict[str, dict[str, int]]:
    """The nested vocabulary: language code → token → id."""
    return {
        code: {token: i for i, token in enumerate((*SPECIALS, *letters))}
        for code, letters in LETTERS.items()
    }


def build_tiny_ctc(
    dest: Path | str, *, seed: int = 0, languages: tuple[str, ...] = ("eng", "khk")
) -> Path:
    """Build the tiny CTC model into ``dest`` and return it (deterministic per ``seed``).
    ``languages`` are the MMS codes it gets (the first one's adapter is in the main
    weights); one language gives a plain single-language model with a flat vocabulary."""
    import torch
    from safetensors.torch import save_file
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    from subplug.backends.gemma3n_model import quiet_loading

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    vocabs = {code: vocabularies()[code] for code in languages}
    nested = len(languages) > 1
    vocab_file = dest / "vocab.json"
    vocab_file.write_text(
        json.dumps(vocabs if nested else vocabs[languages[0]], ensure_ascii=False), encoding="utf-8"
    )
    first = languages[0]
    config = Wav2Vec2Config(
        vocab_size=len(vocabs[first]),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16, 16),
        conv_kernel=(10, 8, 4, 4),
        conv_stride=(5, 4, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        adapter_attn_dim=8 if nested else None,
        pad_token_id=0,
        ctc_loss_reduction="mean",
        initializer_range=0.2,
        mask_time_prob=0.0,
    )
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(config)
    _favour_letters(model)
    processor = Wav2Vec2Processor(
        feature_extractor=Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=16_000,
            padding_value=0.0,
            do_normalize=True,
            return_attention_mask=True,
        ),
        tokenizer=Wav2Vec2CTCTokenizer(str(vocab_file), target_lang=first if nested else None),
    )
    with quiet_loading():
        model.save_pretrained(dest)
        processor.save_pretrained(dest)
    if nested:
        save_file(
            {k: v.detach().clone() for k, v in model._get_adapters().items()},
            dest / f"adapter.{first}.safetensors",
        )
        for code in languages[1:]:
            save_file(
                _adapter(model, len(vocabs[code]), seed), dest / f"adapter.{code}.safetensors"
            )
    return dest


def _favour_letters(model: Any) -> None:
    """Bias the head against the specials other than the blank, and towards word
    breaks, so greedy decoding of random weights writes words."""
    import torch

    with torch.no_grad():
        model.lm_head.bias.zero_()
        model.lm_head.bias[1 : len(SPECIALS) - 1] = -4.0
        model.lm_head.bias[len(SPECIALS) - 1] = WORD_BREAK_BIAS


def _adapter(model: Any, vocab_size: int, seed: int) -> dict[str, Any]:
    """Random adapter weights and a head for a vocabulary of ``vocab_size``, keyed as
    ``load_adapter`` reads them."""
    import torch

    generator = torch.Generator().manual_seed(seed + vocab_size)
    weights = {}
    for name, param in model._get_adapters().items():
        shape = (vocab_size, *param.shape[1:]) if name.startswith("lm_head") else param.shape
        weights[name] = 0.2 * torch.randn(*shape, generator=generator)
    weights["lm_head.bias"] = torch.zeros(vocab_size)
    weights["lm_head.bias"][1 : len(SPECIALS) - 1] = -4.0
    weights["lm_head.bias"][len(SPECIALS) - 1] = WORD_BREAK_BIAS
    return weights
