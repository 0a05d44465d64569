"""Training speed and memory of subplug_training: samples per second and peak memory of
LoRA training steps, through the real collator and the transformers ``Trainer``.

Each configuration runs in its own child process (so its peak memory is its own) and is
compared with the recipe's default configuration measured the same way on the same
machine:

* ``recipe``: the packaged recipe's settings (LoRA on the language model, completion-only
  labels, gradient checkpointing on);
* ``no-checkpointing``: the same without gradient checkpointing;
* ``seed-targets``: LoRA on the seed's plain module list (audio tower included).

* ``seed``: the seed's own settings (its labels and its module list).

Processes are a second axis (``--processes 1,2``): a configuration runs in N
data-parallel processes started with ``torchrun`` (gloo on the CPU, nccl on GPUs, one GPU
each), every process with the same per-process batch, so a step trains N times the
samples; the scaling efficiency is samples/s with N processes over N × samples/s with one.
CPU seconds (all processes together) are given beside wall-clock seconds: on a shared
machine the wall clock also counts waiting for a core.

Models: the tiny Gemma 3n of ``subplug.testing`` (default; any machine), or with
``--full-size`` a randomly initialised model of Gemma 3n E2B's exact shape (5.12 B
parameters audio-only, bfloat16), which needs a CUDA GPU. Audio: ``--seconds`` of noise
per sample; answers of ``--answer-words`` words.

    python bench/train_step.py                            # tiny model, here
    python bench/train_step.py --threads 1 --processes 1,2  # and in 2 CPU processes
    python bench/train_step.py --full-size --steps 10       # E2B shape, on a GPU
    python bench/train_gpu.py                               # the seed's run on GPUs

Prints one row per configuration and process count: seconds per step (wall and CPU),
samples/s, peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: the largest peak
resident set of the processes, and its growth during training) and the ratios to
``recipe`` on one process. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIGS = {
    "recipe": [],
    "no-checkpointing": ["train.gradient_checkpointing=false"],
    "seed-targets": ['lora.targets="seed"'],
    "seed": ['lora.targets="seed"', 'data.masking="seed"'],
}
#: Configurations measured unless --configs says otherwise.
DEFAULT_CONFIGS = ("recipe", "no-checkpointing", "seed-targets")


def full_size_config(tiny_dir: Path) -> Any:
    """Gemma 3n E2B's shape (REFERENCE.md §1: 30 layers, intermediate 8192, 10 KV-shared
    layers, the USM audio tower), with the tiny processor's special-token ids so the
    tiny tokenizer can feed it. Sizes, not ids, set the cost of a step."""
    from transformers import AutoConfig, Gemma3nAudioConfig, Gemma3nConfig, Gemma3nTextConfig

    tiny = AutoConfig.from_pretrained(tiny_dir)
    text = Gemma3nTextConfig(
        num_hidden_layers=30,
        intermediate_size=8192,
        num_kv_shared_layers=10,
        activation_sparsity_pattern=[0.95] * 10 + [0.0] * 20,
        layer_types=(["sliding_attention"] * 4 + ["full_attention"]) * 6,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    audio = Gemma3nAudioConfig(vocab_offset=tiny.audio_config.vocab_offset)
    vision = tiny.vision_config
    return Gemma3nConfig(
        text_config=text.to_dict(),
        audio_config=audio.to_dict(),
        vision_config=vision.to_dict(),
        boi_token_id=tiny.boi_token_id,
        eoi_token_id=tiny.eoi_token_id,
        image_token_id=tiny.image_token_id,
        boa_token_id=tiny.boa_token_id,
        eoa_token_id=tiny.eoa_token_id,
        audio_token_id=tiny.audio_token_id,
    )


def describe_full_size() -> str:
    """Parameter counts of the E2B-shaped model, built on the meta device (no memory)."""
    import torch
    from subplug.backends.gemma3n import audio_only_model_class
    from subplug.testing.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        config = full_size_config(build_tiny_model(Path(folder) / "tiny"))
    with torch.device("meta"):
        model = audio_only_model_class()(config)
    counts: dict[str, int] = {"total": 0, "language model": 0, "audio tower": 0}
    for name, parameter in model.named_parameters():
        counts["total"] += parameter.numel()
        if "language_model" in name:
            counts["language model"] += parameter.numel()
        elif "audio_tower" in name:
            counts["audio tower"] += parameter.numel()
    return "E2B shape (audio-only): " + ", ".join(
        f"{key} {value / 1e9:.2f} B" for key, value in counts.items()
    )


def child(args: argparse.Namespace) -> dict[str, Any] | None:
    """Measure one configuration (in each of the processes of a torchrun launch); the
    main process returns the figures as a dict, the others ``None``."""
    import resource

    import numpy as np
    import torch
    import torch.distributed as dist
    from subplug.backends.gemma3n import audio_only_model_class
    from subplug.prompts import INSTRUCTIONS
    from subplug.testing.tiny import build_tiny_model
    from subplug_training.collator import Collator
    from subplug_training.lora import count_parameters, lora_config
    from subplug_training.recipe import load_recipe
    from subplug_training.trainer import training_arguments
    from transformers import AutoProcessor, Trainer, TrainerCallback, set_seed

    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    if args.threads and device == "cpu":
        torch.set_num_threads(args.threads)
    overrides = [
        *CONFIGS[args.child],
        f"train.per_device_train_batch_size={args.batch}",
        f"train.gradient_accumulation_steps={args.accumulation}",
        f"train.max_steps={args.warmup + args.steps}",
        "train.save_strategy='no'",
        "train.logging_steps=1000",
    ]
    recipe = load_recipe(None, overrides)
    work = Path(tempfile.mkdtemp(prefix="subplug-bench-"))
    tiny_dir = build_tiny_model(work / "tiny")
    processor = AutoProcessor.from_pretrained(tiny_dir)
    args_ = training_arguments(recipe, work / "run", device=device, has_eval=False)
    rank, processes = args_.process_index, args_.world_size
    if device == "cuda":
        device = f"cuda:{args_.local_process_index}"
    dtype = torch.bfloat16 if args_.bf16 else torch.float32
    set_seed(0)
    if args.full_size:
        config = full_size_config(tiny_dir)
        with torch.device(device):
            torch.set_default_dtype(dtype)
            model = audio_only_model_class()(config)
            torch.set_default_dtype(torch.float32)
    else:
        model = audio_only_model_class().from_pretrained(tiny_dir, dtype=dtype)
        model.to(device)
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    from peft import get_peft_model

    model = get_peft_model(model, lora_config(recipe.lora))
    counts = count_parameters(model)

    rng = np.random.default_rng(0)
    words = ["hello", "world", "this", "is", "a", "short", "answer", "for", "the", "benchmark"]
    answer = " ".join(words[i % len(words)] for i in range(args.answer_words))
    examples = [
        {
            "audio": (0.1 * rng.standard_normal(int(args.seconds * 16000))).astype(np.float32),
            "instruction": INSTRUCTIONS[7],
            "target": answer,
        }
        for _ in range(args.batch * args.accumulation * processes * 4)
    ]

    marks: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), time.process_time()))

    collator = Collator(processor, masking=recipe.data.masking, feature_dtype=dtype)
    trainer = Trainer(
        model=model,
        args=args_,
        train_dataset=examples,
        data_collator=collator,
        callbacks=[Clock()],
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steady = marks[args.warmup - 1 :] if args.warmup else [marks[0], *marks]
    wall = (steady[-1][0] - steady[0][0]) / (len(steady) - 1)
    cpu = (steady[-1][1] - steady[0][1]) / (len(steady) - 1)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
        growth = None
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        growth = peak - rss_before
    mine: dict[str, Any] = {"wall": wall, "cpu": cpu, "peak": peak, "growth": growth}
    everyone: list[Any] = [mine]
    if processes > 1:
        everyone = [None] * processes
        dist.all_gather_object(everyone, mine)
    if rank != 0:
        return None
    samples = args.batch * args.accumulation * processes
    seconds = max(p["wall"] for p in everyone)
    result = {
        "config": args.child,
        "processes": processes,
        "device": device.split(":")[0]
        + (
            f" ({torch.cuda.get_device_name()})"
            if device.startswith("cuda")
            else f", {torch.get_num_threads()} thread(s) per process"
        ),
        "model": "E2B shape" if args.full_size else "tiny",
        "params": counts.total,
        "trainable": counts.trainable,
        "seconds_per_step": seconds,
        "cpu_seconds_per_step": sum(p["cpu"] for p in everyone),
        "samples_per_step": samples,
        "samples_per_second": samples / seconds,
        "peak_mib": max(p["peak"] for p in everyone),
    }
    if growth is not None:
        result["growth_mib"] = max(p["growth"] for p in everyone)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument(
        "--batch", type=int, default=2, help="samples per pass and process (recipe: 2)"
    )
    parser.add_argument(
        "--accumulation", type=int, default=1, help="passes per optimiser step (recipe: 8)"
    )
    parser.add_argument(
        "--processes", default="1", help="process counts to compare, e.g. 1,2 (torchrun)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per sample")
    parser.add_argument("--answer-words", type=int, default=40, help="words per answer")
    parser.add_argument("--full-size", action="store_true", help="E2B-shaped model (GPU)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument(
        "--configs", default=",".join(DEFAULT_CONFIGS), help=f"of {', '.join(CONFIGS)}"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args)
        if result is not None:
            print(json.dumps(result))
        return 0
    if args.full_size:
        import torch

        if not torch.cuda.is_available() or args.device == "cpu":
            print(describe_full_size())
            print("--full-size needs a CUDA GPU to train; this machine has none.")
            return 2
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    counts = [int(n) for n in args.processes.split(",") if n.strip()]
    rows = []
    for name in names:
        for count in counts:
            row = measure(args, name, count)
            if row is None:
                return 1
            rows.append(row)
    print_table(args, rows)
    return 0


def child_command(args: argparse.Namespace, name: str, processes: int) -> list[str]:
    """The command measuring configuration ``name`` in ``processes`` processes."""
    command = [sys.executable]
    if processes > 1:
        command += ["-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc_per_node", str(processes)]
    command += [__file__, "--child", name]
    for flag in (
        "steps",
        "warmup",
        "batch",
        "accumulation",
        "seconds",
        "answer_words",
        "device",
        "threads",
    ):
        value = getattr(args, flag)
        if value is not None:
            command += [f"--{flag.replace('_', '-')}", str(value)]
    if args.full_size:
        command.append("--full-size")
    return command


def measure(args: argparse.Namespace, name: str, processes: int) -> dict[str, Any] | None:
    """Run one configuration in ``processes`` processes; its figures, or ``None``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or 1)}
    done = subprocess.run(
        child_command(args, name, processes), capture_output=True, text=True, check=False, env=env
    )
    if done.returncode != 0:
        print(f"{name} × {processes}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def print_table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """The figures, with ratios to ``recipe`` on one process and the scaling efficiency
    of each configuration over its own one-process row."""
    base = next((r for r in rows if r["config"] == "recipe" and r["processes"] == 1), rows[0])
    single = {r["config"]: r for r in rows if r["processes"] == 1}
    print(
        f"{base['model']} model, {base['params'] / 1e6:.2f} M parameters, on {base['device']}; "
        f"batch {args.batch} × accumulation {args.accumulation} per process, "
        f"{args.seconds:g} s audio and {args.answer_words} words per sample"
    )
    growth = "growth MiB" if "growth_mib" in base else ""
    print(
        f"{'config':<18}{'procs':>6}{'trainable':>12}{'s/step':>9}{'CPU s/step':>12}"
        f"{'samples/s':>11}{'scaling':>9}{'CPU scal.':>10}{'peak MiB':>10}{growth:>12}"
        f"{'speed ×':>9}{'memory ×':>10}"
    )
    for row in rows:
        one = single.get(row["config"])
        scaling = cpu_scaling = ""
        if one is not None:
            n = row["processes"]
            scaling = f"{row['samples_per_second'] / (n * one['samples_per_second']):.2f}"
            per_cpu = row["samples_per_step"] / row["cpu_seconds_per_step"]
            cpu_scaling = f"{per_cpu / (one['samples_per_step'] / one['cpu_seconds_per_step']):.2f}"
        extra = f"{row['growth_mib']:>12.0f}" if "growth_mib" in row else ""
        memory_key = "growth_mib" if "growth_mib" in row else "peak_mib"
        print(
            f"{row['config']:<18}{row['processes']:>6}{row['trainable']:>12,}"
            f"{row['seconds_per_step']:>9.3f}{row['cpu_seconds_per_step']:>12.3f}"
            f"{row['samples_per_second']:>11.2f}{scaling:>9}{cpu_scaling:>10}"
            f"{row['peak_mib']:>10.0f}{extra}"
            f"{row['samples_per_second'] / base['samples_per_second']:>9.2f}"
            f"{row[memory_key] / max(base[memory_key], 1e-9):>10.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
