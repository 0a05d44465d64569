"""Hook implementations of subplug_obs, registered through the ``subplug`` entry-point group.

* host ``obs`` for ``subplug install|uninstall|status obs``: copies the OBS script (the
  audio filter "EN/MN Subtitles (subplug)") and its config into a folder of OBS's
  configuration, and says how to add it in OBS;
* doctor checks: OBS itself, and the installed script's version and command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from subplug import __version__
from subplug.hookspecs import hookimpl
from subplug.types import DoctorCheck, HostAdapter, HostStatus

from subplug_obs import checks, install


class ObsHost:
    """The ``obs`` host adapter.

    ``folder`` defaults to :func:`subplug_obs.install.script_dir`; ``command`` is what
    the script runs as ``subplug`` (default: this Python with ``-m subplug``).
    """

    name = "obs"

    def __init__(self, folder: Path | None = None, *, command: Sequence[str] | None = None):
        self._folder = folder
        self.command = list(command) if command else None

    @property
    def folder(self) -> Path:
        return self._folder or install.script_dir()

    def install(self) -> HostStatus:
        """Copy the script and its config, and say where to add it in OBS."""
        written = install.install_files(self.folder, self.command)
        script = written[0]
        lines = [
            f"Installed {script} (and {written[1].name}).",
            "In OBS: Tools → Scripts → + → choose the file above (once; OBS remembers it).",
            'Then on a microphone or media source: Filters → + → "EN/MN Subtitles '
            '(subplug)", and pick an English and a Mongolian text source in its settings.',
        ]
        if install.obs_python_present() is False:
            lines.append(
                "This OBS has no Python scripting (obspython): install your "
                "distribution's obs-studio package or the official build."
            )
        return HostStatus(True, str(script), __version__, "\n".join(lines))

    def uninstall(self) -> HostStatus:
        """Remove subplug's script and config (and nothing else)."""
        removed = install.remove_files(self.folder)
        if removed:
            message = (
                "Removed " + ", ".join(str(p) for p in removed) + ". "
                "Also remove the script in OBS (Tools → Scripts → −)."
            )
        else:
            message = f"Nothing to remove: subplug's OBS script is not in {self.folder}."
        return HostStatus(False, str(self.folder), None, message)

    def status(self) -> HostStatus:
        """Whether the script is there, from which version, and whether it is current."""
        state = install.installed(self.folder)
        if not state.script_present:
            return HostStatus(
                False, str(state.script), None, "Not installed. Run: subplug install obs"
            )
        if not state.script_current:
            message = f"The script differs from subplug {__version__}'s. Run: subplug install obs"
        elif not state.command_works:
            message = "Its config does not point at a working subplug. Run: subplug install obs"
        else:
            message = "Up to date. Add it in OBS with Tools → Scripts → + if not done yet."
        return HostStatus(True, str(state.script), state.script_version, message)


@hookimpl
def subplug_register_hosts(register: Callable[[HostAdapter], None]) -> None:
    """Register the ``obs`` host adapter."""
    register(ObsHost())


@hookimpl
def subplug_doctor_checks(register: Callable[[DoctorCheck], None]) -> None:
    """OBS itself, and subplug's script for it."""
    register(DoctorCheck("obs", checks.check_obs_program, group="obs"))
    register(DoctorCheck("obs-script", checks.check_obs_script, group="obs"))
