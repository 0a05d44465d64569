"""``subplug train`` and ``subplug eval``: argument parsing and the command runs.

Building the parsers imports nothing heavy; torch, transformers and datasets are
imported when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from subplug.commands.arguments import add_translator_arguments
from subplug.errors import SubplugError

from subplug_training.recipe import (
    DEFAULT_RECIPE,
    LORA_TARGET_MODES,
    MASKING_MODES,
    parse_instruction_list,
)
from subplug_training.run_folder import KEEP_CHOICES

TRAIN_HELP = "train an EN/MN LoRA adapter and install it into the model cache"
EVAL_HELP = (
    "score models on held-out data: WER/CER and BLEU/chrF++ per language and instruction, "
    "real-time factor and peak memory, one table for all models"
)


def _console() -> Any:
    from rich.console import Console

    console = Console(stderr=True, highlight=False, emoji=False)
    # In a log file or a pipe a line is one line, whatever its length (grep finds it).
    console.soft_wrap = not console.is_terminal
    return console


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KIND=PATH",
        help="a data source: mbspeech, ted, ted-en, ted-mn, common-voice or manifest, "
        "=its local folder (or file); repeat for each source; a .jsonl path is a manifest",
    )


# ------------------------------------------------------------------------- train


def setup_train(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``subplug train``."""
    parser.add_argument(
        "--recipe",
        default=DEFAULT_RECIPE,
        metavar="NAME|FILE",
        help=f"packaged recipe name or .toml file (default: {DEFAULT_RECIPE})",
    )
    _data_args(parser)
    parser.add_argument(
        "--name",
        default=None,
        metavar="NAME",
        help="cache name for the finished adapter (then: subplug generate --model NAME); "
        "not needed with --check-data, --dry-run or --print-recipe",
    )
    parser.add_argument(
        "--base", default=None, metavar="NAME", help="base model in the cache (default: recipe's)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="DIR",
        help="run folder for checkpoints (default: <subplug home>/training/NAME)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change one recipe value, e.g. --set train.learning_rate=1e-4 (repeatable)",
    )
    parser.add_argument(
        "--instructions",
        default=None,
        metavar="seed|N,N…",
        help="seed: one drawn instruction per sample; or numbers: each sample gets every "
        "listed instruction it allows (1,6,7 = what generate asks in auto mode)",
    )
    parser.add_argument(
        "--masking", choices=MASKING_MODES, default=None, help="label masking (recipe default)"
    )
    parser.add_argument(
        "--lora-targets",
        choices=LORA_TARGET_MODES,
        default=None,
        help="language-model, or seed (also adapts the audio tower) (recipe default)",
    )
    parser.add_argument(
        "--device", default="auto", metavar="DEVICE", help="auto, cuda, cuda:N or cpu"
    )
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start over instead of resuming (the old run folder is kept, renamed)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace a cache entry of the same name"
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="leave the adapter in the run folder; do not add it to the model cache",
    )
    parser.add_argument(
        "--keep-checkpoints",
        choices=KEEP_CHOICES,
        default="last",
        help="after a finished run, keep the last and the best checkpoint (default) or all",
    )
    parser.add_argument(
        "--check-data",
        action="store_true",
        help="only read and check the data, print the report, and stop",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved recipe, the data report, the effective batch and the "
        "steps, and stop (loads no model, writes nothing)",
    )
    parser.add_argument(
        "--print-recipe",
        action="store_true",
        help="print the recipe with the values this run would use (as TOML) and stop",
    )


def _train_options(args: argparse.Namespace) -> Any:
    from subplug_training.data import parse_data_spec
    from subplug_training.recipe import load_recipe
    from subplug_training.trainer import TrainOptions

    overrides = list(args.overrides)
    if args.instructions is not None:
        value = args.instructions.strip()
        value = '"seed"' if value == "seed" else str(list(parse_instruction_list(value)))
        overrides.append(f"data.instructions={value}")
    if args.masking is not None:
        overrides.append(f'data.masking="{args.masking}"')
    if args.lora_targets is not None:
        overrides.append(f'lora.targets="{args.lora_targets}"')
    recipe = load_recipe(args.recipe, overrides)
    data = tuple(parse_data_spec(text) for text in args.data)
    return TrainOptions(
        recipe=recipe,
        data=data,
        name=args.name or "",
        base=args.base,
        output_dir=args.output,
        device=args.device,
        restart=args.restart,
        force=args.force,
        install=not args.no_install,
        threads=args.threads,
        keep_checkpoints=args.keep_checkpoints,
    )


