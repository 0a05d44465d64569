"""Disk work of the cache: hashing, copying in, walking, syncing, free space, and the
user-facing errors a disk gives (full, not writable, unreadable source)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from subplug.cache.manifest import FileRecord
from subplug.cache.paths import RESERVED_TOP
from subplug.errors import SubplugError

_CHUNK = 4 * 1024 * 1024


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """sha256 of a file, read in 4 MiB blocks; ``on_bytes(done)`` after each."""
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if on_bytes is not None:
                on_bytes(done)
    return digest.hexdigest()


def copy_in(
    src: Path, dst: Path, on_bytes: Callable[[int], None], root: Path, name: str
) -> FileRecord:
    """:func:`copy_stream_in` from the file ``src``."""
    try:
        fh = open(src, "rb")  # noqa: SIM115 - closed by copy_stream_in's caller below
    except OSError as e:
        raise read_error(e, src) from e
    with fh:
        return copy_stream_in(fh, dst, on_bytes, root, name, src=src)


def copy_stream_in(
    fh: IO[bytes],
    dst: Path,
    on_bytes: Callable[[int], None],
    root: Path,
    name: str,
    *,
    src: Path | None = None,
) -> FileRecord:
    """Copy ``fh`` to the new file ``dst``, hashing on the way; fsync before returning."""
    digest = hashlib.sha256()
    done = 0
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        out = open(dst, "xb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise write_error(e, root, f"import {name}") from e
    with out:
        while True:
            try:
                chunk = fh.read(_CHUNK)
            except OSError as e:
                raise read_error(e, src or dst) from e
            if not chunk:
                break
            digest.update(chunk)
            try:
                out.write(chunk)
            except OSError as e:
                raise write_error(e, root, f"import {name}") from e
            done += len(chunk)
            on_bytes(done)
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as e:
            raise write_error(e, root, f"import {name}") from e
    return FileRecord(digest.hexdigest(), done, dst.stat().st_mtime_ns)


def walk_files(root: Path) -> list[str]:
    """Relative POSIX paths of the regular files under ``root`` (file symlinks followed,
    as in a Hugging Face cache snapshot), minus our bookkeeping and tool metadata."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in RESERVED_TOP]
            filenames = [f for f in filenames if f not in RESERVED_TOP]
        dirnames.sort()
        for f in filenames:
            full = here / f
            if full.is_file():
                found.append(full.relative_to(root).as_posix())
    return sorted(found)


def du(folder: Path) -> int:
    """Bytes of the files under ``folder`` (links not followed; unreadable ones skipped)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def fsync_file(path: Path) -> None:
    """Flush a file's data to the disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename in it) to the disk; POSIX only."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_error(e: OSError, where: Path, what: str) -> SubplugError:
    """The user-facing error for a failed write under ``where`` while trying to ``what``:
    ``disk-full``, ``cache-not-writable`` or ``cache-write-failed``."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return SubplugError(
            "disk-full",
            f"The disk holding {where} is full; could not {what}.",
            "Free some space (`subplug models list` shows what the cache holds) or set "
            "SUBPLUG_HOME to a folder on a bigger disk, then run the command again.",
        )
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
        return SubplugError(
            "cache-not-writable",
            f"Cannot write to the model cache at {where} ({e.strerror}); could not {what}.",
            "Make that folder writable, or set SUBPLUG_HOME to a folder you can write to.",
        )
    return SubplugError(
        "cache-write-failed",
        f"Writing to the model cache at {where} failed ({e.strerror or e}); could not {what}.",
        "Check the disk, then run the command again.",
    )


@contextmanager
def write_errors(where: Path, *, what: str) -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into :func:`write_error`."""
    try:
        yield
    except OSError as e:
        raise write_error(e, where, what) from e


def read_error(e: OSError, path: Path) -> SubplugError:
    """The user-facing error for a model source that cannot be read."""
    return SubplugError(
        "model-source-unreadable",
        f"Cannot read {path} ({e.strerror or e}).",
        "Check that the folder or USB stick is still there and readable, then try again.",
    )


def check_space(root: Path, needed: int, name: str) -> None:
    """Raise ``disk-full`` unless ``needed`` bytes (and 64 MiB more) are free in ``root``."""
    free = shutil.disk_usage(root).free
    if needed > 0 and free < needed + 64 * 1024 * 1024:
        raise SubplugError(
            "disk-full",
            f"{name} needs {_human(needed)} but only {_human(free)} is free in {root}.",
            "Free some space (`subplug models list` shows what the cache holds) or set "
            "SUBPLUG_HOME to a folder on a bigger disk.",
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
