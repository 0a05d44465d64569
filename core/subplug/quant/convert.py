"""Turn a Gemma 3n model into its quantised (and vocabulary-trimmed) form.

Two ways in, one result:

- :func:`load_quantized` builds the model straight from checkpoint files: an empty
  skeleton (no memory touched), quantised modules put in place, then every tensor read
  one at a time from the safetensors files (memory-mapped), a LoRA adapter merged into
  its weight on the way (``W + scale · B·A``), quantised and stored. Peak memory stays
  at the quantised model's size: the float model is never whole in memory.
- :func:`quantize_loaded` converts a model already loaded in float, module by module
  (for adapters this module cannot merge itself, and for tests).

What is quantised (:class:`QuantSpec`): every ``nn.Linear`` with at least
``min_params`` weights — the language model's attention and MLP projections, the audio
encoder's conformer layers — to int8 or 4-bit; the token embeddings (which are also the
output head) to int8 rows and the per-layer embeddings (E2B's largest table) to int8
rows, or to 4-bit groups in a 4-bit model (:attr:`QuantSpec.per_layer_bits`), both
trimmed to ``kept_ids`` when a trimmed vocabulary is asked for. Everything else (norms,
small projections, convolutions) stays float32, the compute dtype of a quantised model on
the CPU.

A saved quantised model (``subplug models optimize``) is a folder with the quantised
``state_dict`` in ``model.safetensors`` and a ``subplug-quant.json`` describing it
(:class:`QuantSpec`, the kept ids); :func:`load_saved` loads it the same way.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from subplug.quant import tensorfile
from subplug.quant.modules import QuantEmbedding, QuantLinear
from subplug.quant.vocab import row_map

log = logging.getLogger(__name__)

#: File describing a saved quantised model.
SPEC_FILE = "subplug-quant.json"
#: Version of the saved layout (2 added ``per_layer_bits``; 1 is read as 8 bits).
FORMAT_VERSION = 2


@dataclass(frozen=True)
class QuantSpec:
    """How a model is quantised and trimmed."""

    bits: int = 8
    """Linear weights: 8 (int8, one scale per output row) or 4 (groups of ``group``)."""
    group: int = 128
    """Inputs per scale for 4-bit weights."""
    kept_ids: tuple[int, ...] | None = None
    """Token ids kept by a trimmed vocabulary (ascending); ``None``: all."""
    per_layer_bits: int = 8
    """The per-layer embedding table: int8 rows (8) or 4-bit groups of ``group`` (4).
    The token embeddings stay int8 whatever this says: they are also the output head."""
    min_params: int = 1 << 20
    """Linear layers with fewer weights stay float32 (too small to gain)."""
    kernel: str = field(default="fbgemm", compare=False)
    """int8 kernel (:data:`subplug.quant.modules.INT8_KERNELS`): a run-time choice, not
    part of the stored model."""

    @property
    def name(self) -> str:
        """``int8``, ``int4``, plus ``-trim`` for a trimmed vocabulary."""
        return f"int{self.bits}" + ("-trim" if self.kept_ids is not None else "")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("kernel")
        data["kept_ids"] = None if self.kept_ids is None else list(self.kept_ids)
        data["format"] = FORMAT_VERSION
        if self.per_layer_bits == 8:  # the format-1 layout: older subplugs read it too
            data.pop("per_layer_bits")
            data["format"] = 1
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, kernel: str = "fbgemm") -> QuantSpec:
        if data.get("format") not in (1, FORMAT_VERSION):
            raise ValueError(f"unknown quantised-model format {data.get('format')!r}")
        kept = data.get("kept_ids")
        return cls(
            bits=int(data["bits"]),
            group=int(data["group"]),
            kept_ids=None if kept is None else tuple(int(i) for i in kept),
            per_layer_bits=int(data.get("per_layer_bits", 8)),
            min_params=int(data["min_params"]),
            kernel=kernel,
        )


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class _Plan:
    """Which modules of a model become what."""

    linears: tuple[str, ...]
    embeddings: dict[str, int]
    """Module name → rows of its full table (token embeddings, per-layer embeddings)."""
    head: str | None
    """The output head tied to the token embeddings (replaced together with them)."""


def _embedding_names(model: nn.Module) -> tuple[str, str]:
    base = "model.language_model"
    return f"{base}.embed_tokens", f"{base}.embed_tokens_per_layer"


def _plan(model: nn.Module, spec: QuantSpec) -> _Plan:
    embed, per_layer = _embedding_names(model)
    modules = dict(model.named_modules())
    if embed not in modules or per_layer not in modules:
        raise ValueError("not a Gemma 3n model: its embeddings are not where expected")
    linears = tuple(
        name
        for name, module in modules.items()
        if type(module) is nn.Linear
        and name != "lm_head"
        and module.weight.numel() >= spec.min_params
        and not (spec.bits == 4 and module.in_features % spec.group)
    )
    embeddings = {
        embed: modules[embed].num_embeddings,
        per_layer: modules[per_layer].num_embeddings,
    }
    return _Plan(linears, embeddings, "lm_head" if "lm_head" in modules else None)


def _quant_linear_like(old: nn.Module, spec: QuantSpec) -> QuantLinear:
    """An empty (meta) :class:`QuantLinear` of ``old``'s shape and bias for ``spec``."""
    assert isinstance(old, nn.Linear)
    return QuantLinear(
        old.in_features,
        old.out_features,
        bias=old.bias is not None,
        bits=spec.bits,
        group=spec.group,
        kernel=spec.kernel,
        device="meta",
    )


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _kept_rows(spec: QuantSpec, rows: int) -> torch.Tensor | None:
    if spec.kept_ids is None:
        return None
    return torch.tensor([i for i in spec.kept_ids if i < rows], dtype=torch.long)


