"""``subplug models optimize``: make the quantised copy of a cached Gemma 3n, and check
it against the float model (:mod:`subplug.backends.gemma3n_quant` builds and loads
copies; this module is the command's work, above the backend it loads to check)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from subplug.backends.gemma3n_quant import (
    agreement,
    build,
    copy_name,
    kept_vocabulary,
    reference_answers,
    save_copy,
    source_fingerprint,
    spec_for,
)
from subplug.errors import SubplugError


def quality_requests() -> list[Any]:
    """Requests over real speech for the quality check: the packaged clip, and
    espeak-ng English and (Russian voice) Mongolian Cyrillic where espeak-ng is there."""
    import contextlib

    from subplug import media, prompts, selftest
    from subplug.types import AudioChunk, BackendRequest, ChunkSpan

    clips = [(media.load_pcm(selftest.speech_clip_path()), "en")]
    with contextlib.suppress(SubplugError):
        from subplug.testing.media import speech

        clips.append((speech("Hello world. How are you today? I am fine.", voice="en"), "en"))
        clips.append((speech("Сайн байна уу. Өнөөдөр цаг агаар сайхан байна.", voice="ru"), "mn"))
    found = []
    for index, (samples, source) in enumerate(clips):
        span = ChunkSpan(index, 0.0, len(samples) / 16000, ())
        task, instruction, src = prompts.first_request(source, ("en", "mn"))
        found.append(BackendRequest(AudioChunk(span, samples), instruction, task, src, 64))
    return found


def optimize(
    name: str,
    *,
    quantize: str = "int8",
    vocab: str = "en-mn",
    check: bool = False,
    force: bool = False,
    progress: Any = None,
    say: Callable[[str], None] = lambda text: None,
) -> tuple[Any, dict[str, Any]]:
    """Make the quantised copy of cache entry ``name`` (``subplug models optimize``):
    built streamed from its files, saved as :func:`copy_name`, derived from it. With
    ``check``, the float model first answers the quality prompts (then is freed), and the
    saved copy, loaded as ``generate`` loads it, is compared with it; the figures go into
    the copy's manifest. Returns the entry and facts (sizes, kept tokens, quality)."""
    from transformers import AutoConfig, AutoProcessor

    from subplug import cache, runtime
    from subplug.backends.gemma3n import Gemma3nBackend
    from subplug.backends.gemma3n_model import count_params, locate
    from subplug.prompts import INSTRUCTIONS
    from subplug.quant.kernels import INT8_KERNEL_ORDER, available
    from subplug.quant.quality import MIN_AGREEMENT
    from subplug.types import BackendOptions

    if quantize not in runtime.QUANTIZE_BITS:
        raise SubplugError(
            "bad-quantize",
            f"Cannot optimize to {quantize!r}.",
            "Use --quantize int8 (fast, the default on a CPU) or int4 (half the memory).",
        )
    if vocab not in ("en-mn", "full"):
        raise SubplugError("bad-vocab", f"Unknown vocabulary setting {vocab!r}.",
                           "Use --vocab en-mn or full.")  # fmt: skip
    location = locate(name)
    if location.name is None:
        raise SubplugError(
            "not-in-cache",
            f"{name} is a folder; models optimize works on models in the cache.",
            "Import it first: subplug models import PATH --name NAME.",
        )
    if (location.path / "subplug-quant.json").is_file():
        raise SubplugError(
            "model-is-quantized",
            f"{name} is already a quantised copy.",
            "Optimize the model it was made from (subplug models list shows it).",
        )
    kernels = available()
    choice = runtime.QuantChoice(
        runtime.QUANTIZE_BITS[quantize],
        vocab == "en-mn",
        next((k for k in INT8_KERNEL_ORDER if k in kernels), "fbgemm"),
    )
    target = copy_name(location.name, choice)
    if (cache.models_dir() / target).exists() and not force:
        raise SubplugError(
            "model-exists",
            f"{target} is already in the cache.",
            "Pass --force to make it again.",
        )
    fingerprint = source_fingerprint(location.name)
    assert fingerprint is not None
    folder = location.base if location.is_adapter else location.path
    assert folder is not None
    requests = quality_requests() if check else []
    reference = None
    if check:
        say("Running the float model once for the quality check …")
        float_backend = Gemma3nBackend(BackendOptions(model=name, quantize="none", device="cpu"))
        try:
            reference = reference_answers(float_backend, requests)
        finally:
            float_backend.close()
            del float_backend
    processor = AutoProcessor.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    kept = kept_vocabulary(processor, config, INSTRUCTIONS)
    spec = spec_for(choice, kept, params=count_params(config))
    say(f"Quantising {name} to {choice.name} …")
    started = time.monotonic()
    model = build(folder, location.path if location.is_adapter else None, spec)
    entry = save_copy(
        model, processor, source=location.name, choice=choice, fingerprint=fingerprint,
        extra={"kept_tokens": None if spec.kept_ids is None else len(spec.kept_ids),
               "vocab_size": config.text_config.vocab_size},
        force=force, progress=progress,
    )  # fmt: skip
    del model
    facts: dict[str, Any] = {
        "seconds": round(time.monotonic() - started, 1),
        "kept_tokens": None if spec.kept_ids is None else len(spec.kept_ids),
        "vocab_size": config.text_config.vocab_size,
        "kept_reasons": dict(kept.reasons),
        "size": entry.size,
    }
    if check and reference is not None:
        say("Comparing the saved copy with the float model …")
        copy = Gemma3nBackend(BackendOptions(model=entry.name, device="cpu"))
        try:
            found = agreement(copy, requests, reference)
        finally:
            copy.close()
        facts["quality"] = found.to_json()
        facts["passes"] = found.top1 >= MIN_AGREEMENT
        cache.update_derived(entry.name, {"quality": found.to_json()})
    return entry, facts
