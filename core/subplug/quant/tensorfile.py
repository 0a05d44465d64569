"""Read safetensors files one tensor — or one block of rows — at a time, without mmap.

The safetensors format is an 8-byte little-endian header length, a JSON header naming
each tensor's dtype, shape and byte range, then the raw data. Reading with plain file
reads (not a memory map) means the bytes read are the only bytes held: a quantising load
of a 10 GB checkpoint keeps its resident memory at the quantised model's size, and a
4 GB embedding table can be quantised (and trimmed) a block of rows at a time.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}

#: Rows read per block by :meth:`TensorEntry.row_blocks` (about 64 MiB of bf16 at 8k).
BLOCK_BYTES = 64 << 20


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are."""

    file: Path
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    """Byte offset of the data in the file."""
    nbytes: int

    @property
    def row_bytes(self) -> int:
        rows = self.shape[0] if self.shape else 1
        return self.nbytes // max(1, rows)

    def read(self) -> torch.Tensor:
        """The whole tensor."""
        return self.read_rows(0, self.shape[0] if self.shape else 1).reshape(self.shape)

    def read_rows(self, first: int, end: int) -> torch.Tensor:
        """Rows ``first:end`` of the tensor (along its first dimension)."""
        count = (end - first) * self.row_bytes
        buffer = bytearray(count)
        with self.file.open("rb") as handle:
            handle.seek(self.start + first * self.row_bytes)
            if handle.readinto(buffer) != count:
                raise OSError(f"{self.file} ends inside tensor {self.name}")
        flat = (
            torch.frombuffer(buffer, dtype=self.dtype)
            if count
            else torch.empty(0, dtype=self.dtype)
        )
        return flat.reshape(end - first, *self.shape[1:]) if self.shape else flat

    def row_blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first_row, rows)`` blocks of at most :data:`BLOCK_BYTES` covering the tensor."""
        rows = self.shape[0] if self.shape else 1
        step = max(1, BLOCK_BYTES // max(1, self.row_bytes))
        for first in range(0, rows, step):
            yield first, self.read_rows(first, min(rows, first + step))


def entries(file: Path) -> list[TensorEntry]:
    """The tensors of one safetensors ``file``, in file order."""
    with file.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise OSError(f"{file} is not a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        header: dict[str, Any] = json.loads(handle.read(length))
    base = 8 + length
    found = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise OSError(f"{file}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        found.append(
            TensorEntry(file, name, dtype, tuple(info["shape"]), base + begin, end - begin)
        )
    return sorted(found, key=lambda e: e.start)
