"""The export archive: a ``.tar`` of one entry (and its base) that another machine
imports. Every file is hashed on the way out and on the way in; an archive is checked
member by member before anything is written."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from subplug import __version__
from subplug.cache.entries import ModelEntry, entry_for
from subplug.cache.locks import name_locks
from subplug.cache.manifest import (
    FileRecord,
    Manifest,
    compare_with_manifest,
    is_complete,
    manifest_bytes,
    now,
    read_manifest,
)
from subplug.cache.paths import (
    MANIFEST_NAME,
    NAME_RE,
    PARTIAL_PREFIX,
    check_name,
    models_dir,
    safe_relpath,
)
from subplug.cache.progress import ProgressCallback, report
from subplug.cache.resolve import require_manifest
from subplug.cache.staging import (
    base_missing,
    clean_stale,
    install,
    make_partial,
    refuse_existing,
    writable_models_dir,
    write_marker,
)
from subplug.cache.storage import check_space, copy_stream_in, fsync_file, write_errors
from subplug.errors import SubplugError

#: First member of every archive made by :func:`export_model`.
EXPORT_HEADER = "subplug-export.json"
EXPORT_FORMAT = 1


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
    manifest = require_manifest(name)
    order = [manifest]
    if with_base and manifest.kind == "adapter" and manifest.base:
        order.insert(0, require_manifest(manifest.base))
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
        "created": now(),
        "main": name,
        "models": [m.name for m in order],
    }
    try:
        with write_errors(target.parent, what=f"export {name}"):
            with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
                _add_bytes(tar, EXPORT_HEADER, json.dumps(header, indent=2).encode())
                done = 0
                for m in order:
                    _add_bytes(tar, f"{m.name}/{MANIFEST_NAME}", manifest_bytes(m))
                    for rel, rec in sorted(m.files.items()):
                        _export_file(
                            tar, root / m.name, m.name, rel, rec, progress, name, done, total
                        )
                        done += rec.size
            fsync_file(tmp)
            os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    return target


def import_tar(
    archive: Path,
    *,
    name: str | None,
    base: str | None,
    force: bool,
    progress: ProgressCallback | None,
) -> ModelEntry:
    """Import the models of an archive made by :func:`export_model` (see
    :func:`subplug.cache.import_model`); every member is checked before anything is
    written, every file against its manifest."""
    archive = archive.absolute()
    root = writable_models_dir()
    clean_stale(root)
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
            check_name(n)
        plan: list[Manifest] = []
        for original in header["models"]:
            m = carried[original]
            new_base = m.base
            if m.kind == "adapter":
                new_base = renames.get(m.base or "", base or m.base)
            plan.append(replace(m, name=renames[original], base=new_base))
        with name_locks(sorted(renames.values()), progress):
            todo: list[tuple[str, Manifest]] = []
            for original, m in zip(header["models"], plan, strict=True):
                existing = read_manifest(root / m.name)
                if original != main and existing is not None and not force:
                    if _same_files(existing, m):
                        continue  # the carried base is already here
                    raise SubplugError(
                        "model-exists",
                        f"A different model named {m.name!r} is already in the cache.",
                        "Pass --base OTHER_NAME to import the carried base under another "
                        "name, or --force to replace it.",
                    )
                refuse_existing(root, m.name, force)
                todo.append((original, m))
            main_m = plan[header["models"].index(main)]
            if main_m.kind == "adapter":
                pending = {m.name for _, m in todo}
                if not main_m.base or (
                    main_m.base not in pending and not is_complete(root / main_m.base)
                ):
                    raise base_missing(main_m.name, main_m.base, explicit=base is not None)
            total = sum(m.size for _, m in todo)
            check_space(root, total, main_m.name)
            partials: dict[str, Path] = {}
            try:
                for original, m in todo:
                    partials[original] = root / f"{PARTIAL_PREFIX}{m.name}-{os.getpid()}"
                    make_partial(partials[original])
                    write_marker(
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
                        report(progress, main_m.name, "extract", start + n, total)

                    with fh:
                        got[top][rel] = copy_stream_in(
                            fh, partials[top] / rel, on_bytes, root, main_m.name
                        )
                    done += got[top][rel].size
                for original, m in todo:
                    compare_with_manifest(carried[original], got[original], m.name, str(archive))
                    final = replace(
                        m,
                        files=got[original],
                        source=str(archive),
                        created=now(),
                        subplug_version=__version__,
                    )
                    install(partials[original], final, force=force, root=root)
            except tarfile.TarError as e:
                raise _corrupt_archive(archive, str(e)) from e
            finally:
                for p in partials.values():
                    shutil.rmtree(p, ignore_errors=True)
    return entry_for(root / renames[main])


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
        if not safe_relpath(member.name.rstrip("/")):
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
        if main not in models or not all(isinstance(n, str) and NAME_RE.match(n) for n in models):
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


def _same_files(a: Manifest, b: Manifest) -> bool:
    return {k: v.sha256 for k, v in a.files.items()} == {k: v.sha256 for k, v in b.files.items()}


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


def _corrupt(name: str, why: str) -> SubplugError:
    return SubplugError(
        "model-corrupt",
        f"Model {name!r} is damaged: {why}.",
        f"Run `subplug models verify {name}`, then import or pull it again with --force.",
    )


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
        reader = _HashingReader(fh, lambda n: report(progress, label, "export", start + n, total))
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


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(datetime.now(timezone.utc).timestamp())
    tar.addfile(info, io.BytesIO(data))
