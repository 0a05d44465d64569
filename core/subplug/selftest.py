"""``subplug doctor --self-test``: the whole pipeline, offline, with a tiny model.

Builds a tiny random Gemma 3n (real processor, real architecture) in a temporary folder,
makes a short video from the speech clip shipped in the package, and runs decode →
speech detection → the Gemma 3n backend → cue shaping → ASS/SRT/VTT files, then reads
the files back. It proves that every library and code path works on this machine; the
tiny model's words are random, so the text itself is not checked.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from subplug.errors import SubplugError
from subplug.types import (
    BackendOptions,
    CheckResult,
    CheckStatus,
    DoctorCheck,
    GenerateOptions,
    JobEvent,
)

#: Speech in the shipped clip (seconds), measured once with silero-vad; used as a sanity
#: bound for cue times.
CLIP_SECONDS = 11.0


@dataclass(frozen=True)
class Step:
    """One step of the self-test: what it did, how long it took."""

    name: str
    seconds: float
    result: str


class SelfTestFailed(Exception):
    """A self-test step failed: which one, why, and the steps that passed before it."""

    def __init__(self, step: str, error: BaseException, steps: list[Step]) -> None:
        super().__init__(f"step {step!r} failed: {error}")
        self.step = step
        self.error = error
        self.steps = steps


def speech_clip_path() -> Path:
    """The packaged speech clip (public-domain JFK excerpt, see data/SOURCES.md)."""
    return Path(str(resources.files("subplug") / "data" / "selftest-speech.opus"))


def make_video(audio: Path, dest: Path) -> Path:
    """Mux ``audio`` with a small generated picture into an mp4 (AAC + MPEG-4)."""
    import av
    import numpy as np

    with av.open(str(audio)) as source, av.open(str(dest), "w") as out:
        in_stream = source.streams.audio[0]
        video = out.add_stream("mpeg4", rate=5)
        video.width, video.height, video.pix_fmt = 160, 90, "yuv420p"
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "stereo"
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
        seconds = 0.0
        for frame in source.decode(in_stream):
            for converted in resampler.resample(frame):
                for packet in sound.encode(converted):
                    out.mux(packet)
            if frame.pts is not None and frame.time_base is not None:
                seconds = float(frame.pts * frame.time_base) + frame.samples / frame.sample_rate
        for packet in sound.encode(None):
            out.mux(packet)
        picture = np.zeros((90, 160, 3), dtype=np.uint8)
        picture[:, :, 2] = 160
        for index in range(int(seconds * 5)):
            still = av.VideoFrame.from_ndarray(picture, format="rgb24")
            still.pts = index
            for packet in video.encode(still):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return dest


def run_self_test(work: Path, console: Any = None) -> list[Step]:
    """Run every step in ``work``; returns the steps, or raises :class:`SelfTestFailed`
    naming the first step that failed.

    Steps: import the libraries, build the tiny model, make the clip, load the backend
    (audio-only), then the engine's decode, speech detection and transcription stages,
    then writing and reading back the subtitle files. Each step is timed on its own.
    """
    steps: list[Step] = []
    current = ["libraries"]
    try:
        return _run_steps(work, console, steps, current)
    except Exception as error:
        raise SelfTestFailed(current[0], error, steps) from error


def _run_steps(work: Path, console: Any, steps: list[Step], current: list[str]) -> list[Step]:
    import pysubs2
    from rich.markup import escape

    from subplug import plugins
    from subplug.engine import Engine
    from subplug.testing.tiny import build_tiny_model

    def record(name: str, seconds: float, result: str) -> None:
        steps.append(Step(name, seconds, result))
        if console is not None:
            from rich.table import Table

            # A grid, so a long result wraps at words under its own column.
            line = Table.grid(padding=(0, 1))
            line.add_column(width=3, justify="right")
            line.add_column(width=16)
            line.add_column(width=8, justify="right")
            line.add_column(ratio=1)
            line.add_row("[green]✓[/]", escape(name), f"{seconds:.2f} s", escape(result))
            console.print(line, soft_wrap=False)

    started = time.perf_counter()
    import torch
    import transformers

    from subplug.backends.gemma3n_model import audio_only_model_class

    audio_only_model_class()
    record(
        "libraries",
        time.perf_counter() - started,
        f"torch {torch.__version__}, transformers {transformers.__version__}",
    )

    current[0] = "tiny model"
    started = time.perf_counter()
    model = build_tiny_model(work / "tiny-gemma3n")
    record("tiny model", time.perf_counter() - started, f"built in {model}")

    current[0] = "clip"
    started = time.perf_counter()
    clip = make_video(speech_clip_path(), work / "self test клип.mp4")
    record(
        "clip", time.perf_counter() - started, f"{clip.name} ({clip.stat().st_size // 1024} KiB)"
    )

    options = GenerateOptions(
        source="en",
        formats=("ass", "srt", "vtt"),
        out_dir=work / "out",
        backend="gemma3n",
        backend_options=BackendOptions(model=str(model), device="cpu"),
        resume=False,
    )
    current[0] = "model-load"
    started = time.perf_counter()
    backend = plugins.backends()[options.backend](options.backend_options)
    facts = backend.describe()
    record(
        "model-load",
        time.perf_counter() - started,
        f"Gemma 3n (tiny, {facts.get('params', 0):,} parameters) on {facts.get('device')}, "
        f"{facts.get('dtype')}, audio only",
    )

    marks: list[tuple[str, float]] = []

    def on_event(event: JobEvent) -> None:
        if event.kind == "stage":
            current[0] = str(event.data["stage"])
            marks.append((current[0], time.perf_counter()))

    (work / "out").mkdir()
    try:
        with Engine(events=on_event, backend=backend) as engine:
            tracks = engine.generate(clip, options)
            marks.append(("end", time.perf_counter()))
            results = {
                "decode": f"{tracks.duration:.1f} s of audio at 16 kHz",
                "vad": f"{len(tracks.transcripts)} chunk(s) of speech",
                "transcribe": f"{sum(len(''.join(t.raw)) for t in tracks.transcripts)} "
                "characters generated",
            }
            for (name, begin), (_next, end) in zip(marks, marks[1:], strict=False):
                if name in results:
                    record(name, end - begin, results[name])
            if not tracks.transcripts:
                raise RuntimeError("speech detection found no speech in the self-test clip")
            current[0] = "write"
            started = time.perf_counter()
            written = engine.write(tracks, options)
    finally:
        backend.close()
    from subplug.languages import language_name

    cue_count = ", ".join(
        f"{len(track.cues)} {language_name(lang)}" for lang, track in tracks.tracks.items()
    )
    for path in written.outputs:
        subs = pysubs2.load(str(path))
        if not len(subs):
            raise RuntimeError(f"{path.name} holds no subtitles")
        for line in subs:
            if not 0 <= line.start < line.end <= (tracks.duration or CLIP_SECONDS) * 1000 + 1:
                raise RuntimeError(f"{path.name}: cue {line.start}–{line.end} ms outside the clip")
    record(
        "write",
        time.perf_counter() - started,
        f"{len(written.outputs)} files; cues: {cue_count}",
    )
    return steps


def self_test_check(console: Any = None) -> DoctorCheck:
    """The self-test as a doctor check (registered only with ``--self-test``)."""

    def run() -> CheckResult:
        if console is not None:
            console.print("[bold]self-test[/] (tiny model, offline):")
        started = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="subplug-selftest-") as tmp:
                steps = run_self_test(Path(tmp), console)
        except SelfTestFailed as failed:
            error = failed.error
            if isinstance(error, SubplugError):
                why, hint = error.message, error.hint
            else:
                why, hint = f"{type(error).__name__}: {error}", None
            details: dict[str, Any] = {
                "failed_step": failed.step,
                "steps": [s.__dict__ for s in failed.steps],
            }
            if not isinstance(error, SubplugError):
                details["traceback"] = "".join(traceback.format_exception(error))
            return CheckResult(
                CheckStatus.FAIL,
                f"step {failed.step!r} failed: {why}",
                hint
                or "Please report this with the output of `subplug doctor --self-test --json` "
                "(it holds the traceback).",
                details=details,
            )
        total = time.perf_counter() - started
        return CheckResult(
            CheckStatus.OK,
            f"whole pipeline ran offline in {total:.1f} s ({len(steps)} steps)",
            details={"steps": [s.__dict__ for s in steps]},
        )

    return DoctorCheck("self-test", run, "self-test")
