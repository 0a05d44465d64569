"""Subtitling an archive: one-by-one vs cross-file batching vs a local Ray cluster.

    python bench/archive.py                          # fake backend and tiny model
    python bench/archive.py --backends fake --files 40 --min 10 --max 90
    python bench/archive.py --backends tiny --files 12 --min 10 --max 40

Makes ``--files`` media files of ``--min``–``--max`` seconds of speech (espeak-ng
sentences with pauses, mixed containers), then subtitles all of them three ways, each
in a fresh ``SUBPLUG_HOME`` (nothing resumed, nothing skipped), with one model load per
way:

* ``one-by-one``: the engine over the files in turn (``subplug generate a b c`` before
  jobs: batches hold chunks of one file only);
* ``cross-file``: the job on this machine (decoding ahead in worker threads, batches
  from many files);
* ``ray``: the same job on a local Ray cluster with ``--ray-cpus`` CPUs (CPU tasks
  decode, one model actor).

For each it prints wall seconds, CPU seconds (this process and its children, Ray's
worker processes included), audio-hours per hour (audio seconds / wall seconds) and the
batch fill (chunks per batch over the batch size; a batch is one call of
``transcribe()``: one model call, and a second for chunks that lack a language), and
each way's speed over the first way's in the same run (a ratio that a noisy shared
machine disturbs less).
``fake`` is the fake backend (no model compute: the pipeline's own cost); ``tiny`` is
the tiny random Gemma 3n on the CPU (real model code, tiny matrices). Neither says how
fast E2B is: bench/archive_gpu.py.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SENTENCES = (
    "The archive holds many recordings from the old radio station.",
    "Each tape was copied before it could fade away.",
    "Some of the speakers are famous, most are not.",
    "We listen to them again to write down what they said.",
    "The weather report came every morning at seven.",
    "Children sang a song about the river and the mountains.",
    "A farmer explained how to keep horses through the winter.",
    "The lecture was about the history of writing.",
    "Thank you for listening, and good night.",
    "Questions from listeners were read out on Friday.",
)
EXTENSIONS = ("wav", "mp3", "ogg", "flac", "m4a", "mp4", "mkv", "opus")


def make_archive(folder: Path, count: int, shortest: float, longest: float, seed: int) -> float:
    """``count`` files under ``folder``; returns the seconds of audio."""
    from subplug.testing.media import speech_clip

    rng = random.Random(seed)
    total = 0.0
    for number in range(count):
        target = rng.uniform(shortest, longest)
        texts: list[str] = []
        seconds = 2.0
        while seconds < target:
            texts.append(rng.choice(SENTENCES))
            seconds += 3.6
        extension = EXTENSIONS[number % len(EXTENSIONS)]
        path = folder / f"part{number % 3}" / f"tape{number:03d}.{extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        clip = speech_clip(
            path, texts, pause=rng.uniform(0.3, 1.5), video=extension in ("mp4", "mkv")
        )
        total += clip.duration
    return total


def cpu_seconds() -> float:
    """CPU seconds of this process and its children, live ones included (psutil)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
    except ImportError:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += children.ru_utime + children.ru_stime
    return total


