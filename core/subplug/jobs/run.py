"""``run_job``: a job of many files from start to ``job-done``, on this machine or on a
Ray cluster, with its report file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from subplug.engine import EventSink
from subplug.errors import Cancelled
from subplug.jobs.inputs import JobFile
from subplug.jobs.tracking import JobState
from subplug.types import Backend, GenerateOptions


def run_job(
    options: GenerateOptions,
    files: Sequence[JobFile],
    *,
    ray: str | None = None,
    workers: int | None = None,
    report_path: Path | None = None,
    events: EventSink | None = None,
    backend: Backend | None = None,
) -> tuple[JobState, int]:
    """Subtitle ``files``; returns the job's state (its report) and exit code (0 all
    done or skipped, 1 some failed). ``ray``: ``None`` on this machine with cross-file
    batching, else a Ray address (``local`` starts a cluster, ``auto`` joins one).
    A usage error raises before any file is touched; Ctrl-C raises
    :class:`~subplug.errors.Cancelled` after writing the report so far."""
    state = JobState(options, files, events=events, backend=backend)
    state.begin()
    try:
        if ray is None:
            from subplug.jobs.batching import run_local

            run_local(state, workers=workers)
        else:
            from subplug.jobs.cluster import run_on_ray

            run_on_ray(state, address=ray, workers=workers)
    except KeyboardInterrupt:
        finished = len(state.report.rows)
        raise Cancelled(
            f"Interrupted after {finished} of {len(state.files)} files; finished chunks are kept."
        ) from None
    finally:
        if report_path is not None:
            state.report.write(report_path)
        state.engine.close()
    return state, state.end(report_path)