def run_train(args: argparse.Namespace) -> int:
    """``subplug train``: returns the exit code."""
    from subplug_training.extras import require_extras

    require_extras("train", ("datasets", "accelerate"))
    options = _train_options(args)
    if args.check_data or args.dry_run or args.print_recipe:
        from subplug_training.distributed import launched_rank

        if launched_rank() != 0:
            return 0  # started by a launcher: the main process answers
        return _look(args, options)

    from subplug_training.distributed import MainProcessFailed
    from subplug_training.trainer import run_training

    try:
        result = run_training(options, console=_console())
    except MainProcessFailed as failed:
        return failed.exit_code  # another process of the run; the main one said why
    if result.main_process:
        print(f"adapter: {result.adapter_dir}")
        if result.cache_name:
            print(f"use it:  subplug generate --model {result.cache_name} MEDIA")
    return 0


def _look(args: argparse.Namespace, options: Any) -> int:
    """``--print-recipe``, ``--dry-run`` and ``--check-data``: describe, never train."""
    from subplug_training import preview

    if args.print_recipe:
        preview.print_recipe(options)
        return 0
    if not options.data:
        raise SubplugError("no-data", "No data given to check.", "Add --data KIND=PATH.")
    console = _console()
    if args.dry_run:
        preview.dry_run(options, console)
        return 0
    from subplug_training.data_check import print_data_report, read_data, require_training_data

    results, plan = read_data(options.data, options.recipe.data, console, workers=options.workers)
    print_data_report(console, results, plan)
    require_training_data(results, plan)
    return 0


# -------------------------------------------------------------------------- eval


def setup_eval(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``subplug eval``."""
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="NAME|PATH",
        help="model to score (cache name or folder); repeat it to compare models on the "
        "same samples",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        metavar="NAME",
        help="backend of every model; auto: each model's own (default: auto)",
    )
    add_translator_arguments(parser)
    _data_args(parser)
    parser.add_argument(
        "--split",
        choices=["test", "train", "all"],
        default="test",
        help="which rows to score (default: the held-out test rows)",
    )
    parser.add_argument(
        "--instructions",
        default="assigned",
        metavar="assigned|N,N…",
        help="assigned: each row with the instruction the seed's rule gives it (default); "
        "or numbers: each row with every listed instruction it allows",
    )
    parser.add_argument(
        "--recipe",
        default=DEFAULT_RECIPE,
        metavar="NAME|FILE",
        help="recipe whose [data] settings (holdout, seed, clip lengths) define the split",
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="score at most N samples"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="folder for eval-report.json and eval-report.md (default: here)",
    )
    parser.add_argument(
        "--device", default="auto", metavar="DEVICE", help="auto, cuda, cuda:N or cpu"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, metavar="N", help="samples per model call"
    )
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="score held-out samples even when a model was trained on them",
    )


def run_eval(args: argparse.Namespace) -> int:
    """``subplug eval``: returns the exit code."""
    from subplug_training.extras import require_extras

    require_extras("eval", ("datasets", "jiwer", "sacrebleu"))
    from subplug_training.evaluation import EvalOptions, run_evaluation

    if not args.models:
        raise SubplugError(
            "no-model",
            "Name the model to score with --model.",
            "For example: subplug eval --model my-en-mn --data ted=~/data/ted "
            "(add a second --model gemma3n-en-mn to compare).",
        )
    if args.limit is not None and args.limit < 1:
        raise SubplugError("bad-limit", "--limit must be at least 1.")
    from subplug_training.data import parse_data_spec
    from subplug_training.recipe import load_recipe

    instructions: str | tuple[int, ...] = args.instructions.strip()
    if instructions != "assigned":
        instructions = parse_instruction_list(str(instructions))
    options = EvalOptions(
        models=tuple(args.models),
        data=tuple(parse_data_spec(text) for text in args.data),
        settings=load_recipe(args.recipe).data,
        split=args.split,
        instructions=instructions,
        limit=args.limit,
        out_dir=args.out,
        device=args.device,
        batch_size=args.batch_size,
        allow_overlap=args.allow_overlap,
        backend=args.backend,
        translator=args.translator,
        trust_remote_code=args.trust_remote_code,
    )
    report = run_evaluation(options, console=_console())
    print(report.markdown)
    for path in report.paths:
        print(f"wrote {path}")
    return 0
