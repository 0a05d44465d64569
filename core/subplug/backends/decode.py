"""Greedy decoding for Gemma 3n: one prefill, then one forward per token, lean.

subplug's own loop instead of ``GenerationMixin.generate``, because it can do what the
generic one cannot, measured in docs/performance.md:

- **Audio encoded once per chunk, one chunk at a time.** The audio encoder costs as much
  per chunk at batch 8 as at batch 1 (it gains nothing from batching on a CPU), and a
  chunk asked twice (transcribe, then translate) would otherwise be encoded twice;
  :class:`AudioCache` keeps each chunk's audio embeddings for the follow-up.
- **A follow-up request reuses its chunk's prompt prefix.** Every prompt begins with the
  same tokens around the chunk's audio (188 soft tokens of ~215); only the instruction
  after them differs. A first request whose language is not known yet (a translation
  will follow) runs its prefill in two passes, the shared prefix and then the rest, and
  keeps the key/value cache of the first pass (:class:`PrefixCache`); the follow-up
  starts from it and computes only its own instruction's tokens.
- **A wide prefill goes in slices.** On a CPU a batch's prompts go through the model
  in column slices of at most :data:`PREFILL_TOKENS` ids, each attending to the cache
  the slices before it filled: the same result, with a batch of 8 prompts' activations
  a quarter of the size.
- **Finished rows leave the batch.** A row that has stopped (end of turn, its token
  budget, a repetition loop) is dropped from the batch and its cache, so the others'
  steps cost less.
- **A trimmed vocabulary.** With a head over the kept tokens only, the greedy choice is
  made among them and mapped back to the token id.
- **No per-step bookkeeping beyond the tokens themselves**: the repetition check runs
  on the row's token list every :data:`LOOP_CHECK_EVERY` steps.

The prefill builds the input embeddings exactly as ``Gemma3nModel.forward`` does for an
audio prompt (token embeddings, the audio embedder for audio-block ids, the audio soft
tokens scattered in, per-layer inputs from the ids), so the loop's tokens equal
``generate``'s (tests/core/test_decode.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: Steps between two repetition checks of a row (a loop is caught at most this late).
LOOP_CHECK_EVERY = 4

#: The most prompt ids (rows × columns) one prefill forward takes on a CPU; a wider
#: batch's prompts go through in column slices. The forward's activations grow with its
#: ids (E2B: a batch of 8 prompts held 0.8 GiB at once), its CPU time per id does not
#: (docs/performance.md). On a GPU a batch's prompts go in one forward, as before
#: (slices there are unmeasured; the memory estimate counts a whole prefill per item).
PREFILL_TOKENS = 512


@dataclass
class DecodeRow:
    """One sequence to decode."""

    input_ids: Sequence[int]
    """The rendered prompt's ids (with the audio soft-token placeholders)."""
    audio: torch.Tensor
    """The chunk's audio soft tokens, ``[audio_soft_tokens_per_image, hidden]``."""
    max_new_tokens: int
    key: Any = None
    """The chunk (by identity) whose prompt prefix a :class:`PrefixCache` keeps or has."""
    keep_prefix: bool = False
    """Keep this row's prefix state for a follow-up request on the same chunk."""


