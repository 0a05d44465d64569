"""The tiny offline Gemma 3n builder: a real processor, the real architecture, the
vocabulary layout and prompt format of the real checkpoints, from Python and the shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from subplug.testing.tiny import (
    AUDIO_VOCAB,
    TEXT_VOCAB,
    VISION_VOCAB,
    build_tiny_adapter,
    build_tiny_model,
)

INSTRUCTION = "Transcribe this audio into English, and then translate it into Mongolian."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def processor(tiny: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny)


def test_folder_has_what_a_real_checkpoint_has(tiny: Path) -> None:
    names = {p.name for p in tiny.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
    } <= names
    config = json.loads((tiny / "config.json").read_text())
    assert config["model_type"] == "gemma3n"
    assert config["architectures"] == ["Gemma3nForConditionalGeneration"]
    assert sum(p.stat().st_size for p in tiny.iterdir()) < 5_000_000


def test_loads_offline_with_the_real_classes(
    tiny: Path, processor, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import torch
    from subplug.backends.gemma3n import audio_only_model_class
    from transformers import Gemma3nProcessor

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert isinstance(processor, Gemma3nProcessor)
    model = audio_only_model_class().from_pretrained(tiny, dtype=torch.float32)
    assert type(model).__name__ == "Gemma3nForConditionalGeneration"
    params = sum(p.numel() for p in model.parameters())
    assert 400_000 < params < 600_000
    text = model.config.text_config
    assert text.num_kv_shared_layers == 2 and text.altup_num_inputs == 4
    assert model.model.audio_tower is not None  # the real USM audio encoder


def test_vocabulary_follows_gemma_layout(tiny: Path, processor) -> None:  # type: ignore[no-untyped-def]
    config = json.loads((tiny / "config.json").read_text())
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids
    vision, audio = TEXT_VOCAB, TEXT_VOCAB + VISION_VOCAB
    assert ids("<end_of_image>") == vision == config["eoi_token_id"]
    assert ids("<image_soft_token>") == vision + 1 == config["image_token_id"]
    assert ids("<end_of_audio>") == audio == config["eoa_token_id"]
    assert ids("<audio_soft_token>") == audio + 1 == config["audio_token_id"]
    assert ids("<start_of_audio>") == config["boa_token_id"]
    assert config["text_config"]["vocab_size"] == audio + AUDIO_VOCAB
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    assert (
        ids("<end_of_turn>")
        in json.loads((tiny / "generation_config.json").read_text())["eos_token_id"]
    )


@pytest.mark.parametrize(
    "text",
    [
        "Hello world. How are you today?",
        "Сайн байна уу? Монгол Улсын нийслэл Улаанбаатар хот юм.",
        "Ёс, ӨҮ өү — «quotes» 😀 and tabs\tand 1234.",
    ],
)
def test_tokenizer_round_trips_any_text(processor, text: str) -> None:  # type: ignore[no-untyped-def]
    tok = processor.tokenizer
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id not in ids
    assert all(i < TEXT_VOCAB for i in ids)
    assert tok.decode(ids) == text


def test_prompt_matches_the_real_gemma3n_layout(processor) -> None:  # type: ignore[no-untyped-def]
    messages = [
        {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": INSTRUCTION}]}
    ]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    audio = np.zeros(16_000 * 3, dtype=np.float32)
    encoded = processor(text=[prompt], audio=[audio], add_special_tokens=False, return_tensors="np")
    rendered = processor.tokenizer.decode(encoded["input_ids"][0])
    expected = (
        "<bos><start_of_turn>user\n\n\n<start_of_audio>"
        + "<audio_soft_token>" * 188
        + "<end_of_audio>\n\n"
        + INSTRUCTION
        + "<end_of_turn>\n<start_of_turn>model\n"
    )
    assert rendered == expected
    features = encoded["input_features"][0]
    assert features.shape[-1] == 128 and 290 <= features.shape[0] <= 310  # 10 ms hop


def test_build_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = build_tiny_model(tmp_path / "a", seed=3)
    b = build_tiny_model(tmp_path / "b", seed=3)
    c = build_tiny_model(tmp_path / "c", seed=4)
    weights = [(p / "model.safetensors").read_bytes() for p in (a, b, c)]
    assert weights[0] == weights[1] != weights[2]
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()


def test_adapter_targets_the_language_model(tiny: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    adapter = build_tiny_adapter(tiny, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert Path(config["base_model_name_or_path"]) == tiny.resolve()
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
        b_norms = [float(handle.get_tensor(k).abs().sum()) for k in keys if "lora_B" in k]
    assert keys and all("language_model" in k for k in keys)
    assert not any("audio_tower" in k for k in keys)
    assert all(n > 0 for n in b_norms)  # non-zero: the adapter changes outputs
    # transformers 5 has no k/v projections in the KV-shared layers (2 and 3)...
    assert not any(".layers.3.self_attn.k_proj" in k for k in keys)
    legacy = build_tiny_adapter(tiny, tmp_path / "legacy", legacy_kv_shared=True)
    with safe_open(str(legacy / "adapter_model.safetensors"), framework="pt") as handle:
        extra = set(handle.keys()) - set(keys)
    # ...an adapter from an older transformers has them: 2 layers x k/v x lora_A/B.
    assert len(extra) == 8 and all(".layers.2." in k or ".layers.3." in k for k in extra)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "subplug.testing", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_shell_builds_model_and_adapter(tmp_path: Path) -> None:
    done = _run("tiny-model", "model", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Built a tiny Gemma 3n in model" in done.stdout
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert "Traceback" not in done.stderr and "Writing" not in done.stderr

    done = _run("tiny-adapter", "model", "adapter", "--legacy-kv-shared", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert "Traceback" not in done.stderr and "FutureWarning" not in done.stderr

    again = _run("tiny-model", "model", cwd=tmp_path)
    assert again.returncode == 2
    assert "not an empty folder" in again.stderr and "Traceback" not in again.stderr
    (tmp_path / "empty").mkdir()
    no_base = _run("tiny-adapter", "empty", "adapter2", cwd=tmp_path)
    assert no_base.returncode == 2 and "tiny-model DIR" in no_base.stderr
