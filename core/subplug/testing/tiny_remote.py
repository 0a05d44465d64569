"""A tiny speech model whose code comes with it, built offline (``python -m
subplug.testing tiny-model --family remote-code DIR``): the loading path of the
``remote-code`` backend, as Tiny Audio's (``mazesmazes/tiny-audio``) takes it.

The folder holds its own three Python files, named in ``config.json`` the way the Hub's
remote-code models name them: ``auto_map`` (``AutoConfig``, ``AutoModel``) and
``custom_pipelines`` (an ``automatic-speech-recognition`` pipeline of its own). The
model is Tiny Audio's shape at toy size: an audio encoder over mel frames, a SwiGLU
projector that stacks 5 frames, and a decoder (a GRU here) that writes byte-level BPE
tokens greedily. Its feature extractor is Whisper's, its tokenizer a standard one trained
here. Weights are random, so its words are nonsense (tokens without a letter are never
written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONFIG_CODE = """\
from transformers import PretrainedConfig


class TinySpeechConfig(PretrainedConfig):
    model_type = "subplug_tiny_speech"

    def __init__(self, num_mel_bins=80, hidden_size=32, stack=5, vocab_size=512,
                 bos_token_id=0, eos_token_id=0, suppress_ids=(), **kwargs):
        self.num_mel_bins = num_mel_bins
        self.hidden_size = hidden_size
        self.stack = stack
        self.vocab_size = vocab_size
        self.suppress_ids = list(suppress_ids)
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
"""

MODEL_CODE = '''\
import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel

from .configuration_tiny_speech import TinySpeechConfig


class TinySpeechModel(PreTrainedModel):
    """Encoder over mel frames, SwiGLU projector (frames stacked by config.stack), GRU
    decoder started from the mean of the projected audio."""

    config_class = TinySpeechConfig
    main_input_name = "input_features"

    def __init__(self, config):
        super().__init__(config)
        h, k = config.hidden_size, config.stack
        self.encoder = nn.Sequential(nn.Linear(config.num_mel_bins, h), nn.GELU(), nn.Linear(h, h))
        self.gate = nn.Linear(h * k, 2 * h, bias=False)
        self.up = nn.Linear(h * k, 2 * h, bias=False)
        self.down = nn.Linear(2 * h, h, bias=False)
        self.embed = nn.Embedding(config.vocab_size, h)
        self.decoder = nn.GRU(h, h, batch_first=True)
        self.head = nn.Linear(h, config.vocab_size)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.3)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def audio_state(self, input_features, attention_mask=None):
        x = self.encoder(input_features.transpose(1, 2).to(self.head.weight.dtype))
        batch, frames, hidden = x.shape
        k = self.config.stack
        x = x[:, : frames // k * k].reshape(batch, frames // k, hidden * k)
        x = self.down(F.silu(self.gate(x)) * self.up(x))
        return x.mean(dim=1)

    @torch.no_grad()
    def transcribe(self, input_features, attention_mask=None, max_new_tokens=32):
        state = self.audio_state(input_features, attention_mask).unsqueeze(0).contiguous()
        batch = input_features.shape[0]
        start = self.config.bos_token_id
        token = torch.full((batch, 1), start, dtype=torch.long, device=state.device)
        found = []
        for _ in range(max_new_tokens):
            out, state = self.decoder(self.embed(token), state)
            logits = self.head(out[:, -1]).float()
            if self.config.suppress_ids:
                logits[:, self.config.suppress_ids] = float("-inf")
            token = logits.argmax(dim=-1, keepdim=True)
            found.append(token)
        return torch.cat(found, dim=1)
'''

PIPELINE_CODE = '''\
from transformers import Pipeline


class TinySpeechPipeline(Pipeline):
    """automatic-speech-recognition: {"raw": array, "sampling_rate": 16000} -> {"text": ...}"""

    _load_tokenizer = True
    _load_feature_extractor = True
    _load_processor = False
    _load_image_processor = False

    def _sanitize_parameters(self, max_new_tokens=None, generate_kwargs=None, **kwargs):
        forward = {}
        if generate_kwargs and "max_new_tokens" in generate_kwargs:
            forward["max_new_tokens"] = generate_kwargs["max_new_tokens"]
        if max_new_tokens is not None:
            forward["max_new_tokens"] = max_new_tokens
        return {}, forward, {}

    def preprocess(self, inputs):
        audio = inputs["raw"] if isinstance(inputs, dict) else inputs
        features = self.feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
        return {"input_features": features["input_features"]}

    def _forward(self, model_inputs, max_new_tokens=32):
        features = model_inputs["input_features"]
        return {"ids": self.model.transcribe(features, max_new_tokens=max_new_tokens)}

    def postprocess(self, outputs):
        ids = outputs["ids"][0].tolist()
        end = self.model.config.eos_token_id
        if end in ids:
            ids = ids[: ids.index(end)]
        return {"text": self.tokenizer.decode(ids, skip_special_tokens=True)}
'''

#: The model's own code files.
CODE_FILES = {
    "configuration_tiny_speech.py": CONFIG_CODE,
    "modeling_tiny_speech.py": MODEL_CODE,
    "pipeline_tiny_speech.py": PIPELINE_CODE,
}


def build_tiny_remote(dest: Path | str, *, seed: int = 0) -> Path:
    """Build the tiny remote-code model into ``dest`` and return it (deterministic per
    ``seed``). Loading it runs its own code: only with ``trust_remote_code``."""
    import json

    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast, WhisperFeatureExtractor

    from subplug.testing.tiny_vocab import byte_level_bpe
    from subplug.testing.tiny_whisper import wordless_ids

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, code in CODE_FILES.items():
        (dest / name).write_text(code, encoding="utf-8")
    vocab, merges = byte_level_bpe(400, ["<|endoftext|>"])
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert isinstance(end, int)
    config = {
        "model_type": "subplug_tiny_speech",
        "architectures": ["TinySpeechModel"],
        "auto_map": {
            "AutoConfig": "configuration_tiny_speech.TinySpeechConfig",
            "AutoModel": "modeling_tiny_speech.TinySpeechModel",
        },
        "custom_pipelines": {
            "automatic-speech-recognition": {
                "impl": "pipeline_tiny_speech.TinySpeechPipeline",
                "pt": ["AutoModel"],
            }
        },
        "num_mel_bins": 80,
        "hidden_size": 32,
        "stack": 5,
        "vocab_size": len(tokenizer),
        "bos_token_id": end,
        "eos_token_id": end,
        "suppress_ids": sorted(set(wordless_ids(tokenizer)) - {end}),
    }
    (dest / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file(_weights(config, seed), dest / "model.safetensors", metadata={"format": "pt"})
    tokenizer.save_pretrained(dest)
    WhisperFeatureExtractor().save_pretrained(dest)
    return dest


def _weights(config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Random weights in the layout of ``modeling_tiny_speech.TinySpeechModel`` (made
    here, without importing the model's code: building it runs none of it)."""
    import torch

    h = int(config["hidden_size"])
    k = int(config["stack"])
    mels = int(config["num_mel_bins"])
    vocab = int(config["vocab_size"])
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> torch.Tensor:
        return 0.3 * torch.randn(*shape, generator=generator)

    return {
        "encoder.0.weight": normal(h, mels),
        "encoder.0.bias": torch.zeros(h),
        "encoder.2.weight": normal(h, h),
        "encoder.2.bias": torch.zeros(h),
        "gate.weight": normal(2 * h, h * k),
        "up.weight": normal(2 * h, h * k),
        "down.weight": normal(h, 2 * h),
        "embed.weight": normal(vocab, h),
        "decoder.weight_ih_l0": normal(3 * h, h),
        "decoder.weight_hh_l0": normal(3 * h, h),
        "decoder.bias_ih_l0": torch.zeros(3 * h),
        "decoder.bias_hh_l0": torch.zeros(3 * h),
        "head.weight": normal(vocab, h),
        "head.bias": torch.zeros(vocab),
    }
