"""Pulling a known model from the Hub into the cache, resumably.

An interrupted pull leaves its work folder (with the commit and file list in its marker);
the next pull of the same name continues it at the same commit. Only when every file is
present, of the right size and hashed is the manifest written and the folder installed.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from subplug import __version__
from subplug.cache.entries import ModelEntry, entry_for
from subplug.cache.hub import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    Downloader,
    DownloadError,
    HubDownloader,
    KnownModel,
    RemoteFile,
    RemoteSnapshot,
    first_line,
    select_files,
)
from subplug.cache.locks import name_locks
from subplug.cache.manifest import FileRecord, Manifest, is_complete, now, read_manifest
from subplug.cache.paths import PARTIAL_PREFIX, RESERVED_TOP, models_dir, safe_relpath
from subplug.cache.progress import CacheProgress, ProgressCallback, report
from subplug.cache.staging import (
    clean_stale,
    empty_folder,
    install,
    make_partial,
    partial_folders,
    partial_name,
    read_marker,
    writable_models_dir,
    write_marker,
)
from subplug.cache.storage import check_space, du, hash_file, walk_files, write_error
from subplug.errors import SubplugError


def pull(
    name: str | None = None,
    *,
    force: bool = False,
    revision: str | None = None,
    downloader: Downloader | None = None,
    progress: ProgressCallback | None = None,
) -> ModelEntry:
    """Download a known model (and its base, first, when missing) into the cache.

    Resumable: an interrupted pull leaves a partial folder that the next pull of the
    same name continues, at the same commit. Only when every file is present and hashed
    is the manifest written and the folder renamed to its final name. An entry already
    in the cache is left alone unless ``force``.

    Raises ``SubplugError``: ``unknown-model``, ``model-download-failed`` (with a hint
    about ``models import`` for offline machines), ``disk-full``, ``cache-not-writable``,
    ``cache-busy``.
    """
    name = name or DEFAULT_MODEL
    known = KNOWN_MODELS.get(name)
    if known is None:
        raise SubplugError(
            "unknown-model",
            f"subplug does not know how to download a model named {name!r}.",
            f"Known models: {', '.join(sorted(KNOWN_MODELS))}. For any other model, "
            "download it yourself and run `subplug models import PATH`.",
        )
    downloader = downloader or HubDownloader()
    if known.base and not is_complete(models_dir() / known.base):
        pull(known.base, downloader=downloader, progress=progress)
    return _pull_one(known, force=force, revision=revision, dl=downloader, progress=progress)


def _pull_one(
    known: KnownModel,
    *,
    force: bool,
    revision: str | None,
    dl: Downloader,
    progress: ProgressCallback | None,
) -> ModelEntry:
    root = writable_models_dir()
    clean_stale(root)
    name = known.name
    with name_locks([name], progress):
        final = root / name
        existing = read_manifest(final) if final.is_dir() else None
        if existing is not None and not force:
            return entry_for(final)
        wanted = revision or known.revision or (existing.revision if existing else None)
        partial, marker = _claim_pull_partial(root, name, known.repo_id)
        snapshot = _snapshot_from_marker(marker, known.repo_id, wanted)
        try:
            if snapshot is None:
                snapshot = dl.resolve(known.repo_id, wanted)
                snapshot = replace(snapshot, files=select_files(snapshot.files, known.files))
                if not snapshot.files:
                    raise DownloadError(f"{known.repo_id} holds none of the files {name} needs")
                if marker.get("commit") not in (None, snapshot.commit):
                    empty_folder(partial)
                write_marker(partial, _pull_marker(name, wanted, snapshot))
            total = sum(f.size or 0 for f in snapshot.files)
            check_space(root, total - du(partial), name)
            with _poll_progress(partial, name, total, progress):
                dl.fetch(snapshot, partial)
            files = _check_download(partial, snapshot, name, progress)
        except (DownloadError, ConnectionError, TimeoutError) as e:
            hint = getattr(e, "hint", None) or (
                "Check the internet connection and run the same command again: it resumes "
                "where it stopped. On a machine without internet, export the model on one "
                "that has it (`subplug models export NAME DEST`) and run `subplug models "
                "import PATH` here."
            )
            raise SubplugError(
                "model-download-failed",
                f"Could not download {known.repo_id} ({name}): {first_line(e)}",
                hint,
            ) from e
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                shutil.rmtree(partial, ignore_errors=True)
            raise write_error(e, root, f"download {name}") from e
        except SubplugError as e:
            if e.reference == "disk-full":
                shutil.rmtree(partial, ignore_errors=True)
            raise
        manifest = Manifest(
            name=name,
            kind=known.kind,
            base=known.base,
            files=files,
            source=f"hf://{known.repo_id}",
            repo_id=known.repo_id,
            revision=snapshot.commit,
            created=now(),
            subplug_version=__version__,
        )
        shutil.rmtree(partial / ".cache", ignore_errors=True)
        for stray in set(walk_files(partial)) - set(files):
            (partial / stray).unlink()
        install(partial, manifest, force=True, root=root)
    return entry_for(root / name)


def _claim_pull_partial(root: Path, name: str, repo_id: str) -> tuple[Path, dict[str, Any]]:
    """Reuse an interrupted pull of ``name`` (we hold its lock, so nobody else owns one)."""
    mine = root / f"{PARTIAL_PREFIX}{name}-{os.getpid()}"
    for old in partial_folders(root):
        if partial_name(old) != name or old == mine:
            continue
        marker = read_marker(old)
        if (
            marker.get("operation") == "pull"
            and marker.get("repo_id") == repo_id
            and (not mine.exists())
        ):
            os.replace(old, mine)
        else:
            shutil.rmtree(old, ignore_errors=True)
    if mine.is_dir():
        return mine, read_marker(mine)
    make_partial(mine)
    marker = {"operation": "pull", "name": name, "repo_id": repo_id, "pid": os.getpid()}
    write_marker(mine, marker)
    return mine, marker


def _pull_marker(name: str, wanted: str | None, snapshot: RemoteSnapshot) -> dict[str, Any]:
    return {
        "operation": "pull",
        "name": name,
        "pid": os.getpid(),
        "repo_id": snapshot.repo_id,
        "requested": wanted,
        "commit": snapshot.commit,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in snapshot.files],
    }


def _snapshot_from_marker(
    marker: Mapping[str, Any], repo_id: str, wanted: str | None
) -> RemoteSnapshot | None:
    commit = marker.get("commit")
    if not isinstance(commit, str) or marker.get("repo_id") != repo_id:
        return None
    if wanted not in (None, commit, marker.get("requested")):
        return None
    try:
        files = tuple(
            RemoteFile(str(f["path"]), f.get("size"), f.get("sha256")) for f in marker["files"]
        )
    except (KeyError, TypeError):
        return None
    if not all(safe_relpath(f.path) for f in files):
        return None
    return RemoteSnapshot(repo_id, commit, files)


def _check_download(
    partial: Path, snapshot: RemoteSnapshot, name: str, progress: ProgressCallback | None
) -> dict[str, FileRecord]:
    """Every remote file present, of the right size and (when known) sha256; hash them all."""
    total = sum(f.size or 0 for f in snapshot.files)
    done = 0
    files: dict[str, FileRecord] = {}
    for rf in snapshot.files:
        if not safe_relpath(rf.path) or rf.path.split("/")[0] in RESERVED_TOP:
            raise DownloadError(f"the repository holds a file subplug cannot store: {rf.path}")
        target = partial / rf.path
        if not target.is_file():
            raise DownloadError(f"the download stopped before {rf.path} arrived")
        size = target.stat().st_size
        if rf.size is not None and size != rf.size:
            raise DownloadError(f"{rf.path} arrived incomplete ({size} of {rf.size} bytes)")
        start = done

        def on_bytes(n: int, start: int = start) -> None:
            report(progress, name, "hash", start + n, total)

        digest = hash_file(target, on_bytes)
        if rf.sha256 is not None and digest != rf.sha256:
            target.unlink()
            raise DownloadError(f"{rf.path} was damaged in transfer (sha256 mismatch)")
        files[rf.path] = FileRecord(digest, size, target.stat().st_mtime_ns)
        done += size
    return files


@contextmanager
def _poll_progress(
    folder: Path, name: str, total: int, progress: ProgressCallback | None
) -> Iterator[None]:
    """Report bytes on disk in ``folder`` twice a second while a download runs."""
    if progress is None:
        yield
        return
    stop = threading.Event()

    def poll() -> None:
        while True:
            progress(CacheProgress(name, "download", min(du(folder), total), total))
            if stop.wait(0.5):
                return

    thread = threading.Thread(target=poll, name="subplug-pull-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    progress(CacheProgress(name, "download", min(du(folder), total), total))
