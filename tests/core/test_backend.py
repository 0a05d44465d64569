"""The Gemma 3n backend on the real tiny model: loading through the model cache (base +
peft adapter, merged and unmerged), audio-only loading, old adapters, batching, the
repetition guard and out-of-memory back-off. Audio is real speech from espeak-ng."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from subplug import cache, prompts
from subplug.backends.gemma3n import (
    Gemma3nBackend,
    checkpoint_vision_params,
    create_backend,
    token_loop_at_end,
    trim_repetition,
)
from subplug.errors import SubplugError
from subplug.testing.media import speech
from subplug.testing.tiny import build_tiny_adapter, build_tiny_model
from subplug.types import AudioChunk, BackendOptions, BackendRequest, ChunkSpan

LOG = "subplug.backends.gemma3n"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny base, an adapter trained-with-an-old-transformers style, and a model
    cache holding both (``tiny-base``, ``tiny-en-mn``)."""
    root = tmp_path_factory.mktemp("backend")
    base = build_tiny_model(root / "base")
    adapter = build_tiny_adapter(base, root / "adapter", legacy_kv_shared=True)
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUBPLUG_HOME", str(home))
        cache.import_model(base, name="tiny-base")
        cache.import_model(adapter, name="tiny-en-mn", base="tiny-base")
    return {"base": base, "adapter": adapter, "home": home}


