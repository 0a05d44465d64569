"""The core's ``subplug doctor`` checks: Python, torch and devices, PyAV and codecs,
ffmpeg, speech detection, the model cache and its free disk, and loaded plugins."""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
import time
from collections.abc import Callable

from subplug.hookspecs import hookimpl
from subplug.types import CheckResult, CheckStatus, DoctorCheck

OK, WARN, FAIL, SKIP = CheckStatus.OK, CheckStatus.WARN, CheckStatus.FAIL, CheckStatus.SKIP
GIB = 1024**3
#: Disk the default model needs in the cache (E2B base in bf16 + adapter), with margin.
MODEL_DISK_BYTES = 12 * GIB
AUDIO_DECODERS = ("aac", "mp3", "opus", "vorbis", "flac", "pcm_s16le", "ac3", "alac")


def check_python() -> CheckResult:
    version = ".".join(map(str, sys.version_info[:3]))
    return CheckResult(OK, f"Python {version} ({sys.executable})")


def check_torch() -> CheckResult:
    try:
        import torch
    except ImportError as exc:
        return CheckResult(
            FAIL,
            f"torch cannot be imported: {exc}",
            "pip install torch (CPU: pip install torch==2.13.0)",
        )
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    return CheckResult(
        OK,
        f"torch {torch.__version__} ({build}), {torch.get_num_threads()} threads",
        details={"version": torch.__version__, "cuda": torch.version.cuda},
    )


def check_devices() -> CheckResult:
    try:
        import torch
    except ImportError:
        return CheckResult(SKIP, "torch missing")
    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            name = torch.cuda.get_device_name(index)
            devices.append(
                {
                    "device": f"cuda:{index}",
                    "name": name,
                    "free_gib": round(free / GIB, 1),
                    "total_gib": round(total / GIB, 1),
                }
            )
        text = "; ".join(
            f"{d['device']} {d['name']} {d['free_gib']}/{d['total_gib']} GiB free" for d in devices
        )
        return CheckResult(OK, text, details={"devices": devices})
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return CheckResult(
            OK, "Apple GPU (mps) available", details={"devices": [{"device": "mps"}]}
        )
    return CheckResult(
        WARN,
        "no GPU found: the model runs on the CPU (several times slower than real time)",
        "With an NVIDIA GPU, install a CUDA build of torch (see pytorch.org).",
        details={"devices": [{"device": "cpu"}]},
    )


def check_pyav() -> CheckResult:
    try:
        import av
        from av.codec import Codec
    except ImportError as exc:
        return CheckResult(FAIL, f"PyAV cannot be imported: {exc}", "pip install av")
    missing = []
    for name in AUDIO_DECODERS:
        try:
            Codec(name, "r")
        except Exception:
            missing.append(name)
    libs = av.library_versions.get("libavcodec", ())
    summary = f"PyAV {av.__version__}, libavcodec {'.'.join(map(str, libs))}"
    if missing:
        return CheckResult(
            WARN,
            f"{summary}; missing decoders: {', '.join(missing)}",
            "Reinstall PyAV from PyPI (its wheels include these codecs).",
        )
    return CheckResult(OK, f"{summary}; decoders: {', '.join(AUDIO_DECODERS)}")


def check_ffmpeg() -> CheckResult:
    path = shutil.which("ffmpeg")
    if path is None:
        return CheckResult(
            WARN,
            "ffmpeg not found (subplug decodes with PyAV and does not need it)",
            "Install ffmpeg for the Kdenlive/OBS tools and the benchmarks.",
        )
    return CheckResult(OK, f"ffmpeg at {path}")


def check_vad() -> CheckResult:
    """Load silero-vad from its wheel and run it on one second of silence."""
    try:
        version = importlib.metadata.version("silero-vad")
    except importlib.metadata.PackageNotFoundError:
        return CheckResult(
            FAIL, "speech detection (silero-vad) is not installed", "pip install silero-vad"
        )
    import numpy as np

    from subplug import segment

    started = time.perf_counter()
    try:
        segment.load_vad()
        scores = segment.speech_probabilities(np.zeros(16_000, dtype=np.float32))
    except Exception as exc:
        return CheckResult(
            FAIL,
            f"silero-vad {version} does not run: {type(exc).__name__}: {exc}",
            "Reinstall it: pip install --force-reinstall silero-vad",
        )
    peak = float(scores.values.max(initial=0.0))
    seconds = time.perf_counter() - started
    if peak >= 0.5:
        return CheckResult(
            WARN,
            f"silero-vad {version} hears speech in silence (p={peak:.2f})",
            "Reinstall silero-vad; subtitles may appear over silence.",
        )
    return CheckResult(OK, f"silero-vad {version} loads and runs ({seconds:.2f} s)")


def check_cache() -> CheckResult:
    from subplug import cache

    home = cache.subplug_home()
    probe = home
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    details = {"path": str(home), "free_gib": round(free / GIB, 1)}
    text = f"{home} ({free / GIB:.1f} GiB free)"
    if free < MODEL_DISK_BYTES:
        return CheckResult(
            WARN,
            text,
            "The default model needs about 12 GiB in the cache; set SUBPLUG_HOME to a bigger disk.",
            details=details,
        )
    return CheckResult(OK, text, details=details)


