"""The entries of the cache: list, verify, remove, and build an entry in place."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from subplug import __version__
from subplug.cache.locks import folder_lock, name_locks, owner_alive
from subplug.cache.manifest import (
    FileRecord,
    Manifest,
    ModelKind,
    now,
    opt_str,
    read_manifest,
    write_manifest,
)
from subplug.cache.paths import PARTIAL_PREFIX, TRASH_PREFIX, check_name, models_dir
from subplug.cache.progress import ProgressCallback, report
from subplug.cache.resolve import not_found, require_manifest
from subplug.cache.staging import (
    clean_stale,
    install,
    make_partial,
    partial_name,
    read_marker,
    refuse_existing,
    split_work_name,
    writable_models_dir,
    write_marker,
)
from subplug.cache.storage import du, fsync_file, hash_file, walk_files, write_error, write_errors
from subplug.errors import SubplugError


@dataclass(frozen=True)
class ModelEntry:
    """One row of :func:`list_models`."""

    name: str
    kind: ModelKind | None
    """``None`` when unknown (a partial folder, or a folder without a readable manifest)."""
    base: str | None
    size: int
    """Bytes: the manifest's total for complete entries, bytes on disk otherwise."""
    complete: bool
    """True only for an entry with a valid manifest under its final name."""
    path: Path
    state: Literal["complete", "downloading", "resumable", "importing", "interrupted", "invalid"]
    """``downloading``/``importing``: another process is on it now; ``resumable``: an
    interrupted pull that the next ``pull`` continues; ``interrupted``: a dead import
    (removed by the next cache operation); ``invalid``: a folder with no valid manifest."""
    repo_id: str | None = None
    revision: str | None = None
    derived: Mapping[str, Any] | None = None
    """:attr:`Manifest.derived` of an entry made from another one."""


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify`: every file hashed against the manifest."""

    name: str
    path: Path
    files: int
    """Files listed in the manifest."""
    size: int
    """Bytes hashed."""
    missing: tuple[str, ...]
    changed: tuple[str, ...]
    """Present but with another size or sha256."""
    extra: tuple[str, ...]
    """Present but not in the manifest (model loaders may pick them up, so they count)."""

    @property
    def ok(self) -> bool:
        """True when the folder holds exactly the manifest's files, byte for byte."""
        return not (self.missing or self.changed or self.extra)


def list_models() -> list[ModelEntry]:
    """Every entry of the cache, complete or not, sorted by name.

    Partial folders are listed with ``complete=False``; stale partial imports of dead
    processes are removed first (interrupted pulls are kept: the next pull resumes them).
    """
    root = models_dir()
    if not root.is_dir():
        return []
    with suppress(OSError):
        clean_stale(root)
    entries: list[ModelEntry] = []
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        if child.name.startswith(PARTIAL_PREFIX):
            entries.append(_partial_entry(child))
        elif not child.name.startswith("."):
            entries.append(entry_for(child))
    entries.sort(key=lambda e: (e.name, not e.complete))
    return entries


def verify(name: str, *, progress: ProgressCallback | None = None) -> VerifyReport:
    """Hash every file of entry ``name`` and compare with its manifest."""
    folder = models_dir() / name
    manifest = require_manifest(name)
    present = set(walk_files(folder))
    missing, changed = [], []
    total, done = manifest.size, 0
    for rel, rec in sorted(manifest.files.items()):
        file_path = folder / rel
        if rel not in present:
            missing.append(rel)
            continue
        if file_path.stat().st_size != rec.size:
            changed.append(rel)
            continue
        start = done

        def on_bytes(n: int, start: int = start) -> None:
            report(progress, name, "hash", start + n, total)

        if hash_file(file_path, on_bytes) != rec.sha256:
            changed.append(rel)
        done += rec.size
    extra = sorted(present - set(manifest.files))
    return VerifyReport(
        name=name,
        path=folder,
        files=len(manifest.files),
        size=done,
        missing=tuple(missing),
        changed=tuple(changed),
        extra=tuple(extra),
    )


def remove(name: str, *, force: bool = False) -> int:
    """Remove entry ``name`` (and any partial download of it); returns the bytes freed.

    A base that complete adapters in the cache still use is kept unless ``force``.
    """
    root = writable_models_dir()
    clean_stale(root)
    with ExitStack() as stack:
        stack.enter_context(name_locks([name]))
        folder = root / name
        partials = [p for p in root.glob(f"{PARTIAL_PREFIX}{name}-*") if partial_name(p) == name]
        if not folder.is_dir() and not partials:
            raise not_found(name)
        stack.enter_context(folder_lock())
        users = _adapters_using(root, name)
        if users and not force:
            raise SubplugError(
                "model-in-use",
                f"{name} is the base of {', '.join(users)}.",
                f"Remove those first, or pass --force to remove {name} anyway "
                "(they will not load until it is back).",
            )
        freed = 0
        doomed: list[Path] = []
        if folder.is_dir():
            trash = root / f"{TRASH_PREFIX}{name}-{os.getpid()}"
            try:
                os.replace(folder, trash)
            except OSError as e:
                raise write_error(e, root, f"remove {name}") from e
            doomed.append(trash)
        doomed.extend(partials)
    for d in doomed:
        freed += du(d)
        shutil.rmtree(d, ignore_errors=True)
    return freed


def build_model(
    name: str,
    build: Callable[[Path], None],
    *,
    source: str,
    derived: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> ModelEntry:
    """Make a full model entry ``name`` whose files ``build(folder)`` writes straight
    into a work folder of the cache (no copy); then every file is hashed into the
    manifest and the folder renamed into place, as for an import. ``derived`` is
    recorded in the manifest (:attr:`Manifest.derived`). An interrupted build leaves no
    entry."""
    check_name(name)
    root = writable_models_dir()
    clean_stale(root)
    with name_locks([name], progress):
        refuse_existing(root, name, force)
        partial = root / f"{PARTIAL_PREFIX}{name}-{os.getpid()}"
        make_partial(partial)
        write_marker(partial, {"operation": "build", "name": name, "pid": os.getpid()})
        try:
            with write_errors(root, what=f"make {name}"):
                build(partial)
            rels = walk_files(partial)
            total = sum((partial / rel).stat().st_size for rel in rels)
            files: dict[str, FileRecord] = {}
            done = 0
            for rel in rels:
                start = done

                def on_bytes(n: int, start: int = start) -> None:
                    report(progress, name, "hash", start + n, total)

                path = partial / rel
                fsync_file(path)
                files[rel] = FileRecord(
                    hash_file(path, on_bytes), path.stat().st_size, path.stat().st_mtime_ns
                )
                done += files[rel].size
            manifest = Manifest(
                name=name,
                kind="full",
                base=None,
                files=files,
                source=source,
                repo_id=None,
                revision=None,
                created=now(),
                subplug_version=__version__,
                derived=dict(derived) if derived is not None else None,
            )
            install(partial, manifest, force=force, root=root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return entry_for(root / name)


def update_derived(name: str, changes: Mapping[str, Any]) -> Manifest:
    """Add ``changes`` to entry ``name`` 's :attr:`Manifest.derived` (e.g. quality
    figures measured after it was made); the manifest is replaced atomically."""
    root = writable_models_dir()
    with name_locks([name]):
        manifest = require_manifest(name)
        updated = replace(manifest, derived={**(manifest.derived or {}), **changes})
        write_manifest(root / name, updated)
    return updated


def entry_for(folder: Path) -> ModelEntry:
    """The :func:`list_models` row of an entry folder under its final name."""
    m = read_manifest(folder)
    if m is None:
        return ModelEntry(folder.name, None, None, du(folder), False, folder, "invalid")
    return ModelEntry(
        name=folder.name,
        kind=m.kind,
        base=m.base,
        size=m.size,
        complete=True,
        path=folder,
        state="complete",
        repo_id=m.repo_id,
        revision=m.revision,
        derived=m.derived,
    )


def _partial_entry(folder: Path) -> ModelEntry:
    parsed = split_work_name(folder, PARTIAL_PREFIX)
    name = parsed[0] if parsed else folder.name
    marker = read_marker(folder)
    alive = parsed is not None and owner_alive(*parsed)
    state: Literal["downloading", "resumable", "importing", "interrupted"]
    if marker.get("operation") == "pull":
        state = "downloading" if alive else "resumable"
    else:
        state = "importing" if alive else "interrupted"
    return ModelEntry(
        name=name,
        kind=None,
        base=None,
        size=du(folder),
        complete=False,
        path=folder,
        state=state,
        repo_id=opt_str(marker.get("repo_id")),
        revision=opt_str(marker.get("commit")),
    )


def _adapters_using(root: Path, base: str) -> list[str]:
    users = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or child.name == base:
            continue
        m = read_manifest(child)
        if m is not None and m.kind == "adapter" and m.base == base:
            users.append(child.name)
    return users
