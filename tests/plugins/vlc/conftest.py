"""Fixtures for the VLC adapter's tests.

* ``lua``: a Lua 5.2 state (the library VLC 3 links) with the bridge module on its path.
* ``vlc_session``: the real VLC run as a normal user (see ``vlc_session.py``), a tiny
  model, and a test video with speech.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lua52 import Lua, find_library
from vlc_session import (
    LUA_ROOT,
    VlcSession,
    VlcUser,
    can_run_python,
    current_user,
    cvlc,
    make_test_video,
    open_python_for,
    restore_modes,
    root_user,
)


@pytest.fixture(scope="session")
def lua_library() -> str:
    """Name of liblua5.2 (installed with VLC's Lua plugin)."""
    found = find_library()
    if found is None:
        pytest.skip("liblua5.2 not found (it comes with VLC's Lua plugin, vlc-plugin-base)")
    return found


@pytest.fixture
def lua(lua_library: str) -> Iterator[Lua]:
    """A fresh Lua state where ``require("subplug_bridge")`` loads the shipped module."""
    state = Lua(lua_library, LUA_ROOT / "modules")
    yield state
    state.close()


@pytest.fixture(scope="session")
def vlc_user() -> Iterator[VlcUser]:
    """A normal user that can run VLC and this Python."""
    if cvlc() is None:
        pytest.skip("VLC not installed (Debian: vlc-bin vlc-plugin-base)")
    if os.geteuid() != 0:
        user = current_user()
        yield user
        return
    user = root_user()
    opened = open_python_for(user)
    try:
        problem = can_run_python(user)
        if problem:
            pytest.fail(problem)
        yield user
    finally:
        restore_modes(opened)


@pytest.fixture(scope="session")
def vlc_session(vlc_user: VlcUser) -> Iterator[VlcSession]:
    """Everything the host tests share, in a folder removed at the end."""
    from subplug.testing.media import speech_clip
    from subplug.testing.tiny import build_tiny_model

    root = Path(tempfile.mkdtemp(prefix="subplug-vlc-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        model = build_tiny_model(root / "tiny model")
        clip = speech_clip(root / "speech.wav", ("Hello world.", "This is a test of subtitles."))
        media = make_test_video(root / "media.mp4", clip.path)
        for path in (model, *model.iterdir(), media):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        yield VlcSession(vlc_user, root, model, media)
    finally:
        shutil.rmtree(root, ignore_errors=True)
