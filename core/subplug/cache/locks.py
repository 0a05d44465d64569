"""File locks of the cache.

Work on one name is serialised by that name's file lock; changes to the set of entries
(install, replace, remove, the "is this base still used" check) by the folder lock. Locks
are always taken in the order name locks (sorted) → folder lock, so two processes cannot
deadlock. A lock dies with its process, which is how leftovers of dead processes are told
from work in progress (:func:`owner_alive`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import filelock

from subplug.cache.paths import locks_dir, subplug_home
from subplug.cache.progress import CacheProgress, ProgressCallback
from subplug.cache.storage import write_error
from subplug.errors import SubplugError

_DEFAULT_LOCK_TIMEOUT = 600.0

# Names whose lock this process holds now (name → depth), to tell our own work in
# progress from leftovers of an earlier failure in the same process.
_HELD: dict[str, int] = {}


def _lock_timeout() -> float:
    try:
        return float(os.environ.get("SUBPLUG_LOCK_TIMEOUT", _DEFAULT_LOCK_TIMEOUT))
    except ValueError:
        return _DEFAULT_LOCK_TIMEOUT


def name_lock_path(name: str) -> Path:
    """The lock file of model name ``name``."""
    return locks_dir() / f"model-{name}.lock"


@contextmanager
def _held(lock: filelock.BaseFileLock) -> Iterator[None]:
    try:
        yield
    finally:
        lock.release()


@contextmanager
def name_locks(names: Iterable[str], progress: ProgressCallback | None = None) -> Iterator[None]:
    """Hold the locks of ``names`` (sorted, so concurrent callers cannot deadlock)."""
    try:
        locks_dir().mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(e, subplug_home(), "create the lock folder") from e
    with ExitStack() as stack:
        for name in sorted(set(names)):
            stack.enter_context(_acquire(name_lock_path(name), name, progress))
            _HELD[name] = _HELD.get(name, 0) + 1
            stack.callback(_unheld, name)
        yield


@contextmanager
def folder_lock() -> Iterator[None]:
    """Hold the folder lock (after any name locks: see the module docstring)."""
    with _acquire(locks_dir() / "models.lock", "the model folder", None):
        yield


def _unheld(name: str) -> None:
    _HELD[name] -= 1
    if not _HELD[name]:
        del _HELD[name]


@contextmanager
def _acquire(path: Path, what: str, progress: ProgressCallback | None) -> Iterator[None]:
    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        if progress is not None:
            progress(CacheProgress(what, "wait", 0, None))
        try:
            lock.acquire(timeout=_lock_timeout())
        except filelock.Timeout:
            raise SubplugError(
                "cache-busy",
                f"Another subplug process has been working on {what} for too long.",
                "Wait for it to finish (or stop it), then run the command again.",
            ) from None
    except OSError as e:
        raise write_error(e, path.parent, "lock the model cache") from e
    with _held(lock):
        yield


def owner_alive(name: str, pid: int) -> bool:
    """Is a process working on ``name``? True when its lock is held by someone else."""
    if pid == os.getpid():
        return name in _HELD
    lock = filelock.FileLock(name_lock_path(name))
    try:
        lock.acquire(timeout=0)
    except (filelock.Timeout, OSError):
        return True
    lock.release()
    return False
