"""``subplug kdenlive job SOURCE OUTPUT``: what Kdenlive's clip job runs.

Kdenlive (``CustomJobTask``) runs the job binary with its parameters, reads progress
from stderr lines containing ``percentage: N`` and, when the process exits normally,
either says "Failed to create file." (``OUTPUT`` missing or empty) or adds ``OUTPUT`` to
the Project Bin as a clip. ``OUTPUT`` is the clip's folder + the clip's file name up to
its first dot + the job's extension, with ``-0001``, ``-0002``… added when that file
exists.

So the job writes two things:

* the subtitles, exactly as ``subplug generate --overwrite`` writes them beside the clip:
  ``NAME.en-mn.ass``, ``NAME.en.srt``, ``NAME.mn.srt`` (``NAME``: the clip's file name
  without its extension). The names do not depend on ``OUTPUT``, so every run writes
  the same files; an older file is kept as ``NAME.….bak`` (``.bak.1``…);
* ``OUTPUT``: a clip Kdenlive can open (``.mlt``: the source clip with the bilingual
  ``.ass`` drawn on it by MLT's ``avfilter.subtitles``), so what Kdenlive adds to the
  bin plays, with subtitles, instead of failing to open a subtitle file. For an
  ``OUTPUT`` of another kind (a job installed by an older subplug names ``.ass``), the
  bilingual ASS text is written there.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape

from subplug.errors import SubplugError
from subplug.types import GenerateOptions, JobEvent

#: The formats the job writes beside the clip (what ``subplug generate`` writes).
FORMATS = ("ass", "srt")


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


def preview_text(media: Path, subtitles: Path) -> str:
    """An MLT file playing ``media`` with ``subtitles`` drawn on it.

    The filter sits on a tractor around the clip: a file holding a lone producer is
    opened by MLT as that producer itself, so Kdenlive would store the bare media file
    and drop the filter when it saves the project. It names no profile, so it plays at
    the profile of whatever opens it (the Kdenlive project's)."""
    source, ass = escape(str(media.resolve())), escape(str(subtitles.resolve()))
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<mlt LC_NUMERIC="C" title="{escape(media.name)} with EN/MN subtitles">\n'
        ' <producer id="source">\n'
        f'  <property name="resource">{source}</property>\n'
        " </producer>\n"
        ' <playlist id="clip">\n'
        '  <entry producer="source"/>\n'
        " </playlist>\n"
        ' <tractor id="subtitled">\n'
        '  <track producer="clip"/>\n'
        '  <filter id="subplug-subtitles">\n'
        '   <property name="mlt_service">avfilter.subtitles</property>\n'
        f'   <property name="av.filename">{ass}</property>\n'
        "  </filter>\n"
        " </tractor>\n"
        "</mlt>\n"
    )


def run_job(media: Path, output: Path, options: GenerateOptions) -> int:
    """Generate subtitles for ``media`` beside ``output`` (see the module doc)."""
    from subplug import files
    from subplug.engine import Engine

    reporter = PercentReporter()
    reporter.report(0)
    if not media.is_file():
        raise SubplugError(
            "media-missing",
            f"There is no file at {media}.",
            "Relink the clip in Kdenlive (or put its file back), then run the job again.",
        )
    options = replace(options, formats=FORMATS, out_dir=output.parent, overwrite=True)
    try:
        with Engine(events=reporter) as engine:
            tracks = engine.generate(media, options)
            if not any(track.cues for track in tracks.tracks.values()):
                if "no-speech" in reporter.warnings:
                    raise SubplugError(
                        "no-speech",
                        f"No speech was found in {media.name}.",
                        "Nothing was written.",
                    )
                raise SubplugError(
                    "no-text",
                    f"The model gave no text for the speech in {media.name}.",
                    "Nothing was written. Check the model with 'subplug doctor'.",
                )
            written = engine.write(tracks, options)
            bilingual = next(p for p in written.outputs if p.suffix == ".ass")
            if output not in written.outputs:
                text = (
                    preview_text(media, bilingual)
                    if output.suffix == ".mlt"
                    else bilingual.read_text(encoding="utf-8")
                )
                files.write_atomic(output, text, overwrite=True)
    except SubplugError as error:
        if error.reference in ("disk-full", "output-not-writable", "output-exists"):
            raise SubplugError(
                error.reference,
                error.message,
                f"Free some disk space, or make {output.parent} writable; then run the job again.",
            ) from error
        raise
    for path in dict.fromkeys((*written.outputs, output)):
        sys.stderr.write(f"wrote {path}\n")
    reporter.report(100)
    return 0
