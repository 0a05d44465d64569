"""Gemma 3n, the model: audio-only loading, E2B's shape, the prompt, memory estimates,
where the files are.

What every part of subplug that touches Gemma 3n shares, below the backend: the
audio-only model class (a parameter-free stand-in for the vision tower, so a checkpoint's
vision weights are skipped and neither timm nor torchvision is needed), E2B's config for
estimates and random-initialised benchmarks, the chat-template rendering of a prompt
(training renders with the same function), quiet loading, and the model's memory needs
counted from its config on the meta device. torch and transformers are imported inside
the functions.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subplug.errors import SubplugError

if TYPE_CHECKING:
    from subplug.memory import MemoryEstimate  # noqa: F401
    from subplug.runtime import QuantChoice  # noqa: F401

#: Extra mel frames of padding every audio input gets (masked). The sub-sampling
#: convolutions look up to 6 frames ahead; padding every item by at least this much
#: makes an item's encoding independent of what else is in its batch.
AUDIO_PAD_FRAMES = 8


# ------------------------------------------------------------ audio-only loading


_VISION_STUB: type | None = None


def register_vision_stub() -> type:
    """Make transformers build a parameter-free stand-in for Gemma 3n's vision tower.

    Registers (once, process-wide, with ``AutoModel.register``) a module for
    ``Gemma3nVisionConfig`` that has no parameters and refuses image input. A real
    checkpoint's ``vision_tower.*`` weights then load as "unexpected" and are skipped
    quietly. subplug never feeds images, so nothing else changes; the real tower would
    also need timm and torchvision. Returns the stand-in class.
    """
    global _VISION_STUB
    if _VISION_STUB is not None:
        return _VISION_STUB
    from transformers import AutoModel, Gemma3nVisionConfig, PreTrainedModel

    class Gemma3nVisionStub(PreTrainedModel):
        """Stands in for the vision tower: no parameters, no image support."""

        config_class = Gemma3nVisionConfig
        base_model_prefix = "vision_tower"
        _keys_to_ignore_on_load_unexpected = [r"(^|\.)vision_tower\."]  # noqa: RUF012
        input_modalities = "image"
        # It has no attention, so every implementation the parent asks for is fine.
        _supports_sdpa = True
        _supports_flash_attn = True
        _supports_flex_attn = True
        _supports_attention_backend = True

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.post_init()

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("subplug loads Gemma 3n audio-only: images are not supported")

    AutoModel.register(Gemma3nVisionConfig, Gemma3nVisionStub, exist_ok=True)
    _VISION_STUB = Gemma3nVisionStub
    return Gemma3nVisionStub


def audio_only_model_class() -> Any:
    """``Gemma3nForConditionalGeneration`` (the class), with the vision tower's stand-in
    registered."""
    from transformers import Gemma3nForConditionalGeneration

    register_vision_stub()
    return Gemma3nForConditionalGeneration


def e2b_config() -> Any:
    """The ``Gemma3nConfig`` of ``google/gemma-3n-E2B-it`` (transformers' defaults are
    E4B), for memory estimates and random-initialised benchmarks without the checkpoint.

    E2B's language model: 30 layers (four sliding-window, one full, repeated), MLP width
    8192, the last 10 layers sharing keys and values, activation sparsity in the first
    10. Audio encoder, vision config and vocabulary are the defaults, which E2B shares.
    """
    from transformers import Gemma3nConfig, Gemma3nTextConfig

    layers = 30
    text = Gemma3nTextConfig(
        intermediate_size=8192,
        num_hidden_layers=layers,
        num_kv_shared_layers=10,
        layer_types=(["sliding_attention"] * 4 + ["full_attention"]) * (layers // 5),
        activation_sparsity_pattern=[0.95] * 10 + [0.0] * (layers - 10),
    )
    return Gemma3nConfig(text_config=text)


def checkpoint_vision_params(folder: Path) -> int:
    """Parameters of the vision tower stored in the checkpoint at ``folder`` (read from
    the safetensors headers, nothing loaded): what audio-only loading skips."""
    from safetensors import safe_open

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if "vision_tower." in key:
                    count = 1
                    for dim in handle.get_slice(key).get_shape():
                        count *= dim
                    total += count
    return total


def render_prompt(processor: Any, instruction: str) -> str:
    """The chat-template rendering of one audio clip plus ``instruction``, with the
    generation prompt: one user turn holding one audio placeholder (which the processor
    expands to the soft tokens) and then the instruction text.

    Inference and training (``subplug_training.collator``) both render prompts here, so
    a model is trained on exactly the prompts ``subplug generate`` sends.
    """
    messages = [
        {
            "role": "user",
            "content": [{"type": "audio"}, {"type": "text", "text": instruction}],
        }
    ]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No tqdm bars from transformers (subplug shows its own progress) and none of the
    library-internal deprecation warnings or key reports that loading and saving
    trigger (the adapter note says what matters)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings(
                "ignore", message=r".*(unexpected|missing).*keys", category=UserWarning
            )
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def audio_features(encoded: Any) -> tuple[Any, Any]:
    """The mel features and their validity mask from a Gemma 3n processor's output.

    transformers 5.24 names them ``input_features`` / ``input_features_mask``; its main
    branch renames them ``audio_features`` / ``audio_features_mask``: both are read, so
    a newer transformers (pyproject allows < 6) keeps working."""
    for name in ("input_features", "audio_features"):
        if name in encoded:
            return encoded[name], encoded[f"{name}_mask"]
    raise KeyError(f"no audio features in the processor's output ({', '.join(encoded)})")


# --------------------------------------------------------------------- memory


@dataclass(frozen=True)
class ParamCounts:
    """Parameters of a model by what quantisation does with them."""

    linear: int
    """In ``nn.Linear`` layers large enough to quantise (≥ 2**18 weights)."""
    embeddings: int
    """In the token and per-layer embedding tables (indexed by token id)."""
    per_layer: int
    """Of those, in the per-layer table (4-bit in a 4-bit model)."""
    vocab_rows: int
    """Rows of those tables together, per token id (hidden + per-layer width): the
    bytes per kept token of a trimmed vocabulary."""
    other: int

    @property
    def total(self) -> int:
        return self.linear + self.embeddings + self.other


def estimate_memory(
    model_dir: Path | str | Any,
    dtype: str,
    *,
    max_new_tokens: int = 512,
    quant: QuantChoice | None = None,
    kept_tokens: int | None = None,
) -> MemoryEstimate:
    """Estimate weights and per-item activations for the model in ``model_dir`` (or a
    ``Gemma3nConfig``) stored as ``dtype`` — or quantised as ``quant`` says, with
    ``kept_tokens`` vocabulary rows when trimmed — counting parameters on the meta
    device."""
    from subplug.memory import MemoryEstimate
    from subplug.runtime import dtype_bytes

    config = _load_config(model_dir)
    if quant is None or quant.bits is None:
        params = count_params(config)
        weight_bytes = params * dtype_bytes(dtype)
        act_dtype = dtype
    else:
        counts = count_params_by_kind(config)
        params = counts.total
        vocab = config.text_config.vocab_size
        kept = min(vocab, kept_tokens) if quant.trim_vocab and kept_tokens else vocab
        per_layer = counts.per_layer * kept // vocab
        tokens = (counts.embeddings - counts.per_layer) * kept // vocab
        if quant.least_memory:  # 4 bits, and a float32 scale and minimum per 128 values
            per_layer = per_layer * 9 // 16
        head = kept * config.text_config.hidden_size  # the head's packed int8 copy
        tables = tokens + per_layer + head
        weight_bytes = counts.linear * quant.bits // 8 + tables + counts.other * 4
        act_dtype = "float32"
    return MemoryEstimate(
        params=params,
        weight_bytes=weight_bytes,
        per_item_bytes=activation_bytes(config, act_dtype, max_new_tokens=max_new_tokens),
        dtype=dtype if quant is None or quant.bits is None else "float32",
        quantized="none" if quant is None else quant.name,
    )


def _load_config(model_dir: Path | str | Any) -> Any:
    if not isinstance(model_dir, (str, Path)):
        return model_dir
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir)


def _meta_model(config: Any) -> Any:
    import torch

    with torch.device("meta"):
        return audio_only_model_class()(config)


def count_params(config: Any) -> int:
    """Parameters of the audio-only model for ``config``, built on the meta device."""
    return sum(p.numel() for p in _meta_model(config).parameters())


def count_params_by_kind(config: Any) -> ParamCounts:
    """:class:`ParamCounts` of the audio-only model for ``config`` (meta device)."""
    from torch import nn

    model = _meta_model(config)
    text = model.model.language_model
    tables = (text.embed_tokens, text.embed_tokens_per_layer)
    embeddings = sum(t.weight.numel() for t in tables)
    linear = sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if type(m) is nn.Linear and name != "lm_head" and m.weight.numel() >= 1 << 18
    )
    total = sum(p.numel() for p in model.parameters())
    return ParamCounts(
        linear=linear,
        embeddings=embeddings,
        per_layer=text.embed_tokens_per_layer.weight.numel(),
        vocab_rows=sum(t.embedding_dim for t in tables),
        other=total - linear - embeddings,
    )


def activation_bytes(config: Any, dtype: str, *, max_new_tokens: int = 512) -> int:
    """Working memory for one batch item: KV cache (and its prompt prefix, kept twice for
    a follow-up request: decode.PrefixCache), prefill activations, logits and the audio
    encoder on a 30 s clip, with a 1.5x margin. From the config alone."""
    text = config.text_config
    audio = config.audio_config
    act = 4 if dtype in ("float32", "bf16-upcast") else 2
    prompt = config.audio_soft_tokens_per_image + 64
    sequence = prompt + max_new_tokens
    kv_layers = text.num_hidden_layers - text.num_kv_shared_layers
    kv = kv_layers * 2 * text.num_key_value_heads * text.head_dim * (sequence + 2 * prompt) * act
    intermediate = (
        max(text.intermediate_size)
        if isinstance(text.intermediate_size, (list, tuple))
        else text.intermediate_size
    )
    per_token = (
        text.hidden_size * text.altup_num_inputs * 6
        + intermediate * 3
        + text.num_hidden_layers * text.hidden_size_per_layer_input * 2
    )
    prefill = prompt * per_token * act
    logits = text.vocab_size * 4 * 2
    frames = 3000 + 8
    channels = audio.sscp_conv_channel_size[0]
    sscp = channels * (frames // 2) * (audio.input_feat_size // 2) * 4 * 4
    conformer = (frames // 4) * audio.hidden_size * 4 * 4 * 3
    return int((kv + prefill + logits + sscp + conformer) * 1.5)


def empty_model(config: Any) -> Any:
    """The audio-only Gemma 3n for ``config`` with uninitialised float32 weights: the
    memory is reserved but not touched, so it costs no RAM until written (the skeleton
    :mod:`subplug.quant.convert` fills)."""
    import torch
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = audio_only_model_class()._from_config(
            config, dtype=torch.float32, attn_implementation="sdpa"
        )
    model.eval()
    return model


# ----------------------------------------------------------------- model location


@dataclass(frozen=True)
class ModelLocation:
    """Where a model's files are: a full model folder, or an adapter and its base."""

    name: str | None
    path: Path
    is_adapter: bool
    base: Path | None