class AudioCache:
    """The audio encoder's output per chunk, for the most recent ``size`` chunks.

    Keys are the chunk objects themselves (held, so their identity cannot be reused
    while cached)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[int, tuple[Any, torch.Tensor]] = OrderedDict()

    def get(self, chunk: Any) -> torch.Tensor | None:
        found = self._items.get(id(chunk))
        if found is None or found[0] is not chunk:
            return None
        self._items.move_to_end(id(chunk))
        return found[1]

    def put(self, chunk: Any, audio: torch.Tensor) -> None:
        self._items[id(chunk)] = (chunk, audio)
        self._items.move_to_end(id(chunk))
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


class PrefixCache:
    """The key/value cache of prompt prefixes, per batch of chunks, for their follow-up
    requests: the most recent ``size`` batches.

    ``length`` is the number of leading prompt tokens every prompt shares (the same
    for every instruction). A follow-up batch whose chunks all sit in one kept batch
    starts from that batch's state, its rows picked out; any other batch computes its
    prefix itself."""

    def __init__(self, length: int, size: int = 2) -> None:
        self.length = length
        self.size = size
        self._batches: list[tuple[list[Any], Any]] = []

    @classmethod
    def shared_by(cls, prompts: Sequence[Sequence[int]], size: int = 2) -> PrefixCache:
        """A cache for prefixes as long as what all ``prompts`` (one per instruction)
        share from their start: the tokens up to and around the audio."""
        length = 0
        while all(len(p) > length and p[length] == prompts[0][length] for p in prompts):
            length += 1
        return cls(length, size)

    def find(self, keys: Sequence[Any]) -> Any | None:
        """A fresh cache holding the prefix states of ``keys``' chunks in this order,
        or ``None`` unless one kept batch has them all."""
        import copy

        import torch

        for held, cache in reversed(self._batches):
            where = {id(key): index for index, key in enumerate(held)}
            picks = [where.get(id(key)) for key in keys]
            if keys and all(pick is not None for pick in picks):
                found = copy.deepcopy(cache)
                found.batch_select_indices(torch.tensor(picks, dtype=torch.long))
                return found
        return None

    def put(self, keys: Sequence[Any], cache: Any) -> None:
        """Keep a copy of ``cache`` (the prefix states of ``keys``' chunks, in order)."""
        import copy

        self._batches.append((list(keys), copy.deepcopy(cache)))
        del self._batches[: -self.size]

    def clear(self) -> None:
        self._batches.clear()


def unwrap(model: Any) -> Any:
    """The ``Gemma3nForConditionalGeneration`` inside a peft model (with its LoRA
    layers in place), or ``model`` itself."""
    base = getattr(model, "get_base_model", None)
    return base() if callable(base) else model


def encode_audio(model: Any, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Audio soft tokens for one chunk: ``features`` ``[frames, bins]`` and its validity
    ``mask`` ``[frames]`` → ``[audio_soft_tokens_per_image, hidden]``, padded as
    ``Gemma3nModel.forward`` pads (the audio embedder's last token for masked and
    missing positions)."""
    model = unwrap(model)
    inner = model.model
    config = model.config
    output = inner.get_audio_features(features[None], ~mask[None], return_dict=True)
    audio = output.pooler_output
    audio_mask = output.audio_mel_mask
    pad_id = torch.tensor([[config.text_config.vocab_size - 1]], device=audio.device)
    padding = inner.embed_audio(input_ids=pad_id)
    audio = torch.where(audio_mask.unsqueeze(-1), padding, audio)
    missing = config.audio_soft_tokens_per_image - audio.shape[1]
    if missing > 0:
        audio = torch.cat((audio, padding.expand(1, missing, audio.shape[-1])), dim=1)
    return audio[0]


def _prompt_embeddings(
    model: Any, ids: torch.Tensor, audio: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input embeddings and per-layer inputs of a batch of prompts (or of their parts
    after the audio, with ``audio`` empty), as ``Gemma3nModel.forward`` computes them for
    audio prompts."""
    inner = model.model
    config = model.config
    embeds = inner.get_input_embeddings()(ids)
    per_layer = inner.language_model.get_per_layer_inputs(ids)
    # Ids of the vision and audio blocks take their embedder's hard embeddings (only an
    # answer fed back, as in sequence_logits, can hold vision ids).
    for embedder, low, high in (
        (inner.embed_vision, inner.embed_vision.vocab_offset, inner.embed_audio.vocab_offset),
        (inner.embed_audio, inner.embed_audio.vocab_offset, None),
    ):
        block = ids >= low if high is None else (ids >= low) & (ids < high)
        if not bool(block.any()):
            continue
        dummy = low + embedder.vocab_size - 1
        hard = embedder(input_ids=torch.where(block, ids, dummy))
        embeds = torch.where(block.unsqueeze(-1), hard.to(embeds.dtype), embeds)
    placeholders = (ids == config.audio_token_id).unsqueeze(-1)
    expected = sum(a.shape[0] for a in audio)
    if int(placeholders.sum()) != expected:
        raise ValueError("each prompt must hold exactly one chunk's audio placeholders")
    if audio:
        soft = torch.stack(audio).to(embeds.dtype)
        embeds = embeds.masked_scatter(placeholders, soft)
    return embeds, per_layer


def _logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Soft-capped logits of the last position (over the kept tokens of a trimmed
    vocabulary)."""
    logits = model.lm_head(hidden[:, -1, :]).float()
    cap = model.config.get_text_config().final_logit_softcapping
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def prompt_slices(rows: int, width: int, tokens: int) -> list[slice]:
    """The column slices a prompt forward of ``rows`` × ``width`` ids runs in: as few as
    keep each at most ``tokens`` ids (one column at least), of even widths."""
    columns = max(1, tokens // max(1, rows))
    size = -(-width // -(-width // columns))
    return [slice(start, min(start + size, width)) for start in range(0, width, size)]


def _forward_prompt(
    model: Any,
    ids: torch.Tensor,
    audio: list[torch.Tensor],
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: Any,
) -> torch.Tensor:
    """The language model over prompt ``ids`` (with ``audio``'s soft tokens in their
    placeholders), filling ``cache``; the last position's hidden states ``[rows, 1,
    hidden]``. ``mask`` covers what ``cache`` already holds and ``ids``. The ids go
    through in column slices of at most :data:`PREFILL_TOKENS` on a CPU
    (:func:`prompt_slices`), each attending to the cache the ones before it filled."""
    embeds, per_layer = _prompt_embeddings(model, ids, audio)
    held = mask.shape[1] - ids.shape[1]
    rows, width = ids.shape
    budget = PREFILL_TOKENS if ids.device.type == "cpu" else rows * width
    hidden = embeds
    for part in prompt_slices(rows, width, budget):
        hidden = model.model(
            inputs_embeds=embeds[:, part],
            per_layer_inputs=per_layer[:, part],
            attention_mask=mask[:, : held + part.stop],
            position_ids=positions[:, part],
            cache=cache,
            use_cache=True,
        ).last_hidden_state
    return hidden[:, -1:]


def _prefill(
    model: Any, rows: Sequence[DecodeRow], pad_id: int, device: Any
) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward over the left-padded prompts: (cache, mask, positions, hidden)."""
    from transformers import DynamicCache

    ids, mask = _left_padded([list(r.input_ids) for r in rows], pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp_(min=0)
    cache = DynamicCache(config=model.config.get_text_config())
    audio = [r.audio.to(device) for r in rows]
    hidden = _forward_prompt(model, ids, audio, mask, positions, cache)
    return cache, mask, positions, hidden


def _shares_prefix(rows: Sequence[DecodeRow], length: int) -> bool:
    """Whether the two-pass prefill applies: every row has a chunk, and the rows' prompts
    are equally long and the same in their first ``length`` ids. (Padding after the
    prefix would sit inside the sliding-window layers' window and shorten it for that
    row, so prompts of different lengths take the one-pass way, padded before them.)"""
    if length <= 0 or any(r.key is None for r in rows):
        return False
    first = list(rows[0].input_ids[:length])
    size = len(rows[0].input_ids)
    return size > length and all(
        len(r.input_ids) == size and list(r.input_ids[:length]) == first for r in rows
    )


def _prefill_in_two(
    model: Any, rows: Sequence[DecodeRow], prefixes: PrefixCache, pad_id: int, device: Any
) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The prefill as the shared prefix (kept, or taken from ``prefixes``) and then the
    rest of each prompt: (cache, mask, positions, hidden). A batch that neither keeps
    nor finds prefixes takes the one-pass way."""
    from transformers import DynamicCache

    length = prefixes.length
    keys = [r.key for r in rows]
    cache = prefixes.find(keys)
    if cache is None:
        if not any(r.keep_prefix for r in rows):
            return _prefill(model, rows, pad_id, device)
        cache = DynamicCache(config=model.config.get_text_config())
        ids = torch.tensor([list(r.input_ids[:length]) for r in rows], device=device)
        audio = [r.audio.to(device) for r in rows]
        positions = torch.arange(length, device=device).expand(len(rows), -1)
        _forward_prompt(model, ids, audio, torch.ones_like(ids), positions, cache)
        prefixes.put(keys, cache)
    ids = torch.tensor([list(r.input_ids[length:]) for r in rows], device=device)
    mask = torch.ones((len(rows), length + ids.shape[1]), dtype=torch.long, device=device)
    positions = torch.arange(length, mask.shape[1], device=device).expand(len(rows), -1)
    hidden = _forward_prompt(model, ids, [], mask, positions, cache)
    return cache, mask, positions, hidden


def _left_padded(
    sequences: Sequence[list[int]], pad_id: int, device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Id sequences left-padded to one width, and their attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, sequence in enumerate(sequences):
        ids[i, width - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
        mask[i, width - len(sequence) :] = 1
    return ids.to(device), mask.to(device)


def greedy_decode(
    model: Any,
    rows: Sequence[DecodeRow],
    *,
    pad_id: int,
    stop_ids: Sequence[int],
    is_loop: Callable[[Sequence[int]], bool] | None = None,
    on_step: Callable[[int], None] | None = None,
    prefixes: PrefixCache | None = None,
) -> list[list[int]]:
    """Greedy-decode ``rows`` as one batch; returns each row's generated ids (without
    the stop token). ``on_step(tokens)`` is told after every step how many tokens the
    batch produced in it. The model's ``subplug_kept_ids`` (a trimmed vocabulary), when
    set, maps the head's columns back to token ids. With ``prefixes``, rows that keep
    their prompt prefix leave it there, and rows whose chunks' prefixes are there start
    from them (module docstring)."""
    if not rows:
        return []
    model = unwrap(model)
    device = next(model.parameters()).device
    kept: torch.Tensor | None = getattr(model, "subplug_kept_ids", None)
    if kept is not None:
        kept = kept.to(device)
    stops = set(int(i) for i in stop_ids)

    if prefixes is not None and _shares_prefix(rows, prefixes.length):
        cache, mask, positions, hidden = _prefill_in_two(model, rows, prefixes, pad_id, device)
    else:
        cache, mask, positions, hidden = _prefill(model, rows, pad_id, device)

    outputs: list[list[int]] = [[] for _ in rows]
    budgets = [max(1, r.max_new_tokens) for r in rows]
    active = list(range(len(rows)))
    position = positions[:, -1:]
    step = 0
    while True:
        choice = _logits(model, hidden).argmax(dim=-1)
        if kept is not None:
            choice = kept[choice]
        tokens = choice.tolist()
        step += 1
        keep: list[int] = []
        for slot, index in enumerate(active):
            token = int(tokens[slot])
            if token in stops:
                continue
            out = outputs[index]
            out.append(token)
            if len(out) >= budgets[index]:
                continue
            if is_loop is not None and step % LOOP_CHECK_EVERY == 0 and is_loop(out):
                continue
            keep.append(slot)
        if on_step is not None:
            on_step(len(active))
        if not keep:
            break
        if len(keep) < len(active):
            picked = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(picked)
            mask = mask.index_select(0, picked)
            position = position.index_select(0, picked)
            choice = choice.index_select(0, picked)
            active = [active[slot] for slot in keep]
        mask = torch.cat((mask, mask.new_ones((len(active), 1))), dim=1)
        position = position + 1
        hidden = model.model(
            input_ids=choice.unsqueeze(-1),
            attention_mask=mask,
            position_ids=position,
            cache=cache,
            use_cache=True,
        ).last_hidden_state
    return outputs


def sequence_logits(model: Any, row: DecodeRow, answer: Sequence[int]) -> torch.Tensor:
    """Teacher-forced logits: one forward over the prompt followed by ``answer`` (its
    tokens given, not chosen), returning the soft-capped logits that predicted each
    answer token, ``[len(answer), vocabulary]`` (over the kept tokens of a trimmed
    vocabulary)."""
    model = unwrap(model)
    device = next(model.parameters()).device
    ids = torch.tensor([[*row.input_ids, *answer]], dtype=torch.long, device=device)
    embeds, per_layer = _prompt_embeddings(model, ids, [row.audio.to(device)])
    hidden = model.model(
        inputs_embeds=embeds,
        per_layer_inputs=per_layer,
        attention_mask=torch.ones_like(ids),
        use_cache=False,
    ).last_hidden_state
    start = len(row.input_ids) - 1
    logits = model.lm_head(hidden[0, start : start + len(answer), :]).float()
    cap = model.config.get_text_config().final_logit_softcapping
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits
