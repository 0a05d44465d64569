"""The clip job writes a file only for a language that has text, and tells "no speech"
from "no text" (the engine's real decoding and VAD; the test backend as the model)."""

from __future__ import annotations

from pathlib import Path

import pysubs2
import pytest
from subplug import plugins
from subplug.errors import SubplugError
from subplug.testing import FakeBackendPlugin, fake_answer
from subplug.testing.media import silence, speech_clip
from subplug.types import BackendRequest, GenerateOptions, Task
from subplug_kdenlive.job import run_job


def _english_only(request: BackendRequest) -> str:
    """A model that never manages Mongolian."""
    if request.task is Task.TRANSLATE:
        return ""
    answer = fake_answer(request)
    return answer.split("---")[0] + "---\n\n### Mongolian\n\n" if "---" in answer else answer


@pytest.fixture
def talk(tmp_path: Path, media_tools: None) -> Path:
    (tmp_path / "media").mkdir()
    return speech_clip(tmp_path / "media" / "talk.wav", ("Hello world.",)).path


def test_a_language_without_text_gets_no_srt(talk: Path, tmp_path: Path) -> None:
    plugins.register(FakeBackendPlugin(script=_english_only), name="english-only")
    output = tmp_path / "out" / "talk.en-mn.ass"
    output.parent.mkdir()
    assert run_job(talk, output, GenerateOptions(backend="fake", source="en")) == 0
    assert sorted(p.name for p in output.parent.iterdir()) == ["talk.en-mn.ass", "talk.en.srt"]
    english = pysubs2.load(str(output.parent / "talk.en.srt"))
    assert len(english) > 0 and all(event.text.strip() for event in english)


def test_no_text_at_all_is_not_called_no_speech(talk: Path, tmp_path: Path) -> None:
    plugins.register(FakeBackendPlugin(script=lambda request: " "), name="mute")
    output = tmp_path / "out" / "talk.en-mn.ass"
    output.parent.mkdir()
    with pytest.raises(SubplugError) as caught:
        run_job(talk, output, GenerateOptions(backend="fake", source="en"))
    assert caught.value.reference == "no-text"
    assert list(output.parent.iterdir()) == []


def test_silence_is_no_speech(tmp_path: Path, fake_backend: FakeBackendPlugin) -> None:
    import wave

    quiet = tmp_path / "quiet.wav"
    samples = (silence(3.0) * 32767).astype("<i2")
    with wave.open(str(quiet), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(samples.tobytes())
    output = tmp_path / "out" / "quiet.en-mn.ass"
    output.parent.mkdir()
    with pytest.raises(SubplugError) as caught:
        run_job(quiet, output, GenerateOptions(backend="fake"))
    assert caught.value.reference == "no-speech"
    assert list(output.parent.iterdir()) == []