def run_way(way: str, media: list[Path], options: Any, ray_cpus: int) -> dict[str, Any]:
    from subplug import plugins
    from subplug.engine import Engine
    from subplug.jobs.inputs import JobFile
    from subplug.jobs.run import run_job

    batches: list[tuple[int, int]] = []

    def events(event: Any) -> None:
        if event.kind == "batch-done":
            batches.append((event.data["chunks"], event.data["capacity"]))

    home = tempfile.mkdtemp(prefix=f"bench-{way}-")
    os.environ["SUBPLUG_HOME"] = home
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    if way == "one-by-one":
        # A batch is one call of transcribe() (the chunks it was given; a second round
        # for chunks missing a language is part of it), as the job's batch-done counts.
        from subplug import transcribe

        backend = plugins.load_backend(options.backend, options.backend_options)
        size = transcribe.batch_size_of(backend, options.backend_options.batch_size)
        real = transcribe.transcribe

        def counted(backend: Any, chunks: Any, *args: Any, **kwargs: Any) -> Any:
            batches.append((len(chunks), size))
            return real(backend, chunks, *args, **kwargs)

        transcribe.transcribe = counted  # type: ignore[assignment]
        try:
            with Engine(events=events, backend=backend) as engine:
                results = engine.run(media, options)
        finally:
            transcribe.transcribe = real  # type: ignore[assignment]
            backend.close()
        failed = sum(r is None for r in results)
    else:
        started = False
        if way == "ray":
            import ray

            ray.init(
                num_cpus=ray_cpus,
                object_store_memory=400 * 2**20,
                include_dashboard=False,
                log_to_driver=False,
            )
            started = True
        try:
            state, _ = run_job(
                options,
                [JobFile(m) for m in media],
                ray="local" if way == "ray" else None,
                events=events,
            )
            failed = state.report.count("failed")
            cpu1 = cpu_seconds()
        finally:
            if started:
                import ray

                ray.shutdown()
    wall = time.monotonic() - wall0
    cpu = (cpu1 if way == "ray" else cpu_seconds()) - cpu0
    chunks = sum(c for c, _ in batches)
    room = sum(s for _, s in batches)
    return {
        "wall": wall,
        "cpu": cpu,
        "calls": len(batches),
        "chunks": chunks,
        "fill": chunks / room if room else 0.0,
        "failed": failed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="fake,tiny")
    parser.add_argument("--ways", default="one-by-one,cross-file,ray")
    parser.add_argument("--files", type=int, default=None, help="default: 40 (fake), 12 (tiny)")
    parser.add_argument("--min", type=float, default=10.0)
    parser.add_argument("--max", type=float, default=None, help="default: 90 (fake), 40 (tiny)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    from subplug import plugins
    from subplug.testing import FakeBackendPlugin
    from subplug.types import BackendOptions, GenerateOptions

    os.environ["SUBPLUG_PLUGINS"] = "subplug.testing.fake"  # Ray workers see the fake too
    plugins.reset_plugin_manager()
    if "fake" not in plugins.backends():
        plugins.register(FakeBackendPlugin(), name="fake-backend")
    work = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    print(f"machine: {os.cpu_count()} CPUs seen, load average {os.getloadavg()[0]:.1f}")
    for name in args.backends.split(","):
        files = args.files or (40 if name == "fake" else 12)
        longest = args.max or (90.0 if name == "fake" else 40.0)
        folder = work / f"{name}-media"
        audio = make_archive(folder, files, args.min, longest, args.seed)
        media = sorted(p for p in folder.rglob("*") if p.is_file())
        if name == "fake":
            backend, model = "fake", BackendOptions(batch_size=args.batch_size)
        else:
            from subplug.testing.tiny import build_tiny_model

            path = build_tiny_model(work / "tiny")
            model = BackendOptions(
                model=str(path), device="cpu", dtype="fp32", threads=1, batch_size=args.batch_size
            )
            backend = "gemma3n"
        print(
            f"\n{name}: {files} files, {audio / 60:.1f} min of audio "
            f"({args.min:g}-{longest:g} s each)"
        )
        print(
            f"{'way':<12} {'wall s':>8} {'CPU s':>8} {'audio-h/h':>10} {'calls':>6} "
            f"{'chunks':>7} {'fill':>6} {'speed vs first':>14}"
        )
        first: float | None = None
        for way in args.ways.split(","):
            options = GenerateOptions(
                backend=backend,
                source="en",
                backend_options=model,
                out_dir=work / f"out-{name}-{way}",
                formats=("ass", "srt"),
            )
            row = run_way(way, media, options, args.ray_cpus)
            first = first or row["wall"]
            print(
                f"{way:<12} {row['wall']:8.1f} {row['cpu']:8.1f} {audio / row['wall']:10.1f} "
                f"{row['calls']:6d} {row['chunks']:7d} {row['fill']:6.2f} "
                f"{first / row['wall']:13.2f}x"
                + (f"  ({row['failed']} failed)" if row["failed"] else ""),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
