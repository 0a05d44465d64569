"""The OBS script outside OBS: its pure helpers, its ctypes declarations against libobs'
real headers, and one filter instance driving a real ``subplug live`` child.

For the filter, a small stand-in for libobs records what the filter does to text
sources and stream outputs (the real OBS is driven in test_obs_live.py); the audio goes
in through the same ``filter_audio`` entry point OBS calls, as planar float blocks.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from subplug import __version__
from subplug.testing.fake import EN_WORDS
from subplug.testing.media import silence, speech
from subplug_obs.install import CONFIG_NAME
from subplug_obs.obs import subplug_obs_filter as script

RATE = 48_000

# ------------------------------------------------------------------ pure helpers


def test_script_version_is_subplugs() -> None:
    assert __version__ == script.SCRIPT_VERSION


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_interleave_matches_numpy(channels: int) -> None:
    rng = np.random.default_rng(channels)
    planes = rng.standard_normal((channels, 1024)).astype(np.float32)
    out = script.interleave([p.tobytes() for p in planes], channels)
    assert np.array_equal(np.frombuffer(out, dtype=np.float32), planes.T.reshape(-1))


def test_wrap_breaks_at_42_and_keeps_words() -> None:
    text = "Today we talk about the weather in the mountains and the rivers of the north."
    wrapped = script.wrap(text)
    assert all(len(line) <= 42 for line in wrapped.split("\n"))
    assert wrapped.replace("\n", " ") == text
    assert script.wrap("  Сайн   байна уу? ") == "Сайн байна уу?"
    assert script.wrap(None) == ""
    hyphens = "we met a very well-known twenty-first-century thinker today"
    assert script.wrap(hyphens) == "we met a very well-known\ntwenty-first-century thinker today"


def test_show_seconds_follows_speech_within_limits() -> None:
    assert script.show_seconds({"start": 1.0, "end": 4.5}) == 3.5
    assert script.show_seconds({"start": 1.0, "end": 1.5}) == script.MIN_SHOW
    assert script.show_seconds({"start": 0.0, "end": 30.0}) == script.MAX_SHOW
    assert script.show_seconds({}) == script.MIN_SHOW


def test_load_config_falls_back_on_plain_subplug(tmp_path: Path) -> None:
    assert script.load_config(str(tmp_path))["command"] == ["subplug"]
    (tmp_path / CONFIG_NAME).write_text('{"command": "not a list"}', encoding="utf-8")
    assert script.load_config(str(tmp_path))["command"] == ["subplug"]
    (tmp_path / CONFIG_NAME).write_text('{"command": ["/x/python", "-m", "subplug"]}')
    assert script.load_config(str(tmp_path))["command"] == ["/x/python", "-m", "subplug"]


def test_engine_command_carries_the_filter_settings() -> None:
    config = {"command": ["/x/python", "-m", "subplug"]}
    settings = {"source": "mn", "backend": "gemma3n", "device": "cpu", "model": "/m"}
    command = script.engine_command(config, settings, 44_100, 2)
    assert command[:4] == ["/x/python", "-m", "subplug", "live"]
    flags = dict(zip(command[4::2], command[5::2], strict=False))
    assert flags == {
        "--format": "f32le",
        "--rate": "44100",
        "--channels": "2",
        "--source": "mn",
        "--backend": "gemma3n",
        "--device": "cpu",
        "--model": "/m",
    }
    assert "--model" not in script.engine_command(config, {**settings, "model": ""}, 48_000, 1)
    assert "--translator" not in command


def test_engine_command_takes_another_family_with_a_translator() -> None:
    """The filter's model and translator reach ``subplug live`` as its own options, so a
    Whisper or CTC model with NLLB beside it runs as from the command line."""
    from subplug.cli import build_parser

    config = {"command": ["subplug"]}
    settings = {**script.SETTING_DEFAULTS, "model": "mms-1b-all", "source": "en"}
    settings["translator"] = "nllb-200-distilled-600m"
    command = script.engine_command(config, settings, 48_000, 1)
    parser, _ = build_parser()
    parsed = parser.parse_args(command[1:])
    assert (parsed.model, parsed.backend, parsed.source) == ("mms-1b-all", "auto", "en")
    assert parsed.translator == "nllb-200-distilled-600m"
    assert "translator" in script.ENGINE_KEYS  # changing it restarts the engine


# ------------------------------------------------------------- ABI vs. headers

ABI_PROGRAM = r"""
#include <stddef.h>
#include <stdio.h>
#include <obs/obs-module.h>
#define OFF(f) printf("\"%s\": %zu,\n", #f, offsetof(struct obs_source_info, f));
int main(void) {
    printf("{\"source_info\": {\n");
    FIELDS
    printf("\"_end\": 0},\n");
    printf("\"audio_data\": {\"data\": %zu, \"frames\": %zu, \"timestamp\": %zu, "
           "\"size\": %zu},\n",
           offsetof(struct obs_audio_data, data), offsetof(struct obs_audio_data, frames),
           offsetof(struct obs_audio_data, timestamp), sizeof(struct obs_audio_data));
    printf("\"filter\": %d, \"audio\": %d, \"list\": %d, \"string\": %d, \"info\": %d}\n",
           OBS_SOURCE_TYPE_FILTER, OBS_SOURCE_AUDIO, OBS_COMBO_TYPE_LIST,
           OBS_COMBO_FORMAT_STRING, OBS_TEXT_INFO);
    return 0;
}
"""


@pytest.mark.skipif(
    not Path("/usr/include/obs/obs-module.h").exists() or shutil.which("cc") is None,
    reason="libobs headers (Debian: libobs-dev) or a C compiler not installed",
)
def test_ctypes_declarations_match_libobs_headers(tmp_path: Path) -> None:
    """Every field the script declares sits at the offset libobs' own header gives it."""
    fields = [name for name, _ in script.obs_source_info._fields_]
    source = ABI_PROGRAM.replace("FIELDS", " ".join(f"OFF({name})" for name in fields))
    (tmp_path / "abi.c").write_text(source, encoding="utf-8")
    subprocess.run(
        ["cc", "-I/usr/include/obs", "-o", str(tmp_path / "abi"), str(tmp_path / "abi.c")],
        check=True,
        capture_output=True,
    )
    found = json.loads(subprocess.run([str(tmp_path / "abi")], capture_output=True,
                                      text=True, check=True).stdout)  # fmt: skip
    ours = {name: getattr(script.obs_source_info, name).offset for name in fields}
    assert ours == {name: found["source_info"][name] for name in fields}
    audio = script.obs_audio_data
    assert {
        "data": audio.data.offset,
        "frames": audio.frames.offset,
        "timestamp": audio.timestamp.offset,
        "size": ctypes.sizeof(audio),
    } == found["audio_data"]
    assert (
        found["filter"],
        found["audio"],
    ) == (script.OBS_SOURCE_TYPE_FILTER, script.OBS_SOURCE_AUDIO)
    assert (
        found["list"],
        found["string"],
        found["info"],
    ) == (script.OBS_COMBO_TYPE_LIST, script.OBS_COMBO_FORMAT_STRING, script.OBS_TEXT_INFO)