@pytest.fixture
def home(built: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Use the module's model cache in this test."""
    monkeypatch.setenv("SUBPLUG_HOME", str(built["home"]))
    return built["home"]


def load(built: dict[str, Path], model: str, **options: Any) -> Gemma3nBackend:
    """Load ``model`` from the module's cache, in float32 unless told otherwise: the
    equivalence tests compare greedy outputs, which bfloat16 rounding can flip."""
    options.setdefault("dtype", "float32")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUBPLUG_HOME", str(built["home"]))
        backend = create_backend(BackendOptions(model=model, device="cpu", **options))
    assert isinstance(backend, Gemma3nBackend)
    return backend


@pytest.fixture(scope="module")
def merged(built: dict[str, Path]) -> Iterator[Gemma3nBackend]:
    backend = load(built, "tiny-en-mn")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def clips() -> list[Any]:
    """Real speech: two English sentences and a Cyrillic one (espeak-ng's Russian voice)."""
    return [
        speech("Hello world.", "en"),
        speech("The quick brown fox jumps over the lazy dog.", "en"),
        speech("Сайн байна уу.", "ru"),
    ]


def request(samples: Any, index: int, source: str | None, budget: int = 32) -> BackendRequest:
    task, instruction, src = prompts.first_request(source, ("en", "mn"))
    span = ChunkSpan(index, 0.0, len(samples) / 16_000, ())
    return BackendRequest(AudioChunk(span, samples), instruction, task, src, budget)


@pytest.fixture(scope="module")
def requests(clips: list[Any]) -> list[BackendRequest]:
    """Mixed instructions, lengths and budgets, in no particular order."""
    return [
        request(clips[0], 0, "en", 24),
        request(clips[1], 1, None, 40),
        request(clips[2], 2, "mn", 32),
        request(clips[1], 3, "en", 16),
    ]


# ------------------------------------------------------------- through the cache


def test_adapter_from_the_cache_merged_and_unmerged_give_identical_outputs(
    built: dict[str, Path], merged: Gemma3nBackend, requests: list[BackendRequest]
) -> None:
    unmerged = load(built, "tiny-en-mn", merge_adapter=False)
    try:
        assert merged.describe()["merged"] is True
        assert unmerged.describe()["merged"] is False
        assert type(unmerged.model).__name__.startswith("PeftModel")
        assert type(merged.model).__name__ == "Gemma3nForConditionalGeneration"
        facts = merged.describe()
        assert facts["model"] == "tiny-en-mn"
        assert facts["model_path"] == str(built["home"] / "models" / "tiny-base")
        a, b = merged.generate(requests), unmerged.generate(requests)
    finally:
        unmerged.close()
    assert a == b
    assert all(text.strip() for text in a)


def test_the_adapter_changes_the_base_models_outputs(
    built: dict[str, Path], merged: Gemma3nBackend, requests: list[BackendRequest]
) -> None:
    base = load(built, "tiny-base")
    try:
        assert base.describe()["adapter"] is None
        plain = base.generate(requests)
    finally:
        base.close()
    assert plain != merged.generate(requests)


def test_batching_does_not_change_outputs_or_their_order(
    built: dict[str, Path], merged: Gemma3nBackend, requests: list[BackendRequest]
) -> None:
    one_by_one = load(built, "tiny-en-mn", batch_size=1)
    try:
        singles = one_by_one.generate(requests)
    finally:
        one_by_one.close()
    assert merged.batch_size >= len(requests) or merged.batch_size > 1
    assert merged.generate(requests) == singles
    assert merged.generate(list(reversed(requests))) == list(reversed(singles))
    assert merged.generate([]) == []


def test_old_adapter_kv_weights_on_shared_layers_load_with_a_note(
    built: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOG):
        backend = load(built, "tiny-en-mn", merge_adapter=False)
    try:
        assert backend.describe()["skipped_adapter_tensors"] == {"kv-shared": 8}
        lora = [n for n, _ in backend.model.named_modules() if n.endswith("q_proj.lora_A")]
        assert len(lora) == 4  # the adapter is applied to every layer it can be
    finally:
        backend.close()
    notes = [r for r in caplog.records if "KV-shared layers 2-3" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_missing_model_names_pull_and_import(home: Path) -> None:
    with pytest.raises(SubplugError) as err:
        create_backend.check(BackendOptions(model="not-here"))
    assert err.value.reference == "model-not-found"
    assert "subplug models pull" in (err.value.hint or "")
    assert "subplug models import" in (err.value.hint or "")


def test_a_damaged_cache_entry_is_refused(
    built: dict[str, Path], home: Path, tmp_path: Path
) -> None:
    cache.import_model(built["base"], name="damaged")
    weights = home / "models" / "damaged" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    assert not cache.verify("damaged").ok
    with pytest.raises(SubplugError) as err:
        create_backend(BackendOptions(model="damaged", device="cpu"))
    assert err.value.reference == "model-corrupt"
    assert "subplug models verify damaged" in (err.value.hint or "")
    cache.remove("damaged")


# ----------------------------------------------------------------- audio-only


def test_audio_only_loading_builds_no_vision_tower(merged: Gemma3nBackend) -> None:
    names = [n for n, _ in merged.model.named_parameters()]
    assert names and not [n for n in names if "vision_tower" in n]
    assert any("audio_tower" in n for n in names)
    with pytest.raises(RuntimeError, match="audio-only"):
        merged.model.model.vision_tower(None)


def test_a_checkpoint_with_vision_weights_loads_audio_only_and_reports_the_saving(
    built: dict[str, Path], tmp_path: Path, requests: list[BackendRequest]
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "with-vision"
    shutil.copytree(built["base"], folder)
    tensors = load_file(folder / "model.safetensors")
    # Tensors named like the real checkpoint's MobileNet-V5 vision tower.
    vision = {
        "model.vision_tower.timm_model.conv_stem.conv.weight": torch.randn(64, 3, 3, 3),
        "model.vision_tower.timm_model.blocks.0.0.conv_exp.weight": torch.randn(128, 64, 3, 3),
        "model.vision_tower.timm_model.msfa.ffn.pw_proj.conv.weight": torch.randn(2048, 128),
    }
    save_file({**tensors, **vision}, folder / "model.safetensors", metadata={"format": "pt"})
    injected = sum(t.numel() for t in vision.values())
    assert checkpoint_vision_params(folder) == injected

    plain = Gemma3nBackend(BackendOptions(model=str(built["base"]), device="cpu", dtype="fp32"))
    with_vision = Gemma3nBackend(BackendOptions(model=str(folder), device="cpu", dtype="fp32"))
    try:
        facts = with_vision.describe()
        assert facts["vision_params_skipped"] == injected
        assert facts["vision_bytes_saved"] == 4 * injected  # float32 on this CPU test
        assert facts["params"] == plain.describe()["params"]
        assert not [n for n, _ in with_vision.model.named_parameters() if "vision_tower" in n]
        assert with_vision.generate(requests[:2]) == plain.generate(requests[:2])
    finally:
        plain.close()
        with_vision.close()


# ----------------------------------------------------------- repetition guard


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello world. " + "thank you " * 12, "Hello world. thank you"),
        ("I said no, no, that is fine.", None),
        ("Баярлалаа. " * 6, None),  # six times one word is speech, not yet a loop
        ("Сайн байна уу? " + "Баярлалаа. " * 9 + "Баярл", "Сайн байна уу? Баярлалаа."),
        ("The end. The end. The end. The end.", "The end."),
        ("ha" * 20 + " ok", "ha ok"),
        ("аааааааааааааааааааа", "а"),
        ("Go go go go go go go go!", "Go"),
        ("A long enough sentence that does not repeat at all, really.", None),
    ],
)
def test_trim_repetition_on_crafted_loops(text: str, expected: str | None) -> None:
    trimmed, looped = trim_repetition(text)
    assert looped is (expected is not None)
    assert trimmed == (expected if expected is not None else text)


def _is_subsequence(small: str, big: str) -> bool:
    chars = iter(big)
    return all(c in chars for c in small)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["the", "cat", "Сайн", "уу", "no,", "ha", "a.", "\n"]), max_size=40),
    st.integers(min_value=0, max_value=12),
)
def test_trim_repetition_only_removes(words: list[str], repeats: int) -> None:
    text = " ".join(words + ["again"] * repeats)
    trimmed, looped = trim_repetition(text)
    assert len(trimmed) <= len(text)
    assert _is_subsequence(trimmed, text)
    if not looped:
        assert trimmed == text
    if repeats >= 8:
        assert looped and trimmed.count("again") < repeats


