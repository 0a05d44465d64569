"""Turn samples into model batches: chat template with audio, right padding, labels.

Each example is rendered as the engine renders its requests: the processor's chat
template for one user turn (audio, then the exact instruction) with the generation
prompt, tokenised by the processor with ``add_special_tokens=False`` (the template
already starts with ``<bos>``; letting the tokenizer add another gives the seed's double
``<bos>``). The processor expands the audio placeholder to ``<start_of_audio>``, the
soft tokens and ``<end_of_audio>`` and computes the mel features. The answer, the target
text followed by ``<end_of_turn>`` (where generation stops), is tokenised on its own and
appended, so the prompt tokens are exactly those ``subplug generate`` sends.

Labels (``masking``):

* ``"completion"`` (default): only the answer's tokens count; the prompt, padding and
  every image/audio marker or soft token are ``-100``.
* ``"seed"``: the seed's labels, for comparison: every token counts except padding, the
  image and audio soft tokens and the image start/end markers (so the prompt, ``<bos>``
  and the audio start/end markers are trained on).

Batches are right-padded (``pad`` tokens, attention 0); mel features are padded with
masked frames, at least :data:`subplug.backends.gemma3n.AUDIO_PAD_FRAMES` per item as in
inference, so an item's audio encoding does not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from subplug.backends.gemma3n_model import audio_features, render_prompt

from subplug_training.recipe import MASKING_MODES

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One example, tokenised: prompt and answer ids, mel features and their mask."""

    prompt_ids: np.ndarray
    answer_ids: np.ndarray
    features: np.ndarray
    feature_mask: np.ndarray

    @property
    def input_ids(self) -> np.ndarray:
        return np.concatenate([self.prompt_ids, self.answer_ids])


class Collator:
    """``data_collator`` for the transformers ``Trainer``.

    Called with a list of examples, each a mapping with ``audio`` (16 kHz mono float32),
    ``instruction`` (the instruction text) and ``target`` (the answer text). Returns
    ``input_ids``, ``attention_mask``, ``labels``, ``input_features`` and
    ``input_features_mask`` tensors.
    """

    def __init__(
        self, processor: Any, *, masking: str = "completion", feature_dtype: Any = None
    ) -> None:
        if masking not in MASKING_MODES:
            raise ValueError(f"masking must be one of {MASKING_MODES}, not {masking!r}")
        from subplug.backends.gemma3n import AUDIO_PAD_FRAMES

        self.processor = processor
        self.masking = masking
        #: torch dtype of the mel features (the model's dtype); ``None``: float32.
        self.feature_dtype = feature_dtype
        self.audio_pad_frames = AUDIO_PAD_FRAMES
        tokenizer = processor.tokenizer
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)
        self.end_of_turn_id = int(tokenizer.convert_tokens_to_ids("<end_of_turn>"))
        # The seed's list: padding, image soft token, audio soft token, image markers.
        self.seed_masked = _ids(tokenizer, ("image_token", "audio_token", "boi_token", "eoi_token"))
        self.seed_masked.add(self.pad_id)
        # Never a target in completion mode either: any image/audio marker or soft token.
        self.never_targets = self.seed_masked | _ids(tokenizer, ("boa_token", "eoa_token"))
        self._prompts: dict[str, str] = {}

    def prompt(self, instruction: str) -> str:
        """The chat-template text of one audio clip plus ``instruction``, with the
        generation prompt: the engine's own rendering
        (:func:`subplug.backends.gemma3n.render_prompt`)."""
        if instruction not in self._prompts:
            self._prompts[instruction] = render_prompt(self.processor, instruction)
        return self._prompts[instruction]

    def answer_ids(self, target: str) -> list[int]:
        """Token ids of the answer: the (trimmed) target, then ``<end_of_turn>``."""
        ids = self.tokenizer(target.strip(), add_special_tokens=False)["input_ids"]
        return [*ids, self.end_of_turn_id]

    def encode(self, audio: np.ndarray, instruction: str, target: str) -> Encoded:
        """Tokenise one example and compute its mel features."""
        samples = np.asarray(audio, dtype=np.float32)
        encoded = self.processor(
            text=[self.prompt(instruction)],
            audio=[samples],
            add_special_tokens=False,
            return_tensors="np",
        )
        return Encoded(
            prompt_ids=encoded["input_ids"][0].astype(np.int64),
            answer_ids=np.asarray(self.answer_ids(target), dtype=np.int64),
            features=audio_features(encoded)[0][0].astype(np.float32),
            feature_mask=audio_features(encoded)[1][0].astype(bool),
        )

    def labels(self, item: Encoded) -> np.ndarray:
        """Labels for one unpadded example (``-100`` where no loss is taken)."""
        ids = item.input_ids
        if self.masking == "seed":
            labels = ids.copy()
            labels[np.isin(ids, list(self.seed_masked))] = IGNORE_INDEX
            return labels
        labels = np.full_like(ids, IGNORE_INDEX)
        start = len(item.prompt_ids)
        labels[start:] = item.answer_ids
        labels[np.isin(ids, list(self.never_targets))] = IGNORE_INDEX
        return labels

    def collate(self, items: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        """Pad encoded examples into one batch."""
        import torch

        width = max(len(item.prompt_ids) + len(item.answer_ids) for item in items)
        frames = max(len(item.features) for item in items) + self.audio_pad_frames
        bins = items[0].features.shape[-1]
        count = len(items)
        input_ids = np.full((count, width), self.pad_id, dtype=np.int64)
        attention = np.zeros((count, width), dtype=np.int64)
        labels = np.full((count, width), IGNORE_INDEX, dtype=np.int64)
        features = np.zeros((count, frames, bins), dtype=np.float32)
        feature_mask = np.zeros((count, frames), dtype=bool)
        for row, item in enumerate(items):
            ids = item.input_ids
            input_ids[row, : len(ids)] = ids
            attention[row, : len(ids)] = 1
            labels[row, : len(ids)] = self.labels(item)
            features[row, : len(item.features)] = item.features
            feature_mask[row, : len(item.features)] = item.feature_mask
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "labels": torch.from_numpy(labels),
            "input_features": torch.from_numpy(features).to(self.feature_dtype or torch.float32),
            "input_features_mask": torch.from_numpy(feature_mask),
        }

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return self.collate(
            [self.encode(e["audio"], e["instruction"], e["target"]) for e in examples]
        )


def _ids(tokenizer: Any, attributes: Sequence[str]) -> set[int]:
    """Ids of the tokenizer's named special tokens (those it has)."""
    found = set()
    for attribute in attributes:
        value = getattr(tokenizer, f"{attribute}_id", None)
        if value is None:
            token = getattr(tokenizer, attribute, None)
            value = tokenizer.convert_tokens_to_ids(token) if token else None
        if isinstance(value, int) and value >= 0:
            found.add(value)
    return found
