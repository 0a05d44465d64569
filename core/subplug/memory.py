"""Memory: what is free, whether a model fits, how large a batch can be, and what to do
when an accelerator runs out anyway.

The choices are pure functions of facts passed in (``batch_size_for``, ``check_fits``
with ``free`` given), with thin wrappers that ask torch and the operating system for
those facts. A model that cannot fit is refused before loading with
``not-enough-memory``; the batch size follows from free memory, and
:func:`run_with_oom_backoff` halves it on an out-of-memory error and retries, never
dropping an item. Model-specific sizes come from the backend
(:func:`subplug.backends.gemma3n_model.estimate_memory`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from subplug.errors import SubplugError
from subplug.runtime import device_kind

T = TypeVar("T")
R = TypeVar("R")

GIB = 1024**3

#: Largest batch :func:`choose_batch_size` picks by itself, per device kind (free memory
#: decides below that). On the CPU decoding is bound by reading the weights, so larger
#: batches pay: E2B's model time per 30 s chunk fell 3x from batch 1 to 4 and another
#: 1.5x to 16 (docs/performance.md). On a GPU free memory decides (E2B in bf16: about 27
#: chunks on 24 GiB, 140 on 80 GiB); 256 only bounds a batch's worst-case wait.
MAX_AUTO_BATCH = {"cuda": 256, "mps": 8, "cpu": 16}


@dataclass(frozen=True)
class MemoryEstimate:
    """How much memory a model needs before it runs."""

    params: int
    """Parameters that will be built (audio-only: no vision tower)."""
    weight_bytes: int
    per_item_bytes: int
    """Activations, KV cache and audio-encoder work space for one batch item."""
    dtype: str
    quantized: str = "none"
    """The quantisation the weight bytes were counted for (:attr:`QuantChoice.name`)."""


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return values


def _cgroup_free() -> int | None:
    """Memory left under a cgroup v2 limit (containers), if there is one."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        used = int((base / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(0, int(limit) - used)


def free_memory(device: str) -> int | None:
    """Bytes free for a new model on ``device`` (``None``: unknown).

    CUDA: ``torch.cuda.mem_get_info``. CPU: ``MemAvailable`` from /proc/meminfo (and a
    cgroup limit when one applies). MPS: the recommended working-set size.
    """
    kind = device_kind(device)
    if kind == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if kind == "mps":
        import torch

        try:
            total = torch.mps.recommended_max_memory()
            return int(total - torch.mps.current_allocated_memory())
        except (AttributeError, RuntimeError):
            return None
    available = _meminfo().get("MemAvailable")
    cgroup = _cgroup_free()
    if available is None:
        return cgroup
    return min(available, cgroup) if cgroup is not None else available


def reserve_bytes(device: str, free: int) -> int:
    """Memory kept aside for the runtime itself (CUDA context, allocator slack, the OS)."""
    if device_kind(device) == "cpu":
        return min(2 * GIB, max(GIB // 2, free // 10))
    return GIB // 2 + free // 20


def check_fits(estimate: MemoryEstimate, device: str, free: int | None = None) -> None:
    """Raise ``not-enough-memory`` when the weights plus one batch item cannot fit."""
    if free is None:
        free = free_memory(device)
    if free is None:
        return
    need = estimate.weight_bytes + estimate.per_item_bytes + reserve_bytes(device, free)
    if need <= free:
        return
    where = "RAM" if device_kind(device) == "cpu" else f"{device} memory"
    hint = "Close other programs using it"
    if device_kind(device) != "cpu":
        hint += ", or run on the CPU with --device cpu"
    elif estimate.quantized == "none":
        if estimate.dtype == "float32":
            hint += ", halve the weights' size with --dtype bf16-upcast,"
        hint += " or store the weights as integers with --quantize int8 (or int4)"
    elif estimate.quantized.startswith("int8"):
        hint += ", or use --quantize int4 (about two thirds of int8's memory)"
    raise SubplugError(
        "not-enough-memory",
        f"The model needs about {need / GIB:.1f} GiB of {where} "
        f"({estimate.params / 1e9:.2f} B parameters as "
        f"{estimate.dtype if estimate.quantized == 'none' else estimate.quantized}), "
        f"but only {free / GIB:.1f} GiB is free.",
        hint + ".",
    )


def batch_size_for(
    estimate: MemoryEstimate, device: str, free: int | None, *, maximum: int | None = None
) -> int:
    """Largest batch whose activations fit next to the weights, within ``maximum``
    (default :data:`MAX_AUTO_BATCH` for the device kind). ``free`` is measured before
    the weights are loaded. Pure."""
    cap = maximum or MAX_AUTO_BATCH[device_kind(device)]
    if free is None:
        return max(1, min(cap, 4))
    spare = free - estimate.weight_bytes - reserve_bytes(device, free)
    return max(1, min(cap, spare // max(1, estimate.per_item_bytes)))


def choose_batch_size(estimate: MemoryEstimate, device: str) -> int:
    """:func:`batch_size_for` with free memory measured now, after loading: the loaded
    weights are already out of ``free``, so they are not subtracted twice."""
    free = free_memory(device)
    if free is None:
        return batch_size_for(estimate, device, None)
    loaded = replace(estimate, weight_bytes=0)
    return batch_size_for(loaded, device, free)


# ----------------------------------------------------------------- OOM back-off


def is_out_of_memory(error: BaseException) -> bool:
    """True for an accelerator or allocator out-of-memory error."""
    try:
        import torch

        if isinstance(error, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    message = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in message.lower() or "can't allocate memory" in message
    )


def release_memory(device: str) -> None:
    """Return cached accelerator memory to the driver (after an OOM, or on close)."""
    import gc

    gc.collect()
    kind = device_kind(device)
    import torch

    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif kind == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def run_with_oom_backoff(
    items: Sequence[T],
    batch_size: int,
    fn: Callable[[Sequence[T]], Sequence[R]],
    *,
    on_backoff: Callable[[int], None] | None = None,
    empty_cache: Callable[[], None] | None = None,
) -> list[R]:
    """Apply ``fn`` to ``items`` in batches of ``batch_size``, in order.

    When a batch fails with an out-of-memory error, the cache is emptied, the batch size
    halves (``on_backoff(new_size)`` is told) and the same items are tried again; the
    smaller size is kept for the rest. No item is dropped or done twice after success.
    If a batch of one still runs out of memory, a ``out-of-memory`` SubplugError says so.
    ``fn`` must return one result per item.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    clear = empty_cache or _empty_cuda_cache
    results: list[R] = []
    size = batch_size
    start = 0
    while start < len(items):
        batch = items[start : start + size]
        try:
            out = list(fn(batch))
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            del error
            clear()
            if size == 1:
                raise SubplugError(
                    "out-of-memory",
                    "Out of memory even with one chunk at a time.",
                    "Free memory on the device (close other programs), use a smaller dtype, "
                    "or run with --device cpu.",
                ) from None
            size = max(1, size // 2)
            if on_backoff is not None:
                on_backoff(size)
            continue
        if len(out) != len(batch):
            raise RuntimeError(f"batch function returned {len(out)} results for {len(batch)}")
        results.extend(out)
        start += len(batch)
    return results


def _empty_cuda_cache() -> None:
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe_bytes(count: int) -> str:
    """``1.2 GiB`` / ``340 MiB`` for messages."""
    if count >= GIB:
        return f"{count / GIB:.1f} GiB"
    return f"{count / 1024**2:.0f} MiB"