# ------------------------------------------------- one filter, a real engine


class Libobs:
    """Stands in for the few libobs calls a filter instance makes: two text sources and
    a streaming output that record what they are given."""

    def __init__(self, channels: int = 2, rate: int = RATE) -> None:
        self.channels, self.rate = channels, rate
        self.texts: dict[str, list[str]] = {"English": [""], "Mongolian": [""]}
        self.captions: list[tuple[str, float]] = []
        self.logs: list[str] = []

    def now(self, name: str) -> str:
        return self.texts[name][-1]

    def obs_get_audio(self) -> int:
        return 1

    def audio_output_get_channels(self, audio: int) -> int:
        return self.channels

    def audio_output_get_sample_rate(self, audio: int) -> int:
        return self.rate

    def obs_get_source_by_name(self, name: bytes) -> str | None:
        return name.decode() if name.decode() in self.texts else None

    def obs_data_create(self) -> dict[str, str]:
        return {}

    def obs_data_set_string(self, data: dict[str, str], key: bytes, value: bytes) -> None:
        data[key.decode()] = value.decode("utf-8")

    def obs_source_update(self, source: str, data: dict[str, str]) -> None:
        if self.texts[source][-1] != data["text"]:
            self.texts[source].append(data["text"])

    def obs_data_release(self, data: object) -> None:
        pass

    def obs_source_release(self, source: object) -> None:
        pass

    def obs_frontend_get_streaming_output(self) -> str:
        return "stream"

    def obs_output_output_caption_text2(self, output: str, text: bytes, seconds: float) -> None:
        self.captions.append((text.decode("ascii"), seconds))

    def obs_output_release(self, output: object) -> None:
        pass

    def log(self, level: int, message: str) -> None:
        self.logs.append(message)


SETTINGS = {
    "model": "",
    "source": "en",
    "backend": "fake",
    "device": "cpu",
    "en_source": "English",
    "mn_source": "Mongolian",
    "stream_captions": True,
}


def feed(instance: script.CaptionFilter, mono: np.ndarray, channels: int = 2) -> None:
    """Hand ``mono`` to the filter as OBS does: planar float blocks of 1024 frames."""
    for start in range(0, len(mono), 1024):
        block = np.ascontiguousarray(mono[start : start + 1024], dtype=np.float32)
        planes = [ctypes.create_string_buffer(block.tobytes(), block.nbytes)]
        planes += [ctypes.create_string_buffer(block.tobytes(), block.nbytes)] * (channels - 1)
        audio = script.obs_audio_data()
        for index, plane in enumerate(planes):
            audio.data[index] = ctypes.cast(plane, ctypes.POINTER(ctypes.c_uint8))
        audio.frames = len(block)
        assert instance.filter_audio(ctypes.addressof(audio)) == ctypes.addressof(audio)


