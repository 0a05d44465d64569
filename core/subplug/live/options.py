"""What ``subplug live`` can be told (:class:`LiveOptions`) and its checks
(:func:`validate`), made before any model is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from subplug.errors import SubplugError
from subplug.languages import MAX_AUDIO_SECONDS, SOURCES
from subplug.live.pcm import PCM_FORMATS
from subplug.types import BackendOptions

#: The model's input limit (seconds of audio per request).
MODEL_LIMIT = MAX_AUDIO_SECONDS


@dataclass(frozen=True)
class LiveOptions:
    """Everything ``subplug live`` can be told. Checked by :func:`validate`."""

    format: str = "f32le"
    """Sample format of stdin: ``f32le`` (float) or ``s16le`` (16-bit integer)."""
    rate: int = 48_000
    """Sample rate of stdin in Hz (8 000 … 192 000)."""
    channels: int = 1
    """Interleaved channels on stdin (1 … 8); they are averaged to mono."""
    source: str = "auto"
    """Spoken language: ``en``, ``mn`` or ``auto`` (detected per utterance)."""
    backend: str = "auto"
    """A backend name, or ``auto``: the one that runs the model (:mod:`subplug.choice`)."""
    backend_options: BackendOptions = field(default_factory=BackendOptions)
    vad_threshold: float = 0.5
    """silero-vad speech probability that starts an utterance."""
    min_silence: float = 0.4
    """Seconds of silence that end an utterance."""
    min_speech: float = 0.25
    """Utterances shorter than this are ignored (clicks, coughs)."""
    max_utterance: float = 8.0
    """An utterance longer than this is cut at its quietest point in the last second."""
    pad: float = 0.1
    """Seconds of audio kept before and after the speech of an utterance."""
    max_lag: float = 15.0
    """A waiting utterance that ended more than this many seconds before the newest input
    is dropped instead of captioned. ``0`` never drops anything: the reader then waits for
    the engine when its buffer is full (for files, not live streams)."""
    merge_limit: float = 24.0
    """Waiting utterances are merged into one request up to this many seconds of audio."""
    input_buffer: float = 30.0
    """Seconds of raw input held while the segmenter is busy; older audio is dropped
    (unless ``max_lag`` is 0)."""
    stats_interval: float = 10.0
    """A ``stats`` event every this many seconds of input (``0``: only at the end)."""


def validate(options: LiveOptions) -> LiveOptions:
    """Check ``options`` before any model is loaded; raise :class:`SubplugError`."""

    def bad(reference: str, message: str, hint: str) -> SubplugError:
        return SubplugError(reference, message, hint)

    if options.format not in PCM_FORMATS:
        raise bad(
            "bad-pcm-format",
            f"Unknown sample format {options.format!r}.",
            f"Use one of: {', '.join(PCM_FORMATS)}.",
        )
    if not 8_000 <= options.rate <= 192_000:
        raise bad(
            "bad-sample-rate",
            f"Sample rate {options.rate} Hz is out of range.",
            "Give --rate between 8000 and 192000 (OBS uses 48000).",
        )
    if not 1 <= options.channels <= 8:
        raise bad(
            "bad-channels",
            f"{options.channels} channels is out of range.",
            "Give --channels between 1 and 8.",
        )
    if options.source not in SOURCES:
        raise bad(
            "bad-source",
            f"Unknown source language {options.source!r}.",
            f"Use one of: {', '.join(SOURCES)}.",
        )
    if not 0.05 <= options.vad_threshold <= 0.95:
        raise bad("bad-vad-threshold", "--vad-threshold must be between 0.05 and 0.95.", "")
    if not 0.1 <= options.min_silence <= 5.0:
        raise bad("bad-min-silence", "--min-silence must be between 0.1 and 5 seconds.", "")
    if not 1.0 <= options.max_utterance <= MODEL_LIMIT:
        raise bad(
            "bad-max-utterance",
            f"--max-utterance must be between 1 and {MODEL_LIMIT:g} seconds.",
            "The model reads at most 30 s of audio per request.",
        )
    if not options.max_utterance <= options.merge_limit <= MODEL_LIMIT:
        raise bad(
            "bad-merge-limit",
            f"--merge-limit must be between --max-utterance and {MODEL_LIMIT:g} seconds.",
            "",
        )
    if options.max_lag < 0:
        raise bad("bad-max-lag", "--max-lag cannot be negative.", "Use 0 to never drop audio.")
    if not 1.0 <= options.input_buffer <= 600.0:
        raise bad("bad-input-buffer", "--input-buffer must be between 1 and 600 s.", "")
    if options.stats_interval < 0:
        raise bad("bad-stats-interval", "--stats-interval cannot be negative.", "")
    from subplug import choice, runtime

    runtime.validate_options(options.backend_options)
    backend = choice.choose_backend(options.backend, options.backend_options.model)
    return replace(options, backend=backend) if backend != options.backend else options
