"""Real-time factor of subplug's Gemma 3n stage on this machine. Prints figures; asserts nothing.

Two modes:

``python bench/rtf.py [MEDIA] --model NAME|PATH`` runs the whole pipeline (decode, speech
detection, model, cues, files written to a temporary folder) on MEDIA (default: the
packaged 11 s self-test clip) with a real model folder or cache entry, and prints each
stage's time and the real-time factor (processing time / audio duration; below 1 is
faster than real time). ``--tiny`` builds the tiny offline model and uses it (a quick
check of the bench itself; its figures say nothing about the real model).

``python bench/rtf.py --random-init e2b`` builds a random-initialised, full-size Gemma 3n
E2B, audio-only (speed does not depend on weight values), and measures for each batch
size (``--batch-sizes``, default 1,4,16) on 30 s chunks with the real prompt layout
(188 audio tokens, the combined instruction): the audio encoder's time, the prefill's
time, decode speed, peak memory, and the end-to-end real-time factor of the model stage
for a bilingual answer of ``--answer-tokens`` tokens (decode is measured over
``--decode-tokens`` steps and extrapolated). ``--compare`` adds, in the same process, the
native-bfloat16 figures at batch 1 and the audio encoder in float32, as ratios against
the measured default (bf16-upcast).

Memory: E2B needs about 10.5 GiB of RAM as bf16 (``--dtype bf16-upcast`` or
``bfloat16``) and about 21 GiB as float32.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3
CHUNK_SECONDS = 30.0
MEL_FRAMES = 3000  # 30 s at the feature extractor's 10 ms hop
AUDIO_PAD_FRAMES = 8  # as subplug.backends.gemma3n pads every item


# --------------------------------------------------------------------------- memory


def _status(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` figure of this process in bytes (Linux), else ``None``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss() -> int | None:
    """Resident memory of this process now."""
    return _status("VmRSS")


def peak_rss() -> int | None:
    """Peak resident memory since start (or the last :func:`reset_peak`)."""
    value = _status("VmHWM")
    if value is not None:
        return value
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5), when allowed."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def gib(value: int | None) -> str:
    return "?" if value is None else f"{value / GIB:.2f}"


def machine() -> str:
    """CPU model, cores, SIMD level, RAM and load: what the figures depend on."""
    model, flags = platform.processor() or "?", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    from subplug import runtime

    ram = runtime._meminfo()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return (
        f"{model}; {runtime.physical_cores()} cores for this process; "
        f"{'/'.join(simd) or 'no AVX2'}; RAM {gib(ram.get('MemTotal'))} GiB total, "
        f"{gib(ram.get('MemAvailable'))} GiB available; load average {load[0]:.1f}"
    )


# ------------------------------------------------------------------- pipeline mode


def bench_pipeline(args: argparse.Namespace) -> None:
    """Whole pipeline on a media file with a real (or the tiny) model."""
    import torch
    from subplug import plugins
    from subplug.engine import Engine
    from subplug.selftest import make_video, speech_clip_path
    from subplug.types import BackendOptions, GenerateOptions, JobEvent

    with tempfile.TemporaryDirectory(prefix="subplug-bench-") as tmp:
        work = Path(tmp)
        model = args.model
        if args.tiny:
            from subplug.testing.tiny import build_tiny_model

            model = str(build_tiny_model(work / "tiny"))
        media = args.media or make_video(speech_clip_path(), work / "clip.mp4")
        options = GenerateOptions(
            source=args.source,
            formats=("ass", "srt"),
            out_dir=work / "out",
            backend_options=BackendOptions(
                model=model,
                device=args.device,
                dtype=args.dtype,
                batch_size=args.batch_size,
                threads=args.threads,
            ),
            resume=False,
        )
        (work / "out").mkdir()
        started = time.perf_counter()
        backend = plugins.backends()[options.backend](options.backend_options)
        load = time.perf_counter() - started
        facts = dict(backend.describe())
        marks: list[tuple[str, float]] = []

        def on_event(event: JobEvent) -> None:
            if event.kind == "stage":
                marks.append((str(event.data["stage"]), time.perf_counter()))

        with Engine(events=on_event, backend=backend) as engine:
            started = time.perf_counter()
            tracks = engine.generate(Path(media), options)
            marks.append(("write", time.perf_counter()))
            engine.write(tracks, options)
            marks.append(("end", time.perf_counter()))
        backend.close()
        total = marks[-1][1] - started
        duration = tracks.duration or 0.0
        print(f"machine: {machine()}")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(
            f"model: {facts.get('model')} ({facts.get('params', 0) / 1e9:.2f} B parameters, "
            f"{facts.get('device')}, {facts.get('dtype')}, batch {facts.get('batch_size')})"
        )
        print(f"media: {media} ({duration:.1f} s, {len(tracks.transcripts)} chunks)")
        print(f"{'stage':<12} {'seconds':>9}")
        print(f"{'model-load':<12} {load:9.2f}")
        for (name, begin), (_next, end) in zip(marks, marks[1:], strict=False):
            print(f"{name:<12} {end - begin:9.2f}")
        print(f"{'total':<12} {total:9.2f}   (model load not included)")
        if duration:
            print(f"real-time factor: {total / duration:.3f}  (processing seconds per second)")
        print(f"peak memory: {gib(peak_rss())} GiB")


# ---------------------------------------------------------------- random-init mode


@dataclass
class Figures:
    """One batch size's measurements: wall-clock seconds, and the CPU seconds this process
    used (all its threads), which a machine busy with other work inflates far less."""

    batch: int
    encoder_s: float
    prefill_s: float
    step_s: float
    """Seconds per decode step (one token for every sequence of the batch)."""
    encoder_cpu: float
    prefill_cpu: float
    step_cpu: float
    steps: int
    peak: int | None
    answer_tokens: int

    @property
    def tokens_per_s(self) -> float:
        """Decoded tokens per second, all sequences together."""
        return self.batch / self.step_s

    @property
    def chunk_seconds(self) -> float:
        """Model time for the whole batch of 30 s chunks, each with a full answer."""
        return self.encoder_s + self.prefill_s + self.answer_tokens * self.step_s

    @property
    def chunk_cpu(self) -> float:
        return self.encoder_cpu + self.prefill_cpu + self.answer_tokens * self.step_cpu

    @property
    def rtf(self) -> float:
        return self.chunk_seconds / (CHUNK_SECONDS * self.batch)

    @property
    def rtf_cpu(self) -> float:
        """Real-time factor counted in CPU seconds (the wall figure with the machine to
        itself and one thread; with more threads, divide by the speed-up they give)."""
        return self.chunk_cpu / (CHUNK_SECONDS * self.batch)


def _fill_random(model: Any) -> None:
    """Random values at the real initialisation's scale (std 0.02) for matrices, ones for
    norm scales, zeros for the scales Gemma 3n initialises to zero."""
    import torch

    generator = torch.Generator().manual_seed(0)
    bound = 0.02 * 3**0.5
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.uniform_(-bound, bound, generator=generator)
            elif name.endswith(("per_dim_scale", "correct_output_scale")):
                param.zero_()
            else:
                param.fill_(1.0)


def build_random_e2b(dtype: str) -> Any:
    """A random-initialised E2B, audio-only, stored as ``dtype`` requires."""
    import torch
    from subplug import runtime
    from subplug.backends.gemma3n import audio_only_model_class, e2b_config

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights

    with no_init_weights():
        model = audio_only_model_class()._from_config(
            e2b_config(), dtype=runtime.torch_dtype(dtype), attn_implementation="sdpa"
        )
    model.tie_weights()  # skipped with the initialisation: the head is the embedding
    _fill_random(model)
    model.eval()
    torch.manual_seed(0)
    return model


def load_checkpoint(folder: Path, dtype: str) -> Any:
    """Load a saved checkpoint the way the backend does (audio-only class, SDPA), then
    read every weight once: safetensors maps the file lazily, so without this the first
    generation would pay for reading the weights."""
    import torch
    from subplug import runtime
    from subplug.backends.gemma3n import audio_only_model_class, quiet_loading

    with quiet_loading():
        model = audio_only_model_class().from_pretrained(
            folder, dtype=runtime.torch_dtype(dtype), attn_implementation="sdpa"
        )
    model.eval()
    with torch.no_grad():
        for param in model.parameters():
            param.view(-1)[:: max(1, 4096 // param.element_size())].sum()
    return model


def e2b_inputs(batch: int, dtype: Any) -> dict[str, Any]:
    """Model inputs shaped like subplug's: the chat template around 188 audio tokens and
    the combined instruction (real Gemma ids for the special tokens, arbitrary text ids),
    with 30 s of mel features per item (plus the backend's masked padding)."""
    import torch

    generator = torch.Generator().manual_seed(1)

    def text(n: int) -> list[int]:
        return torch.randint(1000, 200_000, (n,), generator=generator).tolist()

    bos, start_turn, end_turn, boa, eoa, audio = 2, 105, 106, 256000, 262272, 262273
    prompt = (
        [bos, start_turn, *text(2), *text(1), boa]
        + [audio] * 188
        + [eoa, *text(1), *text(16), end_turn, *text(1), start_turn, *text(2)]
    )
    ids = torch.tensor([prompt] * batch)
    frames = MEL_FRAMES + AUDIO_PAD_FRAMES
    features = torch.randn(batch, frames, 128, generator=generator).to(dtype)
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    mask[:, :MEL_FRAMES] = True
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "input_features": features,
        "input_features_mask": mask,
    }


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


