"""A deterministic fake backend, registered as a real plugin in tests.

It answers in the exact text formats the trained model uses (so the real parser runs),
with words derived from the chunk's index and duration: about 2.5 words per second of
speech, so cue shaping sees realistic amounts of text. Tests that need exact output can
pass ``script``: a function from (request) to the raw text.

``SUBPLUG_FAKE_DELAY=SECONDS`` makes every request take that long, so tests can
interrupt a run of ``subplug`` in a child process while it transcribes.
``SUBPLUG_FAKE_LOG=FILE`` appends a JSON line per answered request (process id, the
backend's call number, chunk index and times, :func:`chunk_digest` of its samples), so
tests can count the model work done in other processes (Ray actors). With
``SUBPLUG_FAKE_DIE_AT=N`` as well, the process that answers the log's N-th request kills
itself (SIGKILL, once: a ``FILE.died`` marker remembers it) right after logging it, in
the middle of its batch: a model worker dying at a known moment.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from subplug.hookspecs import hookimpl
from subplug.types import Backend, BackendOptions, BackendRequest, Task

_EN_TEXT = (
    "the quick brown fox jumps over a lazy dog and then runs into the forest "
    "where birds sing while the river flows past old stones under a bright sky"
)
_MN_TEXT = (
    "хурдан бор үнэг залхуу нохойн дээгүүр үсэрч дараа нь ой руу гүйнэ "
    "тэнд шувууд дуулж гол хуучин чулуудын хажуугаар тод тэнгэрийн доор урсана"
)
EN_WORDS: tuple[str, ...] = tuple(_EN_TEXT.split())
MN_WORDS: tuple[str, ...] = tuple(_MN_TEXT.split())


def fake_text(words: Sequence[str], chunk_index: int, seconds: float) -> str:
    """Deterministic sentence(s) of about 2.5 words per second."""
    count = max(2, round(seconds * 2.5))
    picked = [words[(chunk_index * 7 + i) % len(words)] for i in range(count)]
    # A sentence every ~8 words, so line breaking sees punctuation.
    out: list[str] = []
    for i, word in enumerate(picked):
        if i % 8 == 0:
            word = word.capitalize()
        out.append(word + ("." if i % 8 == 7 or i == len(picked) - 1 else ""))
    return " ".join(out)


def fake_answer(request: BackendRequest) -> str:
    """What the trained model would answer to ``request`` (English audio assumed
    unless the request says Mongolian)."""
    span = request.chunk.span
    speech = sum(r.duration for r in span.regions) or request.chunk.duration
    en = fake_text(EN_WORDS, span.index, speech)
    mn = fake_text(MN_WORDS, span.index, speech)
    source = request.source or "en"
    if request.task is Task.TRANSCRIBE:
        return en if source == "en" else mn
    if request.task is Task.TRANSLATE:
        return mn if source == "en" else en
    if source == "en":
        return f"### English\n\n{en}\n\n---\n\n### Mongolian\n\n{mn}"
    return f"### Mongolian\n\n{mn}\n\n---\n\n### English\n\n{en}"


def chunk_digest(samples: Any) -> str:
    """A short hash of a chunk's samples: which chunk of which file a request was."""
    import numpy as np

    return hashlib.sha1(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest()[:16]


def _log(request: BackendRequest, call: int) -> None:
    path = os.environ.get("SUBPLUG_FAKE_LOG")
    if not path:
        return
    span = request.chunk.span
    line = {
        "pid": os.getpid(),
        "call": call,
        "index": span.index,
        "start": span.start,
        "end": span.end,
        "task": request.task.value,
        "digest": chunk_digest(request.chunk.samples),
    }
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
        handle.flush()
    die_at = os.environ.get("SUBPLUG_FAKE_DIE_AT")
    marker = f"{path}.died"
    if die_at and not os.path.exists(marker):
        with open(path, encoding="utf-8") as handle:
            answered = sum(1 for _ in handle)
        if answered == int(die_at):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


class FakeBackend:
    """A :class:`~subplug.types.Backend` that needs no model."""

    name = "fake"

    def __init__(
        self,
        options: BackendOptions | None = None,
        script: Callable[[BackendRequest], str] | None = None,
    ) -> None:
        self.options = options or BackendOptions()
        self.script = script or fake_answer
        self.calls: list[list[BackendRequest]] = []
        self.closed = False

    def generate(
        self,
        requests: Sequence[BackendRequest],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """The scripted answer per request; ``progress(done, total)`` after each one
        (counted in requests, as the real backend counts tokens)."""
        self.calls.append(list(requests))
        delay = float(os.environ.get("SUBPLUG_FAKE_DELAY") or 0)
        answers = []
        for done, request in enumerate(requests, start=1):
            if delay > 0:
                time.sleep(delay)
            answers.append(self.script(request))
            _log(request, len(self.calls))
            if progress is not None:
                progress(done, len(requests))
        return answers

    def close(self) -> None:
        self.closed = True

    def describe(self) -> Mapping[str, Any]:
        return {"backend": "fake", "model": "fake", "device": "cpu"}


def check(options: BackendOptions) -> dict[str, Any]:
    """The fake backend's fail-fast check: nothing to load, but a model folder or cache
    entry it is pointed at is fingerprinted as the real backend does, so resume tests
    see a retrained model as another model."""
    if options.model is None:
        return {}
    from subplug import cache

    return {"contents": cache.contents_fingerprint(options.model)}


class FakeBackendPlugin:
    """Registers :class:`FakeBackend` as backend ``fake``.

    >>> from subplug import plugins
    >>> plugins.register(FakeBackendPlugin(), name="fake-backend")  # doctest: +SKIP
    """

    def __init__(self, script: Callable[[BackendRequest], str] | None = None) -> None:
        self.script = script
        self.instances: list[FakeBackend] = []

    @hookimpl
    def subplug_register_backends(self, register: Callable[[str, Any], None]) -> None:
        def factory(options: BackendOptions) -> Backend:
            backend = FakeBackend(options, self.script)
            self.instances.append(backend)
            return backend

        factory.check = check  # type: ignore[attr-defined]
        register("fake", factory)


#: Registering this module (``SUBPLUG_PLUGINS=subplug.testing.fake``) adds backend "fake".
_module_plugin = FakeBackendPlugin()


@hookimpl
def subplug_register_backends(register: Callable[[str, Any], None]) -> None:
    """Module-level hook so ``SUBPLUG_PLUGINS=subplug.testing.fake`` works in child
    processes (the VLC, Kdenlive and OBS tests run ``subplug`` that way)."""
    _module_plugin.subplug_register_backends(register)
