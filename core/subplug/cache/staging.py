"""Work folders: where an entry is put together before it becomes one.

A pull, import or build writes into ``<models>/.partial-<name>-<pid>/`` (with a marker
saying which operation it is) while holding the name's lock. A model only ever appears
under its final name through one ``os.replace`` of a partial folder that already holds
every file and the manifest (:func:`install`), so an interrupted pull or import can never
leave something that looks complete. Leftovers of dead processes are removed by
:func:`clean_stale`, except interrupted pulls, which the next pull resumes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from subplug.cache.hub import KNOWN_MODELS, same_repo
from subplug.cache.locks import folder_lock, owner_alive
from subplug.cache.manifest import Manifest, is_complete, write_manifest
from subplug.cache.paths import PARTIAL_MARKER, PARTIAL_PREFIX, TRASH_PREFIX, models_dir
from subplug.cache.storage import fsync_dir, write_error
from subplug.errors import SubplugError
from subplug.files import replace_atomic


def writable_models_dir() -> Path:
    """The models folder, created if needed and checked writable (``cache-not-writable``,
    ``disk-full``)."""
    root = models_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise write_error(e, root, "use the model cache") from e
        raise SubplugError(
            "cache-not-writable",
            f"Cannot write to the model cache at {root} ({e.strerror or e}).",
            "Make that folder writable, or set SUBPLUG_HOME to a folder you can write to.",
        ) from e
    return root


def partial_folders(root: Path) -> list[Path]:
    """The partial folders under the models folder ``root``, sorted."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PARTIAL_PREFIX) and p.is_dir())


def split_work_name(path: Path, prefix: str) -> tuple[str, int] | None:
    """``(name, pid)`` of a work folder ``<prefix><name>-<pid>``; ``None`` if not one."""
    stem = path.name[len(prefix) :]
    name, _, pid = stem.rpartition("-")
    if not name or not pid.isdigit():
        return None
    return name, int(pid)


def partial_name(path: Path) -> str | None:
    """The model name a partial folder works on."""
    parsed = split_work_name(path, PARTIAL_PREFIX)
    return parsed[0] if parsed else None


def clean_stale(root: Path) -> None:
    """Remove leftovers of dead processes: interrupted imports and half-removed entries.

    A leftover is stale when its name's lock is free (locks die with their process).
    Interrupted pulls are kept: the next pull of that name resumes them.
    """
    if not root.is_dir():
        return
    for child in root.iterdir():
        for prefix in (PARTIAL_PREFIX, TRASH_PREFIX):
            if not child.name.startswith(prefix):
                continue
            parsed = split_work_name(child, prefix)
            if parsed is None or owner_alive(*parsed):
                continue
            if prefix == PARTIAL_PREFIX and read_marker(child).get("operation") == "pull":
                continue
            shutil.rmtree(child, ignore_errors=True)


def make_partial(path: Path) -> None:
    """Create the work folder ``path`` empty (a leftover of this process is replaced)."""
    try:
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    except OSError as e:
        raise write_error(e, path.parent, "create a work folder") from e


def write_marker(folder: Path, data: Mapping[str, Any]) -> None:
    """Write a partial folder's marker (``operation``, ``name``, ``pid``…) atomically."""
    replace_atomic(folder / PARTIAL_MARKER, json.dumps(dict(data), indent=2).encode())


def read_marker(folder: Path) -> dict[str, Any]:
    """A partial folder's marker; ``{}`` when it is missing or unreadable."""
    try:
        data = json.loads((folder / PARTIAL_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def empty_folder(folder: Path) -> None:
    """Remove everything in a partial folder except its marker."""
    for child in folder.iterdir():
        if child.name == PARTIAL_MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def install(partial: Path, manifest: Manifest, *, force: bool, root: Path) -> None:
    """Write the manifest into ``partial``, then rename it to its final name atomically."""
    write_manifest(partial, manifest)
    (partial / PARTIAL_MARKER).unlink(missing_ok=True)
    final = root / manifest.name
    trash: Path | None = None
    with folder_lock():
        if manifest.kind == "adapter" and (
            not manifest.base or not is_complete(root / manifest.base)
        ):
            raise base_missing(manifest.name, manifest.base, explicit=True)
        if final.exists():
            if not force:
                raise _exists(manifest.name)
            trash = root / f"{TRASH_PREFIX}{manifest.name}-{os.getpid()}"
            os.replace(final, trash)
        os.replace(partial, final)
        fsync_dir(root)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def refuse_existing(root: Path, name: str, force: bool) -> None:
    """Raise ``model-exists`` when entry ``name`` exists and ``force`` is not given."""
    if (root / name).exists() and not force:
        raise _exists(name)


def _exists(name: str) -> SubplugError:
    return SubplugError(
        "model-exists",
        f"A model named {name!r} is already in the cache.",
        "Pass --force to replace it, or --name NEW_NAME to import it under another name.",
    )


def base_missing(name: str, base: str | None, *, explicit: bool) -> SubplugError:
    """The ``base-model-missing`` error for adapter ``name`` (``explicit``: the user named
    the base, so the hint does not suggest ``--base``)."""
    what = f"its base model {base!r}" if base else "its base model"
    hint_pull = next(
        (
            k.name
            for k in KNOWN_MODELS.values()
            if base and (k.name == base or same_repo(k.repo_id, base))
        ),
        None,
    )
    how = f"`subplug models pull {hint_pull}` or " if hint_pull else ""
    return SubplugError(
        "base-model-missing",
        f"Adapter {name!r} needs {what}, which is not in the model cache ({models_dir()}).",
        f"Put the base in the cache first ({how}`subplug models import BASE_FOLDER`)"
        + ("" if explicit else ", or name it with --base NAME")
        + "; a .tar exported with --with-base carries it.",
    )
