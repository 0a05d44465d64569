"""A fingerprint of a model's contents, cheap enough to take for every run.

The resume journal and the quantised copies of a model (``derived`` entries) key on it,
so a model re-imported, pulled again or retrained under the same name is not mistaken
for its predecessor.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from subplug.cache.manifest import Manifest
from subplug.cache.resolve import resolve_model
from subplug.errors import SubplugError

#: Files of a plain folder looked at (a model has dozens).
_FOLDER_LIMIT = 10_000


def contents_fingerprint(model: str | None, base: str | None = None) -> str:
    """A digest of the model's contents, cheap enough to take for every file.

    ``model`` and ``base`` are what a backend is given (``--model`` and the ``base``
    backend option), resolved the way the model cache resolves them
    (:func:`subplug.cache.resolve_model`):

    * a cache entry: the sha256 digests its manifest records (no file is read; the
      cache's own quick check compares sizes and mtimes), so a model re-imported or
      pulled again under the same name with other weights gets another fingerprint,
      and the same weights the same one;
    * a folder: the names, sizes and modification times of its files, so retraining
      into the same folder changes it;
    * an adapter: its own part and its base model's, each as above;
    * anything the cache cannot resolve (a backend with models of its own, a model not
      there yet): a folder is still fingerprinted as above, any other name counts as
      itself.
    """
    digest = hashlib.sha256()
    try:
        found = resolve_model(model, base=base)
    except SubplugError:
        path = Path(model).expanduser() if model else None
        if path is not None and path.is_dir():
            _digest_folder(digest, path)
        else:
            digest.update(f"name:{model}".encode())
        return digest.hexdigest()
    _digest_model(digest, found.manifest, found.path)
    if found.is_adapter and found.base is not None:
        digest.update(b"base:")
        base_manifest = None
        if found.base_name is not None:
            try:
                base_manifest = resolve_model(found.base_name).manifest
            except SubplugError:
                base_manifest = None
        _digest_model(digest, base_manifest, found.base)
    return digest.hexdigest()


def _digest_model(digest: Any, manifest: Manifest | None, folder: Path) -> None:
    """Add one model part: its manifest's digests, or else its folder's file list."""
    if manifest is None:
        _digest_folder(digest, folder)
        return
    for rel, record in sorted(manifest.files.items()):
        digest.update(f"file:{rel}:{record.size}:{record.sha256}\n".encode())


def _digest_folder(digest: Any, folder: Path) -> None:
    """Add the relative name, size and mtime of every file under ``folder``, in a stable
    order (at most ``_FOLDER_LIMIT`` files)."""
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            rel = path.relative_to(folder).as_posix()
            digest.update(f"stat:{rel}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
            seen += 1
            if seen >= _FOLDER_LIMIT:
                return
