"""The runtime: device and dtype choice, threads, memory estimates and checks, batch
sizing, and CUDA out-of-memory back-off (with an injected out-of-memory error: there is no
GPU here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from subplug import memory, runtime
from subplug.backends import gemma3n_model
from subplug.errors import SubplugError
from subplug.types import BackendOptions

GIB = memory.GIB


# ------------------------------------------------------------------------- device


@pytest.mark.parametrize(
    ("spec", "cuda", "mps", "expected"),
    [
        ("auto", 2, True, "cuda:0"),
        ("auto", 0, True, "mps"),
        ("auto", 0, False, "cpu"),
        ("cpu", 1, True, "cpu"),
        ("cuda", 1, False, "cuda:0"),
        ("CUDA:1", 2, False, "cuda:1"),
        ("mps", 0, True, "mps"),
    ],
)
def test_choose_device(spec: str, cuda: int, mps: bool, expected: str) -> None:
    assert runtime.choose_device(spec, cuda_count=cuda, mps_available=mps) == expected


@pytest.mark.parametrize(
    ("spec", "cuda", "mps", "reference", "hint_part"),
    [
        ("cuda", 0, False, "no-cuda", "--device cpu"),
        ("cuda:2", 2, False, "no-cuda", "cuda:0 … cuda:1"),
        ("mps", 0, False, "no-mps", "--device cpu"),
        ("tpu", 0, False, "bad-device", "auto, cpu, cuda"),
        ("cpu:1", 0, False, "bad-device", "auto, cpu, cuda"),
    ],
)
def test_unavailable_or_unknown_device_is_a_clear_error(
    spec: str, cuda: int, mps: bool, reference: str, hint_part: str
) -> None:
    with pytest.raises(SubplugError) as err:
        runtime.choose_device(spec, cuda_count=cuda, mps_available=mps)
    assert err.value.reference == reference
    assert hint_part in (err.value.hint or "")


def test_resolve_device_on_this_machine_is_the_cpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this test describes a machine without CUDA")
    assert runtime.resolve_device("auto") == "cpu"
    with pytest.raises(SubplugError) as err:
        runtime.resolve_device("cuda")
    assert err.value.reference == "no-cuda"


# -------------------------------------------------------------------------- dtype


def test_gpu_dtype_follows_bf16_support() -> None:
    assert runtime.choose_dtype("auto", "cuda:0", bf16_supported=True) == "bfloat16"
    # float16 overflows in Gemma 3 models: GPUs without bf16 (T4, V100) and MPS get float32
    assert runtime.choose_dtype("auto", "cuda:0", bf16_supported=False) == "float32"
    assert runtime.choose_dtype("auto", "mps") == "float32"
    assert runtime.choose_dtype("fp16", "cuda:0", bf16_supported=True) == "float16"


def test_cpu_dtype_follows_native_bf16_arithmetic() -> None:
    assert runtime.choose_dtype("auto", "cpu", bf16_supported=True) == "bfloat16"
    assert runtime.choose_dtype("auto", "cpu", bf16_supported=False) == "bf16-upcast"
    assert runtime.choose_dtype("fp32", "cpu") == "float32"
    assert runtime.choose_dtype("bf16-upcast", "cpu") == "bf16-upcast"


def test_cpu_native_bf16_is_read_from_cpu_flags() -> None:
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    zen4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
    sapphire = "processor\t: 0\nflags\t\t: avx2 avx512f amx_tile amx_bf16\n"
    assert not runtime.cpu_native_bf16(avx2)
    assert runtime.cpu_native_bf16(zen4)
    assert runtime.cpu_native_bf16(sapphire)
    assert not runtime.cpu_native_bf16("")  # unknown: the mode that is safe everywhere


@pytest.mark.parametrize(
    ("spec", "device", "hint_part"),
    [
        ("fp16", "cpu", "bf16-upcast"),
        ("bf16-upcast", "cuda:0", "bfloat16"),
        ("int3", "cpu", "float32"),
    ],
)
def test_bad_dtype_is_a_clear_error(spec: str, device: str, hint_part: str) -> None:
    with pytest.raises(SubplugError) as err:
        runtime.choose_dtype(spec, device, bf16_supported=True)
    assert err.value.reference == "bad-dtype"
    assert hint_part in (err.value.hint or "")


def test_options_are_validated_before_anything_loads() -> None:
    runtime.validate_options(BackendOptions(device="cuda:1", dtype="bf16"))
    for options, reference in [
        (BackendOptions(device="gpu"), "bad-device"),
        (BackendOptions(dtype="int8"), "bad-dtype"),
        (BackendOptions(batch_size=0), "bad-batch-size"),
        (BackendOptions(threads=0), "bad-threads"),
    ]:
        with pytest.raises(SubplugError) as err:
            runtime.validate_options(options)
        assert err.value.reference == reference


# ------------------------------------------------------------------------ threads


def test_threads_follow_cores_except_for_tiny_models() -> None:
    assert runtime.threads_for(None, cores=8) == 8
    assert runtime.threads_for(None, cores=8, params=5_000_000_000) == 8
    assert runtime.threads_for(None, cores=8, params=500_000) == 1
    assert runtime.threads_for(3, cores=8, params=500_000) == 3
    assert runtime.physical_cores() >= 1


def test_configure_threads_sets_torch() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert runtime.configure_threads("cpu", 1) == 1
        assert torch.get_num_threads() == 1
        assert runtime.configure_threads("cuda:0", 1) is None
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------- memory


@pytest.fixture(scope="module")
def e2b_estimate() -> memory.MemoryEstimate:
    from subplug.backends.gemma3n import e2b_config

    return gemma3n_model.estimate_memory(e2b_config(), "bfloat16")


def test_e2b_estimate_counts_the_audio_only_model(e2b_estimate: memory.MemoryEstimate) -> None:
    # REFERENCE.md §1: E2B is 5.42 B parameters of which 0.29 B are the vision tower.
    assert 5.10e9 < e2b_estimate.params < 5.15e9
    assert e2b_estimate.weight_bytes == 2 * e2b_estimate.params
    assert 0.05 * GIB < e2b_estimate.per_item_bytes < 2 * GIB
    from subplug.backends.gemma3n import e2b_config

    as_fp32 = gemma3n_model.estimate_memory(e2b_config(), "float32")
    assert as_fp32.weight_bytes == 2 * e2b_estimate.weight_bytes


def test_a_model_that_cannot_fit_is_refused_before_loading(
    e2b_estimate: memory.MemoryEstimate,
) -> None:
    with pytest.raises(SubplugError) as err:
        memory.check_fits(e2b_estimate, "cpu", free=8 * GIB)
    assert err.value.reference == "not-enough-memory"
    assert "5.1" in err.value.message and "8.0 GiB is free" in err.value.message
    assert "Close other programs" in (err.value.hint or "")
    with pytest.raises(SubplugError) as err:
        memory.check_fits(e2b_estimate, "cuda:0", free=6 * GIB)
    assert "--device cpu" in (err.value.hint or "")
    fp32 = memory.MemoryEstimate(
        e2b_estimate.params, 4 * e2b_estimate.params, e2b_estimate.per_item_bytes, "float32"
    )
    with pytest.raises(SubplugError) as err:
        memory.check_fits(fp32, "cpu", free=16 * GIB)
    assert "bf16-upcast" in (err.value.hint or "")
    memory.check_fits(e2b_estimate, "cpu", free=16 * GIB)
    memory.check_fits(e2b_estimate, "cuda:0", free=24 * GIB)


def test_batch_size_follows_free_memory(e2b_estimate: memory.MemoryEstimate) -> None:
    per_item = e2b_estimate.per_item_bytes
    weights = e2b_estimate.weight_bytes
    tight = memory.batch_size_for(e2b_estimate, "cuda:0", weights + GIB + 3 * per_item)
    roomy = memory.batch_size_for(e2b_estimate, "cuda:0", 80 * GIB)
    huge = memory.batch_size_for(e2b_estimate, "cuda:0", 1024 * GIB)
    # An 80 GiB GPU is not held to a small fixed cap: free memory decides.
    assert 1 <= tight < 16 < roomy < huge == memory.MAX_AUTO_BATCH["cuda"]
    assert memory.batch_size_for(e2b_estimate, "cpu", 64 * GIB) == memory.MAX_AUTO_BATCH["cpu"]
    assert memory.batch_size_for(e2b_estimate, "cuda:0", weights) == 1  # never below one
    assert memory.batch_size_for(e2b_estimate, "cuda:0", None) >= 1


def test_tiny_model_estimate_from_its_folder(tmp_path: Path) -> None:
    from subplug.testing.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny")
    estimate = gemma3n_model.estimate_memory(folder, "float32")
    assert 400_000 < estimate.params < 600_000
    assert estimate.weight_bytes == 4 * estimate.params
    assert memory.free_memory("cpu") is None or memory.free_memory("cpu") > 0


# ------------------------------------------------------------------- OOM back-off


class InjectedOOM:
    """A batch function that raises torch's CUDA out-of-memory error for batches larger
    than ``limit`` (what a GPU does when activations do not fit), else doubles items."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: list[list[int]] = []

    def __call__(self, batch: Sequence[int]) -> list[int]:
        import torch

        self.calls.append(list(batch))
        if len(batch) > self.limit:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 24.00 GiB total)"
            )
        return [2 * x for x in batch]


