"""A tiny random Gemma 3n with a real processor, built offline in a fraction of a second.

The model has the real architecture (AltUp, LAuReL, per-layer embeddings, KV sharing, the
USM audio encoder) at toy sizes, and the folder has everything a real checkpoint has:
``config.json``, ``model.safetensors``, ``generation_config.json``, a tokenizer trained
here with ``tokenizers`` (byte-level BPE with the 256 byte-fallback tokens, so any text,
Cyrillic included, tokenizes), the Gemma 3n chat template, the audio feature extractor
and an image processor. ``AutoProcessor.from_pretrained(folder)`` and
``audio_only_model_class().from_pretrained(folder)`` (from
:mod:`subplug.backends.gemma3n`: ``Gemma3nForConditionalGeneration`` with the vision
tower's stand-in registered, as for real checkpoints) load it with no network.

The vocabulary follows Gemma's layout rule: text ids first, then the vision block
(``<end_of_image>`` at the vision offset, ``<image_soft_token>`` next), then the audio
block (``<end_of_audio>``, ``<audio_soft_token>``); the text ``vocab_size`` is the audio
offset plus the audio vocabulary size.

Use it from Python (:func:`build_tiny_model`, :func:`build_tiny_adapter`) or the shell::

    python -m subplug.testing tiny-model DIR
    python -m subplug.testing tiny-adapter BASE_DIR DIR
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from subplug.prompts import INSTRUCTIONS

#: Gemma 3n's chat template (as shipped with the instruction-tuned checkpoints).
CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'audio' -%}
                {{ '<audio_soft_token>' }}
            {%- elif item['type'] == 'image' -%}
                {{ '<image_soft_token>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

#: Text the tokenizer is trained on: the instructions, the answer format, and everyday
#: English and Mongolian (Cyrillic) sentences.
CORPUS = (
    *INSTRUCTIONS,
    "### English\n\nHello world.\n\n---\n\n### Mongolian\n\nСайн байна уу, дэлхий.",
    "### Mongolian\n\nБаярлалаа.\n\n---\n\n### English\n\nThank you.",
    "Hello world. How are you today? I am fine, thank you.",
    "And so, my fellow Americans, ask not what your country can do for you.",
    "The quick brown fox jumps over the lazy dog and then runs into the forest.",
    "Where birds sing while the river flows past old stones under a bright sky.",
    "We are going to the market tomorrow morning to buy bread, milk and apples.",
    "Please speak slowly so that everyone in the room can understand you.",
    "Сайн байна уу? Би сайн байна, баярлалаа.",
    "Монгол Улсын нийслэл Улаанбаатар хот юм.",
    "Хурдан бор үнэг залхуу нохойн дээгүүр үсэрч дараа нь ой руу гүйнэ.",
    "Тэнд шувууд дуулж гол хуучин чулуудын хажуугаар тод тэнгэрийн доор урсана.",
    "Бид маргааш өглөө зах руу явж талх, сүү, алим авна.",
    "Өнөөдөр цаг агаар ямар байна вэ? Өнөөдөр нартай, дулаан байна.",
    "Энэ бол миний ном. Та надад туслаж чадах уу?",
    "Хүүхдүүд сургуульдаа явж байна. Багш хичээл заана.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2024. Quotes: \"yes\" 'no' (maybe) - ok!",
)

SPECIAL_TOKENS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<start_of_audio>",
)
BYTE_TOKENS = tuple(f"<0x{i:02X}>" for i in range(256))

#: Sizes of the tiny model's vocabulary blocks.
TEXT_VOCAB = 512
VISION_VOCAB = 4
AUDIO_VOCAB = 4


def _train_tokenizer_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train the text part of the vocabulary: specials, byte fallbacks, then BPE merges."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Split(
        pattern=" ", behavior="merged_with_previous", invert=False
    )
    trainer = trainers.BpeTrainer(
        vocab_size=TEXT_VOCAB,
        special_tokens=[*SPECIAL_TOKENS, *BYTE_TOKENS],
        show_progress=False,
        min_frequency=2,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges  # type: ignore[return-value]


def build_tokenizer() -> Any:
    """A Gemma tokenizer (``GemmaTokenizer``) over the tiny vocabulary, with Gemma's
    special tokens, the vision and audio blocks, and the Gemma 3n chat template."""
    vocab, merges = _train_tokenizer_vocab()
    text_size = len(vocab)
    if text_size > TEXT_VOCAB:
        raise AssertionError(f"trained vocabulary too large: {text_size}")
    # Pad the text block to exactly TEXT_VOCAB ids so the block offsets are fixed.
    for i in range(text_size, TEXT_VOCAB):
        vocab[f"<unused{i - text_size}>"] = i
    for offset, token in enumerate(media_blocks(VISION_VOCAB, AUDIO_VOCAB)):
        vocab[token] = TEXT_VOCAB + offset
    specials = [t for t in vocab if t.startswith("<") and t.endswith(">") and t not in BYTE_TOKENS]
    return gemma_tokenizer(vocab, merges, specials)


def media_blocks(vision: int, audio: int) -> list[str]:
    """Gemma 3n's vision and audio token blocks, in id order after the text tokens."""
    return [
        "<end_of_image>",
        "<image_soft_token>",
        *(f"<unused_vision{i}>" for i in range(vision - 2)),
        "<end_of_audio>",
        "<audio_soft_token>",
        *(f"<unused_audio{i}>" for i in range(audio - 2)),
    ]


