"""Run a real OBS Studio headless for tests: a private config folder (profile, scene
collection, websocket settings), Xvfb with software OpenGL, and an obs-websocket client.

OBS reads everything from ``$HOME/.config/obs-studio``; each test run gets its own
``HOME``, so the user's OBS setup is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROFILE = "subplug"
COLLECTION = "subplug"
SCENE = "Scene"
FONT = "DejaVu Sans"


def obs_missing() -> str | None:
    """Why a real-OBS test cannot run here, or ``None`` when it can."""
    for program in ("obs", "xvfb-run"):
        if shutil.which(program) is None:
            return f"{program} is not installed"
    try:
        import obsws_python  # noqa: F401
    except ImportError:
        return "obsws-python is not installed (pip install obsws-python)"
    return None


def free_port() -> int:
    """A TCP port on the loopback interface nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def text_source(name: str, *, size: int, color: int = 0xFFFFFFFF) -> dict[str, Any]:
    """A FreeType 2 text source (Linux's text source) with an outline, empty text."""
    return {
        "id": "text_ft2_source",
        "versioned_id": "text_ft2_source_v2",
        "name": name,
        "settings": {
            "text": "",
            "font": {"face": FONT, "size": size, "style": "Book", "flags": 0},
            "color1": color,
            "color2": color,
            "outline": True,
            "drop_shadow": False,
            "word_wrap": False,
        },
    }


def scene_item(name: str, item_id: int, x: float, y: float) -> dict[str, Any]:
    """An item of the scene showing source ``name`` with its top-left corner at x, y."""
    return {
        "name": name,
        "source_uuid": "",
        "visible": True,
        "locked": False,
        "id": item_id,
        "pos": {"x": x, "y": y},
        "scale": {"x": 1.0, "y": 1.0},
        "rot": 0.0,
        "align": 5,
        "bounds_type": 0,
        "bounds": {"x": 0.0, "y": 0.0},
    }


def scene_collection(
    sources: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
    scripts: Sequence[Path] = (),
) -> dict[str, Any]:
    """A scene collection with one scene holding ``items``, and ``scripts`` loaded.

    OBS's Scripts tool loads the collection's scripts before its sources, so a filter a
    script registers exists by the time the sources that use it are created.
    """
    scene = {
        "id": "scene",
        "versioned_id": "scene",
        "name": SCENE,
        "settings": {"items": list(items), "id_counter": len(items), "custom_size": False},
    }
    return {
        "name": COLLECTION,
        "current_scene": SCENE,
        "current_program_scene": SCENE,
        "scene_order": [{"name": SCENE}],
        "sources": [scene, *sources],
        "transitions": [],
        "current_transition": "Fade",
        "transition_duration": 300,
        "modules": {
            "scripts-tool": [{"path": str(path), "settings": {}} for path in scripts],
        },
    }


@dataclass(frozen=True)
class ObsSetup:
    """Where a test's OBS lives and how it is reached."""

    home: Path
    websocket_port: int
    width: int = 640
    height: int = 360
    fps: int = 15

    @property
    def config(self) -> Path:
        return self.home / ".config" / "obs-studio"

    @property
    def logs(self) -> Path:
        return self.config / "logs"

    def log_text(self) -> str:
        """Everything OBS logged in this home so far."""
        if not self.logs.is_dir():
            return ""
        return "\n".join(
            path.read_text(encoding="utf-8", errors="replace")
            for path in sorted(self.logs.glob("*.txt"))
        )


def write_obs_config(
    setup: ObsSetup, collection: Mapping[str, Any], *, rtmp_server: str | None = None
) -> None:
    """Write global.ini (websocket on, no first-run wizard), the profile (small canvas,
    x264, a custom RTMP server) and the scene collection."""
    config = setup.config
    (config / "basic" / "profiles" / PROFILE).mkdir(parents=True, exist_ok=True)
    (config / "basic" / "scenes").mkdir(parents=True, exist_ok=True)
    (config / "global.ini").write_text(
        "[General]\n"
        "FirstRun=true\n"
        "LastVersion=486539266\n"
        "EnableAutoUpdates=false\n"
        "ConfirmOnExit=false\n"
        "[BasicWindow]\n"
        "WarnBeforeStartingStream=false\n"
        "WarnBeforeStoppingStream=false\n"
        "SysTrayEnabled=false\n"
        "[Basic]\n"
        f"Profile={PROFILE}\nProfileDir={PROFILE}\n"
        f"SceneCollection={COLLECTION}\nSceneCollectionFile={COLLECTION}\n"
        "ConfigOnNewProfile=false\n"
        "[OBSWebSocket]\n"
        "FirstLoad=false\nServerEnabled=true\nAuthRequired=false\n"
        f"ServerPort={setup.websocket_port}\nAlertsEnabled=false\n",
        encoding="utf-8",
    )
    profile = config / "basic" / "profiles" / PROFILE
    (profile / "basic.ini").write_text(
        "[General]\n"
        f"Name={PROFILE}\n"
        "[Video]\n"
        f"BaseCX={setup.width}\nBaseCY={setup.height}\n"
        f"OutputCX={setup.width}\nOutputCY={setup.height}\n"
        f"FPSType=1\nFPSInt={setup.fps}\n"
        "ScaleType=bilinear\n"
        "[Audio]\n"
        "SampleRate=48000\nChannelSetup=Stereo\n"
        "[Output]\n"
        "Mode=Simple\n"
        "[SimpleOutput]\n"
        "StreamEncoder=x264\nVBitrate=400\nABitrate=64\nPreset=ultrafast\n"
        # OBS puts CEA-608 captions only on non-reference frames: ultrafast alone has
        # no B-frames, so ask for some.
        "x264Settings=bframes=2\n"
        "UseAdvanced=true\n",
        encoding="utf-8",
    )
    if rtmp_server:
        service = {"type": "rtmp_custom", "settings": {"server": rtmp_server, "key": "x"}}
        (profile / "service.json").write_text(json.dumps(service), encoding="utf-8")
    (config / "basic" / "scenes" / f"{COLLECTION}.json").write_text(
        json.dumps(collection, ensure_ascii=False, indent=1), encoding="utf-8"
    )


@contextmanager
def running_obs(
    setup: ObsSetup, *, env: Mapping[str, str] | None = None, start_timeout: float = 120.0
) -> Iterator[Any]:
    """Start OBS under Xvfb with ``setup``'s config; yield a connected
    ``obsws_python.ReqClient``; stop OBS (and everything it started) afterwards."""
    import obsws_python

    environment = {
        **os.environ,
        "HOME": str(setup.home),
        "XDG_CONFIG_HOME": str(setup.home / ".config"),
        "LIBGL_ALWAYS_SOFTWARE": "1",
        "QT_QPA_PLATFORM": "xcb",
        **(env or {}),
    }
    environment.pop("WAYLAND_DISPLAY", None)
    command = [
        "xvfb-run", "-a", "-s", "-screen 0 1280x800x24",
        "obs", "--multi", "--disable-shutdown-check",
        "--collection", COLLECTION, "--profile", PROFILE, "--scene", SCENE,
    ]  # fmt: skip
    output = open(setup.home / "obs-stdout.txt", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        command,
        env=environment,
        cwd=setup.home,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = None
    try:
        deadline = time.monotonic() + start_timeout
        while client is None:
            if process.poll() is not None:
                raise RuntimeError(
                    f"OBS exited with code {process.returncode} during start-up:\n" + tail(setup)
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"OBS did not start within {start_timeout:.0f} s:\n" + tail(setup)
                )
            try:
                client = obsws_python.ReqClient(
                    host="127.0.0.1", port=setup.websocket_port, password="", timeout=10
                )
            except (OSError, ConnectionError, Exception):  # noqa: BLE001 (not up yet)
                time.sleep(1.0)
        yield client
    finally:
        if client is not None:
            with suppress(Exception):  # OBS may be gone already
                client.disconnect()
        stop_group(process)
        output.close()


def stop_group(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the process group we started (xvfb-run, Xvfb, OBS, OBS's children)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def tail(setup: ObsSetup, lines: int = 60) -> str:
    """The end of OBS's log and console output, for failure messages."""
    texts = [setup.log_text()]
    console = setup.home / "obs-stdout.txt"
    if console.exists():
        texts.append(console.read_text(encoding="utf-8", errors="replace"))
    return "\n".join("\n".join(text.splitlines()[-lines:]) for text in texts if text)
