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
import errno
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
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


def new_file_mode() -> int:
    """The mode a new file gets from the umask (``0644`` with the usual ``022``), as
    ``subplug generate`` gives its files: a temporary file from ``mkstemp`` is ``0600``."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_writable_folder(folder: Path, what: str) -> None:
    """Fail (``kdenlive-write-failed``) unless a file can be created in ``folder``:
    found by creating and removing an empty one, before any long work starts (permission
    bits do not tell the whole story: root, ACLs, read-only mounts)."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".subplug-probe-")
    except OSError as exc:
        raise SubplugError(
            "kdenlive-write-failed",
            f"Cannot write in {folder} ({what}): {exc.strerror}. Nothing was done.",
            "Make the folder writable (or free some disk space there), or copy the project "
            "and its media to a folder you can write to, then run the command again.",
        ) from exc
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(name)


@dataclass(frozen=True)
class Written:
    """What :func:`write_files` did."""

    paths: tuple[Path, ...]
    backups: dict[Path, Path]
    """Each replaced file and the backup that keeps its old contents."""


def write_files(items: Sequence[tuple[Path, bytes]], *, backup: bool = True) -> Written:
    """Put every ``(path, data)`` in place as one unit: all or nothing.

    1. every text goes to a temporary file beside its target (flushed to disk; the mode
       of the file it replaces, or :func:`new_file_mode`);
    2. with ``backup``, every target that exists is kept under the core's backup name
       (:func:`subplug.files.backup_path`: ``NAME.bak``, ``NAME.bak.1``…), as a hard
       link (no copy, so a full disk cannot truncate it; a copy through a temporary file
       where links are not possible);
    3. the temporary files are renamed over their targets, in order (put the project
       last: until then it points at nothing new).

    Any failure, an interrupt included, undoes everything done so far: temporary files
    and new backups are removed, replaced files get their old contents back, new files
    go away. A user's mistake (full disk, no permission) becomes one
    :class:`SubplugError` saying that nothing was changed.
    """
    from subplug.files import backup_path

    items = [(Path(path), data) for path, data in items]
    existed = {path for path, _ in items if path.exists()}
    temps: dict[Path, Path] = {}
    backups: dict[Path, Path] = {}
    committed: list[Path] = []
    step, current = "write", items[0][0] if items else Path()
    try:
        for path, data in items:
            current = path
            temps[path] = _stage(path, data)
        if backup:
            step = "back up"
            for path, _ in items:
                current = path
                if path.exists():
                    backups[path] = _keep(path, backup_path(path))
        step = "write"
        for path, _ in items:
            current = path
            # Counted as done first: undoing a rename that did not happen is harmless
            # (the backup holds the same contents), missing one that did is not.
            committed.append(path)
            os.replace(temps[path], path)
            del temps[path]
    except BaseException as exc:
        _undo(temps, backups, committed, existed)
        if isinstance(exc, OSError):
            raise _write_error(exc, current, step) from exc
        raise
    return Written(tuple(path for path, _ in items), backups)


def write_atomic(path: Path, data: bytes) -> None:
    """Write one file subplug owns (no backup) the way :func:`write_files` does."""
    write_files([(path, data)], backup=False)


def _stage(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file beside ``path``, with the mode ``path`` will have."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = new_file_mode()
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(name)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, mode)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _keep(path: Path, target: Path) -> Path:
    """Keep ``path``'s current contents at ``target`` (a new name), whole or not at all."""
    try:
        os.link(path, target, follow_symlinks=False)
        return target
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        shutil.copy2(path, name)
        with open(name, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return target


def _undo(
    temps: dict[Path, Path], backups: dict[Path, Path], committed: list[Path], existed: set[Path]
) -> None:
    """Put every file back as it was before :func:`write_files` started."""
    for temp in temps.values():
        with contextlib.suppress(OSError):
            temp.unlink()
    for path in reversed(committed):
        with contextlib.suppress(OSError):
            kept = backups.pop(path, None)
            if kept is not None:
                if os.path.samefile(kept, path):
                    kept.unlink()  # never replaced: the backup is a second name for it
                else:
                    os.replace(kept, path)
            elif path not in existed:
                path.unlink()
    for kept in backups.values():
        with contextlib.suppress(OSError):
            kept.unlink()


def _write_error(exc: OSError, path: Path, step: str) -> SubplugError:
    folder = path.parent
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SubplugError(
            "kdenlive-disk-full",
            f"The disk holding {folder} is full: could not {step} {path.name}. Nothing was "
            "changed (no file was replaced and no partial file was left).",
            "Free some disk space there and run the command again.",
        )
    reference = "kdenlive-backup-failed" if step == "back up" else "kdenlive-write-failed"
    return SubplugError(
        reference,
        f"Could not {step} {path}: {exc.strerror or exc}. Nothing was changed.",
        "Make the project's folder writable and run the command again.",
    )
