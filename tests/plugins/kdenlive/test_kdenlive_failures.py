"""What ``kdenlive apply`` does when things go wrong: an encoding it cannot read, a full
disk, a folder it cannot write, missing media, SIGTERM. Each ends in one clear message,
with the project and its folder exactly as they were (no half-written file, no stray
backup, no temporary file left behind)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from disk import fill, read_only
from kdenlive_projects import make_project
from subplug.errors import SubplugError
from subplug.testing import FakeBackendPlugin
from subplug.types import GenerateOptions
from subplug_kdenlive import apply
from subplug_kdenlive.project import KdenliveProject


@pytest.fixture
def user_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty XDG data folder, so no real Kdenlive autosave is looked at."""
    folder = tmp_path / "xdg-data"
    folder.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(folder))
    return folder


def listing(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` (hidden ones too) with its contents."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def stand_in_melt(folder: Path, body: str) -> Path:
    """A folder for PATH whose ``melt`` writes its pid to ``started`` then runs ``body``."""
    folder.mkdir(parents=True)
    melt = folder / "melt"
    melt.write_text(f"#!/bin/sh\necho $$ > '{folder}/started'\n{body}\n", encoding="utf-8")
    melt.chmod(0o755)
    return folder


# ------------------------------------------------------------------------ encoding


@pytest.mark.parametrize("encoding", ["x-klingon", "cp037", "utf-16"])
@pytest.mark.parametrize("command", ["info", "apply"])
def test_an_encoding_that_cannot_be_read_is_one_clear_error(
    tmp_path: Path, user_data: Path, encoding: str, command: str
) -> None:
    path = tmp_path / "odd.kdenlive"
    content = f"<?xml version='1.0' encoding='{encoding}'?>\n<mlt><tractor id='t'/></mlt>\n"
    path.write_bytes(content.encode("ascii"))
    done = subprocess.run(
        [sys.executable, "-m", "subplug", "kdenlive", command, str(path)],
        capture_output=True,
        text=True,
        env=dict(os.environ, NO_COLOR="1", COLUMNS="200"),
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    first, hint = done.stderr.splitlines()[:2]
    assert first.startswith("error: ") and first.endswith("[kdenlive-unknown-encoding]")
    assert encoding in first and hint.startswith("hint: ")
    assert path.read_bytes() == content.encode("ascii")


def test_a_utf16_file_is_refused_rather_than_edited(tmp_path: Path) -> None:
    path = tmp_path / "wide.kdenlive"
    path.write_bytes("<?xml version='1.0'?><mlt><tractor id='t'/></mlt>".encode("utf-16"))
    with pytest.raises(SubplugError) as caught:
        KdenliveProject.load(path)
    assert caught.value.reference == "kdenlive-unknown-encoding"


# ------------------------------------------------------------------------ full disk


def _project_on(folder: Path) -> Path:
    """A 22.x project on ``folder`` whose file is bigger than one 4 KiB page."""
    clip = folder / "clip.mp4"
    clip.write_bytes(b"")
    path = make_project(folder / "edit.kdenlive", clip)
    assert path.stat().st_size > 4096
    return path


def test_a_full_disk_changes_nothing(small_disk: Path, hand_tracks, user_data: Path) -> None:
    path = _project_on(small_disk)
    project = KdenliveProject.load(path)
    filler = fill(small_disk, leave=0)
    before = listing(small_disk)
    with pytest.raises(SubplugError) as caught:
        apply.write(project, hand_tracks)
    assert caught.value.reference == "kdenlive-disk-full"
    assert "Nothing was changed" in caught.value.message and caught.value.hint
    # No truncated backup, no temporary file, no subtitle file: as it was.
    assert listing(small_disk) == before
    filler.unlink()


def test_a_disk_full_at_the_project_leaves_no_stray_subtitles(
    small_disk: Path, hand_tracks, user_data: Path
) -> None:
    """Room for the (small) subtitle file but not for the project: the subtitle file
    that nothing would use is not left behind."""
    path = _project_on(small_disk)
    project = KdenliveProject.load(path)
    fill(small_disk, leave=4096)
    before = listing(small_disk)
    with pytest.raises(SubplugError) as caught:
        apply.write(project, hand_tracks)
    assert caught.value.reference == "kdenlive-disk-full"
    assert "edit.kdenlive" in caught.value.message
    assert listing(small_disk) == before


# ----------------------------------------------------------- before the long work


@pytest.fixture
def recorded_melt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in melt first on PATH that records that it was started."""
    folder = stand_in_melt(tmp_path / "melt-bin", "exit 1")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def test_a_read_only_project_folder_is_found_before_melt_and_the_model(
    tmp_path: Path,
    user_data: Path,
    recorded_melt: Path,
    fake_backend: FakeBackendPlugin,
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    clip = folder / "clip.mp4"
    clip.write_bytes(b"")
    path = make_project(folder / "edit.kdenlive", clip)
    before = listing(folder)
    request = apply.ApplyRequest(project=path, generate=GenerateOptions(backend="fake"))
    with read_only(folder), pytest.raises(SubplugError) as caught:
        apply.apply(request)
    assert caught.value.reference == "kdenlive-write-failed"
    assert str(folder) in caught.value.message
    assert not (recorded_melt / "started").exists()
    assert fake_backend.instances == []
    assert listing(folder) == before


def test_missing_media_is_reported_as_missing_media(
    tmp_path: Path,
    user_data: Path,
    recorded_melt: Path,
    fake_backend: FakeBackendPlugin,
) -> None:
    clip = tmp_path / "media" / "interview take 3.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"")
    path = make_project(tmp_path / "edit.kdenlive", clip)
    clip.unlink()
    request = apply.ApplyRequest(project=path, generate=GenerateOptions(backend="fake"))
    with pytest.raises(SubplugError) as caught:
        apply.apply(request)
    assert caught.value.reference == "kdenlive-media-missing"
    assert "interview take 3.mp4" in caught.value.message
    assert "relink" in caught.value.hint.lower()
    assert not (recorded_melt / "started").exists()
    assert fake_backend.instances == []


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_stops_cleanly(tmp_path: Path, user_data: Path) -> None:
    """SIGTERM while melt renders the timeline: melt is stopped, the temporary folder is
    removed, the project is untouched, and the command says so (exit code 130)."""
    melt = stand_in_melt(tmp_path / "melt-bin", "exec sleep 600")
    clip = tmp_path / "media" / "clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"")
    path = make_project(tmp_path / "edit.kdenlive", clip)
    before = listing(tmp_path)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = dict(
        os.environ,
        PATH=f"{melt}{os.pathsep}{os.environ['PATH']}",
        TMPDIR=str(private_tmp),
        SUBPLUG_PLUGINS="subplug.testing.fake",
        NO_COLOR="1",
        COLUMNS="200",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "subplug", "kdenlive", "apply", str(path), "--backend", "fake"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    started = melt / "started"
    while not started.exists() or not started.read_text().strip():
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    melt_pid = int(started.read_text())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("error: Stopped; the project was not changed.")
    assert list(private_tmp.iterdir()) == []
    with pytest.raises(ProcessLookupError):
        os.kill(melt_pid, 0)
    assert listing(tmp_path) == before


def test_no_stray_files_when_melt_fails(
    tmp_path: Path,
    user_data: Path,
    fake_backend: FakeBackendPlugin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """melt failing is reported with its last words, and leaves nothing behind."""
    melt = stand_in_melt(tmp_path / "melt-bin", "echo 'Failed to load \"x\"' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{melt}{os.pathsep}{os.environ['PATH']}")
    clip = tmp_path / "media" / "clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"")
    path = make_project(tmp_path / "edit.kdenlive", clip)
    before = listing(tmp_path)
    request = apply.ApplyRequest(project=path, generate=GenerateOptions(backend="fake"))
    with pytest.raises(SubplugError) as caught:
        apply.apply(request)
    assert caught.value.reference == "kdenlive-render-failed"
    assert 'Failed to load "x"' in caught.value.message
    assert listing(tmp_path) == before
