"""Data that crosses module boundaries: frozen dataclasses, no dicts.

Times are seconds (float) on the media's clock. Audio is 16 kHz mono float32.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

# LANGUAGES is re-exported: plugins import it from here.
from subplug.languages import DEFAULT_MAX_CHARS, LANGUAGES, MAX_AUDIO_SECONDS  # noqa: F401

if TYPE_CHECKING:
    import numpy as np

#: The sample rate every model-facing array uses.
SAMPLE_RATE = 16_000


class Task(str, enum.Enum):
    """What a backend call is asked to produce for one chunk."""

    TRANSCRIBE = "transcribe"  # source text only, language unknown (instruction 1)
    TRANSLATE = "translate"  # the other language only (instructions 6, 7)
    BOTH = "both"  # source text, then translation (instructions 8, 9)


# --------------------------------------------------------------------------- media


@dataclass(frozen=True)
class AudioStreamInfo:
    """One audio stream of a media file, as probed."""

    index: int
    """Position among the file's *audio* streams (what ``--audio-stream`` takes)."""
    codec: str
    sample_rate: int
    channels: int
    layout: str
    language: str | None
    title: str | None
    default: bool


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`subplug.media.probe` learned about a file."""

    path: Path
    container: str
    duration: float | None
    """Seconds; ``None`` when the container does not say."""
    audio_streams: tuple[AudioStreamInfo, ...]
    has_video: bool
    size_bytes: int


# ------------------------------------------------------------------ segmentation


@dataclass(frozen=True)
class SpeechRegion:
    """A stretch of speech found by voice activity detection."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class ChunkSpan:
    """One planned model input: ≤ 30 s of audio holding whole speech regions."""

    index: int
    start: float
    end: float
    regions: tuple[SpeechRegion, ...]
    """The speech regions inside this chunk (clipped to it), in order."""

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """A planned chunk with its samples (16 kHz mono float32)."""

    span: ChunkSpan
    samples: np.ndarray = field(repr=False)

    @property
    def index(self) -> int:
        return self.span.index

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


# ---------------------------------------------------------------------- backends


@dataclass(frozen=True, eq=False)
class BackendRequest:
    """One item of a batched backend call."""

    chunk: AudioChunk
    instruction: str
    """The exact training instruction (one of :data:`subplug.prompts.INSTRUCTIONS`)."""
    task: Task
    source: str | None
    """Source language when known (``en``/``mn``), ``None`` for language detection."""
    max_new_tokens: int


@dataclass(frozen=True)
class Capabilities:
    """What a speech backend's model can do; the chunk→texts exchange plans its calls
    from it (:mod:`subplug.calls`). A backend states them as its ``capabilities``
    attribute (and its factory's ``check`` returns them under ``capabilities``); a
    backend that states none gets these defaults: what Gemma 3n with the EN/MN adapter
    does."""

    transcribes: tuple[str, ...] = LANGUAGES
    """Languages it writes down as spoken (``en``, ``mn``)."""
    translates: tuple[tuple[str, str], ...] = (("en", "mn"), ("mn", "en"))
    """Speech translation directions it has: (audio language, text language)."""
    combined: bool = True
    """One call gives the transcription and the translation (``Task.BOTH``)."""
    detects_language: bool = True
    """It transcribes with the language unknown (a request with ``source=None``);
    otherwise the source must be given, or be the only language it transcribes."""
    max_seconds: float = MAX_AUDIO_SECONDS
    """The longest chunk it hears at once."""
    plain_text: bool = False
    """Each answer is plain text in the language asked for (a transcription or
    translation model). ``False``: answers may carry labels, sections or the other
    language (an instruction-following model), read by the tolerant parser."""


@runtime_checkable
class Backend(Protocol):
    """A loaded model. Made by a factory registered with ``subplug_register_backends``."""

    name: str

    def generate(self, requests: Sequence[BackendRequest]) -> list[str]:
        """Return the raw model text for each request, in request order.

        Backends batch internally as they see fit and must never drop a request.
        """
        ...

    def close(self) -> None:
        """Release memory (GPU, threads). Safe to call twice."""
        ...

    def describe(self) -> Mapping[str, Any]:
        """Facts for logs and the journal key: model id, revision, device, dtype…"""
        ...


@dataclass(frozen=True)
class BackendOptions:
    """What a backend factory receives. Validated before any model is touched."""

    model: str | None = None
    """Model cache name or a folder path; ``None`` means the backend's default."""
    device: str = "auto"
    """``auto``, ``cuda``, ``cuda:N``, ``mps`` or ``cpu``."""
    dtype: str = "auto"
    batch_size: int | None = None
    """``None``: chosen from free memory."""
    merge_adapter: bool = True
    threads: int | None = None
    quantize: str = "auto"
    """``auto``, ``none``, ``int8`` or ``int4``: weights stored and multiplied as
    integers (CPU). ``auto``: int8 on the CPU, none on a GPU (docs/performance.md)."""
    vocab: str = "auto"
    """``auto``, ``full`` or ``en-mn``: keep only the tokens English and Mongolian text
    needs (a quantised model only). ``auto``: ``en-mn`` whenever the model is quantised."""
    translator: str | None = None
    """A text translator for the languages the speech model cannot give itself: a model
    (cache name or folder) or a translator's name (its default model); ``None``: none.
    Registered with ``subplug_register_translators``."""
    trust_remote_code: bool = False
    """Run Python code that comes with a model (the ``remote-code`` backend); refused
    without it."""
    extra: Mapping[str, str] = field(default_factory=dict)


BackendFactory = Callable[[BackendOptions], Backend]


