"""The clip job in a real Kdenlive 24.12 (Debian 13's package), under Xvfb, with
screenshots. Debian 12 ships Kdenlive 22.12, which has no clip jobs, so this builds a
Debian 13 root with debootstrap and runs Kdenlive there.

    sudo python tests/plugins/kdenlive/kdenlive_gui.py [--root DIR] [--out DIR] [--rebuild]

Needs root (debootstrap, mount, chroot), ``debootstrap``, ffmpeg and espeak-ng on this
machine, and the Debian archive (about 700 MB of packages the first time; the root is
kept in ``--root`` and reused). What it does:

1. builds the root (``debootstrap --variant=minbase trixie``, then ``kdenlive xvfb xauth
   xdotool imagemagick fonts-dejavu-core frei0r-plugins dbus``), once;
2. mounts /proc, /sys, /dev into it, and this Python and this checkout read-only at the
   same paths, so Kdenlive's job runs this checkout's ``subplug``;
3. as a normal user with a fresh home: makes a clip with speech and a Kdenlive project
   holding it, imports the tiny test model as the default model into
   ``SUBPLUG_HOME=~/subplug home`` and runs ``subplug install kdenlive`` there;
4. starts Kdenlive under Xvfb **without** ``SUBPLUG_HOME`` (as a desktop launch would),
   right-clicks the clip > Clip Jobs > Generate EN/MN subtitles, twice (a rerun), and
   saves the project;
5. checks what happened and writes ``result.json`` and screenshots to ``--out``:
   the job got ``--home`` (so the models were found), wrote ``NAME.en-mn.ass`` and
   ``NAME.*.srt`` with mode 0644 both times (the old ones kept as ``.bak``), Kdenlive
   added ``NAME.en-mn.mlt`` and ``NAME-0001.en-mn.mlt`` to the bin as clips it could open
   (the saved project holds them as ``xml`` producers), and melt 7.30 draws the
   subtitles on a frame of that clip.

The exit code is 0 when every check passed. ``tests/plugins/kdenlive/test_kdenlive_gui.py``
runs this when ``SUBPLUG_KDENLIVE_GUI=1``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = [
    "kdenlive",
    "xvfb",
    "xauth",
    "xdotool",
    "imagemagick",
    "fonts-dejavu-core",
    "frei0r-plugins",
    "dbus",
]
READY = ".subplug-kdenlive-ready"
USER, UID = "subplug-kd", 4321
DISPLAY = ":73"
SCREEN = (1600, 900)
CLIP = "talk clip.mp4"
SPEECH = "Hello world. This is a subtitle test."
#: Generous limits so a broken run ends with a message instead of hanging. Every wait
#: ends as soon as its event happens (a window, a file, a process exit).
STEP_LIMIT = 300.0


class CheckFailed(RuntimeError):
    """A step of the GUI check did not happen."""


def log(text: str) -> None:
    print(f"[kdenlive-gui] {text}", flush=True)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, text=True, **kwargs)


def wait_for(what: str, check: Callable[[], Any], limit: float = STEP_LIMIT) -> Any:
    """Poll ``check`` until it returns something true; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"gave up waiting for {what} after {limit:.0f} s")
        time.sleep(0.5)


# ------------------------------------------------------------------------ the root


