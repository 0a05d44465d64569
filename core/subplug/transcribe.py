"""Chunks → texts: the exchange with a backend, for files (engine) and streams (live).

For each chunk the first request follows ``--source`` and ``--targets``
(:func:`subplug.prompts.first_request`); its answer is parsed tolerantly; with an
unknown source the transcription's script decides the language
(:func:`subplug.prompts.detect_language`), and a follow-up request asks for the target
language still missing. Both rounds go to the backend as one batched call each.

Progress: a backend whose ``generate`` takes a ``progress`` keyword reports
``(tokens, budget)``; :func:`transcribe` turns that into a fraction of the whole
exchange (the follow-up round, when there is one, is its second half).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from subplug import prompts
from subplug.types import AudioChunk, Backend, BackendRequest, Task, Transcript

#: ``progress(fraction)`` with ``fraction`` in [0, 1] for one :func:`transcribe` call.
Progress = Callable[[float], None]


def request_for(
    chunk: AudioChunk, task: Task, instruction: str, source: str | None
) -> BackendRequest:
    """A backend request for ``chunk`` with the token budget its length allows."""
    return BackendRequest(
        chunk=chunk,
        instruction=instruction,
        task=task,
        source=source,
        max_new_tokens=prompts.max_new_tokens_for(chunk.duration, task),
    )


def accepts_progress(backend: Backend) -> bool:
    """True when ``backend.generate`` takes a ``progress`` keyword."""
    try:
        parameters = inspect.signature(backend.generate).parameters
    except (TypeError, ValueError):
        return False
    return "progress" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def answers(
    backend: Backend,
    requests: Sequence[BackendRequest],
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """The backend's answers, checked: one string per request (a plugin bug otherwise).
    ``progress(tokens, budget)`` reaches backends that report it."""
    if progress is not None and accepts_progress(backend):
        found = list(backend.generate(requests, progress=progress))  # type: ignore[call-arg]
    else:
        found = list(backend.generate(requests))
    if len(found) != len(requests):
        raise RuntimeError(
            f"backend {backend.name!r} returned {len(found)} answers for {len(requests)} requests"
        )
    return found


def transcribe(
    backend: Backend,
    chunks: Sequence[AudioChunk],
    source: str,
    targets: Sequence[str],
    *,
    progress: Progress | None = None,
) -> list[Transcript]:
    """The :class:`Transcript` of every chunk (module docstring), in order."""
    first = [request_for(chunk, *prompts.first_request(source, targets)) for chunk in chunks]
    two_rounds = source in (None, "auto")

    def round_progress(offset: float, share: float) -> Callable[[int, int], None] | None:
        if progress is None:
            return None

        def report(tokens: int, budget: int) -> None:
            progress(offset + share * (tokens / budget if budget else 1.0))

        return report

    replies = answers(backend, first, round_progress(0.0, 0.5 if two_rounds else 1.0))
    parsed: list[tuple[str | None, dict[str, str], list[str]]] = []
    followups: list[tuple[int, BackendRequest]] = []
    for i, (request, answer) in enumerate(zip(first, replies, strict=True)):
        texts = prompts.parse_output(answer, request.task, request.source)
        lang = request.source
        if lang is None:
            lang = prompts.detect_language(" ".join(texts.values()))
            texts = {lang: " ".join(texts.values())} if lang and texts else texts
        parsed.append((lang, dict(texts), [answer]))
        missing = [t for t in targets if t not in texts]
        if lang and missing and texts.get(lang):
            step = prompts.followup_request(lang, targets)
            if step is not None:
                followups.append((i, request_for(chunks[i], *step)))
    if followups:
        more = answers(backend, [r for _, r in followups], round_progress(0.5, 0.5))
        for (i, request), answer in zip(followups, more, strict=True):
            lang, texts, raw = parsed[i]
            for code, text in prompts.parse_output(answer, request.task, lang).items():
                texts.setdefault(code, text)
            raw.append(answer)
    if progress is not None:
        progress(1.0)
    return [
        Transcript(chunk.span, lang, texts, tuple(raw))
        for chunk, (lang, texts, raw) in zip(chunks, parsed, strict=True)
    ]


def batch_size_of(backend: Backend, requested: int | None, default: int = 8) -> int:
    """Chunks per backend call: what was asked, else the backend's own batch size (the
    runtime sizes it from free memory), else ``default``."""
    if requested:
        return requested
    size: Any = getattr(backend, "batch_size", None)
    if size is None:
        size = backend.describe().get("batch_size")
    return int(size) if isinstance(size, int) and size > 0 else default
