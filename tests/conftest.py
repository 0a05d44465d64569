"""Fixtures shared by every test: an isolated subplug home, a fresh plugin manager,
the fake backend registered as a real plugin, and the shared fixtures folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from subplug import plugins
from subplug.testing import FakeBackendPlugin

REPO = Path(__file__).resolve().parents[1]
#: Real third-party test data (origins and licences in tests/fixtures/SOURCES.md).
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(autouse=True)
def subplug_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own model cache and journal folder."""
    home = tmp_path_factory.mktemp("subplug-home")
    monkeypatch.setenv("SUBPLUG_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A new plugin manager per test, so registrations never leak between tests."""
    monkeypatch.delenv("SUBPLUG_PLUGINS", raising=False)
    monkeypatch.delenv("SUBPLUG_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("SUBPLUG_DISABLED_PLUGINS", raising=False)
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()


@pytest.fixture
def fake_backend() -> FakeBackendPlugin:
    """The fake backend registered as plugin ``fake-backend`` (backend name ``fake``)."""
    plugin = FakeBackendPlugin()
    plugins.register(plugin, name="fake-backend")
    return plugin


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The folder holding ``fixtures/`` (the repository's ``tests``): real media,
    projects and subtitles with their licences, part of every checkout."""
    return FIXTURES.parent
