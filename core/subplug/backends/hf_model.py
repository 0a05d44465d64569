"""What the transformers backends other than Gemma 3n share: finding their model, the
fail-fast check, device and precision, the memory check, and batched answers.

Each backend module (``whisper``, ``ctc``, ``qwen3_asr``, ``seamless``, ``remote_code``,
``nllb``) supplies two functions to a :class:`Factory`: one reads what the model can do
from its files (cheap: JSON and tokenizer files, no weights), one loads it. The factory
is what the backend registers; ``factory.check(options)`` runs before any media is
decoded, and the load that follows reuses what it found.

A model folder may hold ``subplug-capabilities.json`` to state what a fine-tune can do
where its files cannot say (a Qwen3-ASR fine-tune that translates, a CTC model trained
on Mongolian)::

    {"transcribes": ["en", "mn"], "translates": [["en", "mn"], ["mn", "en"]],
     "detects_language": true}

Only the keys given replace what the backend found. Importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from subplug.errors import SubplugError
from subplug.languages import LANGUAGES
from subplug.types import BackendOptions, BackendRequest, Capabilities

log = logging.getLogger(__name__)

#: The file a model folder may hold to state its capabilities (module docstring).
CAPABILITIES_FILE = "subplug-capabilities.json"
#: Weights below this size run in float32 on a CPU with ``--dtype auto`` (there is
#: nothing to save by halving them, and tiny models are where precision shows).
SMALL_WEIGHTS_BYTES = 200 << 20

#: Characters an answer cannot keep (a cut-off byte sequence, control characters).
_UNPRINTABLE = re.compile("[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

L = TypeVar("L")


@dataclass(frozen=True)
class ModelFolder:
    """A located model: its cache name (``None`` for a folder), folder and config."""

    name: str | None
    path: Path
    config: Mapping[str, Any]

    @property
    def label(self) -> str:
        """How messages name it."""
        return self.name or str(self.path)


def locate(
    options: BackendOptions, *, backend: str, model_types: Sequence[str], default: str
) -> ModelFolder:
    """Find the full model ``options.model`` names (``default`` when none) with the
    model cache, and check that its ``config.json`` is of a kind ``backend`` runs."""
    from subplug import cache

    spec = options.model or default
    found = cache.resolve_model(spec)
    if found.is_adapter:
        raise SubplugError(
            "adapter-not-supported",
            f"{spec} is an adapter; the {backend} backend runs full (or merged) models.",
            "Merge the adapter into its base model first, or use the gemma3n backend.",
        )
    config = read_json(Path(found.path) / "config.json")
    if config is None:
        raise SubplugError(
            "model-corrupt",
            f"{spec} has no readable config.json.",
            f"Run `subplug models verify {spec}`, then import or pull it again.",
        )
    model_type = config.get("model_type")
    if model_types and model_type not in model_types:
        raise SubplugError(
            "wrong-backend",
            f"{spec} is a {model_type!r} model; the {backend} backend runs "
            f"{', '.join(repr(t) for t in model_types)} models.",
            "Leave out --backend (auto picks the backend that runs the model).",
        )
    return ModelFolder(found.name, Path(found.path), config)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` when it is missing or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def with_declared(caps: Capabilities, folder: Path) -> Capabilities:
    """``caps`` with what the folder's :data:`CAPABILITIES_FILE` states instead."""
    declared = read_json(folder / CAPABILITIES_FILE)
    if declared is None:
        return caps
    known = {f.name for f in fields(Capabilities)}
    unknown = sorted(set(declared) - known)
    changes: dict[str, Any] = {}
    try:
        for key, value in declared.items():
            if key == "transcribes":
                changes[key] = tuple(str(lang) for lang in value)
            elif key == "translates":
                changes[key] = tuple((str(a), str(b)) for a, b in value)
            elif key in ("combined", "detects_language", "plain_text"):
                changes[key] = bool(value)
            elif key == "max_seconds":
                changes[key] = float(value)
    except (TypeError, ValueError) as exc:
        raise SubplugError(
            "bad-capabilities",
            f"{folder / CAPABILITIES_FILE} cannot be read: {exc}.",
            'Write it like {"transcribes": ["en", "mn"], "translates": [["mn", "en"]]}.',
        ) from exc
    if unknown:
        raise SubplugError(
            "bad-capabilities",
            f"{folder / CAPABILITIES_FILE} has unknown keys: {', '.join(unknown)}.",
            f"Known keys: {', '.join(sorted(known))}.",
        )
    return replace(caps, **changes)


