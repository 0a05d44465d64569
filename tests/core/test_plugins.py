"""The plugin manager: defaults, entry points, the environment switches, check_pending."""

from __future__ import annotations

import types

import pluggy
import pytest
from subplug import plugins
from subplug.errors import SubplugError
from subplug.hookspecs import hookimpl


def _plugin_names() -> set[str]:
    return {name for name, _ in plugins.get_plugin_manager().list_name_plugin()}


def test_defaults_and_our_entry_points_load() -> None:
    names = _plugin_names()
    assert set(plugins.DEFAULT_PLUGINS) <= names
    assert {"kdenlive", "vlc", "obs", "training"} <= names
    assert {"ass", "srt", "vtt"} <= set(plugins.formats())
    assert "gemma3n" in plugins.backends()


def test_disabled_plugins_are_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBPLUG_DISABLED_PLUGINS", "vlc, formats")
    plugins.reset_plugin_manager()
    names = _plugin_names()
    assert "vlc" not in names
    assert "subplug.default_plugins.formats" not in names
    assert "obs" in names
    assert plugins.formats() == {}


def test_load_plugins_limits_entry_points_not_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBPLUG_LOAD_PLUGINS", "obs")
    plugins.reset_plugin_manager()
    names = _plugin_names()
    assert "obs" in names
    assert not {"vlc", "kdenlive", "training"} & names
    assert set(plugins.DEFAULT_PLUGINS) <= names

    monkeypatch.setenv("SUBPLUG_LOAD_PLUGINS", "")
    plugins.reset_plugin_manager()
    assert not {"obs", "vlc", "kdenlive", "training"} & _plugin_names()


def test_subplug_plugins_registers_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBPLUG_PLUGINS", "subplug.testing.fake")
    plugins.reset_plugin_manager()
    assert "fake" in plugins.backends()


def test_subplug_plugins_unimportable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBPLUG_PLUGINS", "no_such_module_here")
    plugins.reset_plugin_manager()
    with pytest.raises(SubplugError) as info:
        plugins.get_plugin_manager()
    assert info.value.reference == "plugin-not-importable"


def test_check_pending_rejects_unknown_hooks() -> None:
    bogus = types.SimpleNamespace()

    @hookimpl
    def subplug_no_such_hook() -> None:
        """Misspelled hook name."""

    bogus.subplug_no_such_hook = subplug_no_such_hook
    with pytest.raises(pluggy.PluginValidationError):
        plugins.register(bogus, name="bogus")


def test_duplicate_backend_names_are_refused(fake_backend: object) -> None:
    class Again:
        @hookimpl
        def subplug_register_backends(self, register):  # type: ignore[no-untyped-def]
            register("fake", lambda options: None)

    plugins.register(Again(), name="again")
    with pytest.raises(SubplugError) as info:
        plugins.backends()
    assert info.value.reference == "duplicate-backend"


def test_loaded_plugins_lists_hooks() -> None:
    rows = {row["name"]: row for row in plugins.loaded_plugins()}
    assert "subplug_register_formats" in rows["subplug.default_plugins.formats"]["hooks"]
    assert rows["vlc"]["version"] is not None
