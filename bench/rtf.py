"""Real-time factor of subplug's Gemma 3n stage on this machine. Prints figures; asserts nothing.

Two modes, each comparing settings (``--settings``, a comma-separated list of
``none``/``int8``/``int8-trim``/``int4``/``int4-trim``; the first is the baseline every
ratio refers to) **in the same run**: each setting is measured in a process of its own,
one after the other, so each gets its own peak-memory figure, and the machine's load
moves as little as possible between them.

``python bench/rtf.py --random-init e2b --checkpoint DIR`` measures a random-initialised,
full-size Gemma 3n E2B, audio-only (speed does not depend on weight values), loaded the
way ``subplug generate`` loads it (``Gemma3nBackend``: a quantised setting is quantised
from the bf16 checkpoint while it is read). The first run builds the checkpoint in DIR
(about 10 GB; a couple of minutes) with a stand-in processor whose 262,400-token
vocabulary has ``--kept-tokens`` tokens that pass the English/Mongolian character rules
(the real Gemma tokenizer cannot be downloaded here), so a trimmed setting keeps that
many. For each batch size (``--batch-sizes``) it times, on 30 s chunks of real speech:
the audio encoder, the prefill, and ``--decode-tokens`` decode steps, and gives the model
stage's real-time factor for a bilingual answer of ``--answer-tokens`` tokens per chunk,
in wall and in CPU seconds (RTF below 1 is faster than speech). ``--quality`` adds the
teacher-forced top-1 agreement and logit cosine of each setting with the baseline
(subplug.quant.quality).

``python bench/rtf.py MEDIA --model NAME|PATH`` (or ``--random-init e2b --checkpoint DIR``,
or ``--tiny``) runs the whole pipeline — decoding, speech detection, model, cues, files —
on MEDIA (default: the packaged 11 s clip) and prints each stage's time and the RTF.
Random weights never stop by themselves and write no language, so with ``--random-init``
every answer is held to the length a real one has (``--answer-tokens`` per 30 s of
speech, pro rata), and its text (decoded as usual, then set aside) is replaced by words
in the form a trained model answers in: both sections of the combined format for a
combined request, English for a transcription (``--source auto``: detected as English)
and Mongolian for a translation. The pipeline then makes the calls it makes with trained
weights: one combined call per chunk with ``--source en``, a transcription and its
translation (which starts from the kept prompt prefix) with ``--source auto``. Left as
they were, random answers parse as one language and every chunk got a second call a
trained model does not need. The table counts the backend calls and their requests.

``--isa avx2`` caps torch, MKL, oneDNN and fbgemm at AVX2 (environment variables, see
bench/kernels.py), to see what a laptop CPU without AVX-512 gets; the baseline is then
``bf16-upcast``, what ``--dtype auto`` picks on such a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3
CHUNK_SECONDS = 30.0
HERE = Path(__file__).resolve().parent

#: name → (quantize, vocab) of the settings this bench knows.
SETTINGS = {
    "none": ("none", "full"),
    "int8": ("int8", "full"),
    "int8-trim": ("int8", "en-mn"),
    "int4": ("int4", "full"),
    "int4-trim": ("int4", "en-mn"),
}


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
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    from subplug import memory, runtime

    ram = memory._meminfo()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    caps = [f"{k}={v}" for k, v in isa_env("avx2").items() if os.environ.get(k) == v]
    return (
        f"{model}; {runtime.physical_cores()} cores for this process; "
        f"{'/'.join(simd) or 'no AVX2'}{' capped: ' + ' '.join(caps) if caps else ''}; "
        f"RAM {gib(ram.get('MemTotal'))} GiB total, {gib(ram.get('MemAvailable'))} GiB "
        f"available; load average {load[0]:.1f}"
    )


def isa_env(isa: str) -> dict[str, str]:
    """Environment variables that cap torch's kernels at an instruction set."""
    if isa != "avx2":
        return {}
    return {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    }


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


# ------------------------------------------------------------- the random E2B folder


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


