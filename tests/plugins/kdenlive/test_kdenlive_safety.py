"""A project Kdenlive has open is refused; backups and atomic writes.

Kdenlive marks an open project with unsaved changes through KCoreAddons'
``KAutoSaveFile``: an autosave in ``$XDG_DATA_HOME/stalefiles/kdenlive/`` named
``<encoded file name><last 3 of junk>file_<encoded folder><8 junk chars>``, and a
``QLockFile`` beside it holding ``pid``, application and host name, one per line
(KDE/kcoreaddons ``src/lib/io/kautosavefile.cpp``). The names below are built from
that description, not from subplug's code.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from disk import read_only
from kdenlive_projects import make_project
from subplug.errors import SubplugError
from subplug_kdenlive import apply, safety


@pytest.fixture
def stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Kdenlive's autosave folder under a temporary XDG data folder."""
    data = tmp_path / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    folder = data / "stalefiles" / "kdenlive"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    clip = tmp_path / "media" / "clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"")
    return make_project(tmp_path / "My Film – Кино.kdenlive", clip)


def kautosave_name(project: Path, junk: str = "Xy3kQ9zA") -> str:
    return (
        quote(project.name, safe="")
        + junk[-3:]
        + "file_"
        + quote(str(project.parent), safe="")
        + junk
    )


def _age(path: Path, seconds: float) -> None:
    moment = time.time() - seconds
    os.utime(path, (moment, moment))


def test_autosave_locked_by_a_running_kdenlive_is_refused(stale: Path, project: Path) -> None:
    autosave = stale / kautosave_name(project.resolve())
    autosave.write_bytes(b"<mlt/>")
    lock = autosave.with_name(autosave.name + ".lock")
    lock.write_text(f"{os.getpid()}\nkdenlive\n{socket.gethostname()}\n", encoding="utf-8")
    _age(project, 3600)
    _age(autosave, 3600)  # old, but its lock holder is alive
    before = project.read_bytes()

    with pytest.raises(SubplugError) as caught:
        apply.prepare(apply.ApplyRequest(project=project))
    error = caught.value
    assert error.reference == "kdenlive-project-open"
    assert f"process {os.getpid()}" in error.message
    assert "close the project in Kdenlive" in error.hint
    assert "--force" in error.hint
    assert project.read_bytes() == before


def test_recent_autosave_after_a_crash_is_refused(stale: Path, project: Path) -> None:
    autosave = stale / kautosave_name(project.resolve())
    autosave.write_bytes(b"<mlt/>")
    _age(project, 3600)
    result = safety.check_open(project)
    assert result.is_open
    assert "crashed" in result.reasons[0]


def test_old_autosave_only_warns_and_force_goes_ahead(stale: Path, project: Path) -> None:
    autosave = stale / kautosave_name(project.resolve())
    autosave.write_bytes(b"<mlt/>")
    _age(autosave, 2 * 3600)
    _age(project, 3600)
    result = safety.check_open(project)
    assert not result.is_open
    assert any("old Kdenlive autosave" in w for w in result.warnings)


