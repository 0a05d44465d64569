"""A job on a Ray cluster (``subplug generate … --ray [ADDRESS]``).

Ray's own building blocks do the work: a CPU **task** per file decodes it, finds speech
and plans its chunks on whichever node has a free CPU; model **actors** (one model load
each, one GPU each when the cluster has GPUs) answer batches of chunks from many files
through :func:`subplug.transcribe.transcribe`. This process — the driver — decides
everything else, as :mod:`~subplug.jobs.batching` does on one machine: which files are
finished already (skipped), which chunks are in the journal, what goes in each batch;
it journals every batch's results and writes each file when its last chunk is in.

Failures: a worker killed while decoding is retried by Ray, then its file is a failed
row; a model actor killed mid-batch is restarted by Ray and the batch goes to the model
again (its results were never journaled; nothing journaled is computed again); a chunk
that killed the model three times fails its file. Killing the driver loses only the
batches in flight: the same command resumes from the journals.

Media must be at the same path on every node (a shared filesystem); the driver writes
the subtitles and journals on its own node. A file the driver sees but a worker does
not is a ``media-not-shared`` row.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from subplug.engine import Engine, PreparedMedia, resumed_transcripts
from subplug.errors import SubplugError
from subplug.jobs.batching import OpenFile, accept, pick_batch
from subplug.jobs.tracking import JobState
from subplug.types import AudioChunk, BackendOptions, ChunkSpan, GenerateOptions, Transcript

#: Times a chunk may be in a batch whose model actor died before its file fails.
MAX_ATTEMPTS = 3
#: Restarts Ray gives a model actor that died (killed, out of memory, node lost).
ACTOR_RESTARTS = 4
#: Events of the CPU task that the driver passes on (progress events stay there).
_PASSED_ON = frozenset({"stage", "warning"})


def import_ray() -> Any:
    """The ``ray`` module, or ``ray-not-installed`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SubplugError(
            "ray-not-installed",
            "--ray needs Ray, which is not installed.",
            'Install the cluster extra: pip install "subplug[cluster]" (on every node '
            "of the cluster), or leave out --ray to run on this machine.",
        ) from None
    return ray


@dataclass(frozen=True)
class RemotePrepared:
    """What a CPU task sends back for one file: its plan and the samples of its
    chunks only (not the whole sound), or the error it met."""

    events: tuple[tuple[str, dict[str, Any]], ...]
    error: dict[str, Any] | None = None
    stream: int = 0
    plan: tuple[ChunkSpan, ...] = ()
    duration: float = 0.0
    warnings: tuple[str, ...] = ()
    audio: dict[int, Any] = field(default_factory=dict)


def prepare_remote(media: str, options: GenerateOptions, head: str) -> RemotePrepared:
    """The CPU stage of one file, run as a Ray task on any node. ``head`` is the
    driver's host name: a path missing here that the driver saw is not shared."""
    events: list[tuple[str, dict[str, Any]]] = []

    def keep(event: Any) -> None:
        if event.kind in _PASSED_ON:
            events.append((event.kind, {k: v for k, v in event.data.items() if k != "time"}))

    path = Path(media)
    host = socket.gethostname()
    try:
        if not path.exists() and host != head:
            raise SubplugError(
                "media-not-shared",
                f"{media} is on the node that started the job ({head}) but not on {host}.",
                "Put the media on a filesystem every node mounts at the same path (NFS, "
                "CephFS, a cloud bucket mount): docs/archive.md.",
            )
        prepared = Engine(events=keep).prepare_media(path, options)
    except SubplugError as error:
        return RemotePrepared(tuple(events), error=error.to_dict())
    audio = {span.index: prepared.chunk(span).samples.copy() for span in prepared.plan}
    return RemotePrepared(
        tuple(events),
        stream=prepared.stream,
        plan=prepared.plan,
        duration=prepared.duration,
        warnings=prepared.warnings,
        audio=audio,
    )


class ModelActor:
    """A loaded model on a cluster node (a Ray actor): batches of chunks in,
    transcripts out."""

    def __init__(self, backend: str, options: BackendOptions) -> None:
        from subplug import plugins

        self.backend = plugins.load_backend(backend, options)

    def batch_size(self, requested: int | None) -> int:
        from subplug.transcribe import batch_size_of

        return batch_size_of(self.backend, requested)

    def run(
        self, chunks: list[AudioChunk], source: str, targets: tuple[str, ...]
    ) -> list[Transcript]:
        from subplug.transcribe import transcribe

        return transcribe(self.backend, chunks, source, targets)

    def pid(self) -> int:
        return os.getpid()


def run_on_ray(state: JobState, *, address: str, workers: int | None = None) -> ClusterJob:
    """Run the job on the Ray cluster at ``address`` (``local``: start one here;
    ``auto``: the running one); a Ray already started in this process is used as it
    is. ``workers``: model actors (default one per GPU, or one)."""
    ray = import_ray()
    started = connect(ray, address)
    try:
        job = ClusterJob(ray, state, actors=workers)
        job.run()
        return job
    finally:
        if started:
            ray.shutdown()


def connect(ray: Any, address: str) -> bool:
    """Join or start the cluster; True when this call started Ray (and must stop it)."""
    if ray.is_initialized():
        return False
    import logging

    try:
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SubplugError(
            "ray-unreachable",
            f"Cannot join the Ray cluster at {address}: {exc}",
            "Start it first (ray start --head, then --ray auto or --ray HOST:6379), or "
            "give --ray without an address to start one on this machine.",
        ) from None
    return True


def worker_env() -> dict[str, Any]:
    """The runtime environment for tasks and actors: this process's ``SUBPLUG_*``
    settings (plugins to load, debugging), not its home (each node has its own)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("SUBPLUG_") and k != "SUBPLUG_HOME"}
    return {"env_vars": env} if env else {}


class ClusterJob:
    """The driver of a job on a Ray cluster (module docstring)."""

    def __init__(self, ray: Any, state: JobState, *, actors: int | None = None) -> None:
        self.ray = ray
        self.state = state
        self.wanted = actors
        self.head = socket.gethostname()
        self.env = worker_env()
        self.actors: list[Any] = []
        self.idle: deque[Any] = deque()
        self.batch_size = 1
        self.open: list[OpenFile] = []
        self.attempts: dict[tuple[int, int], int] = {}
        self.keys: dict[int, str | None] = {}
        """Done-record keys of the files in CPU tasks."""
        self.calls = 0
        self.chunks_sent = 0
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.cpus = max(1, int(resources.get("CPU", 1)))
        self._prepare = ray.remote(num_cpus=1, max_retries=2)(prepare_remote)
        if self.env:
            self._prepare = self._prepare.options(runtime_env=self.env)

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        state, ray = self.state, self.ray
        waiting = deque(range(len(state.files)))
        prepares: dict[Any, int] = {}
        batches: dict[Any, tuple[Any, list[tuple[OpenFile, ChunkSpan]], float]] = {}
        options = state.options
        try:
            while waiting or prepares or batches or self.open:
                while waiting and self._room(len(prepares)):
                    index = waiting.popleft()
                    ref = self._submit_prepare(index)
                    if ref is not None:
                        prepares[ref] = index
                while self.idle and any(f.todo for f in self.open):
                    pending = sum(len(f.todo) for f in self.open)
                    if pending < self.batch_size and (prepares or waiting):
                        break
                    actor = self.idle.popleft()
                    batch = pick_batch(self.open, self.batch_size)
                    for item, span in batch:
                        item.todo.remove(span)
                    chunks = [item.chunk(span) for item, span in batch]
                    ref = actor.run.remote(chunks, batch[0][0].source, options.targets)
                    batches[ref] = (actor, batch, time.monotonic())
                refs = list(prepares) + list(batches)
                if not refs:
                    continue
                (ready,), _ = ray.wait(refs, num_returns=1)
                if ready in prepares:
                    self._prepared(prepares.pop(ready), ready)
                else:
                    self._answered(ready, *batches.pop(ready))
        finally:
            for actor in self.actors:
                ray.kill(actor)

    def _room(self, running: int) -> bool:
        ahead = running + len(self.open)
        limit = max(2 * self.cpus + 2, 2 * self.batch_size * max(1, len(self.actors)))
        return ahead < limit

    # ------------------------------------------------------------- CPU stage

    def _submit_prepare(self, index: int) -> Any:
        """Start a file: skip or fail it here, or send it to a CPU task."""
        state = self.state
        state.start(index)
        media = state.files[index].media
        try:
            skipped, key = state.admit(index)
            if skipped:
                state.progress()
                return None
        except SubplugError as error:
            state.fail(index, error)
            state.progress()
            return None
        self.keys[index] = key
        path = str(Path(media).absolute())
        return self._prepare.remote(path, state.options_for(index), self.head)

    def _prepared(self, index: int, ref: Any) -> None:
        state, ray = self.state, self.ray
        media = state.files[index].media
        try:
            result: RemotePrepared = ray.get(ref)
        except ray.exceptions.RayTaskError:
            raise
        except ray.exceptions.RayError as exc:
            state.fail(
                index,
                SubplugError(
                    "worker-crashed",
                    f"The worker decoding {media} died: {type(exc).__name__}.",
                    "Ray retried it; the file may crash the decoder (try it alone without "
                    "--ray), or the node ran out of memory.",
                ),
            )
            state.progress()
            return
        for kind, data in result.events:
            state.emit(kind, media, **data)
        if result.error is not None:
            error = result.error
            state.fail(
                index,
                SubplugError(
                    error["reference"], error["message"], error["hint"], context=error["context"]
                ),
            )
            state.progress()
            return
        options = state.options_for(index)
        prepared = PreparedMedia(
            media, result.stream, None, result.plan, result.duration, result.warnings
        )
        journal = state.engine.journal_for(media, result.stream, options)
        results = resumed_transcripts(journal, prepared.plan)
        item = OpenFile(
            index,
            prepared,
            journal,
            self.keys.pop(index, None),
            options.source,
            results,
            len(results),
            [span for span in prepared.plan if span.index not in results],
            audio=result.audio,
        )
        state.chunk_progress(index, len(results), len(prepared.plan), item.resumed)
        if not item.todo:
            self._finish(item)
            return
        self._start_actors()
        state.emit("stage", media, stage="transcribe", chunks=len(item.todo), resumed=item.resumed)
        self.open.append(item)

    # ----------------------------------------------------------- model stage

    def _start_actors(self) -> None:
        """The model actors, started when the first chunk needs them (a rerun of a
        finished job starts none)."""
        if self.actors:
            return
        ray, state = self.ray, self.state
        options = state.options
        state.emit("stage", None, stage="model-load", backend=options.backend)
        if self.gpus:
            count, resources = self.wanted or self.gpus, {"num_gpus": 1}
        else:
            count = min(self.wanted or 1, max(1, self.cpus - 1))
            resources = {"num_cpus": 1 if self.cpus > 1 else 0}
        remote = ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=0, **resources)(
            ModelActor
        )
        if self.env:
            remote = remote.options(runtime_env=self.env)
        self.actors = [
            remote.remote(options.backend, options.backend_options) for _ in range(count)
        ]
        try:
            sizes = ray.get(
                [a.batch_size.remote(options.backend_options.batch_size) for a in self.actors]
            )
        except ray.exceptions.RayError as exc:
            raise SubplugError(
                "ray-model-failed",
                f"The model could not be loaded on the cluster: {exc}",
                "Check that every node can load it (subplug doctor on a worker node; a "
                "model folder on the shared filesystem is seen by all of them).",
            ) from None
        self.batch_size = min(sizes)
        self.idle.extend(self.actors)

    def _answered(
        self, ref: Any, actor: Any, batch: list[tuple[OpenFile, ChunkSpan]], started: float
    ) -> None:
        ray, state = self.ray, self.state
        try:
            results: list[Transcript] = ray.get(ref)
        except ray.exceptions.RayTaskError:
            raise
        except ray.exceptions.RayError:
            self.idle.append(actor)  # Ray restarts it; calls wait until it is back
            self._retry(batch)
            return
        self.idle.append(actor)
        self.calls += 1
        self.chunks_sent += len(batch)
        kept = [(pair, t) for pair, t in zip(batch, results, strict=True) if pair[0] in self.open]
        if not kept:
            return  # every file of the batch failed meanwhile
        finished = accept(
            state,
            [pair for pair, _ in kept],
            [t for _, t in kept],
            self.batch_size,
            time.monotonic() - started,
        )
        for item in finished:
            self.open.remove(item)
            self._finish(item)

    def _retry(self, batch: list[tuple[OpenFile, ChunkSpan]]) -> None:
        """A batch whose actor died: its chunks go to the model again; a chunk that
        died with its actor too often fails its file."""
        for item, span in batch:
            if item not in self.open:
                continue
            tries = self.attempts[item.index, span.index] = (
                self.attempts.get((item.index, span.index), 0) + 1
            )
            if tries >= MAX_ATTEMPTS:
                self.open.remove(item)
                self.state.fail(
                    item.index,
                    SubplugError(
                        "model-crashed",
                        f"The model died {tries} times on a chunk of {item.prepared.media} "
                        f"({span.start:.1f}-{span.end:.1f} s).",
                        "Look at the Ray logs of the model actors (out of memory?); the "
                        "finished chunks are journaled, so a rerun goes on from there.",
                    ),
                )
                self.state.progress()
            else:
                item.todo.insert(0, span)

    def _finish(self, item: OpenFile) -> None:
        transcripts = [item.results[span.index] for span in item.prepared.plan]
        self.state.finish(item.index, item.prepared, transcripts, item.resumed, item.key)
        self.state.progress()

    def batch_fill(self) -> float:
        """Chunks per model call over the batch size (1.0: every call full)."""
        if not self.calls:
            return 0.0
        return self.chunks_sent / (self.calls * self.batch_size)
