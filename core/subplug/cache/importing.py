"""Copying a model into the cache from a folder (``import_model``, ``add_model``); a
``.tar`` goes to :mod:`subplug.cache.archive`."""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import suppress
from pathlib import Path

from subplug import __version__
from subplug.cache.archive import import_tar
from subplug.cache.entries import ModelEntry, entry_for
from subplug.cache.hub import KNOWN_MODELS, same_repo
from subplug.cache.locks import name_locks
from subplug.cache.manifest import (
    FileRecord,
    Manifest,
    ModelKind,
    compare_with_manifest,
    is_complete,
    now,
    read_manifest,
)
from subplug.cache.paths import PARTIAL_PREFIX, check_name, models_dir
from subplug.cache.progress import ProgressCallback, report
from subplug.cache.resolve import find_entry_for
from subplug.cache.staging import (
    base_missing,
    clean_stale,
    install,
    make_partial,
    refuse_existing,
    writable_models_dir,
    write_marker,
)
from subplug.cache.storage import check_space, copy_in, read_error, walk_files
from subplug.errors import SubplugError


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
        return import_tar(src, name=name, base=base, force=force, progress=progress)
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
    carried = read_manifest(src)
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
    check_name(name)
    base_name: str | None = None
    if kind == "adapter":
        base_name = _adapter_base(src, name, base, carried)
    root = writable_models_dir()
    clean_stale(root)
    rels = walk_files(src)
    with name_locks([name], progress):
        refuse_existing(root, name, force)
        partial = root / f"{PARTIAL_PREFIX}{name}-{os.getpid()}"
        make_partial(partial)
        write_marker(partial, {"operation": "import", "name": name, "pid": os.getpid()})
        try:
            sizes = {rel: _src_size(src / rel) for rel in rels}
            total = sum(sizes.values())
            check_space(root, total, name)
            files: dict[str, FileRecord] = {}
            done = 0
            for rel in rels:
                start = done

                def on_bytes(n: int, start: int = start) -> None:
                    report(progress, name, "copy", start + n, total)

                files[rel] = copy_in(src / rel, partial / rel, on_bytes, root, name)
                done += files[rel].size
            if carried is not None:
                compare_with_manifest(carried, files, name, str(src))
            manifest = Manifest(
                name=name,
                kind=kind,
                base=base_name,
                files=files,
                source=source or str(src),
                repo_id=repo_id,
                revision=revision,
                created=now(),
                subplug_version=__version__,
            )
            install(partial, manifest, force=force, root=root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return entry_for(root / name)


def _adapter_base(src: Path, name: str, base: str | None, carried: Manifest | None) -> str:
    """The cache entry an adapter being imported stands on."""
    if base is not None:
        check_name(base)
        if not is_complete(models_dir() / base):
            raise base_missing(name, base, explicit=True)
        return base
    if carried is not None and carried.base and is_complete(models_dir() / carried.base):
        return carried.base
    known = KNOWN_MODELS.get(name)
    if known is not None and known.base and is_complete(models_dir() / known.base):
        return known.base
    ref = None
    with suppress(OSError, ValueError, AttributeError):
        ref = json.loads((src / "adapter_config.json").read_text("utf-8")).get(
            "base_model_name_or_path"
        )
    if isinstance(ref, str) and ref:
        entry = find_entry_for(ref)
        if entry is not None:
            return entry
    wanted = (carried.base if carried else None) or (known.base if known else None) or ref
    raise base_missing(name, wanted, explicit=False)


def _src_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise read_error(e, path) from e


def _default_name(src: Path, repo_id: str | None) -> str:
    if repo_id is not None:
        for known in KNOWN_MODELS.values():
            if same_repo(known.repo_id, repo_id):
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
