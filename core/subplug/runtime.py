"""Where and how a model runs: device, dtype, threads, memory, batch size, OOM back-off.

The choices are pure functions of facts passed in (``choose_device``, ``choose_dtype``,
``batch_size_for``), with thin wrappers that ask torch and the operating system for those
facts, so the logic is tested on any machine.

Device: ``auto`` picks CUDA, then Apple MPS, then the CPU; ``cuda`` / ``cuda:N`` / ``mps``
that is not there is a :class:`~subplug.errors.SubplugError` with a hint.

Quantisation: ``auto`` stores a model's large matrices as int8 on the CPU (and keeps
only the vocabulary English and Mongolian need), which bench/rtf.py measured 3-5x faster
than any float mode there, in half the memory (docs/performance.md); on a GPU it keeps
the float weights. Small models (the tiny test model) are never quantised by ``auto``:
there is nothing to gain. See :func:`choose_quantize` and :mod:`subplug.quant`.

Dtype (of an unquantised model; a quantised one computes in float32): ``auto`` is
bfloat16 on GPUs that support it, float16 on older GPUs and on MPS. On the CPU it is
bfloat16 on CPUs that multiply it natively (AVX512-BF16 or AMX), and ``bf16-upcast`` on
the others: bfloat16 weights (half the memory of float32) with every product of two or
more rows computed in float32, which AVX2-only CPUs do several times faster than
bfloat16 (one-row products stay bfloat16). float32 is never the CPU default: E2B needs
~21 GiB of RAM in float32 against ~10.5 GiB in bf16.

Memory: the model's size comes from its config on the meta device (nothing allocated),
plus an activation budget per batch item; a model that cannot fit is refused before
loading with ``not-enough-memory``. The batch size follows from free memory, and
:func:`run_with_oom_backoff` halves it on an out-of-memory error and retries, never
dropping an item.

torch is imported inside the functions that need it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from subplug.errors import SubplugError

if TYPE_CHECKING:
    import torch

    from subplug.types import BackendOptions

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

GIB = 1024**3

#: Accepted ``--dtype`` spellings and the canonical names they mean.
DTYPE_ALIASES = {
    "auto": "auto",
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bf16-upcast": "bf16-upcast",
}

#: What ``auto`` means on a CPU with native bfloat16 arithmetic, and on one without
#: (see docs/performance.md for the measurements).
CPU_DTYPE_NATIVE_BF16 = "bfloat16"
CPU_DTYPE_OTHER = "bf16-upcast"

#: /proc/cpuinfo flags of x86 units that multiply bfloat16 natively.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

#: Largest batch :func:`choose_batch_size` picks by itself, per device kind (free memory
#: decides below that). On the CPU decoding is bound by reading the weights, so larger
#: batches pay: E2B's model time per 30 s chunk fell 3x from batch 1 to 4 and another
#: 1.5x to 16 (docs/performance.md).
MAX_AUTO_BATCH = {"cuda": 16, "mps": 8, "cpu": 16}

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")

#: Accepted ``--quantize`` values, and what they store the large matrices as.
QUANTIZE_CHOICES = ("auto", "none", "int8", "int4")
QUANTIZE_BITS = {"int8": 8, "int4": 4}
#: Accepted ``--vocab`` values.
VOCAB_CHOICES = ("auto", "full", "en-mn")


# ------------------------------------------------------------------ validation


def validate_options(options: BackendOptions) -> None:
    """Check device, dtype, batch size and threads before anything is loaded."""
    match = _DEVICE.match(options.device.strip().lower())
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise SubplugError(
            "bad-device",
            f"Unknown device {options.device!r}.",
            "Use auto, cpu, cuda, cuda:N or mps.",
        )
    if options.dtype.strip().lower() not in DTYPE_ALIASES:
        raise SubplugError(
            "bad-dtype",
            f"Unknown dtype {options.dtype!r}.",
            "Use auto, float32, bfloat16, float16 or bf16-upcast.",
        )
    if options.batch_size is not None and options.batch_size < 1:
        raise SubplugError(
            "bad-batch-size",
            f"The batch size must be at least 1, not {options.batch_size}.",
            "Leave --batch-size out to size batches from free memory.",
        )
    if options.threads is not None and options.threads < 1:
        raise SubplugError("bad-threads", "The thread count must be at least 1.", None)
    if options.quantize.strip().lower() not in QUANTIZE_CHOICES:
        raise SubplugError(
            "bad-quantize",
            f"Unknown quantisation {options.quantize!r}.",
            "Use auto, none, int8 or int4 (int8 is the fast default on a CPU).",
        )
    if options.vocab.strip().lower() not in VOCAB_CHOICES:
        raise SubplugError(
            "bad-vocab",
            f"Unknown vocabulary setting {options.vocab!r}.",
            "Use auto, full or en-mn.",
        )


# ---------------------------------------------------------------------- device


def choose_device(spec: str, *, cuda_count: int, mps_available: bool) -> str:
    """The device to use for ``spec`` given what the machine has. Pure.

    Returns ``cuda:N``, ``mps`` or ``cpu``.
    """
    match = _DEVICE.match(spec.strip().lower())
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise SubplugError(
            "bad-device", f"Unknown device {spec!r}.", "Use auto, cpu, cuda, cuda:N or mps."
        )
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if cuda_count > 0:
            return "cuda:0"
        return "mps" if mps_available else "cpu"
    if kind == "cpu":
        return "cpu"
    if kind == "mps":
        if not mps_available:
            raise SubplugError(
                "no-mps",
                "--device mps was asked for, but Apple's Metal (MPS) backend is not available.",
                "Use --device auto or --device cpu.",
            )
        return "mps"
    if cuda_count == 0:
        raise SubplugError(
            "no-cuda",
            "--device cuda was asked for, but PyTorch sees no CUDA GPU.",
            "Check the NVIDIA driver (nvidia-smi) and that the installed torch is a CUDA "
            "build (python -c 'import torch; print(torch.version.cuda)'), or use "
            "--device cpu.",
        )
    number = int(index or 0)
    if number >= cuda_count:
        raise SubplugError(
            "no-cuda",
            f"--device cuda:{number} was asked for, but there "
            f"{'is only 1 CUDA GPU' if cuda_count == 1 else f'are {cuda_count} CUDA GPUs'}.",
            f"Use cuda:0 … cuda:{cuda_count - 1}.",
        )
    return f"cuda:{number}"


def resolve_device(spec: str) -> str:
    """:func:`choose_device` with the facts asked from torch."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return choose_device(
        spec,
        cuda_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
        mps_available=bool(mps is not None and mps.is_available()),
    )


