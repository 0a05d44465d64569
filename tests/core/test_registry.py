"""The model registry: every family subplug runs has a known name with its repository
and backend, and a pull of it fetches only the files a transformers model needs (no
other frameworks' weights, only English and Mongolian of MMS's 1,162 adapters), records
the commit it got, and verifies like any entry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from subplug import cache, plugins
from subplug.cache.hub import RemoteFile, RemoteSnapshot, select_files

FAMILIES = {
    "whisper-small": ("openai/whisper-small", "whisper"),
    "mms-1b-all": ("facebook/mms-1b-all", "ctc"),
    "nllb-200-distilled-600m": ("facebook/nllb-200-distilled-600M", "nllb"),
    "qwen3-asr-1.7b": ("Qwen/Qwen3-ASR-1.7B-hf", "qwen3-asr"),
    "seamless-m4t-v2-large": ("facebook/seamless-m4t-v2-large", "seamless"),
    "gemma-3-4b-speech": ("junnei/gemma-3-4b-it-speech", "remote-code"),
    "tiny-audio": ("mazesmazes/tiny-audio", "remote-code"),
}


def test_every_family_has_a_known_name_run_by_an_installed_plugin() -> None:
    runners = {**plugins.backends(), **plugins.translators()}
    for name, (repo, backend) in FAMILIES.items():
        known = cache.KNOWN_MODELS[name]
        assert (known.repo_id, known.backend, known.kind) == (repo, backend, "full")
        assert known.backend in runners, name
    assert cache.KNOWN_MODELS["gemma3n-en-mn"].backend == "gemma3n"


def _files(*paths: str) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(p, 10) for p in paths)


def test_select_files_keeps_what_transformers_loads() -> None:
    whisper = _files(
        "config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "tf_model.h5",
        "flax_model.msgpack",
        "merges.txt",
        "README.md",
        ".gitattributes",
    )
    kept = select_files(whisper, cache.KNOWN_MODELS["whisper-small"].files)
    assert [f.path for f in kept] == ["config.json", "model.safetensors", "merges.txt"]
    # A .bin without a safetensors twin is the weights: kept.
    nllb = _files("config.json", "pytorch_model.bin", "sentencepiece.bpe.model", "tokenizer.json")
    kept = select_files(nllb, cache.KNOWN_MODELS["nllb-200-distilled-600m"].files)
    assert [f.path for f in kept] == [f.path for f in nllb]
    mms = _files(
        "config.json",
        "vocab.json",
        "model.safetensors",
        "pytorch_model.bin",
        *(f"adapter.{c}.safetensors" for c in ("eng", "fra", "khk", "rus", "zul")),
        "adapter.eng.bin",
    )
    kept = select_files(mms, cache.KNOWN_MODELS["mms-1b-all"].files)
    assert [f.path for f in kept] == [
        "config.json",
        "vocab.json",
        "model.safetensors",
        "adapter.eng.safetensors",
        "adapter.khk.safetensors",
    ]
    remote = _files("config.json", "modeling_asr.py", "model.safetensors", "README.md")
    kept = select_files(remote, cache.KNOWN_MODELS["tiny-audio"].files)
    assert [f.path for f in kept] == ["config.json", "modeling_asr.py", "model.safetensors"]
    assert select_files(whisper, ()) == whisper  # no patterns: everything


class ListingDownloader:
    """A remote repository that lists many files and serves only those asked for."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.fetched: list[str] = []

    def resolve(self, repo_id: str, revision: str | None) -> RemoteSnapshot:
        return RemoteSnapshot(
            repo_id,
            "c" * 40,
            tuple(
                RemoteFile(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in self.files.items()
            ),
        )

    def fetch(self, snapshot: RemoteSnapshot, dest: Path) -> None:
        for remote in snapshot.files:
            self.fetched.append(remote.path)
            (dest / remote.path).write_bytes(self.files[remote.path])


def test_a_pull_fetches_only_the_files_the_model_needs_and_verifies() -> None:
    remote = ListingDownloader(
        {
            "config.json": b'{"model_type": "wav2vec2"}',
            "vocab.json": b"{}",
            "model.safetensors": b"weights" * 100,
            "pytorch_model.bin": b"the same weights, pickled" * 100,
            "adapter.eng.safetensors": b"eng" * 50,
            "adapter.khk.safetensors": b"khk" * 50,
            "adapter.fra.safetensors": b"fra" * 50,
            "README.md": b"# MMS",
        }
    )
    entry = cache.pull("mms-1b-all", downloader=remote)
    wanted = [
        "config.json",
        "vocab.json",
        "model.safetensors",
        "adapter.eng.safetensors",
        "adapter.khk.safetensors",
    ]
    assert sorted(remote.fetched) == sorted(wanted)
    manifest = cache.resolve_model("mms-1b-all").manifest
    assert manifest is not None and sorted(manifest.files) == sorted(wanted)
    assert entry.revision == "c" * 40 and manifest.repo_id == "facebook/mms-1b-all"
    assert cache.verify("mms-1b-all").ok


def test_a_repository_without_any_needed_file_is_a_clear_download_error() -> None:
    remote = ListingDownloader({"README.md": b"# gone", "tf_model.h5": b"x"})
    with pytest.raises(Exception) as raised:
        cache.pull("whisper-small", downloader=remote)
    assert getattr(raised.value, "reference", None) == "model-download-failed"
    assert "none of the files whisper-small needs" in str(raised.value)
    assert remote.fetched == []
