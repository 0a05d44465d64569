"""The manifest of a cache entry: what it holds, byte for byte, and where it came from.

Every entry has a ``manifest.json`` with the sha256 and size of each of its files, its
kind and, for an adapter, the name of its base entry: one base (a few GiB) is stored once
and shared by every adapter trained on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from subplug.cache.paths import MANIFEST_NAME, NAME_RE, safe_relpath
from subplug.errors import SubplugError
from subplug.files import replace_atomic

ModelKind = Literal["full", "adapter"]
MANIFEST_FORMAT = 1


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
            if not isinstance(path, str) or not safe_relpath(path):
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
        if not isinstance(name, str) or not NAME_RE.match(name):
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
            repo_id=opt_str(data.get("repo_id")),
            revision=opt_str(data.get("revision")),
            created=str(data.get("created") or ""),
            subplug_version=str(data.get("subplug_version") or ""),
        )


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest in ``folder``; ``None`` when it is missing or not valid."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        return Manifest.from_json(data)
    except (OSError, ValueError, TypeError):
        return None


def is_complete(folder: Path) -> bool:
    """True for a folder holding a valid manifest: a complete entry."""
    return folder.is_dir() and read_manifest(folder) is not None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write ``manifest`` into ``folder`` atomically."""
    replace_atomic(folder / MANIFEST_NAME, manifest_bytes(manifest))


def manifest_bytes(manifest: Manifest) -> bytes:
    """The bytes of a ``manifest.json`` (in an entry or in an export archive)."""
    return (json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n").encode()


def compare_with_manifest(
    carried: Manifest, files: Mapping[str, FileRecord], name: str, src: str
) -> None:
    """Check the files copied in from ``src`` against the manifest they came with;
    ``model-corrupt`` names what is missing, changed or extra."""
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


def now() -> str:
    """The current UTC time as manifests and export headers record it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def opt_str(value: object) -> str | None:
    """``value`` when it is a non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None