def device_kind(device: str) -> str:
    """``cuda``, ``mps`` or ``cpu``."""
    return device.split(":", 1)[0]


# ----------------------------------------------------------------------- dtype


def choose_dtype(spec: str, device: str, *, bf16_supported: bool | None = None) -> str:
    """Canonical dtype name for ``spec`` on ``device``. Pure when ``bf16_supported`` is
    given (``None``: ask torch for CUDA devices, /proc/cpuinfo for the CPU).

    ``auto``: bfloat16 on GPUs that support it, float16 on other GPUs and MPS; on the
    CPU :data:`CPU_DTYPE_NATIVE_BF16` when it has native bfloat16 arithmetic, else
    :data:`CPU_DTYPE_OTHER`. float16 on the CPU is refused (slow and unsupported by many
    CPU kernels); ``bf16-upcast`` is CPU-only.
    """
    name = DTYPE_ALIASES.get(spec.strip().lower())
    if name is None:
        raise SubplugError(
            "bad-dtype",
            f"Unknown dtype {spec!r}.",
            "Use auto, float32, bfloat16, float16 or bf16-upcast.",
        )
    kind = device_kind(device)
    if name == "auto":
        if kind == "cpu":
            if bf16_supported is None:
                bf16_supported = cpu_native_bf16()
            return CPU_DTYPE_NATIVE_BF16 if bf16_supported else CPU_DTYPE_OTHER
        if kind == "mps":
            return "float16"
        if bf16_supported is None:
            bf16_supported = _cuda_bf16_supported(device)
        return "bfloat16" if bf16_supported else "float16"
    if name == "float16" and kind == "cpu":
        raise SubplugError(
            "bad-dtype",
            "float16 is not supported on the CPU.",
            "Use --dtype auto, bf16, bf16-upcast or fp32 on the CPU.",
        )
    if name == "bf16-upcast" and kind != "cpu":
        raise SubplugError(
            "bad-dtype",
            "bf16-upcast is a CPU mode.",
            "On a GPU use --dtype auto, bfloat16 or float16.",
        )
    return name


