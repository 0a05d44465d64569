"""A tiny random Whisper with a real processor, built offline (``python -m
subplug.testing tiny-model --family whisper DIR``).

The real architecture (convolutional front end, encoder, decoder) at toy sizes; a real
``WhisperProcessor``: the 80-bin feature extractor and a byte-level BPE tokenizer
trained here, with Whisper's special tokens in Whisper's order (``<|endoftext|>``,
``<|startoftranscript|>``, every language token, ``<|translate|>``, ``<|transcribe|>``,
…, ``<|notimestamps|>``, the timestamps); a generation config with ``lang_to_id`` and
``task_to_id`` as the real multilingual checkpoints carry. Its weights are random, so
its words are nonsense; the special tokens other than ``<|endoftext|>`` and the tokens
without a letter are suppressed so it writes words, and ``<|endoftext|>`` is suppressed
at the start so it writes some.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Size of the trained part of the vocabulary.
TEXT_VOCAB = 400


def special_tokens() -> list[str]:
    """Whisper's special tokens after ``<|endoftext|>``, in Whisper's order."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return [
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
        *(f"<|{i * 0.02:.2f}|>" for i in range(1501)),
    ]


def build_processor(*, multilingual: bool = True) -> Any:
    """A ``WhisperProcessor`` over the tiny vocabulary."""
    from tokenizers import AddedToken
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    from subplug.testing.tiny_vocab import byte_level_bpe

    vocab, merges = byte_level_bpe(TEXT_VOCAB, ["<|endoftext|>"])
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    specials = special_tokens()
    if not multilingual:
        specials = [t for t in specials if not _is_language(t) or t == "<|en|>"]
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True
    )
    return WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer)


def wordless_ids(tokenizer: Any) -> list[int]:
    """Ids of the tokens that decode to no letter (punctuation, digits, bytes of a
    character): a random model that may only write letters writes word-like text."""
    found = []
    for token, index in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token])
        if not any(char.isalpha() for char in text):
            found.append(int(index))
    return found


def _is_language(token: str) -> bool:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return token[2:-2] in LANGUAGES


def build_tiny_whisper(dest: Path | str, *, seed: int = 0, multilingual: bool = True) -> Path:
    """Build the tiny Whisper into ``dest`` and return it (deterministic per ``seed``).
    ``multilingual=False`` makes an English-only model, like ``whisper-*.en``."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    from subplug.backends.gemma3n_model import quiet_loading

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    processor = build_processor(multilingual=multilingual)
    tokenizer = processor.tokenizer

    def ids(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))

    end = ids("<|endoftext|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        begin_suppress_tokens=None,
        suppress_tokens=None,
        init_std=0.2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    specials = [ids(t) for t in tokenizer.all_special_tokens if t != "<|endoftext|>"]
    specials += [ids(t) for t in special_tokens() if t in tokenizer.get_vocab()]
    specials += wordless_ids(tokenizer)
    languages = [t for t in special_tokens() if _is_language(t) and t in tokenizer.get_vocab()]
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=end,
        eos_token_id=end,
        pad_token_id=end,
        is_multilingual=multilingual,
        lang_to_id={t: ids(t) for t in languages} if multilingual else None,
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
        if multilingual
        else None,
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        max_initial_timestamp_index=50,
        max_length=448,
        suppress_tokens=sorted(set(specials) - {end}),
        begin_suppress_tokens=[end],
    )
    with quiet_loading():
        model.save_pretrained(dest)
        processor.save_pretrained(dest)
    return dest
