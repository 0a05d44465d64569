"""Gemma 3n quantised: which copy to load, and how to make one.

A quantised model (:mod:`subplug.quant`) comes from one of three places, first found:

1. **A saved copy in the model cache** — an entry made from the requested one by
   ``subplug models optimize`` (or by an earlier run, see 3), recorded in its manifest
   as ``derived`` from that entry *with the same contents* (a re-imported or retrained
   source no longer matches). Loading it reads the quantised files only.
2. **Built now, streamed from the checkpoint**: each tensor read, merged with the LoRA
   adapter and quantised in turn (:func:`subplug.quant.convert.load_quantized`): the
   float model is never whole in memory. A checkpoint or adapter this cannot stream
   (sharded formats other than safetensors, DoRA…) is loaded in float and converted.
3. When the model came from the cache, the copy built in 2 is **saved into the cache**
   (once), so the next run takes path 1; a cache that cannot be written is only logged.

A model folder that holds ``subplug-quant.json`` is such a copy, whatever its name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subplug.errors import SubplugError

if TYPE_CHECKING:
    from subplug.backends.gemma3n_model import ModelLocation
    from subplug.quant.convert import QuantSpec
    from subplug.quant.vocab import KeptVocabulary
    from subplug.runtime import QuantChoice
    from subplug.types import BackendOptions

log = logging.getLogger(__name__)

#: Answer layout text whose tokens a trimmed vocabulary keeps (besides the prompts).
ANSWER_TEXTS = (
    "### English\n\n",
    "\n\n---\n\n### Mongolian\n\n",
    "### Mongolian\n\n",
    "\n\n---\n\n### English\n\n",
)


def kept_vocabulary(processor: Any, config: Any, instructions: Sequence[str]) -> KeptVocabulary:
    """The tokens a trimmed model keeps: English and Mongolian text, bytes, special
    tokens, and every token of the prompts for ``instructions`` and the answer layout."""
    from subplug.backends.gemma3n_model import render_prompt
    from subplug.quant.vocab import kept_token_ids

    prompts = [render_prompt(processor, text) for text in instructions]
    return kept_token_ids(
        processor.tokenizer,
        vocab_size=config.text_config.vocab_size,
        prompts=[*prompts, *ANSWER_TEXTS],
    )


#: Layers with fewer weights stay float32 in a full-size model: E2B's per-layer input
#: gates and projections (2048×256) are quantised (read at every step), its LAuReL
#: low-rank pairs (2048×64) are not (too small to gain).
LARGE_MIN_PARAMS = 1 << 18


def spec_for(choice: QuantChoice, kept: KeptVocabulary | None, *, params: int) -> QuantSpec:
    """The :class:`~subplug.quant.convert.QuantSpec` for a runtime choice, for a model
    of ``params`` parameters: in a full-size model, layers under 2**18 weights stay
    float and 4-bit groups are 128 wide; a small model (asked for explicitly: ``auto``
    never quantises one) has every layer of 1024 weights or more quantised, in groups
    of 32, so its quantised path is the real one at toy size. int4 (the least-memory
    setting) stores the per-layer embedding table in 4-bit groups as well."""
    from subplug.quant.convert import QuantSpec
    from subplug.runtime import SMALL_MODEL_PARAMS

    assert choice.bits is not None and choice.kernel is not None
    small = params < SMALL_MODEL_PARAMS
    return QuantSpec(
        bits=choice.bits,
        group=32 if small else 128,
        kept_ids=kept.ids if (choice.trim_vocab and kept is not None) else None,
        per_layer_bits=4 if choice.least_memory else 8,
        min_params=1 << 10 if small else LARGE_MIN_PARAMS,
        kernel=choice.kernel,
    )


def source_fingerprint(name: str) -> str | None:
    """The contents fingerprint of cache entry ``name`` (and its base), or ``None`` when
    it is not a cache entry."""
    from subplug import cache

    try:
        resolved = cache.resolve_model(name)
    except SubplugError:
        return None
    if resolved.manifest is None:
        return None
    return cache.contents_fingerprint(name)


def copy_name(source: str, choice: QuantChoice) -> str:
    """The cache name of ``source`` 's quantised copy (``gemma3n-en-mn-int8-trim``)."""
    return f"{source}-{choice.name}"


def find_saved(source: str | None, choice: QuantChoice) -> Any:
    """A saved quantised copy (a resolved cache entry) of cache entry ``source`` for
    ``choice`` with the same contents, or ``None``."""
    from subplug import cache

    if source is None:
        return None
    fingerprint = source_fingerprint(source)
    if fingerprint is None:
        return None
    return cache.find_derived(source, quantize=choice.name, from_contents=fingerprint)


