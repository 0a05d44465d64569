"""Quantised weights and the trimmed vocabulary (subplug.quant) on real parts: the real
kernels, the real tiny Gemma 3n and a peft adapter built offline, real speech from
espeak-ng, the model cache, and the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from subplug import cache, memory, prompts, runtime
from subplug.backends import gemma3n_model, gemma3n_quant
from subplug.backends.gemma3n import Gemma3nBackend, audio_only_model_class, render_prompt
from subplug.backends.gemma3n_model import empty_model
from subplug.cli import main
from subplug.commands import optimize as gemma3n_optimize
from subplug.errors import SubplugError
from subplug.quant import convert, kernels, quality, tensorfile, vocab
from subplug.quant.modules import QuantEmbedding, QuantLinear
from subplug.testing.media import speech
from subplug.testing.tiny import build_tiny_adapter, build_tiny_model
from subplug.types import AudioChunk, BackendOptions, BackendRequest, ChunkSpan

torch = pytest.importorskip("torch")

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt install espeak-ng)"
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quant")
    base = build_tiny_model(root / "base", per_layer_inputs=True)  # the tables all count
    adapter = build_tiny_adapter(base, root / "adapter")
    return {"base": base, "adapter": adapter, "root": root}


@pytest.fixture(scope="module")
def clips() -> list[Any]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt install espeak-ng)")
    return [speech("Hello world. How are you today?", "en"), speech("Сайн байна уу.", "ru")]


def _request(samples: Any, index: int, source: str, budget: int = 40) -> BackendRequest:
    task, instruction, src = prompts.first_request(source, ("en", "mn"))
    span = ChunkSpan(index, 0.0, len(samples) / 16_000, ())
    return BackendRequest(AudioChunk(span, samples), instruction, task, src, budget)


def _float_model(folder: Path) -> Any:
    model = audio_only_model_class().from_pretrained(folder, dtype=torch.float32)
    return model.eval()


# ---------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("rows", [1, 5, 40])
def test_every_available_int8_kernel_multiplies_like_float(rows: int) -> None:
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(96, 256, generator=generator) * 0.05
    bias = torch.randn(96, generator=generator)
    x = torch.randn(rows, 256, generator=generator)
    reference = x @ weight.T
    q8 = kernels.quantize_int8(weight)
    # Symmetric per-row rounding: every weight within half a step of its row's scale.
    error = (kernels.dequantize_int8(q8) - weight).abs()
    assert bool((error <= q8.scales[:, None] / 2 + 1e-7).all())
    found = kernels.available()
    assert "int8" in found and "fbgemm" in found
    built = {
        "fbgemm": kernels.PackedInt8(q8),
        "fbgemm-7bit": kernels.PackedInt8(q8, seven_bit=True),
        "int-mm": kernels.PerTokenInt8(q8),
        "weight-only": kernels.WeightOnlyInt8(q8),
    }
    for name, kernel in built.items():
        out = kernel(x).float()
        relative = float((out - reference).norm() / reference.norm())
        assert relative < (0.05 if name == "fbgemm-7bit" else 0.03), name
    with_bias = kernels.PackedInt8(q8, bias)(x)
    assert torch.allclose(with_bias - bias, built["fbgemm"](x), atol=1e-4)


def test_int4_groups_round_trip_and_multiply() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 256, generator=generator)
    q4 = kernels.quantize_int4(weight, 64)
    assert q4.values.dtype == torch.uint8 and q4.values.shape == (64, 128)
    assert int(kernels.unpack_int4(q4).max()) <= 15
    step = q4.scales.repeat_interleave(64, dim=1)
    assert bool(((kernels.dequantize_int4(q4) - weight).abs() <= step / 2 + 1e-6).all())
    if "int4" not in kernels.available():
        pytest.skip("this torch build has no int4 CPU kernel")
    x = torch.randn(3, 256, generator=generator)
    out = kernels.WeightOnlyInt4(q4)(x)
    expected = x @ kernels.dequantize_int4(q4).T
    assert float((out - expected).norm() / expected.norm()) < 0.02  # bf16 activations
    with pytest.raises(ValueError, match="group"):
        kernels.quantize_int4(weight, 100)


@pytest.mark.parametrize("bits", [8, 4])
def test_an_embedding_table_looks_up_its_quantised_rows(bits: int) -> None:
    """Each id gives its own row (through the trimmed map), within half a step of the
    float row, times the embedding scale; a 4-bit table holds half the bytes."""
    generator = torch.Generator().manual_seed(1)
    table = torch.randn(40, 64, generator=generator)
    kept = [0, 1, 2, 7, 9, 30, 31, 55] + list(range(60, 92))
    table_rows = vocab.row_map(kept, 100)
    emb = QuantEmbedding(40, 64, bits=bits, group=16, embed_scale=3.0, vocab_size=100)
    emb.set_rows(0, table[:25])
    emb.set_rows(25, table[25:])
    emb.rows = table_rows
    ids = torch.tensor([[9, 0, 91], [31, 60, 9]])
    looked_up = emb(ids)
    assert looked_up.shape == (2, 3, 64)
    expected = table[table_rows[ids].long()] * 3.0
    if bits == 8:
        step = emb.qscale[table_rows[ids].long()].unsqueeze(-1) * 3.0
        assert emb.qweight.nbytes == 40 * 64
    else:
        step = emb.qscale[table_rows[ids].long()].repeat_interleave(16, dim=-1) * 3.0
        assert emb.qweight.nbytes == 40 * 32 and emb.qscale.shape == (40, 4)
    assert bool(((looked_up - expected).abs() <= step / 2 + 1e-5).all())
    assert torch.equal(looked_up[0, 0], looked_up[1, 2]), "the same id, the same row"
    assert emb(torch.empty(1, 0, dtype=torch.long)).shape == (1, 0, 64)
    with pytest.raises(ValueError, match="8 or 4 bits"):
        QuantEmbedding(4, 64, bits=3)
    with pytest.raises(ValueError, match="group"):
        QuantEmbedding(4, 60, bits=4, group=16)


def test_fbgemm_needs_7bit_weights_without_vnni(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FBGEMM_ENABLE_INSTRUCTIONS", raising=False)
    assert kernels.fbgemm_needs_7bit(frozenset({"avx2", "fma"}))
    assert not kernels.fbgemm_needs_7bit(frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert not kernels.fbgemm_needs_7bit(frozenset({"avx2", "avx_vnni"}))
    monkeypatch.setenv("FBGEMM_ENABLE_INSTRUCTIONS", "AVX2")
    assert kernels.fbgemm_needs_7bit(frozenset({"avx512_vnni"}))
    flags = "processor : 0\nflags : fpu avx2 avx512_vnni\n"
    assert kernels.cpu_flags(flags) == frozenset({"fpu", "avx2", "avx512_vnni"})


def test_a_quant_linear_saves_loads_and_releases_what_its_kernel_copies() -> None:
    weight = torch.randn(64, 128)
    layer = QuantLinear.from_float(weight, torch.ones(64), kernel="fbgemm")
    x = torch.randn(2, 128)
    expected = layer(x)
    state = layer.state_dict()
    assert set(state) == {"qweight", "qscale", "bias"}
    again = QuantLinear(128, 64, bias=True, kernel="fbgemm", device="meta")
    again.load_state_dict(state, assign=True)
    assert torch.equal(again(x), expected)
    again._kernel = None
    again.prepare(release=True)
    assert again.qweight.numel() == 0, "the packed kernel holds the only copy"
    assert torch.equal(again(x), expected)
    with pytest.raises(ValueError, match="bits"):
        QuantLinear(4, 4, bits=3)


def test_safetensors_are_read_tensor_by_tensor_and_block_by_block(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {
        "table": torch.arange(40 * 6, dtype=torch.float32).reshape(40, 6).to(torch.bfloat16),
        "scalar": torch.tensor(3.5),
        "ints": torch.arange(5, dtype=torch.int8),
    }
    save_file(tensors, str(tmp_path / "x.safetensors"))
    found = {e.name: e for e in tensorfile.entries(tmp_path / "x.safetensors")}
    assert set(found) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(found[name].read(), tensor), name
    old = tensorfile.BLOCK_BYTES
    tensorfile.BLOCK_BYTES = 6 * 2 * 7  # seven rows a block
    try:
        blocks = list(found["table"].row_blocks())
    finally:
        tensorfile.BLOCK_BYTES = old
    assert [first for first, _ in blocks] == [0, 7, 14, 21, 28, 35]
    assert torch.equal(torch.cat([b for _, b in blocks]), tensors["table"])
    (tmp_path / "bad.safetensors").write_bytes(b"\x01")
    with pytest.raises(OSError, match="not a safetensors"):
        tensorfile.entries(tmp_path / "bad.safetensors")


# ---------------------------------------------------------------------- vocabulary


def test_the_kept_pieces_are_english_and_mongolian_text() -> None:
    keep = ["▁the", "Hello", "▁Сайн", "өдөр", "Үнэ", "▁café", "—", "№", "3.14", "\n", "▁"]
    drop = ["漢字", "▁日本", "مرحبا", "नमस्ते", "γεια", "😀", ""]
    assert all(vocab.allowed_piece(p) for p in keep)
    assert not any(vocab.allowed_piece(p) for p in drop)


def test_kept_ids_hold_text_bytes_specials_and_every_prompt_token(tiny: dict[str, Path]) -> None:
    from transformers import AutoConfig, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny["base"])
    config = AutoConfig.from_pretrained(tiny["base"])
    kept = gemma3n_quant.kept_vocabulary(processor, config, prompts.INSTRUCTIONS)
    tokenizer = processor.tokenizer
    ids = set(kept.ids)
    assert list(kept.ids) == sorted(ids) and kept.vocab_size == config.text_config.vocab_size
    for name in ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<0xD0>"):
        assert tokenizer.convert_tokens_to_ids(name) in ids, name
    for instruction in prompts.INSTRUCTIONS:
        text = render_prompt(processor, instruction)
        assert set(tokenizer(text, add_special_tokens=False)["input_ids"]) <= ids
    for word in ("Сайн байна уу", "Hello world", "Өнөөдөр"):
        assert set(tokenizer(word, add_special_tokens=False)["input_ids"]) <= ids
    assert kept.reasons["byte"] == 256 and kept.dropped == config.text_config.vocab_size - len(ids)
    rows = vocab.row_map(kept.ids, kept.vocab_size)
    assert [int(rows[i]) for i in kept.ids] == list(range(len(kept.ids)))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), length=st.integers(2, 24))
def test_a_trimmed_model_makes_the_full_models_choice_whenever_it_keeps_it(
    tiny: dict[str, Path], trimmed_pair: tuple[Any, Any, list[int]], seed: int, length: int
) -> None:
    """The property of the trimmed vocabulary: wherever the untrimmed (same quantised
    weights) model's greedy choice is a kept token, the trimmed model chooses the same
    token with the same logit."""
    full, trimmed, kept = trimmed_pair
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([kept])[:, torch.randint(0, len(kept), (length,), generator=generator)]
    with torch.inference_mode():
        full_logits = full(input_ids=ids).logits[0]
        trimmed_logits = trimmed(input_ids=ids).logits[0]
    kept_t = torch.tensor(kept)
    assert trimmed_logits.shape[-1] == len(kept)
    choice = full_logits.argmax(-1)
    inside = torch.isin(choice, kept_t)
    mapped = kept_t[trimmed_logits.argmax(-1)]
    assert torch.equal(mapped[inside], choice[inside])
    best_full = full_logits.gather(-1, choice[:, None])[inside]
    best_trimmed = trimmed_logits.max(-1).values[:, None][inside]
    assert torch.allclose(best_full, best_trimmed, rtol=0, atol=1e-5)
    assert torch.allclose(full_logits[:, kept_t], trimmed_logits, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def trimmed_pair(tiny: dict[str, Path]) -> tuple[Any, Any, list[int]]:
    """The tiny model quantised alike twice: with all tokens, and with half of them (a
    spread of ids, specials included), so its choices often fall outside."""
    from subplug.quant.convert import QuantSpec, load_quantized

    vocab_size = 520
    kept = sorted(set(range(0, 10)) | set(range(10, vocab_size, 2)))
    full = load_quantized(tiny["base"], QuantSpec(min_params=1024), build=empty_model)
    trimmed = load_quantized(
        tiny["base"], QuantSpec(min_params=1024, kept_ids=tuple(kept)), build=empty_model
    )
    return full, trimmed, kept


# ---------------------------------------------------------- building and loading


@pytest.mark.parametrize("bits", [8, 4])
def test_streamed_quantising_equals_quantising_the_loaded_model(
    tiny: dict[str, Path], bits: int
) -> None:
    """Built while reading the files (never the float model whole) or converted after a
    float load: the same quantised model, to the bit (4-bit: the per-layer table too)."""
    spec = convert.QuantSpec(
        bits=bits,
        group=32,
        per_layer_bits=bits,
        min_params=1024,
        kept_ids=tuple(range(0, 520, 3)) + (1, 2),
    )
    streamed = convert.load_quantized(tiny["base"], spec, build=empty_model)
    converted = convert.quantize_loaded(_float_model(tiny["base"]), spec)
    a, b = streamed.state_dict(), converted.state_dict()
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert any(isinstance(m, QuantLinear) for m in streamed.modules())
    per_layer = streamed.model.language_model.embed_tokens_per_layer
    assert isinstance(per_layer, QuantEmbedding) and per_layer.bits == bits
    assert streamed.model.language_model.embed_tokens.bits == 8, "the head's table stays int8"


def test_the_per_layer_table_counts_in_the_test_model(tiny: dict[str, Path]) -> None:
    """What the tests here do to the per-layer table shows in the logits (a model built
    with transformers' zero AltUp output scale would ignore that table)."""
    model = convert.load_quantized(
        tiny["base"], convert.QuantSpec(min_params=1024), build=empty_model
    )
    ids = torch.tensor([[2, 5, 40, 77, 120, 299]])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        model.model.language_model.embed_tokens_per_layer.qscale.zero_()
        after = model(input_ids=ids).logits
    assert float((before - after).abs().max()) > 0.1


def test_a_lora_adapter_is_merged_while_reading_as_peft_merges_it(tiny: dict[str, Path]) -> None:
    from peft import PeftModel

    merged = PeftModel.from_pretrained(
        _float_model(tiny["base"]), str(tiny["adapter"])
    ).merge_and_unload()
    modules = {name for name, _ in merged.named_modules()}
    deltas = convert.read_lora(tiny["adapter"], modules)
    assert deltas.modules, "the adapter targets the language model's projections"
    base = dict(_float_model(tiny["base"]).named_parameters())
    merged_params = dict(merged.named_parameters())
    for module in deltas.modules:
        mine = deltas.merge(module, base[f"{module}.weight"])
        assert torch.allclose(mine, merged_params[f"{module}.weight"], atol=1e-6), module
    # and the whole quantised model equals quantising peft's merged model
    spec = convert.QuantSpec(min_params=1024)
    streamed = convert.load_quantized(
        tiny["base"], spec, build=empty_model, adapter_dir=tiny["adapter"]
    )
    converted = convert.quantize_loaded(merged, spec)
    for key, value in streamed.state_dict().items():
        assert torch.allclose(value.float(), converted.state_dict()[key].float(), atol=1e-6), key


def test_adapters_the_streamed_merge_cannot_do_are_refused_for_the_float_path(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    adapter = tmp_path / "dora"
    shutil.copytree(tiny["adapter"], adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["use_dora"] = True
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(convert.UnsupportedCheckpoint, match="use_dora"):
        convert.read_lora(adapter, set())
    # the backend's builder then loads in float and converts: same result as peft would give
    model = gemma3n_quant.build(tiny["base"], tiny["adapter"], convert.QuantSpec(min_params=1024))
    assert any(isinstance(m, QuantLinear) for m in model.modules())


def test_a_saved_quantised_model_loads_to_the_same_outputs(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    spec = convert.QuantSpec(
        bits=4, group=32, per_layer_bits=4, min_params=1024, kept_ids=tuple(range(300))
    )
    model = convert.load_quantized(tiny["base"], spec, build=empty_model)
    folder = tmp_path / "saved"
    folder.mkdir()
    written = convert.save_quantized(model, folder)
    assert {p.name for p in written} == {"model.safetensors", convert.SPEC_FILE}
    model.config.save_pretrained(folder)
    again_spec = convert.read_spec(folder)
    assert again_spec == spec
    again = convert.load_saved(folder, again_spec, build=empty_model)
    ids = torch.tensor([[2, 5, 40, 77, 120, 299]])
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
    convert.prepare_kernels(again)
    with pytest.raises(ValueError, match="released"):
        convert.save_quantized(again, tmp_path)
    # a copy saved before the per-layer table could be 4-bit (format 1) reads as int8
    old = {**spec.to_json(), "format": 1}
    del old["per_layer_bits"]
    assert convert.QuantSpec.from_json(old).per_layer_bits == 8
    with pytest.raises(ValueError, match="format"):
        convert.QuantSpec.from_json({**spec.to_json(), "format": 99})


# ------------------------------------------------------------------- the choice


def test_a_4bit_choice_stores_the_per_layer_table_in_4_bits_too() -> None:
    kept = vocab.KeptVocabulary(ids=(0, 1, 2), vocab_size=10, reasons={"special": 3})
    int4 = gemma3n_quant.spec_for(runtime.QuantChoice(4, True, "fbgemm"), kept, params=5 * 10**9)
    int8 = gemma3n_quant.spec_for(runtime.QuantChoice(8, True, "fbgemm"), kept, params=5 * 10**9)
    assert (int4.bits, int4.per_layer_bits, int4.group, int4.kept_ids) == (4, 4, 128, (0, 1, 2))
    assert (int8.bits, int8.per_layer_bits) == (8, 8)


def test_auto_quantises_full_size_models_on_the_cpu_only() -> None:
    every = frozenset({"int8", "int4", "fbgemm", "int-mm", "weight-only"})
    big, small = 5_000_000_000, 500_000
    choose = runtime.choose_quantize
    auto = choose("auto", "auto", "cpu", params=big, kernels=every)
    assert (auto.bits, auto.trim_vocab, auto.kernel, auto.name) == (8, True, "fbgemm", "int8-trim")
    assert choose("auto", "auto", "cpu", params=small, kernels=every).bits is None
    assert choose("auto", "auto", "cuda:0", params=big, kernels=every).bits is None
    assert choose("auto", "auto", "cpu", params=big, dtype_spec="bf16", kernels=every).bits is None
    assert choose("auto", "auto", "cpu", params=big, kernels=frozenset()).bits is None
    assert choose("auto", "full", "cpu", params=big, kernels=every).name == "int8"
    assert choose("int4", "auto", "cpu", params=small, kernels=every).name == "int4-trim"
    only_mm = frozenset({"int8", "int-mm"})
    assert choose("int8", "auto", "cpu", params=big, kernels=only_mm).kernel == "int-mm"


@pytest.mark.parametrize(
    ("quantize", "vocab", "device", "dtype", "kernels_", "reference"),
    [
        ("int3", "auto", "cpu", "auto", None, "bad-quantize"),
        ("int8", "half", "cpu", "auto", None, "bad-vocab"),
        ("int8", "auto", "cuda:0", "auto", None, "quantize-needs-cpu"),
        ("int4", "auto", "cpu", "auto", frozenset({"int8", "fbgemm"}), "quantize-unsupported"),
        ("int8", "auto", "cpu", "auto", frozenset(), "quantize-unsupported"),
        ("int8", "auto", "cpu", "bf16", None, "bad-dtype"),
        ("none", "en-mn", "cpu", "auto", None, "vocab-needs-quantize"),
    ],
)
def test_impossible_quantisation_requests_are_clear_errors(
    quantize: str, vocab: str, device: str, dtype: str, kernels_: Any, reference: str
) -> None:
    every = frozenset({"int8", "int4", "fbgemm"}) if kernels_ is None else kernels_
    with pytest.raises(SubplugError) as error:
        runtime.choose_quantize(
            quantize, vocab, device, params=10**9, dtype_spec=dtype, kernels=every
        )
    assert error.value.reference == reference
    assert error.value.hint


def test_memory_estimates_know_quantised_and_trimmed_sizes() -> None:
    from subplug.backends.gemma3n import e2b_config

    config = e2b_config()
    counts = gemma3n_model.count_params_by_kind(config)
    assert counts.total == gemma3n_model.count_params(config)
    assert counts.embeddings > 2_500_000_000 and counts.linear > 2_000_000_000
    plain = gemma3n_model.estimate_memory(config, "bf16-upcast")
    int8 = gemma3n_model.estimate_memory(
        config, "bf16-upcast", quant=runtime.QuantChoice(8, False, "fbgemm")
    )
    trim = gemma3n_model.estimate_memory(
        config, "bf16-upcast", quant=runtime.QuantChoice(8, True, "fbgemm"), kept_tokens=100_000
    )
    int4 = gemma3n_model.estimate_memory(
        config, "bf16-upcast", quant=runtime.QuantChoice(4, True, "fbgemm"), kept_tokens=100_000
    )
    assert plain.weight_bytes > int8.weight_bytes > trim.weight_bytes > int4.weight_bytes
    # int4 halves the linears and also stores the per-layer table in 4-bit groups
    kept_per_layer = counts.per_layer * 100_000 // config.text_config.vocab_size
    assert trim.weight_bytes - int4.weight_bytes > counts.linear // 2 + kept_per_layer // 3
    assert trim.quantized == "int8-trim" and plain.quantized == "none"
    with pytest.raises(SubplugError) as error:
        memory.check_fits(int8, "cpu", free=4 * memory.GIB)
    assert "int4" in (error.value.hint or "")


# -------------------------------------------------------- backend, cache and CLI


@pytest.fixture
def cached(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("SUBPLUG_HOME", str(home))
    cache.import_model(tiny["base"], name="tiny-base")
    cache.import_model(tiny["adapter"], name="tiny-en-mn", base="tiny-base")
    return home


@needs_espeak
def test_a_quantised_backend_answers_and_agrees_with_the_float_one(
    cached: Path, clips: list[Any]
) -> None:
    requests = [_request(clips[0], 0, "en"), _request(clips[1], 1, "mn")]
    reference_backend = Gemma3nBackend(
        BackendOptions(model="tiny-en-mn", device="cpu", dtype="fp32")
    )
    assert reference_backend.describe()["quantize"] == "none", "auto leaves a tiny model alone"
    reference = gemma3n_quant.reference_answers(reference_backend, requests)
    same = gemma3n_quant.agreement(reference_backend, requests, reference)
    assert (same.top1, round(same.cosine, 5), same.in_kept) == (1.0, 1.0, 1.0)
    reference_backend.close()

    backend = Gemma3nBackend(BackendOptions(model="tiny-en-mn", device="cpu", quantize="int8"))
    facts = backend.describe()
    assert facts["quantize"] == "int8-trim" and facts["dtype"] == "float32"
    assert facts["quantized_from"] == "built while loading"
    assert facts["saved_as"] == "tiny-en-mn-int8-trim", "kept in the cache for the next run"
    answers = backend.generate(requests)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    found = gemma3n_quant.agreement(backend, requests, reference)
    assert found.steps == sum(len(a) for a, _ in reference)
    assert found.cosine > 0.98 and found.top1 > 0.8, found
    backend.close()

    again = Gemma3nBackend(BackendOptions(model="tiny-en-mn", device="cpu", quantize="int8"))
    assert again.describe()["quantized_from"] == "saved copy tiny-en-mn-int8-trim"
    assert again.generate(requests) == answers
    again.close()


def test_models_optimize_makes_a_copy_that_lists_verifies_exports_and_imports(
    cached: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "optimize", "tiny-en-mn", "--quantize", "int4"]) == 0
    out = capsys.readouterr().out
    assert "Made tiny-en-mn-int4-trim from tiny-en-mn" in out and "tokens kept" in out
    assert "--model tiny-en-mn --quantize int4` loads it" in " ".join(out.split())
    entries = {e.name: e for e in cache.list_models()}
    copy = entries["tiny-en-mn-int4-trim"]
    assert copy.kind == "full" and copy.derived is not None
    assert copy.derived["from"] == "tiny-en-mn" and copy.derived["quantize"] == "int4-trim"
    assert main(["models", "list"]) == 0
    assert "int4-trim" in capsys.readouterr().out
    assert main(["models", "list", "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed["tiny-en-mn-int4-trim"]["derived"]["from"] == "tiny-en-mn"
    assert main(["models", "verify", "tiny-en-mn-int4-trim"]) == 0
    capsys.readouterr()
    assert main(["models", "export", "tiny-en-mn-int4-trim", str(tmp_path)]) == 0
    assert main(["models", "rm", "tiny-en-mn-int4-trim"]) == 0
    assert main(["models", "import", str(tmp_path / "tiny-en-mn-int4-trim.tar")]) == 0
    backend = Gemma3nBackend(BackendOptions(model="tiny-en-mn", device="cpu", quantize="int4"))
    assert backend.describe()["quantized_from"] == "saved copy tiny-en-mn-int4-trim"
    backend.close()
    # the copy given by name runs as what it is, and refuses other settings
    named = Gemma3nBackend(BackendOptions(model="tiny-en-mn-int4-trim", device="cpu"))
    assert named.describe()["quantize"] == "int4-trim"
    named.close()
    with pytest.raises(SubplugError) as error:
        Gemma3nBackend(BackendOptions(model="tiny-en-mn-int4-trim", quantize="none"))
    assert error.value.reference == "model-is-quantized"
    # making it again needs --force; a copy of a copy is refused
    assert main(["models", "optimize", "tiny-en-mn", "--quantize", "int4"]) == 2
    assert main(["models", "optimize", "tiny-en-mn-int4-trim"]) == 2
    err = capsys.readouterr().err
    assert "already in the cache" in err and "already a quantised copy" in err


def test_an_older_int4_copy_still_loads_and_says_how_to_remake_it(
    cached: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An int4 copy saved before the per-layer table could be 4-bit (the format-1 layout,
    an int8 table) loads as it is, with a warning that names the command remaking it;
    remade, it has the 4-bit table and loads without one."""
    import dataclasses

    made = gemma3n_optimize.spec_for

    def as_before(*args: Any, **kwargs: Any) -> convert.QuantSpec:
        return dataclasses.replace(made(*args, **kwargs), per_layer_bits=8)

    monkeypatch.setattr(gemma3n_optimize, "spec_for", as_before)
    assert main(["models", "optimize", "tiny-en-mn", "--quantize", "int4"]) == 0
    folder = cache.resolve_model("tiny-en-mn-int4-trim").path
    assert json.loads((folder / convert.SPEC_FILE).read_text())["format"] == 1
    options = BackendOptions(model="tiny-en-mn", device="cpu", quantize="int4")
    with caplog.at_level("WARNING"):
        old = Gemma3nBackend(options)
    assert old.describe()["quantized_from"] == "saved copy tiny-en-mn-int4-trim"
    assert old.model.model.language_model.embed_tokens_per_layer.bits == 8
    assert "optimize tiny-en-mn --quantize int4 --force" in caplog.text
    old.close()
    monkeypatch.setattr(gemma3n_optimize, "spec_for", made)
    assert main(["models", "optimize", "tiny-en-mn", "--quantize", "int4", "--force"]) == 0
    caplog.clear()
    with caplog.at_level("WARNING"):
        new = Gemma3nBackend(options)
    assert new.model.model.language_model.embed_tokens_per_layer.bits == 4
    assert "--force" not in caplog.text
    new.close()


def test_a_copy_of_other_weights_is_not_used(cached: Path, tiny: dict[str, Path]) -> None:
    """A re-imported model under the same name has other contents: its old quantised
    copy no longer matches, and a new one is made."""
    assert main(["models", "optimize", "tiny-en-mn"]) == 0
    other = build_tiny_adapter(tiny["base"], tiny["root"] / "other-adapter", seed=7)
    cache.import_model(other, name="tiny-en-mn", base="tiny-base", force=True)
    backend = Gemma3nBackend(BackendOptions(model="tiny-en-mn", device="cpu", quantize="int8"))
    assert backend.describe()["quantized_from"] == "built while loading"
    backend.close()


@needs_espeak
def test_a_failed_quality_check_keeps_auto_on_float_weights(
    cached: Path, clips: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """``optimize --check`` records the agreement; a copy below 99 % is not what
    ``--quantize auto`` loads (the tiny random model's int4 copy is far below)."""

    entry, facts = gemma3n_optimize.optimize("tiny-en-mn", quantize="int8", check=True)
    assert facts["quality"]["steps"] > 0
    recorded = cache.resolve_model(entry.name).manifest.derived["quality"]
    assert recorded == facts["quality"] and facts["passes"] is (recorded["top1"] >= 0.99)
    forced = Gemma3nBackend(BackendOptions(model="tiny-en-mn", device="cpu", quantize="int8"))
    assert forced.describe()["quantize"] == "int8-trim"
    forced.close()
    if not facts["passes"]:
        # auto would only quantise a full-size model: ask the choice the way auto does
        choice = runtime.choose_quantize("int8", "auto", "cpu", params=10**9)
        copy = gemma3n_quant.find_saved("tiny-en-mn", choice)
        assert copy is not None and gemma3n_quant.recorded_agreement(copy) < quality.MIN_AGREEMENT


@needs_espeak
def test_generate_with_quantize_int8_writes_subtitles(
    cached: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from subplug.testing.media import speech_clip

    clip = speech_clip(tmp_path / "talk.wav", ("Hello world.", "How are you today?"), pause=1.0)
    code = main(["generate", str(clip.path), "--model", "tiny-en-mn", "--quantize", "int8",
                 "--source", "en", "--jsonl"])  # fmt: skip
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "job-done" and events[-1]["ok"] == 1
    assert any(e["event"] == "file-done" for e in events)


def test_bad_quantize_values_are_refused_by_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    media = tmp_path / "x.wav"
    media.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(media), "--quantize", "int3"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'int3'" in capsys.readouterr().err


def test_a_large_matrix_is_packed_and_multiplied_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """fbgemm's packing needs several times a matrix's size as work space: a tall matrix
    (the head) is packed in parts of BLOCK_ROWS rows, with the same results."""
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(100, 64, generator=generator)
    q8 = kernels.quantize_int8(weight)
    x = torch.randn(4, 64, generator=generator)
    whole = kernels.PackedInt8(q8)
    monkeypatch.setattr(kernels.PackedInt8, "BLOCK_ROWS", 32)
    parts = kernels.PackedInt8(q8)
    assert len(whole.parts) == 1 and len(parts.parts) == 4
    assert torch.equal(parts(x), whole(x))
    seven = kernels.PackedInt8(q8, seven_bit=True)
    expected = x @ weight.T
    assert float((seven(x) - expected).norm() / expected.norm()) < 0.05
