"""A tiny random Qwen3-ASR with a real processor, built offline (``python -m
subplug.testing tiny-model --family qwen3-asr DIR``).

The real architecture (the AuT audio encoder with its convolutional downsampling, the
Qwen3 decoder) at toy sizes; a real ``Qwen3ASRProcessor``: its feature extractor and a
byte-level BPE Qwen2 tokenizer trained here with Qwen3-ASR's tokens (``<|im_start|>``,
``<|im_end|>``, ``<|audio_start|>``, ``<|audio_pad|>``, ``<|audio_end|>``, and
``<asr_text>``, which is kept when decoding, as the model's own parser needs), and a
chat template that renders the prompt transformers' tests expect of the real one::

    <|im_start|>system\\n<|im_end|>\\n<|im_start|>user\\n<|audio_start|><|audio_pad|>
    <|audio_end|><|im_end|>\\n<|im_start|>assistant\\n

With ``translates=True`` the folder also states (``subplug-capabilities.json``) that it
transcribes and translates English and Mongolian, as a fine-tune would. Weights are
random: the words are nonsense; tokens without a letter are suppressed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TEXT_VOCAB = 400
SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_start|>",
    "<|audio_pad|>",
    "<|audio_end|>",
)

#: Renders Qwen3-ASR's prompt (the system turn always there, empty when not given).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'audio' -%}{{ '<|audio_start|><|audio_pad|><|audio_end|>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def build_processor() -> Any:
    """A ``Qwen3ASRProcessor`` over the tiny vocabulary."""
    from tokenizers import AddedToken
    from transformers import Qwen3ASRFeatureExtractor
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
    from transformers.models.qwen3_asr.processing_qwen3_asr import Qwen3ASRProcessor

    from subplug.testing.tiny_vocab import byte_level_bpe

    vocab, merges = byte_level_bpe(TEXT_VOCAB, ["<|endoftext|>"])
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]  # (left, right) pairs, as tokenizers takes
        extra_special_tokens={
            "audio_token": "<|audio_pad|>",
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
        },
    )
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIALS[1:]], special_tokens=True
    )
    tokenizer.add_tokens([AddedToken("<asr_text>", special=False, normalized=False)])
    tokenizer.chat_template = CHAT_TEMPLATE
    return Qwen3ASRProcessor(
        feature_extractor=Qwen3ASRFeatureExtractor(),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_qwen3_asr(dest: Path | str, *, seed: int = 0, translates: bool = False) -> Path:
    """Build the tiny Qwen3-ASR into ``dest`` and return it (deterministic per ``seed``)."""
    import torch
    from transformers import GenerationConfig, Qwen3ASRConfig, Qwen3ASRForConditionalGeneration

    from subplug.backends.gemma3n_model import quiet_loading
    from subplug.backends.hf_model import CAPABILITIES_FILE
    from subplug.testing.tiny_whisper import wordless_ids

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    processor = build_processor()
    tokenizer = processor.tokenizer

    def ids(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))

    end = ids("<|im_end|>")
    config = Qwen3ASRConfig(
        audio_config={
            "num_mel_bins": 128,
            "encoder_layers": 1,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "d_model": 32,
            "output_dim": 32,
            "downsample_hidden_size": 8,
            "initializer_range": 0.2,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": False,
            "initializer_range": 0.2,
        },
        audio_token_id=ids("<|audio_pad|>"),
        timestamp_token_id=ids("<|endoftext|>"),
        pad_token_id=ids("<|endoftext|>"),
        eos_token_id=[ids("<|endoftext|>"), end],
        tie_word_embeddings=False,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(config)
    blocked = set(wordless_ids(tokenizer)) | {ids(t) for t in (*SPECIALS, "<asr_text>")}
    model.generation_config = GenerationConfig(
        pad_token_id=ids("<|endoftext|>"),
        eos_token_id=[ids("<|endoftext|>"), end],
        suppress_tokens=sorted(blocked - {end, ids("<|endoftext|>")}),
        begin_suppress_tokens=[end, ids("<|endoftext|>")],
    )
    with quiet_loading():
        model.save_pretrained(dest)
        processor.save_pretrained(dest)
    if translates:
        (dest / CAPABILITIES_FILE).write_text(
            json.dumps({"transcribes": ["en", "mn"], "translates": [["en", "mn"], ["mn", "en"]]}),
            encoding="utf-8",
        )
    return dest
