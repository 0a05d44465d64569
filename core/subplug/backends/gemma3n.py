"""Gemma 3n backend (transformers + peft), registered as backend ``gemma3n``.

Loads a Hugging Face folder: a full (or merged) model, or a PEFT LoRA adapter on top of
its base model. The adapter is merged into the weights by default
(``BackendOptions.merge_adapter=False`` keeps it separate). Loading is audio-only: the
vision tower is never built (a parameter-free stand-in takes its place, and the
checkpoint's vision weights are skipped as "unexpected"), which saves ~0.29 B parameters
(~0.6 GB in bf16) on E2B.

Generation renders the processor's chat template with the exact training instruction,
feeds decoded 16 kHz arrays (never file paths), batches requests sorted by length with
left padding, decodes greedily and stops on ``<eos>``/``<end_of_turn>``. A repetition
guard stops a sequence that loops while generating and trims the loop from its text.

Importing this module is cheap: torch, transformers and peft are imported by the
factory and the functions that need them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subplug import memory
from subplug.backends.gemma3n_model import (  # noqa: F401  (public here too)
    AUDIO_PAD_FRAMES,
    ModelLocation,
    _load_config,
    audio_features,
    audio_only_model_class,
    checkpoint_vision_params,
    count_params,
    e2b_config,
    estimate_memory,
    locate,
    quiet_loading,
    register_vision_stub,
    render_prompt,
)
from subplug.backends.gemma3n_quant import quant_choice
from subplug.backends.repetition import token_loop_at_end, trim_repetition
from subplug.hookspecs import hookimpl
from subplug.quant import heap
from subplug.types import Backend, BackendOptions, BackendRequest

if TYPE_CHECKING:
    import numpy as np
    import torch

    from subplug.backends.decode import PrefixCache

log = logging.getLogger(__name__)

BACKEND_NAME = "gemma3n"


# ----------------------------------------------------------------------- plugin


@hookimpl
def subplug_register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the Gemma 3n backend (the default) as ``gemma3n``."""
    register(BACKEND_NAME, create_backend)


class _Factory:
    """The registered factory: ``factory(options)`` loads a backend; ``factory.check``
    is the engine's fail-fast test before any media is decoded. The model is located
    once per run: what ``check`` found is what the load that follows uses."""

    #: The ``config.json`` model types it runs (what ``--backend auto`` matches).
    model_types = ("gemma3n",)

    def __init__(self) -> None:
        self._located: dict[tuple[str | None, str | None], ModelLocation] = {}

    def __call__(self, options: BackendOptions) -> Backend:
        """Validate, locate (unless ``check`` just did), load."""
        key = (options.model, options.extra.get("base"))
        location = self._located.pop(key, None)
        if location is None:
            self.check(options)
            location = self._located.pop(key)
        return Gemma3nBackend(options, location)

    def check(self, options: BackendOptions) -> dict[str, Any]:
        """Options valid, the model present and intact (a quick size/mtime check against
        its manifest), the device there and the dtype usable on it; raises
        ``SubplugError``. Touches no model file's contents and no GPU memory. Returns
        ``contents``, the model's fingerprint (for the resume journal)."""
        from subplug import cache, runtime

        runtime.validate_options(options)
        base = options.extra.get("base")
        location = locate(options.model, base)
        runtime.choose_dtype(options.dtype, runtime.resolve_device(options.device))
        self._located[(options.model, base)] = location
        return {"contents": cache.contents_fingerprint(options.model, base)}


create_backend = _Factory()


