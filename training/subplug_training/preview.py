"""``subplug train --print-recipe`` and ``--dry-run``: a run described before it starts.

``--print-recipe`` prints the recipe with every value this run would use (``--set``,
``--instructions``, ``--masking`` and ``--lora-targets`` applied; ``bf16 = "auto"``
resolved for the device; the settings subplug adds), as TOML that reads back as a recipe.
``--dry-run`` adds the data (read and checked as for training: the report table), the
effective batch over the processes and the optimiser steps, then stops. Neither loads
a model, writes anything or needs ``--name``.
"""

from __future__ import annotations

from typing import Any

from subplug_training.batch import optimiser_steps, plan_batch, recipe_batch
from subplug_training.distributed import launched_processes
from subplug_training.recipe import Recipe, recipe_toml, toml_value
from subplug_training.trainer import TrainOptions, train_settings

#: Process counts the dry run shows the batch for, besides the current one.
SHOWN_PROCESSES = (1, 2, 4, 8)


def resolved_recipe(recipe: Recipe, device: str, *, has_eval: bool = True) -> str:
    """The recipe as TOML with the values a run on ``device`` uses (one process); it
    reads back as a recipe (subplug's own settings are in a comment)."""
    data = recipe.to_dict()
    train = train_settings(recipe, device=device, has_eval=has_eval)
    header = (
        f"# recipe {recipe.name} ({recipe.source}) as a run on {device} uses it.\n"
        "# [train] goes to transformers.TrainingArguments, with subplug's own settings:\n"
        "# output_dir = the run folder, remove_unused_columns = false, disable_tqdm = true,\n"
        f'# label_names = ["labels"], use_cpu = {toml_value(device == "cpu")}; the batch is '
        "split over\n# the processes of a launch (--dry-run shows how).\n"
    )
    return header + recipe_toml(
        {"model": data["model"], "data": data["data"], "lora": data["lora"], "train": train}
    )


def print_recipe(options: TrainOptions) -> None:
    """``--print-recipe``: the resolved recipe on stdout."""
    from subplug import runtime

    device = runtime.resolve_device(options.device)
    print(resolved_recipe(options.recipe, device), end="")


def dry_run(options: TrainOptions, console: Any) -> None:
    """``--dry-run``: the resolved recipe (on stdout), then the data report, the batch
    and the steps (on ``console``)."""
    from rich.markup import escape
    from subplug import runtime

    from subplug_training.data_check import print_data_report, read_data, require_training_data

    device = runtime.resolve_device(options.device)
    results, plan = read_data(options.data, options.recipe.data, console, workers=options.workers)
    print(resolved_recipe(options.recipe, device, has_eval=bool(plan.test)), end="", flush=True)
    print_data_report(console, results, plan)
    require_training_data(results, plan)
    train = options.recipe.train
    per_device, accumulation = recipe_batch(train)
    epochs = float(train.get("num_train_epochs", 3.0))
    max_steps = int(train.get("max_steps", -1))
    now = launched_processes()
    for count in sorted({now, *SHOWN_PROCESSES}):
        batch = plan_batch(per_device, accumulation, count)
        steps = optimiser_steps(len(plan.train), batch, epochs=epochs, max_steps=max_steps)
        mark = "this launch: " if count == now else ""
        console.print(f"  {mark}{batch.describe()}; {steps:,} steps", highlight=False)
    batch = plan_batch(per_device, accumulation, now)
    steps = optimiser_steps(len(plan.train), batch, epochs=epochs, max_steps=max_steps)
    save = int(train.get("save_steps", 500))
    evaluation = train.get("eval_strategy", "no") != "no" and bool(plan.test)
    parts = [
        f"{len(plan.train):,} training samples",
        f"{'max_steps' if max_steps > 0 else f'{epochs:g} epoch(s)'} → {steps:,} steps",
        f"a checkpoint every {save} steps ({steps // save if save else 0})",
    ]
    if evaluation:
        parts.append(f"evaluation every {int(train.get('eval_steps', save))} steps")
    console.print("  " + "; ".join(parts) + ".", highlight=False)
    if options.name:
        from subplug_training.run_folder import finished_run, last_checkpoint

        run_dir = options.run_dir
        if finished_run(run_dir) is not None and not options.restart:
            state = "has finished: a rerun only installs its adapter"
        elif (checkpoint := last_checkpoint(run_dir)) is not None and not options.restart:
            state = f"would resume from {checkpoint.name}"
        else:
            state = "would start a new run"
        console.print(f"  run folder {escape(str(run_dir))}: {state}.", highlight=False)
    console.print("Dry run: nothing was trained or written.", highlight=False)
