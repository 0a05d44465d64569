"""The packaged recipe is the seed's, recipes extend and override cleanly, and the LoRA
targets are what the recipe says."""

from __future__ import annotations

from pathlib import Path

import pytest
from subplug.errors import SubplugError
from subplug_training.recipe import load_recipe, packaged_recipes


def test_packaged_recipe_is_the_seeds() -> None:
    assert "gemma3n-en-mn" in packaged_recipes()
    recipe = load_recipe("gemma3n-en-mn")
    assert recipe.base == "gemma-3n-e2b-it"
    assert (recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout, recipe.lora.bias) == (
        32,
        64,
        0.0,
        "none",
    )
    assert recipe.data.holdout == 0.1 and recipe.data.seed == 42
    assert recipe.data.instructions == "seed"
    # The two fixes are on by default; both can be turned back to the seed's behaviour.
    assert recipe.data.masking == "completion" and recipe.lora.targets == "language-model"
    assert dict(recipe.train) == {
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "gradient_accumulation_steps": 8,
        "learning_rate": 2e-4,
        "num_train_epochs": 2.0,
        "bf16": "auto",
        "gradient_checkpointing": True,
        "eval_strategy": "steps",
        "eval_steps": 300,
        "save_steps": 100,
        "logging_steps": 10,
        "seed": 42,
        "report_to": [],
    }


def test_training_arguments_from_the_recipe(tmp_path: Path) -> None:
    from subplug_training.trainer import training_arguments

    args = training_arguments(load_recipe(), tmp_path, device="cpu", has_eval=True)
    assert args.per_device_train_batch_size == 2 and args.gradient_accumulation_steps == 8
    assert args.learning_rate == 2e-4 and args.num_train_epochs == 2.0
    assert args.eval_steps == 300 and args.save_steps == 100 and args.logging_steps == 10
    assert args.gradient_checkpointing and args.gradient_checkpointing_kwargs == {
        "use_reentrant": False
    }
    assert args.eval_strategy == "steps" and args.seed == 42
    assert args.remove_unused_columns is False
    assert args.bf16 is False  # "auto" on a CPU: float32
    assert args.output_dir == str(tmp_path)
    no_eval = training_arguments(load_recipe(), tmp_path, device="cpu", has_eval=False)
    assert no_eval.eval_strategy == "no"


def test_extends_and_overrides(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text(
        'extends = "gemma3n-en-mn"\n[train]\nlearning_rate = 1e-4\n[data]\nmasking = "seed"\n',
        encoding="utf-8",
    )
    recipe = load_recipe(
        str(mine), ["train.max_steps=50", "data.instructions=[8, 9]", "lora.targets=seed"]
    )
    assert recipe.name == "mine" and recipe.source == str(mine.absolute())
    assert recipe.train["learning_rate"] == 1e-4 and recipe.train["max_steps"] == 50
    assert recipe.train["gradient_accumulation_steps"] == 8  # inherited
    assert recipe.data.masking == "seed" and recipe.data.instructions == (8, 9)
    assert recipe.lora.targets == "seed"
    child = tmp_path / "child.toml"
    child.write_text('extends = "mine.toml"\n[lora]\nr = 8\n', encoding="utf-8")
    assert load_recipe(str(child)).lora.r == 8
    assert load_recipe(str(child)).data.masking == "seed"


@pytest.mark.parametrize(
    ("text", "overrides", "reference", "words"),
    [
        ("[train]\noutput_dir = 'x'\n", [], "bad-recipe", "output_dir"),
        ("[data]\nholdout = 1.5\n", [], "bad-recipe", "holdout"),
        ("[data]\nmasking = 'prompt'\n", [], "bad-recipe", "masking"),
        ("[lora]\nrank = 8\n", [], "bad-recipe", "rank"),
        ("[data]\ninstructions = [0, 12]\n", [], "bad-instructions", "instruction"),
        ("epochs = 3\n", [], "bad-recipe", "epochs"),
        ("[model\n", [], "bad-recipe", "TOML"),
        ("", ["learning_rate=1e-3"], "bad-override", "SECTION.KEY=VALUE"),
        ("", ["optim.lr=1e-3"], "bad-override", "optim"),
        ('extends = "loop.toml"\n', [], "bad-recipe", "loop"),
    ],
)
def test_bad_recipes_are_one_clear_error(
    tmp_path: Path, text: str, overrides: list[str], reference: str, words: str
) -> None:
    path = tmp_path / "loop.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SubplugError) as error:
        load_recipe(str(path), overrides)
    assert error.value.reference == reference
    assert words in error.value.message + (error.value.hint or "")


def test_unknown_training_argument_is_named(tmp_path: Path) -> None:
    from subplug_training.trainer import training_arguments

    recipe = load_recipe(None, ["train.learning_rat=1e-3"])
    with pytest.raises(SubplugError) as error:
        training_arguments(recipe, tmp_path, device="cpu", has_eval=False)
    assert error.value.reference == "bad-recipe" and "learning_rat" in error.value.message


def test_missing_recipe_names_the_packaged_ones() -> None:
    with pytest.raises(SubplugError) as error:
        load_recipe("gemma3n-en-mm")
    assert error.value.reference == "recipe-not-found"
    assert "gemma3n-en-mn" in (error.value.hint or "")


def test_lora_targets_language_model_or_seed_list(tiny_model_dir: Path) -> None:
    import torch
    from peft import get_peft_model
    from subplug.backends.gemma3n import audio_only_model_class
    from subplug_training.lora import count_parameters, lora_config

    counts = {}
    for targets in ("language-model", "seed"):
        model = audio_only_model_class().from_pretrained(tiny_model_dir, dtype=torch.float32)
        settings = load_recipe(None, [f'lora.targets="{targets}"']).lora
        counts[targets] = count_parameters(get_peft_model(model, lora_config(settings)))
    language, seed = counts["language-model"], counts["seed"]
    # The tiny model: 4 layers x 7 projections, minus k/v of its 2 KV-shared layers.
    assert language.adapted_modules == 24 and language.audio_tower_modules == 0
    # The seed's plain list also hits the audio tower's attention projections.
    assert seed.audio_tower_modules > 0
    assert seed.adapted_modules == 24 + seed.audio_tower_modules
    assert seed.trainable > language.trainable > 0
    assert seed.total - seed.trainable == language.total - language.trainable
