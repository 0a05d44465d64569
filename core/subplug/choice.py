"""Which backend runs a model (``--backend auto``) and which text translator plugin
runs a translator model (``--translator``).

A model is recognised, in this order:

1. a name of the model registry (:data:`subplug.cache.KNOWN_MODELS`): the backend the
   registry names for it (``whisper-small`` → ``whisper``), whether pulled yet or not;
2. a cache entry or a folder: the ``model_type`` of its ``config.json`` (an adapter's:
   its base's) → the registered factory that lists it in its ``model_types``; a config
   whose model type no backend runs but that names its own code (``auto_map``) → the
   ``remote-code`` backend;
3. anything the cache cannot find → the default backend, ``gemma3n``, whose check then
   says the model is missing and how to get it.

Reading a ``config.json`` is all it costs: no weights, no heavy imports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from subplug import plugins
from subplug.errors import SubplugError

#: The backend ``auto`` means when the model is not found (the default model's).
DEFAULT_BACKEND = "gemma3n"
#: The backend of models that bring their own code.
REMOTE_CODE_BACKEND = "remote-code"


def model_config(spec: str | None) -> dict[str, Any] | None:
    """The ``config.json`` of the model ``spec`` names (a cache entry or a folder; an
    adapter's base), or ``None`` when there is none to read. Raises the cache's
    ``SubplugError`` for a model that is there but damaged or not a model."""
    from subplug import cache

    found = cache.resolve_model(spec)
    folder = found.base if found.is_adapter else found.path
    if folder is None:
        return None
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _runner(config: Mapping[str, Any], factories: Mapping[str, Any]) -> str | None:
    """The registered factory name whose ``model_types`` hold the config's model type."""
    model_type = config.get("model_type")
    for name, factory in factories.items():
        if model_type in tuple(getattr(factory, "model_types", ())):
            return name
    return None


def choose_backend(name: str, model: str | None) -> str:
    """The backend to run ``model`` with: ``name`` itself unless it is ``auto`` (see
    the module docstring). ``unknown-model-family`` when the model is there but no
    installed backend runs its kind."""
    if name != "auto":
        return name
    from subplug import cache

    known = cache.KNOWN_MODELS.get(model or cache.DEFAULT_MODEL)
    if known is not None:
        return known.backend
    try:
        config = model_config(model)
    except SubplugError:
        return DEFAULT_BACKEND
    if config is None:
        return DEFAULT_BACKEND
    factories = plugins.backends()
    found = _runner(config, factories)
    if found is not None:
        return found
    if config.get("auto_map") and REMOTE_CODE_BACKEND in factories:
        return REMOTE_CODE_BACKEND
    raise SubplugError(
        "unknown-model-family",
        f"No installed backend runs {model} (model type {config.get('model_type')!r}).",
        f"Name the backend with --backend NAME (installed: {plugins.names(factories)}).",
    )


def choose_translator(spec: str) -> tuple[str, str | None]:
    """``(translator plugin, model)`` for ``--translator SPEC``: a translator's own name
    (its default model), a registry name, or a cache entry or folder whose model type a
    translator runs. ``unknown-translator`` otherwise; the cache's errors for a model
    that is not there."""
    from subplug import cache

    factories = plugins.translators()
    if spec in factories:
        return spec, None
    known = cache.KNOWN_MODELS.get(spec)
    if known is not None and known.backend in factories:
        return known.backend, spec
    config = model_config(spec)
    found = _runner(config or {}, factories)
    if found is None:
        raise SubplugError(
            "unknown-translator",
            f"{spec} is not a text translation model subplug knows how to run.",
            f"Give --translator a translator ({plugins.names(factories) or 'none installed'}) "
            "or a model one of them runs, e.g. nllb-200-distilled-600m.",
        )
    return found, spec


def runner(spec: str) -> str:
    """What runs the model ``spec`` names, for listings: a backend's name, ``translator
    NAME`` for a text translation model, or ``?`` when no installed plugin runs it (or
    it cannot be read). Registry names answer without reading anything."""
    from subplug import cache

    translators = plugins.translators()
    known = cache.KNOWN_MODELS.get(spec)
    if known is not None:
        return f"translator {known.backend}" if known.backend in translators else known.backend
    try:
        config = model_config(spec)
    except SubplugError:
        return "?"
    if config is None:
        return "?"
    found = _runner(config, translators)
    if found is not None:
        return f"translator {found}"
    try:
        return choose_backend("auto", spec)
    except SubplugError:
        return "?"
