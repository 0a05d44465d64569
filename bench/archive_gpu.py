"""The archive job on a GPU, one command: random-initialised Gemma 3n E2B, cross-file
batching, bilingual answers of real length. Prints figures; asserts nothing.

    python bench/archive_gpu.py --checkpoint /data/e2b-random   # builds it (~10 GB) once

Builds (or reuses) the random E2B checkpoint of bench/rtf.py (real shape, audio-only,
loadable by the real backend), makes ``--files`` media files of ``--min``–``--max``
seconds of speech (bench/archive.py), and subtitles them with ``--source en`` on
``--device`` (default ``cuda``) two ways in one process, one model load: the engine over
the files one by one, then the job with cross-file batching (the runtime's batch size
from free memory unless ``--batch-size``). Random weights never stop by themselves, so
every answer is held to a real bilingual answer's length (``--answer-tokens`` per 30 s
of speech, as bench/rtf.py does). Prints audio-hours per hour (= × real time), batch
fill, and whether the target (``--target``, 200× real time on one H100-class GPU) is met.

    python bench/archive_gpu.py --smoke    # the same steps with the tiny model on the CPU

``--smoke`` checks the script itself where there is no GPU: the tiny random model
instead of E2B, on the CPU, 3 short files; its figures say nothing about a GPU.

Not run for this work: no GPU was available (docs/performance.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import archive  # noqa: E402  (bench/archive.py)
import rtf  # noqa: E402  (bench/rtf.py)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="random E2B folder")
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU (module doc)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    parser.add_argument("--files", type=int, default=None, help="default: 200 (3 with --smoke)")
    parser.add_argument("--min", type=float, default=None, help="default: 10 (4 with --smoke)")
    parser.add_argument("--max", type=float, default=None, help="default: 90 (12 with --smoke)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--answer-tokens", type=int, default=240)
    parser.add_argument("--kept-tokens", type=int, default=131_072)
    parser.add_argument("--ways", default="one-by-one,cross-file")
    parser.add_argument("--target", type=float, default=200.0)
    args = parser.parse_args()
    if args.checkpoint is None and not args.smoke:
        parser.error("give --checkpoint FOLDER (the random E2B is built there), or --smoke")
    smoke = args.smoke
    args.device = args.device or ("cpu" if smoke else "cuda")
    args.files = args.files or (3 if smoke else 200)
    args.min = args.min if args.min is not None else (4.0 if smoke else 10.0)
    args.max = args.max if args.max is not None else (12.0 if smoke else 90.0)

    from subplug import prompts
    from subplug.types import BackendOptions, GenerateOptions

    work = Path(tempfile.mkdtemp(prefix="bench-archive-gpu-"))
    if smoke:
        from subplug.testing.tiny import build_tiny_model

        args.checkpoint = build_tiny_model(work / "tiny")
    else:
        rtf.ensure_e2b_folder(args.checkpoint, args.kept_tokens)
    real_budget = prompts.max_new_tokens_for
    per_second = args.answer_tokens / 30.0

    def held(seconds: float, task: prompts.Task) -> int:
        share = 1.0 if task is prompts.Task.BOTH else 0.5
        return min(real_budget(seconds, task), max(8, round(per_second * share * seconds)))

    prompts.max_new_tokens_for = held  # type: ignore[assignment]
    audio = archive.make_archive(work / "media", args.files, args.min, args.max, seed=13)
    media = sorted(p for p in (work / "media").rglob("*") if p.is_file())
    print(f"{rtf.machine()}\n{args.files} files, {audio / 3600:.2f} h of audio")
    model = BackendOptions(
        model=str(args.checkpoint), device=args.device, batch_size=args.batch_size
    )
    print(f"{'way':<12} {'wall s':>8} {'audio-h/h':>10} {'calls':>6} {'fill':>6}")
    for way in args.ways.split(","):
        options = GenerateOptions(
            backend="gemma3n",
            source="en",
            backend_options=model,
            out_dir=work / f"out-{way}",
            resume=False,
        )
        row = archive.run_way(way, media, options, ray_cpus=0)
        speed = audio / row["wall"]
        verdict = "meets" if speed >= args.target else "misses"
        print(
            f"{way:<12} {row['wall']:8.1f} {speed:10.1f} {row['calls']:6d} {row['fill']:6.2f}"
            f"  ({verdict} {args.target:g}x)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
