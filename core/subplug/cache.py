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
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import filelock

from subplug import __version__
from subplug.errors import SubplugError
from subplug.files import replace_atomic

ModelKind = Literal["full", "adapter"]
Stage = Literal["download", "copy", "extract", "export", "hash", "wait"]

#: The model used when none is named (``generate`` without ``--model``, ``models pull``).
DEFAULT_MODEL = "gemma3n-en-mn"
#: Name of the manifest inside every cache entry (and every exported model).
MANIFEST_NAME = "manifest.json"
#: First member of every archive made by :func:`export_model`.
EXPORT_HEADER = "subplug-export.json"
MANIFEST_FORMAT = 1
EXPORT_FORMAT = 1

_PARTIAL_PREFIX = ".partial-"
_TRASH_PREFIX = ".trash-"
_PARTIAL_MARKER = ".subplug-partial.json"
# Never copied into an entry: our own bookkeeping, git metadata, huggingface_hub's
# local-dir metadata (``.cache/huggingface``).
_RESERVED_TOP = frozenset({MANIFEST_NAME, _PARTIAL_MARKER, ".git", ".cache"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CHUNK = 4 * 1024 * 1024
_DEFAULT_LOCK_TIMEOUT = 600.0
# Names whose lock this process holds now (name → depth), to tell our own work in
# progress from leftovers of an earlier failure in the same process.
_HELD: dict[str, int] = {}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class KnownModel:
    """One entry of the registry of models ``subplug models pull`` can download."""

    name: str
    """Cache name it is stored under."""
    repo_id: str
    """Hugging Face repository."""
    kind: ModelKind
    base: str | None
    """For adapters: the registry name of the base model (pulled first, stored once)."""
    revision: str | None
    """Pinned commit. ``None``: the pull takes the current ``main`` and records the commit
    it got in the manifest; a later forced pull of that entry reuses that commit."""
    description: str


#: Models ``subplug models pull NAME`` knows. The default adapter's base is its own entry,
#: so other adapters on the same base share it.
KNOWN_MODELS: Mapping[str, KnownModel] = {
    "gemma-3n-e2b-it": KnownModel(
        name="gemma-3n-e2b-it",
        repo_id="google/gemma-3n-E2B-it",
        kind="full",
        base=None,
        revision=None,
        description="Gemma 3n E2B instruction-tuned (base model, gated: accept its license)",
    ),
    "gemma3n-en-mn": KnownModel(
        name="gemma3n-en-mn",
        repo_id="bilguun/gemma-3n-E2B-it-audio-en-mn",
        kind="adapter",
        base="gemma-3n-e2b-it",
        revision=None,
        description="English/Mongolian speech LoRA adapter for Gemma 3n E2B",
    ),
}


@dataclass(frozen=True)
class FileRecord:
    """One file of a cache entry, as recorded in its manifest."""

    sha256: str
    size: int
    mtime_ns: int | None = None
    """Modification time seen when the manifest was written (for the quick check)."""


@dataclass(frozen=True)
class Manifest:
    """The ``manifest.json`` of a cache entry (see docs/models.md for the JSON form)."""

    name: str
    kind: ModelKind
    base: str | None
    """For adapters: the name of the base entry in the same cache."""
    files: Mapping[str, FileRecord] = field(hash=False)
    """Relative POSIX path → record, for every file of the entry except the manifest."""
    source: str
    """Where it came from: ``hf://<repo>``, a folder, a ``.tar``, ``training:<folder>``."""
    repo_id: str | None
    revision: str | None
    """The commit the files came from, when known."""
    created: str
    """ISO 8601 UTC time the entry was made."""
    subplug_version: str
    derived: Mapping[str, Any] | None = field(default=None, hash=False)
    """For a copy made from another entry (``subplug models optimize``): ``from`` (the
    entry's name), ``from_contents`` (its contents' fingerprint then), ``quantize``
    (e.g. ``int8-trim``) and what else the maker recorded (quality figures)."""

    @property
    def size(self) -> int:
        """Total bytes of the entry's files."""
        return sum(r.size for r in self.files.values())

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON-ready data."""
        return {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "kind": self.kind,
            "base": self.base,
            "source": self.source,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "created": self.created,
            "subplug_version": self.subplug_version,
            **({"derived": dict(self.derived)} if self.derived is not None else {}),
            "files": {
                path: {"sha256": r.sha256, "size": r.size, "mtime_ns": r.mtime_ns}
                for path, r in sorted(self.files.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        """Parse manifest data; raises ``ValueError`` when it is not one of ours."""
        if not isinstance(data, Mapping) or data.get("format") != MANIFEST_FORMAT:
            raise ValueError("not a subplug manifest (format 1)")
        kind = data.get("kind")
        if kind not in ("full", "adapter"):
            raise ValueError(f"unknown kind {kind!r}")
        files_data = data.get("files")
        if not isinstance(files_data, Mapping):
            raise ValueError("no file list")
        files: dict[str, FileRecord] = {}
        for path, rec in files_data.items():
            if not isinstance(path, str) or not _safe_relpath(path):
                raise ValueError(f"unsafe file name {path!r}")
            if not isinstance(rec, Mapping):
                raise ValueError(f"bad record for {path!r}")
            sha, size, mtime = rec.get("sha256"), rec.get("size"), rec.get("mtime_ns")
            if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
                raise ValueError(f"bad sha256 for {path!r}")
            if not isinstance(size, int) or size < 0:
                raise ValueError(f"bad size for {path!r}")
            files[path] = FileRecord(sha, size, mtime if isinstance(mtime, int) else None)
        name = data.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"bad model name {name!r}")
        base = data.get("base")
        derived = data.get("derived")
        return cls(
            derived=dict(derived) if isinstance(derived, Mapping) else None,
            name=name,
            kind=kind,
            base=base if isinstance(base, str) else None,
            files=files,
            source=str(data.get("source") or ""),
            repo_id=_opt_str(data.get("repo_id")),
            revision=_opt_str(data.get("revision")),
            created=str(data.get("created") or ""),
            subplug_version=str(data.get("subplug_version") or ""),
        )


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


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: what :func:`resolve_model` returns to backends."""

    name: str | None
    """Cache name, or ``None`` for a folder given by path."""
    path: Path
    """Folder of the full model, or of the adapter."""
    is_adapter: bool
    base: Path | None
    """For adapters: the base model's folder."""
    manifest: Manifest | None
    """The cache manifest (``None`` for a folder given by path)."""
    base_name: str | None = None
    """For adapters whose base is a cache entry: its name."""


@dataclass(frozen=True)
class CacheProgress:
    """One progress report of a cache operation (bytes)."""

    model: str
    stage: Stage
    done: int
    total: int | None


ProgressCallback = Callable[[CacheProgress], None]


@dataclass(frozen=True)
class RemoteFile:
    """A file of a remote snapshot."""

    path: str
    size: int | None
    sha256: str | None = None
    """The Hub's LFS sha256 when it has one (large files); checked after download."""


@dataclass(frozen=True)
class RemoteSnapshot:
    """A repository at one commit: what a :class:`Downloader` resolved."""

    repo_id: str
    commit: str
    files: tuple[RemoteFile, ...]


class DownloadError(Exception):
    """A downloader could not reach or read the remote (network down, 404, gated…)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class Downloader(Protocol):
    """Fetches repositories. :class:`HubDownloader` is the real one; tests inject others.

    Network and remote failures raise :class:`DownloadError` (or ``ConnectionError`` /
    ``TimeoutError``); a full disk raises ``OSError(ENOSPC)``.
    """

    def resolve(self, repo_id: str, revision: str | None) -> RemoteSnapshot:
        """Pin ``revision`` (``None`` = main) to a commit and list its files."""
        ...

    def fetch(self, snapshot: RemoteSnapshot, dest: Path) -> None:
        """Download every file of ``snapshot`` into ``dest``, resuming what is there."""
        ...


class HubDownloader:
    """:class:`Downloader` over ``huggingface_hub`` (token and ``HF_ENDPOINT`` as usual)."""

    def __init__(
        self, *, endpoint: str | None = None, token: str | bool | None = None, max_workers: int = 8
    ) -> None:
        self.endpoint = endpoint
        self.token = token
        self.max_workers = max_workers

    def resolve(self, repo_id: str, revision: str | None) -> RemoteSnapshot:
        """Ask the Hub for the commit of ``revision`` and the files at that commit."""
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        api = HfApi(endpoint=self.endpoint, token=self.token)
        with _hub_errors(repo_id):
            info = api.repo_info(repo_id, revision=revision)
            commit = info.sha
            if not commit:
                raise DownloadError(f"the Hub did not say which commit {repo_id} is at")
            files = tuple(
                RemoteFile(f.path, f.size, f.lfs.sha256 if f.lfs is not None else None)
                for f in api.list_repo_tree(repo_id, recursive=True, revision=commit)
                if isinstance(f, RepoFile)
            )
        return RemoteSnapshot(repo_id, commit, files)

    def fetch(self, snapshot: RemoteSnapshot, dest: Path) -> None:
        """``snapshot_download`` into ``dest`` (its ``.incomplete`` files make it resumable)."""
        from huggingface_hub import snapshot_download
        from tqdm.auto import tqdm

        class _Silent(tqdm):  # type: ignore[misc, type-arg]
            # Our own rich bar reports progress; keep huggingface_hub's bars quiet.
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.pop("name", None)
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)

        with _hub_errors(snapshot.repo_id):
            snapshot_download(
                snapshot.repo_id,
                revision=snapshot.commit,
                local_dir=dest,
                endpoint=self.endpoint,
                token=self.token,
                max_workers=self.max_workers,
                allow_patterns=[f.path for f in snapshot.files],
                tqdm_class=_Silent,
            )


@contextmanager
def _hub_errors(repo_id: str) -> Iterator[None]:
    """Turn huggingface_hub's network/remote failures into :class:`DownloadError`."""
    import httpx2
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError as e:
        raise DownloadError(
            f"{repo_id} is gated: {_first_line(e)}",
            f"Accept its license on https://huggingface.co/{repo_id} and log in with "
            "`hf auth login` (or set HF_TOKEN), then run the same command again.",
        ) from e
    except RepositoryNotFoundError as e:
        raise DownloadError(f"repository {repo_id} not found (or private)") from e
    except RevisionNotFoundError as e:
        raise DownloadError(f"revision not found in {repo_id}: {_first_line(e)}") from e
    except (HfHubHTTPError, EntryNotFoundError, httpx2.HTTPError) as e:
        raise DownloadError(_first_line(e)) from e
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        if isinstance(e, (ConnectionError, TimeoutError, FileNotFoundError)) or e.errno is None:
            raise DownloadError(_first_line(e)) from e
        raise


# --------------------------------------------------------------------------- locations


def subplug_home() -> Path:
    """subplug's data folder: ``$SUBPLUG_HOME`` if set, else the platform's *user data*
    folder for "subplug" (``~/.local/share/subplug`` on Linux, ``~/Library/Application
    Support/subplug`` on macOS, ``%LOCALAPPDATA%\\subplug`` on Windows).

    The data folder rather than the cache folder: models are big, slow to fetch and must
    not be wiped by cache cleaners. Nothing is created by this call.
    """
    env = os.environ.get("SUBPLUG_HOME")
    if env:
        return Path(env).expanduser().absolute()
    from platformdirs import user_data_path

    return user_data_path("subplug", appauthor=False)


def models_dir() -> Path:
    """``<home>/models``: one folder per cache entry (not created by this call)."""
    return subplug_home() / "models"


def journal_dir() -> Path:
    """``<home>/journal``: where the engine keeps per-chunk journals (not created here)."""
    return subplug_home() / "journal"


def known_models() -> Mapping[str, KnownModel]:
    """The registry ``models pull`` downloads from (name → :class:`KnownModel`)."""
    return KNOWN_MODELS


# --------------------------------------------------------------------------- public API


def list_models() -> list[ModelEntry]:
    """Every entry of the cache, complete or not, sorted by name.

    Partial folders are listed with ``complete=False``; stale partial imports of dead
    processes are removed first (interrupted pulls are kept: the next pull resumes them).
    """
    root = models_dir()
    if not root.is_dir():
        return []
    with suppress(OSError):
        _clean_stale(root)
    entries: list[ModelEntry] = []
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        if child.name.startswith(_PARTIAL_PREFIX):
            entries.append(_partial_entry(child))
        elif not child.name.startswith("."):
            entries.append(_entry_for(child))
    entries.sort(key=lambda e: (e.name, not e.complete))
    return entries


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
    if known.base and not _is_complete(models_dir() / known.base):
        pull(known.base, downloader=downloader, progress=progress)
    return _pull_one(known, force=force, revision=revision, dl=downloader, progress=progress)


def import_model(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    base: str | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> ModelEntry:
    """Copy a model into the cache from a folder or from a ``.tar`` made by :func:`export_model`.

    A folder is a full model (``config.json``) or an adapter (``adapter_config.json``;
    its base must already be in the cache: ``base`` names it, otherwise it is found from
    ``base_model_name_or_path``). A folder that is a copied cache entry, or a ``.tar``,
    carries a manifest: every file is checked against it. ``name`` renames the model;
    for a ``.tar`` holding an adapter and its base, ``base`` renames the base.

    Raises ``SubplugError``: ``model-exists`` (without ``force``), ``not-a-model``,
    ``base-model-missing``, ``model-corrupt``, ``unsafe-archive``, ``disk-full``,
    ``cache-not-writable``, ``model-source-unreadable``, ``cache-busy``.
    """
    src = Path(path).expanduser()
    if src.is_dir():
        return _import_folder(src, name=name, base=base, force=force, progress=progress)
    if src.is_file():
        return _import_tar(src, name=name, base=base, force=force, progress=progress)
    raise SubplugError(
        "import-source-missing",
        f"There is no folder or .tar at {src}.",
        "Give the model folder (with config.json or adapter_config.json) or a .tar made "
        "by `subplug models export`.",
    )


def add_model(
    name: str,
    src_dir: str | os.PathLike[str],
    *,
    kind: ModelKind,
    base: str | None = None,
    force: bool = False,
    source: str | None = None,
    progress: ProgressCallback | None = None,
) -> ModelEntry:
    """Put a finished model folder (e.g. a trained adapter) into the cache as ``name``.

    Same copy, manifest and atomic rename as :func:`import_model`; ``kind`` and ``base``
    (the base entry's name, required for adapters) are given instead of guessed.
    """
    if kind == "adapter" and not base:
        raise SubplugError(
            "base-model-missing",
            f"Adapter {name!r} needs the name of its base model in the cache.",
            "Pass base=NAME (a model listed by `subplug models list`).",
        )
    return _import_folder(
        Path(src_dir),
        name=name,
        base=base,
        force=force,
        progress=progress,
        kind=kind,
        source=source or f"training:{Path(src_dir).absolute()}",
    )


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
    _check_name(name)
    root = _writable_models_dir()
    _clean_stale(root)
    with _name_locks([name], progress):
        _refuse_existing(root, name, force)
        partial = root / f"{_PARTIAL_PREFIX}{name}-{os.getpid()}"
        _make_partial(partial)
        _write_marker(partial, {"operation": "build", "name": name, "pid": os.getpid()})
        try:
            with _write_errors(root, what=f"make {name}"):
                build(partial)
            rels = _walk_files(partial)
            total = sum((partial / rel).stat().st_size for rel in rels)
            files: dict[str, FileRecord] = {}
            done = 0
            for rel in rels:
                start = done

                def on_bytes(n: int, start: int = start) -> None:
                    _report(progress, name, "hash", start + n, total)

                path = partial / rel
                _fsync_file(path)
                files[rel] = FileRecord(
                    _hash_file(path, on_bytes), path.stat().st_size, path.stat().st_mtime_ns
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
                created=_now(),
                subplug_version=__version__,
                derived=dict(derived) if derived is not None else None,
            )
            _install(partial, manifest, force=force, root=root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return _entry_for(root / name)


def update_derived(name: str, changes: Mapping[str, Any]) -> Manifest:
    """Add ``changes`` to entry ``name`` 's :attr:`Manifest.derived` (e.g. quality
    figures measured after it was made); the manifest is replaced atomically."""
    root = _writable_models_dir()
    with _name_locks([name]):
        manifest = _require_manifest(name)
        updated = replace(manifest, derived={**(manifest.derived or {}), **changes})
        _write_manifest(root / name, updated)
    return updated


def find_derived(source: str, **wanted: Any) -> ResolvedModel | None:
    """A complete entry made from entry ``source`` whose :attr:`Manifest.derived`
    matches every ``wanted`` key (e.g. ``quantize="int8-trim"``, ``from_contents=…``),
    checked like any resolved entry; ``None`` when there is none."""
    root = models_dir()
    if not root.is_dir():
        return None
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        manifest = _read_manifest(child)
        derived = manifest.derived if manifest is not None else None
        if not derived or derived.get("from") != source:
            continue
        if all(derived.get(key) == value for key, value in wanted.items()):
            return _resolve_entry(child.name)
    return None


def export_model(
    name: str,
    dest: str | os.PathLike[str],
    *,
    with_base: bool = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Write cache entry ``name`` (and, for an adapter with ``with_base``, its base) to a
    ``.tar`` that :func:`import_model` reads on another machine. ``dest`` is a file or an
    existing folder (then ``<dest>/<name>.tar``). Every file is hashed while it is written
    and checked against the manifest, so a damaged entry is never exported. Returns the
    archive's path.
    """
    root = models_dir()
    manifest = _require_manifest(name)
    order = [manifest]
    if with_base and manifest.kind == "adapter" and manifest.base:
        order.insert(0, _require_manifest(manifest.base))
    target = Path(dest).expanduser()
    if target.is_dir():
        target = target / f"{name}.tar"
    if target.exists() and not force:
        raise SubplugError(
            "file-exists",
            f"{target} already exists.",
            "Choose another destination or pass --force to replace it.",
        )
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    total = sum(m.size for m in order)
    header = {
        "format": EXPORT_FORMAT,
        "subplug_version": __version__,
        "created": _now(),
        "main": name,
        "models": [m.name for m in order],
    }
    try:
        with _write_errors(target.parent, what=f"export {name}"):
            with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
                _add_bytes(tar, EXPORT_HEADER, json.dumps(header, indent=2).encode())
                done = 0
                for m in order:
                    _add_bytes(tar, f"{m.name}/{MANIFEST_NAME}", _manifest_bytes(m))
                    for rel, rec in sorted(m.files.items()):
                        _export_file(
                            tar, root / m.name, m.name, rel, rec, progress, name, done, total
                        )
                        done += rec.size
            _fsync_file(tmp)
            os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    return target


def verify(name: str, *, progress: ProgressCallback | None = None) -> VerifyReport:
    """Hash every file of entry ``name`` and compare with its manifest."""
    folder = models_dir() / name
    manifest = _require_manifest(name)
    present = set(_walk_files(folder))
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
            _report(progress, name, "hash", start + n, total)

        if _hash_file(file_path, on_bytes) != rec.sha256:
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
    root = _writable_models_dir()
    _clean_stale(root)
    with ExitStack() as stack:
        stack.enter_context(_name_locks([name]))
        folder = root / name
        partials = [p for p in root.glob(f"{_PARTIAL_PREFIX}{name}-*") if _partial_name(p) == name]
        if not folder.is_dir() and not partials:
            raise _not_found(name)
        stack.enter_context(_folder_lock())
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
            trash = root / f"{_TRASH_PREFIX}{name}-{os.getpid()}"
            try:
                os.replace(folder, trash)
            except OSError as e:
                raise _write_error(e, root, f"remove {name}") from e
            doomed.append(trash)
        doomed.extend(partials)
    for d in doomed:
        freed += _du(d)
        shutil.rmtree(d, ignore_errors=True)
    return freed


def resolve_model(spec: str | None = None, *, base: str | None = None) -> ResolvedModel:
    """Find the model ``spec`` names, ready for a backend to load.

    ``None`` → :data:`DEFAULT_MODEL`. A name of a cache entry → that entry (after a
    quick integrity check: every file's size and mtime against the manifest, re-hashing
    files whose mtime moved). Otherwise an existing folder path → used as is; an adapter
    folder's base comes from ``base`` (a cache name or folder) or its
    ``adapter_config.json`` ``base_model_name_or_path`` (a local folder, a cache name, or
    a Hub id some cache entry was pulled or imported from). A bare name that is both a
    cache entry and a folder in the current directory means the cache entry; write
    ``./NAME`` for the folder.

    Raises ``SubplugError``: ``model-not-found`` (hint names ``subplug models pull`` and
    ``subplug models import``), ``model-corrupt``, ``not-a-model``.
    """
    spec = spec or DEFAULT_MODEL
    looks_like_path = os.sep in spec or "/" in spec or spec.startswith((".", "~"))
    if not looks_like_path and _NAME_RE.match(spec) and (models_dir() / spec).exists():
        resolved = _resolve_entry(spec)
        if base is not None and resolved.is_adapter:
            return replace(resolved, base=_resolve_base_spec(base, spec), base_name=None)
        return resolved
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return _resolve_folder(folder, base)
    if looks_like_path:
        raise SubplugError(
            "model-not-found",
            f"There is no model folder at {folder}.",
            _MISSING_HINT.format(name="NAME"),
        )
    raise _not_found(spec)


# --------------------------------------------------------------------------- resolve


_MISSING_HINT = (
    "Download it with `subplug models pull {name}` (needs internet), or on a machine "
    "without internet copy it over (e.g. a .tar from `subplug models export` on a USB "
    "stick) and run `subplug models import PATH`."
)


def _not_found(name: str) -> SubplugError:
    partial = any(_partial_name(p) == name for p in _partials(models_dir()))
    where = models_dir()
    if partial:
        message = f"Model {name!r} is only partly downloaded in {where}."
        hint = (
            f"Run `subplug models pull {name}` again to resume, or import it with "
            "`subplug models import PATH`."
        )
        return SubplugError("model-not-found", message, hint)
    pull_name = name if name in KNOWN_MODELS else "NAME"
    return SubplugError(
        "model-not-found",
        f"Model {name!r} is not in the model cache ({where}).",
        _MISSING_HINT.format(name=pull_name),
    )


def _resolve_entry(name: str) -> ResolvedModel:
    folder = models_dir() / name
    manifest = _quick_check(name)
    if manifest.kind == "full":
        return ResolvedModel(name, folder, False, None, manifest)
    base_name = manifest.base
    if base_name is None:
        base_path, base_entry = _base_from_config(folder)
        return ResolvedModel(name, folder, True, base_path, manifest, base_entry)
    if not (models_dir() / base_name).exists():
        err = _not_found(base_name)
        raise SubplugError(
            "model-not-found",
            f"Adapter {name!r} needs its base model {base_name!r}, which is not in the "
            f"model cache ({models_dir()}).",
            err.hint,
        )
    base_manifest = _quick_check(base_name)
    if base_manifest.kind != "full":
        raise SubplugError(
            "model-corrupt",
            f"The base of adapter {name!r}, {base_name!r}, is itself an adapter.",
            f"Re-import {name} with --base naming a full model.",
        )
    return ResolvedModel(name, folder, True, models_dir() / base_name, manifest, base_name)


def _resolve_folder(folder: Path, base: str | None) -> ResolvedModel:
    folder = folder.absolute()
    if (folder / "adapter_config.json").is_file():
        if base:
            return ResolvedModel(None, folder, True, _resolve_base_spec(base, str(folder)), None)
        base_path, base_entry = _base_from_config(folder)
        return ResolvedModel(None, folder, True, base_path, None, base_entry)
    if (folder / "config.json").is_file():
        return ResolvedModel(None, folder, False, None, None)
    raise SubplugError(
        "not-a-model",
        f"{folder} holds neither config.json (a full model) nor adapter_config.json (an adapter).",
        "Point --model at a model folder in Hugging Face layout, or at a cache name "
        "from `subplug models list`.",
    )


def _resolve_base_spec(spec: str, adapter: str) -> Path:
    resolved = resolve_model(spec)
    if resolved.is_adapter:
        raise SubplugError(
            "not-a-model",
            f"The base given for {adapter}, {spec!r}, is an adapter, not a full model.",
            "Name a full model (a cache entry or a folder with config.json).",
        )
    return resolved.path


def _base_from_config(adapter: Path) -> tuple[Path, str | None]:
    """The base of an adapter folder (and its cache name, if it is an entry), from
    ``adapter_config.json``."""
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SubplugError(
            "model-corrupt",
            f"Cannot read {adapter / 'adapter_config.json'}: {e}",
            "Re-import or re-download the adapter.",
        ) from e
    ref = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(ref, str) or not ref:
        raise SubplugError(
            "base-model-missing",
            f"The adapter at {adapter} does not name its base model.",
            "Give the base with --base NAME|PATH.",
        )
    for candidate in (Path(ref).expanduser(), adapter / ref):
        if candidate.is_dir() and (candidate / "config.json").is_file():
            return candidate.absolute(), None
    entry = _find_entry_for(ref)
    if entry is not None:
        return _resolve_entry(entry).path, entry
    hint_name = next((k.name for k in KNOWN_MODELS.values() if _same_repo(k.repo_id, ref)), "NAME")
    raise SubplugError(
        "model-not-found",
        f"The adapter at {adapter} needs its base model {ref!r}, which is not in the model "
        f"cache ({models_dir()}).",
        _MISSING_HINT.format(name=hint_name),
    )


def _find_entry_for(ref: str) -> str | None:
    """A complete full-model entry for ``ref``: named so, pulled/imported from repo ``ref``,
    or stored under the registry name of repo ``ref``."""
    root = models_dir()
    if _NAME_RE.match(ref) and _is_complete(root / ref):
        return ref
    if not root.is_dir():
        return None
    for known in KNOWN_MODELS.values():
        if known.kind == "full" and _same_repo(known.repo_id, ref):
            m = _read_manifest(root / known.name)
            if (
                m is not None
                and m.kind == "full"
                and (m.repo_id is None or _same_repo(m.repo_id, ref))
            ):
                return known.name
    for child in sorted(root.iterdir()):
        if child.name.startswith("."):
            continue
        m = _read_manifest(child)
        if m is not None and m.kind == "full" and m.repo_id and _same_repo(m.repo_id, ref):
            return child.name
    return None


def _quick_check(name: str) -> Manifest:
    """Size and mtime of every file against the manifest; re-hash files whose mtime moved."""
    folder = models_dir() / name
    manifest = _read_manifest(folder)
    hint = (
        f"Run `subplug models verify {name}` to see what is wrong, then import or pull it "
        "again with --force."
    )
    if manifest is None:
        raise SubplugError(
            "model-corrupt", f"Model {name!r} has no valid {MANIFEST_NAME} ({folder}).", hint
        )
    refreshed: dict[str, FileRecord] = {}
    for rel, rec in manifest.files.items():
        try:
            st = (folder / rel).stat()
        except OSError:
            raise SubplugError(
                "model-corrupt", f"Model {name!r} is damaged: {rel} is missing.", hint
            ) from None
        if st.st_size != rec.size:
            raise SubplugError(
                "model-corrupt", f"Model {name!r} is damaged: {rel} has changed size.", hint
            )
        if st.st_mtime_ns != rec.mtime_ns:
            if _hash_file(folder / rel) != rec.sha256:
                raise SubplugError(
                    "model-corrupt", f"Model {name!r} is damaged: {rel} has changed.", hint
                )
            refreshed[rel] = replace(rec, mtime_ns=st.st_mtime_ns)
    if refreshed:
        # Same bytes, new mtime (touched, copied back): remember it so the next resolve
        # is quick again. Best effort: skip when another process holds the entry.
        updated = replace(manifest, files={**manifest.files, **refreshed})
        lock = filelock.FileLock(_name_lock_path(name))
        with suppress(OSError, filelock.Timeout):
            lock.acquire(timeout=0)
            try:
                _write_manifest(folder, updated)
            finally:
                lock.release()
    return manifest


# --------------------------------------------------------------------------- pull


def _pull_one(
    known: KnownModel,
    *,
    force: bool,
    revision: str | None,
    dl: Downloader,
    progress: ProgressCallback | None,
) -> ModelEntry:
    root = _writable_models_dir()
    _clean_stale(root)
    name = known.name
    with _name_locks([name], progress):
        final = root / name
        existing = _read_manifest(final) if final.is_dir() else None
        if existing is not None and not force:
            return _entry_for(final)
        wanted = revision or known.revision or (existing.revision if existing else None)
        partial, marker = _claim_pull_partial(root, name, known.repo_id)
        snapshot = _snapshot_from_marker(marker, known.repo_id, wanted)
        try:
            if snapshot is None:
                snapshot = dl.resolve(known.repo_id, wanted)
                if marker.get("commit") not in (None, snapshot.commit):
                    _empty_folder(partial)
                _write_marker(partial, _pull_marker(name, wanted, snapshot))
            total = sum(f.size or 0 for f in snapshot.files)
            _check_space(root, total - _du(partial), name)
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
                f"Could not download {known.repo_id} ({name}): {_first_line(e)}",
                hint,
            ) from e
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                shutil.rmtree(partial, ignore_errors=True)
            raise _write_error(e, root, f"download {name}") from e
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
            created=_now(),
            subplug_version=__version__,
        )
        shutil.rmtree(partial / ".cache", ignore_errors=True)
        for stray in set(_walk_files(partial)) - set(files):
            (partial / stray).unlink()
        _install(partial, manifest, force=True, root=root)
    return _entry_for(root / name)


def _claim_pull_partial(root: Path, name: str, repo_id: str) -> tuple[Path, dict[str, Any]]:
    """Reuse an interrupted pull of ``name`` (we hold its lock, so nobody else owns one)."""
    mine = root / f"{_PARTIAL_PREFIX}{name}-{os.getpid()}"
    for old in _partials(root):
        if _partial_name(old) != name or old == mine:
            continue
        marker = _read_marker(old)
        if (
            marker.get("operation") == "pull"
            and marker.get("repo_id") == repo_id
            and (not mine.exists())
        ):
            os.replace(old, mine)
        else:
            shutil.rmtree(old, ignore_errors=True)
    if mine.is_dir():
        return mine, _read_marker(mine)
    _make_partial(mine)
    marker = {"operation": "pull", "name": name, "repo_id": repo_id, "pid": os.getpid()}
    _write_marker(mine, marker)
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
    if not all(_safe_relpath(f.path) for f in files):
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
        if not _safe_relpath(rf.path) or rf.path.split("/")[0] in _RESERVED_TOP:
            raise DownloadError(f"the repository holds a file subplug cannot store: {rf.path}")
        target = partial / rf.path
        if not target.is_file():
            raise DownloadError(f"the download stopped before {rf.path} arrived")
        size = target.stat().st_size
        if rf.size is not None and size != rf.size:
            raise DownloadError(f"{rf.path} arrived incomplete ({size} of {rf.size} bytes)")
        start = done

        def on_bytes(n: int, start: int = start) -> None:
            _report(progress, name, "hash", start + n, total)

        digest = _hash_file(target, on_bytes)
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
            progress(CacheProgress(name, "download", min(_du(folder), total), total))
            if stop.wait(0.5):
                return

    thread = threading.Thread(target=poll, name="subplug-pull-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    progress(CacheProgress(name, "download", min(_du(folder), total), total))


# --------------------------------------------------------------------------- import


def _import_folder(
    src: Path,
    *,
    name: str | None,
    base: str | None,
    force: bool,
    progress: ProgressCallback | None,
    kind: ModelKind | None = None,
    source: str | None = None,
) -> ModelEntry:
    src = src.absolute()
    carried = _read_manifest(src)
    if kind is None:
        if (src / "adapter_config.json").is_file():
            kind = "adapter"
        elif (src / "config.json").is_file():
            kind = "full"
        else:
            raise SubplugError(
                "not-a-model",
                f"{src} holds neither config.json (a full model) nor adapter_config.json "
                "(an adapter).",
                "Import the folder that holds the model files (Hugging Face layout), or a "
                ".tar made by `subplug models export`.",
            )
    repo_id, revision = _hf_snapshot_origin(src)
    if carried is not None:
        repo_id, revision = carried.repo_id or repo_id, carried.revision or revision
    if name is None:
        name = carried.name if carried is not None else _default_name(src, repo_id)
    _check_name(name)
    base_name: str | None = None
    if kind == "adapter":
        base_name = _adapter_base(src, name, base, carried)
    root = _writable_models_dir()
    _clean_stale(root)
    rels = _walk_files(src)
    with _name_locks([name], progress):
        _refuse_existing(root, name, force)
        partial = root / f"{_PARTIAL_PREFIX}{name}-{os.getpid()}"
        _make_partial(partial)
        _write_marker(partial, {"operation": "import", "name": name, "pid": os.getpid()})
        try:
            sizes = {rel: _src_size(src / rel) for rel in rels}
            total = sum(sizes.values())
            _check_space(root, total, name)
            files: dict[str, FileRecord] = {}
            done = 0
            for rel in rels:
                start = done

                def on_bytes(n: int, start: int = start) -> None:
                    _report(progress, name, "copy", start + n, total)

                files[rel] = _copy_in(src / rel, partial / rel, on_bytes, root, name)
                done += files[rel].size
            if carried is not None:
                _compare(carried, files, name, str(src))
            manifest = Manifest(
                name=name,
                kind=kind,
                base=base_name,
                files=files,
                source=source or str(src),
                repo_id=repo_id,
                revision=revision,
                created=_now(),
                subplug_version=__version__,
            )
            _install(partial, manifest, force=force, root=root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return _entry_for(root / name)


def _adapter_base(src: Path, name: str, base: str | None, carried: Manifest | None) -> str:
    """The cache entry an adapter being imported stands on."""
    if base is not None:
        _check_name(base)
        if not _is_complete(models_dir() / base):
            raise _base_missing(name, base, explicit=True)
        return base
    if carried is not None and carried.base and _is_complete(models_dir() / carried.base):
        return carried.base
    known = KNOWN_MODELS.get(name)
    if known is not None and known.base and _is_complete(models_dir() / known.base):
        return known.base
    ref = None
    with suppress(OSError, ValueError, AttributeError):
        ref = json.loads((src / "adapter_config.json").read_text("utf-8")).get(
            "base_model_name_or_path"
        )
    if isinstance(ref, str) and ref:
        entry = _find_entry_for(ref)
        if entry is not None:
            return entry
    wanted = (carried.base if carried else None) or (known.base if known else None) or ref
    raise _base_missing(name, wanted, explicit=False)


def _base_missing(name: str, base: str | None, *, explicit: bool) -> SubplugError:
    what = f"its base model {base!r}" if base else "its base model"
    hint_pull = next(
        (
            k.name
            for k in KNOWN_MODELS.values()
            if base and (k.name == base or _same_repo(k.repo_id, base))
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


def _import_tar(
    archive: Path,
    *,
    name: str | None,
    base: str | None,
    force: bool,
    progress: ProgressCallback | None,
) -> ModelEntry:
    archive = archive.absolute()
    root = _writable_models_dir()
    _clean_stale(root)
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - the with below closes it
    except (tarfile.TarError, OSError) as e:
        raise SubplugError(
            "not-a-model-archive",
            f"{archive} is not a readable .tar archive: {e}",
            "Import a .tar made by `subplug models export`, or the model's folder.",
        ) from e
    with tar:
        members, header, carried = _read_archive_index(tar, archive)
        main = header["main"]
        renames = {main: name or main}
        carried_base = carried[main].base
        if carried_base in carried and carried_base != main:
            renames[carried_base] = base or carried_base
        for n in renames.values():
            _check_name(n)
        plan: list[Manifest] = []
        for original in header["models"]:
            m = carried[original]
            new_base = m.base
            if m.kind == "adapter":
                new_base = renames.get(m.base or "", base or m.base)
            plan.append(replace(m, name=renames[original], base=new_base))
        with _name_locks(sorted(renames.values()), progress):
            todo: list[tuple[str, Manifest]] = []
            for original, m in zip(header["models"], plan, strict=True):
                existing = _read_manifest(root / m.name)
                if original != main and existing is not None and not force:
                    if _same_files(existing, m):
                        continue  # the carried base is already here
                    raise SubplugError(
                        "model-exists",
                        f"A different model named {m.name!r} is already in the cache.",
                        "Pass --base OTHER_NAME to import the carried base under another "
                        "name, or --force to replace it.",
                    )
                _refuse_existing(root, m.name, force)
                todo.append((original, m))
            main_m = plan[header["models"].index(main)]
            if main_m.kind == "adapter":
                pending = {m.name for _, m in todo}
                if not main_m.base or (
                    main_m.base not in pending and not _is_complete(root / main_m.base)
                ):
                    raise _base_missing(main_m.name, main_m.base, explicit=base is not None)
            total = sum(m.size for _, m in todo)
            _check_space(root, total, main_m.name)
            partials: dict[str, Path] = {}
            try:
                for original, m in todo:
                    partials[original] = root / f"{_PARTIAL_PREFIX}{m.name}-{os.getpid()}"
                    _make_partial(partials[original])
                    _write_marker(
                        partials[original],
                        {"operation": "import", "name": m.name, "pid": os.getpid()},
                    )
                got: dict[str, dict[str, FileRecord]] = {o: {} for o in partials}
                done = 0
                for member in members:
                    top, _, rel = member.name.partition("/")
                    if top not in partials or not member.isfile() or rel == MANIFEST_NAME:
                        continue
                    if rel not in carried[top].files:
                        raise _corrupt_archive(archive, f"{member.name} is not in its manifest")
                    fh = tar.extractfile(member)
                    if fh is None:
                        raise _corrupt_archive(archive, f"cannot read {member.name}")
                    start = done

                    def on_bytes(n: int, start: int = start) -> None:
                        _report(progress, main_m.name, "extract", start + n, total)

                    with fh:
                        got[top][rel] = _copy_stream_in(
                            fh, partials[top] / rel, on_bytes, root, main_m.name
                        )
                    done += got[top][rel].size
                for original, m in todo:
                    _compare(carried[original], got[original], m.name, str(archive))
                    final = replace(
                        m,
                        files=got[original],
                        source=str(archive),
                        created=_now(),
                        subplug_version=__version__,
                    )
                    _install(partials[original], final, force=force, root=root)
            except tarfile.TarError as e:
                raise _corrupt_archive(archive, str(e)) from e
            finally:
                for p in partials.values():
                    shutil.rmtree(p, ignore_errors=True)
    return _entry_for(root / renames[main])


def _read_archive_index(
    tar: tarfile.TarFile, archive: Path
) -> tuple[list[tarfile.TarInfo], dict[str, Any], dict[str, Manifest]]:
    """Check every member before anything is written; read header and manifests."""
    try:
        members = tar.getmembers()
    except tarfile.TarError as e:
        raise _corrupt_archive(archive, str(e)) from e
    dummy_dest = str(models_dir() / ".tar-check")
    for member in members:
        if not (member.isfile() or member.isdir()):
            raise _unsafe(archive, f"{member.name!r} is a link or special file")
        if not _safe_relpath(member.name.rstrip("/")):
            raise _unsafe(archive, f"{member.name!r} points outside the archive's folder")
        try:
            tarfile.data_filter(member, dummy_dest)
        except tarfile.FilterError as e:
            raise _unsafe(archive, str(e)) from e
    by_name = {m.name: m for m in members}
    if len(by_name) != len(members):
        raise _unsafe(archive, "it holds the same file twice")
    try:
        header = json.loads(_member_bytes(tar, by_name, EXPORT_HEADER))
        models = header["models"]
        main = header["main"]
        if header.get("format") != EXPORT_FORMAT or not isinstance(models, list):
            raise ValueError("unknown export format")
        if main not in models or not all(isinstance(n, str) and _NAME_RE.match(n) for n in models):
            raise ValueError("bad model list")
        carried = {
            n: Manifest.from_json(json.loads(_member_bytes(tar, by_name, f"{n}/{MANIFEST_NAME}")))
            for n in models
        }
    except (KeyError, ValueError, TypeError) as e:
        raise SubplugError(
            "not-a-model-archive",
            f"{archive} is not an archive made by `subplug models export` ({e}).",
            "Import the model's folder instead, or export it again with `subplug models export`.",
        ) from e
    for member in members:
        top = member.name.split("/")[0]
        if member.name != EXPORT_HEADER and top not in carried:
            raise _unsafe(archive, f"{member.name!r} belongs to no model of the archive")
    return members, header, carried


def _member_bytes(tar: tarfile.TarFile, by_name: Mapping[str, tarfile.TarInfo], name: str) -> bytes:
    member = by_name.get(name)
    if member is None or not member.isfile() or member.size > 64 * 1024 * 1024:
        raise KeyError(name)
    fh = tar.extractfile(member)
    if fh is None:
        raise KeyError(name)
    with fh:
        return fh.read()


def _unsafe(archive: Path, why: str) -> SubplugError:
    return SubplugError(
        "unsafe-archive",
        f"Refusing to import {archive}: {why}.",
        "Only import archives made by `subplug models export` from a source you trust.",
    )


def _corrupt_archive(archive: Path, why: str) -> SubplugError:
    return SubplugError(
        "model-corrupt",
        f"The archive {archive} is damaged: {why}.",
        "Export it again (`subplug models export NAME DEST`) and copy it once more.",
    )


def _compare(carried: Manifest, files: Mapping[str, FileRecord], name: str, src: str) -> None:
    missing = sorted(set(carried.files) - set(files))
    changed = sorted(
        rel
        for rel, rec in files.items()
        if rel in carried.files and carried.files[rel].sha256 != rec.sha256
    )
    extra = sorted(set(files) - set(carried.files))
    if missing or changed or extra:
        parts = [
            f"{label}: {', '.join(v[:3])}"
            for label, v in (("missing", missing), ("changed", changed), ("extra", extra))
            if v
        ]
        raise SubplugError(
            "model-corrupt",
            f"{src} does not match its manifest ({'; '.join(parts)}); {name} was not imported.",
            "Copy the model again from its source (a damaged USB copy is the usual cause).",
        )


# --------------------------------------------------------------------------- install


def _install(partial: Path, manifest: Manifest, *, force: bool, root: Path) -> None:
    """Write the manifest into ``partial``, then rename it to its final name atomically."""
    _write_manifest(partial, manifest)
    (partial / _PARTIAL_MARKER).unlink(missing_ok=True)
    final = root / manifest.name
    trash: Path | None = None
    with _folder_lock():
        if manifest.kind == "adapter" and (
            not manifest.base or not _is_complete(root / manifest.base)
        ):
            raise _base_missing(manifest.name, manifest.base, explicit=True)
        if final.exists():
            if not force:
                raise _exists(manifest.name)
            trash = root / f"{_TRASH_PREFIX}{manifest.name}-{os.getpid()}"
            os.replace(final, trash)
        os.replace(partial, final)
        _fsync_dir(root)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _refuse_existing(root: Path, name: str, force: bool) -> None:
    if (root / name).exists() and not force:
        raise _exists(name)


def _exists(name: str) -> SubplugError:
    return SubplugError(
        "model-exists",
        f"A model named {name!r} is already in the cache.",
        "Pass --force to replace it, or --name NEW_NAME to import it under another name.",
    )


def _make_partial(path: Path) -> None:
    try:
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    except OSError as e:
        raise _write_error(e, path.parent, "create a work folder") from e


def _write_manifest(folder: Path, manifest: Manifest) -> None:
    replace_atomic(folder / MANIFEST_NAME, _manifest_bytes(manifest))


def _manifest_bytes(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n").encode()


def _write_marker(folder: Path, data: Mapping[str, Any]) -> None:
    replace_atomic(folder / _PARTIAL_MARKER, json.dumps(dict(data), indent=2).encode())


def _read_marker(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / _PARTIAL_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------- copy / hash


def _export_file(
    tar: tarfile.TarFile,
    folder: Path,
    model: str,
    rel: str,
    rec: FileRecord,
    progress: ProgressCallback | None,
    label: str,
    start: int,
    total: int,
) -> None:
    """Add one entry file to ``tar``, checking its sha256 against the manifest on the way."""
    try:
        fh = open(folder / rel, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise _corrupt(model, f"{rel} is missing") from None
    with fh:
        st = os.fstat(fh.fileno())
        if st.st_size != rec.size:
            raise _corrupt(model, f"{rel} has changed")
        info = tarfile.TarInfo(f"{model}/{rel}")
        info.size = rec.size
        info.mode = 0o644
        info.mtime = int(st.st_mtime)
        reader = _HashingReader(fh, lambda n: _report(progress, label, "export", start + n, total))
        tar.addfile(info, reader)
    if reader.hexdigest() != rec.sha256:
        raise _corrupt(model, f"{rel} has changed")


class _HashingReader:
    """File-like wrapper hashing what ``tarfile`` reads through it."""

    def __init__(self, fh: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self._fh = fh
        self._hash = hashlib.sha256()
        self._on_bytes = on_bytes
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._hash.update(data)
        self._read += len(data)
        self._on_bytes(self._read)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _hash_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if on_bytes is not None:
                on_bytes(done)
    return digest.hexdigest()


def _copy_in(
    src: Path, dst: Path, on_bytes: Callable[[int], None], root: Path, name: str
) -> FileRecord:
    try:
        fh = open(src, "rb")  # noqa: SIM115 - closed by _copy_stream_in's caller below
    except OSError as e:
        raise _read_error(e, src) from e
    with fh:
        return _copy_stream_in(fh, dst, on_bytes, root, name, src=src)


def _copy_stream_in(
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
        raise _write_error(e, root, f"import {name}") from e
    with out:
        while True:
            try:
                chunk = fh.read(_CHUNK)
            except OSError as e:
                raise _read_error(e, src or dst) from e
            if not chunk:
                break
            digest.update(chunk)
            try:
                out.write(chunk)
            except OSError as e:
                raise _write_error(e, root, f"import {name}") from e
            done += len(chunk)
            on_bytes(done)
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as e:
            raise _write_error(e, root, f"import {name}") from e
    return FileRecord(digest.hexdigest(), done, dst.stat().st_mtime_ns)


def _src_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise _read_error(e, path) from e


def _walk_files(root: Path) -> list[str]:
    """Relative POSIX paths of the regular files under ``root`` (file symlinks followed,
    as in a Hugging Face cache snapshot), minus our bookkeeping and tool metadata."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in _RESERVED_TOP]
            filenames = [f for f in filenames if f not in _RESERVED_TOP]
        dirnames.sort()
        for f in filenames:
            full = here / f
            if full.is_file():
                found.append(full.relative_to(root).as_posix())
    return sorted(found)


def _du(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _same_files(a: Manifest, b: Manifest) -> bool:
    return {k: v.sha256 for k, v in a.files.items()} == {k: v.sha256 for k, v in b.files.items()}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(datetime.now(timezone.utc).timestamp())
    tar.addfile(info, io.BytesIO(data))


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _empty_folder(folder: Path) -> None:
    for child in folder.iterdir():
        if child.name == _PARTIAL_MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


# --------------------------------------------------------------------------- errors


def _write_error(e: OSError, where: Path, what: str) -> SubplugError:
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
def _write_errors(where: Path, *, what: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise _write_error(e, where, what) from e


def _read_error(e: OSError, path: Path) -> SubplugError:
    return SubplugError(
        "model-source-unreadable",
        f"Cannot read {path} ({e.strerror or e}).",
        "Check that the folder or USB stick is still there and readable, then try again.",
    )


def _corrupt(name: str, why: str) -> SubplugError:
    return SubplugError(
        "model-corrupt",
        f"Model {name!r} is damaged: {why}.",
        f"Run `subplug models verify {name}`, then import or pull it again with --force.",
    )


def _check_space(root: Path, needed: int, name: str) -> None:
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


# --------------------------------------------------------------------------- locks


def _lock_timeout() -> float:
    try:
        return float(os.environ.get("SUBPLUG_LOCK_TIMEOUT", _DEFAULT_LOCK_TIMEOUT))
    except ValueError:
        return _DEFAULT_LOCK_TIMEOUT


def _locks_dir() -> Path:
    return subplug_home() / "locks"


def _name_lock_path(name: str) -> Path:
    return _locks_dir() / f"model-{name}.lock"


@contextmanager
def _held(lock: filelock.BaseFileLock) -> Iterator[None]:
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _name_locks(names: Iterable[str], progress: ProgressCallback | None = None) -> Iterator[None]:
    """Hold the locks of ``names`` (sorted, so concurrent callers cannot deadlock)."""
    try:
        _locks_dir().mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(e, subplug_home(), "create the lock folder") from e
    with ExitStack() as stack:
        for name in sorted(set(names)):
            stack.enter_context(_acquire(_name_lock_path(name), name, progress))
            _HELD[name] = _HELD.get(name, 0) + 1
            stack.callback(_unheld, name)
        yield


@contextmanager
def _folder_lock() -> Iterator[None]:
    with _acquire(_locks_dir() / "models.lock", "the model folder", None):
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
        raise _write_error(e, path.parent, "lock the model cache") from e
    with _held(lock):
        yield


# --------------------------------------------------------------------------- partials


def _partials(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(_PARTIAL_PREFIX) and p.is_dir())


def _split_work_name(path: Path, prefix: str) -> tuple[str, int] | None:
    stem = path.name[len(prefix) :]
    name, _, pid = stem.rpartition("-")
    if not name or not pid.isdigit():
        return None
    return name, int(pid)


def _partial_name(path: Path) -> str | None:
    parsed = _split_work_name(path, _PARTIAL_PREFIX)
    return parsed[0] if parsed else None


def _owner_alive(name: str, pid: int) -> bool:
    """Is a process working on ``name``? True when its lock is held by someone else."""
    if pid == os.getpid():
        return name in _HELD
    lock = filelock.FileLock(_name_lock_path(name))
    try:
        lock.acquire(timeout=0)
    except (filelock.Timeout, OSError):
        return True
    lock.release()
    return False


def _clean_stale(root: Path) -> None:
    """Remove leftovers of dead processes: interrupted imports and half-removed entries.

    A leftover is stale when its name's lock is free (locks die with their process).
    Interrupted pulls are kept: the next pull of that name resumes them.
    """
    if not root.is_dir():
        return
    for child in root.iterdir():
        for prefix in (_PARTIAL_PREFIX, _TRASH_PREFIX):
            if not child.name.startswith(prefix):
                continue
            parsed = _split_work_name(child, prefix)
            if parsed is None or _owner_alive(*parsed):
                continue
            if prefix == _PARTIAL_PREFIX and _read_marker(child).get("operation") == "pull":
                continue
            shutil.rmtree(child, ignore_errors=True)


def _partial_entry(folder: Path) -> ModelEntry:
    parsed = _split_work_name(folder, _PARTIAL_PREFIX)
    name = parsed[0] if parsed else folder.name
    marker = _read_marker(folder)
    alive = parsed is not None and _owner_alive(*parsed)
    state: Literal["downloading", "resumable", "importing", "interrupted"]
    if marker.get("operation") == "pull":
        state = "downloading" if alive else "resumable"
    else:
        state = "importing" if alive else "interrupted"
    return ModelEntry(
        name=name,
        kind=None,
        base=None,
        size=_du(folder),
        complete=False,
        path=folder,
        state=state,
        repo_id=_opt_str(marker.get("repo_id")),
        revision=_opt_str(marker.get("commit")),
    )


# --------------------------------------------------------------------------- entries


def _read_manifest(folder: Path) -> Manifest | None:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        return Manifest.from_json(data)
    except (OSError, ValueError, TypeError):
        return None


def _is_complete(folder: Path) -> bool:
    return folder.is_dir() and _read_manifest(folder) is not None


def _entry_for(folder: Path) -> ModelEntry:
    m = _read_manifest(folder)
    if m is None:
        return ModelEntry(folder.name, None, None, _du(folder), False, folder, "invalid")
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


def _adapters_using(root: Path, base: str) -> list[str]:
    users = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or child.name == base:
            continue
        m = _read_manifest(child)
        if m is not None and m.kind == "adapter" and m.base == base:
            users.append(child.name)
    return users


def _require_manifest(name: str) -> Manifest:
    folder = models_dir() / name
    if not _NAME_RE.match(name) or not folder.is_dir():
        raise _not_found(name)
    manifest = _read_manifest(folder)
    if manifest is None:
        raise SubplugError(
            "model-corrupt",
            f"Model {name!r} has no valid {MANIFEST_NAME} ({folder}).",
            f"Remove it (`subplug models rm {name}`) and import or pull it again.",
        )
    return manifest


def _writable_models_dir() -> Path:
    root = models_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _write_error(e, root, "use the model cache") from e
        raise SubplugError(
            "cache-not-writable",
            f"Cannot write to the model cache at {root} ({e.strerror or e}).",
            "Make that folder writable, or set SUBPLUG_HOME to a folder you can write to.",
        ) from e
    return root


# --------------------------------------------------------------------------- names


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise SubplugError(
            "invalid-model-name",
            f"{name!r} cannot be a model name.",
            "Use letters, digits, '.', '_' and '-', starting with a letter or digit "
            "(at most 100 characters).",
        )


def _default_name(src: Path, repo_id: str | None) -> str:
    if repo_id is not None:
        for known in KNOWN_MODELS.values():
            if _same_repo(known.repo_id, repo_id):
                return known.name
        raw = repo_id.split("/")[-1]
    else:
        raw = src.name
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-._")
    return cleaned[:100] or "model"


def _hf_snapshot_origin(src: Path) -> tuple[str | None, str | None]:
    """``(repo_id, commit)`` when ``src`` is a Hugging Face cache snapshot folder."""
    parts = src.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        org_name = parts[-3][len("models--") :].split("--", 1)
        commit = parts[-1] if re.fullmatch(r"[0-9a-f]{40}", parts[-1]) else None
        return "/".join(org_name), commit
    return None, None


def _same_repo(a: str, b: str) -> bool:
    return a.strip("/").casefold() == b.strip("/").casefold()


def _safe_relpath(rel: str) -> bool:
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        return False
    parts = rel.split("/")
    return all(p not in ("", ".", "..") for p in parts) and not re.match(r"^[A-Za-z]:", rel)


# --------------------------------------------------------------------------- small


def _report(
    progress: ProgressCallback | None, model: str, stage: Stage, done: int, total: int | None
) -> None:
    if progress is not None:
        progress(CacheProgress(model, stage, done, total))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
