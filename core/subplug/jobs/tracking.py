"""The bookkeeping of a job of many files, shared by the runners on one machine
(:mod:`~subplug.jobs.batching`) and on a Ray cluster (:mod:`~subplug.jobs.cluster`):
each file's options, the check that skips a finished file, finishing a file (cue
shaping, writing, its done record), the report's rows and the job's events.

Events go through the engine's sink under one lock, so worker threads may emit them;
once the job is cancelled, a worker thread's next event raises
:class:`~subplug.errors.Cancelled`, which stops its decoding.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from subplug import __version__
from subplug.engine import Engine, EventSink, PreparedMedia, planned_outputs
from subplug.errors import Cancelled, SubplugError
from subplug.jobs import done
from subplug.jobs.inputs import JobFile
from subplug.jobs.report import DONE, FAILED, SKIPPED, FileRow, Report, error_row
from subplug.journal import media_fingerprint
from subplug.types import Backend, GenerateOptions, JobEvent, Transcript


class JobState:
    """A job's engine, files, options, report and events (module docstring).

    The options are validated and the model checked here (:meth:`Engine.prepare`), so a
    usage error comes before any file is touched. ``events`` receives every event
    (default: the ``subplug_job_event`` hook); ``backend`` injects a loaded backend.
    """

    def __init__(
        self,
        options: GenerateOptions,
        files: Sequence[JobFile],
        *,
        events: EventSink | None = None,
        backend: Backend | None = None,
    ) -> None:
        from subplug import plugins

        self.files = list(files)
        self.report = Report()
        self.cancelled = threading.Event()
        self.started = time.monotonic()
        self.warnings: dict[str, list[str]] = {}
        """Warning references by media (``""``: the job's own)."""
        self.audio_done = 0.0
        self._lock = threading.RLock()
        self._main = threading.current_thread()
        self._sink = events or plugins.job_event
        self.engine = Engine(events=self._emit, backend=backend)
        self.options = self.engine.prepare(options)
        self._owner = self._claim_outputs()

    # ----------------------------------------------------------------- events

    def _emit(self, event: JobEvent) -> None:
        if self.cancelled.is_set() and threading.current_thread() is not self._main:
            raise Cancelled()
        with self._lock:
            if event.kind == "warning":
                where = "" if event.media is None else str(event.media)
                self.warnings.setdefault(where, []).append(str(event.data.get("reference")))
            self._sink(event)

    def emit(self, kind: str, media: Path | None = None, **data: Any) -> None:
        self.engine.emit(kind, media, **data)

    def begin(self) -> None:
        self.started = time.monotonic()
        self.emit("job-start", None, files=[str(f.media) for f in self.files], version=__version__)

    def end(self, report_path: Path | None) -> int:
        """The ``job-done`` event; returns the exit code (1 when a file failed)."""
        failed, skipped = self.report.count(FAILED), self.report.count(SKIPPED)
        exit_code = 1 if failed else 0
        self.emit(
            "job-done",
            None,
            ok=self.report.count(DONE) + skipped,
            failed=failed,
            exit_code=exit_code,
            audio_seconds=round(self.audio_done, 3),
            seconds=round(time.monotonic() - self.started, 3),
            skipped=skipped,
            report=None if report_path is None else str(report_path),
        )
        return exit_code

    def progress(self) -> None:
        """A ``job-progress`` event: files finished of all, audio done, speed, ETA."""
        rows = self.report.rows
        finished = len(rows)
        worked = sum(1 for r in rows if r.status != SKIPPED)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        left = len(self.files) - finished
        eta = None if not worked else round(elapsed / worked * left, 1)
        self.emit(
            "job-progress",
            None,
            files_done=finished,
            files=len(self.files),
            failed=self.report.count(FAILED),
            skipped=self.report.count(SKIPPED),
            audio_seconds=round(self.audio_done, 2),
            speed=round(self.audio_done / elapsed, 2),
            eta=eta,
        )

    def chunk_progress(self, index: int, done_chunks: int, total: int, resumed: int) -> None:
        """A file's ``progress`` event; ``percent`` is of the whole job (files)."""
        finished = len(self.report.rows)
        share = done_chunks / total if total else 1.0
        percent = 100 * min(1.0, (finished + share) / max(len(self.files), 1))
        self.emit(
            "progress",
            self.files[index].media,
            done=done_chunks,
            total=total,
            percent=round(percent, 1),
            fraction=round(min(1.0, share), 4),
            resumed=resumed,
        )

    # ------------------------------------------------------------ per file

    def options_for(self, index: int) -> GenerateOptions:
        """The job's options with this file's output folder (else the options' own)
        and source language."""
        item = self.files[index]
        options = self.options
        if item.out_dir is not None:
            options = replace(options, out_dir=item.out_dir)
        return options if item.source is None else replace(options, source=item.source)

    def start(self, index: int) -> None:
        self.emit("file-start", self.files[index].media, index=index, total_files=len(self.files))

    def clash(self, index: int) -> SubplugError | None:
        """``output-clash`` when an earlier file of the job writes the same subtitle
        files (``a.mp4`` and ``a.mkv`` in one folder)."""
        first = self._owner.get(index)
        if first is None:
            return None
        return SubplugError(
            "output-clash",
            f"{self.files[index].media} would write the same subtitle files as "
            f"{self.files[first].media}.",
            'Give one of them another output folder (a manifest\'s "out"), or rename it.',
        )

    def done_key(self, index: int) -> str | None:
        """The key of this file's done record (``None`` when the file cannot be read:
        its own error comes when it is decoded)."""
        options = self.options_for(index)
        media = self.files[index].media
        try:
            fingerprint = media_fingerprint(media)
        except OSError:
            return None
        shape = {
            "formats": list(options.formats),
            "outputs": [str(o.path) for o in planned_outputs(media, options)],
            "cues": repr(options.cues),
            "style": repr(options.style),
        }
        settings = self.engine.settings(options.audio_stream, options)
        return done.done_key(fingerprint, settings, shape)

    def skip_if_done(self, index: int, key: str | None) -> bool:
        """Skip the file when an earlier run finished it (never with ``--overwrite``)."""
        if key is None or self.options.overwrite:
            return False
        outputs = done.outputs_of(key)
        if outputs is None:
            return False
        media = self.files[index].media
        self.emit("file-skipped", media, reason="done", outputs=[str(p) for p in outputs])
        self.report.add(FileRow(str(media), SKIPPED, outputs=tuple(str(p) for p in outputs)))
        return True

    def admit(self, index: int) -> tuple[bool, str | None]:
        """Before a file's work: raise its clash with an earlier file's outputs, skip it
        when an earlier run finished it, else check that its outputs can be written.
        Returns (skipped, the file's done key)."""
        clash = self.clash(index)
        if clash is not None:
            raise clash
        key = self.done_key(index)
        if self.skip_if_done(index, key):
            return True, key
        self.engine.check_outputs(self.files[index].media, self.options_for(index))
        return False, key

    def fail(self, index: int, error: SubplugError) -> None:
        media = self.files[index].media
        self.emit("file-error", media, error=error.to_dict())
        self.report.add(error_row(media, error))

    def finish(
        self,
        index: int,
        prepared: PreparedMedia,
        transcripts: Sequence[Transcript],
        resumed: int,
        key: str | None,
    ) -> None:
        """Shape, write (atomically) and record a file whose chunks are all done; a
        failure to write is the file's error."""
        options = self.options_for(index)
        tracks = self.engine.shape(prepared, transcripts, options)
        if key is not None:
            # Recorded first: a crash after the files are written still leaves them
            # done; one before leaves them missing, which is not done.
            outputs = [o.path for o in self.engine.outputs_for(tracks, options)]
            done.mark_done(key, prepared.media, outputs)
        try:
            tracks = self.engine.write(tracks, options, resumed=resumed)
        except SubplugError as error:
            if key is not None:
                done.forget(key)
            self.fail(index, error)
            return
        self.audio_done += prepared.duration
        self.report.add(
            FileRow(
                str(prepared.media),
                DONE,
                outputs=tuple(str(p) for p in tracks.outputs),
                duration=round(prepared.duration, 3),
                chunks=len(prepared.plan),
                resumed=resumed,
                source_lang=tracks.source_lang,
                warnings=tuple(self.warnings.get(str(prepared.media), ())),
            )
        )

    def _claim_outputs(self) -> dict[int, int]:
        """For each file whose subtitle files an earlier file of the job also writes,
        that earlier file's index."""
        owners: dict[Path, int] = {}
        clashes: dict[int, int] = {}
        for index, item in enumerate(self.files):
            for output in planned_outputs(item.media, self.options_for(index)):
                first = owners.setdefault(output.path, index)
                if first != index:
                    clashes.setdefault(index, first)
        return clashes
