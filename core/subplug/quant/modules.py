"""``nn.Module`` s holding quantised weights: a linear layer and an embedding table.

Both keep their weights in a portable form as buffers (so ``state_dict`` saves and
``load_state_dict(assign=True)`` loads them): int8 values with one scale per output row,
or 4-bit values in groups with a scale and a minimum per group. The kernel that
multiplies (:mod:`subplug.quant.kernels`) is built from them on first use, or by
:meth:`QuantLinear.prepare`; kernels that repack the weights (fbgemm, int4) keep their
own copy and the portable buffers are then released (``release=True``), so a loaded
model holds one copy of each weight.

An embedding may be *trimmed*: it holds only the rows of the tokens kept (see
:mod:`subplug.quant.vocab`) and maps a token id to its row with ``rows`` (a table over
all ids; dropped ids map to row 0). A head over the kept tokens computes logits for them
only, in the order of the kept ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from subplug.quant import kernels as qk

if TYPE_CHECKING:
    from collections.abc import Callable

#: Kernel names :class:`QuantLinear` accepts for int8 weights.
INT8_KERNELS = ("fbgemm", "int-mm", "weight-only")


class QuantLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` stored as int8 (``bits=8``) or 4-bit (``bits=4``).

    ``kernel`` chooses the int8 kernel (:data:`INT8_KERNELS`); 4-bit weights always use
    the grouped int4 kernel. Outputs come back in the input's dtype.
    """

    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = False,
        bits: int = 8,
        group: int = 128,
        kernel: str = "fbgemm",
        device: Any = None,
    ) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, not {bits}")
        self.in_features = in_features
        self.out_features = out_features
        self.bits = bits
        self.group = group
        self.kernel_name = kernel
        if bits == 8:
            self.register_buffer(
                "qweight", torch.empty(out_features, in_features, dtype=torch.int8, device=device)
            )
            self.register_buffer(
                "qscale", torch.empty(out_features, dtype=torch.float32, device=device)
            )
        else:
            groups = in_features // group
            self.register_buffer(
                "qweight",
                torch.empty(out_features, in_features // 2, dtype=torch.uint8, device=device),
            )
            self.register_buffer(
                "qscale", torch.empty(out_features, groups, dtype=torch.float32, device=device)
            )
            self.register_buffer(
                "qmin", torch.empty(out_features, groups, dtype=torch.float32, device=device)
            )
        if bias:
            self.register_buffer("bias", torch.empty(out_features, device=device))
        else:
            self.bias = None
        self._kernel: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def from_float(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        bits: int = 8,
        group: int = 128,
        kernel: str = "fbgemm",
    ) -> QuantLinear:
        """Quantise a float ``weight`` ``[out, in]`` (and keep ``bias`` in float32)."""
        out, inputs = weight.shape
        layer = cls(
            inputs, out, bias=bias is not None, bits=bits, group=group, kernel=kernel, device="meta"
        )
        layer.load_quantized(weight, bias)
        return layer

    def load_quantized(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Set the buffers from a float ``weight`` (replacing whatever they held)."""
        if self.bits == 8:
            q8 = qk.quantize_int8(weight)
            self.qweight, self.qscale = q8.values, q8.scales
        else:
            q4 = qk.quantize_int4(weight, self.group)
            self.qweight, self.qscale, self.qmin = q4.values, q4.scales, q4.minimums
        if bias is not None:
            self.bias = bias.detach().float().contiguous()
        self._kernel = None

    def int8_weights(self) -> qk.Int8Weights:
        """The int8 weights (``bits=8`` only)."""
        return qk.Int8Weights(self.qweight, self.qscale)

    def int4_weights(self) -> qk.Int4Weights:
        """The 4-bit weights (``bits=4`` only)."""
        return qk.Int4Weights(self.qweight, self.qscale, self.qmin, self.group)

    def dequantized(self) -> torch.Tensor:
        """The float32 weight matrix this layer stands for."""
        if self.bits == 8:
            return qk.dequantize_int8(self.int8_weights())
        return qk.dequantize_int4(self.int4_weights())

    def prepare(self, *, release: bool = False) -> None:
        """Build the kernel. ``release``: drop the portable buffers where the kernel holds
        its own copy of the weights (the layer can then no longer be saved)."""
        if self._kernel is not None:
            return
        bias = self.bias
        if self.bits == 4:
            kernel4 = qk.WeightOnlyInt4(self.int4_weights())
            self._kernel = kernel4 if bias is None else _with_bias(kernel4, bias)
            copies = True
        elif self.kernel_name == "fbgemm":
            self._kernel = qk.PackedInt8(self.int8_weights(), bias)
            copies = True
        elif self.kernel_name == "int-mm":
            self._kernel = qk.PerTokenInt8(self.int8_weights(), bias)
            copies = False
        elif self.kernel_name == "weight-only":
            kernel8 = qk.WeightOnlyInt8(self.int8_weights())
            self._kernel = kernel8 if bias is None else _with_bias(kernel8, bias)
            copies = False
        else:
            raise ValueError(f"unknown int8 kernel {self.kernel_name!r}")
        if release and copies:
            self.qweight = torch.empty(0, dtype=self.qweight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel is None:
            self.prepare()
        assert self._kernel is not None
        return self._kernel(x).to(x.dtype)

    def extra_repr(self) -> str:
        kind = f"int{self.bits}" + (f" g{self.group}" if self.bits == 4 else f" {self.kernel_name}")
        return (
            f"in={self.in_features}, out={self.out_features}, {kind}, bias={self.bias is not None}"
        )


def _with_bias(
    kernel: Callable[[torch.Tensor], torch.Tensor], bias: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    def call(x: torch.Tensor) -> torch.Tensor:
        return kernel(x) + bias.to(x.dtype)

    return call


class QuantEmbedding(nn.Module):
    """An embedding table of ``num_rows`` rows stored as int8 with one scale per row
    (``bits=8``), or as 4-bit values in groups of ``group`` with a scale and a minimum
    per group (``bits=4``), multiplied by ``embed_scale`` on lookup (Gemma's scaled
    embeddings). With ``vocab_size`` given, the table is trimmed: a ``rows`` buffer maps
    each of ``vocab_size`` token ids to its row."""

    qweight: torch.Tensor
    qscale: torch.Tensor
    qmin: torch.Tensor | None
    rows: torch.Tensor | None

    def __init__(
        self,
        num_rows: int,
        dim: int,
        *,
        bits: int = 8,
        group: int = 128,
        embed_scale: float = 1.0,
        vocab_size: int | None = None,
        device: Any = None,
    ) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"an embedding table is stored in 8 or 4 bits, not {bits}")
        if bits == 4 and dim % group:
            raise ValueError(f"embedding width {dim} does not divide by the group size {group}")
        self.num_rows = num_rows
        self.dim = dim
        self.bits = bits
        self.group = group
        self.embed_scale = float(embed_scale)
        if bits == 8:
            values = torch.empty(num_rows, dim, dtype=torch.int8, device=device)
            scales = torch.empty(num_rows, dtype=torch.float32, device=device)
            self.register_buffer("qweight", values)
            self.register_buffer("qscale", scales)
            self.qmin = None
        else:
            groups = (num_rows, dim // group)
            values = torch.empty(num_rows, dim // 2, dtype=torch.uint8, device=device)
            self.register_buffer("qweight", values)
            self.register_buffer("qscale", torch.empty(groups, dtype=torch.float32, device=device))
            self.register_buffer("qmin", torch.empty(groups, dtype=torch.float32, device=device))
        if vocab_size is not None:
            self.register_buffer("rows", torch.zeros(vocab_size, dtype=torch.int32, device=device))
        else:
            self.rows = None

    def set_rows(self, first: int, table: torch.Tensor) -> None:
        """Quantise float rows ``table`` into rows ``first…`` of this table."""
        end = first + table.shape[0]
        if self.bits == 8:
            q8 = qk.quantize_int8(table)
            self.qweight[first:end], self.qscale[first:end] = q8.values, q8.scales
            return
        assert self.qmin is not None
        q4 = qk.quantize_int4(table, self.group)
        self.qweight[first:end], self.qscale[first:end] = q4.values, q4.scales
        self.qmin[first:end] = q4.minimums

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids if self.rows is None else self.rows[input_ids].long()
        if self.bits == 8:
            scale = self.qscale[ids].mul_(self.embed_scale)
            return self.qweight[ids].float().mul_(scale.unsqueeze(-1))
        assert self.qmin is not None
        flat = ids.reshape(-1)
        picked = qk.Int4Weights(self.qweight[flat], self.qscale[flat], self.qmin[flat], self.group)
        return qk.dequantize_int4(picked).mul_(self.embed_scale).reshape(*ids.shape, self.dim)

    def extra_repr(self) -> str:
        trimmed = "" if self.rows is None else f", trimmed from {self.rows.shape[0]} ids"
        kind = "int8" if self.bits == 8 else f"4-bit in groups of {self.group}"
        return f"{self.num_rows} x {self.dim}, {kind}{trimmed}"
