"""Writing files safely: the one home for every file subplug writes.

* :func:`write_files` writes files a user owns (subtitles, a project's subtitle track):
  UTF-8 text (no byte-order mark) or bytes, each through a temporary file in its target
  folder, flushed to disk, then moved into place — all targets checked first
  (:func:`check_writable`), all written before any is moved. An existing file is only
  replaced with ``overwrite``, and then it is kept as ``NAME.ext.bak`` (``.bak.1``,
  ``.bak.2`` … when that exists: :func:`backup_path`). New files get the usual mode
  (0644 under the usual umask).
* A set of outputs is one unit when :func:`write_files` is given a ``records`` folder:
  before the first file is moved into place it records what each file will hold (a
  SHA-256 per path) and removes the records once all are in place. If the process dies
  in between (kill -9, power cut), a rerun finds the records: a target whose content is
  what its record says is subplug's own half-finished work, replaced without
  ``overwrite`` and without a backup (:func:`unfinished_writes`); a target with any
  other content is the user's and is refused as always. Temporary files carry the
  writer's process id, and those of processes that are gone are removed
  (:func:`remove_stale_temps`).
* :func:`replace_atomic` swaps in a file subplug owns (cache manifests, the files it
  installs into host programs), without checks or backup.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable, Sequence
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


def check_writable(paths: Iterable[Path], *, overwrite: bool, ours: Collection[Path] = ()) -> None:
    """Fail before any work when a target exists (without ``overwrite``; targets in
    ``ours``, an unfinished earlier write's own files, may exist), is a folder, or its
    folder cannot be created or written. Raises :class:`SubplugError` ``output-exists``
    or ``output-not-writable``."""
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
    existing = [p for p in paths if (p.exists() or p.is_symlink()) and p not in ours]
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


def write_files(
    items: Sequence[tuple[Path, str | bytes]],
    *,
    overwrite: bool,
    records: Path | None = None,
) -> list[Path]:
    """Write each ``(path, text)`` atomically (text as UTF-8, bytes as they are); return
    the paths.

    All targets are checked first (:func:`check_writable`), then every text goes to a
    temporary file beside its target; only when all are on disk are they moved into
    place. A failure before that removes the temporary files and leaves the targets as
    they were. With ``overwrite`` an existing target is first kept as a backup
    (:func:`backup_path`); without it a target that appeared meanwhile is never
    replaced. With ``records`` (a folder subplug owns) the files are one unit that a
    rerun completes after a crash (module docstring).
    """
    items = [(Path(path), text) for path, text in items]
    paths = [path for path, _ in items]
    ours: set[Path] = set()
    if records is not None:
        remove_stale_temps(paths)
        ours = unfinished_writes(paths, records)
    check_writable(paths, overwrite=overwrite, ours=ours)
    datas = [text.encode("utf-8") if isinstance(text, str) else text for _, text in items]
    temps: list[Path] = []
    current = paths[0] if paths else Path()
    marks = [] if records is None else [records / f"{_path_key(p)}.json" for p in paths]
    try:
        for path, data in zip(paths, datas, strict=True):
            current = path
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
            )
            temps.append(Path(name))
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(name, _new_file_mode())
        for path, data, mark in zip(paths, datas, marks, strict=False):
            current = mark
            mark.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256(data).hexdigest()
            replace_atomic(mark, json.dumps({"path": _path_text(path), "sha256": digest}).encode())
        written = []
        for path, temp in zip(paths, temps, strict=True):
            current = path
            if path in ours and (path.exists() or path.is_symlink()):
                os.replace(temp, path)  # our own unfinished work: no backup
            else:
                _commit(temp, path, overwrite=overwrite)
            written.append(path)
        for mark in marks:
            with contextlib.suppress(FileNotFoundError):
                mark.unlink()
        return written
    except OSError as exc:
        raise _os_error(exc, current) from exc
    finally:
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def _path_text(path: Path) -> str:
    """A path as JSON-safe text (names that are not UTF-8 kept as escapes)."""
    return os.fsencode(path.absolute()).decode("utf-8", "backslashreplace")


def _path_key(path: Path) -> str:
    """The name of ``path``'s write record: the hash of its absolute path."""
    return hashlib.sha256(_path_text(path).encode()).hexdigest()[:32]


def unfinished_writes(paths: Iterable[Path], records: Path) -> set[Path]:
    """The targets among ``paths`` that an unfinished earlier :func:`write_files` put
    in place: their write record is still there and their content is what it says.
    Anything else (no record, other content: a file the user made or changed) is not in
    the result."""
    ours = set()
    for path in (Path(p) for p in paths):
        try:
            record = json.loads((records / f"{_path_key(path)}.json").read_text(encoding="utf-8"))
            expected = record["sha256"] if record["path"] == _path_text(path) else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if expected is None or path.is_symlink() or not path.is_file():
            continue
        try:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            continue
        if actual == expected:
            ours.add(path)
    return ours


def remove_stale_temps(paths: Iterable[Path]) -> list[Path]:
    """Remove the temporary files :func:`write_files` left beside ``paths`` when its
    process died (``.NAME.PID.XXXX.tmp`` whose process is gone); returns them."""
    removed = []
    for path in paths:
        path = Path(path)
        prefix = f".{path.name}."
        with contextlib.suppress(OSError):
            for temp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
                pid = temp.name[len(prefix) :].partition(".")[0]
                if pid.isdigit() and not _process_alive(int(pid)):
                    with contextlib.suppress(FileNotFoundError):
                        temp.unlink()
                        removed.append(temp)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process
    return True


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
