"""The per-chunk journal: keys, durable appends, torn lines, span matching."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

# The journal keys on the model's contents, fingerprinted by the cache.
from subplug.cache import contents_fingerprint as model_fingerprint  # noqa: E402
from subplug.journal import (
    Journal,
    JournalEntry,
    journal_key,
    media_fingerprint,
)
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


# ------------------------------------------------------------- model fingerprint


def _model_folder(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "gemma3n"}', encoding="utf-8")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def _adapter_folder(folder: Path, base: str, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = f'{{"base_model_name_or_path": "{base}", "peft_type": "LORA"}}'
    (folder / "adapter_config.json").write_text(config, encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def test_a_model_folder_is_fingerprinted_by_its_files(tmp_path: Path) -> None:
    model = _model_folder(tmp_path / "model", b"weights one")
    first = model_fingerprint(str(model))
    assert model_fingerprint(str(model)) == first
    # Retrained into the same folder: same name, other weights.
    (model / "model.safetensors").write_bytes(b"weights two, longer")
    assert model_fingerprint(str(model)) != first
    # The name alone is no longer what counts.
    assert model_fingerprint(str(model)) != model_fingerprint(str(tmp_path / "elsewhere"))


def test_a_cache_entry_is_fingerprinted_by_its_manifest_digests(tmp_path: Path) -> None:
    from subplug import cache

    cache.import_model(_model_folder(tmp_path / "a", b"A" * 100), name="mine")
    first = model_fingerprint("mine")
    assert model_fingerprint("mine") == first
    # Re-imported under the same name with other weights of the same size.
    cache.import_model(_model_folder(tmp_path / "b", b"B" * 100), name="mine", force=True)
    second = model_fingerprint("mine")
    assert second != first
    # The same weights again (new files, new mtimes) are the same model.
    cache.import_model(_model_folder(tmp_path / "c", b"B" * 100), name="mine", force=True)
    assert model_fingerprint("mine") == second


def test_an_adapter_fingerprint_covers_its_base(tmp_path: Path) -> None:
    from subplug import cache

    cache.import_model(_model_folder(tmp_path / "base", b"base v1"), name="base")
    adapter = _adapter_folder(tmp_path / "adapter", "base", b"lora")
    cache.import_model(adapter, name="lora")
    as_entry, as_folder = model_fingerprint("lora"), model_fingerprint(str(adapter))
    cache.import_model(_model_folder(tmp_path / "base2", b"base v2"), name="base", force=True)
    assert model_fingerprint("lora") != as_entry
    assert model_fingerprint(str(adapter)) != as_folder


def test_a_name_nothing_resolves_counts_as_itself() -> None:
    assert model_fingerprint("not-in-the-cache") == model_fingerprint("not-in-the-cache")
    assert model_fingerprint("not-in-the-cache") != model_fingerprint("another-name")
    assert model_fingerprint(None) == model_fingerprint(None)


def test_stale_journals_are_found_reported_and_cleaned(
    subplug_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Journals of runs that never finished stay in the cache: doctor reports those
    older than two weeks and `subplug models clean` removes them (keeping recent ones,
    which a rerun still resumes from)."""
    from subplug.cache import journal_dir
    from subplug.cli import main
    from subplug.default_plugins.checks import check_journals
    from subplug.journal import stale_journals

    folder = journal_dir()
    folder.mkdir(parents=True)
    old, recent = folder / "old.jsonl", folder / "recent.jsonl"
    old.write_text('{"chunk": 0}\n', encoding="utf-8")
    recent.write_text('{"chunk": 0}\n', encoding="utf-8")
    month_ago = time.time() - 30 * 86400
    os.utime(old, (month_ago, month_ago))
    assert [j.path.name for j in stale_journals(folder, older_than_days=14)] == ["old.jsonl"]
    result = check_journals()
    assert result.status.value == "warn" and "subplug models clean" in (result.hint or "")
    assert main(["models", "clean", "--dry-run"]) == 0
    assert "old.jsonl" in capsys.readouterr().out and old.exists()
    assert main(["models", "clean"]) == 0
    assert not old.exists() and recent.exists()
    assert check_journals().status.value == "ok"
    assert main(["models", "clean", "--older-than", "0"]) == 0
    assert not recent.exists()