def check_options(options: BackendOptions, backend: str) -> None:
    """The options every transformers backend takes: the common ones checked, and the
    Gemma 3n-only integer formats refused."""
    from subplug import runtime

    runtime.validate_options(options)
    if options.quantize.strip().lower() not in ("auto", "none"):
        raise SubplugError(
            "quantize-unsupported",
            f"--quantize {options.quantize} is for the gemma3n backend; the {backend} "
            "backend runs float weights.",
            "Leave out --quantize (or use --dtype to halve the weights).",
        )
    if options.vocab.strip().lower() not in ("auto", "full"):
        raise SubplugError(
            "vocab-needs-quantize",
            f"--vocab {options.vocab} trims a quantised Gemma 3n; the {backend} backend "
            "keeps its vocabulary.",
            "Leave out --vocab.",
        )


def weight_bytes(folder: Path) -> int:
    """Bytes of the weight files in ``folder`` (safetensors, else PyTorch ``.bin``)."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return sum(f.stat().st_size for f in files)


def count_params(folder: Path) -> int:
    """Parameters stored in ``folder``'s weight files, from the safetensors headers
    (no tensor read); for ``.bin`` weights their size over 4 (float32)."""
    total = 0
    tensors = sorted(folder.glob("*.safetensors"))
    for file in tensors:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for size in info["shape"]:
                    count *= int(size)
                total += count
    if not tensors:
        total = weight_bytes(folder) // 4
    return total


@dataclass(frozen=True)
class Placement:
    """Where and in which precision a model runs."""

    device: str
    dtype: str
    """Canonical dtype name (:data:`subplug.runtime.DTYPE_ALIASES`)."""


def placement(options: BackendOptions, folder: Path) -> Placement:
    """The device and dtype for a model in ``folder``: the runtime's choice, except
    that a small model (:data:`SMALL_WEIGHTS_BYTES`) runs in float32 on a CPU when the
    dtype is ``auto``."""
    from subplug import runtime

    device = runtime.resolve_device(options.device)
    small = weight_bytes(folder) < SMALL_WEIGHTS_BYTES
    if runtime.device_kind(device) == "cpu" and options.dtype.strip().lower() == "auto" and small:
        return Placement(device, "float32")
    return Placement(device, runtime.choose_dtype(options.dtype, device))


@dataclass
class Loaded:
    """What every loaded transformers backend keeps beside its model."""

    folder: ModelFolder
    placement: Placement
    params: int
    batch_size: int
    threads: int | None


def prepare_load(
    options: BackendOptions, folder: ModelFolder, *, per_item_bytes: int = 256 << 20
) -> Loaded:
    """Before loading: the memory check (weights plus one batch item must fit), the
    thread count and the batch size (``--batch-size``, else from free memory)."""
    from subplug import memory, runtime
    from subplug.memory import MemoryEstimate

    where = placement(options, folder.path)
    params = count_params(folder.path)
    estimate = MemoryEstimate(
        params=params,
        weight_bytes=params * runtime.dtype_bytes(where.dtype),
        per_item_bytes=per_item_bytes,
        dtype=where.dtype,
    )
    memory.check_fits(estimate, where.device)
    threads = runtime.configure_threads(where.device, options.threads, params=params)
    batch = options.batch_size or memory.batch_size_for(
        estimate, where.device, memory.free_memory(where.device)
    )
    return Loaded(folder, where, params, batch, threads)


def load_kwargs(where: Placement) -> dict[str, Any]:
    """``from_pretrained`` keywords for ``where`` (dtype, device map)."""
    from subplug import runtime

    kwargs: dict[str, Any] = {"dtype": runtime.torch_dtype(where.dtype)}
    if where.device != "cpu":
        kwargs["device_map"] = {"": where.device}
    return kwargs


@contextmanager
def quiet_generation() -> Iterator[None]:
    """transformers' advice about generation settings (a checkpoint's ``max_length``
    beside the request's token budget, its suppress lists) is not the user's business:
    errors only while generating."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def finish_load(model: Any, where: Placement) -> Any:
    """The loaded model in eval mode, with the CPU compute policy of its dtype."""
    from subplug import runtime

    model.eval()
    runtime.apply_compute_policy(model, where.dtype)
    return model