def test_oom_halves_the_batch_and_drops_nothing() -> None:
    fn = InjectedOOM(limit=3)
    told: list[int] = []
    cleared: list[bool] = []
    items = list(range(11))
    out = memory.run_with_oom_backoff(
        items, 8, fn, on_backoff=told.append, empty_cache=lambda: cleared.append(True)
    )
    assert out == [2 * x for x in items]
    assert told == [4, 2] and len(cleared) == 2
    # 8 fails, 4 fails, then batches of 2 with the size kept for the rest.
    assert [len(c) for c in fn.calls] == [8, 4, 2, 2, 2, 2, 2, 1]
    done = [x for c in fn.calls if len(c) <= 3 for x in c]
    assert done == items  # every item exactly once, in order


def test_oom_with_one_item_is_a_clear_error() -> None:
    with pytest.raises(SubplugError) as err:
        memory.run_with_oom_backoff([1, 2], 2, InjectedOOM(limit=0), empty_cache=lambda: None)
    assert err.value.reference == "out-of-memory"
    assert "--device cpu" in (err.value.hint or "")


def test_other_errors_are_not_swallowed() -> None:
    def broken(batch: Sequence[int]) -> list[int]:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        memory.run_with_oom_backoff([1], 1, broken, empty_cache=lambda: None)


