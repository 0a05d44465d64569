"""Cross-file batching on one machine: a folder of short files fills the model's batches
as well as one long film does.

Worker threads run the CPU stage of files ahead (the skip check, probe, decode, speech
detection, chunk plan, journal) while the calling thread runs the model stage: it takes
batches of the backend's batch size from the chunks of *all* files ready, through
:func:`subplug.transcribe.transcribe`, journals each result in its file's journal, and
writes a file as soon as its last chunk is done. Chunks of the oldest files go first
(files finish in order and their audio is freed), the longest of a window of them
together (a batch waits for its longest answer); only chunks of one spoken language
share a batch. Files prepared ahead are bounded (by count and seconds of audio held),
so memory stays bounded however large the archive.

A file's output is byte-identical to a one-by-one run: the same plan, the same
requests per chunk, the same cue shaping and writers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from subplug.engine import PreparedMedia, record, resumed_transcripts
from subplug.errors import Cancelled, SubplugError
from subplug.jobs.tracking import JobState
from subplug.journal import Journal
from subplug.types import AudioChunk, ChunkSpan, Transcript

#: Seconds of decoded audio held by files prepared ahead (float32: 230 MB an hour).
MAX_OPEN_SECONDS = 2 * 3600.0


def default_workers() -> int:
    """Threads preparing files ahead: the CPUs less one for the model stage (1 to 4)."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


@dataclass(eq=False)
class OpenFile:
    """A file prepared and waiting for (some of) its chunks."""

    index: int
    prepared: PreparedMedia
    journal: Journal | None
    key: str | None
    source: str
    results: dict[int, Transcript]
    resumed: int
    todo: list[ChunkSpan] = field(default_factory=list)
    """Chunks not yet sent to the model."""
    audio: dict[int, Any] | None = None
    """Samples by chunk index, where the file's whole sound is not held (Ray)."""

    def chunk(self, span: ChunkSpan) -> AudioChunk:
        """The model input for one of the file's chunks."""
        if self.audio is not None:
            return AudioChunk(span, self.audio[span.index])
        return self.prepared.chunk(span)

    @property
    def finished(self) -> bool:
        return len(self.results) == len(self.prepared.plan)


def pick_batch(files: Sequence[OpenFile], size: int) -> list[tuple[OpenFile, ChunkSpan]]:
    """The next batch: chunks of the oldest files with work (one spoken language), the
    longest of a window of four batches' worth together. Takes nothing out of ``todo``."""
    source = next(f.source for f in files if f.todo)
    window: list[tuple[OpenFile, ChunkSpan]] = []
    for item in files:
        if item.source != source:
            continue
        window.extend((item, span) for span in item.todo)
        if len(window) >= 4 * size:
            break
    window.sort(key=lambda pair: (-pair[1].duration, pair[0].index, pair[1].index))
    return window[:size]


def accept(
    state: JobState,
    batch: Sequence[tuple[OpenFile, ChunkSpan]],
    results: Sequence[Transcript],
    capacity: int,
    seconds: float,
) -> list[OpenFile]:
    """Take a model call's results: journal them in their files' journals, send the
    ``batch-done`` and ``progress`` events; returns the files now finished."""
    touched: dict[int, OpenFile] = {}
    by_file: dict[int, list[Transcript]] = {}
    for (item, _), transcript in zip(batch, results, strict=True):
        touched[item.index] = item
        by_file.setdefault(item.index, []).append(transcript)
    for index, item in touched.items():
        record(item.journal, by_file[index])
        for transcript in by_file[index]:
            item.results[transcript.chunk.index] = transcript
    state.emit(
        "batch-done",
        None,
        chunks=len(batch),
        files=len(touched),
        capacity=capacity,
        seconds=round(seconds, 3),
    )
    for item in touched.values():
        state.chunk_progress(item.index, len(item.results), len(item.prepared.plan), item.resumed)
    return [item for item in touched.values() if item.finished]