class HfModel:
    """What a loaded transformers model of any family keeps and how it ends: ``loaded``
    (folder, placement, sizes), ``model`` (``None`` once closed), ``processor`` and
    ``batch_size``; :meth:`close` and :meth:`describe`."""

    name: str
    loaded: Loaded
    model: Any
    processor: Any
    batch_size: int

    def load(
        self,
        folder: ModelFolder,
        options: BackendOptions,
        model_class: Any,
        processor_class: Any,
        *,
        per_item_bytes: int = 256 << 20,
        **model_kwargs: Any,
    ) -> None:
        """The memory check, threads and batch size (:func:`prepare_load`), then the
        processor and the model from ``folder`` (``model_kwargs`` added to
        ``from_pretrained``'s), quietly, in eval mode (:func:`finish_load`)."""
        from subplug.backends.gemma3n_model import quiet_loading

        self.loaded = prepare_load(options, folder, per_item_bytes=per_item_bytes)
        where = self.loaded.placement
        with quiet_loading():
            self.processor = processor_class.from_pretrained(folder.path)
            model = model_class.from_pretrained(folder.path, **load_kwargs(where), **model_kwargs)
        self.model = finish_load(model, where)
        self.batch_size = self.loaded.batch_size

    def close(self) -> None:
        """Drop the model and free accelerator memory. Safe to call twice."""
        if getattr(self, "model", None) is None:
            return
        from subplug import memory

        self.model = None
        memory.release_memory(self.loaded.placement.device)

    def describe(self) -> dict[str, Any]:
        """Model, device, dtype and sizes, for logs and reports."""
        where = self.loaded.placement
        return {
            "backend": self.name,
            "model": self.loaded.folder.label,
            "model_path": str(self.loaded.folder.path),
            "device": where.device,
            "dtype": where.dtype,
            "params": self.loaded.params,
            "batch_size": self.batch_size,
            "threads": self.loaded.threads,
        }