def locate(spec: str | None, base: str | None = None) -> ModelLocation:
    """Find the model named or pointed to by ``spec`` with the model cache
    (:func:`subplug.cache.resolve_model`: a cache name or a folder); ``base`` overrides
    an adapter's base model (a cache name or folder). Every file must be readable."""
    from subplug.cache import resolve_model

    found = resolve_model(spec, base=base)
    location = ModelLocation(found.name, Path(found.path), found.is_adapter, found.base)
    if location.is_adapter and location.base is None:
        raise SubplugError(
            "adapter-base-missing",
            f"The adapter at {location.path} names no base model that is available here.",
            "Import the base model with `subplug models import PATH`, or name its folder "
            "with the backend option base=PATH.",
        )
    for folder in (location.path, location.base):
        if folder is not None:
            check_readable(folder)
    return location


def check_readable(folder: Path) -> None:
    """``model-unreadable`` when a file of the model cannot be read by this user (a
    folder made by another user with private files): said plainly, before loading."""
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_file() or not os.access(path, os.R_OK):
            if path.is_dir():
                continue
            raise SubplugError(
                "model-unreadable",
                f"Cannot read {path}: {'not a file' if path.exists() else 'it is gone'}"
                if not path.is_file()
                else f"Cannot read {path}: permission denied.",
                f"Make the model's files readable (chmod a+r {folder}/*), or ask the user "
                "who made them to.",
            )
