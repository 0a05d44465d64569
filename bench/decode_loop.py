"""Decode-loop overhead: transformers' ``generate`` (dynamic and static KV cache) against
subplug's own greedy loop (``subplug.backends.decode``), same model, same prompts.

Every way decodes exactly ``--tokens`` tokens per row (stop tokens are ignored, since
random weights never stop by themselves), after the same prefill, for batches of
``--batch-sizes`` chunks of real speech (espeak-ng). Each way runs ``--repeat`` times,
alternated in this process; the table gives the best run's CPU seconds per decoding
step (what the wall clock would read with the machine to itself; this machine is shared)
and wall seconds, and the ratio to ``generate`` with the dynamic cache. The first call of
the static cache pays its set-up; the best run does not.

``--model FOLDER`` measures a real-size model (e.g. bench/rtf.py's random E2B folder,
loaded as ``generate`` loads it: ``--quantize auto`` quantises it on a CPU); the
default is the tiny offline Gemma 3n, where the loop's own overhead is most of a step.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _requests(count: int) -> list[Any]:
    from subplug import prompts
    from subplug.testing.media import speech
    from subplug.types import AudioChunk, BackendRequest, ChunkSpan

    texts = ["Hello and welcome to the lesson.", "The quick brown fox jumps.",
             "Today we read a story.", "Thank you for listening."]  # fmt: skip
    found = []
    for index in range(count):
        samples = speech(texts[index % len(texts)], "en")
        task, instruction, source = prompts.first_request("en", ("en", "mn"))
        span = ChunkSpan(index, 0.0, len(samples) / 16_000, ())
        found.append(BackendRequest(AudioChunk(span, samples), instruction, task, source, 64))
    return found


def _hf(backend: Any, requests: list[Any], tokens: int, static: bool) -> int:
    import torch

    inputs = backend.collate([backend.prepare(r) for r in requests])
    extra: dict[str, Any] = {"cache_implementation": "static"} if static else {}
    with torch.inference_mode():
        out = backend.model.generate(
            **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, **extra
        )
    return int(out.shape[1] - inputs["input_ids"].shape[1])


def _ours(backend: Any, requests: list[Any], tokens: int) -> int:
    import torch
    from subplug.backends import decode

    rows = [
        decode.DecodeRow(backend.prompt_ids(r.instruction), backend.audio_tokens(r), tokens)
        for r in requests
    ]
    with torch.inference_mode():
        got = decode.greedy_decode(backend.model, rows, pad_id=backend.pad_id, stop_ids=[])
    return max(len(g) for g in got)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: the tiny model)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from subplug.backends.gemma3n import Gemma3nBackend
    from subplug.testing.tiny import build_tiny_model
    from subplug.types import BackendOptions

    torch.set_num_threads(args.threads)
    folder = args.model or build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-loop-")))
    options = BackendOptions(model=str(folder), device="cpu", threads=args.threads)
    backend = Gemma3nBackend(options)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s); model {folder} ({backend.describe().get('quantize')}); "
          f"{args.tokens} tokens per row, best of {args.repeat}")  # fmt: skip
    ways = {
        "generate, dynamic cache": lambda r: _hf(backend, r, args.tokens, static=False),
        "generate, static cache": lambda r: _hf(backend, r, args.tokens, static=True),
        "subplug loop": lambda r: _ours(backend, r, args.tokens),
    }
    print("| way | batch | s per step CPU (wall) | x generate |")
    print("|---|---:|---:|---:|")
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        requests = _requests(batch)
        prefill: dict[str, tuple[float, float]] = {}
        best: dict[str, tuple[float, float]] = {}
        for name in ways:  # prefill alone: one token
            began = _now()
            if name == "subplug loop":
                _ours(backend, requests, 1)
            else:
                _hf(backend, requests, 1, static=name.endswith("static cache"))
            ended = _now()
            prefill[name] = (ended[0] - began[0], ended[1] - began[1])
        for _ in range(args.repeat):
            for name, way in ways.items():
                began = _now()
                made = way(requests)
                ended = _now()
                wall = (ended[0] - began[0] - prefill[name][0]) / max(1, made - 1)
                cpu = (ended[1] - began[1] - prefill[name][1]) / max(1, made - 1)
                if name not in best or cpu < best[name][1]:
                    best[name] = (wall, cpu)
        base = best["generate, dynamic cache"][1]
        for name, (wall, cpu) in best.items():
            print(f"| {name} | {batch} | {cpu:.4f} ({wall:.4f}) | {cpu / base:.2f} |")
    backend.close()


if __name__ == "__main__":
    main()
