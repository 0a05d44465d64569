"""Finding a model ready to load: a cache entry (quickly checked) or a folder, with the
base an adapter stands on."""

from __future__ import annotations

import json
import os
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import filelock

from subplug.cache.hub import DEFAULT_MODEL, KNOWN_MODELS, same_repo
from subplug.cache.locks import name_lock_path
from subplug.cache.manifest import FileRecord, Manifest, is_complete, read_manifest, write_manifest
from subplug.cache.paths import MANIFEST_NAME, NAME_RE, models_dir
from subplug.cache.staging import partial_folders, partial_name
from subplug.cache.storage import hash_file
from subplug.errors import SubplugError

_MISSING_HINT = (
    "Download it with `subplug models pull {name}` (needs internet), or on a machine "
    "without internet copy it over (e.g. a .tar from `subplug models export` on a USB "
    "stick) and run `subplug models import PATH`."
)


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
    if not looks_like_path and NAME_RE.match(spec) and (models_dir() / spec).exists():
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
    raise not_found(spec)


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
        manifest = read_manifest(child)
        derived = manifest.derived if manifest is not None else None
        if not derived or derived.get("from") != source:
            continue
        if all(derived.get(key) == value for key, value in wanted.items()):
            return _resolve_entry(child.name)
    return None


def not_found(name: str) -> SubplugError:
    """The ``model-not-found`` error for entry ``name`` (its hint says how to get it, or
    to resume a partial download)."""
    partial = any(partial_name(p) == name for p in partial_folders(models_dir()))
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
        err = not_found(base_name)
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
    entry = find_entry_for(ref)
    if entry is not None:
        return _resolve_entry(entry).path, entry
    hint_name = next((k.name for k in KNOWN_MODELS.values() if same_repo(k.repo_id, ref)), "NAME")
    raise SubplugError(
        "model-not-found",
        f"The adapter at {adapter} needs its base model {ref!r}, which is not in the model "
        f"cache ({models_dir()}).",
        _MISSING_HINT.format(name=hint_name),
    )


def find_entry_for(ref: str) -> str | None:
    """A complete full-model entry for ``ref``: named so, pulled/imported from repo ``ref``,
    or stored under the registry name of repo ``ref``."""
    root = models_dir()
    if NAME_RE.match(ref) and is_complete(root / ref):
        return ref
    if not root.is_dir():
        return None
    for known in KNOWN_MODELS.values():
        if known.kind == "full" and same_repo(known.repo_id, ref):
            m = read_manifest(root / known.name)
            if (
                m is not None
                and m.kind == "full"
                and (m.repo_id is None or same_repo(m.repo_id, ref))
            ):
                return known.name
    for child in sorted(root.iterdir()):
        if child.name.startswith("."):
            continue
        m = read_manifest(child)
        if m is not None and m.kind == "full" and m.repo_id and same_repo(m.repo_id, ref):
            return child.name
    return None


def _quick_check(name: str) -> Manifest:
    """Size and mtime of every file against the manifest; re-hash files whose mtime moved."""
    folder = models_dir() / name
    manifest = read_manifest(folder)
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
            if hash_file(folder / rel) != rec.sha256:
                raise SubplugError(
                    "model-corrupt", f"Model {name!r} is damaged: {rel} has changed.", hint
                )
            refreshed[rel] = replace(rec, mtime_ns=st.st_mtime_ns)
    if refreshed:
        # Same bytes, new mtime (touched, copied back): remember it so the next resolve
        # is quick again. Best effort: skip when another process holds the entry.
        updated = replace(manifest, files={**manifest.files, **refreshed})
        lock = filelock.FileLock(name_lock_path(name))
        with suppress(OSError, filelock.Timeout):
            lock.acquire(timeout=0)
            try:
                write_manifest(folder, updated)
            finally:
                lock.release()
    return manifest


def require_manifest(name: str) -> Manifest:
    """The manifest of entry ``name``: ``model-not-found`` or ``model-corrupt`` otherwise."""
    folder = models_dir() / name
    if not NAME_RE.match(name) or not folder.is_dir():
        raise not_found(name)
    manifest = read_manifest(folder)
    if manifest is None:
        raise SubplugError(
            "model-corrupt",
            f"Model {name!r} has no valid {MANIFEST_NAME} ({folder}).",
            f"Remove it (`subplug models rm {name}`) and import or pull it again.",
        )
    return manifest
