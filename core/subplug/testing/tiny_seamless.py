"""A tiny random SeamlessM4T v2 (speech to text) with a real processor, built offline
(``python -m subplug.testing tiny-model --family seamless DIR``).

The speech encoder (conformer with its adaptor) and the text decoder at toy sizes,
saved like a checkpoint ``SeamlessM4Tv2ForSpeechToText`` loads; a real
``SeamlessM4TProcessor`` (the 80-bin feature extractor and a ``SeamlessM4TTokenizer``
over a vocabulary trained here, with ``__eng__`` and ``__khk__`` language tokens); a
generation config whose ``text_decoder_lang_to_code_id`` maps ``eng`` and ``khk`` to
them, as the real one does for its 96 languages. Weights are random: the words are
nonsense; tokens without a letter are suppressed so they are words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Size of the trained part of the vocabulary.
TEXT_VOCAB = 400
#: The language tokens of the tiny model (the real one has 96 text languages).
LANGUAGE_CODES = ("eng", "khk", "rus", "fra")


def build_tiny_seamless(dest: Path | str, *, seed: int = 0) -> Path:
    """Build the tiny SeamlessM4T v2 into ``dest`` and return it (deterministic per
    ``seed``)."""
    import torch
    from transformers import (
        GenerationConfig,
        SeamlessM4TFeatureExtractor,
        SeamlessM4TProcessor,
        SeamlessM4TTokenizer,
        SeamlessM4Tv2Config,
        SeamlessM4Tv2ForSpeechToText,
    )

    from subplug.backends.gemma3n_model import quiet_loading
    from subplug.testing.tiny_vocab import metaspace_bpe
    from subplug.testing.tiny_whisper import wordless_ids

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    vocab, merges = metaspace_bpe(TEXT_VOCAB, ["<unk>"])
    ordered = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    for token in sorted(vocab, key=vocab.__getitem__):
        ordered.setdefault(token, len(ordered))
    languages = [f"__{code}__" for code in LANGUAGE_CODES]
    tokenizer = SeamlessM4TTokenizer(
        vocab=ordered,
        merges=merges,  # type: ignore[arg-type]  # (left, right) pairs, as tokenizers takes
        src_lang="eng",
        tgt_lang="eng",
        additional_special_tokens=languages,
    )
    processor = SeamlessM4TProcessor(
        feature_extractor=SeamlessM4TFeatureExtractor(), tokenizer=tokenizer
    )
    config = SeamlessM4Tv2Config(
        vocab_size=len(tokenizer),
        t2u_vocab_size=16,
        char_vocab_size=16,
        hidden_size=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        speech_encoder_layers=1,
        speech_encoder_attention_heads=2,
        speech_encoder_intermediate_size=64,
        conv_depthwise_kernel_size=3,
        adaptor_kernel_size=2,
        adaptor_stride=2,
        max_position_embeddings=512,
        t2u_encoder_layers=1,
        t2u_decoder_layers=1,
        t2u_encoder_attention_heads=2,
        t2u_decoder_attention_heads=2,
        t2u_encoder_ffn_dim=32,
        t2u_decoder_ffn_dim=32,
        t2u_max_position_embeddings=64,
        initializer_range=0.2,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=3,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = SeamlessM4Tv2ForSpeechToText(config)
    ids = {code: _token_id(tokenizer, f"__{code}__") for code in LANGUAGE_CODES}
    model.generation_config = GenerationConfig(
        bos_token_id=2,
        pad_token_id=0,
        eos_token_id=3,
        decoder_start_token_id=3,
        max_new_tokens=256,
        text_decoder_lang_to_code_id=ids,
        suppress_tokens=sorted({*wordless_ids(tokenizer), *ids.values()} - {3}),
        begin_suppress_tokens=[3],
    )
    with quiet_loading():
        model.save_pretrained(dest)
        processor.save_pretrained(dest)
    return dest


def _token_id(tokenizer: Any, token: str) -> int:
    found = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(found, int)
    return found
