"""Quantised matrix-product kernels behind one small interface.

Each kernel is a callable ``kernel(x) -> x @ W.T`` built from quantised weights
(:class:`Int8Weights`, :class:`Int4Weights`). Which torch operator does the work is
decided here and nowhere else, so a deprecated or missing operator changes one file:

- :class:`PackedInt8`: int8 weights × int8 activations quantised per call, fbgemm's
  packed kernel (``aten.fbgemm_linear_int8_weight_fp32_activation``, legacy but the
  fastest int8 product torch has on x86 CPUs, AVX2 and AVX-512, holding one packed
  copy of the weights); :class:`DynamicInt8` is the same arithmetic through
  ``quantized::linear_dynamic`` (the kernel of the deprecated ``quantize_dynamic``),
  which keeps a second copy.
- :class:`PerTokenInt8`: int8 weights × int8 activations quantised per row (token) on
  each call, ``aten._int_mm`` with the scales applied after: as fast as fbgemm where it
  matters (reading the weights from memory), more exact (a row's scale is its own, so a
  large activation in one token, such as the first, does not coarsen the others), and a
  row's result does not depend on the other rows of its batch.
- :class:`WeightOnlyInt8`: int8 weights, activations in bfloat16/float32,
  ``aten._weight_int8pack_mm``: maintained, exact in the activations, slower.
- :class:`WeightOnlyInt4`: 4-bit weights in groups along the input dimension, with a
  scale and offset per group, ``aten._weight_int4pack_mm_for_cpu``.

torch is imported lazily by the functions that need it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

# The fbgemm operators PackedInt8 calls warn on every first use that they are deprecated;
# docs/performance.md says why subplug uses them anyway (and available() falls back).
warnings.filterwarnings("ignore", message=r"fbgemm_\w+ is deprecated", category=UserWarning)
warnings.filterwarnings(
    "ignore",
    message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
    category=UserWarning,
)


@dataclass(frozen=True)
class Int8Weights:
    """Symmetric per-output-row int8 weights: ``W ≈ values * scales[:, None]``."""

    values: torch.Tensor
    """int8, shape ``[out, in]``, in ``[-127, 127]``."""
    scales: torch.Tensor
    """float32, shape ``[out]``."""


@dataclass(frozen=True)
class Int4Weights:
    """4-bit weights in groups of ``group`` inputs: ``W ≈ values * scale + minimum`` per
    group, ``values`` in ``[0, 15]``."""

    values: torch.Tensor
    """uint8, shape ``[out, in // 2]``: two 4-bit values per byte (low nibble first)."""
    scales: torch.Tensor
    """float32, shape ``[out, in // group]``."""
    minimums: torch.Tensor
    """float32, shape ``[out, in // group]``."""
    group: int


#: Rows quantised at a time, so a 2-billion-weight table never needs a float copy of
#: itself in memory (about 64 MiB of float32 work space per block at E2B's widths).
BLOCK_ELEMENTS = 1 << 24


def _row_blocks(rows: int, width: int) -> range:
    return range(0, rows, max(1, BLOCK_ELEMENTS // max(1, width)))


def quantize_int8(weight: torch.Tensor) -> Int8Weights:
    """Round ``weight`` ``[out, in]`` to symmetric int8 with one scale per output row
    (in blocks of rows: the work space stays small whatever the table's size)."""
    import torch

    out, inputs = weight.shape
    values = torch.empty(out, inputs, dtype=torch.int8)
    scales = torch.empty(out, dtype=torch.float32)
    blocks = _row_blocks(out, inputs)
    for start in blocks:
        w = weight[start : start + blocks.step].float()
        block_scales = w.abs().amax(dim=1).clamp_(min=1e-12).div_(127.0)
        end = start + w.shape[0]
        values[start:end] = torch.round(w / block_scales[:, None]).clamp_(-127, 127)
        scales[start:end] = block_scales
    return Int8Weights(values, scales)


def dequantize_int8(weights: Int8Weights) -> torch.Tensor:
    """The float32 matrix ``weights`` stands for."""
    return weights.values.float() * weights.scales[:, None]


def quantize_int4(weight: torch.Tensor, group: int = 128) -> Int4Weights:
    """Round ``weight`` ``[out, in]`` to 4 bits in groups of ``group`` inputs, with a
    scale and a minimum per group (asymmetric). ``in`` must divide by ``group``."""
    import torch

    out, inputs = weight.shape
    if inputs % group:
        raise ValueError(f"in features {inputs} do not divide by the group size {group}")
    packed = torch.empty(out, inputs // 2, dtype=torch.uint8)
    scales = torch.empty(out, inputs // group, dtype=torch.float32)
    minimums = torch.empty(out, inputs // group, dtype=torch.float32)
    blocks = _row_blocks(out, inputs)
    for start in blocks:
        w = weight[start : start + blocks.step].float()
        end = start + w.shape[0]
        w = w.reshape(w.shape[0], inputs // group, group)
        low = w.amin(dim=2)
        step = (w.amax(dim=2) - low).div_(15.0).clamp_(min=1e-12)
        w = w.sub(low[..., None]).div_(step[..., None]).round_().clamp_(0, 15)
        q = w.to(torch.uint8).reshape(end - start, inputs)
        packed[start:end] = q[:, 0::2] | (q[:, 1::2] << 4)
        scales[start:end], minimums[start:end] = step, low
    return Int4Weights(packed, scales, minimums, group)


def unpack_int4(weights: Int4Weights) -> torch.Tensor:
    """The 4-bit values of ``weights`` as a uint8 ``[out, in]`` matrix."""
    import torch

    low = weights.values & 0x0F
    high = weights.values >> 4
    rows, half = weights.values.shape
    return torch.stack((low, high), dim=2).reshape(rows, 2 * half)


def dequantize_int4(weights: Int4Weights) -> torch.Tensor:
    """The float32 matrix ``weights`` stands for."""
    q = unpack_int4(weights).float()
    out, inputs = q.shape
    q = q.reshape(out, inputs // weights.group, weights.group)
    q.mul_(weights.scales[..., None]).add_(weights.minimums[..., None])
    return q.reshape(out, inputs)


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The x86 feature flags of this CPU (empty where /proc/cpuinfo is not there)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def fbgemm_needs_7bit(flags: frozenset[str] | None = None) -> bool:
    """Whether fbgemm's int8 kernels can overflow here with 8 bits on both sides.

    Without VNNI (AVX2, and AVX-512 without VNNI) fbgemm multiplies with
    ``vpmaddubsw``, whose 16-bit sums of two u8×s8 products can overflow when both
    activations and weights use all 8 bits (PyTorch's own dynamic quantisation uses
    7-bit activations on x86 for that reason). With VNNI the products are summed in 32
    bits. ``FBGEMM_ENABLE_INSTRUCTIONS`` capped below VNNI counts as no VNNI.
    """
    if flags is None:
        flags = cpu_flags()
    capped = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "").upper()
    if capped in ("AVX2", "AVX512"):
        return True
    return not ({"avx512_vnni", "avx_vnni"} & flags)


class PackedInt8:
    """``x @ W.T`` with fbgemm's int8 kernel on a packed copy of the weights:
    activations (float32) quantised to 8 bits per call over the whole ``x``, int32
    accumulation, then each output column scaled by its weight row's scale.

    It calls ``aten.fbgemm_linear_int8_weight_fp32_activation``, which holds nothing
    but fbgemm's packed matrix (``quantized::linear_dynamic`` also keeps a second,
    unpacked copy of every weight, doubling the memory). That operator reads the weight
    argument only for its shape, so a zero-size stand-in is passed.

    Without VNNI, fbgemm sums pairs of u8×s8 products in 16 bits, which 8-bit weights
    can overflow; there the weights are packed at 7 bits (``[-63, 63]``, twice the
    scale), which cannot (:func:`fbgemm_needs_7bit`).
    """

    #: Output rows packed together: fbgemm's packing needs several times a matrix's
    #: size as work space, so a 131,072-row head is packed (and multiplied) in parts.
    BLOCK_ROWS = 16_384

    def __init__(
        self,
        weights: Int8Weights,
        bias: torch.Tensor | None = None,
        *,
        seven_bit: bool | None = None,
    ) -> None:
        import torch

        if seven_bit is None:
            seven_bit = fbgemm_needs_7bit()
        out, inputs = weights.values.shape
        self.parts: list[tuple[Any, ...]] = []
        for first in range(0, out, self.BLOCK_ROWS):
            values = weights.values[first : first + self.BLOCK_ROWS]
            scales = weights.scales[first : first + self.BLOCK_ROWS].float()
            if seven_bit:  # round half away from zero, in integers: no float copy
                wide = values.to(torch.int16)
                values = (wide.sign() * ((wide.abs() + 1) // 2)).clamp_(-63, 63).to(torch.int8)
                scales = scales * 2
            rows = values.shape[0]
            self.parts.append(
                (
                    torch.zeros(1, 1, dtype=torch.int8).expand(rows, inputs),
                    torch.fbgemm_pack_quantized_matrix(values.contiguous()),
                    values.sum(dim=1, dtype=torch.int32),
                    scales.contiguous(),
                    torch.zeros(rows, dtype=torch.float32),
                )
            )
        self.bias = None if bias is None else bias.float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        shape = x.shape
        flat = x.reshape(-1, shape[-1]).float()
        outputs = []
        for stand_in, packed, col_offsets, scales, zeros in self.parts:
            y = torch.fbgemm_linear_int8_weight_fp32_activation(
                flat, stand_in, packed, col_offsets, 1.0, 0, zeros
            )
            outputs.append(y.mul_(scales))
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
        if self.bias is not None:
            y = y.add_(self.bias)
        return y.reshape(*shape[:-1], y.shape[-1])


class DynamicInt8:
    """``x @ W.T`` with ``quantized::linear_dynamic`` (the kernel behind the deprecated
    ``torch.ao.quantization.quantize_dynamic``): same fbgemm arithmetic as
    :class:`PackedInt8`, but it keeps an unpacked copy of the weights as well. For
    comparison in bench/kernels.py."""

    def __init__(
        self, weights: Int8Weights, bias: torch.Tensor | None = None, *, reduce_range: bool = True
    ) -> None:
        import torch

        zeros = torch.zeros(weights.values.shape[0], dtype=torch.int64)
        quantized = torch._make_per_channel_quantized_tensor(
            weights.values, weights.scales.double(), zeros, 0
        )
        self.packed = torch.ops.quantized.linear_prepack(
            quantized, None if bias is None else bias.float()
        )
        self.reduce_range = reduce_range

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(
            x.reshape(-1, shape[-1]).float(), self.packed, self.reduce_range
        )
        return y.reshape(*shape[:-1], y.shape[-1])


class PerTokenInt8:
    """``x @ W.T`` with int8 weights and activations quantised per row
    (``aten._int_mm``, int32 accumulation)."""

    def __init__(self, weights: Int8Weights, bias: torch.Tensor | None = None) -> None:
        self.values_t = weights.values.t()
        self.scales = weights.scales
        self.bias = None if bias is None else bias.float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        shape = x.shape
        flat = x.reshape(-1, shape[-1]).float()
        row_scales = flat.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(127.0)
        q = torch.round(flat / row_scales).to(torch.int8)
        y = torch._int_mm(q, self.values_t).float().mul_(row_scales).mul_(self.scales)
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*shape[:-1], y.shape[-1]).to(x.dtype)


class WeightOnlyInt8:
    """``x @ W.T`` with int8 weights and bfloat16/float32 activations
    (``aten._weight_int8pack_mm``)."""

    def __init__(self, weights: Int8Weights) -> None:
        self.values = weights.values
        self.scales = weights.scales

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        shape = x.shape
        # float32 activations take a path ~10x slower than bfloat16 (bench/kernels.py).
        flat = x.reshape(-1, shape[-1]).to(torch.bfloat16).contiguous()
        y = torch._weight_int8pack_mm(flat, self.values, self.scales.to(flat.dtype))
        return y.reshape(*shape[:-1], y.shape[-1]).to(x.dtype)


#: ``innerKTiles`` of the CPU int4 packing (the layout is the CPU kernel's own).
INT4_INNER_K_TILES = 2


class WeightOnlyInt4:
    """``x @ W.T`` with 4-bit grouped weights (``aten._weight_int4pack_mm_for_cpu``)."""

    def __init__(self, weights: Int4Weights) -> None:
        import torch

        q = unpack_int4(weights).to(torch.int32)
        self.packed = torch._convert_weight_to_int4pack_for_cpu(q, INT4_INNER_K_TILES)
        # The kernel computes (q - 8) * scale + zero: zero = minimum + 8 * scale.
        zeros = weights.minimums + 8 * weights.scales
        self.scales_and_zeros = {
            torch.float32: torch.stack((weights.scales, zeros), dim=2).transpose(0, 1).contiguous()
        }
        self.group = weights.group

    def _tables(self, dtype: Any) -> torch.Tensor:
        table = self.scales_and_zeros.get(dtype)
        if table is None:
            table = self.scales_and_zeros[next(iter(self.scales_and_zeros))].to(dtype)
            self.scales_and_zeros[dtype] = table
        return table

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        shape = x.shape
        # float32 activations take a path ~30x slower than bfloat16 (bench/kernels.py).
        flat = x.reshape(-1, shape[-1]).to(torch.bfloat16).contiguous()
        y = torch._weight_int4pack_mm_for_cpu(
            flat, self.packed, self.group, self._tables(flat.dtype)
        )
        return y.reshape(*shape[:-1], y.shape[-1]).to(x.dtype)


#: int8 kernels in order of preference (docs/performance.md has the figures).
INT8_KERNEL_ORDER = ("fbgemm", "int-mm", "weight-only")

_AVAILABLE: frozenset[str] | None = None


def available() -> frozenset[str]:
    """What this torch build can run here: kernel names (:data:`INT8_KERNEL_ORDER`),
    plus ``int8`` when any int8 kernel works and ``int4`` when the int4 one does.
    Each is tried once on a small matrix (and the answer kept for the process)."""
    global _AVAILABLE
    if _AVAILABLE is not None:
        return _AVAILABLE
    import torch

    weight = torch.linspace(-1, 1, 64 * 256).reshape(64, 256)
    x = torch.linspace(-1, 1, 2 * 256).reshape(2, 256)
    reference = x @ weight.T
    q8 = quantize_int8(weight)
    found: set[str] = set()
    builders: dict[str, Callable[[], Callable[[torch.Tensor], torch.Tensor]]] = {
        "fbgemm": lambda: PackedInt8(q8),
        "int-mm": lambda: PerTokenInt8(q8),
        "weight-only": lambda: WeightOnlyInt8(q8),
    }
    for name, build in builders.items():
        try:
            out = build()(x)
        except (RuntimeError, AttributeError, NotImplementedError):
            continue
        if float((out.float() - reference).norm() / reference.norm()) < 0.05:
            found.add(name)
    if found:
        found.add("int8")
    try:
        out = WeightOnlyInt4(quantize_int4(weight, 128))(x.to(torch.bfloat16))
        if float((out.float() - reference).norm() / reference.norm()) < 0.2:
            found.add("int4")
    except (RuntimeError, AttributeError, NotImplementedError):
        pass
    _AVAILABLE = frozenset(found)
    return _AVAILABLE
