"""``python -m subplug.testing``: build the tiny offline models (Gemma 3n and a LoRA
adapter for it, and one of each other model family subplug runs) from the shell, for
tests, the self-test and plugin authors.

    python -m subplug.testing tiny-model DIR [--family FAMILY] [--seed N]
    python -m subplug.testing tiny-adapter BASE_DIR DIR [--seed N] [--legacy-kv-shared]

Families: gemma3n (default), whisper, ctc, nllb, qwen3-asr, seamless, remote-code.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: ``--family`` → (module, builder, what it is): the builders of :mod:`subplug.testing`.
FAMILIES: dict[str, tuple[str, str, str]] = {
    "gemma3n": ("subplug.testing.tiny", "build_tiny_model", "tiny Gemma 3n"),
    "whisper": ("subplug.testing.tiny_whisper", "build_tiny_whisper", "tiny Whisper"),
    "ctc": ("subplug.testing.tiny_ctc", "build_tiny_ctc", "tiny MMS-style wav2vec2 CTC model"),
    "nllb": ("subplug.testing.tiny_nllb", "build_tiny_nllb", "tiny NLLB translator"),
    "qwen3-asr": ("subplug.testing.tiny_qwen3_asr", "build_tiny_qwen3_asr", "tiny Qwen3-ASR"),
    "seamless": ("subplug.testing.tiny_seamless", "build_tiny_seamless", "tiny SeamlessM4T v2"),
    "remote-code": (
        "subplug.testing.tiny_remote",
        "build_tiny_remote",
        "tiny speech model with its own code",
    ),
}


def builder(family: str) -> Callable[..., Any]:
    """The tiny-model builder of ``family`` (a key of :data:`FAMILIES`)."""
    import importlib

    module, name, _ = FAMILIES[family]
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m subplug.testing",
        description="Build the tiny random models (real configs and processors, offline) "
        "used by subplug's tests and `subplug doctor --self-test`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("tiny-model", help="build a tiny model into DIR")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument(
        "--family",
        choices=sorted(FAMILIES),
        default="gemma3n",
        help="model family (default: gemma3n)",
    )
    p.add_argument("--seed", type=int, default=0, help="random weights seed (default: 0)")
    p = sub.add_parser("tiny-adapter", help="build a LoRA adapter for a tiny model")
    p.add_argument("base", type=Path, metavar="BASE_DIR", help="a folder made by tiny-model")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--seed", type=int, default=0, help="random weights seed (default: 0)")
    p.add_argument(
        "--legacy-kv-shared",
        action="store_true",
        help="add k/v LoRA weights for the KV-shared layers, as old adapters have",
    )
    return parser


def _refuse_nonempty(folder: Path) -> str | None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        return f"error: {folder} exists and is not an empty folder; choose a new one."
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    problem = _refuse_nonempty(args.dir)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if args.command == "tiny-adapter" and not (args.base / "config.json").is_file():
        print(
            f"error: {args.base} holds no model (config.json); build one with "
            "`python -m subplug.testing tiny-model DIR` first.",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    import peft  # noqa: F401  (imported here so the build time below is the build alone)
    import transformers  # noqa: F401

    from subplug.backends.gemma3n_model import audio_only_model_class
    from subplug.testing.tiny import build_tiny_adapter

    audio_only_model_class()
    imports = time.perf_counter() - started
    started = time.perf_counter()
    if args.command == "tiny-model":
        folder = builder(args.family)(args.dir, seed=args.seed)
        what = FAMILIES[args.family][2]
    else:
        folder = build_tiny_adapter(
            args.base, args.dir, seed=args.seed, legacy_kv_shared=args.legacy_kv_shared
        )
        what = "tiny LoRA adapter"
    seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(
        f"Built a {what} in {folder} ({size / 1e6:.1f} MB) in {seconds:.2f} s "
        f"(after {imports:.1f} s importing torch and transformers)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