def recorded_agreement(saved: Any) -> float | None:
    """The top-1 agreement ``subplug models optimize --check`` recorded for a saved
    copy, or ``None`` when it was not checked."""
    derived = getattr(saved.manifest, "derived", None) or {}
    quality = derived.get("quality") or {}
    top1 = quality.get("top1")
    return float(top1) if isinstance(top1, (int, float)) else None


def build(
    model_dir: Path,
    adapter_dir: Path | None,
    spec: QuantSpec,
    *,
    on_tensor: Callable[[int, int], None] | None = None,
) -> Any:
    """The quantised model built from the checkpoint (streamed, or converted after a
    float load when the files cannot be streamed). Kernels are not prepared yet, so
    the model can still be saved."""
    from subplug.backends.gemma3n_model import empty_model, quiet_loading
    from subplug.quant import convert

    with quiet_loading():
        try:
            return convert.load_quantized(
                model_dir, spec, build=empty_model, adapter_dir=adapter_dir, on_tensor=on_tensor
            )
        except convert.UnsupportedCheckpoint as why:
            log.info(
                "Cannot quantise %s while reading it (%s); loading it in float first "
                "(needs the float model's memory once).",
                model_dir,
                why,
            )
    return convert.quantize_loaded(_float_model(model_dir, adapter_dir), spec)


def _float_model(model_dir: Path, adapter_dir: Path | None) -> Any:
    import torch
    from peft import PeftModel

    from subplug.backends.gemma3n_model import audio_only_model_class, quiet_loading

    with quiet_loading():
        model = audio_only_model_class().from_pretrained(
            model_dir, dtype=torch.bfloat16, attn_implementation="sdpa"
        )
        if adapter_dir is not None:
            model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model.eval()
    return model


def save_copy(
    model: Any,
    processor: Any,
    *,
    source: str,
    choice: QuantChoice,
    fingerprint: str,
    extra: dict[str, Any] | None = None,
    force: bool = False,
    progress: Any = None,
) -> Any:
    """Save quantised ``model`` (kernels not yet prepared) with its processor as the
    cache entry :func:`copy_name` ``(source, choice)``, derived from ``source``."""
    from subplug import cache
    from subplug.quant.convert import save_quantized

    def write(folder: Path) -> None:
        model.config.save_pretrained(folder)
        processor.save_pretrained(folder)
        save_quantized(model, folder)

    derived = {
        "from": source,
        "from_contents": fingerprint,
        "quantize": choice.name,
        **(extra or {}),
    }
    return cache.build_model(
        copy_name(source, choice),
        write,
        source=f"optimize:{source}",
        derived=derived,
        force=force,
        progress=progress,
    )


def _note_older_layout(spec: QuantSpec, source: str) -> None:
    """Say so when a saved 4-bit copy keeps its per-layer table in int8 (made before
    that table could be 4-bit): it works, in ~0.4 GiB more than a new one (E2B)."""
    if spec.bits == 4 and spec.per_layer_bits == 8:
        log.warning(
            "This int4 copy keeps its per-layer embeddings in int8 (made by an earlier "
            "subplug); `subplug models optimize %s --quantize int4 --force` remakes it "
            "smaller (about 0.4 GiB less for E2B).",
            source,
        )