def _new_embedding(model: nn.Module, name: str, spec: QuantSpec, rows: int) -> QuantEmbedding:
    """The empty quantised table for embedding ``name`` of ``model`` (``rows`` ids)."""
    old = model.get_submodule(name)
    assert isinstance(old, nn.Embedding)
    kept = _kept_rows(spec, rows)
    bits = spec.per_layer_bits if name == _embedding_names(model)[1] else 8
    return QuantEmbedding(
        rows if kept is None else len(kept),
        old.embedding_dim,
        bits=bits,
        group=spec.group,
        embed_scale=float(getattr(old, "scalar_embed_scale", 1.0)),
        vocab_size=None if kept is None else rows,
        device="meta",
    )


def _fill_embedding(
    module: QuantEmbedding,
    blocks: Iterable[tuple[int, torch.Tensor]],
    rows: int,
    spec: QuantSpec,
) -> None:
    """Quantise an embedding table given as ``(first_row, rows)`` blocks, keeping only
    the rows of :attr:`QuantSpec.kept_ids` when trimmed: the float table is never whole
    in memory."""
    kept = _kept_rows(spec, rows)
    module.to_empty(device="cpu", recurse=False)
    written = 0
    for first, block in blocks:
        if kept is not None:
            inside = kept[(kept >= first) & (kept < first + block.shape[0])]
            block = block.index_select(0, inside - first)
        if written + block.shape[0] > module.num_rows:
            raise ValueError(f"embedding table gave too many rows, expected {module.num_rows}")
        module.set_rows(written, block)
        written += block.shape[0]
    if written != module.num_rows:
        raise ValueError(f"embedding table gave {written} rows, expected {module.num_rows}")
    if kept is not None:
        module.rows = row_map(kept.tolist(), rows)


def _tensor_blocks(table: torch.Tensor, step: int = 1 << 14) -> Iterator[tuple[int, torch.Tensor]]:
    for first in range(0, table.shape[0], step):
        yield first, table[first : first + step]


