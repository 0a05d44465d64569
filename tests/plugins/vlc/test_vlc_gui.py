"""The extension in VLC's real Qt interface, under Xvfb, driven with xdotool.

* The View menu entry VLC shows is "Generate EN/MN subtitles" (VLC 3 shows the short
  description), and its first click generates: VLC activates the extension on that
  click, and activating generates. Afterwards the entry is a submenu (Generate EN/MN
  subtitles, Settings…, Deactivate).
* An error (a model that is not there, a long path) comes in a dialog narrower than
  the screen, with the hint naming the Settings dialog and a Settings… button.
* While the extension is active, VLC's log has no "meta_changed() not found" lines.

Screenshots go to ``$SUBPLUG_ARTIFACTS`` when set (docs/images has copies).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vlc_session import VlcSession

pytestmark = [pytest.mark.host, pytest.mark.slow]

DISPLAY = ":87"
SCREEN = (1280, 800)
QT_PLUGIN = "vlc/plugins/gui/libqt_plugin.so"
SYSTEM_EXTENSIONS = ("/usr/lib/*/vlc/lua/extensions/*", "/usr/share/vlc/lua/extensions/*")
#: A safety net only: every wait below ends on its event (a window, a file, a log line).
LIMIT = 300.0


def wait_for(what: str, check: Callable[[], Any], screen: Desktop | None = None) -> Any:
    deadline = time.monotonic() + LIMIT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            if screen is not None:
                screen.screenshot(f"failed-{what.replace(' ', '-')}.png")
            pytest.fail(f"no {what} after {LIMIT:.0f} s")
        time.sleep(0.2)


class Desktop:
    """Xvfb and VLC's Qt interface, run as the VLC user."""

    def __init__(self, session: VlcSession, home: Path, tmp_path: Path) -> None:
        self.session = session
        self.home = home
        self.tmp_path = tmp_path
        self.log = home / "vlc-log.txt"
        self.processes: list[subprocess.Popen[bytes]] = []

    def command(self, *args: str) -> list[str]:
        env = self.session.env(self.home, DISPLAY=DISPLAY)
        return [*self.session.user.prefix, *env, *args]

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            self.command(*args),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def xdotool(self, *args: str) -> str:
        done = subprocess.run(self.command("xdotool", *args), capture_output=True, text=True)
        return done.stdout

    def window(self, name: str) -> str | None:
        """The id of a visible window whose name matches ``name`` (a regex)."""
        found = self.xdotool("search", "--onlyvisible", "--name", name).split()
        return found[0] if found else None

    def geometry(self, window: str) -> dict[str, int]:
        text = self.xdotool("getwindowgeometry", "--shell", window)
        return {k: int(v) for k, v in (line.split("=") for line in text.split()) if k != "SCREEN"}

    def screenshot(self, name: str) -> Path:
        path = self.tmp_path / name
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "x11grab",
                "-video_size",
                f"{SCREEN[0]}x{SCREEN[1]}",
                "-i",
                DISPLAY,
                "-frames:v",
                "1",
                str(path),
            ],
            check=True,
        )
        artifacts = os.environ.get("SUBPLUG_ARTIFACTS")
        if artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(artifacts) / name)
        return path

    def vlc(self, media: Path) -> None:
        """VLC's Qt interface playing ``media`` in a loop, logging to ``self.log``."""
        self.log.unlink(missing_ok=True)
        self.start(
            "vlc",
            "--no-qt-privacy-ask",
            "--no-qt-error-dialogs",
            "--file-logging",
            f"--logfile={self.log}",
            "--log-verbose=2",
            "--input-repeat=1000",
            "--no-sub-autodetect-file",
            str(media),
        )
        wait_for("VLC window", lambda: self.window(" - VLC media player$"))

    def open_view_menu(self) -> None:
        """Pointer over VLC (no window manager: the keyboard goes where the pointer is),
        then Alt+I, VLC's shortcut for its View menu."""
        main = self.window(" - VLC media player$")
        assert main is not None
        box = self.geometry(main)
        before = len(self.visible())

        def menu_open() -> bool:
            # A key sent while VLC is still setting up its window can get lost: send
            # it again until the menu shows (pressed twice it would close the menu, so
            # only when none is there).
            for _ in range(10):
                if len(self.visible()) > before:
                    return True
                time.sleep(0.2)
            self.xdotool("mousemove", str(box["X"] + box["WIDTH"] // 2), str(box["Y"] + 60))
            self.xdotool("key", "alt+i")
            return False

        wait_for("View menu", menu_open, self)

    def click_extension_entry(self) -> None:
        """The View menu, then our entry: extensions come last, ours (the user's) before
        the ones installed with VLC, and Up from the top wraps to the bottom."""
        self.open_view_menu()
        system = len([p for pattern in SYSTEM_EXTENSIONS for p in glob.glob(pattern)])
        self.xdotool("key", "--delay", "150", *["Up"] * (1 + system))

    def trigger_extension_entry(self, *windows: str) -> str:
        """Click our entry (keyboard: Return on it) until one of ``windows`` (regexes)
        shows; returns the one that did. A keystroke lost while a menu takes the
        keyboard only means the window does not come: then the menus are closed and
        it is done again (on an entry already activated, Return opens its submenu and
        starts nothing)."""
        for _ in range(5):
            self.click_extension_entry()
            self.xdotool("key", "Return")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                for name in windows:
                    if self.window(name):
                        return name
                time.sleep(0.2)
            self.xdotool("key", "Escape", "Escape")
        self.screenshot("failed-trigger.png")
        pytest.fail(f"none of {windows} came after clicking the entry five times")

    def visible(self) -> list[str]:
        """VLC's visible windows, menus included."""
        return self.xdotool("search", "--onlyvisible", "--classname", "vlc").split()

    def close(self) -> None:
        for process in reversed(self.processes):
            with_suppress_kill(process)


def with_suppress_kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def xvfb(vlc_session: VlcSession) -> Iterator[str]:
    """An X server (Xvfb) the VLC user owns, for this module's tests."""
    missing = [t for t in ("vlc", "Xvfb", "xdotool", "ffmpeg") if shutil.which(t) is None]
    if not glob.glob(f"/usr/lib/*/{QT_PLUGIN}"):
        missing.append("VLC's Qt interface (vlc-plugin-qt)")
    if missing:
        pytest.skip(f"needs {', '.join(missing)} to drive VLC's Qt interface")
    socket = Path("/tmp/.X11-unix") / f"X{DISPLAY[1:]}"
    lock = Path(f"/tmp/.X{DISPLAY[1:]}-lock")
    for stale in (socket, lock):  # left by a run that was killed
        stale.unlink(missing_ok=True)
    process = subprocess.Popen(
        [
            *vlc_session.user.prefix,
            "Xvfb",
            DISPLAY,
            "-screen",
            "0",
            f"{SCREEN[0]}x{SCREEN[1]}x24",
            "-nolisten",
            "tcp",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for("Xvfb", socket.exists)
        yield DISPLAY
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # lets Xvfb remove its lock
        process.wait()


@pytest.fixture
def desktop(
    vlc_session: VlcSession, xvfb: str, tmp_path: Path
) -> Iterator[Callable[[Path], Desktop]]:
    made: list[Desktop] = []

    def make(home: Path) -> Desktop:
        run = home / "run"
        run.mkdir(mode=0o700, exist_ok=True)
        vlc_session.user.chown(run)
        made.append(Desktop(vlc_session, home, tmp_path))
        return made[-1]

    try:
        yield make
    finally:
        for desktop in reversed(made):
            desktop.close()


def test_the_first_click_generates_and_the_log_stays_quiet(
    vlc_session: VlcSession, desktop: Callable[[Path], Desktop]
) -> None:
    home = vlc_session.home("gui", settings={"model": str(vlc_session.model)})
    media = vlc_session.folder("gui")
    screen = desktop(home)
    screen.vlc(media)
    screen.open_view_menu()
    screen.screenshot("vlc-view-menu.png")
    screen.xdotool("key", "Escape")

    # One click on the entry (here: the keyboard's Return on it) and the job runs.
    screen.click_extension_entry()
    screen.screenshot("vlc-view-menu-entry.png")
    screen.xdotool("key", "Escape", "Escape")
    screen.trigger_extension_entry("^Generate EN/MN subtitles$", "^Subtitles ready$")
    wait_for("result window", lambda: screen.window("^Subtitles ready$"), screen)
    subtitle = media.with_name(media.stem + ".en-mn.ass")
    assert subtitle.is_file()
    screen.screenshot("vlc-subtitles-ready.png")
    ready = screen.window("^Subtitles ready$")
    assert ready is not None
    assert screen.geometry(ready)["WIDTH"] < SCREEN[0] // 2

    # Now the entry is a submenu: Generate EN/MN subtitles, Settings…, Deactivate.
    screen.xdotool("key", "Escape")
    for _ in range(5):
        screen.click_extension_entry()
        shown = len(screen.visible())
        screen.xdotool("key", "Right")
        deadline = time.monotonic() + 5
        while len(screen.visible()) <= shown and time.monotonic() < deadline:
            time.sleep(0.2)
        if len(screen.visible()) > shown:
            break
        screen.xdotool("key", "Escape", "Escape")
    else:
        pytest.fail("the entry did not open as a submenu")
    screen.screenshot("vlc-view-menu-active.png")
    screen.xdotool("key", "Escape", "Escape")

    # Active through two more loops of the media: VLC calls meta_changed() and finds it.
    log = screen.log
    repeats = log.read_text("utf-8", "replace").count("repeating the same input")
    wait_for(
        "two more loops",
        lambda: log.read_text("utf-8", "replace").count("repeating the same input") >= repeats + 2,
    )
    text = log.read_text("utf-8", "replace")
    assert "subplug" in text
    assert "meta_changed" not in text


def test_an_error_fits_the_screen_and_names_the_settings(
    vlc_session: VlcSession, desktop: Callable[[Path], Desktop]
) -> None:
    missing = "/nowhere/" + "/".join(["a-rather-long-folder-name"] * 6) + "/gemma3n-en-mn"
    home = vlc_session.home("gui-error", settings={"model": missing})
    media = vlc_session.folder("gui-error")
    screen = desktop(home)
    screen.vlc(media)
    screen.trigger_extension_entry("^subplug could not make subtitles$")
    error = screen.window("^subplug could not make subtitles$")
    assert error is not None
    box = screen.geometry(error)
    screen.screenshot("vlc-error-dialog.png")
    assert box["WIDTH"] < SCREEN[0] * 0.6, box
    assert box["X"] >= 0 and box["X"] + box["WIDTH"] <= SCREEN[0], box