def test_token_loop_detection() -> None:
    assert token_loop_at_end([5, 6, 7] + [9] * 24)
    assert token_loop_at_end([1, 2] + [3, 4, 5] * 8)
    assert not token_loop_at_end([3, 4, 5] * 7)  # 21 tokens: not yet a loop
    assert not token_loop_at_end(list(range(100)))


def test_a_crafted_looping_output_is_stopped_and_trimmed(
    merged: Gemma3nBackend, requests: list[BackendRequest], caplog: pytest.LogCaptureFixture
) -> None:

    tok = merged.tokenizer
    good = tok.encode("Hello world. ", add_special_tokens=False)
    loop = tok.encode("thank you ", add_special_tokens=False)
    ids = good + loop * 12
    varied = [*good, *range(10, 10 + len(ids) - len(good))]
    assert [token_loop_at_end(ids), token_loop_at_end(varied)] == [True, False]
    answer_ids = [*ids, tok.convert_tokens_to_ids("<end_of_turn>"), *good]
    with caplog.at_level(logging.INFO, logger=LOG):
        answer = merged.decode_answer(answer_ids, requests[0])
    assert answer == "Hello world. thank you"
    assert any("trimmed a repetition loop" in r.getMessage() for r in caplog.records)
    # A control character, and the first byte of a Cyrillic letter cut off by the budget.
    bell = tok.encode("\x07", add_special_tokens=False)
    half = [tok.convert_tokens_to_ids("<0xD0>")]
    assert merged.decode_answer([*good, *bell, *half], requests[0]) == "Hello world."


