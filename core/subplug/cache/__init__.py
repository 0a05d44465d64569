"""The local model cache: pull, import, export, list, verify, remove, resolve.

Layout (``<home>`` is :func:`subplug_home`)::

    <home>/models/<name>/                 one complete model (Hugging Face folder layout)
    <home>/models/<name>/manifest.json    sha256 + size of every file, kind, base, source
    <home>/models/.partial-<name>-<pid>/  work in progress; never a complete model
    <home>/models/.trash-<name>-<pid>/    an entry being replaced or removed
    <home>/locks/                         one lock file per model name + one for the folder
    <home>/journal/                       per-chunk journals of the engine

A model only ever appears under its final name through one ``os.replace`` of a partial
folder that already holds every file and the manifest, so an interrupted pull or import
can never leave something that looks complete. Work on one name is serialised by that
name's file lock; changes to the set of entries (install, replace, remove, the
"is this base still used" check) by the folder lock. Locks are always taken in the order
name locks (sorted) → folder lock, so two processes cannot deadlock.

An adapter entry names its base entry in its manifest, so one base (a few GiB) is stored
once and shared by every adapter trained on it.

The modules, each importing only those above it in this list:

* :mod:`~subplug.cache.paths` — home, models, journal and locks folders; naming rules;
* :mod:`~subplug.cache.progress` — :class:`CacheProgress` reports;
* :mod:`~subplug.cache.manifest` — :class:`Manifest` / :class:`FileRecord`, read/write;
* :mod:`~subplug.cache.hub` — :data:`KNOWN_MODELS` and the downloaders;
* :mod:`~subplug.cache.storage` — hashing, copying in, syncing, disk errors;
* :mod:`~subplug.cache.locks` — name and folder locks (the lock order);
* :mod:`~subplug.cache.staging` — partial/trash folders, stale clean-up, :func:`install`;
* :mod:`~subplug.cache.resolve` — :func:`resolve_model`, :func:`find_derived`;
* :mod:`~subplug.cache.entries` — :func:`list_models`, :func:`verify`, :func:`remove`,
  :func:`build_model`, :func:`update_derived`;
* :mod:`~subplug.cache.archive` — :func:`export_model` and importing its ``.tar``;
* :mod:`~subplug.cache.importing` — :func:`import_model`, :func:`add_model`;
* :mod:`~subplug.cache.pull` — :func:`pull`.

Callers use this package's names (``from subplug import cache``; ``cache.resolve_model``).
"""

from __future__ import annotations

from subplug.cache.archive import EXPORT_FORMAT, EXPORT_HEADER, export_model
from subplug.cache.entries import (
    ModelEntry,
    VerifyReport,
    build_model,
    list_models,
    remove,
    update_derived,
    verify,
)
from subplug.cache.fingerprint import contents_fingerprint
from subplug.cache.hub import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    Downloader,
    DownloadError,
    HubDownloader,
    KnownModel,
    RemoteFile,
    RemoteSnapshot,
    known_models,
)
from subplug.cache.importing import add_model, import_model
from subplug.cache.manifest import MANIFEST_FORMAT, FileRecord, Manifest, ModelKind
from subplug.cache.paths import MANIFEST_NAME, journal_dir, models_dir, subplug_home, writes_dir
from subplug.cache.progress import CacheProgress, ProgressCallback, Stage
from subplug.cache.pull import pull
from subplug.cache.resolve import ResolvedModel, find_derived, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "EXPORT_FORMAT",
    "EXPORT_HEADER",
    "KNOWN_MODELS",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "CacheProgress",
    "DownloadError",
    "Downloader",
    "FileRecord",
    "HubDownloader",
    "KnownModel",
    "Manifest",
    "ModelEntry",
    "ModelKind",
    "ProgressCallback",
    "RemoteFile",
    "RemoteSnapshot",
    "ResolvedModel",
    "Stage",
    "VerifyReport",
    "add_model",
    "build_model",
    "contents_fingerprint",
    "export_model",
    "find_derived",
    "import_model",
    "journal_dir",
    "writes_dir",
    "known_models",
    "list_models",
    "models_dir",
    "pull",
    "remove",
    "resolve_model",
    "subplug_home",
    "update_derived",
    "verify",
]
