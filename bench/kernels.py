"""Matrix-product kernels for quantised weights on this CPU, on Gemma 3n E2B's shapes.

Prints figures; asserts nothing. Candidates: float32, bfloat16, float16 weights (fbgemm);
int8 weights × int8 activations quantised per call — fbgemm's packed kernel (what subplug
uses), the same through ``quantized::linear_dynamic`` (the deprecated
``quantize_dynamic``'s kernel; 7- and 8-bit activations), and ``torch._int_mm`` with a
scale per row; int8 weight-only (``torch._weight_int8pack_mm``) and int4 weight-only
(``torch._weight_int4pack_mm_for_cpu``), both with bfloat16 activations (float32 ones take
paths 10-70x slower). For each E2B shape (``--shapes``) and row count (``--rows``: 1 is a
decode step, 16 a batched step, 256 a prefill) it times ``--repeat`` calls after a
warm-up and prints milliseconds per call in CPU time of the process (what the wall clock
would read with the machine to itself; this machine is shared) and wall time, the ratio to
float32, and the relative error of each kernel's result against float32. The same weights
are used call after call, so matrices that fit the CPU's cache look faster than they are
in a model (bench/rtf.py measures the model).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

#: (name, in features K, out features N) of E2B's linears.
SHAPES = {
    "mlp-up": (2048, 8192),
    "mlp-down": (8192, 2048),
    "attn-q": (2048, 2048),
    "attn-kv": (2048, 512),
    "audio-ff": (1536, 6144),
    "head-full": (2048, 262400),
    "head-trim": (2048, 40000),
}


def isa_env(isa: str) -> dict[str, str]:
    """Environment variables that cap torch's and oneDNN's instruction set."""
    if isa == "avx2":
        return {
            "ATEN_CPU_CAPABILITY": "avx2",
            "ONEDNN_MAX_CPU_ISA": "AVX2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
        }
    return {}


def make_kernels(weight: Any, group: int) -> dict[str, tuple[Callable[[Any], Any], Any]]:
    """name -> (function of float32 activations, the activation dtype it takes)."""
    import torch
    from subplug.quant import kernels as qk

    kernels: dict[str, tuple[Callable[[Any], Any], Any]] = {}
    w32 = weight.float().contiguous()
    kernels["fp32"] = (lambda x: torch.nn.functional.linear(x, w32), torch.float32)
    w16 = weight.to(torch.bfloat16).contiguous()
    kernels["bf16"] = (lambda x: torch.nn.functional.linear(x, w16), torch.bfloat16)
    packed16 = torch.ops.quantized.linear_prepack_fp16(w32, None)
    kernels["fp16-weights (fbgemm)"] = (
        lambda x: torch.ops.quantized.linear_dynamic_fp16(x, packed16),
        torch.float32,
    )
    q8 = qk.quantize_int8(w32)
    dyn = qk.DynamicInt8(q8)
    kernels["int8 per-token (_int_mm)"] = (qk.PerTokenInt8(q8), torch.float32)
    kernels["int8 packed (fbgemm)"] = (qk.PackedInt8(q8), torch.float32)
    kernels["int8 dynamic (fbgemm)"] = (dyn, torch.float32)
    kernels["int8 dynamic, 8-bit act (fbgemm)"] = (
        qk.DynamicInt8(q8, reduce_range=False),
        torch.float32,
    )
    w8 = qk.WeightOnlyInt8(q8)
    kernels["int8 weight-only (bf16 act)"] = (w8, torch.bfloat16)
    if weight.shape[1] % group == 0:
        q4 = qk.quantize_int4(w32, group)
        w4 = qk.WeightOnlyInt4(q4)
        kernels[f"int4 g{group} (bf16 act)"] = (w4, torch.bfloat16)
    return kernels


def time_call(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median CPU ms and wall ms per call, after two warm-up calls."""
    fn()
    fn()
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
    return statistics.median(cpu), statistics.median(wall)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="mlp-up,mlp-down,attn-q,audio-ff,head-trim,head-full")
    parser.add_argument("--rows", default="1,16,256")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--group", type=int, default=128, help="int4 group size")
    parser.add_argument("--isa", choices=("native", "avx2"), default="native")
    parser.add_argument("--kernels", default="", help="';'-separated kernel name prefixes")
    args = parser.parse_args(argv)

    env = isa_env(args.isa)
    if any(os.environ.get(k) != v for k, v in env.items()):
        os.environ.update(env)
        os.execv(sys.executable, [sys.executable, *sys.argv])

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}; CPU capability {torch.backends.cpu.get_cpu_capability()}"
        f" ({', '.join(f'{k}={v}' for k, v in env.items()) or 'no caps'}); "
        f"{args.threads} thread(s); load average {os.getloadavg()[0]:.1f}; "
        f"median of {args.repeat}, ms per call (CPU ms | wall ms)"
    )
    wanted = [p.strip() for p in args.kernels.split(";") if p.strip()]
    rows = [int(r) for r in args.rows.split(",")]
    for shape in args.shapes.split(","):
        k, n = SHAPES[shape]
        weight = torch.randn(n, k) * 0.02
        kernels = make_kernels(weight, args.group)
        if wanted:
            kernels = {
                name: v for name, v in kernels.items() if any(name.startswith(p) for p in wanted)
            }
        print(f"\n## {shape}: {k} -> {n}")
        print(
            "| kernel | "
            + " | ".join(f"{m} rows CPU ms (wall) | x fp32" for m in rows)
            + " | rel. error |"
        )
        print("|---|" + "---:|---:|" * len(rows) + "---:|")
        base: dict[int, float] = {}
        for name, (fn, act) in kernels.items():
            cells = []
            error = float("nan")
            for m in rows:
                x = torch.randn(m, k)
                xa = x.to(act)
                with torch.inference_mode():
                    cpu, wall = time_call(lambda fn=fn, xa=xa: fn(xa), args.repeat)
                    if m == rows[0]:
                        ref = torch.nn.functional.linear(x, weight.float())
                        out = fn(xa).float()
                        error = float((out - ref).norm() / ref.norm())
                base.setdefault(m, cpu)
                cells.append(f"{cpu:.2f} ({wall:.2f}) | {cpu / base[m]:.2f}")
            print(f"| {name} | " + " | ".join(cells) + f" | {error:.1e} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
