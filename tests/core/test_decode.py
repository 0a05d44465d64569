"""subplug's greedy decode loop against transformers' ``generate`` on the real tiny
Gemma 3n with real speech: the same tokens, finished rows leaving the batch, and each
chunk's audio encoded once."""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pytest
from subplug import prompts
from subplug.backends import decode
from subplug.backends.gemma3n import AUDIO_PAD_FRAMES, Gemma3nBackend
from subplug.testing.media import speech
from subplug.testing.tiny import build_tiny_model
from subplug.types import AudioChunk, BackendOptions, BackendRequest, ChunkSpan

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt install espeak-ng)"
)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = build_tiny_model(tmp_path_factory.mktemp("decode") / "tiny")
    loaded = Gemma3nBackend(BackendOptions(model=str(folder), device="cpu", dtype="fp32"))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def requests() -> list[BackendRequest]:
    texts = [("Hello world.", "en", "en"), ("The quick brown fox jumps.", "en", None),
             ("Сайн байна уу.", "ru", "mn")]  # fmt: skip
    found = []
    for index, (text, voice, source) in enumerate(texts):
        samples = speech(text, voice)
        task, instruction, src = prompts.first_request(source, ("en", "mn"))
        span = ChunkSpan(index, 0.0, len(samples) / 16_000, ())
        found.append(BackendRequest(AudioChunk(span, samples), instruction, task, src, 30 + index))
    return found


def _generate_tokens(backend: Any, requests: list[BackendRequest], budget: int) -> list[list[int]]:
    inputs = backend.collate([backend.prepare(r) for r in requests])
    with torch.inference_mode():
        out = backend.model.generate(**inputs, max_new_tokens=budget)
    rows = []
    for row in out[:, inputs["input_ids"].shape[1] :].tolist():
        cut = []
        for token in row:
            if token in backend.stop_ids:
                break
            cut.append(token)
        rows.append(cut)
    return rows


