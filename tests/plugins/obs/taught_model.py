"""A tiny Gemma 3n taught to caption a few spoken phrases, for end-to-end host tests.

The random tiny model answers with noise, which proves plumbing but shows nothing a
person can read. Fine-tuning it for a few dozen steps on espeak-ng recordings of two or
three phrases, with the combined English+Mongolian target of instruction 8, gives a
model that really maps *that* audio to *those* captions: a host test can then check
that the right words reach the right place at the right time, and a screenshot shows
real text. Each phrase is seen with jittered margins (as voice activity detection cuts
it in a live stream), so small differences in where an utterance is cut do not matter.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from subplug.prompts import INSTRUCTION_EN_THEN_MN, combined_target
from subplug.testing.media import silence, speech
from subplug.types import SAMPLE_RATE


@dataclass(frozen=True)
class Phrase:
    """What is said (English, spoken by espeak-ng) and the captions it should get."""

    said: str
    en: str
    mn: str

    @property
    def target(self) -> str:
        return combined_target("en", {"en": self.en, "mn": self.mn})


#: What the OBS test plays, and the captions the taught model gives it.
PHRASE = Phrase(
    said="Hello world, how are you today?",
    en="Hello world. How are you today?",
    mn="Сайн байна уу, дэлхий. Өнөөдөр ямар байна?",
)


def jittered(voice: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    """``count`` copies of ``voice`` (16 kHz) with 0.05–0.5 s of quiet noise before and
    after, as a live segmenter may cut it."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        before, after = rng.uniform(0.05, 0.5, size=2)
        clip = np.concatenate([silence(before), voice, silence(after)])
        clip = clip + rng.normal(0.0, 1e-4, size=clip.shape).astype(np.float32)
        out.append((clip * rng.uniform(0.7, 1.0)).astype(np.float32))
    return out


def teach_tiny_model(
    base_dir: Path,
    dest: Path,
    phrases: Sequence[Phrase],
    *,
    variants: int = 4,
    max_steps: int = 200,
    check_every: int = 10,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[int, Any], None] | None = None,
) -> Path:
    """Fine-tune the tiny model in ``base_dir`` on ``phrases``; save it to ``dest``.

    Completion-only loss (prompt and audio masked) on the exact prompt the backend
    renders for a known English source. Training stops once greedy decoding of
    held-out variants (other margins than those trained on) gives every phrase's target
    exactly; :class:`RuntimeError` if that does not happen within ``max_steps``.
    Returns ``dest``.
    """
    import torch
    from subplug.backends.gemma3n import audio_only_model_class
    from transformers import AutoProcessor

    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(base_dir)
    processor.tokenizer.padding_side = "right"  # the prompt is then a prefix of every row
    model = audio_only_model_class().from_pretrained(base_dir, dtype=torch.float32)
    messages = [
        {
            "role": "user",
            "content": [{"type": "audio"}, {"type": "text", "text": INSTRUCTION_EN_THEN_MN}],
        }
    ]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    voices = [speech(phrase.said, sample_rate=SAMPLE_RATE) for phrase in phrases]
    train = [jittered(voice, variants, seed + n) for n, voice in enumerate(voices)]
    held_out = [jittered(voice, 1, seed + 1000 + n)[0] for n, voice in enumerate(voices)]
    prompt_len = len(
        processor(text=[prompt], audio=[held_out[0]], add_special_tokens=False)["input_ids"][0]
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for step in range(1, max_steps + 1):
        model.train()
        # Every phrase in every step, each in a random variant: the model must tell
        # them apart by their audio.
        picked = [clips[int(rng.integers(variants))] for clips in train]
        encoded = processor(
            text=[prompt + phrase.target + "<end_of_turn>" for phrase in phrases],
            audio=picked,
            add_special_tokens=False,
            padding=True,
            return_tensors="pt",
        )
        labels = encoded["input_ids"].clone()
        labels[:, :prompt_len] = -100
        labels[encoded["attention_mask"] == 0] = -100
        loss = model(**encoded, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if log is not None:
            log(step, loss.item())
        if step % check_every == 0 and loss.item() < 0.2:
            model.eval()
            answers = _answers(model, processor, prompt, held_out)
            if log is not None:
                log(step, answers)
            if answers == [p.target for p in phrases]:
                break
    else:
        raise RuntimeError(f"the tiny model did not learn the phrases in {max_steps} steps")
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    for path in base_dir.iterdir():  # the processor files, unchanged
        if path.is_file() and not (dest / path.name).exists():
            shutil.copy2(path, dest / path.name)
    return dest


def _answers(model: Any, processor: Any, prompt: str, clips: Sequence[np.ndarray]) -> list[str]:
    """Greedy answers of ``model`` for each clip."""
    import torch

    answers = []
    for clip in clips:
        encoded = processor(
            text=[prompt], audio=[clip], add_special_tokens=False, return_tensors="pt"
        )
        with torch.inference_mode():
            out = model.generate(**encoded, do_sample=False, max_new_tokens=120)
        new = out[0, encoded["input_ids"].shape[1] :]
        answers.append(processor.tokenizer.decode(new, skip_special_tokens=True).strip())
    return answers