@runtime_checkable
class Translator(Protocol):
    """A loaded text translation model. Made by a factory registered with
    ``subplug_register_translators``."""

    name: str
    directions: tuple[tuple[str, str], ...]
    """(source language, target language) pairs it translates, e.g. ``("en", "mn")``."""

    def translate(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        """One translation per text, in order (an empty text stays empty)."""
        ...

    def close(self) -> None:
        """Release memory. Safe to call twice."""
        ...

    def describe(self) -> Mapping[str, Any]:
        """Facts for logs and reports: model, device, dtype…"""
        ...


TranslatorFactory = Callable[[BackendOptions], Translator]


# -------------------------------------------------------------------- transcripts


@dataclass(frozen=True)
class Transcript:
    """Parsed model output for one chunk."""

    chunk: ChunkSpan
    source_lang: str | None
    texts: Mapping[str, str]
    """Language code → text. Missing language: absent key."""
    raw: tuple[str, ...] = ()
    """The raw model outputs this came from (for the journal and debugging)."""


# ----------------------------------------------------------------------------- cues


@dataclass(frozen=True)
class Cue:
    """One subtitle: a time span and up to ``max_lines`` lines of text."""

    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Track:
    """All cues of one language."""

    lang: str
    cues: tuple[Cue, ...]
    dropped: tuple[Cue, ...] = ()
    """Cues cue shaping had to leave out because they could not fit in time (a model
    answer far longer than its audio could hold); the engine warns about them."""


@dataclass(frozen=True)
class Tracks:
    """The result of generating subtitles for one media file."""

    media: Path
    source_lang: str | None
    """``en``/``mn`` when the whole file had one detected/declared source, else ``None``."""
    tracks: Mapping[str, Track]
    transcripts: tuple[Transcript, ...] = ()
    duration: float | None = None
    warnings: tuple[str, ...] = ()
    outputs: tuple[Path, ...] = ()
    """Files written (filled in by :meth:`subplug.engine.Engine.write`)."""


@dataclass(frozen=True)
class CueOptions:
    """Subtitle conventions (REFERENCE.md §3). Defaults follow Netflix English."""

    max_chars: Mapping[str, int] = field(
        default_factory=lambda: dict.fromkeys(LANGUAGES, DEFAULT_MAX_CHARS)
    )
    """Characters per line, per language."""
    max_lines: int = 2
    max_cps: float = 17.0
    """Characters per second to aim for (reading speed), where timing allows."""
    min_duration: float = 5 / 6
    max_duration: float = 7.0
    min_gap: float = 0.084
    """Two frames at 24 fps."""
    max_lead: float = 0.5
    """How far a cue may start before, or linger after, its speech to meet the rules."""


@dataclass(frozen=True)
class StyleOptions:
    """How the bilingual ASS places the two languages."""

    bottom: str = "mn"
    """Language shown at the bottom (the other goes above it)."""
    font: str = "DejaVu Sans"
    font_size: int = 52
    second_font_size: int = 44
    play_res: tuple[int, int] = (1920, 1080)
    second_position: str = "above"
    """Where the other language goes: ``above`` the bottom one (raised, same alignment)
    or at the ``top`` of the frame."""


@dataclass(frozen=True)
class GenerateOptions:
    """Everything ``subplug generate`` can be told. Validated by :func:`validate`."""

    source: str = "auto"
    """``auto``, ``en`` or ``mn``."""
    targets: tuple[str, ...] = ("en", "mn")
    formats: tuple[str, ...] = ("ass", "srt")
    out_dir: Path | None = None
    """``None``: next to the media."""
    overwrite: bool = False
    audio_stream: int | None = None
    backend: str = "auto"
    """A backend name, or ``auto``: the one that runs the model (:mod:`subplug.choice`)."""
    backend_options: BackendOptions = field(default_factory=BackendOptions)
    cues: CueOptions = field(default_factory=CueOptions)
    style: StyleOptions = field(default_factory=StyleOptions)
    max_chunk: float = MAX_AUDIO_SECONDS
    resume: bool = True
    """Reuse journaled chunk results from an earlier, interrupted run."""
    vad_threshold: float = 0.5


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class JobEvent:
    """A progress or lifecycle event, sent to every ``subplug_job_event`` hook.

    ``kind`` is one of: ``job-start``, ``file-start``, ``stage`` (``data["stage"]`` is
    ``decode``/``vad``/``model-load``/``transcribe``/``write``), ``progress``
    (``done``/``total`` chunks), ``warning``, ``file-done`` (``outputs``), ``file-error``,
    ``job-done``. Documented in docs/jsonl.md.
    """

    kind: str
    media: Path | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- extensions


@dataclass(frozen=True)
class SubtitleFormat:
    """A subtitle writer registered with ``subplug_register_formats``."""

    name: str
    """``ass``, ``srt``, ``vtt``…"""
    bilingual: bool
    """True: one file holds every track (``NAME.en-mn.ass``). False: a file per language."""
    write: Callable[[Tracks, Sequence[str], StyleOptions], str]
    """Render the given languages of ``tracks`` to the file's text."""
    extension: str = ""

    def __post_init__(self) -> None:
        if not self.extension:
            object.__setattr__(self, "extension", self.name)


class CheckStatus(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """What a doctor check found."""

    status: CheckStatus
    summary: str
    hint: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DoctorCheck:
    """A named check registered with ``subplug_doctor_checks``."""

    name: str
    run: Callable[[], CheckResult]
    group: str = "general"


@dataclass(frozen=True)
class HostStatus:
    """Where a host adapter stands: installed or not, where, which version."""

    installed: bool
    location: str | None
    version: str | None
    message: str


@runtime_checkable
class HostAdapter(Protocol):
    """A host program subplug can install itself into (``subplug install NAME``)."""

    name: str

    def install(self) -> HostStatus: ...

    def uninstall(self) -> HostStatus: ...

    def status(self) -> HostStatus: ...
