"""Chunks → texts: the exchange with a backend, for files (engine) and streams (live).

For each chunk the first request follows ``--source``, ``--targets`` and what the
backend can do (:func:`subplug.calls.first_request`); its answer is parsed tolerantly
(or taken as plain text from a backend whose answers are plain); with an unknown source
the transcription's script decides the language
(:func:`subplug.prompts.detect_language`), and a follow-up asks for the target
language still missing: from the backend (the same audio, translated), or from the
text translator a backend was loaded with (:func:`subplug.calls.follow_up`). Each
round goes to the backend as one batched call; text translations go to the
translator as one call per direction.

Progress: a backend whose ``generate`` takes a ``progress`` keyword reports
``(tokens, budget)``; :func:`transcribe` turns that into a fraction of the whole
exchange (the follow-up round, when there can be one, is its second half).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from subplug import calls, prompts
from subplug.types import AudioChunk, Backend, BackendRequest, Task, Transcript, Translator

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
    caps = calls.capabilities_of(backend)
    translator: Translator | None = getattr(backend, "translator", None)
    directions = tuple(translator.directions) if translator is not None else ()
    planned = calls.planned_source(caps, source)
    step = calls.first_request(caps, planned, targets)
    first = [request_for(chunk, *step) for chunk in chunks]
    two_rounds = planned is None or (
        step.task is Task.TRANSCRIBE and bool(set(targets) - {planned})
    )
    read = _read_plain if caps.plain_text else prompts.parse_output

    def round_progress(offset: float, share: float) -> Callable[[int, int], None] | None:
        if progress is None:
            return None

        def report(tokens: int, budget: int) -> None:
            progress(offset + share * (tokens / budget if budget else 1.0))

        return report

    replies = answers(backend, first, round_progress(0.0, 0.5 if two_rounds else 1.0))
    parsed: list[tuple[str | None, dict[str, str], list[str]]] = []
    followups: list[tuple[int, BackendRequest]] = []
    translations: dict[tuple[str, str], list[int]] = {}
    for i, (request, answer) in enumerate(zip(first, replies, strict=True)):
        texts = read(answer, request.task, request.source)
        lang = request.source
        if lang is None:
            lang = prompts.detect_language(" ".join(texts.values()))
            texts = {lang: " ".join(texts.values())} if lang and texts else texts
        parsed.append((lang, dict(texts), [answer]))
        if not (lang and texts.get(lang)):
            continue
        then = calls.follow_up(caps, directions, lang, tuple(texts), targets)
        if then.speech is not None:
            followups.append((i, request_for(chunks[i], *then.speech)))
        elif then.text is not None:
            translations.setdefault(then.text, []).append(i)
    if followups:
        more = answers(backend, [r for _, r in followups], round_progress(0.5, 0.5))
        for (i, request), answer in zip(followups, more, strict=True):
            lang, texts, raw = parsed[i]
            for code, text in read(answer, request.task, lang).items():
                texts.setdefault(code, text)
            raw.append(answer)
    if translations:
        assert translator is not None
        for (from_lang, to_lang), items in translations.items():
            sources = [parsed[i][1][from_lang] for i in items]
            done = list(translator.translate(sources, from_lang, to_lang))
            if len(done) != len(sources):
                raise RuntimeError(
                    f"translator {translator.name!r} returned {len(done)} translations "
                    f"for {len(sources)} texts"
                )
            for i, text in zip(items, done, strict=True):
                text = prompts.normalise_whitespace(text)
                if text:
                    parsed[i][1].setdefault(to_lang, text)
                    parsed[i][2].append(text)
    if progress is not None:
        progress(1.0)
    return [
        Transcript(chunk.span, lang, texts, tuple(raw))
        for chunk, (lang, texts, raw) in zip(chunks, parsed, strict=True)
    ]


def _read_plain(answer: str, task: Task, source: str | None) -> dict[str, str]:
    """A plain answer (``Capabilities.plain_text``): the text, in the language asked
    for (the source for a transcription, the other language for a translation), or in
    its script's language when the source is unknown."""
    text = prompts.normalise_whitespace(answer)
    if not text:
        return {}
    if source is None:
        lang = prompts.detect_language(text)
        return {lang: text} if lang else {}
    return {source if task is Task.TRANSCRIBE else prompts.other_language(source): text}


def batch_size_of(backend: Backend, requested: int | None, default: int = 8) -> int:
    """Chunks per backend call: what was asked, else the backend's own batch size (the
    runtime sizes it from free memory), else ``default``."""
    if requested:
        return requested
    size: Any = getattr(backend, "batch_size", None)
    if size is None:
        size = backend.describe().get("batch_size")
    return int(size) if isinstance(size, int) and size > 0 else default