class _Stamps:
    """A logits processor that only records when each generation step's logits arrive
    (and checks for NaN: the random model must not compute on garbage; -inf is fine,
    ``min_new_tokens`` puts it on the stop tokens)."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []
        self.finite = True

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        self.times.append(_now())
        self.finite = self.finite and not bool(torch.isnan(scores).any())
        return scores


@contextlib.contextmanager
def _timed(module: Any, into: list[tuple[float, float]]) -> Iterator[None]:
    """Add the (wall, CPU) seconds every forward call of ``module`` takes to ``into``."""
    start: list[tuple[float, float]] = []

    def after(*_: Any) -> None:
        wall, cpu = _now()
        began = start.pop()
        into.append((wall - began[0], cpu - began[1]))

    pre = module.register_forward_pre_hook(lambda *_: start.append(_now()))
    post = module.register_forward_hook(after)
    try:
        yield
    finally:
        pre.remove()
        post.remove()


def measure(model: Any, batch: int, decode_tokens: int, answer_tokens: int) -> Figures:
    """Encoder, prefill and decode figures for one batch of 30 s chunks."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    inputs = e2b_inputs(batch, next(model.parameters()).dtype)
    stamps = _Stamps()
    encoder: list[tuple[float, float]] = []
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=decode_tokens,
        min_new_tokens=decode_tokens,
        eos_token_id=[1, 106],
        pad_token_id=0,
    )
    reset_peak()
    with torch.inference_mode(), _timed(model.model.audio_tower, encoder):
        started = _now()
        model.generate(
            **inputs, generation_config=config, logits_processor=LogitsProcessorList([stamps])
        )
    if not stamps.finite:
        print("warning: NaN logits; the figures may not be representative")
    steps = len(stamps.times) - 1
    first, last = stamps.times[0], stamps.times[-1]
    enc_wall = sum(w for w, _ in encoder)
    enc_cpu = sum(c for _, c in encoder)
    return Figures(
        batch=batch,
        encoder_s=enc_wall,
        prefill_s=first[0] - started[0] - enc_wall,
        step_s=(last[0] - first[0]) / max(1, steps),
        encoder_cpu=enc_cpu,
        prefill_cpu=first[1] - started[1] - enc_cpu,
        step_cpu=(last[1] - first[1]) / max(1, steps),
        steps=steps,
        peak=peak_rss(),
        answer_tokens=answer_tokens,
    )


