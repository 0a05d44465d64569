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
            self.progress.update(self._task(media), completed=data["done"], total=data["total"])
        elif event.kind == "file-done" and media is not None:
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
                out.print(f"[green]wrote[/] {escape(str(path))}")
        for media, error in self.errors:
            message = error["message"]
            name = _short(media)
            if name and name not in message:
                message = f"{name}: {message}"
            out.print(f"[bold red]error:[/] {escape(message)} [dim]\\[{error['reference']}][/]")
            if error.get("hint"):
                out.print(f"[bold]hint:[/] {escape(error['hint'])}")


def _short(media: Path | None) -> str:
    return "" if media is None else media.name
