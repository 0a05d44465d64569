"""The hooks subplug calls: the contract between the engine and its plugins.

Grouped by phase. Every hook is documented in docs/plugin_hooks.md with this exact
signature (a test checks it). Implementations may accept fewer arguments than the
spec, so hooks grow by adding arguments, never by near-duplicate hooks.

Plugins implement hooks with ``@subplug.hookimpl`` and are registered through the
``subplug`` entry-point group; the core's own defaults are plugins too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from subplug.subcommands import Commands
    from subplug.types import (
        BackendFactory,
        DoctorCheck,
        HostAdapter,
        JobEvent,
        SubtitleFormat,
        TranslatorFactory,
    )

hookspec = pluggy.HookspecMarker("subplug")
hookimpl = pluggy.HookimplMarker("subplug")


# ------------------------------------------------------------------ registration
# Called once per process, when the plugin manager is first used.


@hookspec
def subplug_register_backends(register: Callable[[str, BackendFactory], None]) -> None:
    """Register model backends by name.

    Called when the engine first needs a backend (``generate``, ``live``, ``doctor``).
    Call ``register(name, factory)`` for each backend; ``factory(options)`` receives a
    :class:`~subplug.types.BackendOptions` and returns a loaded
    :class:`~subplug.types.Backend`. The factory, not the plugin module, imports heavy
    libraries. A factory may also have an optional ``check(options)`` attribute: the
    engine calls it with the same ``BackendOptions`` while validating a job, before any
    media is decoded or model loaded, and it raises
    :class:`~subplug.errors.SubplugError` for a bad option, a missing or damaged model
    or an unusable device (it must be cheap: no model loading, no GPU memory); it may
    return a dict of facts, ``contents`` (the model's fingerprint) keying the resume
    journal and ``capabilities`` (a :class:`~subplug.types.Capabilities`: the languages
    the model transcribes and translates, from which the calls are planned and a job it
    cannot serve is refused before any media is decoded; a factory may carry them as its
    own ``capabilities`` attribute instead, and a backend states them as its
    ``capabilities``; without them it counts as Gemma 3n's). A factory's optional
    ``model_types`` (``config.json`` model types) lets ``--backend auto`` pick it for
    a model. The core registers ``gemma3n`` (the default), ``whisper``, ``ctc``,
    ``qwen3-asr``, ``seamless`` and ``remote-code``. Registering a name twice is an
    error naming both plugins. Returns nothing.
    """


@hookspec
def subplug_register_translators(register: Callable[[str, TranslatorFactory], None]) -> None:
    """Register text translators by name: what gives a transcription-only backend
    (or one that translates only one way) its other language.

    Called when a job names a translator (``--translator``) and when ``--translator``
    or ``--backend auto`` look for the plugin that runs a model. Call
    ``register(name, factory)`` for each translator; ``factory(options)`` receives a
    :class:`~subplug.types.BackendOptions` whose ``model`` is the translator's model
    (``None``: its default) and returns a loaded :class:`~subplug.types.Translator`
    (``translate(texts, source, target) -> list[str]``, ``directions``, ``close()``,
    ``describe()``). Like a backend factory it may have ``check(options)`` (cheap,
    before any media is decoded: raises :class:`~subplug.errors.SubplugError` for a
    missing model; may return ``contents``, the model's fingerprint, and
    ``directions``, the (source, target) pairs it translates) and ``model_types`` (the
    ``config.json`` model types it runs). The chunk→texts exchange calls
    ``translate`` once per direction with the transcriptions of a batch of chunks.
    The core registers ``nllb``. Registering a name twice is an error. Returns
    nothing.
    """


@hookspec
def subplug_register_formats(register: Callable[[SubtitleFormat], None]) -> None:
    """Register subtitle writers.

    Called when ``generate`` resolves ``--format``. Call ``register(fmt)`` with a
    :class:`~subplug.types.SubtitleFormat`; its ``name`` is what ``--format`` accepts.
    The core registers ``ass`` (bilingual), ``srt`` and ``vtt`` (one file per
    language). A later registration of the same name replaces an earlier one, so a
    plugin can override a default writer. Returns nothing.
    """


@hookspec
def subplug_register_hosts(register: Callable[[HostAdapter], None]) -> None:
    """Register host adapters for ``subplug install|uninstall|status NAME``.

    Called when one of those commands runs and by ``doctor``. Call ``register(adapter)``
    with an object that has ``name`` and ``install()``, ``uninstall()``, ``status()``,
    each returning a :class:`~subplug.types.HostStatus`. The VLC, OBS and Kdenlive
    plugins register ``vlc``, ``obs`` and ``kdenlive``. Returns nothing.
    """


@hookspec
def subplug_register_commands(cli: Commands) -> None:
    """Add subcommands to the ``subplug`` command line.

    Called once while the argument parser is built, before arguments are parsed, so
    ``subplug --help`` lists plugin commands. Call
    ``cli.add(name, help=…, setup=…, run=…)``: ``setup(parser)`` adds arguments to an
    ``argparse.ArgumentParser``; ``run(args)`` does the work and returns an exit code.
    Keep imports inside ``run``: building the parser must stay fast. Returns nothing.
    """


# -------------------------------------------------------------------- diagnostics


@hookspec
def subplug_doctor_checks(register: Callable[[DoctorCheck], None]) -> None:
    """Contribute checks to ``subplug doctor``.

    Called when ``doctor`` runs. Call ``register(check)`` with a
    :class:`~subplug.types.DoctorCheck`; ``check.run()`` returns a
    :class:`~subplug.types.CheckResult` (ok/warn/fail/skip, a summary and a hint).
    A check that raises is reported as a failure with its exception, so one broken
    check never hides the others. Returns nothing.
    """


# --------------------------------------------------------------------------- jobs


@hookspec
def subplug_job_event(event: JobEvent) -> None:
    """Observe progress and lifecycle events of a job.

    Called by the engine, synchronously and in order, for every
    :class:`~subplug.types.JobEvent` (job and file start, stages, chunk progress,
    warnings, outputs, errors, job end). The CLI's progress bar and ``--jsonl`` writer
    are implementations of this hook. Implementations must be quick and must not raise;
    the return value is ignored.
    """
