"""``subplug generate --model …`` end to end with the real tiny Gemma 3n: a model folder, a
cache name, an adapter folder; a damaged or missing model is refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pysubs2
import pytest
from subplug import cache, cli
from subplug.testing.media import SpeechClip, speech_clip
from subplug.testing.tiny import build_tiny_adapter, build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generate")
    base = build_tiny_model(root / "tiny model")
    # The tiny model's words are random. With this adapter seed, its answers for the clip
    # below hold text the parser takes as English and as Mongolian (float32, greedy).
    adapter = build_tiny_adapter(base, root / "tiny adapter", seed=3)
    return {"base": base, "adapter": adapter}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> SpeechClip:
    folder = tmp_path_factory.mktemp("media")
    return speech_clip(
        folder / "talk.mp4",
        ("Hello world.", "This is a test of subtitles for everyone."),
        video=True,
    )


def generate(*args: str) -> int:
    return cli.main(["generate", "--source", "en", "--device", "cpu", "--dtype", "fp32", *args])


def check_outputs(
    out: Path, clip: SpeechClip, formats: tuple[str, ...], langs: tuple[str, ...]
) -> None:
    """The bilingual .ass and one file per format for each of ``langs`` exist (and no
    other: a language without text gets no file), parse and hold cues inside the media
    and near its speech. (The tiny model's words are random: the base model's answers for
    this clip hold no Mongolian the parser accepts.)"""
    planned = sorted(
        ["talk.en-mn.ass"] * ("ass" in formats)
        + [f"talk.{lang}.{f}" for f in formats if f != "ass" for lang in langs]
    )
    assert sorted(p.name for p in out.iterdir()) == planned
    speech_start = clip.speech[0][0] * 1000
    speech_end = clip.speech[-1][1] * 1000
    for name in planned:
        subs = pysubs2.load(str(out / name))
        assert len(subs) >= 1, name
        for line in subs:
            assert 0 <= line.start < line.end <= clip.duration * 1000 + 1
            assert line.plaintext.strip()
        assert subs[0].start >= speech_start - 1600 and subs[-1].end <= speech_end + 1600
    ass = pysubs2.load(str(out / "talk.en-mn.ass"))
    assert {"EN", "MN"} <= set(ass.styles)


def test_generate_with_a_model_folder_writes_valid_subtitles(
    tiny: dict[str, Path], clip: SpeechClip, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    model = str(tiny["base"])
    code = generate("--model", model, "--format", "ass,srt,vtt", "--out", str(out), str(clip.path))
    assert code == 0, capsys.readouterr().err
    check_outputs(out, clip, ("ass", "srt", "vtt"), ("en",))


def test_generate_with_a_cache_name_and_an_adapter_folder(
    tiny: dict[str, Path], clip: SpeechClip, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache.import_model(tiny["base"], name="tiny-base")
    cache.import_model(tiny["adapter"], name="tiny-en-mn", base="tiny-base")
    out = tmp_path / "by-name"
    assert generate("--model", "tiny-en-mn", "--out", str(out), str(clip.path)) == 0
    check_outputs(out, clip, ("ass", "srt"), ("en", "mn"))
    out = tmp_path / "by-folder"
    code = generate(
        "--model", str(tiny["adapter"]), "--no-merge", "--out", str(out), str(clip.path)
    )
    assert code == 0, capsys.readouterr().err
    check_outputs(out, clip, ("ass", "srt"), ("en", "mn"))
    # Same adapter, merged (from the cache) and not (from its folder): the same subtitles.
    for name in ("talk.en.srt", "talk.mn.srt", "talk.en-mn.ass"):
        assert (tmp_path / "by-name" / name).read_text() == (out / name).read_text()


def _events(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_damaged_model_is_refused_before_any_work(
    tiny: dict[str, Path], clip: SpeechClip, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache.import_model(tiny["base"], name="tiny-base")
    weights = cache.models_dir() / "tiny-base" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x40
    weights.write_bytes(bytes(data))
    out = tmp_path / "out"
    code = generate("--model", "tiny-base", "--jsonl", "--out", str(out), str(clip.path))
    captured = capsys.readouterr()
    assert code != 0
    events = _events(captured.out)
    stages = [e.get("stage") for e in events if e.get("event") == "stage"]
    assert "decode" not in stages and "model-load" not in stages
    error = events[-1]["error"]
    assert isinstance(error, dict) and error["reference"] == "model-corrupt"
    assert "subplug models verify tiny-base" in str(error["hint"])
    assert "Traceback" not in captured.err
    assert not out.exists() or not any(out.iterdir())
    assert cli.main(["models", "verify", "tiny-base"]) == 1


def test_a_missing_model_names_pull_and_import(
    clip: SpeechClip, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = generate("--model", "gemma3n-en-mn", "--out", str(out), str(clip.path))
    err = capsys.readouterr().err
    assert code != 0
    assert "not in the model cache" in err and "[model-not-found]" in err
    assert "subplug models pull gemma3n-en-mn" in err and "subplug models import" in err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_a_device_that_is_not_there_is_refused_before_any_work(
    tiny: dict[str, Path], clip: SpeechClip, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "out"
    args = ["--model", str(tiny["base"]), "--jsonl", "--out", str(out), str(clip.path)]
    code = cli.main(["generate", "--device", "cuda", *args])
    captured = capsys.readouterr()
    assert code != 0
    events = _events(captured.out)
    assert "decode" not in [e.get("stage") for e in events]
    error = events[-1]["error"]
    assert isinstance(error, dict) and error["reference"] == "no-cuda"
    assert "--device cpu" in str(error["hint"])
    code = cli.main(["generate", "--device", "cpu", "--dtype", "fp16", *args])
    events = _events(capsys.readouterr().out)
    assert code != 0 and events[-1]["error"]["reference"] == "bad-dtype"  # type: ignore[index]
