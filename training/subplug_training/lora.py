"""The LoRA adapter: which modules it targets, its configuration, parameter counts.

The seed listed the seven projection names (``q_proj`` … ``down_proj``); peft matches a
plain name list against every module, so it also hit the audio tower's attention
projections (36 modules in E2B). The default here targets the language model only,
with a regex; ``targets = "seed"`` restores the plain list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from subplug_training.recipe import LoraSettings

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: The language model's seven projections (the default target).
LANGUAGE_MODEL_TARGETS = r".*language_model.*\.(" + "|".join(PROJECTIONS) + ")"


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters of a model with a LoRA adapter attached."""

    trainable: int
    total: int
    adapted_modules: int
    """Modules that received a LoRA pair."""
    audio_tower_modules: int
    """Of those, modules inside the audio tower."""

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def target_modules(settings: LoraSettings) -> str | list[str]:
    """peft's ``target_modules`` for the recipe's ``lora.targets``."""
    if settings.targets == "seed":
        return list(PROJECTIONS)
    return LANGUAGE_MODEL_TARGETS


def lora_config(settings: LoraSettings) -> Any:
    """The peft ``LoraConfig`` of a recipe (task ``CAUSAL_LM``)."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        bias=settings.bias,  # type: ignore[arg-type]
        target_modules=target_modules(settings),
        use_rslora=False,
        use_dora=False,
        modules_to_save=None,
    )


def count_parameters(model: Any) -> ParameterCounts:
    """Trainable and total parameters of a peft model, and where the LoRA pairs are."""
    trainable = total = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    adapted = audio = 0
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and getattr(module, "lora_A", None):
            adapted += 1
            if "audio_tower" in name:
                audio += 1
    return ParameterCounts(trainable, total, adapted, audio)
