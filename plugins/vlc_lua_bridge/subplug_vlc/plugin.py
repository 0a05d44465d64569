"""Hook implementations of subplug_vlc, registered through the ``subplug`` entry-point group.

* host ``vlc`` for ``subplug install|uninstall|status vlc``: puts the Lua extension,
  its bridge module and the headless interface script into the user's VLC folder;
* doctor checks: VLC itself, and the installed extension's files and version.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from subplug import __version__
from subplug.hookspecs import hookimpl
from subplug.types import DoctorCheck, HostAdapter, HostStatus

from subplug_vlc import checks, install

#: ``subplug install`` prints the message indented by two spaces; later lines match it.
MESSAGE_INDENT = "\n  "


class VlcHost:
    """The ``vlc`` host adapter.

    ``lua_dir`` defaults to VLC's user Lua folder for this platform. ``command``,
    ``env`` and ``extra_args`` end up in the generated ``subplug_config.lua``: the
    program VLC runs, extra environment variables for it, and arguments added to
    every ``subplug generate`` (tests use them to pick the fake backend).
    """

    name = "vlc"

    def __init__(
        self,
        lua_dir: Path | None = None,
        *,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._lua_dir = lua_dir
        self.command = list(command) if command else None
        self.env = dict(env or {})
        self.extra_args = list(extra_args)

    @property
    def lua_dir(self) -> Path:
        return self._lua_dir or install.vlc_lua_dir()

    def install(self) -> HostStatus:
        """Copy the Lua files into VLC's folder and write how to run subplug."""
        written = install.install_files(
            self.lua_dir, command=self.command, env=self.env, extra_args=self.extra_args
        )
        names = [str(p.relative_to(self.lua_dir)) for p in written]
        command = self.command or install.subplug_command()
        lines = [
            f"Wrote {', '.join(names)}; VLC will run: {' '.join(command)}",
            "Restart VLC, open a video, then click View > Generate EN/MN subtitles (after "
            "the first click it is a submenu: Generate EN/MN subtitles, Settings…).",
        ]
        if checks.qt_interface_present() is False:
            lines.append("VLC's Qt interface is missing: install vlc-plugin-qt for the menu.")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append(
                "VLC does not run as root: run this command as the user who watches videos."
            )
        return HostStatus(True, str(self.lua_dir), __version__, MESSAGE_INDENT.join(lines))

    def uninstall(self) -> HostStatus:
        """Remove subplug's files (and nothing else) from VLC's folder."""
        removed = install.remove_files(self.lua_dir)
        if removed:
            names = ", ".join(str(p.relative_to(self.lua_dir)) for p in removed)
            message = f"Removed {names}. Restart VLC."
        else:
            message = f"Nothing to remove: subplug's files are not in {self.lua_dir}."
        return HostStatus(False, str(self.lua_dir), None, message)

    def status(self) -> HostStatus:
        """Whether the files are there, and from which subplug version."""
        files = install.installed_files(self.lua_dir)
        present = [f for f in files if f.present]
        if not present:
            return HostStatus(
                False, str(self.lua_dir), None, "Not installed. Run: subplug install vlc"
            )
        versions = sorted({f.version or "unknown" for f in present})
        version = versions[0] if len(versions) == 1 else ", ".join(versions)
        missing = [f.path.name for f in files if not f.present]
        if missing:
            message = f"Incomplete ({', '.join(missing)} missing). Run: subplug install vlc"
        elif versions != [__version__]:
            message = (
                f"Files are from subplug {version}; this is {__version__}. Run: subplug install vlc"
            )
        else:
            message = "Up to date."
        return HostStatus(not missing, str(self.lua_dir), version, message)


@hookimpl
def subplug_register_hosts(register: Callable[[HostAdapter], None]) -> None:
    """Register the ``vlc`` host adapter."""
    register(VlcHost())


@hookimpl
def subplug_doctor_checks(register: Callable[[DoctorCheck], None]) -> None:
    """VLC itself, and subplug's extension in it."""
    register(DoctorCheck("vlc", checks.check_vlc_program, group="vlc"))
    register(DoctorCheck("vlc-extension", checks.check_vlc_extension, group="vlc"))