class LocalJob:
    """Runs a :class:`JobState` on this machine (module docstring)."""

    def __init__(self, state: JobState, *, workers: int | None = None) -> None:
        self.state = state
        self.workers = workers or default_workers()
        self.batch_size: int | None = None
        self.open: list[OpenFile] = []
        self.calls = 0
        self.chunks_sent = 0

    # ------------------------------------------------------------ CPU stage

    def prepare(self, index: int) -> OpenFile | None:
        """The CPU stage of one file, in a worker thread; ``None`` when the file is
        skipped or failed (its row is in the report)."""
        state = self.state
        if state.cancelled.is_set():
            raise Cancelled()
        state.start(index)
        options = state.options_for(index)
        media = state.files[index].media
        try:
            skipped, key = state.admit(index)
            if skipped:
                return None
            prepared = state.engine.prepare_media(media, options)
            journal = state.engine.journal_for(media, prepared.stream, options)
        except Cancelled:
            raise
        except SubplugError as error:
            state.fail(index, error)
            return None
        results = resumed_transcripts(journal, prepared.plan)
        todo = [span for span in prepared.plan if span.index not in results]
        return OpenFile(index, prepared, journal, key, options.source, results, len(results), todo)

    # ---------------------------------------------------------- model stage

    def run(self) -> None:
        """Every file of the job, done, skipped or failed; raises :class:`Cancelled` on
        Ctrl-C (journals kept, no partial file)."""
        state = self.state
        waiting = list(range(len(state.files)))
        waiting.reverse()
        running: dict[Future[OpenFile | None], int] = {}
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="subplug-prepare")
        try:
            while waiting or running or self.open:
                while waiting and self._room(len(running)):
                    index = waiting.pop()
                    running[pool.submit(self.prepare, index)] = index
                pending = sum(len(f.todo) for f in self.open)
                if running and pending < (self.batch_size or 1):
                    ready, _ = wait(running, return_when=FIRST_COMPLETED)
                else:
                    ready = {f for f in running if f.done()}
                for future in ready:
                    del running[future]
                    opened = future.result()
                    if opened is not None:
                        self._opened(opened)
                    else:
                        state.progress()
                if any(f.todo for f in self.open):
                    full = sum(len(f.todo) for f in self.open) >= (self.batch_size or 1)
                    if full or not running:
                        self._run_batch()
        except BaseException:
            state.cancelled.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def _room(self, running: int) -> bool:
        """Whether another file may be prepared ahead."""
        ahead = running + len(self.open)
        limit = max(2 * self.workers + 2, 2 * (self.batch_size or 1))
        held = sum(f.prepared.duration for f in self.open)
        return ahead < limit and (held < MAX_OPEN_SECONDS or not self.open)

    def _opened(self, item: OpenFile) -> None:
        self.state.chunk_progress(
            item.index, len(item.results), len(item.prepared.plan), item.resumed
        )
        if not item.todo:
            self._finish(item)
            return
        if self.batch_size is None:
            from subplug.transcribe import batch_size_of

            options = self.state.options
            backend = self.state.engine.backend(options)
            self.batch_size = batch_size_of(backend, options.backend_options.batch_size)
        self.state.emit(
            "stage",
            item.prepared.media,
            stage="transcribe",
            chunks=len(item.todo),
            resumed=item.resumed,
        )
        self.open.append(item)

    def _run_batch(self) -> None:
        from subplug.transcribe import transcribe

        state = self.state
        batch = pick_batch(self.open, self.batch_size or 1)
        for item, span in batch:
            item.todo.remove(span)
        chunks = [item.chunk(span) for item, span in batch]
        started = time.monotonic()
        backend = state.engine.backend(state.options)
        results = transcribe(backend, chunks, batch[0][0].source, state.options.targets)
        self.calls += 1
        self.chunks_sent += len(batch)
        seconds = time.monotonic() - started
        for item in accept(state, batch, results, self.batch_size or 1, seconds):
            self.open.remove(item)
            self._finish(item)

    def _finish(self, item: OpenFile) -> None:
        transcripts = [item.results[span.index] for span in item.prepared.plan]
        self.state.finish(item.index, item.prepared, transcripts, item.resumed, item.key)
        self.state.progress()

    def batch_fill(self) -> float:
        """Chunks per model call over the batch size (1.0: every call full)."""
        if not self.calls or not self.batch_size:
            return 0.0
        return self.chunks_sent / (self.calls * self.batch_size)


def run_local(state: JobState, *, workers: int | None = None) -> LocalJob:
    """Run the job on this machine; returns the runner (its batch figures)."""
    job = LocalJob(state, workers=workers)
    job.run()
    return job
