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
bfloat16 on GPUs that support it, and float32 on older GPUs (T4, V100) and on Apple MPS:
not float16, because Gemma 3 models overflow in it (activations past 65,504 turn into
inf/NaN; transformers issue #39972) and the adapter was trained in bfloat16 — ask for
``--dtype fp16`` only where it was checked. On the CPU it is
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
from dataclasses import dataclass
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

    ``auto``: bfloat16 on GPUs that support it, float32 on other GPUs and MPS (float16
    overflows in Gemma 3 models: module docstring); on the
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
            return "float32"
        if bf16_supported is None:
            bf16_supported = _cuda_bf16_supported(device)
        return "bfloat16" if bf16_supported else "float32"
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


# ------------------------------------------------------------------- attention

#: transformers' attention kernels subplug may choose, fastest first.
ATTENTION_KERNELS = ("flash_attention_3", "flash_attention_2", "sdpa", "eager")


def choose_attention(
    device: str,
    dtype: str,
    *,
    capability: tuple[int, int] | None,
    installed: frozenset[str],
    requested: str | None = None,
) -> str:
    """The attention kernel for a model on ``device`` computing in ``dtype``. Pure.

    On a CUDA GPU in bfloat16/float16 the fastest the installed stack offers:
    FlashAttention 3 on Hopper (compute capability 9.x), FlashAttention 2 on Ampere
    and later (8.0+), when their packages are ``installed``; PyTorch's ``sdpa``
    everywhere else (CPU, MPS, float32, older GPUs). ``requested``
    (``SUBPLUG_ATTENTION``) wins when it names a kernel in :data:`ATTENTION_KERNELS`.
    """
    if requested:
        if requested not in ATTENTION_KERNELS:
            raise SubplugError(
                "bad-attention",
                f"Unknown attention kernel {requested!r} in SUBPLUG_ATTENTION.",
                f"Use one of: {', '.join(ATTENTION_KERNELS)}, or unset it.",
            )
        return requested
    if device_kind(device) != "cuda" or dtype not in ("bfloat16", "float16"):
        return "sdpa"
    major = capability[0] if capability else 0
    if major == 9 and "flash_attention_3" in installed:
        return "flash_attention_3"
    if major >= 8 and "flash_attention_2" in installed:
        return "flash_attention_2"
    return "sdpa"


def resolve_attention(device: str, dtype: str) -> str:
    """:func:`choose_attention` with the facts asked from torch and transformers."""
    import os

    capability = None
    installed: set[str] = set()
    if device_kind(device) == "cuda":
        import torch
        from transformers.utils import import_utils

        index = int(device.split(":", 1)[1]) if ":" in device else 0
        capability = tuple(torch.cuda.get_device_capability(index))
        for name in ("flash_attention_3", "flash_attention_2"):
            check = getattr(import_utils, f"is_{name.replace('attention', 'attn')}_available", None)
            if check is not None and check():
                installed.add(name)
    return choose_attention(
        device,
        dtype,
        capability=capability,  # type: ignore[arg-type]
        installed=frozenset(installed),
        requested=os.environ.get("SUBPLUG_ATTENTION") or None,
    )


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

    @property
    def least_memory(self) -> bool:
        """int4, the setting for the least memory: besides its 4-bit tables, the backend
        gives freed memory back to the system after each batch instead of keeping it
        for reuse (faster, but a higher peak: docs/performance.md)."""
        return self.bits == 4


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


__all__ = [
    "CPU_DTYPE_NATIVE_BF16",
    "CPU_DTYPE_OTHER",
    "apply_compute_policy",
    "choose_device",
    "choose_dtype",
    "configure_threads",
    "cpu_native_bf16",
    "device_kind",
    "dtype_bytes",
    "physical_cores",
    "threads_for",
    "resolve_device",
    "torch_dtype",
    "validate_options",
]