def check_models() -> CheckResult:
    from subplug import cache, choice

    entries = [e for e in cache.list_models() if e.complete]
    if not entries:
        return CheckResult(
            WARN,
            "no model in the cache yet",
            "subplug models pull (with internet) or subplug models import PATH (offline).",
        )
    # Each with what runs it (a backend, or a text translator), as `models list` shows.
    runners = {e.name: choice.runner(e.name) for e in entries}
    names = ", ".join(f"{name} ({runs})" for name, runs in runners.items())
    return CheckResult(
        OK, f"models: {names}", details={"models": list(runners), "runs_with": runners}
    )


#: Journals older than this are reported by doctor as left over (a run resumes within it).
STALE_JOURNAL_DAYS = 14


def check_journals() -> CheckResult:
    """Journals of runs that never finished, which nothing else removes."""
    from subplug.cache import journal_dir
    from subplug.journal import stale_journals

    every = stale_journals(journal_dir())
    old = [j for j in every if j.age_days >= STALE_JOURNAL_DAYS]
    size = sum(j.size for j in old)
    details = {"journals": len(every), "stale": len(old), "stale_bytes": size}
    if not old:
        text = f"{len(every)} interrupted run(s) can resume" if every else "no left-over journals"
        return CheckResult(OK, text, details=details)
    return CheckResult(
        WARN,
        f"{len(old)} journal(s) of runs interrupted over {STALE_JOURNAL_DAYS} days ago "
        f"({size / 1024**2:.1f} MiB)",
        f"Remove them with: subplug models clean --older-than {STALE_JOURNAL_DAYS}",
        details=details,
    )


def check_speed() -> CheckResult:
    """Which setting ``generate`` uses here, and how fast E2B will run (measured probe)."""
    try:
        import torch  # noqa: F401  (the probe needs it)
    except ImportError:
        return CheckResult(SKIP, "torch missing")
    from subplug import memory, runtime

    device = runtime.resolve_device("auto")
    if runtime.device_kind(device) != "cpu":
        dtype = runtime.choose_dtype("auto", device)
        why = (
            "" if dtype == "bfloat16"
            else " (this GPU has no bfloat16, and float16 overflows in Gemma 3 models)"
        )  # fmt: skip
        return CheckResult(
            OK,
            f"{device}: float weights in {dtype}{why}, no quantisation",
            details={"device": device, "dtype": dtype, "quantize": "none"},
        )
    runtime.configure_threads("cpu", None)
    choice = runtime.choose_quantize("auto", "auto", "cpu", params=5_000_000_000)
    free = memory.free_memory("cpu")
    if choice.bits is None:
        dtype = runtime.choose_dtype("auto", "cpu")
        return CheckResult(
            WARN,
            f"CPU: no int8 kernel in this torch build; E2B would run in {dtype} "
            "(about 10.5 GiB of RAM, several times slower than real time)",
            "Install the CPU build of torch from PyPI (pip install torch==2.13.0).",
            details={"device": "cpu", "quantize": "none", "dtype": dtype},
        )
    from subplug.quant.kernels import fbgemm_needs_7bit
    from subplug.quant.probe import probe

    found = probe(choice.kernel or "fbgemm")
    need_gib = 5.0  # int8-trim E2B peak while running, bench/rtf.py (docs/performance.md)
    bits = "7-bit weights, no VNNI" if fbgemm_needs_7bit() else "8-bit"
    summary = (
        f"CPU: {choice.name} ({choice.kernel}, {bits}), {found.threads} threads; E2B estimated "
        f"at {found.rtf_batch8:.1f}x real time for a file (batches of 8), "
        f"{found.rtf_batch1:.1f}x one chunk at a time (live); needs ~{need_gib} GiB RAM"
    )
    details = {
        "device": "cpu",
        "quantize": choice.name,
        "kernel": choice.kernel,
        "threads": found.threads,
        "stream_gbs": round(found.stream_gbs, 2),
        "gemm_gops": round(found.gemm_gops, 1),
        "rtf_batch1": round(found.rtf_batch1, 2),
        "rtf_batch8": round(found.rtf_batch8, 2),
        "free_gib": None if free is None else round(free / GIB, 1),
    }
    if free is not None and free < need_gib * GIB:
        return CheckResult(
            WARN,
            summary + f", but only {free / GIB:.1f} GiB is free",
            "Close other programs, or use --quantize int4 (about 3.6 GiB, slower).",
            details=details,
        )
    if found.rtf_batch8 > 1.0:
        return CheckResult(
            OK,
            summary,
            "Files take longer than they play on this CPU; live captions need a GPU.",
            details=details,
        )
    return CheckResult(OK, summary, details=details)


def check_plugins() -> CheckResult:
    from subplug import plugins

    loaded = plugins.loaded_plugins()
    names = ", ".join(p["name"].rsplit(".", 1)[-1] for p in loaded)
    return CheckResult(OK, f"{len(loaded)} plugins: {names}", details={"plugins": loaded})


CORE_CHECKS: tuple[tuple[str, str, Callable[[], CheckResult]], ...] = (
    ("python", "system", check_python),
    ("torch", "system", check_torch),
    ("devices", "system", check_devices),
    ("pyav", "media", check_pyav),
    ("ffmpeg", "media", check_ffmpeg),
    ("speech-detection", "media", check_vad),
    ("cache", "models", check_cache),
    ("models", "models", check_models),
    ("journals", "models", check_journals),
    ("speed", "models", check_speed),
    ("plugins", "plugins", check_plugins),
)


@hookimpl
def subplug_doctor_checks(register: Callable[[DoctorCheck], None]) -> None:
    for name, group, run in CORE_CHECKS:
        register(DoctorCheck(name, run, group))