#: Characters an answer cannot keep: the replacement character (a byte-fallback
#: sequence cut off by the budget) and control characters other than line breaks and tabs.
_UNPRINTABLE = re.compile("[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# ------------------------------------------------------------------------ backend


@dataclass(frozen=True)
class _Prepared:
    """One request, tokenised and turned into mel features (not yet batched)."""

    input_ids: np.ndarray
    features: np.ndarray
    feature_mask: np.ndarray


class Gemma3nBackend:
    """A loaded Gemma 3n model answering :class:`~subplug.types.BackendRequest` s."""

    name = BACKEND_NAME

    def __init__(self, options: BackendOptions, location: ModelLocation | None = None) -> None:
        import transformers
        from transformers import AutoProcessor

        from subplug import runtime
        from subplug.backends.decode import AudioCache

        started = time.monotonic()
        self.options = options
        self.location = location or locate(options.model, options.extra.get("base"))
        model_dir = self.location.base if self.location.is_adapter else self.location.path
        assert model_dir is not None
        self.device = runtime.resolve_device(options.device)
        self.processor = AutoProcessor.from_pretrained(model_dir)
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)
        end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
        self.stop_ids = sorted({int(tokenizer.eos_token_id), int(end_of_turn)})

        self.quant = quant_choice(options, self.location, self.device)
        self.merged = False
        self.skipped_adapter_tensors: dict[str, int] = {}
        self.load_facts: dict[str, Any] = {}
        self.attention = "sdpa"
        if self.quant.bits is not None:
            self.dtype_name = "float32"
            estimate = estimate_memory(
                model_dir,
                self.dtype_name,
                quant=self.quant,
                kept_tokens=self._kept_tokens_estimate(model_dir),
            )
            memory.check_fits(estimate, self.device)
            self.threads = runtime.configure_threads(
                self.device, options.threads, params=estimate.params
            )
            from subplug.backends import gemma3n_quant
            from subplug.prompts import INSTRUCTIONS

            model, self.load_facts = gemma3n_quant.load(
                self.location, self.quant, self.processor, instructions=INSTRUCTIONS
            )
            self.merged = self.location.is_adapter
        else:
            self.dtype_name = runtime.choose_dtype(options.dtype, self.device)
            estimate = estimate_memory(model_dir, self.dtype_name)
            memory.check_fits(estimate, self.device)
            self.threads = runtime.configure_threads(
                self.device, options.threads, params=estimate.params
            )
            torch_dtype = runtime.torch_dtype(self.dtype_name)
            self.attention = runtime.resolve_attention(self.device, self.dtype_name)
            load_kwargs: dict[str, Any] = {
                "dtype": torch_dtype,
                "attn_implementation": self.attention,
            }
            if self.device != "cpu":
                load_kwargs["device_map"] = {"": self.device}
            with quiet_loading():
                model = audio_only_model_class().from_pretrained(model_dir, **load_kwargs)
                if self.location.is_adapter:
                    model = self._apply_adapter(
                        model, self.location.path, merge=options.merge_adapter
                    )
            runtime.apply_compute_policy(model, self.dtype_name)
        model.eval()
        # Loaded: activations reuse freed blocks (no page faults); int4 gives them back.
        if not self.quant.least_memory:
            heap.reuse_freed_blocks()
        self.model = model
        self.kept_tokens = (
            None
            if getattr(model, "subplug_kept_ids", None) is None
            else len(model.subplug_kept_ids)
        )

        self.params = (
            sum(p.numel() for p in model.parameters())
            if self.quant.bits is None
            else estimate.params
        )
        self.vision_params_skipped = checkpoint_vision_params(model_dir)
        self.vision_bytes_saved = self.vision_params_skipped * runtime.dtype_bytes(self.dtype_name)
        self.batch_size = options.batch_size or memory.choose_batch_size(estimate, self.device)
        self._use_greedy_generation()
        self._prompts: dict[str, str] = {}
        self._audio = AudioCache()
        self._prefixes: PrefixCache | None = None
        self.load_seconds = time.monotonic() - started
        self.transformers_version = transformers.__version__
        log.info(
            "Loaded %s on %s (%s, %s, %d params, batch %d) in %.1f s; audio-only loading "
            "skipped %d vision parameters (%.2f GB).",
            self.location.name or self.location.path,
            self.device,
            self.dtype_name,
            self.quant.name,
            self.params,
            self.batch_size,
            self.load_seconds,
            self.vision_params_skipped,
            self.vision_bytes_saved / 1e9,
        )

    def _kept_tokens_estimate(self, model_dir: Path) -> int | None:
        """Rows a trimmed vocabulary keeps, for the memory estimate (counted from the
        tokenizer; a saved copy records them)."""
        if not self.quant.trim_vocab:
            return None
        from subplug.quant.vocab import allowed_piece

        return sum(1 for piece in self.tokenizer.get_vocab() if allowed_piece(piece)) + 512

    # -- loading helpers

    def _apply_adapter(self, model: Any, adapter_dir: Path, *, merge: bool) -> Any:
        from peft import PeftModel

        self.skipped_adapter_tensors = _note_unusable_adapter_tensors(model, adapter_dir)
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
        if merge:
            self.merged = True
            return peft_model.merge_and_unload()
        return peft_model

    def _use_greedy_generation(self) -> None:
        """Replace the checkpoint's generation defaults (the real ones sample) with greedy
        decoding that stops on ``<eos>`` and ``<end_of_turn>``: subplug decodes with its
        own loop (:mod:`subplug.backends.decode`), and anyone calling the model's
        ``generate`` (tests, comparisons) gets the same greedy decoding."""
        from transformers import GenerationConfig

        config = GenerationConfig(
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
            do_sample=False,
            num_beams=1,
        )
        base = getattr(self.model, "get_base_model", None)
        if base is not None:
            base().generation_config = config
        self.model.generation_config = config

    # -- Backend protocol

    def generate(
        self,
        requests: Sequence[BackendRequest],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """Raw text per request, in request order (see :class:`~subplug.types.Backend`).

        Requests are decoded in batches of :attr:`batch_size`, longest answers first, so
        a batch holds answers of similar length; ``progress(tokens, budget)`` follows
        the tokens generated against the requests' token budgets (a request that stops
        early counts its whole budget as done)."""

        if not requests:
            return []
        order = sorted(
            range(len(requests)),
            key=lambda i: (-requests[i].max_new_tokens, -len(requests[i].chunk.samples), i),
        )
        ordered = [requests[i] for i in order]
        tally = _Tally(sum(max(1, r.max_new_tokens) for r in requests), progress)

        def batch(items: Sequence[BackendRequest]) -> list[str]:
            return self._generate_batch(items, tally)

        texts = memory.run_with_oom_backoff(
            ordered, self.batch_size, batch, on_backoff=self._on_backoff
        )
        result = [""] * len(requests)
        for position, text in zip(order, texts, strict=True):
            result[position] = text
        return result

    def close(self) -> None:
        """Drop the model and free accelerator memory. Safe to call twice."""
        if getattr(self, "model", None) is None:
            return
        self.model = None
        for kept in (getattr(self, "_audio", None), getattr(self, "_prefixes", None)):
            if kept is not None:
                kept.clear()
        memory.release_memory(self.device)

    def describe(self) -> Mapping[str, Any]:
        """Model, adapter, device, dtype and sizes, for logs and the journal key."""
        location = self.location
        return {
            "backend": BACKEND_NAME,
            "model": location.name or str(location.path),
            "model_path": str(location.base if location.is_adapter else location.path),
            "adapter": str(location.path) if location.is_adapter else None,
            "merged": self.merged,
            "device": self.device,
            "dtype": self.dtype_name,
            "quantize": self.quant.name,
            "kernel": self.quant.kernel,
            "kept_tokens": self.kept_tokens,
            **self.load_facts,
            "attention": self.attention,
            "params": self.params,
            "vision_params_skipped": self.vision_params_skipped,
            "vision_bytes_saved": self.vision_bytes_saved,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "skipped_adapter_tensors": dict(self.skipped_adapter_tensors),
            "transformers": self.transformers_version,
        }

    # -- generation

    def _on_backoff(self, batch_size: int) -> None:
        log.warning("Out of memory on %s; retrying with batch size %d.", self.device, batch_size)
        self.batch_size = batch_size

    def prompt(self, instruction: str) -> str:
        """:func:`render_prompt` for this model's processor (kept per instruction)."""
        if instruction not in self._prompts:
            self._prompts[instruction] = render_prompt(self.processor, instruction)
        return self._prompts[instruction]

    def prepare(self, request: BackendRequest) -> _Prepared:
        """Tokenise one request and compute its mel features with the processor."""
        import numpy as np

        samples = np.asarray(request.chunk.samples, dtype=np.float32)
        encoded = self.processor(
            text=[self.prompt(request.instruction)],
            audio=[samples],
            add_special_tokens=False,
            return_tensors="np",
        )
        return _Prepared(
            input_ids=encoded["input_ids"][0],
            features=audio_features(encoded)[0][0],
            feature_mask=audio_features(encoded)[1][0].astype(bool),
        )

    def prompt_ids(self, instruction: str) -> list[int]:
        """The token ids of the prompt for ``instruction`` (audio placeholders expanded;
        the same for every chunk, since every chunk is 188 audio soft tokens)."""
        key = f"ids:{instruction}"
        if key not in self._prompts:
            import numpy as np

            encoded = self.processor(
                text=[self.prompt(instruction)],
                audio=[np.zeros(1600, dtype=np.float32)],
                add_special_tokens=False,
                return_tensors="np",
            )
            self._prompts[key] = ",".join(str(i) for i in encoded["input_ids"][0].tolist())
        return [int(i) for i in self._prompts[key].split(",")]

    def prefixes(self) -> PrefixCache:
        """The kept prompt prefixes of this model's prompts (decode.PrefixCache)."""
        from subplug.backends.decode import PrefixCache
        from subplug.prompts import INSTRUCTIONS

        if self._prefixes is None:
            self._prefixes = PrefixCache.shared_by([self.prompt_ids(i) for i in INSTRUCTIONS])
        return self._prefixes

    def audio_tokens(self, request: BackendRequest) -> torch.Tensor:
        """The audio encoder's soft tokens for the request's chunk: encoded once per chunk
        (kept for a follow-up request on the same chunk), one chunk at a time."""
        import numpy as np
        import torch

        from subplug.backends.decode import encode_audio

        cached = self._audio.get(request.chunk)
        if cached is not None:
            return cached
        samples = np.asarray(request.chunk.samples, dtype=np.float32)
        encoded = self.processor.feature_extractor([samples], return_tensors="np")
        found, found_mask = audio_features(encoded)
        features = found[0]
        mask = found_mask[0].astype(bool)
        pad = np.zeros((AUDIO_PAD_FRAMES, features.shape[-1]), dtype=features.dtype)
        dtype = next(self.model.parameters()).dtype
        audio = encode_audio(
            self.model,
            torch.from_numpy(np.concatenate([features, pad])).to(self.device, dtype),
            torch.from_numpy(np.concatenate([mask, np.zeros(AUDIO_PAD_FRAMES, bool)])).to(
                self.device
            ),
        )
        self._audio.put(request.chunk, audio)
        return audio

    def collate(self, items: Sequence[_Prepared]) -> dict[str, torch.Tensor]:
        """Batch prepared items: prompts left-padded, mel features right-padded (masked)
        by at least :data:`AUDIO_PAD_FRAMES` frames each."""
        import numpy as np
        import torch

        width = max(len(item.input_ids) for item in items)
        frames = max(len(item.features) for item in items) + AUDIO_PAD_FRAMES
        bins = items[0].features.shape[-1]
        input_ids = np.full((len(items), width), self.pad_id, dtype=np.int64)
        attention = np.zeros((len(items), width), dtype=np.int64)
        features = np.zeros((len(items), frames, bins), dtype=np.float32)
        feature_mask = np.zeros((len(items), frames), dtype=bool)
        for row, item in enumerate(items):
            length = len(item.input_ids)
            input_ids[row, width - length :] = item.input_ids
            attention[row, width - length :] = 1
            features[row, : len(item.features)] = item.features
            feature_mask[row, : len(item.features)] = item.feature_mask
        device = self.device
        dtype = next(self.model.parameters()).dtype
        return {
            "input_ids": torch.from_numpy(input_ids).to(device),
            "attention_mask": torch.from_numpy(attention).to(device),
            "input_features": torch.from_numpy(features).to(device=device, dtype=dtype),
            "input_features_mask": torch.from_numpy(feature_mask).to(device),
        }

    def _generate_batch(self, requests: Sequence[BackendRequest], tally: _Tally) -> list[str]:
        import torch

        from subplug.backends.decode import DecodeRow, greedy_decode

        with torch.inference_mode():
            # A first request of unknown language keeps its prefix for the translation.
            rows = [
                DecodeRow(
                    self.prompt_ids(r.instruction),
                    self.audio_tokens(r),
                    r.max_new_tokens,
                    key=r.chunk,
                    keep_prefix=r.source is None,
                )
                for r in requests
            ]
            generated = greedy_decode(
                self.model,
                rows,
                pad_id=self.pad_id,
                stop_ids=self.stop_ids,
                is_loop=token_loop_at_end,
                on_step=tally.add,
                prefixes=self.prefixes(),
            )
        tally.finish(sum(max(1, r.max_new_tokens) for r in requests))
        if self.quant.least_memory:  # a batch's freed blocks go back to the system
            heap.release_to_os()
        return [self.decode_answer(ids, r) for ids, r in zip(generated, requests, strict=True)]

    def decode_answer(self, ids: Sequence[int], request: BackendRequest) -> str:
        """The answer text for the tokens generated for ``request``: cut at the first stop
        token (and at the request's budget), decoded without special tokens, without the
        replacement and control characters a cut-off or derailed output can hold, and with
        repetition loops trimmed (:func:`trim_repetition`; logged)."""
        ids = list(ids[: max(1, request.max_new_tokens)])
        for position, token in enumerate(ids):
            if token in self.stop_ids:
                ids = ids[:position]
                break
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        # A byte-fallback sequence cut off by the budget decodes to U+FFFD; control
        # characters other than line breaks and tabs have no place in a subtitle.
        text = _UNPRINTABLE.sub("", text).strip()
        trimmed, looped = trim_repetition(text)
        if looped:
            log.info(
                "Chunk %d: trimmed a repetition loop (%d → %d characters).",
                request.chunk.index,
                len(text),
                len(trimmed),
            )
        return trimmed


class _Tally:
    """Tokens generated in one ``generate`` call against the requests' budgets."""

    def __init__(self, budget: int, report: Callable[[int, int], None] | None) -> None:
        self.budget = budget
        self.done = 0
        self._batch_start = 0
        self.report = report

    def add(self, tokens: int) -> None:
        self.done = min(self.budget, self.done + tokens)
        if self.report is not None:
            self.report(self.done, self.budget)

    def finish(self, batch_budget: int) -> None:
        """A batch ended: its requests' unused budgets count as done."""
        self._batch_start = min(self.budget, self._batch_start + batch_budget)
        self.done = self._batch_start
        if self.report is not None:
            self.report(self.done, self.budget)


# ------------------------------------------------------------- adapter checking


_LAYER_KEY = re.compile(r"language_model\.layers\.(\d+)\.self_attn\.(k_proj|v_proj)\.")


def _note_unusable_adapter_tensors(model: Any, adapter_dir: Path) -> dict[str, int]:
    """Find adapter tensors whose target module this model does not have, and log a note.

    Adapters trained with transformers < 5 carry LoRA weights for ``k_proj``/``v_proj``
    of the KV-shared layers; transformers 5 builds no such projections. (Trained they
    were — transformers 4.5x let those layers compute their own keys and values without
    a cache, as in training — but at inference both versions reuse earlier layers' keys
    and values, so they do not change the output.) They are skipped with a note, never
    an error. Returns counts by reason.
    """
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        return {}
    modules = {name for name, _ in model.named_modules()}
    with safe_open(str(weights), framework="pt") as handle:
        keys = list(handle.keys())
    counts: dict[str, int] = {}
    shared_layers: set[int] = set()
    for key in keys:
        target = re.sub(r"^base_model\.model\.", "", key)
        target = re.sub(
            r"\.lora_(A|B|embedding_A|embedding_B|magnitude_vector)(\.\w+)?$", "", target
        )
        target = re.sub(r"\.weight$|\.bias$", "", target)
        if target in modules:
            continue
        match = _LAYER_KEY.search(key)
        if match:
            reason = "kv-shared"
            shared_layers.add(int(match.group(1)))
        elif "vision_tower." in key:
            reason = "vision"
        else:
            reason = "other"
        counts[reason] = counts.get(reason, 0) + 1
    if counts.get("kv-shared"):
        layers = sorted(shared_layers)
        log.info(
            "Note: the adapter has %d LoRA tensors for k_proj/v_proj of the KV-shared layers "
            "%d-%d (it was trained with an older transformers). At inference those layers "
            "reuse earlier layers' keys and values, so these weights change nothing and are "
            "skipped.",
            counts["kv-shared"],
            layers[0],
            layers[-1],
        )
    if counts.get("vision"):
        log.info(
            "Note: %d adapter tensors for the vision tower are skipped (audio-only loading).",
            counts["vision"],
        )
    if counts.get("other"):
        log.warning(
            "%d adapter tensors match no module of this model and are skipped; is the "
            "adapter made for this base model?",
            counts["other"],
        )
    return counts
