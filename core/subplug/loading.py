"""What a job runs: its backend and, when asked for, a text translator beside it.

:func:`check` is the fail-fast step before any media is decoded: the backend's own check
(model there and intact, options it accepts), the translator's, and whether the two can
give every language asked for (:func:`subplug.calls.check_request`). :func:`load` loads
them; a backend with a translator is handed out as one :class:`WithTranslator`, so the
engine, the live engine and the chunk→texts exchange see one backend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from subplug import calls, choice, plugins
from subplug.languages import LANGUAGES
from subplug.types import Backend, BackendOptions, BackendRequest, Capabilities, Translator


def translator_options(options: BackendOptions, model: str | None) -> BackendOptions:
    """The options a translator factory gets: its model, and the backend's device,
    precision and threads."""
    return BackendOptions(
        model=model, device=options.device, dtype=options.dtype, threads=options.threads
    )


def check(
    name: str,
    options: BackendOptions,
    *,
    source: str | None = "auto",
    targets: Sequence[str] = LANGUAGES,
) -> dict[str, Any]:
    """Check backend ``name`` and the translator ``options`` names (nothing loaded) and
    that they can serve ``source`` → ``targets`` (``source=None``: no job to check, as
    for an evaluation that asks per sample); raise ``SubplugError`` otherwise.

    The backend's capabilities are what its check returns, else the factory's own
    ``capabilities`` attribute, else :data:`subplug.calls.DEFAULT_CAPABILITIES`.
    Returns the facts of the checks: ``contents`` (the backend's and the translator's
    fingerprint together: it keys the resume journal), ``capabilities``, ``model``
    and ``translator`` (its ``name``, ``model``, ``directions``)."""
    facts = plugins.check_backend(name, options)
    translator_facts: dict[str, Any] = {}
    if options.translator:
        plugin, model = choice.choose_translator(options.translator)
        found = _check_translator(plugin, translator_options(options, model))
        directions = found.get("directions")
        translator_facts = {
            "name": plugin,
            "model": model or plugin,
            "directions": tuple(
                tuple(d)
                for d in (
                    directions
                    if directions is not None
                    else [(a, b) for a in LANGUAGES for b in LANGUAGES if a != b]
                )
            ),
        }
        own = facts.get("contents") or f"{name}:{options.model}"
        theirs = found.get("contents") or f"{plugin}:{model}"
        facts["contents"] = hashlib.sha256(f"{own}\ntranslator:{theirs}".encode()).hexdigest()
        facts["translator"] = translator_facts
    caps = facts.get("capabilities")
    if not isinstance(caps, Capabilities):  # the factory's own, or what Gemma 3n does
        caps = calls.capabilities_of(plugins.backend_factory(name))
        facts["capabilities"] = caps
    if source is None:
        return facts
    calls.check_request(
        caps,
        translator_facts.get("directions", ()),
        source,
        targets,
        model=str(facts.get("model") or options.model or name),
        translator_name=translator_facts.get("model"),
    )
    return facts


def _check_translator(plugin: str, options: BackendOptions) -> dict[str, Any]:
    test = getattr(plugins.translator_factory(plugin), "check", None)
    return dict((test(options) if callable(test) else None) or {})


def load(name: str, options: BackendOptions) -> Backend:
    """Load backend ``name`` (and the translator ``options`` names, if any)."""
    backend = plugins.load_backend(name, options)
    if not options.translator:
        return backend
    try:
        plugin, model = choice.choose_translator(options.translator)
        translator = plugins.translator_factory(plugin)(translator_options(options, model))
    except BaseException:
        backend.close()
        raise
    return WithTranslator(backend, translator)


class WithTranslator:
    """A backend and the text translator that gives the languages it cannot: one
    :class:`~subplug.types.Backend` to its callers (``translator`` is read by
    :func:`subplug.transcribe.transcribe`)."""

    def __init__(self, backend: Backend, translator: Translator) -> None:
        self.backend = backend
        self.translator = translator
        self.name = backend.name

    @property
    def capabilities(self) -> Capabilities:
        return calls.capabilities_of(self.backend)

    @property
    def batch_size(self) -> Any:
        return getattr(self.backend, "batch_size", None)

    def generate(
        self,
        requests: Sequence[BackendRequest],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """The backend's answers (``progress`` reaches it when it reports progress)."""
        from subplug.transcribe import answers

        return answers(self.backend, requests, progress)

    def close(self) -> None:
        """Close both. Safe to call twice."""
        try:
            self.backend.close()
        finally:
            self.translator.close()

    def describe(self) -> Mapping[str, Any]:
        """The backend's facts, with the translator's under ``translator``."""
        return {**self.backend.describe(), "translator": dict(self.translator.describe())}
