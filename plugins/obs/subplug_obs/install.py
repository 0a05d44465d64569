"""Put the OBS script where a user can add it, and find OBS itself.

OBS has no folder it loads scripts from by itself: a user adds a script once with
Tools → Scripts → "+", and OBS remembers its path in the scene collection. So
``subplug install obs`` copies the script into a stable folder of OBS's own
configuration folder, next to ``subplug_obs.json`` (how the script runs ``subplug``:
the absolute path of this Python and ``-m subplug``, because OBS started from a desktop
menu may not have subplug on its ``PATH``), and prints the path to add.

OBS's configuration folder: ``$XDG_CONFIG_HOME/obs-studio`` on Linux (Flatpak:
``~/.var/app/com.obsproject.Studio/config/obs-studio``), ``%APPDATA%\\obs-studio`` on
Windows, ``~/Library/Application Support/obs-studio`` on macOS. ``SUBPLUG_OBS_SCRIPT_DIR``
overrides the script folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from subplug import __version__
from subplug.hosts import write_host_files

SCRIPT_NAME = "subplug_obs_filter.py"
CONFIG_NAME = "subplug_obs.json"
FOLDER_NAME = "subplug"
FLATPAK_ID = "com.obsproject.Studio"
VERSION_LINE = re.compile(r'^SCRIPT_VERSION\s*=\s*["\']([^"\']+)["\']', re.MULTILINE)
OBS_VERSION = re.compile(r"OBS Studio - (\d+\.\d+(?:\.\d+)?)")
#: Where Linux distributions put OBS's Python scripting module.
OBSPYTHON_GLOBS = (
    "/usr/lib/*/obs-scripting/obspython.py",
    "/usr/lib/obs-scripting/obspython.py",
    "/usr/lib64/obs-scripting/obspython.py",
    "/usr/local/lib/obs-scripting/obspython.py",
    "/usr/local/lib/*/obs-scripting/obspython.py",
)


def obs_config_dir(
    platform: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None
) -> Path:
    """OBS Studio's configuration folder on ``platform`` (default: this one).

    On Linux the Flatpak's folder is used when it exists and the native one does not.
    """
    platform = sys.platform if platform is None else platform
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if platform.startswith("win"):
        appdata = env.get("APPDATA") or str(home / "AppData" / "Roaming")
        return Path(appdata) / "obs-studio"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "obs-studio"
    native = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "obs-studio"
    flatpak = home / ".var" / "app" / FLATPAK_ID / "config" / "obs-studio"
    if not native.exists() and flatpak.exists():
        return flatpak
    return native


def script_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder ``subplug install obs`` puts the script in."""
    env = os.environ if env is None else env
    if env.get("SUBPLUG_OBS_SCRIPT_DIR"):
        return Path(env["SUBPLUG_OBS_SCRIPT_DIR"]).expanduser()
    return obs_config_dir(env=env) / FOLDER_NAME


def subplug_command() -> list[str]:
    """How the OBS script should run subplug: this very Python with ``-m subplug``."""
    return [str(Path(sys.executable).absolute()), "-m", "subplug"]


def packaged_script() -> str:
    """The text of the OBS script shipped with this subplug."""
    return (resources.files("subplug_obs") / "obs" / SCRIPT_NAME).read_text(encoding="utf-8")


def script_version(text: str) -> str | None:
    """The ``SCRIPT_VERSION`` a script's text declares, or ``None``."""
    match = VERSION_LINE.search(text)
    return match.group(1) if match else None


def render_config(command: Sequence[str], version: str = __version__) -> str:
    """The text of ``subplug_obs.json``."""
    return json.dumps({"version": version, "command": list(command)}, indent=2) + "\n"


@dataclass(frozen=True)
class Installed:
    """What ``subplug install obs`` left in the script folder, as found on disk."""

    folder: Path
    script: Path
    script_present: bool
    script_version: str | None
    script_current: bool
    """The installed script is byte-for-byte the one this subplug ships."""
    command: list[str] | None
    """The command ``subplug_obs.json`` runs (``None``: missing or unreadable)."""

    @property
    def command_works(self) -> bool:
        if not self.command:
            return False
        program = self.command[0]
        return Path(program).is_file() or shutil.which(program) is not None


def installed(folder: Path | None = None) -> Installed:
    """The state of the script folder."""
    folder = script_dir() if folder is None else folder
    script = folder / SCRIPT_NAME
    try:
        text = script.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = None
    command: list[str] | None = None
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        value = config.get("command") if isinstance(config, dict) else None
        if isinstance(value, list) and value and all(isinstance(c, str) for c in value):
            command = value
    except (OSError, ValueError):
        pass
    return Installed(
        folder=folder,
        script=script,
        script_present=text is not None,
        script_version=script_version(text) if text is not None else None,
        script_current=text == packaged_script(),
        command=command,
    )


def _ours(path: Path) -> bool:
    """Whether ``path`` is a file subplug wrote (so it may be replaced without a backup)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.name == SCRIPT_NAME:
        return "subplug_en_mn_filter" in text
    try:
        return isinstance(json.loads(text), dict) and "command" in json.loads(text)
    except ValueError:
        return False


def install_files(folder: Path, command: Sequence[str] | None = None) -> list[Path]:
    """Copy the script and write its config into ``folder``; return the paths written.

    A file of the same name that subplug did not write is kept as ``NAME.bak``.
    """
    texts = [
        (folder / SCRIPT_NAME, packaged_script()),
        (folder / CONFIG_NAME, render_config(command or subplug_command())),
    ]
    return write_host_files(
        texts,
        ours=_ours,
        reference="obs-install-failed",
        hint="Check the folder's permissions, or set SUBPLUG_OBS_SCRIPT_DIR to a writable folder.",
    )


def remove_files(folder: Path) -> list[Path]:
    """Remove subplug's script and config from ``folder`` (and the folder if then
    empty); return what was removed. Files subplug did not write are left alone."""
    removed = []
    for name in (SCRIPT_NAME, CONFIG_NAME):
        path = folder / name
        if path.is_file() and _ours(path):
            path.unlink()
            removed.append(path)
    cache = folder / "__pycache__"
    if cache.is_dir():
        shutil.rmtree(cache, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: the user keeps their files
        folder.rmdir()
    return removed


# -------------------------------------------------------------------- OBS itself


def find_obs() -> str | None:
    """The OBS Studio program on this machine, or ``None``."""
    found = shutil.which("obs")
    if found:
        return found
    candidates = []
    if sys.platform == "darwin":
        candidates.append("/Applications/OBS.app/Contents/MacOS/OBS")
    if sys.platform.startswith("win"):
        for variable in ("PROGRAMFILES", "PROGRAMFILES(X86)"):  # case-insensitive there
            root = os.environ.get(variable)
            if root:
                candidates.append(os.path.join(root, "obs-studio", "bin", "64bit", "obs64.exe"))
    return next((path for path in candidates if os.path.exists(path)), None)


def obs_version(program: str) -> str | None:
    """The version ``obs --version`` reports (it needs no display)."""
    try:
        done = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    match = OBS_VERSION.search(done.stdout + done.stderr)
    return match.group(1) if match else None


def obs_python_present() -> bool | None:
    """Whether OBS's Python scripting module is installed (``None``: cannot tell from
    files on this platform; Windows and macOS builds ship it and need a Python set in
    Tools → Scripts → Python Settings)."""
    if not sys.platform.startswith("linux"):
        return None
    import glob

    return any(glob.glob(pattern) for pattern in OBSPYTHON_GLOBS)