def test_loops_of_the_real_model_are_cut_short_and_trimmed(
    merged: Gemma3nBackend, clips: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The random tiny model falls into loops like a speech model on music: generation
    stops early and the loop is trimmed, where plain generation runs to the budget."""
    import torch
    from subplug.backends import decode

    budget = 96
    reqs = [request(clip, i, "en", budget) for i, clip in enumerate(clips)]
    lengths: list[int] = []
    greedy = decode.greedy_decode

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = greedy(*args, **kwargs)
        lengths.extend(len(row) for row in out)
        return out

    monkeypatch.setattr(decode, "greedy_decode", spy)  # observe the decode loop
    answers = [merged.generate([r])[0] for r in reqs]
    monkeypatch.undo()
    raws = []
    for r in reqs:
        inputs = merged.collate([merged.prepare(r)])
        with torch.inference_mode():
            out = merged.model.generate(**inputs, max_new_tokens=budget)
        raws.append(merged.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :].tolist()))
    looping = [i for i, raw in enumerate(raws) if trim_repetition(raw)[1]]
    assert looping, "the tiny model no longer loops on these clips: pick other clips"
    for i in looping:
        assert trim_repetition(answers[i]) == (answers[i], False)
        assert len(answers[i]) < len(raws[i])
    assert any(lengths[i] < budget for i in looping)
    assert all(n <= budget for n in lengths)


# ------------------------------------------------------------------ OOM back-off


def test_out_of_memory_halves_the_batch_and_keeps_every_chunk(
    built: dict[str, Path], requests: list[BackendRequest], caplog: pytest.LogCaptureFixture
) -> None:
    """An injected CUDA out-of-memory error (there is no GPU here) for any batch larger
    than one: the backend halves its batch until it fits and drops nothing."""
    import torch

    backend = load(built, "tiny-en-mn", batch_size=4)
    expected = backend.generate(requests)
    inner = backend.model.model
    forward = inner.forward
    sizes: list[int] = []

    def tight_memory(*args: Any, **kwargs: Any) -> Any:
        prompt = kwargs.get("inputs_embeds")
        cache = kwargs.get("cache")
        if prompt is not None and cache.get_seq_length() == 0:  # a batch's (first) prefill
            sizes.append(prompt.shape[0])
            if prompt.shape[0] > 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.5 GiB")
        return forward(*args, **kwargs)

    inner.forward = tight_memory
    try:
        with caplog.at_level(logging.WARNING, logger=LOG):
            got = backend.generate(requests)
    finally:
        del inner.forward
        backend.close()
    assert got == expected
    assert sizes == [4, 2, 1, 1, 1, 1]
    assert backend.batch_size == 1
    assert [r.getMessage() for r in caplog.records] == [
        "Out of memory on cpu; retrying with batch size 2.",
        "Out of memory on cpu; retrying with batch size 1.",
    ]


def test_model_files_are_readable_by_others_and_unreadable_ones_are_said_plainly(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """The tiny model's files get the usual 0644 (its weights went through a private
    temporary file); a model file that cannot be read is one clear error before loading,
    not a misleading 'file not found' from deep inside transformers."""
    import stat

    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in built["base"].iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o644, modes
    broken = tmp_path / "broken"
    shutil.copytree(built["base"], broken)
    (broken / "model.safetensors").unlink()
    (broken / "model.safetensors").symlink_to(tmp_path / "nowhere")
    with pytest.raises(SubplugError) as error:
        create_backend.check(BackendOptions(model=str(broken)))
    assert error.value.reference == "model-unreadable"
    assert "model.safetensors" in error.value.message and error.value.hint


def test_audio_features_are_read_under_either_transformers_name() -> None:
    """transformers 5.24's processor returns ``input_features``; its main branch renames
    them ``audio_features``: both are read."""
    import numpy as np
    from subplug.backends.gemma3n_model import audio_features

    features, mask = np.ones((1, 5, 128)), np.ones((1, 5), bool)
    assert audio_features({"input_features": features, "input_features_mask": mask})[0] is features
    assert audio_features({"audio_features": features, "audio_features_mask": mask})[1] is mask
    with pytest.raises(KeyError, match="no audio features"):
        audio_features({"input_ids": features})
