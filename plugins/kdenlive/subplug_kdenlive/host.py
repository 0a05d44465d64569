"""``subplug install|uninstall|status kdenlive``: the "Generate EN/MN subtitles" clip job.

Kdenlive's custom clip jobs (read in KDE/kdenlive ``src/dialogs/clipjobmanager.cpp`` and
``src/jobs/customjobtask.cpp``) live in the KConfig file ``clipjobsettings.rc`` in
Kdenlive's data folder (``~/.local/share/kdenlive``), one entry per job id in the groups
``Ids`` (the menu text), ``Binary`` (an absolute path; Kdenlive checks it exists),
``Parameters`` (split on spaces, then ``{source}`` and ``{output}`` replaced) and
``Output`` (the extension of ``{output}``, which is the clip's folder + the part of its
file name before the first dot + that extension, with ``-0001`` added when that file
exists); newer versions also read ``EnabledTypes`` (letters ``v``, ``a``, ``i``: the clip
types the job is offered for) and ``Description``. Kdenlive reads progress from the
job's stderr lines ``percentage: N`` and adds ``{output}`` to the bin as a clip when the
job succeeds, so ``{output}`` is an ``.mlt`` clip (see :mod:`subplug_kdenlive.job`). In
Kdenlive, right-click a clip in the Project Bin > Clip Jobs > Generate EN/MN subtitles.

Custom clip jobs are not in Kdenlive 22.12 (Debian 12); the class is dated 2022 and we
take 23.04 as the first version with them. For older versions ``install`` explains the
``subplug kdenlive apply`` command instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from subplug.types import HostStatus

from subplug_kdenlive import safety

#: First Kdenlive version we install a clip job into.
CLIP_JOBS_VERSION = (23, 4)
#: Our job's id in clipjobsettings.rc (fixed, so reinstalling replaces it).
JOB_ID = "{7d5c2b8e-5b1f-4a3c-9c57-5375627c7567}"
JOB_NAME = "Generate EN/MN subtitles"
JOB_PARAMETERS = "kdenlive job {source} {output}"
#: What Kdenlive adds to the bin after the job: the clip with its subtitles drawn on (an
#: MLT file it can open; a subtitle file would fail to open as a clip).
JOB_OUTPUT = ".en-mn.mlt"
#: Offered for video and audio clips, not images.
JOB_TYPES = "va"
JOB_DESCRIPTION = (
    "Writes English/Mongolian subtitles next to the clip: NAME.en-mn.ass (both languages), "
    "NAME.en.srt and NAME.mn.srt, and adds NAME.en-mn.mlt to the bin: the clip with the "
    "subtitles drawn on. Import a subtitle file with Project > Subtitles > Import Subtitle "
    "File to edit them."
)
GROUPS = ("Ids", "Binary", "Parameters", "Output", "EnabledTypes", "Description")
APPLY_HINT = (
    "Use: subplug kdenlive apply PROJECT.kdenlive (save and close the project in Kdenlive "
    "first); it writes the subtitles into the project in the format your Kdenlive reads."
)


def data_folder() -> Path:
    """Kdenlive's data folder (``QStandardPaths::AppDataLocation``)."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "kdenlive"


def settings_file() -> Path:
    return data_folder() / "clipjobsettings.rc"


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    numbers = re.findall(r"\d+", text)
    return tuple(int(n) for n in numbers[:3]) or None


