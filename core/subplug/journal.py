"""Per-chunk journal: an interrupted run resumes instead of starting over.

A journal is a JSON-lines file under the cache (``<home>/journal/<key>.jsonl``), one line
per finished chunk, appended and flushed after every batch. The key hashes the media
fingerprint (size, mtime and sampled bytes, not the path, so a renamed file still
resumes), the audio stream, and every setting that changes model output (backend, model,
source, targets, VAD and chunk settings). The model counts by its contents, not its
name: the backend's check gives a fingerprint of them
(:func:`subplug.cache.contents_fingerprint` for cached models and folders), so a model
re-imported or retrained under the same name starts afresh instead of reusing its
predecessor's text. A line is only reused when its
chunk span matches the new plan exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from subplug.types import ChunkSpan

JOURNAL_VERSION = 2
_SAMPLE = 1 << 20


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


@dataclass(frozen=True)
class StaleJournal:
    """A journal left by a run that did not finish."""

    path: Path
    size: int
    age_days: float


def stale_journals(directory: Path, *, older_than_days: float = 0.0) -> list[StaleJournal]:
    """Journals in ``directory`` not touched for ``older_than_days`` days, oldest first.

    A finished file removes its journal, so what stays is from interrupted or failed
    runs; one younger than a few days may still be resumed (the same command again)."""
    import time

    now = time.time()
    found = []
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        try:
            info = path.stat()
        except OSError:
            continue
        age = (now - info.st_mtime) / 86400
        if age >= older_than_days:
            found.append(StaleJournal(path, info.st_size, age))
    return sorted(found, key=lambda j: -j.age_days)


def remove_journals(journals: Iterable[StaleJournal]) -> int:
    """Delete ``journals``; returns the bytes freed."""
    freed = 0
    for journal in journals:
        try:
            journal.path.unlink()
        except FileNotFoundError:
            continue
        freed += journal.size
    return freed