def e2b_bench_config() -> Any:
    """E2B's configuration, with the two special ids the stand-in tokenizer places
    elsewhere (``<start_of_image>``, ``<start_of_audio>``; see :func:`e2b_processor`)."""
    from subplug.backends.gemma3n import e2b_config
    from subplug.testing.tiny import SPECIAL_TOKENS

    config = e2b_config()
    config.boi_token_id = SPECIAL_TOKENS.index("<start_of_image>")
    config.boa_token_id = SPECIAL_TOKENS.index("<start_of_audio>")
    return config


def build_random_e2b(dtype: str) -> Any:
    """A random-initialised E2B, audio-only, stored as ``dtype`` requires."""
    import torch
    from subplug import runtime
    from subplug.backends.gemma3n import audio_only_model_class

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights

    with no_init_weights():
        model = audio_only_model_class()._from_config(
            e2b_bench_config(), dtype=runtime.torch_dtype(dtype), attn_implementation="sdpa"
        )
    model.tie_weights()  # skipped with the initialisation: the head is the embedding
    _fill_random(model)
    model.eval()
    torch.manual_seed(0)
    return model


def e2b_processor(kept_tokens: int) -> Any:
    """A ``Gemma3nProcessor`` with E2B's vocabulary layout (262,144 text ids, the vision
    and audio blocks after them) built offline: the tiny model's trained pieces and
    special tokens first, then ``kept_tokens`` stand-in pieces the English/Mongolian
    rules keep (Latin letters) and stand-ins they drop (CJK), for the rest."""
    from subplug.testing import tiny
    from transformers import (
        Gemma3nAudioFeatureExtractor,
        Gemma3nProcessor,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    vocab, merges = tiny._train_tokenizer_vocab()
    text_ids = 262_144
    first = len(vocab)
    for i in range(first, text_ids):
        vocab[f"\u2581w{i}" if i < kept_tokens else f"\u6f22{i}"] = i
    blocks = tiny.media_blocks(128, 128)
    for offset, token in enumerate(blocks):
        vocab[token] = text_ids + offset
    tokenizer = tiny.gemma_tokenizer(vocab, merges, [*tiny.SPECIAL_TOKENS, *blocks])
    return Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(),
        image_processor=SiglipImageProcessorPil(
            size={"height": 768, "width": 768}, do_normalize=False
        ),
        tokenizer=tokenizer,
        chat_template=tiny.CHAT_TEMPLATE,
    )


def ensure_e2b_folder(folder: Path, kept_tokens: int) -> None:
    """Build the random E2B checkpoint into ``folder`` when it is not there, and (re)write
    its stand-in processor for ``kept_tokens``."""
    import gc

    from subplug.backends.gemma3n import quiet_loading

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model.safetensors").is_file():
        began = time.perf_counter()
        model = build_random_e2b("bf16-upcast")
        with quiet_loading():
            model.save_pretrained(folder)
        print(f"built and saved a random E2B in {time.perf_counter() - began:.0f} s", flush=True)
        del model
        gc.collect()
    e2b_bench_config().save_pretrained(folder)
    marker = folder / "bench-kept-tokens.txt"
    if not marker.is_file() or marker.read_text().strip() != str(kept_tokens):
        e2b_processor(kept_tokens).save_pretrained(folder)
        marker.write_text(f"{kept_tokens}\n")


# -------------------------------------------------------------------- the worker


def speech_30s() -> Any:
    """30 s of real speech at 16 kHz (espeak-ng sentences; the packaged clip repeated
    when espeak-ng is missing)."""
    import numpy as np
    from subplug import media, selftest
    from subplug.errors import SubplugError

    try:
        from subplug.testing.media import speech

        samples = speech(
            "The quick brown fox jumps over the lazy dog. We are going to the market "
            "tomorrow morning to buy bread, milk and apples. Please speak slowly so that "
            "everyone in the room can understand you. Where birds sing while the river "
            "flows past old stones under a bright sky. And so, my fellow Americans, ask "
            "not what your country can do for you; ask what you can do for your country.",
            voice="en",
            rate=130,
        )
    except SubplugError:
        samples = media.load_pcm(selftest.speech_clip_path())
    reps = int(np.ceil(CHUNK_SECONDS * 16000 / len(samples)))
    return np.tile(samples, reps)[: int(CHUNK_SECONDS * 16000)].astype(np.float32)


