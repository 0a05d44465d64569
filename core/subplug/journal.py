"""Per-chunk journal: an interrupted run resumes instead of starting over.

A journal is a JSON-lines file under the cache (``<home>/journal/<key>.jsonl``), one line
per finished chunk, appended and flushed after every batch. The key hashes the media
fingerprint (size, mtime and sampled bytes, not the path, so a renamed file still
resumes), the audio stream, and every setting that changes model output (backend, model,
source, targets, VAD and chunk settings). The model counts by its contents, not its
name (:func:`model_fingerprint`): a model re-imported or retrained under the same name
starts afresh instead of reusing its predecessor's text. A line is only reused when its
chunk span matches the new plan exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subplug.errors import SubplugError
from subplug.types import ChunkSpan

if TYPE_CHECKING:
    from subplug.cache import Manifest

JOURNAL_VERSION = 2
_SAMPLE = 1 << 20
#: Files of a plain folder looked at by :func:`model_fingerprint` (a model has dozens).
_FOLDER_LIMIT = 10_000


def media_fingerprint(path: Path) -> str:
    """Hash of the file's size, mtime and its first and last MiB."""
    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(_SAMPLE))
        if stat.st_size > 2 * _SAMPLE:
            handle.seek(-_SAMPLE, os.SEEK_END)
            digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()


def model_fingerprint(model: str | None, base: str | None = None) -> str:
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
        from subplug.cache import resolve_model

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


def journal_key(fingerprint: str, settings: Mapping[str, Any]) -> str:
    """A stable key from the media fingerprint and the output-changing settings."""
    blob = json.dumps({"v": JOURNAL_VERSION, "media": fingerprint, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class JournalEntry:
    """What the journal keeps for one finished chunk."""

    start: float
    end: float
    source_lang: str | None
    texts: Mapping[str, str]
    raw: tuple[str, ...]

    def matches(self, span: ChunkSpan) -> bool:
        return abs(self.start - span.start) < 1e-3 and abs(self.end - span.end) < 1e-3


class Journal:
    """The journal of one (media, settings) pair."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, directory: Path, key: str) -> Journal:
        return cls(directory / f"{key}.jsonl")

    def load(self) -> dict[int, JournalEntry]:
        """Finished chunks by index. A torn last line (crash mid-write) is ignored."""
        entries: dict[int, JournalEntry] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return entries
        for line in lines:
            try:
                item = json.loads(line)
                entries[int(item["index"])] = JournalEntry(
                    start=float(item["start"]),
                    end=float(item["end"]),
                    source_lang=item.get("source_lang"),
                    texts=dict(item["texts"]),
                    raw=tuple(item.get("raw", ())),
                )
            except (ValueError, KeyError, TypeError):
                continue
        return entries

    def append(self, items: Iterable[tuple[ChunkSpan, JournalEntry]]) -> None:
        """Record finished chunks durably (append, flush, fsync)."""
        lines = [
            json.dumps(
                {
                    "index": span.index,
                    "start": entry.start,
                    "end": entry.end,
                    "source_lang": entry.source_lang,
                    "texts": dict(entry.texts),
                    "raw": list(entry.raw),
                },
                ensure_ascii=False,
            )
            for span, entry in items
        ]
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