class TrimmedHead(nn.Module):
    """The output head over the kept tokens only, sharing the token embeddings' table:
    logits come out for ``kept_ids`` in order (``out_features`` columns)."""

    def __init__(self, embedding: QuantEmbedding, kernel: str) -> None:
        super().__init__()
        self.out_features = embedding.num_rows
        self.linear = QuantLinear(
            embedding.dim, embedding.num_rows, bits=8, kernel=kernel, device="meta"
        )
        self.linear.qweight, self.linear.qscale = embedding.qweight, embedding.qscale

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


def _finish_head(model: nn.Module, plan: _Plan, spec: QuantSpec) -> None:
    if plan.head is None:
        return
    embed_name, _ = _embedding_names(model)
    embedding = model.get_submodule(embed_name)
    assert isinstance(embedding, QuantEmbedding)
    _set_module(model, plan.head, TrimmedHead(embedding, spec.kernel))


def _mark(model: nn.Module, spec: QuantSpec) -> None:
    """Record on the model what was done (the decode loop reads ``kept_ids``)."""
    kept = None if spec.kept_ids is None else torch.tensor(spec.kept_ids, dtype=torch.long)
    model.subplug_quant = spec  # type: ignore[assignment]
    model.subplug_kept_ids = kept  # type: ignore[assignment]


def prepare_kernels(model: nn.Module) -> None:
    """Build every quantised layer's kernel now (rather than on first use), releasing
    the portable copies kernels repack."""
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.prepare(release=not _is_shared(module, model))


def _is_shared(layer: QuantLinear, model: nn.Module) -> bool:
    """A head layer shares its int8 table with the token embeddings: keep it."""
    return any(
        isinstance(m, QuantEmbedding) and m.qweight is layer.qweight for m in model.modules()
    )


# ----------------------------------------------------------- from a loaded model