def run_ticks(instance: script.CaptionFilter, until: Callable[[], bool], timeout: float) -> None:
    """Call ``tick`` as OBS's graphics thread does (every frame) until ``until()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        instance.tick()
        if until():
            return
        time.sleep(0.03)
    raise AssertionError("timed out")


def make_filter(
    tmp_path: Path, command: list[str], api: Libobs, settings: dict | None = None
) -> script.CaptionFilter:
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"command": command}), encoding="utf-8")
    return script.CaptionFilter(api, None, dict(settings or SETTINGS), str(tmp_path))


@pytest.mark.slow
def test_filter_streams_audio_to_the_engine_and_shows_its_captions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBPLUG_PLUGINS", "subplug.testing.fake")
    api = Libobs()
    voice = speech("Good morning everyone and welcome to the show.", sample_rate=RATE)
    instance = make_filter(tmp_path, [sys.executable, "-m", "subplug"], api)
    try:
        run_ticks(instance, lambda: instance.ready_at is not None, 120)
        feed(instance, np.concatenate([silence(0.5, RATE), voice, silence(0.2, RATE)]))
        # No more audio: the filter sends silence itself, so the utterance ends.
        run_ticks(instance, lambda: bool(api.now("English")), 60)
        en, mn = api.now("English"), api.now("Mongolian")
        words = en.lower().replace(".", "").split()
        assert words and set(words) <= set(EN_WORDS), en
        assert mn and all("\u0400" <= ch <= "\u04ff" for ch in mn if ch.isalpha()), mn
        assert all(len(line) <= 42 for line in en.split("\n") + mn.split("\n"))
        assert api.captions == [(" ".join(en.split()), pytest.approx(api.captions[0][1]))]
        assert script.MIN_SHOW <= api.captions[0][1] <= script.MAX_SHOW
        shown_at = time.monotonic()
        run_ticks(instance, lambda: api.now("English") == "", 15)
        assert time.monotonic() - shown_at >= script.MIN_SHOW - 0.5
        assert api.now("Mongolian") == ""
        assert instance.dropped_blocks == 0
    finally:
        instance.destroy()


def test_filter_shows_engine_failures_and_restarts_with_backoff(tmp_path: Path) -> None:
    api = Libobs()
    crash = "import sys; sys.stderr.write('model exploded\\n'); sys.exit(3)"
    instance = make_filter(tmp_path, [sys.executable, "-c", crash], api)
    try:
        messages: list[str] = []
        for delay in (1, 2, 4):
            run_ticks(instance, lambda: api.now("English").startswith("subplug stopped"), 30)
            messages.append(" ".join(api.now("English").split()))
            api.texts["English"].append("")  # so the next failure is seen afresh
            if delay < 4:
                started = time.monotonic()
                run_ticks(instance, lambda: instance.proc is not None, delay + 5)
                assert time.monotonic() - started >= delay - 0.3
        assert messages == [
            f"subplug stopped: model exploded (restarting in {d} s)" for d in (1, 2, 4)
        ]
        assert any("restarting in 4 s" in line for line in api.logs)
    finally:
        instance.destroy()


def test_filter_reports_an_engine_that_cannot_start(tmp_path: Path) -> None:
    api = Libobs()
    instance = make_filter(tmp_path, [str(tmp_path / "no-such-subplug")], api)
    try:
        run_ticks(instance, lambda: api.now("English").startswith("subplug stopped"), 10)
        text = " ".join(api.now("English").split())
        assert "cannot run" in text, text
        # The path is longer than a caption line: it is cut, not lost.
        assert str(tmp_path / "no-such-subplug") in api.now("English").replace("\n", ""), text
        assert "restarting in 1 s" in text
    finally:
        instance.destroy()


def test_filter_restarts_the_engine_when_its_settings_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBPLUG_PLUGINS", "subplug.testing.fake")
    api = Libobs()
    instance = make_filter(tmp_path, [sys.executable, "-m", "subplug"], api)
    try:
        first = instance.proc
        assert first is not None and "--source" in first.args
        instance.update({**SETTINGS, "stream_captions": False})  # not an engine setting
        assert instance.proc is first
        instance.update({**SETTINGS, "source": "mn"})
        second = instance.proc
        assert second is not None and second is not first
        assert second.args[second.args.index("--source") + 1] == "mn"
        first.wait(timeout=30)  # the old engine was told to stop (stdin closed)
    finally:
        instance.destroy()
    second.wait(timeout=30)
