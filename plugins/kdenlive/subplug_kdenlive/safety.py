"""Never damage a user's project: refuse open projects, back up, write atomically.

How Kdenlive shows that a project is open (read in KDE/kdenlive and KDE/kcoreaddons):
Kdenlive writes no lock next to the project. While a project has unsaved changes it
autosaves through ``KAutoSaveFile`` into
``$XDG_DATA_HOME/stalefiles/kdenlive/`` (``~/.local/share/...``): the file name is the
percent-encoded project name, three random characters, ``file_``, the percent-encoded
folder and eight random characters; next to it a ``QLockFile`` ``<name>.lock`` holding
the PID, the application name and the host name. On a clean close both are removed;
after a crash the autosave stays and Kdenlive offers to restore it.

So a project counts as open when a live Kdenlive holds an autosave lock for it, when an
autosave for it is recent (or newer than the project), or when a running Kdenlive was
started with it. A project that is open but still unmodified leaves no trace; that is
why ``apply`` also warns whenever any Kdenlive is running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote

from subplug.errors import SubplugError

#: An autosave younger than this (seconds) means "probably open right now".
RECENT_AUTOSAVE = 15 * 60
#: KAutoSaveFilePrivate::NamePadding.
NAME_PADDING = 8


@dataclass(frozen=True)
class OpenCheck:
    """Why a project looks open in Kdenlive (``reasons``) and softer concerns."""

    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def is_open(self) -> bool:
        return bool(self.reasons)


def stale_folder() -> Path:
    """Where Kdenlive's ``KAutoSaveFile`` autosaves live."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "stalefiles" / "kdenlive"


def autosave_matches(name: str, project: Path) -> bool:
    """``staleMatchesManaged`` from KCoreAddons: is autosave file ``name`` for
    ``project``?"""
    if len(name) < NAME_PADDING + 4 or name.endswith(".lock"):
        return False
    separator = name[-3:]
    position = name.find(separator)
    if position <= 0 or unquote(name[:position]) != project.name:
        return False
    path_position = name.find("_", position)
    if path_position < 0:
        return False
    encoded_folder = name[path_position + 1 : len(name) - NAME_PADDING]
    return quote(str(project), safe="").startswith(encoded_folder)


def autosave_name(project: Path, junk: str = "abcdefgh") -> str:
    """The name ``KAutoSaveFile`` gives an autosave of ``project`` (``junk`` stands for
    its eight random characters). Used by tests and to explain the format."""
    folder = quote(str(project.parent), safe="")
    return f"{quote(project.name, safe='')}{junk[-3:]}file_{folder}{junk}"


def lock_owner(lock: Path) -> tuple[int, str, str] | None:
    """(pid, application, host) from a ``QLockFile``, or ``None`` if unreadable."""
    try:
        lines = lock.read_text(encoding="utf-8", errors="replace").splitlines()
        return int(lines[0]), lines[1] if len(lines) > 1 else "", lines[2] if len(lines) > 2 else ""
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kdenlive_processes(proc: Path = Path("/proc")) -> list[tuple[int, list[str]]]:
    """Running Kdenlive processes and their arguments (Linux ``/proc``; empty elsewhere)."""
    found: list[tuple[int, list[str]]] = []
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        argv = [a.decode("utf-8", "replace") for a in args if a]
        if argv and Path(argv[0]).name == "kdenlive":
            found.append((int(entry.name), argv))
    return found


def check_open(project: Path, *, now: float | None = None, proc: Path = Path("/proc")) -> OpenCheck:
    """Look for signs that Kdenlive has ``project`` open."""
    project = project.resolve()
    now = time.time() if now is None else now
    reasons: list[str] = []
    warnings: list[str] = []
    folder = stale_folder()
    try:
        project_mtime = project.stat().st_mtime
    except OSError:
        project_mtime = 0.0
    if folder.is_dir():
        for autosave in sorted(folder.iterdir()):
            if not autosave.is_file() or not autosave_matches(autosave.name, project):
                continue
            owner = lock_owner(autosave.with_name(autosave.name + ".lock"))
            age = now - autosave.stat().st_mtime
            if owner is not None and owner[2] in ("", socket.gethostname()) and pid_alive(owner[0]):
                reasons.append(
                    f"Kdenlive (process {owner[0]}) has it open with autosaved changes ({autosave})"
                )
            elif age < RECENT_AUTOSAVE or autosave.stat().st_mtime > project_mtime:
                reasons.append(
                    f"Kdenlive autosaved changes to it {age / 60:.0f} min ago that are not "
                    f"in the project file ({autosave}); it may be open, or Kdenlive crashed"
                )
            else:
                warnings.append(
                    f"an old Kdenlive autosave of this project exists ({autosave}); if Kdenlive "
                    "offers to restore it, say no, or the subtitles will be lost"
                )
    for pid, argv in kdenlive_processes(proc):
        if any(_same_file(arg, project) for arg in argv[1:]):
            reasons.append(f"Kdenlive (process {pid}) was started with this project")
        else:
            warnings.append(
                f"Kdenlive is running (process {pid}); if this project is open there, close "
                "it before reopening, because Kdenlive overwrites the project when it saves"
            )
    return OpenCheck(tuple(reasons), tuple(dict.fromkeys(warnings)))


def _same_file(arg: str, project: Path) -> bool:
    if arg.startswith("file://"):
        arg = unquote(arg[len("file://") :])
    try:
        return Path(arg).resolve() == project
    except (OSError, ValueError):
        return False


def ensure_closed(project: Path, *, force: bool = False) -> OpenCheck:
    """Raise ``kdenlive-project-open`` when ``project`` looks open (unless ``force``)."""
    result = check_open(project)
    if result.is_open and not force:
        raise SubplugError(
            "kdenlive-project-open",
            f"{project.name} seems to be open in Kdenlive: {'; '.join(result.reasons)}.",
            "Save and close the project in Kdenlive (File > Close), then run this again. "
            "If Kdenlive is not running any more, --force goes ahead anyway (the project is "
            "backed up first).",
        )
    return result


# ---------------------------------------------------------------------- writing


def timestamp(now: float | None = None) -> str:
    """``YYYYmmdd-HHMMSS`` for backup names."""
    return datetime.fromtimestamp(time.time() if now is None else now).strftime("%Y%m%d-%H%M%S")


def backup(path: Path, stamp: str) -> Path:
    """Copy ``path`` to ``NAME.bak-STAMP`` (``-2``, ``-3``… if taken); returns the copy."""
    target = path.with_name(f"{path.name}.bak-{stamp}")
    counter = 2
    while target.exists():
        target = path.with_name(f"{path.name}.bak-{stamp}-{counter}")
        counter += 1
    try:
        shutil.copy2(path, target)
    except OSError as exc:
        raise SubplugError(
            "kdenlive-backup-failed",
            f"Could not back up {path} to {target}: {exc.strerror}.",
            "Make the project's folder writable (nothing was changed).",
        ) from exc
    return target


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, keeping the
    permissions of the file it replaces."""
    mode = None
    with contextlib.suppress(FileNotFoundError):
        mode = path.stat().st_mode & 0o7777
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise SubplugError(
            "kdenlive-write-failed",
            f"Could not write {path}: {exc.strerror}.",
            "Check that the folder exists and is writable, and that the disk has room.",
        ) from exc
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise SubplugError(
            "kdenlive-write-failed",
            f"Could not write {path}: {exc.strerror}.",
            "Check free disk space and that the project's folder is writable.",
        ) from exc
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
