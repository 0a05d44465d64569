"""Real file-system conditions for tests: a folder nobody can write to, and a small file
system that can be filled up (no faked ``OSError``: the kernel says no)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` (existing, with its files) made impossible to create files in:
    read-only permissions, and for root, whom permissions do not stop, a read-only bind
    mount of it. Undone afterwards."""
    mode = os.stat(folder).st_mode & 0o7777
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount") is None:
        pytest.skip("running as root without mount: cannot make a read-only folder")
    os.chmod(folder, 0o555)
    try:
        if os.geteuid() == 0:
            _mount("--bind", str(folder), str(folder))
            mounted = True
            _mount("-o", "remount,ro,bind", str(folder))
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
        os.chmod(folder, mode)


@contextlib.contextmanager
def small_file_system(folder: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder``. Mounting needs root; otherwise the
    test is skipped, saying so."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs a small tmpfs, and mounting one needs root")
    folder.mkdir(parents=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def free_bytes(folder: Path) -> int:
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


def fill(folder: Path, leave: int) -> Path:
    """Fill ``folder``'s file system until at most ``leave`` bytes are free."""
    filler = folder / "filler"
    with filler.open("wb") as stream:
        stream.write(b"\0" * max(0, free_bytes(folder) - leave))
    assert free_bytes(folder) <= leave, f"{free_bytes(folder)} bytes free, wanted {leave}"
    return filler
