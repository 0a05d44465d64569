"""Training speed and memory of subplug_training: samples per second and peak memory of
LoRA training steps, through the real collator and the transformers ``Trainer``.

Each configuration runs in its own child process (so its peak memory is its own) and is
compared with the recipe's default configuration measured the same way on the same
machine:

* ``recipe``: the packaged recipe's settings (LoRA on the language model, completion-only
  labels, gradient checkpointing on);
* ``no-checkpointing``: the same without gradient checkpointing;
* ``seed-targets``: LoRA on the seed's plain module list (audio tower included).

Models: the tiny Gemma 3n of ``subplug.testing`` (default; any machine), or with
``--full-size`` a randomly initialised model of Gemma 3n E2B's exact shape (5.12 B
parameters audio-only, bfloat16), which needs a CUDA GPU. Audio: ``--seconds`` of noise
per sample; answers of ``--answer-words`` words.

    python bench/train_step.py                       # tiny model, here
    python bench/train_step.py --full-size --steps 10  # E2B shape, on a GPU

Prints one row per configuration: seconds per step, samples/s, peak memory (GPU:
``torch.cuda.max_memory_allocated``; CPU: the process's peak resident set, and its growth
during training) and the ratios to ``recipe``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
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
}


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


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one configuration; returns the figures as a dict."""
    import resource

    import numpy as np
    import torch
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
        "train.gradient_accumulation_steps=1",
        f"train.max_steps={args.warmup + args.steps}",
        "train.save_strategy='no'",
        "train.logging_steps=1000",
    ]
    recipe = load_recipe(None, overrides)
    work = Path(tempfile.mkdtemp(prefix="subplug-bench-"))
    tiny_dir = build_tiny_model(work / "tiny")
    processor = AutoProcessor.from_pretrained(tiny_dir)
    args_ = training_arguments(recipe, work / "run", device=device, has_eval=False)
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
        for _ in range(args.batch * 4)
    ]

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    collator = Collator(processor, masking=recipe.data.masking, feature_dtype=dtype)
    trainer = Trainer(
        model=model,
        args=args_,
        train_dataset=examples,
        data_collator=collator,
        callbacks=[Clock()],
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steady = marks[args.warmup - 1 :] if args.warmup else [marks[0], *marks]
    seconds = (steady[-1] - steady[0]) / (len(steady) - 1)
    result = {
        "config": args.child,
        "device": device
        + (
            f" ({torch.cuda.get_device_name()})"
            if device == "cuda"
            else f", {torch.get_num_threads()} threads"
        ),
        "model": "E2B shape" if args.full_size else "tiny",
        "params": counts.total,
        "trainable": counts.trainable,
        "seconds_per_step": seconds,
        "samples_per_second": args.batch / seconds,
    }
    if device == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["peak_mib"] = peak
        result["growth_mib"] = peak - rss_before
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=2, help="samples per step (recipe: 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per sample")
    parser.add_argument("--answer-words", type=int, default=40, help="words per answer")
    parser.add_argument("--full-size", action="store_true", help="E2B-shaped model (GPU)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="which configurations")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.full_size:
        import torch

        if not torch.cuda.is_available() or args.device == "cpu":
            print(describe_full_size())
            print("--full-size needs a CUDA GPU to train; this machine has none.")
            return 2
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    rows = []
    for name in names:
        command = [sys.executable, __file__, "--child", name]
        for flag in ("steps", "warmup", "batch", "seconds", "answer_words", "device", "threads"):
            value = getattr(args, flag)
            if value is not None:
                command += [f"--{flag.replace('_', '-')}", str(value)]
        if args.full_size:
            command.append("--full-size")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["config"] == "recipe"), rows[0])
    print(
        f"{base['model']} model, {base['params'] / 1e6:.2f} M parameters, on {base['device']}; "
        f"batch {args.batch}, {args.seconds:g} s audio and {args.answer_words} words per sample"
    )
    growth = "growth MiB" if "growth_mib" in base else ""
    print(
        f"{'config':<18}{'trainable':>12}{'s/step':>9}{'samples/s':>11}{'peak MiB':>10}"
        f"{growth:>12}{'speed ×':>9}{'memory ×':>10}"
    )
    for row in rows:
        extra = f"{row['growth_mib']:>12.0f}" if "growth_mib" in row else ""
        memory_key = "growth_mib" if "growth_mib" in row else "peak_mib"
        print(
            f"{row['config']:<18}{row['trainable']:>12,}{row['seconds_per_step']:>9.3f}"
            f"{row['samples_per_second']:>11.2f}{row['peak_mib']:>10.0f}{extra}"
            f"{row['samples_per_second'] / base['samples_per_second']:>9.2f}"
            f"{row[memory_key] / max(base[memory_key], 1e-9):>10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