def quality_clips() -> list[tuple[Any, str]]:
    """(samples, source language) of the clips the quality figures use: the packaged
    clip and espeak-ng speech in English and (Russian voice) Mongolian Cyrillic."""
    from subplug import media, selftest
    from subplug.errors import SubplugError

    clips = [(media.load_pcm(selftest.speech_clip_path()), "en")]
    with contextlib.suppress(SubplugError):
        from subplug.testing.media import speech

        clips.append((speech("Hello world. How are you today? I am fine.", voice="en"), "en"))
        clips.append((speech("Сайн байна уу. Өнөөдөр цаг агаар сайхан байна.", voice="ru"), "mn"))
    return clips


def _requests(clips: Sequence[tuple[Any, str]], budget: int) -> list[Any]:
    from subplug import prompts
    from subplug.types import AudioChunk, BackendRequest, ChunkSpan

    found = []
    for index, (samples, source) in enumerate(clips):
        span = ChunkSpan(index, 0.0, len(samples) / 16000, ())
        task, instruction, src = prompts.first_request(source, ("en", "mn"))
        found.append(BackendRequest(AudioChunk(span, samples), instruction, task, src, budget))
    return found


@dataclass
class Figures:
    """One batch size's measurements, wall and CPU seconds of this process."""

    batch: int
    encoder_s: float
    encoder_cpu: float
    prefill_s: float
    prefill_cpu: float
    step_s: float
    step_cpu: float
    answer_tokens: int

    def rtf(self, cpu: bool) -> float:
        enc, pre, step = (
            (self.encoder_cpu, self.prefill_cpu, self.step_cpu)
            if cpu
            else (self.encoder_s, self.prefill_s, self.step_s)
        )
        return (enc + pre + self.answer_tokens * step) / (CHUNK_SECONDS * self.batch)


def measure(backend: Any, batch: int, decode_tokens: int, answer_tokens: int) -> Figures:
    """Encoder, prefill and decode figures for one batch of 30 s chunks."""
    import torch
    from subplug.backends.decode import DecodeRow, greedy_decode

    samples = speech_30s()
    requests = _requests([(samples.copy(), "en") for _ in range(batch)], decode_tokens)
    started = _now()
    with torch.inference_mode():
        audio = [backend.audio_tokens(r) for r in requests]
        encoded = _now()
        rows = [
            DecodeRow(backend.prompt_ids(r.instruction), a, decode_tokens)
            for r, a in zip(requests, audio, strict=True)
        ]
        stamps: list[tuple[float, float]] = []
        greedy_decode(
            backend.model, rows, pad_id=backend.pad_id, stop_ids=[],
            on_step=lambda _n: stamps.append(_now()),
        )  # fmt: skip
    steps = max(1, len(stamps) - 1)
    return Figures(
        batch=batch,
        encoder_s=encoded[0] - started[0],
        encoder_cpu=encoded[1] - started[1],
        prefill_s=stamps[0][0] - encoded[0],
        prefill_cpu=stamps[0][1] - encoded[1],
        step_s=(stamps[-1][0] - stamps[0][0]) / steps,
        step_cpu=(stamps[-1][1] - stamps[0][1]) / steps,
        answer_tokens=answer_tokens,
    )