def cpu_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU multiplies bfloat16 natively (x86 AVX512-BF16 or AMX), read from
    ``cpuinfo`` (the text of /proc/cpuinfo; read here when ``None``). False when unknown
    (other systems), which picks the mode that is safe everywhere."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return bool(NATIVE_BF16_FLAGS & set(value.split()))
    return False


def _cuda_bf16_supported(device: str) -> bool:
    import torch

    index = int(device.split(":", 1)[1]) if ":" in device else 0
    major, _minor = torch.cuda.get_device_capability(index)
    return major >= 8


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype the weights are stored in for a canonical dtype name."""
    import torch

    return {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "bf16-upcast": torch.bfloat16,
    }[name]


def dtype_bytes(name: str) -> int:
    """Bytes per stored weight for a canonical dtype name."""
    return 4 if name == "float32" else 2


# ----------------------------------------------------------------- quantisation


@dataclass(frozen=True)
class QuantChoice:
    """What :func:`choose_quantize` decided."""

    bits: int | None
    """8 or 4 for a quantised model, ``None`` for float weights."""
    trim_vocab: bool
    """Keep only the tokens English and Mongolian need."""
    kernel: str | None
    """The int8 kernel (``fbgemm``, ``int-mm`` or ``weight-only``; ``None`` unquantised)."""

    @property
    def name(self) -> str:
        """``none``, ``int8``, ``int4-trim``…: for logs and file names."""
        if self.bits is None:
            return "none"
        return f"int{self.bits}" + ("-trim" if self.trim_vocab else "")


def choose_quantize(
    spec: str,
    vocab: str,
    device: str,
    *,
    params: int | None,
    dtype_spec: str = "auto",
    kernels: frozenset[str] | None = None,
) -> QuantChoice:
    """The quantisation for ``spec`` (``--quantize``) and ``vocab`` (``--vocab``) on
    ``device``, for a model of ``params`` parameters. Pure when ``kernels`` (the
    available kernel names, :func:`subplug.quant.kernels.available`) is given.

    ``auto``: int8 on the CPU for models of :data:`SMALL_MODEL_PARAMS` parameters or
    more whose ``dtype_spec`` is ``auto`` (an explicit ``--dtype`` asks for float
    weights); no quantisation on GPUs (their float kernels are fast and memory is
    checked) or without an int8 kernel. Quantised kernels are CPU kernels: int8/int4
    on a GPU is refused with a hint, as is int4 where torch has no int4 CPU kernel.
    The vocabulary is trimmed (``auto``) whenever the model is quantised.
    """
    name = spec.strip().lower()
    if name not in QUANTIZE_CHOICES:
        raise SubplugError(
            "bad-quantize",
            f"Unknown quantisation {spec!r}.",
            "Use auto, none, int8 or int4 (int8 is the fast default on a CPU).",
        )
    vocab_name = vocab.strip().lower()
    if vocab_name not in VOCAB_CHOICES:
        raise SubplugError(
            "bad-vocab", f"Unknown vocabulary setting {vocab!r}.", "Use auto, full or en-mn."
        )
    kind = device_kind(device)
    if kernels is None:
        from subplug.quant.kernels import available

        kernels = available() if kind == "cpu" else frozenset()
    bits: int | None = None
    if name == "auto":
        small = params is not None and params < SMALL_MODEL_PARAMS
        if (
            kind == "cpu"
            and not small
            and dtype_spec.strip().lower() == "auto"
            and ("int8" in kernels)
        ):
            bits = 8
    elif name != "none":
        bits = QUANTIZE_BITS[name]
        if kind != "cpu":
            raise SubplugError(
                "quantize-needs-cpu",
                f"--quantize {name} runs on the CPU; subplug has no {name} kernels for "
                f"{kind.upper()}.",
                "On a GPU use --quantize none (or auto), or run on the CPU with --device cpu.",
            )
        if f"int{bits}" not in kernels:
            raise SubplugError(
                "quantize-unsupported",
                f"This torch build has no {name} kernel for this CPU.",
                "Use --quantize int8"
                if bits == 4 and "int8" in kernels
                else "Use --quantize none.",
            )
        if dtype_spec.strip().lower() not in ("auto", "float32", "fp32"):
            raise SubplugError(
                "bad-dtype",
                f"--dtype {dtype_spec} is for float weights; with --quantize {name} the "
                "rest of the model computes in float32.",
                f"Leave out --dtype, or use --quantize none to run in {dtype_spec}.",
            )
    if vocab_name == "en-mn" and bits is None:
        raise SubplugError(
            "vocab-needs-quantize",
            "--vocab en-mn trims a quantised model's vocabulary; this model is not quantised.",
            "Add --quantize int8, or leave --vocab at auto.",
        )
    trim = bits is not None and vocab_name != "full"
    kernel = None
    if bits is not None:
        from subplug.quant.kernels import INT8_KERNEL_ORDER

        kernel = next(k for k in INT8_KERNEL_ORDER if k in kernels)
    return QuantChoice(bits, trim, kernel)


# --------------------------------------------------------------------- threads


def physical_cores() -> int:
    """Physical CPU cores available to this process (hyper-threads not counted)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for block in text.split("\n\n"):
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in block.splitlines())
        )
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return max(1, min(usable, len(cores) or usable))


