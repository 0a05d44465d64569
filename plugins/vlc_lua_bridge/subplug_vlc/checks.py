"""Finding VLC and checking subplug's VLC integration (``subplug doctor``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from subplug import __version__
from subplug.types import CheckResult, CheckStatus

from subplug_vlc import install

VERSION_RE = re.compile(r"VLC (?:media player |version )?(\d+\.\d+\.\d+)")
#: Where Debian, Fedora, Arch and friends put VLC's Qt interface plugin.
QT_PLUGIN_GLOBS = (
    "/usr/lib/*/vlc/plugins/gui/libqt_plugin.so",
    "/usr/lib/vlc/plugins/gui/libqt_plugin.so",
    "/usr/lib64/vlc/plugins/gui/libqt_plugin.so",
    "/usr/local/lib/vlc/plugins/gui/libqt_plugin.so",
)
MAC_VLC = "/Applications/VLC.app/Contents/MacOS/VLC"


def find_vlc() -> str | None:
    """The VLC program on this machine, or ``None``."""
    for name in ("vlc", "cvlc"):
        found = shutil.which(name)
        if found:
            return found
    if sys.platform == "darwin" and os.path.exists(MAC_VLC):
        return MAC_VLC
    if sys.platform.startswith("win"):
        for root in (os.environ.get("PROGRAMFILES"), os.environ.get("PROGRAMFILES(X86)")):
            if root and os.path.exists(os.path.join(root, "VideoLAN", "VLC", "vlc.exe")):
                return os.path.join(root, "VideoLAN", "VLC", "vlc.exe")
    return None


def libvlc_version() -> str | None:
    """VLC's version from libvlc itself (works where ``vlc`` refuses to run, e.g. as root)."""
    name = ctypes.util.find_library("vlc")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.libvlc_get_version.restype = ctypes.c_char_p
        raw = lib.libvlc_get_version()
    except (OSError, AttributeError):
        return None
    match = re.match(rb"(\d+\.\d+\.\d+)", raw or b"")
    return match.group(1).decode() if match else None


def vlc_version(program: str) -> str | None:
    """The version ``program --version`` reports, falling back on libvlc."""
    try:
        done = subprocess.run(
            [program, "--version"],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "DISPLAY": ""},
        )
        match = VERSION_RE.search(done.stdout + done.stderr)
        if match:
            return match.group(1)
    except (OSError, subprocess.SubprocessError):
        pass
    return libvlc_version()


def qt_interface_present() -> bool | None:
    """Whether VLC's Qt interface (needed for the View menu extensions) is installed.

    ``None`` where this cannot be told from files (Windows and macOS builds have it).
    """
    if not sys.platform.startswith("linux"):
        return None
    return any(glob.glob(pattern) for pattern in QT_PLUGIN_GLOBS)


def check_vlc_program() -> CheckResult:
    """Is VLC installed, which version, and does it have the Qt interface?"""
    program = find_vlc()
    if program is None:
        return CheckResult(
            CheckStatus.SKIP,
            "VLC not found (needed only for the VLC extension)",
            "Install VLC 3 or newer (Debian/Ubuntu: apt install vlc).",
        )
    version = vlc_version(program)
    details = {"program": program, "version": version}
    summary = f"VLC {version or '(version unknown)'} at {program}"
    if version and int(version.split(".")[0]) < 3:
        return CheckResult(
            CheckStatus.WARN, summary, "subplug's extension needs VLC 3 or newer.", details=details
        )
    if qt_interface_present() is False:
        return CheckResult(
            CheckStatus.WARN,
            summary + " without its Qt interface",
            "The 'Generate EN/MN subtitles' menu lives in VLC's Qt interface: "
            "install it (Debian/Ubuntu: apt install vlc-plugin-qt).",
            details=details,
        )
    return CheckResult(CheckStatus.OK, summary, details=details)


def check_vlc_extension(lua_dir: Path | None = None) -> CheckResult:
    """Are subplug's Lua files installed, from this version, and can they run subplug?"""
    lua_dir = lua_dir or install.vlc_lua_dir()
    files = install.installed_files(lua_dir)
    details = {"folder": str(lua_dir), "files": {str(f.path): f.version for f in files}}
    present = [f for f in files if f.present]
    if not present:
        status = CheckStatus.WARN if find_vlc() else CheckStatus.SKIP
        return CheckResult(
            status,
            f"VLC extension not installed in {lua_dir}",
            "Run: subplug install vlc",
            details=details,
        )
    missing = [f.path.name for f in files if not f.present]
    if missing:
        return CheckResult(
            CheckStatus.FAIL,
            f"VLC extension incomplete: {', '.join(missing)} missing",
            "Run: subplug install vlc",
            details=details,
        )
    versions = {f.version for f in files}
    if versions != {__version__}:
        found = ", ".join(sorted(str(v) for v in versions))
        return CheckResult(
            CheckStatus.WARN,
            f"VLC extension files are from subplug {found}, this is {__version__}",
            "Run: subplug install vlc (then restart VLC)",
            details=details,
        )
    changed = install.changed_files(lua_dir)
    if changed:
        return CheckResult(
            CheckStatus.WARN,
            f"VLC extension files differ from subplug {__version__}'s: "
            + ", ".join(p.name for p in changed),
            "Run: subplug install vlc (then restart VLC)",
            details=details,
        )
    command = install.configured_command(lua_dir)
    if not command or not Path(command[0]).exists() and shutil.which(command[0]) is None:
        return CheckResult(
            CheckStatus.FAIL,
            f"the VLC extension runs {command[0] if command else 'nothing'}, which is gone",
            "Run subplug install vlc again from the Python environment subplug lives in.",
            details=details,
        )
    details["command"] = command
    return CheckResult(
        CheckStatus.OK, f"VLC extension {__version__} installed in {lua_dir}", details=details
    )
