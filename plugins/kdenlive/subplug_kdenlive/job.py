"""``subplug kdenlive job SOURCE OUTPUT``: what Kdenlive's clip job runs.

Kdenlive (``CustomJobTask``) runs the job binary with its parameters, reads progress
from stderr lines containing ``percentage: N`` and, when the process exits normally with
a non-empty ``OUTPUT``, adds that file to the bin. This writes the bilingual ``.ass`` to
``OUTPUT`` and ``.en.srt`` / ``.mn.srt`` beside it.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path
from typing import IO

from subplug.errors import SubplugError
from subplug.types import GenerateOptions, JobEvent

from subplug_kdenlive import safety, writers
from subplug_kdenlive.project import Profile


class PercentReporter:
    """Turns engine events into ``percentage: N`` lines (never going backwards)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.last = -1
        self.warnings: list[str] = []

    def report(self, percent: float) -> None:
        value = max(0, min(100, int(percent)))
        if value > self.last:
            self.last = value
            self.stream.write(f"percentage: {value}\n")
            self.stream.flush()

    def __call__(self, event: JobEvent) -> None:
        data = event.data
        if event.kind == "stage":
            stage = data.get("stage")
            self.report(
                {
                    "probe": 1,
                    "decode": 2,
                    "vad": 12,
                    "model-load": 14,
                    "transcribe": 15,
                    "write": 97,
                }.get(stage, self.last)
            )
        elif event.kind == "decode-progress" and data.get("total"):
            self.report(2 + 10 * float(data["seconds"]) / float(data["total"]))
        elif event.kind == "progress":
            self.report(15 + 0.8 * float(data.get("percent", 0)))
        elif event.kind == "warning":
            self.warnings.append(str(data.get("reference", "")))
            self.stream.write(f"warning: {data.get('message', '')}\n")
            self.stream.flush()


def sibling(output: Path, lang: str) -> Path:
    """``clip.en-mn.ass`` → ``clip.en.srt`` (any other name: ``NAME.en.srt``)."""
    name = output.name
    base = name[: -len(".en-mn.ass")] if name.endswith(".en-mn.ass") else output.stem
    return output.with_name(f"{base}.{lang}.srt")


def run_job(media: Path, output: Path, options: GenerateOptions) -> int:
    """Generate subtitles for ``media``; write ``output`` (ASS) and SRT siblings."""
    import tempfile
    from dataclasses import replace

    from subplug.engine import Engine

    reporter = PercentReporter()
    reporter.report(0)
    if not media.exists():
        raise SubplugError("media-missing", f"There is no file at {media}.")
    with tempfile.TemporaryDirectory(prefix="subplug-job-") as folder:
        options = replace(options, out_dir=Path(folder), overwrite=True)
        with Engine(events=reporter) as engine:
            tracks = engine.generate(media, options)
    if not any(track.cues for track in tracks.tracks.values()):
        if "no-speech" in reporter.warnings:
            raise SubplugError(
                "no-speech", f"No speech was found in {media.name}.", "Nothing was written."
            )
        raise SubplugError(
            "no-text",
            f"The model gave no text for the speech in {media.name}.",
            "Nothing was written. Check the model with 'subplug doctor', or try --source.",
        )
    width, height = options.style.play_res
    stamp = safety.timestamp()
    files = {
        output: writers.render_ass(
            tracks.tracks, options.targets, Profile(width, height, Fraction(25)), options.style
        )
    }
    for lang in options.targets:
        # A language without text gets no file (an empty SRT is unreadable to players);
        # the engine has already warned about it.
        if lang in tracks.tracks and tracks.tracks[lang].cues:
            files[sibling(output, lang)] = writers.render_srt(tracks.tracks[lang].cues)
    for path, text in files.items():
        if path.exists():
            safety.backup(path, stamp)
        safety.write_atomic(path, text.encode("utf-8"))
    reporter.report(100)
    return 0
