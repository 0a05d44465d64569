"""The OBS filter in a real OBS Studio, headless (Xvfb, software OpenGL).

One OBS session, set up by a scene collection: a media source with the filter
"EN/MN Subtitles (subplug)" attached, two FreeType text sources, and the script loaded
from where ``subplug install obs`` put it. The engine is ``subplug live`` with the tiny
Gemma 3n taught to caption one spoken phrase (conftest), so the captions that must reach
the text sources are known words. Through obs-websocket the test plays the espeak-ng
clip, watches the text sources, takes a screenshot, streams to a local ffmpeg RTMP
listener (whose recording must carry the English caption as CEA-608), and finally kills
the engine to see the failure shown and the engine restarted.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from obs_harness import (
    ObsSetup,
    free_port,
    obs_missing,
    running_obs,
    scene_collection,
    scene_item,
    tail,
    text_source,
    write_obs_config,
)
from subplug.testing.media import speech_clip
from subplug_obs.install import SCRIPT_NAME
from subplug_obs.plugin import ObsHost
from taught_model import PHRASE

MISSING = obs_missing() or (None if shutil.which("ffmpeg") else "ffmpeg is not installed")
pytestmark = [
    pytest.mark.host,
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=f"real OBS test: {MISSING}"),
    pytest.mark.timeout(900),
]

WIDTH, HEIGHT = 960, 540
FILTER_ID = "subplug_en_mn_filter"


def same_words(text: str | None) -> str:
    return " ".join((text or "").split())


def wait_for(what: str, condition: Callable[[], object], timeout: float, setup: ObsSetup):
    """Poll ``condition`` until it is truthy; fail with OBS's log after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail(setup)}")


def texts(obs) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """What the English and Mongolian text sources show now."""
    en = obs.get_input_settings("English").input_settings.get("text", "")
    mn = obs.get_input_settings("Mongolian").input_settings.get("text", "")
    return en, mn


