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


def test_backups_never_overwrite_each_other(tmp_path: Path) -> None:
    path = tmp_path / "edit.kdenlive"
    path.write_bytes(b"first")
    one = safety.backup(path, "20260101-000000")
    path.write_bytes(b"second")
    two = safety.backup(path, "20260101-000000")
    assert (one.name, two.name) == (
        "edit.kdenlive.bak-20260101-000000",
        "edit.kdenlive.bak-20260101-000000-2",
    )
    assert (one.read_bytes(), two.read_bytes()) == (b"first", b"second")


def test_atomic_write_keeps_permissions_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "edit.kdenlive"
    path.write_bytes(b"old")
    path.chmod(0o640)
    safety.write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["edit.kdenlive"]


def test_atomic_write_into_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SubplugError) as caught:
        safety.write_atomic(tmp_path / "gone" / "edit.kdenlive", b"x")
    assert caught.value.reference == "kdenlive-write-failed"
