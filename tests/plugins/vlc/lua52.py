"""Run Lua code in the Lua 5.2 library VLC 3 itself links (liblua5.2), through ctypes.

This drives ``subplug_bridge.lua`` without VLC: the functions that need no player (JSON,
URIs, quoting, settings, the background job) run in the same Lua as inside VLC.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from pathlib import Path
from typing import Any

LIBRARY_NAMES = ("liblua5.2.so.0", "liblua5.2.so", "lua5.2")


def find_library() -> str | None:
    """The Lua 5.2 shared library VLC's Lua plugin uses, or ``None``."""
    for name in LIBRARY_NAMES:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    return ctypes.util.find_library("lua5.2")


def literal(value: str | bytes) -> str:
    """A Lua string literal holding exactly ``value``'s bytes (UTF-8 for text)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    out = ['"']
    for byte in data:
        char = chr(byte)
        if 32 <= byte < 127 and char not in '"\\':
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    out.append('"')
    return "".join(out)


class LuaError(RuntimeError):
    """A Lua chunk failed to load or raised an error."""


class Lua:
    """One Lua state with the standard libraries and ``modules`` on ``package.path``."""

    def __init__(self, library: str, modules: Path) -> None:
        lib = ctypes.CDLL(library)
        lib.luaL_newstate.restype = ctypes.c_void_p
        lib.luaL_openlibs.argtypes = [ctypes.c_void_p]
        lib.luaL_loadstring.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.luaL_loadstring.restype = ctypes.c_int
        lib.lua_pcallk.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        lib.lua_pcallk.restype = ctypes.c_int
        lib.lua_tolstring.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_size_t),
        ]
        lib.lua_tolstring.restype = ctypes.POINTER(ctypes.c_char)
        lib.lua_settop.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.lua_close.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._state = lib.luaL_newstate()
        lib.luaL_openlibs(self._state)
        self.run(f"package.path = {literal(str(modules) + '/?.lua')} .. ';' .. package.path")

    def close(self) -> None:
        """Free the Lua state."""
        if self._state:
            self._lib.lua_close(self._state)
            self._state = None

    def _top_bytes(self) -> bytes | None:
        size = ctypes.c_size_t()
        pointer = self._lib.lua_tolstring(self._state, -1, ctypes.byref(size))
        if not pointer:
            return None
        return ctypes.string_at(pointer, size.value)

    def run(self, code: str) -> bytes | None:
        """Run a chunk; return its first result as bytes (``None`` if not a string)."""
        lib = self._lib
        if lib.luaL_loadstring(self._state, code.encode("utf-8")) != 0:
            message = self._top_bytes()
            lib.lua_settop(self._state, 0)
            raise LuaError((message or b"?").decode("utf-8", "replace"))
        if lib.lua_pcallk(self._state, 0, 1, 0, 0, None) != 0:
            message = self._top_bytes()
            lib.lua_settop(self._state, 0)
            raise LuaError((message or b"?").decode("utf-8", "replace"))
        result = self._top_bytes()
        lib.lua_settop(self._state, 0)
        return result

    def json(self, expression: str, prelude: str = "") -> Any:
        """Evaluate ``expression`` and return it through the bridge's JSON encoder.

        ``bridge`` is the bridge module; ``pack(value, message)`` turns a Lua
        "value or nil, message" return into ``{"value": …, "error": …}``.
        """
        code = (
            'local bridge = require("subplug_bridge")\n'
            "local function pack(value, message) return { value = value, error = message } end\n"
            f"{prelude}\n"
            f"return bridge.json_encode({expression})"
        )
        raw = self.run(code)
        assert raw is not None, "the chunk returned no string"
        return json.loads(raw.decode("utf-8"))
