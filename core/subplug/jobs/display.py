"""The whole job as one progress bar on stderr — files done of all, hours of audio,
audio-hours per hour, ETA — and a summary after it, as ``generate`` gives for one file
(:func:`subplug.progress.summary_lines`): warnings, files written (counted when there
are many), each failure with its hint, files skipped. The ``--report`` file has every
row."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from subplug.files import printable_name
from subplug.hookspecs import hookimpl
from subplug.jobs.report import SKIPPED, Report
from subplug.types import JobEvent

#: Failures and warnings listed one by one after the bar; more are counted.
LISTED = 20


class JobDisplay:
    """A ``subplug_job_event`` implementation for jobs of many files."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.progress = Progress(
            TextColumn("[bold]files[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[audio]}"),
            TextColumn("{task.fields[speed]}"),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[stage]}"),
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self.warnings: list[tuple[Path | None, str, str]] = []
        self.errors: dict[str, dict[str, Any]] = {}
        self.done: list[dict[str, Any]] = []
        """``file-done`` data (cues, outputs, resumed chunks) for the summary."""
        self.job: dict[str, Any] = {}
        self.files = 0

    @hookimpl
    def subplug_job_event(self, event: JobEvent) -> None:
        data = event.data
        if event.kind == "job-start":
            self.files = len(data["files"])
            self.progress.start()
            self.task = self.progress.add_task(
                "", total=len(data["files"]), audio="", speed="", eta="", stage="starting"
            )
        elif self.task is None:
            return
        elif event.kind == "job-progress":
            eta = data.get("eta")
            self.progress.update(
                self.task,
                completed=data["files_done"],
                audio=f"{_clock(data['audio_seconds'])} of audio",
                speed=f"{data['speed']:.1f}x real time",
                eta="" if eta is None else f"ETA {_clock(eta)}",
            )
        elif event.kind == "stage" and data.get("stage") == "model-load":
            self.progress.update(self.task, stage="loading model")
        elif event.kind == "batch-done":
            self.progress.update(self.task, stage="")
        elif event.kind == "warning":
            self.warnings.append((event.media, str(data["reference"]), str(data["message"])))
        elif event.kind == "file-error" and event.media is not None:
            self.errors[str(event.media)] = data["error"]
        elif event.kind == "file-done":
            keep = ("cues", "outputs", "resumed")
            self.done.append({k: data[k] for k in keep if k in data})
        elif event.kind == "job-done":
            self.job = dict(data)
            self.progress.update(self.task, stage="")

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()

    def summary(self, report: Report) -> None:
        """Warnings, files written, failures with their hints, then the counts: after
        the bar."""
        from rich.markup import escape

        from subplug.progress import summary_lines

        out = self.console
        for media, _reference, message in self.warnings[:LISTED]:
            where = printable_name(media) + ": " if media else ""
            out.print(f"[yellow]warning:[/] {escape(where + message)}")
        if len(self.warnings) > LISTED:
            counts = Counter(reference for _, reference, _ in self.warnings[LISTED:])
            more = ", ".join(f"{n} {ref}" for ref, n in counts.most_common())
            out.print(f"[yellow]warning:[/] … and {len(self.warnings) - LISTED} more ({more})")
        written = [path for row in report.rows if row.status != SKIPPED for path in row.outputs]
        if len(written) <= LISTED:
            for path in sorted(written):
                out.print(f"[green]wrote[/] {escape(shown(path))}")
        failed = sorted(report.failed(), key=lambda r: r.media)
        for row in failed[:LISTED]:
            error = row.error or {}
            message, where = str(error.get("message")), shown(row.media)
            if not message.startswith(where):
                message = f"{where}: {message}"
            out.print(
                f"[bold red]failed:[/] {escape(message)} [dim]\\[{error.get('reference')}][/]"
            )
            if error.get("hint"):
                out.print(f"  [bold]hint:[/] {escape(str(error['hint']))}")
        if len(failed) > LISTED:
            counts = Counter(str((r.error or {}).get("reference")) for r in failed[LISTED:])
            more = ", ".join(f"{n} {ref}" for ref, n in counts.most_common())
            out.print(f"[bold red]failed:[/] … and {len(failed) - LISTED} more ({more})")
        lines = summary_lines(self.done, self.job, self.files or len(report.rows))
        for number, line in enumerate(lines):
            out.print(f"[bold]{escape(line)}[/]" if number == 0 else escape(line))
        skipped = report.count(SKIPPED)
        if skipped:
            out.print(
                f"{skipped} file{'s' if skipped != 1 else ''} skipped: finished by an "
                "earlier run with these settings (--overwrite does them again)."
            )


def shown(path: str | Path) -> str:
    """A path as printable text: its name by :func:`subplug.files.printable_name`, its
    folder with bytes that are not UTF-8 as U+FFFD."""
    path = Path(path)
    if str(path.parent) == ".":
        return printable_name(path)
    folder = os.fsencode(str(path.parent)).decode("utf-8", "replace")
    return os.path.join(folder, printable_name(path))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
