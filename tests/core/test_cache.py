"""The model cache: import/export/verify, integrity, locking, interruptions, pull.

Models here are small folders in Hugging Face layout (config.json, safetensors weights
written with the ``safetensors`` package, an adapter folder with adapter_config.json).
Pulls go through an injected downloader and, once, through the real huggingface_hub
client against a local HTTP server that answers like the Hub.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from safetensors.numpy import save_file
from subplug import cache
from subplug.cache import RemoteFile, RemoteSnapshot
from subplug.commands import models as models_cmd
from subplug.errors import SubplugError

BASE_REPO = "google/gemma-3n-E2B-it"
ADAPTER_REPO = "bilguun/gemma-3n-E2B-it-audio-en-mn"


# --------------------------------------------------------------------------- helpers


def make_full(folder: Path, seed: int = 0) -> Path:
    """A small full model folder in Hugging Face layout."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3n", "seed": seed}))
    save_file(
        {"w": rng.standard_normal((64, 32)).astype(np.float32), "b": np.arange(32.0)},
        str(folder / "model.safetensors"),
    )
    (folder / "tokenizer").mkdir(exist_ok=True)
    (folder / "tokenizer" / "tokenizer.json").write_text(json.dumps({"seed": seed}))
    return folder


def make_adapter(folder: Path, base_ref: str = BASE_REPO, seed: int = 1) -> Path:
    """A small PEFT-style adapter folder naming ``base_ref`` as its base."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": base_ref, "peft_type": "LORA", "r": 4})
    )
    save_file(
        {"lora_A": rng.standard_normal((4, 32)).astype(np.float32)},
        str(folder / "adapter_model.safetensors"),
    )
    return folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path: Path, offset: int = 100, keep_mtime: bool = False) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def complete_names() -> list[str]:
    return [e.name for e in cache.list_models() if e.complete]


def visible_folders() -> list[str]:
    root = cache.models_dir()
    return (
        sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        if root.exists()
        else []
    )


@pytest.fixture
def base_and_adapter(tmp_path: Path) -> tuple[Path, Path]:
    """The default pair in the cache: base ``gemma-3n-e2b-it`` + adapter ``gemma3n-en-mn``."""
    base = make_full(tmp_path / "src" / "base")
    adapter = make_adapter(tmp_path / "src" / "adapter")
    cache.import_model(base, name="gemma-3n-e2b-it")
    cache.import_model(adapter, name="gemma3n-en-mn")
    return base, adapter


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="subplug models")
    models_cmd.setup(parser)
    return models_cmd.run(parser.parse_args(list(argv)))


# --------------------------------------------------------------------------- location


def test_subplug_home_respects_env_and_defaults_to_user_data(
    subplug_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cache.subplug_home() == subplug_home
    assert cache.models_dir() == subplug_home / "models"
    assert cache.journal_dir() == subplug_home / "journal"
    cache.import_model(make_full(subplug_home.parent / "m"), name="m")
    assert (subplug_home / "models" / "m" / cache.MANIFEST_NAME).is_file()

    monkeypatch.delenv("SUBPLUG_HOME")
    from platformdirs import user_data_path

    assert cache.subplug_home() == user_data_path("subplug", appauthor=False)


def test_unwritable_home_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SUBPLUG_HOME", str(blocker / "home"))
    with pytest.raises(SubplugError) as err:
        cache.import_model(make_full(tmp_path / "m"), name="m")
    assert err.value.reference == "cache-not-writable"
    assert "SUBPLUG_HOME" in (err.value.hint or "")


# --------------------------------------------------------------------------- round trip


def test_import_writes_a_manifest_of_every_file(base_and_adapter: tuple[Path, Path]) -> None:
    base_src, adapter_src = base_and_adapter
    entry_dir = cache.models_dir() / "gemma-3n-e2b-it"
    manifest = json.loads((entry_dir / cache.MANIFEST_NAME).read_text())
    assert manifest["name"] == "gemma-3n-e2b-it"
    assert manifest["kind"] == "full"
    assert manifest["base"] is None
    assert manifest["source"] == str(base_src)
    assert manifest["subplug_version"]
    assert set(manifest["files"]) == {
        "config.json",
        "model.safetensors",
        "tokenizer/tokenizer.json",
    }
    for rel, rec in manifest["files"].items():
        assert rec["sha256"] == sha256(base_src / rel)
        assert rec["size"] == (base_src / rel).stat().st_size
        assert (entry_dir / rel).read_bytes() == (base_src / rel).read_bytes()

    adapter_manifest = json.loads(
        (cache.models_dir() / "gemma3n-en-mn" / cache.MANIFEST_NAME).read_text()
    )
    assert adapter_manifest["kind"] == "adapter"
    assert adapter_manifest["base"] == "gemma-3n-e2b-it"

    entries = {e.name: e for e in cache.list_models()}
    assert entries["gemma3n-en-mn"].complete and entries["gemma3n-en-mn"].kind == "adapter"
    assert entries["gemma-3n-e2b-it"].size == sum(
        (base_src / r).stat().st_size for r in manifest["files"]
    )


def test_resolve_default_gives_adapter_and_shared_base(
    base_and_adapter: tuple[Path, Path],
) -> None:
    resolved = cache.resolve_model(None)
    assert resolved.name == cache.DEFAULT_MODEL
    assert resolved.is_adapter
    assert resolved.path == cache.models_dir() / "gemma3n-en-mn"
    assert resolved.base == cache.models_dir() / "gemma-3n-e2b-it"
    assert resolved.base_name == "gemma-3n-e2b-it"
    assert resolved.manifest is not None and resolved.manifest.kind == "adapter"

    full = cache.resolve_model("gemma-3n-e2b-it")
    assert not full.is_adapter and full.base is None


def test_resolve_folder_paths(base_and_adapter: tuple[Path, Path], tmp_path: Path) -> None:
    base_src, adapter_src = base_and_adapter
    full = cache.resolve_model(str(base_src))
    assert (full.name, full.is_adapter, full.path) == (None, False, base_src)

    # The adapter's base_model_name_or_path is a Hub id: found through the cache entry.
    by_repo = cache.resolve_model(str(adapter_src))
    assert by_repo.is_adapter and by_repo.base == cache.models_dir() / "gemma-3n-e2b-it"

    # ... or a local folder.
    local = make_adapter(tmp_path / "local-adapter", base_ref=str(base_src))
    assert cache.resolve_model(str(local)).base == base_src

    with pytest.raises(SubplugError) as err:
        cache.resolve_model(str(tmp_path / "no-such-folder"))
    assert err.value.reference == "model-not-found"


def test_export_import_round_trip_to_a_new_machine(
    base_and_adapter: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    archive = cache.export_model("gemma3n-en-mn", usb, with_base=True)
    assert archive == usb / "gemma3n-en-mn.tar"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == cache.EXPORT_HEADER
    assert "gemma-3n-e2b-it/model.safetensors" in names
    assert "gemma3n-en-mn/manifest.json" in names

    monkeypatch.setenv("SUBPLUG_HOME", str(tmp_path / "other-machine"))
    assert cache.list_models() == []
    entry = cache.import_model(archive)
    assert entry.name == "gemma3n-en-mn" and entry.complete and entry.base == "gemma-3n-e2b-it"
    assert sorted(complete_names()) == ["gemma-3n-e2b-it", "gemma3n-en-mn"]
    for name in complete_names():
        assert cache.verify(name).ok
    resolved = cache.resolve_model(None)
    assert resolved.base == tmp_path / "other-machine" / "models" / "gemma-3n-e2b-it"
    base_src, _ = base_and_adapter
    assert (resolved.base / "model.safetensors").read_bytes() == (
        base_src / "model.safetensors"
    ).read_bytes()

    # Importing again: the adapter exists (refused), the carried base is identical.
    with pytest.raises(SubplugError) as err:
        cache.import_model(archive)
    assert err.value.reference == "model-exists"
    renamed = cache.import_model(archive, name="en-mn-copy")
    assert renamed.base == "gemma-3n-e2b-it"
    assert cache.verify("en-mn-copy").ok


def test_adapter_export_without_base_needs_the_base(
    base_and_adapter: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = cache.export_model("gemma3n-en-mn", tmp_path / "a.tar")
    monkeypatch.setenv("SUBPLUG_HOME", str(tmp_path / "other"))
    with pytest.raises(SubplugError) as err:
        cache.import_model(archive)
    assert err.value.reference == "base-model-missing"
    assert "with-base" in (err.value.hint or "")
    assert complete_names() == []
    assert visible_folders() == []


def test_import_refuses_overwrite_unless_forced(tmp_path: Path) -> None:
    cache.import_model(make_full(tmp_path / "one", seed=1), name="m")
    second = make_full(tmp_path / "two", seed=2)
    with pytest.raises(SubplugError) as err:
        cache.import_model(second, name="m")
    assert err.value.reference == "model-exists"
    assert "--force" in (err.value.hint or "")
    assert sha256(cache.models_dir() / "m" / "model.safetensors") == sha256(
        tmp_path / "one" / "model.safetensors"
    )
    cache.import_model(second, name="m", force=True)
    assert sha256(cache.models_dir() / "m" / "model.safetensors") == sha256(
        second / "model.safetensors"
    )
    assert cache.verify("m").ok
    assert [p.name for p in cache.models_dir().iterdir() if p.name.startswith(".")] == []


def test_import_of_a_damaged_copy_of_an_entry_is_refused(
    base_and_adapter: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    stick = tmp_path / "stick" / "gemma-3n-e2b-it"
    shutil.copytree(cache.models_dir() / "gemma-3n-e2b-it", stick)
    flip_byte(stick / "model.safetensors")
    monkeypatch.setenv("SUBPLUG_HOME", str(tmp_path / "other"))
    with pytest.raises(SubplugError) as err:
        cache.import_model(stick)
    assert err.value.reference == "model-corrupt"
    assert "model.safetensors" in err.value.message
    assert complete_names() == []
    flip_byte(stick / "model.safetensors")
    assert cache.import_model(stick).name == "gemma-3n-e2b-it"


def test_add_model_puts_a_trained_adapter_in_the_cache(
    base_and_adapter: tuple[Path, Path], tmp_path: Path
) -> None:
    trained = make_adapter(tmp_path / "run" / "final", base_ref="whatever", seed=7)
    entry = cache.add_model("my-adapter", trained, kind="adapter", base="gemma-3n-e2b-it")
    assert entry.complete and entry.base == "gemma-3n-e2b-it"
    manifest = json.loads((entry.path / cache.MANIFEST_NAME).read_text())
    assert manifest["source"].startswith("training:")
    resolved = cache.resolve_model("my-adapter")
    assert resolved.is_adapter and resolved.base == cache.models_dir() / "gemma-3n-e2b-it"
    with pytest.raises(SubplugError) as err:
        cache.add_model("x", trained, kind="adapter", base="not-there")
    assert err.value.reference == "base-model-missing"


# --------------------------------------------------------------------------- integrity


def test_verify_and_resolve_detect_a_flipped_byte(base_and_adapter: tuple[Path, Path]) -> None:
    weights = cache.models_dir() / "gemma-3n-e2b-it" / "model.safetensors"
    assert cache.verify("gemma-3n-e2b-it").ok
    flip_byte(weights)

    report = cache.verify("gemma-3n-e2b-it")
    assert not report.ok
    assert report.changed == ("model.safetensors",)
    assert report.missing == () and report.extra == ()

    for spec in ("gemma-3n-e2b-it", None):  # directly, and as the default adapter's base
        with pytest.raises(SubplugError) as err:
            cache.resolve_model(spec)
        assert err.value.reference == "model-corrupt"
        assert "subplug models verify gemma-3n-e2b-it" in (err.value.hint or "")


def test_verify_catches_a_flip_that_kept_its_mtime(base_and_adapter: tuple[Path, Path]) -> None:
    weights = cache.models_dir() / "gemma3n-en-mn" / "adapter_model.safetensors"
    flip_byte(weights, keep_mtime=True)
    assert cache.verify("gemma3n-en-mn").changed == ("adapter_model.safetensors",)


def test_verify_reports_missing_and_extra_files(base_and_adapter: tuple[Path, Path]) -> None:
    folder = cache.models_dir() / "gemma-3n-e2b-it"
    (folder / "tokenizer" / "tokenizer.json").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"stray")
    report = cache.verify("gemma-3n-e2b-it")
    assert report.missing == ("tokenizer/tokenizer.json",)
    assert report.extra == ("pytorch_model.bin",)
    assert not report.ok
    with pytest.raises(SubplugError) as err:
        cache.resolve_model("gemma-3n-e2b-it")
    assert err.value.reference == "model-corrupt"
    assert "missing" in err.value.message


def test_touched_but_unchanged_file_passes_and_is_remembered(
    base_and_adapter: tuple[Path, Path],
) -> None:
    folder = cache.models_dir() / "gemma-3n-e2b-it"
    weights = folder / "model.safetensors"
    later = weights.stat().st_mtime_ns + 5_000_000_000
    os.utime(weights, ns=(later, later))
    assert cache.resolve_model("gemma-3n-e2b-it").path == folder
    manifest = json.loads((folder / cache.MANIFEST_NAME).read_text())
    assert manifest["files"]["model.safetensors"]["mtime_ns"] == later


def test_missing_model_message_names_pull_and_import() -> None:
    with pytest.raises(SubplugError) as err:
        cache.resolve_model(None)
    assert err.value.reference == "model-not-found"
    assert "gemma3n-en-mn" in err.value.message
    assert "subplug models pull gemma3n-en-mn" in (err.value.hint or "")
    assert "subplug models import PATH" in (err.value.hint or "")

    with pytest.raises(SubplugError) as err:
        cache.resolve_model("someone-elses-model")
    assert "someone-elses-model" in err.value.message
    assert "subplug models pull" in (err.value.hint or "")
    assert "subplug models import" in (err.value.hint or "")


def test_adapter_whose_base_was_removed_names_the_base(
    base_and_adapter: tuple[Path, Path],
) -> None:
    with pytest.raises(SubplugError) as err:
        cache.remove("gemma-3n-e2b-it")
    assert err.value.reference == "model-in-use"
    assert "gemma3n-en-mn" in err.value.message
    freed = cache.remove("gemma-3n-e2b-it", force=True)
    assert freed > 2000
    with pytest.raises(SubplugError) as err:
        cache.resolve_model(None)
    assert err.value.reference == "model-not-found"
    assert "gemma-3n-e2b-it" in err.value.message
    assert "subplug models pull gemma-3n-e2b-it" in (err.value.hint or "")
    cache.remove("gemma3n-en-mn")
    assert cache.list_models() == []
    with pytest.raises(SubplugError) as err:
        cache.remove("gemma3n-en-mn")
    assert err.value.reference == "model-not-found"


# --------------------------------------------------------------------------- archives


def _evil_tar(path: Path, kind: str) -> Path:
    header = {"format": 1, "main": "m", "models": ["m"], "subplug_version": "0"}
    manifest = {
        "format": 1,
        "name": "m",
        "kind": "full",
        "base": None,
        "files": {},
        "source": "x",
        "repo_id": None,
        "revision": None,
        "created": "",
        "subplug_version": "0",
    }
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            import io

            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add(cache.EXPORT_HEADER, json.dumps(header).encode())
        add("m/manifest.json", json.dumps(manifest).encode())
        if kind == "dotdot":
            add("m/../../escaped.txt", b"pwned")
        elif kind == "absolute":
            add(str(path.parent / "absolute.txt"), b"pwned")
        elif kind == "symlink":
            info = tarfile.TarInfo("m/config.json")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        elif kind == "hardlink":
            info = tarfile.TarInfo("m/config.json")
            info.type = tarfile.LNKTYPE
            info.linkname = "../../outside"
            tar.addfile(info)
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_tar_traversal_is_refused(tmp_path: Path, kind: str) -> None:
    (tmp_path / "evil").mkdir()
    archive = _evil_tar(tmp_path / "evil" / f"{kind}.tar", kind)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SubplugError) as err:
        cache.import_model(archive)
    assert err.value.reference == "unsafe-archive"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "evil" / "absolute.txt").exists()
    assert visible_folders() == []


def test_a_random_tar_is_not_a_model_archive(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(make_full(tmp_path / "m"), arcname="m")
    with pytest.raises(SubplugError) as err:
        cache.import_model(plain)
    assert err.value.reference == "not-a-model-archive"


def test_truncated_archive_is_refused(base_and_adapter: tuple[Path, Path], tmp_path: Path) -> None:
    archive = cache.export_model("gemma-3n-e2b-it", tmp_path / "b.tar")
    data = archive.read_bytes()
    with tarfile.open(archive) as tar:
        weights = tar.getmember("gemma-3n-e2b-it/model.safetensors")
    cut = tmp_path / "cut.tar"
    # Flip a byte inside the weights: tar structure intact, content damaged.
    damaged = bytearray(data)
    damaged[weights.offset_data + 50] ^= 0xFF
    cut.write_bytes(bytes(damaged))
    with pytest.raises(SubplugError) as err:
        cache.import_model(cut, name="other")
    assert err.value.reference == "model-corrupt"
    assert "other" not in complete_names()
    assert [p for p in cache.models_dir().iterdir() if p.name.startswith(".partial")] == []


# --------------------------------------------------------------------------- processes


def _import_script(src: Path, name: str, *, force: bool = False) -> str:
    return textwrap.dedent(
        f"""
        import sys
        from subplug import cache
        from subplug.errors import SubplugError
        def progress(event):
            if event.stage == "wait":
                print("WAITED", flush=True)
        try:
            cache.import_model({str(src)!r}, name={name!r}, force={force}, progress=progress)
        except SubplugError as e:
            print("ERROR", e.reference, flush=True)
            sys.exit(3)
        print("DONE", flush=True)
        """
    )


def _spawn(script: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def _big_model(folder: Path, size: int) -> Path:
    """A full model whose weights file is ``size`` bytes (sparse: cheap to create)."""
    make_full(folder)
    with open(folder / "model-big.safetensors", "wb") as fh:
        fh.truncate(size)
    return folder


def _wait_for_partial(name: str, proc: subprocess.Popen[str], min_bytes: int = 1) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in (
            cache.models_dir().glob(f".partial-{name}-*") if cache.models_dir().exists() else []
        ):
            big = p / "model-big.safetensors"
            if big.exists() and big.stat().st_size >= min_bytes:
                return p
        if proc.poll() is not None:
            raise AssertionError(f"importer ended early: {proc.communicate()}")
        time.sleep(0.005)
    raise AssertionError("the partial folder never appeared")


@pytest.mark.slow
def test_two_processes_importing_the_same_name(tmp_path: Path) -> None:
    src = _big_model(tmp_path / "src", 192 * 1024 * 1024)
    first = _spawn(_import_script(src, "shared"))
    _wait_for_partial("shared", first)
    second = _spawn(_import_script(src, "shared"))
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and "DONE" in out1, err1
    # The second waited for the first's lock, then refused cleanly: the name was taken.
    assert second.returncode == 3, err2
    assert "WAITED" in out2 and "ERROR model-exists" in out2
    assert complete_names() == ["shared"]
    assert cache.verify("shared").ok
    assert [p for p in cache.models_dir().iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_two_processes_importing_different_names_and_forcing(tmp_path: Path) -> None:
    src = _big_model(tmp_path / "src", 128 * 1024 * 1024)
    a = _spawn(_import_script(src, "a"))
    _wait_for_partial("a", a)
    b = _spawn(_import_script(src, "b"))
    for proc in (a, b):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "DONE" in out, err
    assert sorted(complete_names()) == ["a", "b"]
    # Forced imports of one name at once: both succeed one after the other.
    c = _spawn(_import_script(src, "a", force=True))
    _wait_for_partial("a", c)
    d = _spawn(_import_script(src, "a", force=True))
    for proc in (c, d):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "DONE" in out, err
    for name in ("a", "b"):
        report = cache.verify(name)
        assert (
            report.ok
            and report.size
            == 128 * 1024 * 1024
            + sum((src / f).stat().st_size for f in ("config.json", "model.safetensors"))
            + (src / "tokenizer" / "tokenizer.json").stat().st_size
        )


@pytest.mark.slow
def test_killed_import_leaves_nothing_complete_and_next_import_works(tmp_path: Path) -> None:
    src = _big_model(tmp_path / "src", 1024 * 1024 * 1024)
    proc = _spawn(_import_script(src, "victim"))
    partial = _wait_for_partial("victim", proc, min_bytes=1024 * 1024)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert partial.exists()  # killed mid-copy, nothing cleaned up yet

    entries = cache.list_models()
    assert [e for e in entries if e.complete] == []
    assert visible_folders() == []
    assert not partial.exists()  # the dead import's leftovers were cleaned by list
    with pytest.raises(SubplugError) as err:
        cache.resolve_model("victim")
    assert err.value.reference == "model-not-found"

    small = make_full(tmp_path / "small")
    entry = cache.import_model(small, name="victim")
    assert entry.complete and cache.verify("victim").ok
    assert [p for p in cache.models_dir().iterdir() if p.name.startswith(".")] == []


def test_stale_partials_are_cleaned_but_interrupted_pulls_kept() -> None:
    root = cache.models_dir()
    root.mkdir(parents=True)
    dead_import = root / ".partial-x-999999999"
    dead_import.mkdir()
    (dead_import / "config.json").write_text("{}")
    dead_pull = root / ".partial-y-999999999"
    dead_pull.mkdir()
    (dead_pull / ".subplug-partial.json").write_text(json.dumps({"operation": "pull"}))
    trash = root / ".trash-z-999999999"
    trash.mkdir()

    entries = cache.list_models()
    assert not dead_import.exists() and not trash.exists()
    assert [(e.name, e.complete, e.state) for e in entries] == [("y", False, "resumable")]


# --------------------------------------------------------------------------- pull


class FakeDownloader:
    """A remote held in memory. Writes like huggingface_hub does (finished files in place,
    the current file in ``.cache/…incomplete``), can fail after N bytes, and resumes from
    an incomplete file when called again."""

    def __init__(self, repos: dict[str, tuple[str, dict[str, bytes]]]) -> None:
        self.repos = repos
        self.fail_after: int | None = None
        self.fail_with: BaseException = ConnectionError("Network is unreachable")
        self.resolved: list[tuple[str, str | None]] = []
        self.resumed_from: dict[str, int] = {}
        self.fetched: list[str] = []
        self.tamper: set[str] = set()

    def resolve(self, repo_id: str, revision: str | None) -> RemoteSnapshot:
        self.resolved.append((repo_id, revision))
        commit, files = self.repos[repo_id]
        return RemoteSnapshot(
            repo_id,
            commit,
            tuple(
                RemoteFile(
                    p, len(d), hashlib.sha256(d).hexdigest() if p.endswith(".safetensors") else None
                )
                for p, d in files.items()
            ),
        )

    def fetch(self, snapshot: RemoteSnapshot, dest: Path) -> None:
        commit, files = self.repos[snapshot.repo_id]
        assert commit == snapshot.commit, "asked for a commit the remote no longer serves"
        budget = self.fail_after
        for rel, data in files.items():
            final = dest / rel
            if final.exists():
                continue
            self.fetched.append(rel)
            incomplete = dest / ".cache" / "fake" / (rel + ".incomplete")
            incomplete.parent.mkdir(parents=True, exist_ok=True)
            have = incomplete.stat().st_size if incomplete.exists() else 0
            if have:
                self.resumed_from[rel] = have
            rest = data[have:]
            if budget is not None and len(rest) > budget:
                with open(incomplete, "ab") as fh:
                    fh.write(rest[:budget])
                raise self.fail_with
            if budget is not None:
                budget -= len(rest)
            with open(incomplete, "ab") as fh:
                fh.write(rest)
            if rel in self.tamper:
                blob = bytearray(incomplete.read_bytes())
                blob[0] ^= 0xFF
                incomplete.write_bytes(bytes(blob))
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(incomplete, final)


def _remote(seed: int = 0) -> dict[str, tuple[str, dict[str, bytes]]]:
    rng = np.random.default_rng(seed)
    return {
        BASE_REPO: (
            "a" * 40,
            {
                "config.json": b'{"model_type": "gemma3n"}',
                "model-00001-of-00002.safetensors": rng.bytes(300_000),
                "model-00002-of-00002.safetensors": rng.bytes(200_000),
            },
        ),
        ADAPTER_REPO: (
            "b" * 40,
            {
                "adapter_config.json": json.dumps({"base_model_name_or_path": BASE_REPO}).encode(),
                "adapter_model.safetensors": rng.bytes(50_000),
            },
        ),
    }


def test_pull_default_fetches_base_then_adapter() -> None:
    remote = _remote()
    dl = FakeDownloader(remote)
    events: list[cache.CacheProgress] = []
    entry = cache.pull(downloader=dl, progress=events.append)
    assert entry.name == "gemma3n-en-mn" and entry.base == "gemma-3n-e2b-it"
    assert [r for r, _ in dl.resolved] == [BASE_REPO, ADAPTER_REPO]
    base_manifest = json.loads(
        (cache.models_dir() / "gemma-3n-e2b-it" / cache.MANIFEST_NAME).read_text()
    )
    assert base_manifest["revision"] == "a" * 40  # the commit the pull got is recorded
    assert base_manifest["repo_id"] == BASE_REPO
    assert base_manifest["source"] == f"hf://{BASE_REPO}"
    for rel, data in remote[BASE_REPO][1].items():
        assert base_manifest["files"][rel]["sha256"] == hashlib.sha256(data).hexdigest()
    assert not (cache.models_dir() / "gemma-3n-e2b-it" / ".cache").exists()
    resolved = cache.resolve_model(None)
    assert resolved.is_adapter and resolved.base == cache.models_dir() / "gemma-3n-e2b-it"
    assert {e.stage for e in events} >= {"download", "hash"}
    assert events[-1].done == events[-1].total

    # Present already: nothing is downloaded again.
    dl.resolved.clear()
    cache.pull(downloader=dl)
    assert dl.resolved == []


def test_interrupted_pull_resumes_at_the_same_commit() -> None:
    remote = _remote()
    dl = FakeDownloader(remote)
    dl.fail_after = 400_000  # config + shard 1 + part of shard 2
    with pytest.raises(SubplugError) as err:
        cache.pull("gemma-3n-e2b-it", downloader=dl)
    assert err.value.reference == "model-download-failed"
    assert "subplug models import" in (err.value.hint or "")
    assert complete_names() == []
    assert visible_folders() == []
    (partial,) = [e for e in cache.list_models() if not e.complete]
    assert (partial.name, partial.state, partial.revision) == (
        "gemma-3n-e2b-it",
        "resumable",
        "a" * 40,
    )
    with pytest.raises(SubplugError) as err:
        cache.resolve_model("gemma-3n-e2b-it")
    assert "partly downloaded" in err.value.message

    # Meanwhile main moved on; the resumed pull still finishes the commit it started.
    commit, files = remote[BASE_REPO]
    remote_moved = dict(remote)
    dl.repos = remote_moved
    remote_moved[BASE_REPO] = (commit, files)
    dl.fail_after = None
    dl.fetched.clear()
    entry = cache.pull("gemma-3n-e2b-it", downloader=dl)
    assert entry.complete and entry.revision == "a" * 40
    assert len(dl.resolved) == 1  # no second resolve: the partial pinned the commit
    assert dl.fetched == ["model-00002-of-00002.safetensors"]  # finished files kept
    assert dl.resumed_from["model-00002-of-00002.safetensors"] == 400_000 - 300_000 - len(
        files["config.json"]
    )
    assert cache.verify("gemma-3n-e2b-it").ok
    assert [p for p in cache.models_dir().iterdir() if p.name.startswith(".")] == []


def test_forced_pull_reuses_the_recorded_revision() -> None:
    dl = FakeDownloader(_remote())
    cache.pull("gemma-3n-e2b-it", downloader=dl)
    dl.resolved.clear()
    cache.pull("gemma-3n-e2b-it", downloader=dl, force=True)
    assert dl.resolved == [(BASE_REPO, "a" * 40)]


def test_pull_rejects_a_file_damaged_in_transfer() -> None:
    dl = FakeDownloader(_remote())
    dl.tamper = {"model-00001-of-00002.safetensors"}
    with pytest.raises(SubplugError) as err:
        cache.pull("gemma-3n-e2b-it", downloader=dl)
    assert err.value.reference == "model-download-failed"
    assert "damaged" in err.value.message
    assert complete_names() == []
    dl.tamper = set()
    assert cache.pull("gemma-3n-e2b-it", downloader=dl).complete
    assert cache.verify("gemma-3n-e2b-it").ok


def test_pull_disk_full_removes_the_partial() -> None:
    dl = FakeDownloader(_remote())
    dl.fail_after = 1000
    dl.fail_with = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(SubplugError) as err:
        cache.pull("gemma-3n-e2b-it", downloader=dl)
    assert err.value.reference == "disk-full"
    assert list(cache.models_dir().iterdir()) == []


def test_pull_unknown_name() -> None:
    with pytest.raises(SubplugError) as err:
        cache.pull("not-a-model", downloader=FakeDownloader(_remote()))
    assert err.value.reference == "unknown-model"
    assert "models import" in (err.value.hint or "")


class FakeHub:
    """A local HTTP server answering the requests huggingface_hub makes for a download."""

    def __init__(self, repos: dict[str, tuple[str, dict[str, bytes]]]) -> None:
        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        self.cut_at: int | None = None  # drop the connection after this many body bytes
        self.down = False
        # Files whose connection was cut: the server answers 503 for them from then on,
        # while the other files (fetched in parallel) keep arriving.
        self.broken: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.answer(head=True)

            def do_GET(self) -> None:
                self.answer(head=False)

            def send(self, code: int, body: bytes, headers: dict[str, str], head: bool) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def answer(self, head: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path))
                if hub.down:
                    return self.send(503, b"down", {}, head)
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/.+)?", path):
                    commit, files = hub.repos[m[1]]
                    info = {
                        "id": m[1],
                        "sha": commit,
                        "siblings": [{"rfilename": f} for f in files],
                    }
                    return self.send(200, json.dumps(info).encode(), {}, head)
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/.+", path):
                    commit, files = hub.repos[m[1]]
                    tree = [
                        {
                            "type": "file",
                            "path": f,
                            "size": len(d),
                            "oid": hashlib.sha1(d).hexdigest(),
                            "lfs": {
                                "oid": hashlib.sha256(d).hexdigest(),
                                "size": len(d),
                                "pointerSize": 130,
                            },
                        }
                        for f, d in files.items()
                    ]
                    return self.send(200, json.dumps(tree).encode(), {}, head)
                if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    commit, files = hub.repos[m[1]]
                    data = files[m[3]]
                    headers = {
                        "X-Repo-Commit": commit,
                        "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                    }
                    if m[3] in hub.broken:
                        return self.send(503, b"down", {}, head)
                    if hub.cut_at is not None and not head and len(data) > hub.cut_at:
                        hub.broken.add(m[3])
                        self.send_response(200)
                        for key, value in headers.items():
                            self.send_header(key, value)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data[: hub.cut_at])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return None
                    return self.send(200, data, headers, head)
                return self.send(404, b"", {}, head)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub(_remote())
    yield hub
    hub.close()


def test_pull_through_huggingface_hub_resumes_file_by_file(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    dl = cache.HubDownloader(endpoint=fake_hub.url, token=False)
    fake_hub.cut_at = 250_000  # config and the small shard arrive, the big one is cut
    with pytest.raises(SubplugError) as err:
        cache.pull("gemma-3n-e2b-it", downloader=dl)
    assert err.value.reference == "model-download-failed"
    assert "subplug models import" in (err.value.hint or "")
    assert complete_names() == []

    fake_hub.cut_at = None
    fake_hub.broken.clear()
    fake_hub.requests.clear()
    entry = cache.pull("gemma-3n-e2b-it", downloader=dl)
    assert entry.complete and entry.revision == "a" * 40
    fetched = {
        p.rsplit("/", 1)[-1] for c, p in fake_hub.requests if c == "GET" and "/resolve/" in p
    }
    assert fetched == {"model-00001-of-00002.safetensors"}  # finished files were kept
    assert cache.verify("gemma-3n-e2b-it").ok
    files = _remote()[BASE_REPO][1]
    for rel, data in files.items():
        assert (entry.path / rel).read_bytes() == data


def test_pull_with_the_network_down_is_a_clear_error(fake_hub: FakeHub) -> None:
    url = fake_hub.url
    fake_hub.close()
    with pytest.raises(SubplugError) as err:
        cache.pull("gemma-3n-e2b-it", downloader=cache.HubDownloader(endpoint=url, token=False))
    assert err.value.reference == "model-download-failed"
    assert "subplug models import PATH" in (err.value.hint or "")


# --------------------------------------------------------------------------- CLI


def test_cli_list_verify_export_import_rm(
    base_and_adapter: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli("list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["name"], e["kind"], e["complete"]) for e in listed] == [
        ("gemma-3n-e2b-it", "full", True),
        ("gemma3n-en-mn", "adapter", True),
    ]
    assert cli("list") == 0
    table = capsys.readouterr().out
    assert "gemma3n-en-mn" in table and "complete" in table

    assert cli("verify", "--json") == 0
    assert all(r["ok"] for r in json.loads(capsys.readouterr().out))
    flip_byte(cache.models_dir() / "gemma3n-en-mn" / "adapter_model.safetensors")
    assert cli("verify") == 1
    out = capsys.readouterr().out
    assert "changed: adapter_model.safetensors" in out and "--force" in out
    flip_byte(cache.models_dir() / "gemma3n-en-mn" / "adapter_model.safetensors")

    assert cli("export", "gemma3n-en-mn", str(tmp_path), "--with-base") == 0
    assert "subplug models import" in capsys.readouterr().out
    monkeypatch.setenv("SUBPLUG_HOME", str(tmp_path / "elsewhere"))
    assert cli("import", str(tmp_path / "gemma3n-en-mn.tar"), "--name", "en-mn") == 0
    assert "Imported en-mn" in capsys.readouterr().out
    assert cli("rm", "en-mn") == 0
    assert complete_names() == ["gemma-3n-e2b-it"]
    with pytest.raises(SubplugError) as err:
        cli("rm", "en-mn")
    assert err.value.reference == "model-not-found"


def test_cli_pull_offline_names_models_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SubplugError) as err:
        cli("pull")
    assert err.value.reference == "model-download-failed"
    assert "subplug models import PATH" in (err.value.hint or "")
    assert complete_names() == []


def test_models_commands_print_paths_with_brackets_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from subplug.cli import main

    home = tmp_path / "home [usb]"
    monkeypatch.setenv("SUBPLUG_HOME", str(home))
    src = make_full(tmp_path / "model [v2]")
    assert main(["models", "import", str(src), "--name", "m2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"in {home / 'models' / 'm2'}" in out
    stick = tmp_path / "stick [a]"
    stick.mkdir()
    assert main(["models", "export", "m2", str(stick)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"Wrote {stick / 'm2.tar'}" in out
