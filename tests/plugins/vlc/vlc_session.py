"""Running the real VLC as a normal user for the host tests (VLC refuses root).

As root, the tests create the system user ``subplug-vlc`` and run VLC through
``runuser``. That user must be able to run this Python, so folders on the way to it that
others cannot enter (``/root`` for a pyenv install) get the search bit (``o+x``, not
read) while the tests run; :func:`open_python_for` returns how to restore their modes.
As any other user, VLC simply runs as that user.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import subplug_vlc

LUA_ROOT = Path(subplug_vlc.__file__).resolve().parent / "lua"
VLC_USER = "subplug-vlc"
#: The test media is copied into folders of this name, under this name: a space,
#: quotes and Cyrillic letters must survive the trip through the shell.
MEDIA_FOLDER = "my films"
MEDIA_NAME = 'Кино\'s "test" clip.mp4'


def cvlc() -> str | None:
    """The ``cvlc`` program (VLC without a window), or ``None``."""
    return shutil.which("cvlc")


def blocking_dirs(paths: Sequence[Path]) -> list[Path]:
    """Folders on the way to ``paths`` that other users cannot enter."""
    found: list[Path] = []
    for path in paths:
        for parent in reversed(path.resolve().parents):
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH and parent not in found:
                found.append(parent)
    return found


def python_paths() -> list[Path]:
    """This Python and the packages the VLC user must import from it."""
    import subplug

    return [
        Path(sys.executable).resolve(),
        Path(subplug.__file__).resolve(),
        Path(subplug_vlc.__file__).resolve(),
    ]


@dataclass
class VlcUser:
    """Who runs VLC: a name and how to prefix a command to run as them."""

    name: str
    uid: int
    gid: int
    prefix: list[str]

    def chown(self, path: Path) -> None:
        """Give ``path`` (recursively) to this user."""
        if os.geteuid() != 0:
            return
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), self.uid, self.gid)
        os.lchown(path, self.uid, self.gid)


def root_user() -> VlcUser:
    """The ``subplug-vlc`` system user (created when missing) and ``runuser`` to use it;
    skips the test when the tools to do so are missing."""
    runuser, useradd = shutil.which("runuser"), shutil.which("useradd")
    if runuser is None:
        pytest.skip("running as root and runuser is missing: cannot run VLC as a normal user")
    try:
        entry = pwd.getpwnam(VLC_USER)
    except KeyError:
        if useradd is None:
            pytest.skip("running as root and useradd is missing: cannot make a user for VLC")
        done = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", VLC_USER],
            capture_output=True,
            text=True,
        )
        try:
            entry = pwd.getpwnam(VLC_USER)
        except KeyError:
            pytest.skip(f"could not create the user {VLC_USER} for VLC: {done.stderr.strip()}")
    return VlcUser(entry.pw_name, entry.pw_uid, entry.pw_gid, [runuser, "-u", entry.pw_name, "--"])


def open_python_for(user: VlcUser) -> list[tuple[Path, int]]:
    """Let ``user`` enter the folders on the way to this Python; returns the folders
    changed with their old modes, for :func:`restore_modes`."""
    opened: list[tuple[Path, int]] = []
    for folder in blocking_dirs(python_paths()):
        mode = stat.S_IMODE(folder.stat().st_mode)
        os.chmod(folder, mode | stat.S_IXOTH)
        opened.append((folder, mode))
    return opened


def restore_modes(opened: list[tuple[Path, int]]) -> None:
    """Undo :func:`open_python_for`."""
    for folder, mode in reversed(opened):
        os.chmod(folder, mode)


def can_run_python(user: VlcUser) -> str | None:
    """``None`` when ``user`` can run this Python with subplug, else why not."""
    done = subprocess.run(
        [*user.prefix, sys.executable, "-c", "import subplug, subplug_vlc, torch"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    if done.returncode == 0:
        return None
    return f"user {user.name} cannot run {sys.executable}: {done.stderr.strip()[-300:]}"


def current_user() -> VlcUser:
    """The user running the tests (when it is not root)."""
    me = pwd.getpwuid(os.geteuid())
    return VlcUser(me.pw_name, me.pw_uid, me.pw_gid, [])


@dataclass
class VlcRun:
    """What one VLC run did: exit code, output, and the bridge's result lines."""

    returncode: int
    output: str
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def result(self) -> dict[str, Any]:
        assert len(self.results) == 1, f"expected one result, got {self.results}\n{self.output}"
        return self.results[0]


