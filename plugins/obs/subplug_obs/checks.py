"""``subplug doctor`` checks for OBS: the program (and its Python scripting), and the
installed script's version and command."""

from __future__ import annotations

from pathlib import Path

from subplug import __version__
from subplug.types import CheckResult, CheckStatus

from subplug_obs import install

#: The oldest OBS the script is tested with (ctypes registration, obs-websocket 5).
MIN_OBS = (28, 0)


def check_obs_program() -> CheckResult:
    """Is OBS Studio installed, which version, and can it run Python scripts?"""
    program = install.find_obs()
    if program is None:
        return CheckResult(
            CheckStatus.SKIP,
            "OBS Studio not found (needed only for live captions in OBS)",
            "Install OBS Studio 28 or newer (Debian/Ubuntu: apt install obs-studio).",
        )
    version = install.obs_version(program)
    details = {"program": program, "version": version}
    summary = f"OBS Studio {version or '(version unknown)'} at {program}"
    if version and tuple(int(part) for part in version.split(".")[:2]) < MIN_OBS:
        return CheckResult(
            CheckStatus.WARN,
            summary,
            "subplug's OBS filter is tested with OBS 28 and newer: update OBS.",
            details=details,
        )
    if install.obs_python_present() is False:
        return CheckResult(
            CheckStatus.WARN,
            summary + " without Python scripting",
            "This OBS build has no obspython module, so it cannot load subplug's script: "
            "use your distribution's obs-studio package or the official build.",
            details=details,
        )
    return CheckResult(CheckStatus.OK, summary, details=details)


def check_obs_script(folder: Path | None = None) -> CheckResult:
    """Is the OBS script installed, from this version, and can it run subplug?"""
    state = install.installed(folder)
    details = {
        "folder": str(state.folder),
        "script": str(state.script),
        "script_version": state.script_version,
        "command": state.command,
    }
    if not state.script_present:
        status = CheckStatus.WARN if install.find_obs() else CheckStatus.SKIP
        return CheckResult(
            status,
            f"OBS script not installed in {state.folder}",
            "Run: subplug install obs",
            details=details,
        )
    if state.script_version != __version__:
        return CheckResult(
            CheckStatus.WARN,
            f"OBS script is from subplug {state.script_version or '(unknown)'}, "
            f"this is {__version__}",
            "Run: subplug install obs, then reload the script in OBS (Tools → Scripts → ⟳).",
            details=details,
        )
    if not state.script_current:
        return CheckResult(
            CheckStatus.WARN,
            f"OBS script {state.script} differs from subplug {__version__}'s",
            "Run: subplug install obs, then reload the script in OBS (Tools → Scripts → ⟳).",
            details=details,
        )
    if not state.command_works:
        shown = state.command[0] if state.command else "nothing (no subplug_obs.json)"
        return CheckResult(
            CheckStatus.FAIL,
            f"the OBS script would run {shown}, which is not there",
            "Run subplug install obs again from the Python environment subplug lives in.",
            details=details,
        )
    return CheckResult(
        CheckStatus.OK, f"OBS script {__version__} installed as {state.script}", details=details
    )