def load(
    location: Any,
    choice: QuantChoice,
    processor: Any,
    *,
    instructions: Sequence[str],
    persist: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """The quantised model for ``location`` (a :class:`ModelLocation`), prepared to
    run, and facts about where it came from (module docstring)."""
    from subplug.backends.gemma3n_model import empty_model
    from subplug.quant import convert, heap

    started = time.monotonic()
    heap.large_blocks_to_os()
    folder = location.base if location.is_adapter else location.path
    saved_spec = convert.read_spec(Path(location.path), kernel=choice.kernel or "fbgemm")
    facts: dict[str, Any] = {}
    if saved_spec is not None:
        model = convert.load_saved(Path(location.path), saved_spec, build=empty_model)
        facts["quantized_from"] = "saved copy"
        _note_older_layout(saved_spec, "the model it was made from")
    else:
        saved = find_saved(location.name, choice)
        if saved is not None:
            spec = convert.read_spec(Path(saved.path), kernel=choice.kernel or "fbgemm")
            assert spec is not None
            model = convert.load_saved(Path(saved.path), spec, build=empty_model)
            facts["quantized_from"] = f"saved copy {saved.name}"
            _note_older_layout(spec, location.name)
        else:
            from transformers import AutoConfig

            from subplug.backends.gemma3n_model import count_params

            config = AutoConfig.from_pretrained(folder)
            kept = kept_vocabulary(processor, config, instructions)
            spec = spec_for(choice, kept, params=count_params(config))
            model = build(folder, location.path if location.is_adapter else None, spec)
            facts["quantized_from"] = "built while loading"
            fingerprint = source_fingerprint(location.name) if location.name else None
            if persist and fingerprint is not None:
                try:
                    entry = save_copy(
                        model,
                        processor,
                        source=location.name,
                        choice=choice,
                        fingerprint=fingerprint,
                    )
                except SubplugError as error:
                    log.warning("Could not keep the quantised copy in the cache: %s", error.message)
                else:
                    facts["saved_as"] = entry.name
                    log.info("Saved the %s copy as %s for the next runs.", choice.name, entry.name)
    convert.prepare_kernels(model)
    heap.release_to_os()
    facts["quantize_seconds"] = round(time.monotonic() - started, 2)
    return model, facts


# ------------------------------------------------------------------ quality guard


def reference_answers(
    backend: Any, requests: Sequence[Any], *, max_steps: int = 64
) -> list[tuple[list[int], Any]]:
    """For each request, the ``backend`` 's greedy answer (at most ``max_steps``
    tokens) and its teacher-forced logits: the reference a quantised copy is compared
    with (:func:`agreement`). Run it first and free the float model before loading the
    quantised one, so the two are never in memory together."""
    import torch

    from subplug.backends.decode import DecodeRow, greedy_decode, sequence_logits

    found = []
    with torch.inference_mode():
        for request in requests:
            row = DecodeRow(
                backend.prompt_ids(request.instruction),
                backend.audio_tokens(request),
                min(max_steps, request.max_new_tokens),
            )
            answer = greedy_decode(
                backend.model, [row], pad_id=backend.pad_id, stop_ids=backend.stop_ids
            )[0]
            found.append((answer, sequence_logits(backend.model, row, answer).cpu()))
    return found


def agreement(
    backend: Any, requests: Sequence[Any], reference: Sequence[tuple[list[int], Any]]
) -> Any:
    """The :class:`~subplug.quant.quality.Agreement` of ``backend`` (a quantised model)
    with the :func:`reference_answers` of the float model, over all requests."""
    import torch

    from subplug.backends.decode import DecodeRow, sequence_logits
    from subplug.quant.quality import Agreement, compare

    kept = getattr(backend.model, "subplug_kept_ids", None)
    kept_ids = None if kept is None else kept.tolist()
    total = Agreement(0, 1.0, 1.0, 1.0)
    with torch.inference_mode():
        for request, (answer, ref_logits) in zip(requests, reference, strict=True):
            row = DecodeRow(
                backend.prompt_ids(request.instruction), backend.audio_tokens(request), 1
            )
            logits = sequence_logits(backend.model, row, answer).cpu()
            total = total.merge(compare(ref_logits, logits, kept_ids))
    return total


def quant_choice(options: BackendOptions, location: ModelLocation, device: str) -> Any:
    """The quantisation to load ``location`` with: what a saved quantised copy holds,
    or :func:`subplug.runtime.choose_quantize` for the options and the model's size."""
    from subplug import runtime
    from subplug.backends.gemma3n_model import _load_config, count_params
    from subplug.quant.convert import read_spec

    saved = read_spec(location.path)
    if saved is None:
        model_dir = location.base if location.is_adapter else location.path
        choice = runtime.choose_quantize(
            options.quantize,
            options.vocab,
            device,
            params=count_params(_load_config(model_dir)),
            dtype_spec=options.dtype,
        )
        if choice.bits is not None:
            from subplug.quant.quality import MIN_AGREEMENT

            copy = find_saved(location.name, choice)
            top1 = None if copy is None else recorded_agreement(copy)
            if top1 is not None and top1 < MIN_AGREEMENT:
                if options.quantize.strip().lower() == "auto":
                    log.warning(
                        "The %s copy of %s agreed with the float model on only %.1f %% of "
                        "tokens (subplug models optimize --check); using float weights.",
                        choice.name, location.name, 100 * top1,
                    )  # fmt: skip
                    return runtime.QuantChoice(None, False, None)
                log.warning(
                    "The %s copy of %s agreed with the float model on only %.1f %% of "
                    "tokens; using it because --quantize %s was asked for.",
                    choice.name, location.name, 100 * top1, options.quantize,
                )  # fmt: skip
        return choice
    wanted = options.quantize.strip().lower()
    stored = f"int{saved.bits}"
    if wanted not in ("auto", stored) or runtime.device_kind(device) != "cpu":
        raise SubplugError(
            "model-is-quantized",
            f"{location.name or location.path} is stored quantised ({stored}); it runs on "
            "the CPU only, with --quantize auto or " + stored + ".",
            "Use the model it was made from for other settings (subplug models list shows it).",
        )
    from subplug.quant.kernels import INT8_KERNEL_ORDER, available

    kernels = available()
    kernel = next((k for k in INT8_KERNEL_ORDER if k in kernels), None)
    if kernel is None or stored not in kernels:
        raise SubplugError(
            "quantize-unsupported",
            f"This torch build has no {stored} kernel for this CPU.",
            "Use the model it was made from with --quantize none.",
        )
    return runtime.QuantChoice(saved.bits, saved.kept_ids is not None, kernel)
