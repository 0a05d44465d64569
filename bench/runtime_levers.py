"""Runtime levers of the Gemma 3n backend, each against its own absence, in one
process. Prints figures; asserts nothing.

- ``heap``: the allocator after a quantising load (subplug.quant.heap). ``os`` is how a
  quantising load leaves glibc (every block of 1 MiB or more its own mapping, given back
  when freed); ``reuse`` is what the backend sets once loaded (blocks up to 32 MiB kept
  in the heap for the next request).
- ``forwards``: transformers' own RMS norm and sparse-activation cut-off forwards
  (``plain``) against leaner ones defined here (``lean``: ``F.rms_norm`` in one call,
  the cut-off's normal quantile taken once), same weights. A decoding step of E2B runs
  ~310 norms and 10 cut-offs on a few thousand numbers each, where each operation's own
  overhead is the cost; measured, it did not pay (docs/performance.md), so subplug
  keeps transformers' forwards.
- ``prefix``: a chunk asked twice (``--source auto``: transcribe, then translate).
  ``whole`` prefills each request's prompt in one pass; ``kept`` is what the backend
  does: the first request prefills in two passes and keeps the shared prompt prefix
  (decode.PrefixCache), the translation computes only its instruction's tokens. The
  table gives both requests' prefill CPU seconds (decoding is the same either way).
- ``slices``: the prefill of a batch in one forward (``whole``) or, as the backend does,
  in column slices of at most ``decode.PREFILL_TOKENS`` prompt ids (``sliced``), which
  bounds its activations' memory (peak memory: bench/rtf.py, a process per setting).

The model is loaded once, the way ``subplug generate`` loads it (``--model``: a folder
or cache name; ``--quantize``/``--vocab`` as on the command line), and for each batch
size the two variants alternate ``--repeat`` times on 30 s chunks of real speech: the
audio encoder, the prefill and ``--steps`` decode steps. Figures are CPU seconds (user
+ system, with the system share apart: page faults show there) and wall seconds; the
table gives each variant's median and its ratio to the first variant. ``--isa avx2``
re-runs this script with torch, MKL, oneDNN and fbgemm capped at AVX2 (bench/rtf.py).

    python bench/runtime_levers.py --model DIR --lever heap --batch-sizes 1,8 --isa avx2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rtf  # noqa: E402  (bench/rtf.py: speech, requests, machine facts)

VARIANTS = {
    "heap": ("os", "reuse"),
    "forwards": ("plain", "lean"),
    "prefix": ("whole", "kept"),
    "slices": ("whole", "sliced"),
}


@dataclass
class Run:
    variant: str
    encoder_cpu: float
    encoder_sys: float
    prefill_cpu: float
    prefill_sys: float
    step_cpu: float
    step_sys: float
    step_wall: float


def _setters(lever: str, model: Any) -> dict[str, Callable[[], None]]:
    """What switches the process to each variant of ``lever``."""
    from subplug.quant import heap

    if lever == "heap":

        def as_while_loading() -> None:
            heap.large_blocks_to_os()
            heap._mallopt((heap._M_TRIM_THRESHOLD, 128 << 10))  # glibc's default

        def as_running() -> None:
            heap.reuse_freed_blocks()

        return {"os": as_while_loading, "reuse": as_running}
    if lever == "prefix":
        return {"whole": lambda: None, "kept": lambda: None}
    if lever == "slices":
        from subplug.backends import decode

        sliced = decode.PREFILL_TOKENS

        def tokens(count: int) -> Callable[[], None]:
            return lambda: setattr(decode, "PREFILL_TOKENS", count)

        return {"whole": tokens(1 << 30), "sliced": tokens(sliced)}
    from transformers.models.gemma3n import modeling_gemma3n as gemma3n

    def plain() -> None:
        for module in model.modules():
            if isinstance(module, (gemma3n.Gemma3nRMSNorm, gemma3n.Gemma3nTextMLP)):
                for name in ("forward", "_gaussian_topk"):
                    if name in vars(module):
                        delattr(module, name)

    def lean() -> None:
        use_lean_forwards(model)

    return {"plain": plain, "lean": lean}


def use_lean_forwards(model: Any) -> int:
    """Give ``model``'s RMS norms and sparse-activation cut-offs forwards of fewer
    operations, with the same results to float32 rounding (logits within 1e-5 on the
    tiny model); returns how many modules changed.

    A decoding step of E2B runs ~310 RMS norms and 10 Gaussian top-k cut-offs on a few
    thousand numbers each, where the operations' own overhead is the cost: transformers'
    norm is nine tensor operations (``torch.nn.functional.rms_norm`` is one call, the
    same ``x · (mean(x²) + ε)^-½ · w`` in float32), and its cut-off builds a normal
    distribution each call to take one constant quantile (taken once here)."""
    import torch
    from transformers.models.gemma3n import modeling_gemma3n as gemma3n

    changed = 0
    for module in model.modules():
        if isinstance(module, gemma3n.Gemma3nRMSNorm):
            module.forward = _lean_norm(module)
            changed += 1
        elif isinstance(module, gemma3n.Gemma3nTextMLP) and module.activation_sparsity > 0.0:
            multiplier = float(
                torch.distributions.normal.Normal(0, 1).icdf(
                    torch.tensor(module.activation_sparsity, dtype=torch.float32)
                )
            )
            module._gaussian_topk = _lean_cutoff(multiplier)
            changed += 1
    return changed


def _lean_norm(norm: Any) -> Any:
    import torch

    shape = (norm.weight.shape[0],) if norm.with_scale else None
    eps = norm.eps

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        weight = norm.weight.float() if norm.with_scale else None
        size = shape if shape is not None else (hidden_states.shape[-1],)
        normed = torch.nn.functional.rms_norm(hidden_states.float(), size, weight, eps)
        return normed.type_as(hidden_states)

    return forward


def _lean_cutoff(multiplier: float) -> Any:
    import torch

    factor = torch.tensor(multiplier, dtype=torch.float32)

    def gaussian_topk(inputs: torch.Tensor) -> torch.Tensor:
        std, mean = torch.std_mean(inputs, dim=-1, keepdim=True, unbiased=False)
        return torch.relu(inputs - (mean + std * factor.to(inputs.dtype)))

    return gaussian_topk


def _cpu(start: os.times_result, end: os.times_result) -> tuple[float, float]:
    system = end.system - start.system
    return end.user - start.user + system, system


def measure(backend: Any, batch: int, steps: int, variant: str) -> Run:
    """One encoder + prefill + ``steps`` decode steps for ``batch`` chunks."""
    import torch
    from subplug.backends.decode import DecodeRow, greedy_decode

    samples = rtf.speech_30s()
    requests = rtf._requests([(samples.copy(), "en") for _ in range(batch)], steps)
    backend._audio.clear()
    with torch.inference_mode():
        began = os.times()
        audio = [backend.audio_tokens(r) for r in requests]
        encoded = os.times()
        rows = [
            DecodeRow(backend.prompt_ids(r.instruction), a, steps)
            for r, a in zip(requests, audio, strict=True)
        ]
        stamps: list[os.times_result] = []
        greedy_decode(
            backend.model, rows, pad_id=backend.pad_id, stop_ids=[],
            on_step=lambda _n: stamps.append(os.times()),
        )  # fmt: skip
    count = max(1, len(stamps) - 1)
    encoder = _cpu(began, encoded)
    prefill = _cpu(encoded, stamps[0])
    step = _cpu(stamps[0], stamps[-1])
    return Run(
        variant=variant,
        encoder_cpu=encoder[0],
        encoder_sys=encoder[1],
        prefill_cpu=prefill[0],
        prefill_sys=prefill[1],
        step_cpu=step[0] / count,
        step_sys=step[1] / count,
        step_wall=(stamps[-1].elapsed - stamps[0].elapsed) / count,
    )


@dataclass
class PrefixRun:
    variant: str
    first_cpu: float
    follow_cpu: float


def measure_prefix(backend: Any, batch: int, variant: str) -> PrefixRun:
    """The prefill CPU seconds of ``batch`` first requests of unknown language and of
    their translations, with the prompt prefix kept (``kept``) or not (``whole``)."""
    import torch
    from subplug import prompts
    from subplug.backends.decode import DecodeRow, PrefixCache, greedy_decode

    samples = rtf.speech_30s()
    firsts = rtf._requests([(samples.copy(), "en") for _ in range(batch)], 1)
    kept = variant == "kept"
    prefixes = PrefixCache(backend.prefixes().length) if kept else None
    translate = prompts.followup_request("en", ("en", "mn"))
    assert translate is not None
    spent = []
    with torch.inference_mode():
        audio = [backend.audio_tokens(r) for r in firsts]
        for instruction in (firsts[0].instruction, translate.instruction):
            rows = [
                DecodeRow(
                    backend.prompt_ids(instruction), a, 1, key=r.chunk if kept else None,
                    keep_prefix=kept and instruction == firsts[0].instruction,
                )
                for r, a in zip(firsts, audio, strict=True)
            ]  # fmt: skip
            began = os.times()
            greedy_decode(
                backend.model, rows, pad_id=backend.pad_id, stop_ids=[], prefixes=prefixes
            )
            spent.append(_cpu(began, os.times())[0])
    return PrefixRun(variant, spent[0], spent[1])


def prefix_table(batch: int, runs: list[PrefixRun]) -> str:
    lines = [
        f"\n### prefix, batch {batch} (median of {len(runs) // 2} runs each; CPU s)\n",
        "| variant | first request's prefill | translation's prefill | both | × whole |",
        "|---|---:|---:|---:|---:|",
    ]
    base = None
    for variant in VARIANTS["prefix"]:
        mine = [r for r in runs if r.variant == variant]
        first = statistics.median(r.first_cpu for r in mine)
        follow = statistics.median(r.follow_cpu for r in mine)
        base = base or first + follow
        lines.append(
            f"| {variant} | {first:.2f} | {follow:.2f} | {first + follow:.2f} "
            f"| {(first + follow) / base:.2f} |"
        )
    return "\n".join(lines)


def table(lever: str, batch: int, runs: list[Run], answer_tokens: int) -> str:
    first = VARIANTS[lever][0]
    lines = [
        f"\n### {lever}, batch {batch} "
        f"(median of {len(runs) // 2} runs each; CPU s = user + system)\n",
        "| variant | encoder CPU s (system) | prefill CPU s (system) | ms/step CPU (system) "
        "| ms/step wall | RTF CPU | × " + first + " |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base_rtf = None
    for variant in VARIANTS[lever]:
        mine = [r for r in runs if r.variant == variant]

        def med(field: str, mine: list[Run] = mine) -> float:
            return statistics.median(getattr(r, field) for r in mine)

        rtf_cpu = (med("encoder_cpu") + med("prefill_cpu") + answer_tokens * med("step_cpu")) / (
            rtf.CHUNK_SECONDS * batch
        )
        base_rtf = base_rtf or rtf_cpu
        lines.append(
            f"| {variant} | {med('encoder_cpu'):.1f} ({med('encoder_sys'):.1f}) "
            f"| {med('prefill_cpu'):.1f} ({med('prefill_sys'):.1f}) "
            f"| {1000 * med('step_cpu'):.0f} ({1000 * med('step_sys'):.0f}) "
            f"| {1000 * med('step_wall'):.0f} | {rtf_cpu:.2f} | {rtf_cpu / base_rtf:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder or cache name")
    parser.add_argument("--quantize", default="int8")
    parser.add_argument("--vocab", default="en-mn")
    parser.add_argument("--lever", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--steps", type=int, default=60, help="decode steps timed per run")
    parser.add_argument("--answer-tokens", type=int, default=240)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--isa", choices=("native", "avx2"), default="native")
    args = parser.parse_args()
    wanted = rtf.isa_env(args.isa)
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        env = dict(os.environ, **wanted)
        sys.exit(subprocess.call([sys.executable, *sys.argv], env=env))

    from subplug.backends.gemma3n import Gemma3nBackend
    from subplug.types import BackendOptions

    sizes = [int(b) for b in args.batch_sizes.split(",")]
    backend = Gemma3nBackend(
        BackendOptions(
            model=args.model, device="cpu", quantize=args.quantize, vocab=args.vocab,
            threads=args.threads, batch_size=max(sizes),
        )
    )  # fmt: skip
    setters = _setters(args.lever, backend.model)
    print(f"machine: {rtf.machine()}")
    print(f"model: {args.model} ({backend.describe().get('quantize')}), {args.threads} thread(s)")
    for batch in sizes:
        runs = []
        for _ in range(args.repeat):
            for variant in VARIANTS[args.lever]:
                setters[variant]()
                if args.lever == "prefix":
                    runs.append(measure_prefix(backend, batch, variant))
                else:
                    runs.append(measure(backend, batch, args.steps, variant))
                print(runs[-1], flush=True)
        if args.lever == "prefix":
            print(prefix_table(batch, runs), flush=True)
        else:
            print(table(args.lever, batch, runs, args.answer_tokens), flush=True)
    setters[VARIANTS[args.lever][1]]()


if __name__ == "__main__":
    main()