def gemma_tokenizer(vocab: dict[str, int], merges: Any, specials: Sequence[str]) -> Any:
    """A ``GemmaTokenizer`` over ``vocab``/``merges`` with Gemma 3n's media tokens named,
    ``specials`` added as special tokens, and the Gemma 3n chat template."""
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer

    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]  # (left, right) pairs, as tokenizers takes
        add_bos_token=True,
        add_eos_token=False,
        extra_special_tokens={
            "image_token": "<image_soft_token>",
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "audio_token": "<audio_soft_token>",
            "boa_token": "<start_of_audio>",
            "eoa_token": "<end_of_audio>",
        },
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tokenizer


def tiny_config(*, initializer_range: float = 0.2) -> Any:
    """The tiny Gemma 3n configuration (REFERENCE.md §4 shape)."""
    from transformers import (
        Gemma3nAudioConfig,
        Gemma3nConfig,
        Gemma3nTextConfig,
        Gemma3nVisionConfig,
    )

    vision_offset = TEXT_VOCAB
    audio_offset = TEXT_VOCAB + VISION_VOCAB
    text = Gemma3nTextConfig(
        vocab_size=audio_offset + AUDIO_VOCAB,
        vocab_size_per_layer_input=TEXT_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        hidden_size_per_layer_input=16,
        laurel_rank=8,
        altup_num_inputs=4,
        num_kv_shared_layers=2,
        layer_types=["sliding_attention", "full_attention"] * 2,
        activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.0],
        sliding_window=64,
        max_position_embeddings=2048,
        initializer_range=initializer_range,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    audio = Gemma3nAudioConfig(
        vocab_size=AUDIO_VOCAB,
        vocab_offset=audio_offset,
        hidden_size=64,
        conf_num_attention_heads=2,
        conf_num_hidden_layers=2,
        sscp_conv_channel_size=[16, 8],
        input_feat_size=128,
    )
    vision = Gemma3nVisionConfig(
        hidden_size=32,
        vocab_size=VISION_VOCAB,
        vocab_offset=vision_offset,
        label_names=["LABEL_0", "LABEL_1"],  # type: ignore[call-arg]  # a config kwarg
    )
    return Gemma3nConfig(
        text_config=text,
        audio_config=audio,
        vision_config=vision,
        boi_token_id=SPECIAL_TOKENS.index("<start_of_image>"),
        eoi_token_id=vision_offset,
        image_token_id=vision_offset + 1,
        boa_token_id=SPECIAL_TOKENS.index("<start_of_audio>"),
        eoa_token_id=audio_offset,
        audio_token_id=audio_offset + 1,
        initializer_range=initializer_range,
    )