def test_autosave_of_a_namesake_elsewhere_is_ignored(
    stale: Path, project: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "other" / project.name
    (stale / kautosave_name(elsewhere)).write_bytes(b"<mlt/>")
    assert safety.check_open(project) == safety.OpenCheck()


def test_kdenlive_started_with_the_project_is_refused(stale: Path, project: Path) -> None:
    # A real process whose name is kdenlive and whose arguments hold the project, as
    # `kdenlive "My Film – Кино.kdenlive"` has.
    process = subprocess.Popen(
        ["kdenlive", "-c", "import time; time.sleep(60)", str(project)],
        executable=sys.executable,
    )
    try:
        deadline = time.monotonic() + 10
        while not safety.check_open(project).is_open and time.monotonic() < deadline:
            time.sleep(0.05)
        result = safety.check_open(project)
        assert result.is_open
        assert f"process {process.pid}" in result.reasons[0]
        with pytest.raises(SubplugError) as caught:
            safety.ensure_closed(project)
        assert caught.value.reference == "kdenlive-project-open"
        forced = safety.ensure_closed(project, force=True)
        assert forced.is_open
    finally:
        process.kill()
        process.wait()


def test_another_running_kdenlive_is_a_warning(stale: Path, project: Path, tmp_path: Path) -> None:
    process = subprocess.Popen(
        ["kdenlive", "-c", "import time; time.sleep(60)", str(tmp_path / "other.kdenlive")],
        executable=sys.executable,
    )
    try:
        deadline = time.monotonic() + 10
        while not safety.check_open(project).warnings and time.monotonic() < deadline:
            time.sleep(0.05)
        result = safety.check_open(project)
        assert not result.is_open
        assert any(f"process {process.pid}" in w for w in result.warnings)
    finally:
        process.kill()
        process.wait()


def test_write_files_backs_up_with_the_core_names_and_keeps_modes(tmp_path: Path) -> None:
    project = tmp_path / "edit.kdenlive"
    project.write_bytes(b"first")
    project.chmod(0o640)
    (tmp_path / "edit.kdenlive.bak").write_bytes(b"an older backup")
    subtitles = tmp_path / "edit.kdenlive.srt"
    os.umask(0o022)
    written = safety.write_files([(subtitles, b"cues"), (project, b"second")])
    assert written.paths == (subtitles, project)
    # The core's backup naming: NAME.bak, then NAME.bak.1… (an existing one is kept).
    assert written.backups == {project: tmp_path / "edit.kdenlive.bak.1"}
    assert (tmp_path / "edit.kdenlive.bak").read_bytes() == b"an older backup"
    assert written.backups[project].read_bytes() == b"first"
    assert project.read_bytes() == b"second"
    # A replaced file keeps its mode; a new one gets the umask's, like generate's files.
    assert stat.S_IMODE(project.stat().st_mode) == 0o640
    assert stat.S_IMODE(subtitles.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "edit.kdenlive",
        "edit.kdenlive.bak",
        "edit.kdenlive.bak.1",
        "edit.kdenlive.srt",
    ]


def test_write_atomic_leaves_no_temp_files_and_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "clipjobsettings.rc"
    os.umask(0o022)
    safety.write_atomic(path, b"[Ids]\n")
    safety.write_atomic(path, b"[Ids]\nx=y\n")
    assert path.read_bytes() == b"[Ids]\nx=y\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["clipjobsettings.rc"]


def test_a_failure_midway_puts_everything_back(tmp_path: Path) -> None:
    """The last file cannot be written (its folder is gone): the files written before
    it are undone, new ones removed and replaced ones restored, backups removed."""
    kept = tmp_path / "edit.kdenlive.srt"
    kept.write_bytes(b"old cues")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(SubplugError) as caught:
        safety.write_files(
            [
                (tmp_path / "edit.kdenlive.ass", b"new track"),
                (kept, b"new cues"),
                (tmp_path / "gone" / "edit.kdenlive", b"project"),
            ]
        )
    assert caught.value.reference == "kdenlive-write-failed"
    assert "Nothing was changed" in caught.value.message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_interrupt_while_writing_puts_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or SIGTERM, which the command turns into the same) between two renames."""
    project = tmp_path / "edit.kdenlive"
    project.write_bytes(b"project")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace
    calls = []

    def interrupted_replace(src, dst):  # type: ignore[no-untyped-def]
        calls.append(dst)
        if len(calls) == 2:  # the project's rename, once
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        safety.write_files([(tmp_path / "edit.kdenlive.srt", b"cues"), (project, b"new")])
    monkeypatch.setattr(os, "replace", real_replace)
    assert [Path(c).name for c in calls[:2]] == ["edit.kdenlive.srt", "edit.kdenlive"]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_folder_that_cannot_be_written_is_found_before_any_work(tmp_path: Path) -> None:
    folder = tmp_path / "films"
    folder.mkdir()
    with read_only(folder), pytest.raises(SubplugError) as caught:
        safety.check_writable_folder(folder, "the project's folder")
    assert caught.value.reference == "kdenlive-write-failed"
    assert str(folder) in caught.value.message and caught.value.hint
    assert list(folder.iterdir()) == []