def kdenlive_version() -> str | None:
    """The installed Kdenlive's version: ``kdenlive --version`` (run without a display,
    ``QT_QPA_PLATFORM=offscreen``), else the Debian package's version, else ``None``."""
    binary = shutil.which("kdenlive")
    if binary is not None:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        try:
            out = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, timeout=20, env=env
            )
            match = re.search(r"kdenlive\s+(\d+\.\d+(?:\.\d+)?)", out.stdout + out.stderr)
            if match:
                return match.group(1)
        except (OSError, subprocess.TimeoutExpired):
            pass
    if shutil.which("dpkg-query"):
        try:
            out = subprocess.run(
                ["dpkg-query", "-W", "-f=${Status}|${Version}", "kdenlive"],
                capture_output=True,
                text=True,
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        status, _, version = out.stdout.partition("|")
        if out.returncode == 0 and "installed" in status and version:
            version = version.split(":", 1)[-1]
            match = re.match(r"\d+\.\d+(?:\.\d+)?", version)
            return match.group(0) if match else None
    return None


def job_parameters(env: dict[str, str] | None = None) -> str:
    """The job's parameters: :data:`JOB_PARAMETERS`, with ``--home`` when
    ``SUBPLUG_HOME`` is set (percent-encoded: Kdenlive splits parameters at spaces), so
    the job finds the same models when Kdenlive is started from the desktop, whose
    environment has no ``SUBPLUG_HOME``."""
    from urllib.parse import quote

    home = (os.environ if env is None else env).get("SUBPLUG_HOME")
    if not home:
        return JOB_PARAMETERS
    folder = Path(home).expanduser().absolute()
    return JOB_PARAMETERS.replace(" {source}", f" --home {quote(str(folder))} {{source}}", 1)


def job_entries() -> dict[str, str]:
    """Our job's entries (group → value) as ``install`` writes them now."""
    return {
        "Ids": JOB_NAME,
        "Binary": subplug_binary(),
        "Parameters": job_parameters(),
        "Output": JOB_OUTPUT,
        "EnabledTypes": JOB_TYPES,
        "Description": JOB_DESCRIPTION,
    }


def subplug_binary() -> str:
    """The absolute path of the ``subplug`` command Kdenlive should run."""
    beside = Path(sys.executable).parent / "subplug"
    if beside.exists():
        return str(beside)
    found = shutil.which("subplug")
    return str(Path(found).resolve()) if found else str(beside)


# --------------------------------------------------------------- KConfig editing


def read_groups(text: str) -> list[tuple[str | None, list[str]]]:
    """A KConfig file as ``[(group, lines)]`` (group ``None`` before the first header),
    keeping every line as it is."""
    groups: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines():
        header = re.fullmatch(r"\s*\[([^\]]*)\]\s*", line)
        if header:
            groups.append((header.group(1), []))
        else:
            groups[-1][1].append(line)
    return groups


def write_groups(groups: list[tuple[str | None, list[str]]]) -> str:
    out: list[str] = []
    for name, lines in groups:
        if name is not None:
            out.append(f"[{name}]")
        out.extend(lines)
    return "\n".join(out).strip("\n") + "\n"


def _escape(value: str) -> str:
    """KConfig value escaping (backslash, leading space, newline)."""
    value = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    return "\\s" + value[1:] if value.startswith(" ") else value


def set_job(text: str, entries: dict[str, str] | None) -> str:
    """``text`` with our job's entries set (``entries``: group → value) or removed
    (``None``); every other line is kept."""
    groups = read_groups(text)
    key = re.compile(rf"\s*{re.escape(JOB_ID)}\s*=")
    for _, lines in groups:
        lines[:] = [line for line in lines if not key.match(line)]
    if entries:
        for group, value in entries.items():
            target = next((lines for name, lines in groups if name == group), None)
            if target is None:
                target = []
                groups.append((group, target))
            while target and not target[-1].strip():
                target.pop()
            target.append(f"{JOB_ID}={_escape(value)}")
            target.append("")
    return write_groups(groups)


def installed_entries(text: str) -> dict[str, str]:
    """Our job's entries in a clipjobsettings.rc text."""
    found: dict[str, str] = {}
    for name, lines in read_groups(text):
        for line in lines:
            key, sep, value = line.partition("=")
            if sep and key.strip() == JOB_ID and name is not None:
                found[name] = value
    return found


class KdenliveHost:
    """The ``kdenlive`` host adapter."""

    name = "kdenlive"

    def _supports_jobs(self, version: str | None) -> bool:
        parsed = _version_tuple(version)
        return parsed is not None and parsed[:2] >= CLIP_JOBS_VERSION

    def status(self) -> HostStatus:
        version = kdenlive_version()
        path = settings_file()
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        entries = installed_entries(text)
        if entries:
            binary = entries.get("Binary", "")
            if not Path(binary).exists():
                message = (
                    f"clip job installed but {binary} is missing: run subplug install kdenlive"
                )
            elif entries.get("Output") != JOB_OUTPUT:
                message = (
                    "clip job installed by an older subplug (Kdenlive shows 'Cannot open file' "
                    "after each run): run subplug install kdenlive"
                )
            else:
                message = f"clip job '{JOB_NAME}' runs {binary} {entries.get('Parameters', '')}"
            return HostStatus(True, str(path), version, message)
        if version is None:
            return HostStatus(False, None, None, "Kdenlive is not installed. " + APPLY_HINT)
        if not self._supports_jobs(version):
            return HostStatus(
                False, None, version, f"Kdenlive {version} has no custom clip jobs. " + APPLY_HINT
            )
        return HostStatus(
            False,
            None,
            version,
            "Run 'subplug install kdenlive' to add the clip job. " + APPLY_HINT,
        )

    def install(self) -> HostStatus:
        version = kdenlive_version()
        if version is None or not self._supports_jobs(version):
            what = "is not installed" if version is None else f"{version} has no custom clip jobs"
            return HostStatus(
                False,
                None,
                version,
                f"Nothing installed: Kdenlive {what} (they came in "
                f"{CLIP_JOBS_VERSION[0]}.{CLIP_JOBS_VERSION[1]:02d}). " + APPLY_HINT,
            )
        path = settings_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        entries = job_entries()
        safety.write_atomic(path, set_job(text, entries).encode("utf-8"))
        home = (
            " It uses the models in SUBPLUG_HOME (recorded in the job)."
            if "--home" in entries["Parameters"]
            else ""
        )
        return HostStatus(
            True,
            str(path),
            version,
            f"Added the clip job '{JOB_NAME}': restart Kdenlive, then right-click a clip in "
            "the Project Bin > Clip Jobs. It writes NAME.en-mn.ass, NAME.en.srt and "
            "NAME.mn.srt next to the clip and adds NAME.en-mn.mlt (the clip with the "
            "subtitles drawn on) to the bin; to edit the subtitles, import NAME.en-mn.ass "
            "with Project > Subtitles > Import Subtitle File. To put subtitles straight into "
            f"a saved project: subplug kdenlive apply.{home}",
        )

    def uninstall(self) -> HostStatus:
        path = settings_file()
        version = kdenlive_version()
        if not path.exists() or not installed_entries(path.read_text(encoding="utf-8")):
            return HostStatus(False, None, version, "The clip job was not installed.")
        safety.write_atomic(path, set_job(path.read_text(encoding="utf-8"), None).encode("utf-8"))
        return HostStatus(False, str(path), version, f"Removed the clip job '{JOB_NAME}'.")
