"""How job events reach people and programs: a rich progress display, or JSON lines.

Both are ordinary ``subplug_job_event`` implementations; the CLI registers one of them
for the duration of a command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from subplug.errors import SubplugError
from subplug.hookspecs import hookimpl
from subplug.jsonl import JsonLinesWriter, header
from subplug.types import JobEvent, Tracks

STAGE_LABELS = {
    "probe": "reading",
    "decode": "decoding audio",
    "vad": "finding speech",
    "model-load": "loading model",
    "transcribe": "transcribing",
    "write": "writing",
}


def event_to_dict(event: JobEvent) -> dict[str, Any]:
    """The versioned JSON form of an event (docs/jsonl.md)."""
    data = header(event.kind, event.data.get("time", 0.0))
    if event.media is not None or event.kind not in ("job-start", "job-done"):
        data["media"] = None if event.media is None else str(event.media)
    for key, value in event.data.items():
        if key != "time":
            data[key] = value
    return data


class JsonlEvents:
    """Writes one JSON object per line for every event (``--jsonl``)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.writer = JsonLinesWriter(stream)

    @hookimpl
    def subplug_job_event(self, event: JobEvent) -> None:
        self.writer.write(event_to_dict(event))

    def fatal(self, error: SubplugError) -> None:
        """A usage error before or outside any file: the last line says why."""
        self.writer.write(
            {
                **header("job-done", 0.0),
                "ok": 0,
                "failed": 0,
                "exit_code": error.exit_code,
                "error": error.to_dict(),
            }
        )

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()


class RichProgress:
    """A progress bar per file (chunks, elapsed, ETA) on stderr, and a summary."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[name]}[/]"),
            TextColumn("{task.fields[stage]:<15}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("chunks"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[Path, Any] = {}
        self.totals: dict[Path, int] = {}
        """Chunks per file, once known."""
        self.errors: list[tuple[Path | None, dict[str, Any]]] = []
        self.warnings: list[tuple[Path | None, str]] = []
        self.started = False
        self.current: Path | None = None
        self.done: list[dict[str, Any]] = []
        """``file-done`` data of every file, in order."""
        self.job: dict[str, Any] = {}
        """``job-done`` data."""

    def _task(self, media: Path) -> Any:
        if media not in self.tasks:
            from rich.markup import escape

            # The name is shown through markup ("[bold]…"): brackets in it are text.
            self.tasks[media] = self.progress.add_task(
                "", total=None, name=escape(_short(media)), stage="starting"
            )
        return self.tasks[media]

    @hookimpl
    def subplug_job_event(self, event: JobEvent) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        media, data = event.media, event.data
        if event.kind == "file-start" and media is not None:
            self.current = media
            self._task(media)
        elif event.kind == "stage" and media is not None:
            self.progress.update(self._task(media), stage=STAGE_LABELS.get(data["stage"], ""))
        elif event.kind == "stage" and data.get("stage") == "model-load":
            if self.current in self.tasks:
                self.progress.update(self.tasks[self.current], stage=STAGE_LABELS["model-load"])
        elif event.kind == "progress" and media is not None:
            self.totals[media] = data["total"]
            # Moves inside a batch too: ``fraction`` counts the tokens generated so far.
            completed = data.get("fraction", 0.0) * data["total"] or data["done"]
            self.progress.update(self._task(media), completed=completed, total=data["total"])
        elif event.kind == "job-done":
            self.job = dict(data)
        elif event.kind == "file-done" and media is not None:
            self.done.append(dict(data))
            task = self._task(media)
            total = self.totals.get(media, 0)
            self.progress.update(task, stage="done", completed=total, total=total)
        elif event.kind == "file-error" and media is not None:
            # The error is printed after the bars; a bar that never started goes away.
            task = self._task(media)
            if media not in self.totals:
                self.progress.remove_task(task)
                del self.tasks[media]
            else:
                self.progress.update(task, stage="[red]failed[/]")
            self.errors.append((media, data["error"]))
        elif event.kind == "warning":
            self.warnings.append((media, data["message"]))

    def close(self) -> None:
        if self.started:
            self.progress.stop()

    def summary(self, results: Sequence[Tracks | None]) -> None:
        """What was written, what was skipped, and what failed, after the bars."""
        from rich.markup import escape

        out = self.console
        for media, message in self.warnings:
            where = _short(media) + ": " if media else ""
            out.print(f"[yellow]warning:[/] {escape(where + message)}")
        for tracks in results:
            if tracks is None:
                continue
            for path in tracks.outputs:
                shown = str(path.parent / _short(path))
                out.print(f"[green]wrote[/] {escape(shown)}")
        for media, error in self.errors:
            message = error["message"]
            name = _short(media)
            if name and name not in message:
                message = f"{name}: {message}"
            out.print(f"[bold red]error:[/] {escape(message)} [dim]\\[{error['reference']}][/]")
            if error.get("hint"):
                out.print(f"[bold]hint:[/] {escape(error['hint'])}")
        for line in summary_lines(self.done, self.job, len(results)):
            out.print(escape(line))


def summary_lines(done: Sequence[dict[str, Any]], job: dict[str, Any], files: int) -> list[str]:
    """The end-of-run summary: files done of all, time, audio and speed, cues per
    language, chunks reused from an interrupted run, failures. Pure (from events)."""
    from subplug.languages import language_name

    if not job:
        return []
    ok, failed = int(job.get("ok", 0)), int(job.get("failed", 0))
    seconds = float(job.get("seconds") or 0.0)
    audio = float(job.get("audio_seconds") or 0.0)
    head = f"Done: {ok} of {files} file{'s' if files != 1 else ''} in {_clock(seconds)}"
    if audio > 0 and seconds > 0:
        head += f": {_clock(audio)} of audio at {audio / seconds:.2f}x real time"
    lines = [head + "."]
    cues: dict[str, int] = {}
    for data in done:
        for lang, count in (data.get("cues") or {}).items():
            cues[lang] = cues.get(lang, 0) + int(count)
    written = sum(len(data.get("outputs") or []) for data in done)
    if cues:
        counts = ", ".join(f"{n} {language_name(lang)}" for lang, n in cues.items())
        lines.append(f"Cues: {counts}; {written} file{'s' if written != 1 else ''} written.")
    resumed = sum(int(data.get("resumed") or 0) for data in done)
    if resumed:
        lines.append(
            f"Resumed an interrupted run: {resumed} chunk{'s' if resumed != 1 else ''} "
            "taken from its journal."
        )
    if failed:
        lines.append(f"{failed} file{'s' if failed != 1 else ''} failed (see the errors above).")
    return lines


def _clock(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    whole = int(round(seconds))
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _short(media: Path | None) -> str:
    from subplug.files import printable_name

    return "" if media is None else printable_name(media)