def build_processor() -> Any:
    """A real ``Gemma3nProcessor``: audio feature extractor, PIL image processor, the
    tiny tokenizer and the chat template."""
    from transformers import Gemma3nAudioFeatureExtractor, Gemma3nProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = build_tokenizer()
    image_processor = SiglipImageProcessorPil(
        size={"height": 768, "width": 768},
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        do_normalize=False,
    )
    return Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(),
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_model(
    dest: Path | str,
    *,
    seed: int = 0,
    initializer_range: float = 0.2,
    per_layer_inputs: bool = False,
) -> Path:
    """Build a tiny random Gemma 3n with a real processor into ``dest`` and return it.

    Offline and deterministic for a given ``seed``. The model is audio-only (no vision
    tower weights, like subplug's loading); everything else is the real architecture.
    ``initializer_range`` sets the spread of the random weights: the default gives
    decisive (non-tied) logits, so greedy outputs are stable across batch layouts.

    transformers starts each layer's AltUp output scale at zero, which leaves the
    per-layer inputs — and the per-layer embedding table — without any effect on the
    output (a trained model's scale is not zero). ``per_layer_inputs`` gives the scale
    random values so that path counts, for tests of what is done to that table; it is
    off by default because it changes the random model's answers, which other tests'
    expectations were drawn from.
    """
    import torch
    from transformers import GenerationConfig

    from subplug.backends.gemma3n_model import audio_only_model_class, quiet_loading

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    config = tiny_config(initializer_range=initializer_range)
    torch.manual_seed(seed)
    model = audio_only_model_class()(config)
    if per_layer_inputs:
        with torch.no_grad():
            for layer in model.model.language_model.layers:
                layer.altup.correct_output_scale.uniform_(0.5, 1.0)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=2,
        pad_token_id=0,
        eos_token_id=[1, SPECIAL_TOKENS.index("<end_of_turn>")],
        # The real checkpoints ship sampling defaults; keep them so callers must ask for
        # greedy decoding explicitly, as with the real model.
        do_sample=True,
        top_k=64,
        top_p=0.95,
    )
    with quiet_loading():
        model.save_pretrained(dest)
        build_processor().save_pretrained(dest)
    _usual_modes(dest)
    return dest


def _usual_modes(folder: Path) -> None:
    """Give every file the mode a new file gets from the umask (0644 with the usual
    022): the weights are written through a private temporary file (0600), which other
    users could not read."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~mask)


def build_tiny_adapter(
    base_dir: Path | str,
    dest: Path | str,
    *,
    r: int = 4,
    seed: int = 0,
    legacy_kv_shared: bool = False,
) -> Path:
    """Build a LoRA adapter (peft) for the tiny model at ``base_dir`` into ``dest``.

    It targets the language model's q/k/v/o/gate/up/down projections, like the trained
    EN/MN adapter, with random non-zero ``lora_B`` so it changes the model's outputs.
    ``base_model_name_or_path`` in ``adapter_config.json`` is ``base_dir`` (absolute).

    ``legacy_kv_shared=True`` adds LoRA tensors for ``k_proj``/``v_proj`` of the
    KV-shared layers, as adapters trained with transformers < 5 carry (those layers have
    no k/v projections in transformers 5).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file

    from subplug.backends.gemma3n_model import audio_only_model_class, quiet_loading

    base_dir = Path(base_dir).resolve()
    dest = Path(dest)
    with quiet_loading():
        model = audio_only_model_class().from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        init_lora_weights=False,
    )
    with quiet_loading():
        peft_model = get_peft_model(model, config)
        peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
        peft_model.save_pretrained(str(dest))
    if legacy_kv_shared:
        text = model.config.text_config
        first_shared = text.num_hidden_layers - text.num_kv_shared_layers
        weights_file = dest / "adapter_model.safetensors"
        tensors = load_file(weights_file)
        kv_out = text.num_key_value_heads * text.head_dim
        generator = torch.Generator().manual_seed(seed + 1)
        for layer in range(first_shared, text.num_hidden_layers):
            for proj in ("k_proj", "v_proj"):
                prefix = f"base_model.model.model.language_model.layers.{layer}.self_attn.{proj}"
                tensors[f"{prefix}.lora_A.weight"] = torch.randn(
                    r, text.hidden_size, generator=generator
                )
                tensors[f"{prefix}.lora_B.weight"] = torch.randn(kv_out, r, generator=generator)
        save_file(tensors, weights_file, metadata={"format": "pt"})
    _usual_modes(dest)
    return dest