def test_is_out_of_memory() -> None:
    import torch

    assert memory.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert memory.is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated…)"))
    assert memory.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not memory.is_out_of_memory(ValueError("out of memory"))


# --------------------------------------------------------------- compute policy


def test_bf16_upcast_computes_large_products_in_float32() -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    layer = nn.Linear(64, 32).to(torch.bfloat16)
    model = nn.Sequential(layer)
    assert runtime.apply_compute_policy(model, "float32") == 0
    assert runtime.apply_compute_policy(model, "bf16-upcast") == 1
    many = torch.randn(32, 64).to(torch.bfloat16)
    exact = nn.functional.linear(many.float(), layer.weight.float(), layer.bias.float())
    native = nn.functional.linear(many, layer.weight, layer.bias).float()
    got = model(many)
    assert got.dtype == torch.bfloat16 and layer.weight.dtype == torch.bfloat16
    # Rounded once to bf16 at the end: closer to the float32 result than native bf16.
    assert (got.float() - exact).abs().max() <= (native - exact).abs().max()
    one = many[:1]
    assert torch.equal(model(one), nn.functional.linear(one, layer.weight, layer.bias))


def test_describe_bytes() -> None:
    assert memory.describe_bytes(3 * GIB // 2) == "1.5 GiB"
    assert memory.describe_bytes(5 * 1024**2) == "5 MiB"


# ------------------------------------------------------------------- attention

FLASH = frozenset({"flash_attention_2", "flash_attention_3"})


@pytest.mark.parametrize(
    ("device", "dtype", "capability", "installed", "expected"),
    [
        ("cuda:0", "bfloat16", (9, 0), FLASH, "flash_attention_3"),  # H100/H200
        ("cuda:0", "bfloat16", (9, 0), frozenset({"flash_attention_2"}), "flash_attention_2"),
        ("cuda:1", "float16", (8, 6), FLASH, "flash_attention_2"),  # Ampere: no FA3
        ("cuda", "bfloat16", (10, 0), FLASH, "flash_attention_2"),  # FA3 is Hopper-only
        ("cuda:0", "bfloat16", (9, 0), frozenset(), "sdpa"),  # nothing installed
        ("cuda:0", "float16", (7, 5), FLASH, "sdpa"),  # Turing: FlashAttention 2 needs 8.0
        ("cuda:0", "float32", (9, 0), FLASH, "sdpa"),  # flash kernels are 16-bit only
        ("cpu", "bfloat16", None, FLASH, "sdpa"),
        ("mps", "float16", None, FLASH, "sdpa"),
    ],
)
def test_attention_is_the_fastest_the_stack_offers_on_a_gpu_and_sdpa_elsewhere(
    device: str,
    dtype: str,
    capability: tuple[int, int] | None,
    installed: frozenset[str],
    expected: str,
) -> None:
    choice = runtime.choose_attention(device, dtype, capability=capability, installed=installed)
    assert choice == expected


def test_attention_can_be_forced_and_a_wrong_name_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forced = runtime.choose_attention(
        "cuda:0", "bfloat16", capability=(9, 0), installed=FLASH, requested="eager"
    )
    assert forced == "eager"
    with pytest.raises(SubplugError) as err:
        runtime.choose_attention("cpu", "float32", capability=None, installed=FLASH, requested="x")
    assert err.value.reference == "bad-attention"
    # On this machine (no GPU) the backend's own choice is sdpa, or what is forced.
    assert runtime.resolve_attention("cpu", "bfloat16") == "sdpa"
    monkeypatch.setenv("SUBPLUG_ATTENTION", "eager")
    assert runtime.resolve_attention("cpu", "bfloat16") == "eager"