def encoder_seconds(model: Any, dtype: Any) -> tuple[float, float]:
    """The audio tower's (wall, CPU) seconds on one 30 s chunk, run alone."""
    import torch

    inputs = e2b_inputs(1, dtype)
    with torch.inference_mode():
        started = _now()
        model.model.audio_tower(inputs["input_features"], ~inputs["input_features_mask"])
        ended = _now()
    return ended[0] - started[0], ended[1] - started[1]


def _row(f: Figures) -> str:
    return (
        f"{f.batch:>5} {f.encoder_s:>8.1f} {f.encoder_cpu:>8.1f} {f.prefill_s:>8.1f} "
        f"{f.prefill_cpu:>8.1f} {f.step_s:>7.2f} {f.step_cpu:>7.2f} {f.tokens_per_s:>6.2f} "
        f"{f.batch / f.step_cpu:>6.2f} {gib(f.peak):>6} {f.rtf:>6.2f} {f.rtf_cpu:>6.2f}"
    )


HEADER = (
    f"{'batch':>5} {'enc s':>8} {'enc cpu':>8} {'pre s':>8} {'pre cpu':>8} {'s/step':>7} "
    f"{'cpu/st':>7} {'tok/s':>6} {'tok/cs':>6} {'peakGi':>6} {'RTF':>6} {'RTFcpu':>6}"
)