def build_copy(args: argparse.Namespace) -> None:
    """Build the quantised copy of the checkpoint for one setting and save it where
    ``generate`` would keep it (a folder with ``subplug-quant.json``), timing the build
    and its peak memory; prints JSON."""
    from subplug import runtime
    from subplug.backends import gemma3n_model, gemma3n_quant
    from subplug.prompts import INSTRUCTIONS
    from subplug.quant import heap
    from subplug.quant.convert import save_quantized
    from transformers import AutoConfig, AutoProcessor

    quantize, vocab = SETTINGS[args.setting]
    reset_peak()
    began = _now()
    heap.large_blocks_to_os()
    folder = Path(args.model_folder)
    processor = AutoProcessor.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    choice = runtime.choose_quantize(quantize, vocab, "cpu", params=10**10)
    kept = gemma3n_quant.kept_vocabulary(processor, config, INSTRUCTIONS)
    spec = gemma3n_quant.spec_for(choice, kept, params=gemma3n_model.count_params(config))
    model = gemma3n_quant.build(folder, None, spec)
    built = _now()
    target = Path(args.save_to)
    target.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(target)
    processor.save_pretrained(target)
    save_quantized(model, target)
    saved = _now()
    size = sum(f.stat().st_size for f in target.iterdir())
    print(json.dumps({"result": {
        "build_s": built[0] - began[0], "build_cpu": built[1] - began[1],
        "save_s": saved[0] - built[0], "build_peak": peak_rss(), "bytes": size,
        "kept": None if spec.kept_ids is None else len(spec.kept_ids),
    }}), flush=True)  # fmt: skip


def worker(args: argparse.Namespace) -> None:
    """Measure one setting (in a process of its own) and print its figures as JSON."""
    import gc

    import torch
    from subplug.backends import gemma3n_quant
    from subplug.backends.gemma3n import Gemma3nBackend
    from subplug.types import BackendOptions

    quantize, vocab = SETTINGS[args.setting]
    dtype = args.baseline_dtype if quantize == "none" else "auto"
    reset_peak()
    began = _now()
    backend = Gemma3nBackend(
        BackendOptions(
            model=str(args.model_folder), device="cpu", dtype=dtype, quantize=quantize,
            vocab=vocab, threads=args.threads, batch_size=max(args.batch_sizes),
        )
    )  # fmt: skip
    loaded = _now()
    gc.collect()
    result: dict[str, Any] = {
        "setting": args.setting,
        "describe": {
            k: v
            for k, v in backend.describe().items()
            if isinstance(v, (str, int, float, type(None)))
        },
        "load_s": loaded[0] - began[0],
        "load_cpu": loaded[1] - began[1],
        "load_peak": peak_rss(),
        "resident": rss(),
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "rows": [],
    }
    if args.mode == "pipeline":
        result["pipeline"] = pipeline_figures(backend, args)
    else:
        for batch in args.batch_sizes:
            figures = measure(backend, batch, args.decode_tokens, args.answer_tokens)
            if backend.quant.least_memory:  # what the backend does after each batch
                from subplug.quant import heap

                heap.release_to_os()
            result["rows"].append(asdict(figures))
            print(json.dumps({"progress": asdict(figures)}), flush=True)
        if args.reference is not None:
            requests = _requests(quality_clips(), 64)
            if args.write_reference:
                answers = gemma3n_quant.reference_answers(backend, requests)
                torch.save(answers, args.reference)
            elif args.reference.is_file():
                answers = torch.load(args.reference)
                result["quality"] = gemma3n_quant.agreement(backend, requests, answers).to_json()
    result["peak"] = peak_rss()
    print(json.dumps({"result": result}), flush=True)


# ------------------------------------------------------------------ pipeline mode