def _prompt_widths(backend: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the width of every prompt forward (one with input embeddings) of
    ``backend``'s language model, in order."""
    widths: list[int] = []
    forward = backend.model.model.forward

    def watched(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("inputs_embeds") is not None:
            widths.append(kwargs["inputs_embeds"].shape[1])
        return forward(*args, **kwargs)

    monkeypatch.setattr(backend.model.model, "forward", watched)
    return widths


def test_the_loop_decodes_the_same_tokens_as_generate(
    backend: Any, requests: list[BackendRequest]
) -> None:
    budget = 40
    expected = _generate_tokens(backend, requests, budget)
    rows = [
        decode.DecodeRow(backend.prompt_ids(r.instruction), backend.audio_tokens(r), budget)
        for r in requests
    ]
    with torch.inference_mode():
        got = decode.greedy_decode(
            backend.model, rows, pad_id=backend.pad_id, stop_ids=backend.stop_ids
        )
    assert got == expected
    # one at a time too: a row's tokens do not depend on its batch
    for row, want in zip(rows, expected, strict=True):
        with torch.inference_mode():
            alone = decode.greedy_decode(
                backend.model, [row], pad_id=backend.pad_id, stop_ids=backend.stop_ids
            )
        assert alone == [want]


def test_prompt_ids_and_audio_match_the_processor(
    backend: Any, requests: list[BackendRequest]
) -> None:
    for request in requests:
        prepared = backend.prepare(request)
        assert backend.prompt_ids(request.instruction) == prepared.input_ids.tolist()
        features = np.concatenate(
            [
                prepared.features,
                np.zeros((AUDIO_PAD_FRAMES, prepared.features.shape[1]), np.float32),
            ]
        )
        mask = np.concatenate([prepared.feature_mask, np.zeros(AUDIO_PAD_FRAMES, bool)])
        with torch.inference_mode():
            direct = decode.encode_audio(
                backend.model, torch.from_numpy(features), torch.from_numpy(mask)
            )
        assert torch.equal(backend.audio_tokens(request), direct)


def test_finished_rows_leave_the_batch_and_budgets_hold(
    backend: Any, requests: list[BackendRequest]
) -> None:
    budgets = [3, 12, 25]
    rows = [
        decode.DecodeRow(backend.prompt_ids(r.instruction), backend.audio_tokens(r), b)
        for r, b in zip(requests, budgets, strict=True)
    ]
    active: list[int] = []
    with torch.inference_mode():
        got = decode.greedy_decode(
            backend.model, rows, pad_id=backend.pad_id, stop_ids=[], on_step=active.append
        )
    assert [len(g) for g in got] == budgets
    # three rows until the first budget is spent, then two, then one
    assert active == [3] * 3 + [2] * 9 + [1] * 13


def test_a_chunk_is_encoded_once_for_its_follow_up(
    backend: Any, requests: list[BackendRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend._audio.clear()
    calls: list[int] = []
    encode = decode.encode_audio

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return encode(*args, **kwargs)

    monkeypatch.setattr(decode, "encode_audio", counted)
    first = requests[1]
    followup = BackendRequest(
        first.chunk, prompts.INSTRUCTIONS[5], prompts.Task.TRANSLATE, "en", 16
    )
    backend.generate([first])
    widths = _prompt_widths(backend, monkeypatch)
    backend.generate([followup])
    assert len(calls) == 1
    prompt = backend.prompt_ids(followup.instruction)
    assert widths == [len(prompt) - backend.prefixes().length], "and its prompt prefix kept"
    other = BackendRequest(
        AudioChunk(first.chunk.span, first.chunk.samples.copy()), first.instruction,
        first.task, first.source, 16,
    )  # fmt: skip
    backend.generate([other])
    assert len(calls) == 2, "another chunk object with its own samples is encoded"


def test_progress_counts_tokens_against_the_budgets(
    backend: Any, requests: list[BackendRequest]
) -> None:
    seen: list[tuple[int, int]] = []
    backend.generate(requests, progress=lambda done, total: seen.append((done, total)))
    total = sum(r.max_new_tokens for r in requests)
    assert seen and all(t == total for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (total, total)


def test_a_follow_up_starts_from_its_chunks_prompt_prefix(
    backend: Any, requests: list[BackendRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first request of unknown language keeps its prompt prefix; the translation of
    the same chunks that follows (here in the other order) computes only its
    instruction's tokens and decodes what the one-pass prefill decodes."""
    firsts = [requests[1], requests[1]]
    firsts[1] = BackendRequest(
        AudioChunk(requests[0].chunk.span, requests[0].chunk.samples), firsts[0].instruction,
        firsts[0].task, None, 24,
    )  # fmt: skip
    assert all(r.source is None for r in firsts)
    translate = prompts.INSTRUCTIONS[5]
    prefixes = backend.prefixes()
    ids = backend.prompt_ids(translate)
    length = prefixes.length
    assert ids[:length] == backend.prompt_ids(firsts[0].instruction)[:length]
    audio_id = backend.model.config.audio_token_id
    assert audio_id in ids[:length] and audio_id not in ids[length:]
    assert "Translate this audio into Mongolian." in backend.processor.decode(ids[length:])

    def row(request: BackendRequest, instruction: str, **kwargs: Any) -> decode.DecodeRow:
        audio = backend.audio_tokens(request)
        return decode.DecodeRow(backend.prompt_ids(instruction), audio, 16, **kwargs)

    def run(rows: list[decode.DecodeRow], kept: decode.PrefixCache | None) -> list[list[int]]:
        with torch.inference_mode():
            return decode.greedy_decode(
                backend.model, rows, pad_id=backend.pad_id, stop_ids=[], prefixes=kept
            )

    expected = run([row(r, translate) for r in reversed(firsts)], None)
    kept = decode.PrefixCache(length)
    one_pass = run([row(r, r.instruction) for r in firsts], None)
    two_pass = run([row(r, r.instruction, key=r.chunk, keep_prefix=True) for r in firsts], kept)
    assert two_pass == one_pass, "the first requests decode the same in two passes"

    widths = _prompt_widths(backend, monkeypatch)
    followed = run([row(r, translate, key=r.chunk) for r in reversed(firsts)], kept)
    assert widths == [len(ids) - length], "only the instruction's tokens are computed"
    assert followed == expected
    other = BackendRequest(
        AudioChunk(requests[2].chunk.span, requests[2].chunk.samples), translate,
        prompts.Task.TRANSLATE, "mn", 16,
    )  # fmt: skip
    widths.clear()
    run([row(other, translate, key=other.chunk)], kept)
    assert widths == [len(ids)], "a chunk whose prefix is not kept is prefilled whole"


@pytest.mark.parametrize(
    ("rows", "width", "tokens", "widths"),
    [(1, 217, 512, [217]), (8, 217, 512, [55, 55, 55, 52]), (3, 10, 12, [4, 4, 2]),
     (600, 5, 512, [1, 1, 1, 1, 1]), (2, 256, 512, [256])],
)  # fmt: skip
def test_prompt_slices_cover_the_prompt_within_the_budget(
    rows: int, width: int, tokens: int, widths: list[int]
) -> None:
    parts = decode.prompt_slices(rows, width, tokens)
    assert [p.stop - p.start for p in parts] == widths
    assert parts[0].start == 0 and parts[-1].stop == width
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))


def test_a_wide_batch_is_prefilled_in_slices_that_decode_the_same(
    backend: Any, requests: list[BackendRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompts of different lengths (left-padded) and the two-pass prefix path decode
    the same tokens when the prefill goes through in column slices."""
    firsts = [
        BackendRequest(r.chunk, prompts.INSTRUCTIONS[0], prompts.Task.TRANSCRIBE, None, 12)
        for r in requests
    ]

    def rows(batch: list[BackendRequest], **kwargs: Any) -> list[decode.DecodeRow]:
        return [
            decode.DecodeRow(backend.prompt_ids(r.instruction), backend.audio_tokens(r), 12,
                             key=r.chunk, **kwargs)
            for r in batch
        ]  # fmt: skip

    def run(batch: list[decode.DecodeRow], kept: decode.PrefixCache | None) -> list[list[int]]:
        with torch.inference_mode():
            return decode.greedy_decode(
                backend.model, batch, pad_id=backend.pad_id, stop_ids=[], prefixes=kept
            )

    mixed = requests + firsts[:1]
    assert len({len(backend.prompt_ids(r.instruction)) for r in mixed}) > 1
    whole = run(rows(mixed), None)
    two_pass = run(rows(firsts, keep_prefix=True), decode.PrefixCache(backend.prefixes().length))
    tokens = 3 * 7
    monkeypatch.setattr(decode, "PREFILL_TOKENS", tokens)
    widths = _prompt_widths(backend, monkeypatch)
    assert run(rows(mixed), None) == whole
    width = max(len(backend.prompt_ids(r.instruction)) for r in mixed)
    assert len(widths) > 1 and sum(widths) == width
    assert max(widths) * len(mixed) <= tokens or max(widths) == 1
    widths.clear()
    kept = decode.PrefixCache(backend.prefixes().length)
    assert run(rows(firsts, keep_prefix=True), kept) == two_pass
    assert len(widths) > 2 and max(widths) * len(firsts) <= tokens
