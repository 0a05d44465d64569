"""The per-chunk journal: keys, durable appends, torn lines, span matching."""

from __future__ import annotations

import os
from pathlib import Path

from subplug.journal import Journal, JournalEntry, journal_key, media_fingerprint
from subplug.types import ChunkSpan, SpeechRegion


def _span(index: int, start: float, end: float) -> ChunkSpan:
    return ChunkSpan(index, start, end, (SpeechRegion(start, end),))


def test_fingerprint_follows_content_not_name(tmp_path: Path) -> None:
    a = tmp_path / "a.wav"
    a.write_bytes(os.urandom(3 << 20))
    first = media_fingerprint(a)
    b = tmp_path / "renamed.wav"
    a.rename(b)
    assert media_fingerprint(b) == first
    with b.open("r+b") as handle:
        handle.seek(-10, os.SEEK_END)
        handle.write(b"0123456789")
    assert media_fingerprint(b) != first


def test_key_changes_with_settings() -> None:
    base = {"model": "x", "source": "auto"}
    assert journal_key("f", base) == journal_key("f", dict(base))
    assert journal_key("f", base) != journal_key("f", {**base, "source": "en"})
    assert journal_key("f", base) != journal_key("g", base)


def test_append_load_and_torn_last_line(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, "k")
    spans = [_span(0, 0.0, 4.0), _span(1, 5.0, 9.0)]
    journal.append(
        (s, JournalEntry(s.start, s.end, "en", {"en": f"text {s.index}", "mn": "текст"}, ("raw",)))
        for s in spans
    )
    with journal.path.open("a", encoding="utf-8") as handle:
        handle.write('{"index": 2, "start": 10.0, "en')  # a crash mid-write
    loaded = journal.load()
    assert sorted(loaded) == [0, 1]
    assert loaded[1].texts == {"en": "text 1", "mn": "текст"}
    assert loaded[0].matches(spans[0])
    assert not loaded[0].matches(_span(0, 0.0, 4.5))
    journal.remove()
    assert journal.load() == {}