#: Models smaller than this many parameters run on one CPU thread by default.
SMALL_MODEL_PARAMS = 20_000_000


def threads_for(threads: int | None, *, cores: int, params: int | None = None) -> int:
    """The CPU thread count to use. Pure.

    ``threads`` when given; otherwise one per physical core, except for models under
    :data:`SMALL_MODEL_PARAMS` parameters (the tiny test model), whose matrices are too
    small to split: there, synchronising threads costs more than the math, and on a busy
    machine OpenMP's spin-waiting makes it many times slower (see docs/performance.md).
    """
    if threads is not None:
        return threads
    if params is not None and params < SMALL_MODEL_PARAMS:
        return 1
    return max(1, cores)


def configure_threads(device: str, threads: int | None, *, params: int | None = None) -> int | None:
    """On the CPU, set torch's thread count (:func:`threads_for`) for a model of
    ``params`` parameters. Returns the count set, or ``None`` off the CPU."""
    if device_kind(device) != "cpu":
        return None
    import torch

    count = threads_for(threads, cores=physical_cores(), params=params)
    torch.set_num_threads(count)
    return count


# ---------------------------------------------------------------------- memory


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
        hint += ", or use --quantize int4 (about half the memory of int8)"
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


# ------------------------------------------------------------- compute policy


def apply_compute_policy(model: Any, dtype: str, *, min_rows: int = 16) -> int:
    """For ``bf16-upcast``: make every ``nn.Linear`` of ``model`` compute in float32 when
    it multiplies at least ``min_rows`` rows (prefill, audio encoder) and in bfloat16
    otherwise (decoding). Weights stay bfloat16. Returns the layers changed (0 for other
    dtypes). See docs/performance.md for why."""
    if dtype != "bf16-upcast":
        return 0
    from torch import nn

    def forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(1, x.shape[-1])
        if rows >= min_rows:
            bias = None if self.bias is None else self.bias.float()
            out = nn.functional.linear(x.float(), self.weight.float(), bias)
            return out.to(x.dtype)
        return nn.functional.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)

    changed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.forward = forward.__get__(module, nn.Linear)  # type: ignore[method-assign]
            changed += 1
    return changed


def describe_bytes(count: int) -> str:
    """``1.2 GiB`` / ``340 MiB`` for messages."""
    if count >= GIB:
        return f"{count / GIB:.1f} GiB"
    return f"{count / 1024**2:.0f} MiB"


__all__ = [
    "CPU_DTYPE_NATIVE_BF16",
    "CPU_DTYPE_OTHER",
    "MemoryEstimate",
    "apply_compute_policy",
    "batch_size_for",
    "check_fits",
    "choose_batch_size",
    "choose_device",
    "choose_dtype",
    "configure_threads",
    "cpu_native_bf16",
    "describe_bytes",
    "device_kind",
    "dtype_bytes",
    "free_memory",
    "is_out_of_memory",
    "physical_cores",
    "threads_for",
    "release_memory",
    "resolve_device",
    "run_with_oom_backoff",
    "torch_dtype",
    "validate_options",
]
