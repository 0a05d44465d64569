"""The collator, token by token: the prompt the engine sends, the answer, the labels of
both masking modes, right padding and audio padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from subplug.prompts import INSTRUCTIONS, instruction
from subplug.testing.media import tone
from subplug_training.collator import IGNORE_INDEX, Collator

ENGLISH = instruction(8)
TARGET = "### English\n\nHello world.\n\n---\n\n### Mongolian\n\nСайн уу, дэлхий."


@pytest.fixture(scope="module")
def processor(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


def _tokens(processor, ids) -> list[str]:  # type: ignore[no-untyped-def]
    return processor.tokenizer.convert_ids_to_tokens([int(i) for i in ids])


def _examples() -> list[dict]:
    return [
        {"audio": tone(440, 1.0), "instruction": ENGLISH, "target": TARGET},
        {"audio": tone(300, 2.5), "instruction": INSTRUCTIONS[0], "target": "Сайн байна уу."},
    ]


def test_prompt_is_the_engines_prompt_with_one_bos(processor, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from subplug.backends.gemma3n import Gemma3nBackend
    from subplug.types import AudioChunk, BackendOptions, BackendRequest, ChunkSpan, Task

    collator = Collator(processor)
    audio = tone(440, 1.3)
    item = collator.encode(audio, ENGLISH, TARGET)
    backend = Gemma3nBackend(BackendOptions(model=str(tiny_model_dir), device="cpu"))
    try:
        span = ChunkSpan(0, 0.0, 1.3, ())
        request = BackendRequest(AudioChunk(span, audio), ENGLISH, Task.BOTH, "en", 64)
        sent = backend.prepare(request)
    finally:
        backend.close()
    # Exactly the ids and mel features the engine sends at inference.
    assert item.prompt_ids.tolist() == sent.input_ids.tolist()
    np.testing.assert_array_equal(item.features, sent.features)
    np.testing.assert_array_equal(item.feature_mask, sent.feature_mask)

    tokens = _tokens(processor, item.prompt_ids)
    tokenizer = processor.tokenizer
    assert tokens[:2] == ["<bos>", "<start_of_turn>"] and tokens.count("<bos>") == 1
    boa = tokens.index("<start_of_audio>")
    eoa = tokens.index("<end_of_audio>")
    assert set(tokens[boa + 1 : eoa]) == {"<audio_soft_token>"}
    assert eoa - boa - 1 == processor.audio_seq_length
    text = tokenizer.decode(item.prompt_ids[eoa + 1 :])
    assert text == f"\n\n{ENGLISH}<end_of_turn>\n<start_of_turn>model\n"
    # The answer: the target, then <end_of_turn> (where generation stops).
    assert tokenizer.decode(item.answer_ids[:-1]) == TARGET
    assert _tokens(processor, item.answer_ids[-1:]) == ["<end_of_turn>"]


def test_completion_labels_cover_the_answer_only(processor) -> None:  # type: ignore[no-untyped-def]
    collator = Collator(processor)
    examples = _examples()
    batch = collator(examples)
    items = [collator.encode(e["audio"], e["instruction"], e["target"]) for e in examples]
    ids, labels, attention = batch["input_ids"], batch["labels"], batch["attention_mask"]
    width = max(len(i.input_ids) for i in items)
    assert ids.shape == labels.shape == attention.shape == (2, width)
    for row, item in enumerate(items):
        prompt, length = len(item.prompt_ids), len(item.input_ids)
        for position in range(width):
            label = int(labels[row, position])
            if position < prompt:  # the prompt: never a target
                assert label == IGNORE_INDEX
                assert int(ids[row, position]) == int(item.prompt_ids[position])
            elif position < length:  # the answer: every token is its own label
                assert label == int(ids[row, position]) == int(item.answer_ids[position - prompt])
            else:  # right padding: pad id, no attention, no loss
                assert int(ids[row, position]) == processor.tokenizer.pad_token_id
                assert int(attention[row, position]) == 0 and label == IGNORE_INDEX
        assert attention[row, :length].eq(1).all()
    # The shorter row is padded on the right.
    short = min(range(2), key=lambda r: len(items[r].input_ids))
    assert int(attention[short, -1]) == 0 and int(attention[short, 0]) == 1


def test_seed_labels_match_the_seed_scripts_masking(processor) -> None:  # type: ignore[no-untyped-def]
    collator = Collator(processor, masking="seed")
    examples = _examples()
    batch = collator(examples)
    tokenizer = processor.tokenizer
    masked = {
        tokenizer.pad_token_id,
        tokenizer.image_token_id,
        tokenizer.audio_token_id,
        tokenizer.boi_token_id,
        tokenizer.eoi_token_id,
    }
    ids, labels = batch["input_ids"], batch["labels"]
    for token, label in zip(ids.flatten().tolist(), labels.flatten().tolist(), strict=True):
        assert label == (IGNORE_INDEX if token in masked else token)
    first = _tokens(processor, ids[0])
    # The seed trained on the prompt: <bos>, the turn markers, <start_of_audio> and
    # <end_of_audio> keep their labels; the audio soft tokens do not.
    for name in ("<bos>", "<start_of_turn>", "<start_of_audio>", "<end_of_audio>"):
        position = first.index(name)
        assert int(labels[0, position]) == int(ids[0, position])
    soft = first.index("<audio_soft_token>")
    assert int(labels[0, soft]) == IGNORE_INDEX


def test_audio_is_padded_with_masked_frames(processor) -> None:  # type: ignore[no-untyped-def]
    from subplug.backends.gemma3n import AUDIO_PAD_FRAMES

    collator = Collator(processor)
    examples = _examples()
    batch = collator(examples)
    items = [collator.encode(e["audio"], e["instruction"], e["target"]) for e in examples]
    features, mask = batch["input_features"], batch["input_features_mask"]
    frames = max(len(i.features) for i in items) + AUDIO_PAD_FRAMES
    assert features.shape == (2, frames, 128) and mask.shape == (2, frames)
    for row, item in enumerate(items):
        real = len(item.features)
        assert mask[row, :real].tolist() == item.feature_mask.tolist()
        assert not mask[row, real:].any() and features[row, real:].abs().sum() == 0
        np.testing.assert_array_equal(features[row, :real].numpy(), item.features)


def test_unknown_masking_mode_is_refused(processor) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="masking"):
        Collator(processor, masking="prompt")
