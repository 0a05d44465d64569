"""The plugin manager and the typed facade that is the only caller of ``pm.hook.*``.

Plugins come from two places, registered the same way (``pm.register(module)``):

* the core's defaults, :data:`DEFAULT_PLUGINS` (the speech backends, the NLLB text
  translator, the subtitle formats, the core doctor checks), always loaded unless
  disabled;
* the ``subplug`` entry-point group (our Kdenlive, VLC, OBS and training packages, and
  third-party plugins).

Environment:

``SUBPLUG_LOAD_PLUGINS``
    Comma-separated entry-point names. When set (even to an empty string) only those
    entry points load; the defaults still load.
``SUBPLUG_DISABLED_PLUGINS``
    Comma-separated names of plugins not to load: entry-point names or the last part of
    a default plugin's module name (``gemma3n``, ``whisper``, ``nllb``, ``formats``,
    ``checks``…).
``SUBPLUG_PLUGINS``
    Comma-separated importable modules (``package.module``) to register as plugins
    without installing them: for plugin development and for tests that run ``subplug``
    in a child process (``SUBPLUG_PLUGINS=subplug.testing.fake`` adds the fake backend).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from subplug import hookspecs
from subplug.errors import SubplugError

if TYPE_CHECKING:
    from subplug.subcommands import Commands
    from subplug.types import (
        Backend,
        BackendFactory,
        BackendOptions,
        DoctorCheck,
        HostAdapter,
        JobEvent,
        SubtitleFormat,
        TranslatorFactory,
    )

ENTRY_POINT_GROUP = "subplug"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "subplug.backends.gemma3n",
    "subplug.backends.whisper",
    "subplug.backends.ctc",
    "subplug.backends.qwen3_asr",
    "subplug.backends.seamless",
    "subplug.backends.remote_code",
    "subplug.backends.nllb",
    "subplug.default_plugins.formats",
    "subplug.default_plugins.checks",
)

_pm: pluggy.PluginManager | None = None


def _names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def build_plugin_manager(*, entry_points: bool = True) -> pluggy.PluginManager:
    """Make a fresh manager with the defaults and (optionally) entry-point plugins."""
    pm = pluggy.PluginManager("subplug")
    pm.add_hookspecs(hookspecs)
    disabled = _names("SUBPLUG_DISABLED_PLUGINS") or set()
    for module_name in DEFAULT_PLUGINS:
        short = module_name.rsplit(".", 1)[-1]
        if short in disabled or module_name in disabled:
            continue
        pm.register(importlib.import_module(module_name), name=module_name)
    if entry_points:
        _load_entry_points(pm, disabled)
    for module_name in sorted(_names("SUBPLUG_PLUGINS") or ()):
        if pm.get_plugin(module_name) is None:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise SubplugError(
                    "plugin-not-importable",
                    f"SUBPLUG_PLUGINS names {module_name!r}, which cannot be imported: {exc}",
                    "Fix or unset the SUBPLUG_PLUGINS environment variable.",
                ) from exc
            pm.register(module, name=module_name)
    pm.check_pending()
    return pm


def _load_entry_points(pm: pluggy.PluginManager, disabled: set[str]) -> None:
    wanted = _names("SUBPLUG_LOAD_PLUGINS")
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in disabled or (wanted is not None and ep.name not in wanted):
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party plugin must not stop subplug
            print(
                f"subplug: plugin {ep.name!r} ({ep.value}) failed to load: {exc}",
                file=sys.stderr,
            )
            continue
        pm.register(plugin, name=ep.name)
        dist = getattr(ep, "dist", None)
        if dist is not None:
            pm._plugin_distinfo.append((plugin, dist))  # type: ignore[attr-defined]


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, built on first use."""
    global _pm
    if _pm is None:
        _pm = build_plugin_manager()
    return _pm


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests, or after changing the environment)."""
    global _pm
    _pm = None


def register(plugin: Any, name: str | None = None) -> str | None:
    """Register a plugin object or module on the process-wide manager."""
    pm = get_plugin_manager()
    registered = pm.register(plugin, name=name)
    pm.check_pending()
    return registered


def unregister(plugin: Any = None, name: str | None = None) -> None:
    """Remove a plugin registered with :func:`register`."""
    get_plugin_manager().unregister(plugin=plugin, name=name)


def loaded_plugins() -> list[dict[str, Any]]:
    """Name, module and hooks of every registered plugin (for ``doctor``)."""
    pm = get_plugin_manager()
    versions = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    result = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: str(item[0])):
        if plugin is None:
            continue
        dist = versions.get(id(plugin))
        result.append(
            {
                "name": name,
                "module": getattr(plugin, "__name__", type(plugin).__name__),
                "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
                "version": getattr(dist, "version", None),
            }
        )
    return result


# ------------------------------------------------------------------------ facade


def _call_in_registration_order(hook: Any, **kwargs: Any) -> None:
    """Call a hook's implementations oldest first (pluggy calls newest first).

    Used for registration hooks whose order matters: defaults first, so plugins
    registered later can override or append. Each implementation gets only the
    arguments it declares, as pluggy does.
    """
    for impl in hook.get_hookimpls():
        impl.function(**{name: kwargs[name] for name in impl.argnames})


def _named_factories(hook: Any, kind: str) -> dict[str, Any]:
    """Name → factory from a ``subplug_register_*`` hook whose ``register(name,
    factory)`` two plugins may not call with one name (``duplicate-KIND``)."""
    found: dict[str, Any] = {}

    def register(name: str, factory: Any) -> None:
        if name in found:
            raise SubplugError(
                f"duplicate-{kind}",
                f"Two plugins register a {kind} named {name!r}.",
                "Disable one with SUBPLUG_DISABLED_PLUGINS.",
            )
        found[name] = factory

    hook(register=register)
    return found


def backends() -> dict[str, BackendFactory]:
    """Backend factories by name, from ``subplug_register_backends``."""
    return _named_factories(get_plugin_manager().hook.subplug_register_backends, "backend")


def backend_factory(name: str) -> BackendFactory:
    """The registered factory of backend ``name``; ``unknown-backend`` when none is."""
    factories = backends()
    if name not in factories:
        raise SubplugError(
            "unknown-backend",
            f"No backend named {name!r} is installed.",
            f"Installed backends: {names(factories) or 'none'}.",
        )
    return factories[name]


def check_backend(name: str, options: BackendOptions) -> dict[str, Any]:
    """Run backend ``name`` 's cheap fail-fast check for ``options`` (the model present
    and intact, the device there; nothing loaded), where its factory offers one
    (``factory.check(options)``). Returns the facts the check gives: ``contents``, the
    model's fingerprint, keys the resume journal."""
    check = getattr(backend_factory(name), "check", None)
    facts = check(options) if callable(check) else None
    return dict(facts or {})


