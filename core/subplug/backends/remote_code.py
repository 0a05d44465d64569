"""Backend for speech models whose Python code comes with their weights (Tiny Audio's
HuBERT + projector + SmolLM3, and others built the same way), registered as
``remote-code``.

Running a model's own code runs whatever it does, with the user's rights, so:

* it is refused unless asked for (``--trust-remote-code``, ``BackendOptions.
  trust_remote_code``), with one clear error before any media is decoded;
* the model must be a **cache entry**: its code files are hashed in the manifest when
  pulled or imported and checked before every run (the cache's quick check), and
  transformers is told to use local files only, so the code that runs is the code that
  was checked, never a download;
* loading it logs a warning naming the code files.

Interface: transformers' ``automatic-speech-recognition`` pipeline, which such a model
offers through ``custom_pipelines`` in its ``config.json`` (Tiny Audio does: ``pipeline(
"automatic-speech-recognition", model=…, trust_remote_code=True)``), or through an
``auto_map`` to a sequence-to-sequence or CTC speech model. A model that offers neither
(a chat-style speech LLM such as Gemma-3-4b speech, prompted with its own processor) is
refused with ``remote-code-interface``.

What it can do: transcription of English (both seed models are English ASR models)
unless the folder states more in ``subplug-capabilities.json``; the pipeline cannot be
told a language or a task, so a model stated to transcribe several languages must be
given ``--source``, and translations come from a text translator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from subplug.backends import hf_model
from subplug.backends.hf_model import ModelFolder
from subplug.errors import SubplugError
from subplug.hookspecs import hookimpl
from subplug.types import BackendOptions, BackendRequest, Capabilities

log = logging.getLogger(__name__)

BACKEND_NAME = "remote-code"
DEFAULT_MODEL = "tiny-audio"
TASK = "automatic-speech-recognition"
#: ``auto_map`` classes the standard speech-recognition pipeline can drive.
PIPELINE_MODELS = ("AutoModelForSpeechSeq2Seq", "AutoModelForCTC")


def code_files(folder: ModelFolder) -> list[str]:
    """The Python files that come with the model."""
    return sorted(p.name for p in folder.path.glob("*.py"))


def check_trust(folder: ModelFolder, options: BackendOptions) -> None:
    """Refuse to run a model's own code unless told to, or from outside the cache, or
    one that offers no speech-recognition pipeline."""
    config = folder.config
    pipelines = config.get("custom_pipelines") or {}
    auto_map = config.get("auto_map") or {}
    if not auto_map and not pipelines:
        raise SubplugError(
            "not-remote-code",
            f"{folder.label} brings no code of its own.",
            "Leave out --backend (auto picks the backend that runs the model).",
        )
    if not options.trust_remote_code:
        files = ", ".join(code_files(folder)) or "its code"
        raise SubplugError(
            "remote-code-refused",
            f"{folder.label} runs Python code that comes with it ({files}); subplug does "
            "not run a model's own code unless told to.",
            "If you trust where the model came from, add --trust-remote-code.",
        )
    if folder.name is None:
        raise SubplugError(
            "remote-code-not-cached",
            f"{folder.label} is a folder, not a model in subplug's cache; a model's own code "
            "runs only from the cache, where its files are checked against their hashes.",
            f"Import it first (`subplug models import {folder.path}`), then use its name.",
        )
    if TASK not in pipelines and not any(name in auto_map for name in PIPELINE_MODELS):
        raise SubplugError(
            "remote-code-interface",
            f"{folder.label} offers no speech-recognition pipeline subplug can call.",
            "subplug runs models with their own code through transformers' "
            "automatic-speech-recognition pipeline (custom_pipelines in config.json, as "
            "Tiny Audio has); run this one with its own tools.",
        )


def inspect(folder: ModelFolder, options: BackendOptions) -> Capabilities:
    """English transcription, unless the folder states more."""
    return Capabilities(
        transcribes=("en",), translates=(), combined=False, detects_language=False, plain_text=True
    )


class RemoteCodeBackend(hf_model.HfBackend):
    """A model with its own code, run through its speech-recognition pipeline."""

    name = BACKEND_NAME

    def __init__(self, folder: ModelFolder, options: BackendOptions, caps: Capabilities) -> None:
        from transformers import pipeline

        from subplug.backends.gemma3n_model import quiet_loading

        self.capabilities = caps
        self.loaded = hf_model.prepare_load(options, folder)
        where = self.loaded.placement
        log.warning(
            "Running the Python code that comes with %s (%s), as --trust-remote-code allows.",
            folder.label,
            ", ".join(code_files(folder)),
        )
        kwargs = hf_model.load_kwargs(where)
        with quiet_loading():
            self.model = pipeline(  # type: ignore[call-overload]  # (the task is a str here)
                TASK,
                model=str(folder.path),
                trust_remote_code=True,
                local_files_only=True,
                dtype=kwargs["dtype"],
                device=where.device,
            )
        hf_model.finish_load(self.model.model, where)
        self.batch_size = self.loaded.batch_size

    def _batch(self, requests: Sequence[BackendRequest]) -> list[str]:
        import torch

        clips = [{"raw": hf_model.samples_of(r), "sampling_rate": 16_000} for r in requests]
        with (
            torch.inference_mode(),
            hf_model.quiet_generation(),
        ):  # clip by clip: a model's own pipeline may not batch
            found = self.model(
                clips, generate_kwargs={"max_new_tokens": max(r.max_new_tokens for r in requests)}
            )
        return [
            hf_model.clean_answer(str(item.get("text", "")), r.chunk.index)
            for item, r in zip(found, requests, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        """Model, its code files, device, dtype and sizes."""
        return {**super().describe(), "code": code_files(self.loaded.folder)}


create_backend: hf_model.Factory[RemoteCodeBackend] = hf_model.Factory(
    BACKEND_NAME,
    model_types=(),
    default_model=DEFAULT_MODEL,
    inspect=inspect,
    load=RemoteCodeBackend,
    check_extra=check_trust,
)


@hookimpl
def subplug_register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the backend for models with their own code as ``remote-code``."""
    register(BACKEND_NAME, create_backend)
