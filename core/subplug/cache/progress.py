"""How cache operations report progress: bytes done per model and stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Stage = Literal["download", "copy", "extract", "export", "hash", "wait"]


@dataclass(frozen=True)
class CacheProgress:
    """One progress report of a cache operation (bytes)."""

    model: str
    stage: Stage
    done: int
    total: int | None


ProgressCallback = Callable[[CacheProgress], None]


def report(
    progress: ProgressCallback | None, model: str, stage: Stage, done: int, total: int | None
) -> None:
    """Send a :class:`CacheProgress` to ``progress`` when there is one."""
    if progress is not None:
        progress(CacheProgress(model, stage, done, total))