class HfBackend(HfModel):
    """:class:`HfModel` answering :class:`~subplug.types.BackendRequest` s: a subclass
    gives ``_batch(requests) -> texts`` for one batch and, when a batch must hold
    requests of one kind (one language, one task), :meth:`group`."""

    capabilities: Capabilities

    def generate(
        self,
        requests: Sequence[BackendRequest],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """Raw text per request, in order (:func:`run_batches` over :meth:`group`)."""
        return run_batches(
            requests, self.batch_size, self._batch, progress=progress, group=self.group
        )

    def group(self, request: BackendRequest) -> Any:
        """What a batch's requests must share; ``None``: anything may go together."""
        return None

    def _batch(self, requests: Sequence[BackendRequest]) -> list[str]:
        raise NotImplementedError


class Factory(Generic[L]):
    """A backend factory over two functions: ``inspect(folder, options)`` says what the
    model can do (cheap), ``load(folder, options, capabilities)`` loads it. ``check``
    locates the model, checks the options and the device, and returns ``contents`` (the
    model's fingerprint), ``capabilities``, ``directions`` (what it translates: a text
    translator's facts) and ``model`` (its name for messages)."""

    def __init__(
        self,
        backend: str,
        *,
        model_types: Sequence[str],
        default_model: str,
        inspect: Callable[[ModelFolder, BackendOptions], Capabilities],
        load: Callable[[ModelFolder, BackendOptions, Capabilities], L],
        check_extra: Callable[[ModelFolder, BackendOptions], None] | None = None,
    ) -> None:
        self.backend = backend
        self.model_types = tuple(model_types)
        self.default_model = default_model
        self._inspect = inspect
        self._load = load
        self._check_extra = check_extra
        self._found: dict[tuple[str | None, bool], tuple[ModelFolder, Capabilities]] = {}

    def check(self, options: BackendOptions) -> dict[str, Any]:
        """Options, model, device: raises ``SubplugError``; loads nothing."""
        from subplug import cache

        check_options(options, self.backend)
        folder = locate(
            options, backend=self.backend, model_types=self.model_types, default=self.default_model
        )
        if self._check_extra is not None:
            self._check_extra(folder, options)
        caps = with_declared(self._inspect(folder, options), folder.path)
        placement(options, folder.path)  # the device is there, the dtype usable on it
        self._found[(options.model, options.trust_remote_code)] = (folder, caps)
        return {
            "contents": cache.contents_fingerprint(options.model or self.default_model),
            "capabilities": caps,
            "directions": caps.translates,
            "model": folder.label,
        }

    def __call__(self, options: BackendOptions) -> L:
        """Check (unless :meth:`check` just did for these options), then load."""
        key = (options.model, options.trust_remote_code)
        if key not in self._found:
            self.check(options)
        folder, caps = self._found.pop(key)
        return self._load(folder, options, caps)


def run_batches(
    requests: Sequence[BackendRequest],
    batch_size: int,
    run: Callable[[Sequence[BackendRequest]], list[str]],
    *,
    progress: Callable[[int, int], None] | None = None,
    group: Callable[[BackendRequest], Any] = lambda request: None,
) -> list[str]:
    """Answers to ``requests`` in their order, computed in batches of ``batch_size``
    that hold requests of one ``group`` (the language they are asked in), longest audio
    first; an out-of-memory batch is halved and retried. ``progress(done, budget)``
    counts the requests' token budgets as their batches finish."""
    from subplug import memory

    order = sorted(
        range(len(requests)),
        key=lambda i: (str(group(requests[i])), -len(requests[i].chunk.samples), i),
    )
    budget = sum(max(1, r.max_new_tokens) for r in requests)
    done = 0
    results = [""] * len(requests)
    start = 0
    while start < len(order):
        key = group(requests[order[start]])
        end = start
        while end < len(order) and group(requests[order[end]]) == key:
            end += 1
        part = [requests[i] for i in order[start:end]]

        def batch(items: Sequence[BackendRequest]) -> list[str]:
            nonlocal done
            answers = run(items)
            done += sum(max(1, r.max_new_tokens) for r in items)
            if progress is not None:
                progress(min(done, budget), budget)
            return answers

        for position, answer in zip(
            order[start:end], memory.run_with_oom_backoff(part, batch_size, batch), strict=True
        ):
            results[position] = answer
        start = end
    return results


def clean_answer(text: str, chunk_index: int) -> str:
    """A decoded answer without unprintable characters, trimmed, with a repetition
    loop cut (logged), as Gemma 3n's answers are."""
    from subplug.backends.repetition import trim_repetition

    text = _UNPRINTABLE.sub("", text).strip()
    trimmed, looped = trim_repetition(text)
    if looped:
        log.info(
            "Chunk %d: trimmed a repetition loop (%d → %d characters).",
            chunk_index,
            len(text),
            len(trimmed),
        )
    return trimmed


def ours(codes: Mapping[str, str], available: Sequence[str]) -> tuple[str, ...]:
    """subplug's languages (in order) whose model code in ``codes`` (``en`` →
    ``eng``…) is among ``available``."""
    found = set(available)
    return tuple(lang for lang in LANGUAGES if codes.get(lang) in found)


def samples_of(request: BackendRequest) -> Any:
    """The request's audio as a float32 array."""
    import numpy as np

    return np.asarray(request.chunk.samples, dtype=np.float32)
