"""Writing files safely: the one home for every file subplug writes.

* :func:`write_files` writes files a user owns (subtitles, a project's subtitle track):
  UTF-8 text (no byte-order mark) or bytes, each through a temporary file in its target
  folder, flushed to disk, then moved into place — all targets checked first
  (:func:`check_writable`), all written before any is moved. An existing file is only
  replaced with ``overwrite``, and then it is kept as ``NAME.ext.bak`` (``.bak.1``,
  ``.bak.2`` … when that exists: :func:`backup_path`). New files get the usual mode
  (0644 under the usual umask).
* :func:`replace_atomic` swaps in a file subplug owns (cache manifests, the files it
  installs into host programs), without checks or backup.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from subplug.errors import SubplugError

_CONTROL = dict.fromkeys(range(0x20), " ") | {0x7F: " "}


def printable_name(path: Path | str) -> str:
    """A file's name as text that can be shown and written anywhere: bytes that are not
    UTF-8 (kept by Python as lone surrogates) become U+FFFD, and control characters
    (a newline in a name) become spaces."""
    name = Path(path).name
    text = os.fsencode(name).decode("utf-8", "replace")
    return text.translate(_CONTROL)


def backup_path(path: Path) -> Path:
    """The first free backup name for ``path``: ``NAME.ext.bak``, then ``.bak.1``…"""
    candidate = path.with_name(path.name + ".bak")
    number = 0
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = path.with_name(f"{path.name}.bak.{number}")
    return candidate


def check_writable(paths: Iterable[Path], *, overwrite: bool) -> None:
    """Fail before any work when a target exists (without ``overwrite``), is a folder,
    or its folder cannot be created or written. Raises :class:`SubplugError`
    ``output-exists`` or ``output-not-writable``."""
    paths = [Path(p) for p in paths]
    probed: set[Path] = set()
    for path in paths:
        if path.is_dir():
            raise SubplugError(
                "output-not-writable",
                f"Cannot write {path}: a folder has that name.",
                "Move the folder away or choose another output folder with --out DIR.",
            )
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or (folder not in probed and not _can_create_in(folder)):
            raise SubplugError(
                "output-not-writable",
                f"Cannot write {path}: {folder} is not a writable folder.",
                "Choose another output folder with --out DIR, or fix its permissions.",
            )
        probed.add(folder)
    existing = [path for path in paths if path.exists() or path.is_symlink()]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing)
        raise SubplugError(
            "output-exists",
            f"Subtitle file{'s' if len(existing) > 1 else ''} already there: {names}.",
            "Pass --overwrite to replace them (each old file is kept as NAME.bak).",
        )


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder``, found by creating (and removing) an
    empty one: permission bits do not tell the whole story (root, ACLs, read-only
    mounts, network shares)."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".subplug-probe-")
    except OSError:
        return False
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


def _os_error(exc: OSError, path: Path) -> SubplugError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return SubplugError(
            "disk-full",
            f"No space left to write {path}.",
            "Free some disk space or choose another output folder with --out DIR.",
        )
    return SubplugError(
        "output-not-writable",
        f"Cannot write {path}: {exc.strerror or exc}.",
        "Choose another output folder with --out DIR, or fix its permissions.",
    )


def _new_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_files(items: Sequence[tuple[Path, str | bytes]], *, overwrite: bool) -> list[Path]:
    """Write each ``(path, text)`` atomically (text as UTF-8, bytes as they are); return
    the paths.

    All targets are checked first (:func:`check_writable`), then every text goes to a
    temporary file beside its target; only when all are on disk are they moved into
    place. A failure before that removes the temporary files and leaves the targets as
    they were. With ``overwrite`` an existing target is first kept as a backup
    (:func:`backup_path`); without it a target that appeared meanwhile is never
    replaced.
    """
    items = [(Path(path), text) for path, text in items]
    check_writable([path for path, _ in items], overwrite=overwrite)
    temps: list[Path] = []
    current = items[0][0] if items else Path()
    try:
        for path, text in items:
            current = path
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append(Path(name))
            with os.fdopen(handle, "wb") as stream:
                stream.write(text.encode("utf-8") if isinstance(text, str) else text)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(name, _new_file_mode())
        written = []
        for (path, _), temp in zip(items, temps, strict=True):
            current = path
            _commit(temp, path, overwrite=overwrite)
            written.append(path)
        return written
    except OSError as exc:
        raise _os_error(exc, current) from exc
    finally:
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def _commit(temp: Path, path: Path, *, overwrite: bool) -> None:
    if overwrite and (path.exists() or path.is_symlink()):
        backup = backup_path(path)
        try:
            os.link(path, backup, follow_symlinks=False)
        except OSError:
            shutil.copy2(path, backup, follow_symlinks=False)
        with contextlib.suppress(OSError):
            shutil.copymode(path, temp)
        os.replace(temp, path)
        return
    try:
        os.link(temp, path)  # fails if the target appeared since the check: no clobbering
    except FileExistsError:
        raise SubplugError(
            "output-exists",
            f"{path} appeared while subtitles were being written; it was left alone.",
            "Pass --overwrite to replace it (the old file is kept as NAME.bak).",
        ) from None
    except OSError:
        if path.exists():
            raise
        os.replace(temp, path)  # file systems without hard links
    else:
        temp.unlink()


def write_atomic(path: Path, text: str | bytes, *, overwrite: bool) -> Path:
    """Write one file the way :func:`write_files` does; returns its path."""
    return write_files([(Path(path), text)], overwrite=overwrite)[0]


def replace_atomic(path: Path, data: bytes) -> None:
    """Put ``data`` in ``path`` at once: a temporary file beside it, flushed to disk,
    then one ``os.replace``.

    Unlike :func:`write_files` there is no check and no backup: this is for files
    subplug owns (cache manifests, the files it installs into host programs). The
    folder must exist. An ``OSError`` is raised as it is, once the temporary file is
    removed.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