def load_backend(name: str, options: BackendOptions) -> Backend:
    """Load backend ``name`` with ``options`` (the one way the engine and the live
    engine do it)."""
    return backend_factory(name)(options)


def translators() -> dict[str, TranslatorFactory]:
    """Text translator factories by name, from ``subplug_register_translators``."""
    return _named_factories(get_plugin_manager().hook.subplug_register_translators, "translator")


def translator_factory(name: str) -> TranslatorFactory:
    """The registered factory of translator ``name``; ``unknown-translator`` when none is."""
    factories = translators()
    if name not in factories:
        raise SubplugError(
            "unknown-translator",
            f"No text translator named {name!r} is installed.",
            f"Installed translators: {names(factories) or 'none'}.",
        )
    return factories[name]


def formats() -> dict[str, SubtitleFormat]:
    """Subtitle writers by name, from ``subplug_register_formats`` (later ones win)."""
    found: dict[str, SubtitleFormat] = {}

    def register(fmt: SubtitleFormat) -> None:
        found[fmt.name] = fmt

    _call_in_registration_order(
        get_plugin_manager().hook.subplug_register_formats, register=register
    )
    return found


def hosts() -> dict[str, HostAdapter]:
    """Host adapters by name, from ``subplug_register_hosts``."""
    found: dict[str, HostAdapter] = {}

    def register(adapter: HostAdapter) -> None:
        found[adapter.name] = adapter

    get_plugin_manager().hook.subplug_register_hosts(register=register)
    return found


def doctor_checks() -> list[DoctorCheck]:
    """Every doctor check, defaults first, in registration order."""
    found: list[DoctorCheck] = []
    _call_in_registration_order(
        get_plugin_manager().hook.subplug_doctor_checks, register=found.append
    )
    return found


def add_commands(cli: Commands) -> None:
    """Let plugins add subcommands (``subplug_register_commands``)."""
    get_plugin_manager().hook.subplug_register_commands(cli=cli)


def job_event(event: JobEvent) -> None:
    """Send an event to every ``subplug_job_event`` implementation."""
    get_plugin_manager().hook.subplug_job_event(event=event)


def names(items: Iterable[str]) -> str:
    """``a, b and c`` for messages."""
    items = sorted(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