def bench_random_init(args: argparse.Namespace) -> None:
    """Figures for a random-initialised full-size E2B."""
    import gc

    import torch
    from subplug import runtime
    from subplug.backends.gemma3n import quiet_loading

    dtype = runtime.choose_dtype(args.dtype, "cpu")
    threads = runtime.configure_threads("cpu", args.threads)
    print(f"machine: {machine()}")
    print(f"torch {torch.__version__}, {threads} threads; dtype {dtype}")
    print(
        f"answer: {args.answer_tokens} tokens per 30 s chunk (bilingual); decode measured "
        f"over {args.decode_tokens} steps"
    )
    folder: Path | None = args.checkpoint
    if folder is None or not (folder / "config.json").is_file():
        started = _now()
        model = build_random_e2b(dtype)
        built = _now()
        print(
            f"built a random E2B in {built[0] - started[0]:.1f} s "
            f"({built[1] - started[1]:.1f} CPU s); resident {gib(rss())} GiB",
            flush=True,
        )
        if folder is not None:
            with quiet_loading():
                model.save_pretrained(folder)
            print(f"saved to {folder} in {time.perf_counter() - built[0]:.1f} s", flush=True)
            del model
            gc.collect()
    if folder is not None:
        reset_peak()
        started = _now()
        model = load_checkpoint(folder, dtype)
        loaded = _now()
        print(
            f"loaded {folder} (audio-only, {dtype}) in {loaded[0] - started[0]:.1f} s "
            f"({loaded[1] - started[1]:.1f} CPU s); resident {gib(rss())} GiB, "
            f"peak while loading {gib(peak_rss())} GiB",
            flush=True,
        )
    runtime.apply_compute_policy(model, dtype)
    params = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if "vision_tower" in n)
    print(f"E2B audio-only: {params / 1e9:.3f} B parameters (vision tower: {vision})")
    rows: list[Figures] = []
    print(HEADER, flush=True)
    for batch in args.batch_sizes:
        rows.append(measure(model, batch, args.decode_tokens, args.answer_tokens))
        print(_row(rows[-1]), flush=True)
    if args.compare and dtype in ("bfloat16", "bf16-upcast"):
        first = rows[0] if rows and rows[0].batch == 1 else None
        compare(model, dtype, first, args)


def compare(model: Any, dtype: str, measured: Figures | None, args: argparse.Namespace) -> None:
    """The other bf16 compute mode at batch 1 (same weights, same process), and the audio
    encoder in float32, as ratios (of CPU seconds) to ``dtype``'s figures."""
    import torch
    from subplug import runtime

    if measured is None:
        measured = measure(model, 1, args.decode_tokens, args.answer_tokens)
    if dtype == "bf16-upcast":
        for module in model.modules():  # drop the upcasting forwards: native bfloat16
            module.__dict__.pop("forward", None)
        other_name = "bfloat16"
    else:
        runtime.apply_compute_policy(model, "bf16-upcast")
        other_name = "bf16-upcast"
    other = measure(model, 1, args.decode_tokens, args.answer_tokens)
    print(f"same weights, {other_name} compute, batch 1 (CPU-seconds ratio to {dtype}):")
    print(HEADER)
    print(_row(other))
    print(
        f"  encoder {other.encoder_cpu / measured.encoder_cpu:.2f}x, prefill "
        f"{other.prefill_cpu / measured.prefill_cpu:.2f}x, decode step "
        f"{other.step_cpu / measured.step_cpu:.2f}x, RTF {other.rtf_cpu / measured.rtf_cpu:.2f}x",
        flush=True,
    )
    for module in model.modules():
        module.__dict__.pop("forward", None)
    native_encoder = encoder_seconds(model, next(model.parameters()).dtype)
    model.model.audio_tower.float()
    fp32_encoder = encoder_seconds(model, torch.float32)
    print(
        f"audio encoder alone, one 30 s chunk: bfloat16 {native_encoder[0]:.1f} s "
        f"({native_encoder[1]:.1f} CPU s), float32 {fp32_encoder[0]:.1f} s "
        f"({fp32_encoder[1]:.1f} CPU s): float32/bfloat16 "
        f"{fp32_encoder[1] / native_encoder[1]:.2f}x",
        flush=True,
    )


# ------------------------------------------------------------------------------ main


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("media", nargs="?", type=Path, help="media file (pipeline mode)")
    parser.add_argument("--model", help="cache name or folder (pipeline mode)")
    parser.add_argument("--tiny", action="store_true", help="use the tiny offline model")
    parser.add_argument("--random-init", choices=["e2b"], help="random-initialised full size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--source", default="en", choices=["auto", "en", "mn"])
    parser.add_argument("--batch-size", type=int, default=None, help="pipeline mode")
    parser.add_argument(
        "--batch-sizes", type=_ints, default=[1, 4, 16], metavar="N,N", help="random-init mode"
    )
    parser.add_argument("--decode-tokens", type=int, default=16, metavar="N")
    parser.add_argument("--answer-tokens", type=int, default=240, metavar="N")
    parser.add_argument("--compare", action="store_true", help="also the other bf16 mode / fp32")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="random-init mode: save the random model here (about 10 GB) and load it back "
        "to time loading; reused when it already holds one",
    )
    args = parser.parse_args(argv)
    if not (args.random_init or args.model or args.tiny):
        parser.error("give --model NAME|PATH, --tiny or --random-init e2b")
    if args.decode_tokens < 2:
        parser.error("--decode-tokens must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.random_init:
        bench_random_init(args)
    else:
        bench_pipeline(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