def build_root(root: Path, *, rebuild: bool = False) -> None:
    """debootstrap Debian 13 into ``root`` and install Kdenlive (skipped when done)."""
    if rebuild and root.exists():
        inside = [m for m in mounts() if m == root or root in m.parents]
        if inside:
            raise CheckFailed(f"not removing {root}: still mounted there: {inside}")
        shutil.rmtree(root)
    if (root / READY).exists():
        log(f"reusing {root}")
        return
    if not (root / "etc" / "debian_version").exists():
        log(f"debootstrap {SUITE} into {root}")
        run(["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR], capture_output=True)
    shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
    with system_mounts(root):
        log("installing " + " ".join(PACKAGES))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        chroot(root, ["apt-get", "update", "-qq"], env=env)
        chroot(
            root,
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
            env=env,
        )
    (root / READY).write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"), encoding="utf-8")


def mounts() -> list[Path]:
    """Every mount point of this machine (``/proc/mounts``; spaces come as ``\\040``)."""
    lines = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    return [Path(line.split()[1].replace("\\040", " ")) for line in lines]


def chroot(root: Path, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("capture_output", True)
    return run(["chroot", str(root), *command], **kwargs)


@contextlib.contextmanager
def mounted(source: Path, target: Path, *, read_only: bool = False) -> Iterator[None]:
    target.mkdir(parents=True, exist_ok=True)
    run(["mount", "--bind", str(source), str(target)])
    try:
        if read_only:
            run(["mount", "-o", "remount,ro,bind", str(target)])
        yield
    finally:
        subprocess.run(["umount", str(target)], check=False)
        if os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], check=False)


@contextlib.contextmanager
def system_mounts(root: Path) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for name in ("proc", "sys", "dev", "dev/pts", "dev/shm"):
            stack.enter_context(mounted(Path("/") / name, root / name))
        yield


def python_paths() -> list[Path]:
    """This Python's installation (and virtual environment, if any)."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    return sorted(paths)


@contextlib.contextmanager
def host_mounts(root: Path) -> Iterator[None]:
    """This Python and this checkout, read-only at the same paths inside ``root``;
    folders on the way get the search bit so the test user can reach them."""
    with contextlib.ExitStack() as stack:
        for path in [*python_paths(), REPO]:
            inside = root / path.relative_to("/")
            stack.enter_context(mounted(path, inside, read_only=True))
            for parent in inside.parents:
                if parent == root:
                    break
                mode = stat.S_IMODE(parent.stat().st_mode)
                if not mode & stat.S_IXOTH:
                    os.chmod(parent, mode | stat.S_IXOTH)
        yield


# ------------------------------------------------------------------- the session


class Session:
    """The test user in the root: commands run as them, with a clean environment."""

    def __init__(self, root: Path, out: Path) -> None:
        self.root = root
        self.out = out
        self.home = Path("/home") / USER
        self.media = self.home / "media"
        self.subplug_home = self.home / "subplug home"
        self.processes: list[subprocess.Popen[str]] = []
        self.dialogs: list[str] = []

    def host(self, path: Path) -> Path:
        """Where a path inside the root is on this machine."""
        return self.root / path.relative_to("/")

    def env(self, **extra: str) -> list[str]:
        base = {
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "TMPDIR": str(self.home / "tmp"),
            "DISPLAY": DISPLAY,
            # The code under test is this checkout's (Kdenlive passes its environment
            # to the job; an installed subplug needs no PYTHONPATH).
            "PYTHONPATH": os.pathsep.join(
                str(REPO / part) for part in ("core", "plugins/kdenlive")
            ),
            **extra,
        }
        return ["env", "-i", *(f"{key}={value}" for key, value in base.items())]

    def as_user(self, command: list[str], **extra: str) -> list[str]:
        return ["chroot", str(self.root), "runuser", "-u", USER, "--", *self.env(**extra), *command]

    def run(self, command: list[str], **extra: str) -> str:
        done = subprocess.run(self.as_user(command, **extra), capture_output=True, text=True)
        if done.returncode != 0:
            raise CheckFailed(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout + done.stderr

    def start(self, command: list[str], log_name: str, **extra: str) -> subprocess.Popen[str]:
        stream = open(self.out / log_name, "w", encoding="utf-8")  # noqa: SIM115
        process = subprocess.Popen(
            self.as_user(command, **extra),
            stdout=stream,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        """Kill every process of the test user (Kdenlive's helpers included) and wait
        until they are gone, so the mounts can be undone."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait()

        def gone() -> bool:
            subprocess.run(["pkill", "-KILL", "-u", str(UID)], check=False)
            return subprocess.run(["pgrep", "-u", str(UID)], capture_output=True).returncode == 1

        wait_for("the test user's processes to end", gone)

    def x(self, *args: str) -> str:
        done = subprocess.run(self.as_user(["xdotool", *args]), capture_output=True, text=True)
        return done.stdout

    def windows(self) -> dict[str, str]:
        """Window id → name of the windows with a name."""
        ids = self.x("search", "--name", ".").split()
        found = {}
        for window in ids:
            name = self.x("getwindowname", window).strip()
            if name:
                found[window] = name
        return found

    def screenshot(self, name: str) -> Path:
        target = self.home / name
        self.run(["import", "-window", "root", str(target)])
        shutil.copyfile(self.host(target), self.out / name)
        log(f"screenshot {self.out / name}")
        return self.out / name

    def press_default(self, window: str) -> None:
        """Accept a dialog: pointer over it (no window manager: focus follows the
        pointer), then Return."""
        geometry = dict(
            line.split("=", 1)
            for line in self.x("getwindowgeometry", "--shell", window).split()
            if "=" in line
        )
        x = int(geometry["X"]) + int(geometry["WIDTH"]) // 2
        y = int(geometry["Y"]) + int(geometry["HEIGHT"]) // 2
        self.x("mousemove", str(x), str(y))
        self.x("key", "Return")


DIALOGS = re.compile(r"^(Welcome to Kdenlive|Information|File Recovery|Warning|Error)\b")


def dismiss_dialogs(session: Session) -> None:
    """Accept Kdenlive's start-up and information dialogs that are showing; each is
    recorded (``session.dialogs``) with a screenshot taken first."""
    for window, name in session.windows().items():
        if DIALOGS.match(name):
            log(f"accepting dialog {name!r}")
            number = len(session.dialogs) + 1
            session.screenshot(f"dialog-{number}.png")
            session.dialogs.append(name)
            session.press_default(window)


# ------------------------------------------------------------------------ the check


def prepare(session: Session, kdenlive_version: str) -> None:
    """A fresh home with the clip, the project, the model and the installed job."""
    from kdenlive_projects import make_project, make_speech_clip
    from subplug.testing.tiny import build_tiny_model

    home = session.host(session.home)
    if home.exists():
        shutil.rmtree(home)
    if subprocess.run(["chroot", str(session.root), "id", USER], capture_output=True).returncode:
        chroot(session.root, ["useradd", "--uid", str(UID), "--create-home", USER])
    for folder in ("media", "run", "tmp", ".config", "Videos"):
        (home / folder).mkdir(parents=True, mode=0o700 if folder == "run" else 0o755)
    clip = make_speech_clip(home / "media", SPEECH, seconds=4.0, size=(320, 180), name=CLIP)
    project = make_project(
        home / "media" / "edit.kdenlive",
        clip,
        shape="sequences",
        version=kdenlive_version,
        frames=100,
        size=(320, 180),
    )
    # Paths as Kdenlive sees them inside the root.
    text = project.read_text(encoding="utf-8").replace(str(home), str(session.home))
    project.write_text(text, encoding="utf-8")
    build_tiny_model(home / "tiny model")
    # A first start would show the first-run wizard.
    (home / ".config" / "kdenliverc").write_text(
        f"[version]\nversion={kdenlive_version}\n", encoding="utf-8"
    )
    run(["chroot", str(session.root), "chown", "-R", f"{USER}:{USER}", str(session.home)])
    python = sys.executable
    with_home = {"SUBPLUG_HOME": str(session.subplug_home)}
    session.run(
        [
            python,
            "-m",
            "subplug",
            "models",
            "import",
            str(session.home / "tiny model"),
            "--name",
            "gemma3n-en-mn",
        ],
        **with_home,
    )
    installed = session.run([python, "-m", "subplug", "install", "kdenlive"], **with_home)
    (session.out / "install.txt").write_text(installed, encoding="utf-8")


def bin_row(index: int) -> tuple[int, int]:
    """Screen position of row ``index`` of the Project Bin (fresh layout, 1600x900)."""
    return 160, 117 + 50 * index


def run_clip_job(session: Session, row: int, expect: Path) -> None:
    """Right-click bin row ``row`` > Clip Jobs > Generate EN/MN subtitles, until the
    job's output ``expect`` appears (a menu opened before the bin was ready is retried)."""
    x, y = bin_row(row)
    for attempt in range(1, 6):
        dismiss_dialogs(session)
        session.x("mousemove", str(x), str(y), "click", "1")
        session.x("mousemove", str(x), str(y), "click", "3")
        # Context menu: Extract Audio, Clip Jobs ▸ (its last two entries: our job, then
        # Configure Clip Jobs…).
        session.x("key", "--delay", "250", "Down", "Down", "Right", "Up", "Up")
        session.screenshot(f"menu-{expect.stem.replace(' ', '_')}-{attempt}.png")
        session.x("key", "Return")
        try:
            wait_for(f"{expect.name}", lambda: session.host(expect).exists(), limit=60)
            return
        except CheckFailed:
            session.x("key", "Escape", "Escape", "Escape")
            log(f"the job did not start (try {attempt}); trying again")
    raise CheckFailed(f"the clip job never wrote {expect}")


def saved_clips(project: Path) -> dict[str, str]:
    """resource → mlt_service of the producers and chains in a saved project."""
    found = {}
    for element in ET.parse(project).getroot():
        if element.tag not in ("producer", "chain"):
            continue
        props = {p.get("name"): p.text or "" for p in element.findall("property")}
        if props.get("resource"):
            found[props["resource"]] = props.get("mlt_service", "")
    return found


def check(root: Path, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"checks": {}}
    checks: dict[str, bool] = results["checks"]
    session = Session(root, out)
    with system_mounts(root), host_mounts(root):
        version = chroot(root, ["dpkg-query", "-W", "-f=${Version}", "kdenlive"]).stdout
        results["kdenlive_package"] = version
        kdenlive_version = re.match(r"(?:\d+:)?(\d+\.\d+\.\d+)", version)
        assert kdenlive_version, version
        prepare(session, kdenlive_version.group(1))
        rc = session.host(session.home / ".local/share/kdenlive/clipjobsettings.rc")
        checks["clipjobsettings.rc is 0644"] = stat.S_IMODE(rc.stat().st_mode) == 0o644
        checks["job records SUBPLUG_HOME"] = "--home /home/subplug-kd/subplug%20home" in (
            rc.read_text(encoding="utf-8")
        )
        x11 = session.host(Path("/tmp/.X11-unix"))
        x11.mkdir(parents=True, exist_ok=True)
        os.chmod(x11, 0o1777)
        socket = x11 / f"X{DISPLAY[1:]}"
        socket.unlink(missing_ok=True)
        try:
            session.start(
                [
                    "Xvfb",
                    DISPLAY,
                    "-screen",
                    "0",
                    f"{SCREEN[0]}x{SCREEN[1]}x24",
                    "-nolisten",
                    "tcp",
                ],
                "xvfb.log",
            )
            wait_for("Xvfb", socket.exists)
            project = session.media / "edit.kdenlive"
            # No SUBPLUG_HOME here: a desktop launch does not have it.
            session.start(["dbus-run-session", "--", "kdenlive", str(project)], "kdenlive.log")

            def main_window() -> bool:
                dismiss_dialogs(session)
                return any(
                    name.startswith("edit") and name.endswith("Kdenlive")
                    for name in session.windows().values()
                )

            wait_for("Kdenlive's main window", main_window)
            session.screenshot("1-kdenlive-started.png")
            stem = Path(CLIP).stem
            first = session.media / f"{stem}.en-mn.mlt"
            run_clip_job(session, 1, first)
            ass = session.host(session.media / f"{stem}.en-mn.ass")
            wait_for("Kdenlive to load the job's clip", lambda: _clip_loaded(session, first))
            session.screenshot("2-after-first-run.png")
            written = sorted(p.name for p in session.host(session.media).iterdir())
            results["files_after_first_run"] = written
            checks["first run wrote NAME.en-mn.ass"] = ass.exists()
            checks["subtitle files are 0644"] = all(
                stat.S_IMODE(p.stat().st_mode) == 0o644
                for p in session.host(session.media).iterdir()
                if p.suffix in (".ass", ".srt", ".mlt")
            )
            second = session.media / f"{stem}-0001.en-mn.mlt"
            run_clip_job(session, 2, second)
            wait_for("Kdenlive to load the rerun's clip", lambda: _clip_loaded(session, second))
            session.screenshot("3-after-second-run.png")
            after = sorted(p.name for p in session.host(session.media).iterdir())
            results["files_after_second_run"] = after
            checks["rerun keeps the subtitle names, old ones as .bak"] = (
                f"{stem}.en-mn.ass" in after
                and f"{stem}.en-mn.ass.bak" in after
                and not any(n.startswith(f"{stem}-0001") and n.endswith(".ass") for n in after)
            )
            params = re.findall(r"CUSTOM TASK PARAMS:\s*\n\s*QList\((.*)\)", _log(session))
            results["job_arguments"] = params
            checks["Kdenlive passed --home to the job"] = bool(params) and all(
                '"--home"' in p for p in params
            )
            # Save, and see how Kdenlive keeps the clips the jobs added.
            before = session.host(project).stat().st_mtime_ns
            session.x("mousemove", "800", "650", "key", "ctrl+s")

            def saved() -> bool:
                dismiss_dialogs(session)
                return session.host(project).stat().st_mtime_ns != before

            wait_for("the project to be saved", saved)
            clips = saved_clips(session.host(project))
            results["saved_clips"] = clips
            checks["Kdenlive opened both job outputs as clips"] = all(
                clips.get(name) == "xml" for name in (first.name, second.name)
            )
            frame = _melt_frame(session, first)
            checks["melt 7.30 draws the subtitles"] = frame is not None
        except CheckFailed as failure:
            results["failure"] = str(failure)
            results["windows"] = list(session.windows().values())
            session.screenshot("failure.png")
            raise
        finally:
            results["dialogs_accepted"] = session.dialogs
            (out / "result.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
            session.stop_all()
    results["ok"] = all(checks.values())
    (out / "result.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def _log(session: Session) -> str:
    return (session.out / "kdenlive.log").read_text(encoding="utf-8", errors="replace")


def _clip_loaded(session: Session, output: Path) -> bool:
    """Kdenlive took the job's ``output`` into the bin and loaded it as a clip (its log
    says ``createClipFromFile "OUTPUT"``, then ``addmasterproducer`` for the new clip)."""
    text = _log(session)
    start = text.find(f'createClipFromFile "{output}"')
    return start >= 0 and "addmasterproducer" in text[start:]


def _melt_frame(session: Session, clip: Path) -> Path | None:
    """A frame of ``clip`` in the middle of its first cue, rendered by the root's melt,
    kept as a PNG when its lower part differs from the same frame of the same file
    without the subtitle filter, and nothing else does."""
    import numpy as np
    from PIL import Image

    ass = session.host(clip.with_name(Path(CLIP).stem + ".en-mn.ass"))
    first = next(line for line in ass.read_text("utf-8").splitlines() if line.startswith("Dia"))
    start, end = (_seconds(part) for part in first.split(",")[1:3])
    frame = round((start + end) / 2 * 25)
    text = session.host(clip).read_text(encoding="utf-8")
    plain = clip.with_name("without-subtitles.mlt")
    session.host(plain).write_text(
        re.sub(r"\s*<filter .*?</filter>", "", text, flags=re.S), encoding="utf-8"
    )
    pictures = {}
    for name, source in (("with", clip), ("without", plain)):
        target = session.home / f"frame-{name}.png"
        session.run(
            [
                "melt",
                str(source),
                f"in={frame}",
                f"out={frame}",
                "-consumer",
                f"avformat:{target}",
                "vcodec=png",
                "f=image2",
                "update=1",
                "width=320",
                "height=180",
            ]
        )
        pictures[name] = np.asarray(Image.open(session.host(target)).convert("RGB"))
    delta = np.abs(pictures["with"].astype(int) - pictures["without"].astype(int)).max(axis=2)
    changed = delta > 40
    height = changed.shape[0]
    target = session.out / "4-melt-7.30-frame.png"
    Image.fromarray(pictures["with"]).save(target)
    if changed[height // 2 :].sum() < 10 or changed[: height // 3].any():
        return None
    return target


def _seconds(clock: str) -> float:
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/var/tmp/subplug-kdenlive-trixie"))
    parser.add_argument("--out", type=Path, default=Path("kdenlive-gui-check"))
    parser.add_argument("--rebuild", action="store_true", help="build the root from scratch")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("kdenlive_gui: run as root (debootstrap, mount and chroot need it)", file=sys.stderr)
        return 2
    missing = [t for t in ("debootstrap", "ffmpeg", "espeak-ng") if not shutil.which(t)]
    if missing:
        print(f"kdenlive_gui: install {' '.join(missing)} first", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE))

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so the processes are stopped and the mounts undone

    signal.signal(signal.SIGTERM, stop)
    try:
        build_root(args.root.resolve(), rebuild=args.rebuild)
        results = check(args.root.resolve(), args.out.resolve())
    except CheckFailed as failure:
        print(f"kdenlive_gui: FAILED: {failure}", file=sys.stderr)
        return 1
    for name, passed in results["checks"].items():
        print(f"{'ok  ' if passed else 'FAIL'} {name}")
    print(f"results and screenshots: {args.out.resolve()}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
