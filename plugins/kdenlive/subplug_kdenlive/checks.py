"""``subplug doctor`` checks for the Kdenlive adapter: melt and Kdenlive itself."""

from __future__ import annotations

from pathlib import Path

from subplug.types import CheckResult, CheckStatus, DoctorCheck

from subplug_kdenlive import host
from subplug_kdenlive.audio import melt_version


def check_melt() -> CheckResult:
    """melt renders a project's timeline sound (``apply --timeline``)."""
    version = melt_version()
    if version is None:
        return CheckResult(
            CheckStatus.WARN,
            "melt not found: 'kdenlive apply' can only use --clip",
            "Install melt (Debian/Ubuntu: sudo apt install melt).",
        )
    return CheckResult(CheckStatus.OK, f"melt {version}", details={"version": version})


def check_kdenlive() -> CheckResult:
    """Kdenlive's version, and whether the clip job is (or can be) installed."""
    version = host.kdenlive_version()
    if version is None:
        return CheckResult(
            CheckStatus.SKIP,
            "Kdenlive not installed",
            "'subplug kdenlive apply' works on project files without Kdenlive.",
        )
    status = host.KdenliveHost().status()
    entries = {}
    path = host.settings_file()
    if path.exists():
        entries = host.installed_entries(path.read_text(encoding="utf-8"))
    outdated = entries and (
        not Path(entries.get("Binary", "")).exists() or entries.get("Output") != host.JOB_OUTPUT
    )
    if outdated:
        return CheckResult(
            CheckStatus.WARN,
            f"Kdenlive {version}: {status.message}",
            "Run: subplug install kdenlive",
        )
    return CheckResult(
        CheckStatus.OK,
        f"Kdenlive {version}: {status.message}",
        details={"version": version, "clip_job": bool(entries)},
    )


def doctor_checks() -> list[DoctorCheck]:
    return [
        DoctorCheck("melt", check_melt, group="kdenlive"),
        DoctorCheck("kdenlive", check_kdenlive, group="kdenlive"),
    ]