def screenshot(obs, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """The scene as rendered, as a PNG file."""
    data = obs.get_source_screenshot("Scene", "png", WIDTH, HEIGHT, -1).image_data
    path.write_bytes(base64.b64decode(data.split(",", 1)[1]))
    return path


def sei_first(recording: Path, fixed: Path) -> Path:
    """A copy of an FLV recording whose H.264 caption SEI come before the picture.

    OBS 29 appends the SEI carrying CEA-608 data after the coded slice of the frame (its
    source says "TODO SEI should come after AUD/SPS/PPS, but before any VCL"); H.264
    wants SEI before the first slice of an access unit, and ffmpeg's decoder only reads
    them there. Moving each SEI NAL unit in front of the frame's first slice, bytes
    unchanged, lets ffmpeg's own CEA-608 decoder read what OBS sent.
    """
    import av

    def units(data: bytes) -> list[bytes]:  # FLV carries 4-byte length-prefixed NAL units
        found, at = [], 0
        while at + 4 <= len(data):
            size = int.from_bytes(data[at : at + 4], "big")
            found.append(data[at : at + 4 + size])
            at += 4 + size
        return found

    with av.open(str(recording)) as source, av.open(str(fixed), "w", format="flv") as out:
        video = source.streams.video[0]
        stream = out.add_stream_from_template(video)
        for packet in source.demux(video):
            if packet.size == 0:
                continue
            nals = units(bytes(packet))
            sei = [n for n in nals if n[4] & 0x1F == 6]
            rest = [n for n in nals if n[4] & 0x1F != 6]
            first_slice = next((k for k, n in enumerate(rest) if n[4] & 0x1F in (1, 5)), 0)
            moved = av.Packet(b"".join(rest[:first_slice] + sei + rest[first_slice:]))
            moved.pts, moved.dts, moved.time_base = packet.pts, packet.dts, packet.time_base
            moved.is_keyframe = packet.is_keyframe
            moved.stream = stream
            out.mux(moved)
    return fixed


def cea608_text(recording: Path) -> str:
    """The closed-caption text carried in a recording, read by ffmpeg's CEA-608 decoder."""
    fixed = sei_first(recording, recording.with_name("captions-first.flv"))
    done = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"movie={fixed}[out0+subcc]",
            "-map",
            "0:s",
            "-f",
            "srt",
            "-",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [
        line
        for line in done.stdout.splitlines()
        if line.strip() and "-->" not in line and not line.strip().isdigit()
    ]
    return " ".join(re.sub(r"<[^>]+>|\{[^}]*\}", "", line) for line in lines)


def changed_pixels(before: Path, after: Path, box: tuple[int, int, int, int]) -> int:
    """How many pixels inside ``box`` differ clearly between two screenshots."""
    from PIL import Image, ImageChops

    a = Image.open(before).convert("L").crop(box)
    b = Image.open(after).convert("L").crop(box)
    return sum(1 for value in ImageChops.difference(a, b).get_flattened_data() if value > 40)


def obs_scene(model: Path, script: Path) -> dict:
    """Background, the (silent until told) media source with the filter, two captions."""
    background = {
        "id": "color_source",
        "versioned_id": "color_source_v3",
        "name": "Background",
        "settings": {"color": 0xFF3A2A1E, "width": WIDTH, "height": HEIGHT},
    }
    media = {
        "id": "ffmpeg_source",
        "versioned_id": "ffmpeg_source",
        "name": "Speech",
        "settings": {
            "is_local_file": True,
            "local_file": "",
            "looping": False,
            "restart_on_activate": False,
            "close_when_inactive": False,
        },
        "filters": [
            {
                "id": FILTER_ID,
                "versioned_id": FILTER_ID,
                "name": "EN/MN Subtitles",
                "enabled": True,
                "settings": {
                    "model": str(model),
                    "source": "en",
                    "device": "cpu",
                    "en_source": "English",
                    "mn_source": "Mongolian",
                    "stream_captions": True,
                },
            }
        ],
    }
    title = text_source("Title", size=30)
    title["settings"]["text"] = "Live captions: subplug in OBS"
    sources = [
        background,
        media,
        title,
        text_source("Mongolian", size=34, color=0xFF7FE8FF),
        text_source("English", size=40),
    ]
    items = [
        scene_item("Background", 1, 0, 0),
        scene_item("Speech", 2, 0, 0),
        scene_item("Title", 3, 40, 30),
        scene_item("Mongolian", 4, 40, HEIGHT - 150),
        scene_item("English", 5, 40, HEIGHT - 90),
    ]
    return scene_collection(sources, items, [script])


def test_obs_filter_captions_text_sources_and_stream_and_restarts_its_engine(
    tmp_path: Path, taught_model: Path
) -> None:
    clip = speech_clip(
        tmp_path / "speech.wav", [PHRASE.said], lead=0.5, tail=3.0, sample_rate=48_000
    )
    status = ObsHost(folder=tmp_path / "obs-scripts").install()
    script = tmp_path / "obs-scripts" / SCRIPT_NAME
    assert status.installed and script.is_file()

    rtmp_port = free_port()
    recording = tmp_path / "stream.flv"
    listener = subprocess.Popen(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-listen",
            "1",
            "-i",
            f"rtmp://127.0.0.1:{rtmp_port}/live/x",
            "-c",
            "copy",
            "-f",
            "flv",
            str(recording),
        ],  # fmt: skip
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    setup = ObsSetup(tmp_path / "home", free_port(), width=WIDTH, height=HEIGHT, fps=15)
    write_obs_config(
        setup, obs_scene(taught_model, script), rtmp_server=f"rtmp://127.0.0.1:{rtmp_port}/live"
    )
    try:
        with running_obs(setup) as obs:
            # The filter type exists (registered through libobs' C ABI) and is attached.
            filters = obs.get_source_filter_list("Speech").filters
            assert [f["filterKind"] for f in filters] == [FILTER_ID], filters
            assert "registered audio filter 'EN/MN Subtitles (subplug)'" in setup.log_text()

            wait_for("the engine to be ready", lambda: "engine ready" in setup.log_text(), 300,
                     setup)  # fmt: skip
            assert texts(obs) == ("", "")
            before = screenshot(obs, tmp_path / "before.png")

            obs.start_stream()
            wait_for("the stream to start",
                     lambda: obs.get_stream_status().output_active, 60, setup)  # fmt: skip

            # Play the clip; record every change of the two text sources.
            obs.set_input_settings("Speech", {"local_file": str(clip.path)}, True)
            started = time.monotonic()
            seen: list[tuple[float, str, str]] = []
            shot = None
            both_since = 0.0
            while time.monotonic() - started < 120:
                en, mn = texts(obs)
                if not seen or seen[-1][1:] != (en, mn):
                    seen.append((round(time.monotonic() - started, 2), en, mn))
                if en and mn and shot is None:
                    both_since = both_since or time.monotonic()
                    if time.monotonic() - both_since > 0.5:  # a few frames rendered
                        shot = screenshot(obs, tmp_path / "obs-captions.png")
                if shot is not None and not en and not mn:
                    break
                time.sleep(0.1)
            shown = [(en, mn) for _, en, mn in seen if en or mn]
            assert shown, f"no caption reached the text sources\n{tail(setup)}"
            assert {(same_words(en), same_words(mn)) for en, mn in shown} == {
                (PHRASE.en, PHRASE.mn)
            }, seen
            assert seen[-1][1:] == ("", ""), f"captions were not cleared: {seen}"
            first_shown = next(t for t, en, mn in seen if en)
            cleared = seen[-1][0]
            # On screen for the speech's duration (at least 2 s, the filter's minimum
            # display time), then cleared (no upper bound: a busy machine is slower).
            assert cleared - first_shown >= 1.5, seen

            assert shot is not None
            caption_box = (0, HEIGHT - 160, WIDTH, HEIGHT)
            assert changed_pixels(before, shot, caption_box) > 2000
            assert changed_pixels(before, shot, (0, 0, WIDTH, HEIGHT - 170)) < 200
            keep = os.environ.get("SUBPLUG_OBS_SCREENSHOT")
            if keep:
                shutil.copyfile(shot, keep)

            obs.stop_stream()
            wait_for("the stream to stop",
                     lambda: not obs.get_stream_status().output_active, 60, setup)  # fmt: skip

            # Kill the engine: the failure shows in the English source, then it restarts.
            pids = re.findall(r"started engine \(pid (\d+)\)", setup.log_text())
            assert len(pids) == 1, pids
            os.kill(int(pids[0]), signal.SIGKILL)
            message = wait_for(
                "the failure to show",
                lambda: (lambda en: en if en.startswith("subplug stopped") else None)(
                    texts(obs)[0]
                ),
                30,
                setup,
            )
            assert "restarting in 1 s" in same_words(message), message
            wait_for("a restarted engine to be ready",
                     lambda: setup.log_text().count("engine ready") == 2, 300, setup)  # fmt: skip
            assert len(re.findall(r"started engine \(pid (\d+)\)", setup.log_text())) == 2
            wait_for("the failure message to be cleared", lambda: texts(obs) == ("", ""), 10,
                     setup)  # fmt: skip
    finally:
        try:
            listener.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(listener.pid, signal.SIGKILL)
            listener.wait()

    assert recording.is_file() and recording.stat().st_size > 10_000
    assert PHRASE.en in same_words(cea608_text(recording))
