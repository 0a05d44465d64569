"""A tiny random NLLB (M2M100 architecture) with a real NLLB tokenizer, built offline
(``python -m subplug.testing tiny-model --family nllb DIR``).

The tokenizer is the real ``NllbTokenizer`` (``<s>``, ``<pad>``, ``</s>``, ``<unk>``,
a SentencePiece-style BPE vocabulary trained here, then NLLB's 202 language codes such as
``eng_Latn`` and ``khk_Cyrl``, then ``<mask>``), so ``src_lang`` and
``forced_bos_token_id`` work as with the real model. Weights are random: translations
are nonsense words; tokens without a letter are suppressed so they are words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Size of the trained part of the vocabulary.
TEXT_VOCAB = 400


def build_tokenizer() -> Any:
    """An ``NllbTokenizer`` over the tiny vocabulary with every NLLB language code."""
    from transformers import NllbTokenizer
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    from subplug.testing.tiny_vocab import metaspace_bpe

    vocab, merges = metaspace_bpe(TEXT_VOCAB, ["<unk>", "<s>", "<pad>", "</s>"])
    ordered = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for token in sorted(vocab, key=vocab.__getitem__):
        ordered.setdefault(token, len(ordered))
    return NllbTokenizer(
        vocab=ordered,
        merges=merges,  # type: ignore[arg-type]  # (left, right) pairs, as tokenizers takes
        extra_special_tokens=list(FAIRSEQ_LANGUAGE_CODES),
    )


def build_tiny_nllb(dest: Path | str, *, seed: int = 0) -> Path:
    """Build the tiny NLLB into ``dest`` and return it (deterministic per ``seed``)."""
    import torch
    from transformers import GenerationConfig, M2M100Config, M2M100ForConditionalGeneration

    from subplug.backends.gemma3n_model import quiet_loading
    from subplug.testing.tiny_whisper import wordless_ids

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = M2M100Config(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        init_std=0.2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        tie_word_embeddings=False,
        scale_embedding=True,
    )
    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(config)
    eos = 2
    begin = [eos]
    model.generation_config = GenerationConfig(
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=eos,
        decoder_start_token_id=eos,
        max_length=200,
        suppress_tokens=sorted(set(wordless_ids(tokenizer)) - {eos}),
        begin_suppress_tokens=begin,
    )
    with quiet_loading():
        model.save_pretrained(dest)
        tokenizer.save_pretrained(dest)
    return dest