@dataclass
class VlcSession:
    """A folder the VLC user owns, with homes, a tiny model and the test media."""

    user: VlcUser
    root: Path
    model: Path
    media: Path

    def home(
        self,
        name: str,
        *,
        settings: dict[str, str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> Path:
        """A home folder for VLC with subplug installed (by ``subplug install vlc`` run
        as the VLC user, or with ``config`` passed to the host adapter)."""
        home = self.root / "homes" / name
        if home.exists():
            return home
        home.mkdir(parents=True)
        self.user.chown(home)
        if config is None:
            done = subprocess.run(
                [
                    *self.user.prefix,
                    *self.env(home),
                    sys.executable,
                    "-m",
                    "subplug",
                    "install",
                    "vlc",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                cwd="/",
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert str(home / ".local/share/vlc/lua") in done.stdout
        else:
            from subplug_vlc.plugin import VlcHost

            VlcHost(home / ".local/share/vlc/lua", **config).install()
        if settings:
            lines = "".join(f"{key}={value}\n" for key, value in settings.items())
            (home / ".local/share/vlc/subplug-settings.txt").write_text(lines, encoding="utf-8")
        self.user.chown(home)
        return home

    def env(self, home: Path, **extra: str) -> list[str]:
        """``env -i …``: the clean environment VLC gets (like a desktop session's).
        ``PYTHONPATH`` is passed on when the tests have one, so what runs as the VLC
        user (``subplug install vlc``, and the engine VLC starts) is the code under test
        even when another checkout is the installed one."""
        pythonpath = os.environ.get("PYTHONPATH")
        return [
            "env",
            "-i",
            f"HOME={home}",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "LANG=C.UTF-8",
            f"SUBPLUG_HOME={home / 'subplug'}",
            f"XDG_RUNTIME_DIR={home / 'run'}",
            *([f"PYTHONPATH={pythonpath}"] if pythonpath else []),
            *(f"{key}={value}" for key, value in extra.items()),
        ]

    def run_vlc(
        self, home: Path, args: Sequence[str], *, report: Path | None = None, timeout: float = 300
    ) -> VlcRun:
        """Run ``cvlc ARGS`` as the VLC user with ``home``; kill it all after ``timeout``."""
        (home / "run").mkdir(mode=0o700, exist_ok=True)
        self.user.chown(home / "run")
        command = [*self.user.prefix, *self.env(home), cvlc() or "cvlc", *args]
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            cwd="/",
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            pytest.fail(f"VLC did not finish within {timeout} s:\n{output[-4000:]}")
        run = VlcRun(proc.returncode, output, seconds=time.monotonic() - started)
        if report is not None and report.exists():
            run.results = [
                json.loads(line) for line in report.read_text("utf-8").splitlines() if line.strip()
            ]
        return run

    def intf_args(self, report: Path, **options: Any) -> list[str]:
        """Arguments that start the headless subplug interface with ``options``."""
        items = [f"report={_lua_value(str(report))}"]
        items += [f"{key}={_lua_value(value)}" for key, value in options.items()]
        return [
            "-I",
            "luaintf",
            "--lua-intf",
            "subplug_intf",
            "--lua-config",
            "subplug_intf={" + ",".join(items) + "}",
        ]

    def folder(self, name: str, *, writable: bool = True) -> Path:
        """A new folder holding a copy of the media (owned by root and read-only for
        the VLC user when ``writable`` is false)."""
        folder = self.root / name / MEDIA_FOLDER
        folder.mkdir(parents=True)
        shutil.copy2(self.media, folder / MEDIA_NAME)
        if writable:
            self.user.chown(folder.parent)
        else:
            os.chmod(folder / MEDIA_NAME, 0o644)
            os.chmod(folder, 0o755)
        return folder / MEDIA_NAME


def _lua_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    assert "]]" not in text
    return "[[" + text + "]]"


def make_test_video(path: Path, wav: Path) -> Path:
    """A 640x360, 25 fps test picture (ffmpeg's testsrc2) with ``wav`` as its sound."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not installed (needed to make the test video)")
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-i",
            str(wav),
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-shortest",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path