def pipeline_figures(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The whole pipeline on ``args.media`` with an already loaded backend."""
    from subplug import prompts
    from subplug.engine import Engine
    from subplug.selftest import make_video, speech_clip_path
    from subplug.types import GenerateOptions, JobEvent

    if args.random_init:
        per_second = args.answer_tokens / CHUNK_SECONDS
        real_budget = prompts.max_new_tokens_for

        def held(seconds: float, task: Any) -> int:
            """A real answer's length: random weights never stop by themselves."""
            share = 1.0 if task is prompts.Task.BOTH else 0.5
            return min(real_budget(seconds, task), max(8, round(per_second * share * seconds)))

        prompts.max_new_tokens_for = held  # type: ignore[assignment]
        _answer_in_form(backend)
    calls = _count_calls(backend)
    parts = _time_model_parts(backend)
    with tempfile.TemporaryDirectory(prefix="subplug-bench-") as tmp:
        work = Path(tmp)
        media = args.media or make_video(speech_clip_path(), work / "clip.mp4")
        options = GenerateOptions(
            source=args.source, formats=("ass", "srt"), out_dir=work, resume=False,
            backend_options=backend.options,
        )  # fmt: skip
        marks: list[tuple[str, float, float]] = []

        def on_event(event: JobEvent) -> None:
            if event.kind == "stage":
                marks.append((str(event.data["stage"]), *_now()))

        with Engine(events=on_event, backend=backend) as engine:
            started = _now()
            tracks = engine.generate(Path(media), options)
            marks.append(("write", *_now()))
            engine.write(tracks, options)
            marks.append(("end", *_now()))
    stages = {}
    for (name, wall, cpu), (_n, wall2, cpu2) in zip(marks, marks[1:], strict=False):
        stages[name] = (wall2 - wall, cpu2 - cpu)
    return {
        "media": str(media),
        "duration": tracks.duration,
        "chunks": len(tracks.transcripts),
        "wall": marks[-1][1] - started[0],
        "cpu": marks[-1][2] - started[1],
        "stages": stages,
        "calls": calls,
        "parts": parts,
    }


def _answer_in_form(backend: Any) -> None:
    """Give each of a random-weight backend's answers the form a trained model's answer
    has, with one word per two tokens generated (module docstring)."""
    from subplug import prompts
    from subplug.types import Task

    decode = backend.decode_answer

    def in_form(ids: Sequence[int], request: Any) -> str:
        decode(ids, request)
        words = max(1, len(ids) // 2)
        source = request.source or "en"
        if request.task is Task.BOTH:
            each = max(1, words // 2)
            langs = (source, prompts.other_language(source))
            return prompts.combined_target(source, {lang: _words(lang, each) for lang in langs})
        lang = source if request.task is Task.TRANSCRIBE else prompts.other_language(source)
        return _words(lang, words)

    backend.decode_answer = in_form


def _words(lang: str, count: int) -> str:
    word = "үг" if lang == "mn" else "word"
    return " ".join([word] * count) + "."


def _time_model_parts(backend: Any) -> dict[str, float]:
    """CPU seconds of the model work as it happens, by part: the audio encoder (with its
    features), each batch's prefill (up to its first step) and its decoding steps, and
    the rows decoded summed over steps."""
    from subplug.backends import decode

    parts = {"encoder": 0.0, "prefill": 0.0, "decode": 0.0, "row_steps": 0.0}
    audio_tokens = backend.audio_tokens
    greedy_decode = decode.greedy_decode

    def timed_audio(request: Any) -> Any:
        began = time.process_time()
        out = audio_tokens(request)
        parts["encoder"] += time.process_time() - began
        return out

    def timed_decode(model: Any, rows: Any, **kwargs: Any) -> Any:
        began = time.process_time()
        first: list[float] = []
        told = kwargs.get("on_step")

        def on_step(count: int) -> None:
            if not first:
                first.append(time.process_time())
            parts["row_steps"] += count
            if told is not None:
                told(count)

        out = greedy_decode(model, rows, **{**kwargs, "on_step": on_step})
        ended = time.process_time()
        start = first[0] if first else ended
        parts["prefill"] += start - began
        parts["decode"] += ended - start
        return out

    backend.audio_tokens = timed_audio
    decode.greedy_decode = timed_decode
    return parts


def _count_calls(backend: Any) -> list[int]:
    """The number of requests of each of ``backend.generate``'s calls, as they happen."""
    calls: list[int] = []
    generate = backend.generate

    def counted(requests: Sequence[Any], **kwargs: Any) -> Any:
        calls.append(len(requests))
        return generate(requests, **kwargs)

    backend.generate = counted
    return calls


# -------------------------------------------------------------------- the parent


def run_setting(args: argparse.Namespace, setting: str, extra: Sequence[str]) -> dict[str, Any]:
    """Run :func:`worker` for ``setting`` in a new process; its result."""
    env = dict(os.environ, **isa_env(args.isa))
    command = [
        sys.executable, str(HERE / "rtf.py"), "--worker", setting,
        "--model-folder", str(args.model_folder), "--batch-sizes",
        ",".join(str(b) for b in args.batch_sizes), "--decode-tokens", str(args.decode_tokens),
        "--answer-tokens", str(args.answer_tokens), "--baseline-dtype", args.baseline_dtype,
        "--source", args.source, *extra,
    ]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.random_init:
        command += ["--random-init", args.random_init]
    if args.media is not None:
        command.append(str(args.media))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    result: dict[str, Any] = {}
    for line in process.stdout:
        if not line.startswith("{"):
            print(line, end="")
            continue
        data = json.loads(line)
        if "progress" in data:
            row = data["progress"]
            print(f"  {setting}: batch {row['batch']} measured", flush=True)
        else:
            result = data["result"]
    if process.wait() != 0 or not result:
        print(f"{setting}: the measuring process failed (exit {process.returncode})")
        return {}
    return result


def print_model_table(results: list[dict[str, Any]]) -> None:
    base = results[0]
    print(f"\nmachine: {base['machine']}")
    print(f"threads: {base['threads']}; answer {base['rows'][0]['answer_tokens']} tokens / 30 s")
    print(
        "\n| setting | batch | encoder s (CPU) | prefill s (CPU) | s/step (CPU) | RTF wall "
        "| RTF CPU | × baseline (CPU) | peak GiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base_rtf = {r["batch"]: Figures(**r).rtf(True) for r in base["rows"]}
    for result in results:
        for row in result["rows"]:
            f = Figures(**row)
            ratio = f.rtf(True) / base_rtf[f.batch] if f.batch in base_rtf else float("nan")
            print(
                f"| {result['setting']} | {f.batch} | {f.encoder_s:.1f} ({f.encoder_cpu:.1f}) "
                f"| {f.prefill_s:.1f} ({f.prefill_cpu:.1f}) | {f.step_s:.3f} ({f.step_cpu:.3f}) "
                f"| {f.rtf(False):.2f} | {f.rtf(True):.2f} | {ratio:.2f} | {gib(result['peak'])} |"
            )
    quality = [r for r in results if "quality" in r]
    if quality:
        print("\n| setting | steps | top-1 agreement | logit cosine | reference choice kept |")
        print("|---|---:|---:|---:|---:|")
        for r in quality:
            q = r["quality"]
            print(
                f"| {r['setting']} | {q['steps']} | {100 * q['top1']:.1f} % | "
                f"{q['cosine']:.4f} | {100 * q['in_kept']:.1f} % |"
            )
    for r in results:
        d = r["describe"]
        print(
            f"{r['setting']}: {d.get('quantize')} ({d.get('kernel')}), dtype {d.get('dtype')}, "
            f"kept tokens {d.get('kept_tokens')}, loaded in {r['load_s']:.0f} s "
            f"({r['load_cpu']:.0f} CPU s), peak while loading {gib(r['load_peak'])} GiB, "
            f"peak over the run {gib(r['peak'])} GiB"
        )
        b = r.get("build") or {}
        if b:
            print(
                f"  copy built from the bf16 checkpoint in {b['build_s']:.0f} s "
                f"({b['build_cpu']:.0f} CPU s), saved in {b['save_s']:.0f} s, "
                f"{b['bytes'] / GIB:.2f} GiB on disk, peak while building "
                f"{gib(b['build_peak'])} GiB"
            )


def print_pipeline_table(results: list[dict[str, Any]]) -> None:
    base = results[0]
    print(f"\nmachine: {base['machine']}; threads {base['threads']}")
    p = base["pipeline"]
    print(f"media: {p['media']} ({p['duration']:.1f} s, {p['chunks']} chunks)")
    names = list(p["stages"])
    print("\n| setting | " + " | ".join(f"{n} s (CPU)" for n in names)
          + " | model calls | RTF wall | RTF CPU | × baseline (CPU) | peak GiB |")  # fmt: skip
    print("|---|" + "---:|" * (len(names) + 5))
    for r in results:
        q = r["pipeline"]
        cells = [f"{q['stages'].get(n, (0, 0))[0]:.1f} ({q['stages'].get(n, (0, 0))[1]:.1f})"
                 for n in names]  # fmt: skip
        rtf_cpu = q["cpu"] / q["duration"]
        print(
            f"| {r['setting']} | " + " | ".join(cells) + f" | {_calls(q)} "
            f"| {q['wall'] / q['duration']:.2f} | "
            f"{rtf_cpu:.2f} | {rtf_cpu / (p['cpu'] / p['duration']):.2f} | {gib(r['peak'])} |"
        )
    for r in results:
        m = r["pipeline"].get("parts")
        if m:
            print(
                f"{r['setting']}: model work {m['encoder']:.1f} CPU s in the audio encoder, "
                f"{m['prefill']:.1f} in prefills, {m['decode']:.1f} in "
                f"{m['row_steps']:.0f} row-steps of decoding"
            )


def _calls(figures: dict[str, Any]) -> str:
    """``8 + 8``: the requests of each backend call."""
    return " + ".join(str(n) for n in figures.get("calls", [])) or "–"


def parent(args: argparse.Namespace) -> None:
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings: {', '.join(unknown)} (known: {', '.join(SETTINGS)})")
    if args.random_init:
        if args.checkpoint is None:
            raise SystemExit("--random-init needs --checkpoint DIR (about 10 GB, reused)")
        ensure_e2b_folder(args.checkpoint, args.kept_tokens)
        args.model_folder = args.checkpoint
    elif args.tiny:
        from subplug.testing.tiny import build_tiny_model

        args.model_folder = build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-tiny-")))
    else:
        args.model_folder = args.model
    print(f"machine: {machine()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        reference = Path(tmp) / "reference.pt"
        for index, setting in enumerate(settings):
            extra: list[str] = ["--pipeline"] if args.mode == "pipeline" else []
            if args.quality and args.mode == "model":
                extra += ["--reference", str(reference)]
                if index == 0:
                    extra.append("--write-reference")
            folder = args.model_folder
            build: dict[str, Any] = {}
            if SETTINGS[setting][0] != "none" and args.random_init:
                print(f"building the {setting} copy …", flush=True)
                copy = Path(tmp) / setting
                build = run_setting(args, setting, ["--save-to", str(copy)])
                args.model_folder = copy
            print(f"measuring {setting} …", flush=True)
            result = run_setting(args, setting, extra)
            args.model_folder = folder
            if result:
                result["build"] = build
                results.append(result)
    if not results:
        return
    if args.mode == "pipeline":
        print_pipeline_table(results)
    else:
        print_model_table(results)


# ------------------------------------------------------------------------------ main


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("media", nargs="?", type=Path, help="media file (pipeline mode)")
    parser.add_argument("--model", help="cache name or folder (pipeline mode)")
    parser.add_argument("--tiny", action="store_true", help="use the tiny offline model")
    parser.add_argument("--random-init", choices=["e2b"], help="random-initialised full size")
    parser.add_argument("--checkpoint", type=Path, help="random-init: folder for the checkpoint")
    parser.add_argument("--settings", default="none,int8-trim,int4-trim")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--source", default="en", choices=["auto", "en", "mn"])
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 4, 8], metavar="N,N")
    parser.add_argument("--decode-tokens", type=int, default=16, metavar="N")
    parser.add_argument("--answer-tokens", type=int, default=240, metavar="N")
    parser.add_argument("--kept-tokens", type=int, default=131_072, metavar="N")
    parser.add_argument("--quality", action="store_true", help="agreement with the baseline")
    parser.add_argument("--isa", choices=("native", "avx2"), default="native")
    parser.add_argument("--pipeline", action="store_true", help="whole pipeline on MEDIA")
    # used by the parent to start a measuring process
    parser.add_argument("--worker", dest="setting", help=argparse.SUPPRESS)
    parser.add_argument("--model-folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-dtype", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--write-reference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--save-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.random_init or args.model or args.tiny or args.setting):
        parser.error("give --model NAME|PATH, --tiny or --random-init e2b")
    if args.decode_tokens < 2:
        parser.error("--decode-tokens must be at least 2")
    args.mode = "pipeline" if (args.pipeline or args.media is not None) else "model"
    if args.baseline_dtype is None:
        args.baseline_dtype = "bf16-upcast" if args.isa == "avx2" else "auto"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.setting and args.save_to:
        build_copy(args)
    elif args.setting:
        worker(args)
    else:
        parent(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
