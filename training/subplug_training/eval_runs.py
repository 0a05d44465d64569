"""One model over the evaluation samples: its answers, and what the run cost (model
time, real-time factor, peak memory).

How a sample is asked depends on the backend that runs the model (``--backend auto``
picks it as ``subplug generate`` does):

* **gemma3n**: the sample's own training instruction, sent as is (greedy decoding, the
  repetition guard): the adapter is scored instruction by instruction;
* **every other backend** (Whisper, CTC, Qwen3-ASR, SeamlessM4T, remote code): what the
  instruction asks for — the audio's language when known, the output languages — goes
  through the chunk→texts exchange ``subplug generate`` uses (:func:`subplug.transcribe.
  transcribe`: the backend's own calls, and the text translator for what it cannot
  give). A sample the backend and translator cannot serve (instruction 1, the language
  unknown, for a CTC model) is counted as not served, not scored.

Cost: model seconds are the time spent in the model calls (loading excluded: it is
reported apart); the real-time factor is model seconds over the seconds of audio
answered. Peak memory is the process's resident high-water mark from loading to the
last answer (Linux resets it first through ``/proc/self/clear_refs``; elsewhere the
process's peak so far is an upper bound), and the GPU's peak allocation on CUDA.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from subplug.errors import SubplugError

from subplug_training.instructions import Sample, expectation

GIB = 1024**3


@dataclass(frozen=True)
class RunOptions:
    """How the models of an evaluation run."""

    device: str = "auto"
    batch_size: int | None = None
    backend: str = "auto"
    translator: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class ModelRun:
    """One model's answers to the samples and what the run cost."""

    backend: str
    translator: str | None
    """The text translator that ran beside the backend (its plugin name), if any."""
    answers: tuple[str | None, ...]
    """The raw model output per sample (a backend's outputs joined by line breaks;
    ``None``: not served)."""
    texts: tuple[dict[str, str] | None, ...]
    """Per sample: output language → text (``None``: not served); gemma3n's are read
    from its answers by the caller."""
    model_seconds: float
    load_seconds: float
    audio_seconds: float
    peak_memory_bytes: int | None
    peak_gpu_bytes: int | None

    @property
    def rtf(self) -> float | None:
        """Model seconds per second of audio answered."""
        return self.model_seconds / self.audio_seconds if self.audio_seconds else None

    @property
    def unserved(self) -> int:
        return sum(1 for answer in self.answers if answer is None)

    def summary(self) -> dict[str, Any]:
        """The figures of the report's ``run`` section."""
        return {
            "backend": self.backend,
            "translator": self.translator,
            "model_seconds": round(self.model_seconds, 3),
            "load_seconds": round(self.load_seconds, 3),
            "audio_seconds": round(self.audio_seconds, 3),
            "rtf": None if self.rtf is None else round(self.rtf, 4),
            "peak_memory_gib": _gib(self.peak_memory_bytes),
            "peak_gpu_gib": _gib(self.peak_gpu_bytes),
            "not_served": self.unserved,
        }


def _gib(count: int | None) -> float | None:
    return None if count is None else round(count / GIB, 3)


# ----------------------------------------------------------------------- memory