def quantize_loaded(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Quantise a loaded float Gemma 3n in place, one module at a time (each float
    weight is freed once its quantised form exists). Returns ``model``."""
    plan = _plan(model, spec)
    with torch.no_grad():
        for name in plan.linears:
            old = model.get_submodule(name)
            assert isinstance(old, nn.Linear)
            new = _quant_linear_like(old, spec)
            new.load_quantized(old.weight, old.bias)
            _set_module(model, name, new)
            del old
        for name, rows in plan.embeddings.items():
            old_embedding = model.get_submodule(name)
            assert isinstance(old_embedding, nn.Embedding)
            new_embedding = _new_embedding(model, name, spec, rows)
            _fill_embedding(new_embedding, _tensor_blocks(old_embedding.weight), rows, spec)
            _set_module(model, name, new_embedding)
        if plan.head is not None:
            model.lm_head = nn.Identity()  # drop the tie before building the new head
        _finish_head(model, plan, spec)
        _float_rest(model)
    _mark(model, spec)
    return model


def _float_rest(model: nn.Module) -> None:
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()
    for module in model.modules():
        for key, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != torch.float32:
                module._buffers[key] = buffer.float()


# ------------------------------------------------------------ straight from files


class UnsupportedCheckpoint(Exception):
    """The files cannot be streamed into a quantised model (unknown keys, an adapter
    with features this module does not merge); load in float and convert instead."""


def _checkpoint_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    files = [f for f in files if f.name != "adapter_model.safetensors"]
    if not files:
        raise UnsupportedCheckpoint(f"no .safetensors weights in {folder}")
    return files


@dataclass(frozen=True)
class LoraDeltas:
    """A LoRA adapter read for merging: per target module, ``(A, B, scale)``."""

    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]

    def merge(self, module: str, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` with this module's update added (float32), or unchanged."""
        found = self.modules.get(module)
        if found is None:
            return weight
        a, b, scale = found
        return weight.float() + scale * (b.float() @ a.float())


def read_lora(adapter_dir: Path, known_modules: set[str]) -> LoraDeltas:
    """Read a plain LoRA adapter (peft) for merging. Raises
    :class:`UnsupportedCheckpoint` for what this merge does not do (DoRA, extra trained
    modules, biases, embedding adapters). Tensors for modules the model does not have
    (k/v projections of KV-shared layers from older transformers) are skipped."""
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise UnsupportedCheckpoint(f"adapter type {config.get('peft_type')}")
    for flag in ("use_dora", "fan_in_fan_out"):
        if config.get(flag):
            raise UnsupportedCheckpoint(f"adapter option {flag}")
    if config.get("modules_to_save") or config.get("bias", "none") != "none":
        raise UnsupportedCheckpoint("adapter trains extra modules or biases")
    r_default = int(config["r"])
    alpha_default = float(config.get("lora_alpha", r_default))
    rank_pattern: dict[str, int] = config.get("rank_pattern") or {}
    alpha_pattern: dict[str, float] = config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora"))
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise UnsupportedCheckpoint("adapter weights are not in adapter_model.safetensors")
    tensors = load_file(str(weights_file))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = re.match(r"^base_model\.model\.(.+)\.lora_([AB])\.weight$", key)
        if match is None:
            raise UnsupportedCheckpoint(f"adapter tensor {key}")
        pairs.setdefault(match.group(1), {})[match.group(2)] = tensor
    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for module, pair in pairs.items():
        if module not in known_modules:
            continue
        if set(pair) != {"A", "B"}:
            raise UnsupportedCheckpoint(f"adapter module {module} lacks lora_A or lora_B")
        r = _pattern_value(rank_pattern, module, r_default)
        alpha = _pattern_value(alpha_pattern, module, alpha_default)
        scale = alpha / (r**0.5 if rslora else r)
        modules[module] = (pair["A"], pair["B"], float(scale))
    return LoraDeltas(modules)


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return type(default)(value)
    return default


def _ignorable(key: str, model: nn.Module) -> bool:
    """Checkpoint keys a Gemma 3n load skips: the vision tower (audio-only), and the
    k/v projections and norms of KV-shared layers (transformers 5 has none)."""
    if "vision_tower." in key:
        return True
    patterns: list[str] = []
    for module in model.modules():
        patterns.extend(getattr(module, "_keys_to_ignore_on_load_unexpected", None) or [])
    return any(re.search(p, key) for p in patterns)


def _put_quantised_modules(model: nn.Module, plan: _Plan, spec: QuantSpec) -> None:
    """Swap the planned linears for empty :class:`QuantLinear` s (on the meta device
    until filled) and the embeddings for :class:`QuantEmbedding` s; the tied head
    becomes an identity until :func:`_finish_head`."""
    for name in plan.linears:
        _set_module(model, name, _quant_linear_like(model.get_submodule(name), spec))
    for name, rows in plan.embeddings.items():
        _set_module(model, name, _new_embedding(model, name, spec, rows))
    if plan.head is not None:
        model.lm_head = nn.Identity()


def load_quantized(
    model_dir: Path,
    spec: QuantSpec,
    *,
    build: Callable[[Any], nn.Module],
    adapter_dir: Path | None = None,
    config: Any = None,
    on_tensor: Callable[[int, int], None] | None = None,
) -> nn.Module:
    """Build the quantised model for the checkpoint in ``model_dir`` (plus a LoRA
    adapter, merged) without ever holding the float model (module docstring).
    ``build(config)`` makes the empty float32 skeleton (the model family's own,
    e.g. :func:`subplug.backends.gemma3n_model.empty_model`). ``on_tensor(done,
    total)`` follows progress. Raises :class:`UnsupportedCheckpoint` when the files do
    not fit this path."""
    from transformers import AutoConfig

    config = config or AutoConfig.from_pretrained(model_dir)
    files = _checkpoint_files(model_dir)
    model = build(config)
    plan = _plan(model, spec)
    names = {name for name, _ in model.named_modules()}
    deltas = read_lora(adapter_dir, names) if adapter_dir is not None else None
    _put_quantised_modules(model, plan, spec)
    targets = dict(model.named_modules())
    params = dict(model.named_parameters())
    filled: set[str] = set()
    entries = [entry for file in files for entry in tensorfile.entries(file)]
    with torch.no_grad():
        for done, entry in enumerate(entries, start=1):
            key = entry.name
            module_name, _, leaf = key.rpartition(".")
            target = targets.get(module_name)
            if isinstance(target, QuantLinear):
                if leaf == "weight":
                    weight = entry.read()
                    target.load_quantized(deltas.merge(module_name, weight) if deltas else weight)
                else:
                    target.bias = entry.read().float()
                filled.add(key)
            elif isinstance(target, QuantEmbedding):
                _fill_embedding(target, entry.row_blocks(), entry.shape[0], spec)
                filled.add(key)
            elif key in params:
                tensor = entry.read()
                if deltas and leaf == "weight":
                    tensor = deltas.merge(module_name, tensor)
                params[key].data = tensor.to(torch.float32).contiguous()
                filled.add(key)
            elif not _ignorable(key, model):
                raise UnsupportedCheckpoint(f"checkpoint tensor {key} matches nothing in the model")
            if on_tensor is not None:
                on_tensor(done, len(entries))
    missing = [n for n in params if n not in filled] + [
        f"{name}.weight" for name in plan.linears if f"{name}.weight" not in filled
    ]
    if missing:
        raise UnsupportedCheckpoint(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[0]}")
    _finish_head(model, plan, spec)
    _float_rest(model)
    _mark(model, spec)
    return model


# --------------------------------------------------------------- saved models


def save_quantized(model: nn.Module, folder: Path) -> list[Path]:
    """Write a quantised model's weights and :data:`SPEC_FILE` into ``folder`` (which
    must exist). Returns the files written. The model must not have released its
    portable weights (:func:`prepare_kernels` not yet called)."""
    from safetensors.torch import save_file

    spec: QuantSpec = model.subplug_quant  # type: ignore[assignment]
    state: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("lm_head."):
            continue  # the head is the token embeddings' table
        if tensor.numel() == 0:
            raise ValueError(f"{key} was released by its kernel; save before preparing")
        pointer = tensor.data_ptr()
        if pointer in seen:
            continue
        seen[pointer] = key
        state[key] = tensor.contiguous()
    weights = folder / "model.safetensors"
    save_file(state, str(weights), metadata={"format": "pt", "subplug": spec.name})
    spec_file = folder / SPEC_FILE
    spec_file.write_text(json.dumps(spec.to_json()) + "\n", encoding="utf-8")
    return [weights, spec_file]


def read_spec(folder: Path, *, kernel: str = "fbgemm") -> QuantSpec | None:
    """The :class:`QuantSpec` of a saved quantised model, or ``None`` for a plain one."""
    path = folder / SPEC_FILE
    if not path.is_file():
        return None
    return QuantSpec.from_json(json.loads(path.read_text(encoding="utf-8")), kernel=kernel)


def load_saved(
    folder: Path, spec: QuantSpec, *, build: Callable[[Any], nn.Module], config: Any = None
) -> nn.Module:
    """Load a model saved by :func:`save_quantized`: the skeleton ``build(config)``
    with quantised modules, then the saved tensors assigned in place (nothing held
    twice)."""
    from transformers import AutoConfig

    config = config or AutoConfig.from_pretrained(folder)
    model = build(config)
    plan = _plan(model, spec)
    _put_quantised_modules(model, plan, spec)
    state = {entry.name: entry.read() for entry in tensorfile.entries(folder / "model.safetensors")}
    expected = set(model.state_dict())
    unknown = set(state) - expected
    missing = expected - set(state)
    if unknown or missing:
        raise ValueError(
            f"saved quantised model does not match its skeleton: {len(unknown)} unknown, "
            f"{len(missing)} missing tensors"
        )
    model.load_state_dict(state, assign=True, strict=True)
    _finish_head(model, plan, spec)
    _float_rest(model)
    _mark(model, spec)
    return model