class PeakMemory:
    """The resident (and CUDA) memory high-water mark over a ``with`` block."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.resident: int | None = None
        self.gpu: int | None = None

    def __enter__(self) -> PeakMemory:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._reset = True
        except OSError:
            self._reset = False
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        self.resident = _high_water_mark(self._reset)
        if self.device.startswith("cuda"):
            import torch

            self.gpu = int(torch.cuda.max_memory_allocated())


def _high_water_mark(reset: bool) -> int | None:
    if reset:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            status = ""
        found = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.MULTILINE)
        if found:
            return int(found.group(1)) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


# ------------------------------------------------------------------------- runs


def run_model(
    model: str,
    samples: Sequence[Sample],
    audio: Callable[[Sample], Any],
    options: RunOptions,
    advance: Callable[[int], None],
) -> ModelRun:
    """Load ``model`` with the backend that runs it and answer every sample (module
    docstring); ``advance(n)`` after each batch of ``n`` samples."""
    from subplug import choice, loading, runtime
    from subplug.types import BackendOptions

    name = choice.choose_backend(options.backend, model)
    backend_options = BackendOptions(
        model=model,
        device=options.device,
        batch_size=options.batch_size,
        # Gemma 3n gives both languages itself: a translator beside it would only load.
        translator=None if name == "gemma3n" else options.translator,
        trust_remote_code=options.trust_remote_code,
    )
    device = runtime.resolve_device(options.device)
    with PeakMemory(device) as peak:
        started = time.perf_counter()
        facts = loading.check(name, backend_options, source=None)
        backend = loading.load(name, backend_options)
        loaded = time.perf_counter()
        try:
            if name == "gemma3n":
                answers, texts, seconds = _instructed(backend, samples, audio, options, advance)
            else:
                answers, texts, seconds = _exchanged(
                    backend, facts, samples, audio, options, advance
                )
        finally:
            backend.close()
        model_seconds = time.perf_counter() - loaded
    return ModelRun(
        backend=name,
        translator=facts.get("translator", {}).get("name"),
        answers=tuple(answers),
        texts=tuple(texts),
        model_seconds=model_seconds,
        load_seconds=loaded - started,
        audio_seconds=seconds,
        peak_memory_bytes=peak.resident,
        peak_gpu_bytes=peak.gpu,
    )


def _chunk(index: int, samples_16k: Any) -> Any:
    from subplug.types import SAMPLE_RATE, AudioChunk, ChunkSpan, SpeechRegion

    seconds = len(samples_16k) / SAMPLE_RATE
    return AudioChunk(ChunkSpan(index, 0.0, seconds, (SpeechRegion(0.0, seconds),)), samples_16k)


def _instructed(
    backend: Any,
    samples: Sequence[Sample],
    audio: Callable[[Sample], Any],
    options: RunOptions,
    advance: Callable[[int], None],
) -> tuple[list[str | None], list[dict[str, str] | None], float]:
    """gemma3n: every sample's own instruction, in batches."""
    from subplug import prompts
    from subplug.types import BackendRequest

    answers: list[str | None] = []
    seconds = 0.0
    step = max(1, options.batch_size or 8)
    for start in range(0, len(samples), step):
        batch = []
        for i, sample in enumerate(samples[start : start + step]):
            chunk = _chunk(start + i, audio(sample))
            seconds += chunk.duration
            want = expectation(sample.instruction, sample.audio_language)
            batch.append(
                BackendRequest(
                    chunk=chunk,
                    instruction=prompts.INSTRUCTIONS[sample.instruction - 1],
                    task=want.task,
                    source=want.source,
                    max_new_tokens=prompts.max_new_tokens_for(chunk.duration, want.task),
                )
            )
        answers.extend(backend.generate(batch))
        advance(len(batch))
    return answers, [None] * len(answers), seconds


def _exchanged(
    backend: Any,
    facts: dict[str, Any],
    samples: Sequence[Sample],
    audio: Callable[[Sample], Any],
    options: RunOptions,
    advance: Callable[[int], None],
) -> tuple[list[str | None], list[dict[str, str] | None], float]:
    """Every other backend: the chunk→texts exchange for what each instruction asks."""
    from subplug import calls
    from subplug.transcribe import transcribe

    caps = calls.capabilities_of(backend)
    translator = getattr(backend, "translator", None)
    directions = tuple(translator.directions) if translator is not None else ()
    label = str(facts.get("model") or "the model")
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    answers: list[str | None] = [None] * len(samples)
    texts: list[dict[str, str] | None] = [None] * len(samples)
    for i, sample in enumerate(samples):
        want = expectation(sample.instruction, sample.audio_language)
        source = want.source or "auto"
        try:
            calls.check_request(caps, directions, source, want.outputs, model=label)
        except SubplugError:
            advance(1)
            continue
        groups.setdefault((source, want.outputs), []).append(i)
    seconds = 0.0
    step = max(1, options.batch_size or 8)
    for (source, outputs), members in groups.items():
        for start in range(0, len(members), step):
            part = members[start : start + step]
            chunks = [_chunk(i, audio(samples[i])) for i in part]
            seconds += sum(chunk.duration for chunk in chunks)
            for i, transcript in zip(
                part, transcribe(backend, chunks, source, outputs), strict=True
            ):
                answers[i] = "\n".join(transcript.raw)
                texts[i] = _texts(transcript.texts, outputs)
            advance(len(part))
    return answers, texts, seconds


def _texts(found: Mapping[str, str], outputs: tuple[str, ...]) -> dict[str, str]:
    """The text per output language. A single-output answer in another language (a
    transcription detected as the wrong language) counts as it came out, as Gemma 3n's
    answers do: it then scores as the error it is."""
    if len(outputs) == 1 and outputs[0] not in found:
        return {outputs[0]: " ".join(found.values())}
    return {lang: found.get(lang, "") for lang in outputs}


__all__ = ["ModelRun", "PeakMemory", "RunOptions", "run_model"]
