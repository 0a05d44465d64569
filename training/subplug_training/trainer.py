"""One training run: check everything, read the data, train with the transformers
``Trainer``, resume after an interruption, and install the adapter into the model cache.

The run folder (``--output``, by default ``<subplug home>/training/<name>``) holds:

* ``run.json``: what the run was started with (recipe, data, base); a later command
  resumes only a run started with the same settings;
* ``data-report.json``: rows kept and dropped per source, with reasons;
* ``checkpoint-N/``: the Trainer's checkpoints (adapter, optimiser, scheduler, state);
* ``adapter/``: the finished adapter, which is then copied into the cache under the
  run's name, so ``subplug generate --model NAME`` uses it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from subplug.errors import Cancelled, SubplugError
from subplug.prompts import INSTRUCTIONS

from subplug_training.data import DataSpec, ScanResult, Source, load_audio, open_sources, ordered
from subplug_training.instructions import Sample, SamplePlan, plan_samples
from subplug_training.recipe import Recipe

RUN_FILE = "run.json"
REPORT_FILE = "data-report.json"
ADAPTER_DIR = "adapter"
#: Written into the adapter folder (and so into the cache entry): how it was made.
PROVENANCE_FILE = "subplug-training.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``subplug train`` was asked to do."""

    recipe: Recipe
    data: tuple[DataSpec, ...]
    name: str
    """Cache name the finished adapter is installed under."""
    base: str | None = None
    """Base model (cache name); ``None``: the recipe's ``model.base``."""
    output_dir: Path | None = None
    """Run folder; ``None``: ``<subplug home>/training/<name>``."""
    device: str = "auto"
    restart: bool = False
    """Start over even when the run folder has checkpoints (the old folder is kept
    beside it, renamed)."""
    force: bool = False
    """Replace a cache entry that already has ``name``."""
    install: bool = True
    """Copy the finished adapter into the model cache."""
    threads: int | None = None
    """CPU threads for torch (CPU training only)."""
    workers: int = 4
    """Threads decoding audio while the data is checked."""

    @property
    def run_dir(self) -> Path:
        if self.output_dir is not None:
            return self.output_dir.expanduser().absolute()
        from subplug.cache import subplug_home

        return subplug_home() / "training" / self.name


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    adapter_dir: Path
    cache_name: str | None
    global_step: int
    resumed_from: str | None
    train_loss: float | None
    trainable: int
    total_params: int
    samples: Mapping[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------- checking


def check_options(options: TrainOptions) -> Any:
    """Validate names, the base model, the device and the run folder before any data is
    read or model loaded; returns the resolved base (``subplug.cache.ResolvedModel``)."""
    from subplug import cache

    if not _NAME_RE.match(options.name):
        raise SubplugError(
            "invalid-model-name",
            f"{options.name!r} cannot be a model name.",
            "Use letters, digits, '.', '_' and '-', starting with a letter or digit.",
        )
    if not options.data:
        raise SubplugError(
            "no-data",
            "No training data given.",
            "Add --data KIND=PATH for each source (docs/training.md), e.g. "
            "--data mbspeech=~/data/mbspeech --data my-clips.jsonl",
        )
    if options.install and not options.force and (cache.models_dir() / options.name).exists():
        raise SubplugError(
            "model-exists",
            f"The model cache already has a model named {options.name!r}.",
            "Choose another --name, or pass --force to replace it when training ends.",
        )
    base_spec = options.base or options.recipe.base
    base = cache.resolve_model(base_spec)
    if base.is_adapter:
        raise SubplugError(
            "bad-base-model",
            f"The base model {base_spec!r} is an adapter; train on a full model.",
            "Use the base model's cache name, e.g. --base gemma-3n-e2b-it.",
        )
    if options.install and base.name is None:
        raise SubplugError(
            "base-not-in-cache",
            f"The base model {base_spec} is a folder, not a model cache entry.",
            f"Put it in the cache first: subplug models import {base_spec} --name NAME, "
            "then train with --base NAME (the adapter's cache entry refers to it).",
        )
    from subplug import runtime

    device = runtime.resolve_device(options.device)
    if device.startswith("cuda:") and device != "cuda:0":
        raise SubplugError(
            "train-device",
            f"subplug train runs on the first visible GPU, not {device}.",
            f"Make it the first one: CUDA_VISIBLE_DEVICES={device[5:]} subplug train … "
            "--device cuda",
        )
    if options.threads is not None and options.threads < 1:
        raise SubplugError("bad-threads", "--threads must be at least 1.")
    _check_run_dir(options, base)
    return base


def run_settings(options: TrainOptions, base: Any) -> dict[str, Any]:
    """The settings a run is resumed only with (written to ``run.json``)."""
    return {
        "recipe": options.recipe.to_dict(),
        "data": [{"kind": d.kind, "path": str(d.path.absolute())} for d in options.data],
        "base": base.name or str(base.path),
        "name": options.name,
    }


def _check_run_dir(options: TrainOptions, base: Any) -> None:
    folder = options.run_dir
    run_file = folder / RUN_FILE
    if options.restart or not run_file.is_file():
        return
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    wanted = run_settings(options, base)
    if previous != wanted:
        changed = sorted(
            k for k in wanted if not isinstance(previous, dict) or previous.get(k) != wanted[k]
        ) or ["run.json"]
        raise SubplugError(
            "run-mismatch",
            f"{folder} holds a run started with other settings ({', '.join(changed)}).",
            "Pass --restart to start over (the old run folder is kept, renamed), or use "
            "another --name or --output.",
        )


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint in ``run_dir`` (its ``trainer_state.json``, which
    the Trainer writes last, is present and readable), or ``None``."""
    if not run_dir.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for child in run_dir.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        if not match or not child.is_dir():
            continue
        try:
            json.loads((child / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def _incomplete_checkpoints(run_dir: Path, last: Path | None) -> list[Path]:
    newest = int(_CHECKPOINT_RE.match(last.name).group(1)) if last else -1  # type: ignore[union-attr]
    result = []
    for child in run_dir.iterdir() if run_dir.is_dir() else ():
        match = _CHECKPOINT_RE.match(child.name)
        if match and int(match.group(1)) > newest:
            result.append(child)
    return result


# -------------------------------------------------------------------------- data


def read_data(options: TrainOptions, console: Any = None) -> tuple[list[ScanResult], SamplePlan]:
    """Open every ``--data`` source, check every row and plan the samples."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from subplug_training.data import scan

    settings = options.recipe.data
    sources: list[Source] = []
    for spec in options.data:
        sources.extend(open_sources(spec, settings))
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SubplugError(
            "bad-data",
            f"The same source is given twice: {', '.join(duplicates)}.",
            "Give each source once (ted already means ted-en and ted-mn).",
        )
    results = []
    with Progress(
        TextColumn("[bold]checking data[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        disable=console is None,
    ) as progress:
        for source in ordered_sources(sources):
            total = sum(len(rows) for rows in source.splits.values())
            task = progress.add_task(source.name, total=total)

            def advance(task: Any = task) -> None:
                progress.advance(task)

            results.append(scan(source, settings, on_row=advance, workers=options.workers))
    results = ordered(results)
    plan = plan_samples(results, settings.instructions, settings.seed)
    return results, plan


def ordered_sources(sources: Sequence[Source]) -> list[Source]:
    """Sources in the seed's order (see :data:`subplug_training.data.SEED_ORDER`)."""
    from subplug_training.data import SEED_ORDER

    def rank(source: Source) -> int:
        name = "manifest" if source.name.startswith("manifest:") else source.name
        return SEED_ORDER.index(name)

    return sorted(sources, key=rank)


def data_report(results: Sequence[ScanResult], plan: SamplePlan) -> dict[str, Any]:
    """Rows kept and dropped per source, and samples per instruction (JSON-ready)."""
    return {
        "sources": [r.to_dict() for r in results],
        "samples": {"train": len(plan.train), "test": len(plan.test)},
        "instructions": {
            split: {str(k): v for k, v in plan.counts(split).items()} for split in ("train", "test")
        },
    }


def print_data_report(console: Any, results: Sequence[ScanResult], plan: SamplePlan) -> None:
    """A table of sources (rows, kept, hours, dropped) and the reasons rows were dropped."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="training data", title_justify="left")
    for column in ("source", "rows", "train", "test", "audio (h:mm:ss)", "dropped"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for result in results:
        seconds = round(sum(k.seconds for rows in result.kept.values() for k in rows))
        table.add_row(
            result.source.name,
            str(result.total),
            str(len(result.kept["train"])),
            str(len(result.kept["test"])),
            f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}",
            str(sum(result.dropped.values())),
        )
    console.print(table)
    for result in results:
        for reason, count in result.dropped.most_common():
            example = escape(", ".join(result.examples.get(reason, [])[:3]))
            console.print(
                f"  [yellow]dropped[/] {count} row(s) of {escape(result.source.name)}: "
                f"{escape(reason)} [dim](e.g. {example})[/]",
                highlight=False,
            )
    counts = plan.counts("train")
    spread = ", ".join(f"{number}: {count}" for number, count in counts.items())
    console.print(
        f"  {len(plan.train)} training and {len(plan.test)} test samples; "
        f"per instruction: {spread or 'none'}",
        highlight=False,
    )


class SampleDataset:
    """Map-style dataset for the Trainer: decodes a sample's audio when it is asked for."""

    def __init__(self, samples: Sequence[Sample], sources: Mapping[str, Source]) -> None:
        self.samples = list(samples)
        self.sources = sources

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        record = self.sources[sample.source].record(sample.row)
        return {
            "audio": load_audio(record),
            "instruction": INSTRUCTIONS[sample.instruction - 1],
            "target": sample.target,
        }


# ----------------------------------------------------------------------- training


def training_arguments(
    recipe: Recipe,
    run_dir: Path,
    *,
    device: str,
    has_eval: bool,
    steps_hint: int | None = None,
) -> Any:
    """``TrainingArguments`` from the recipe's ``[train]`` table and subplug's fixed
    settings (output folder, no column removal, our progress display)."""
    import dataclasses

    from transformers import TrainingArguments

    train = dict(recipe.train)
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    unknown = sorted(set(train) - known)
    if unknown:
        raise SubplugError(
            "bad-recipe",
            f"Recipe {recipe.source}: [train] has unknown setting(s) {', '.join(unknown)}.",
            "[train] takes the arguments of transformers.TrainingArguments.",
        )
    if train.get("bf16") == "auto":
        train["bf16"] = bf16_supported(device)
    if train.get("gradient_checkpointing") and "gradient_checkpointing_kwargs" not in train:
        train["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if "activation_checkpointing" in known:
        # transformers ≥ 5.2 renamed the seed's gradient_checkpointing settings.
        for old, new in (
            ("gradient_checkpointing", "activation_checkpointing"),
            ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
        ):
            if old in train and new not in train:
                train[new] = train.pop(old)
    if not has_eval and train.get("eval_strategy", "no") != "no":
        train["eval_strategy"] = "no"
    train.setdefault("report_to", [])
    return TrainingArguments(
        output_dir=str(run_dir),
        remove_unused_columns=False,
        disable_tqdm=True,
        use_cpu=device == "cpu",
        label_names=["labels"],
        **train,
    )


def bf16_supported(device: str) -> bool:
    """True on a CUDA device that computes in bfloat16 (the seed's setting)."""
    if not device.startswith("cuda"):
        return False
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def load_model(base_path: Path, recipe: Recipe, *, dtype: Any) -> tuple[Any, Any]:
    """The processor and the base model with a fresh LoRA adapter attached."""
    from peft import get_peft_model
    from subplug.backends.gemma3n import audio_only_model_class
    from transformers import AutoProcessor, set_seed

    from subplug_training.lora import lora_config

    processor = AutoProcessor.from_pretrained(base_path)
    processor.tokenizer.padding_side = "right"
    with _quiet():
        # Loaded on the CPU; the Trainer moves it to its device (as in the seed).
        model = audio_only_model_class().from_pretrained(base_path, dtype=dtype)
    for config in (model.config, getattr(model.config, "text_config", None)):
        if config is not None:
            config.use_cache = False  # no KV cache while training (checkpointing needs it off)
    set_seed(int(recipe.train.get("seed", 42)))
    model = get_peft_model(model, lora_config(recipe.lora))
    return processor, model


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No tqdm bars and no library-internal warnings while loading or saving weights."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*(unexpected|missing).*keys")
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def run_training(
    options: TrainOptions, *, console: Any = None, callbacks: Sequence[Any] = ()
) -> TrainResult:
    """The whole run: check, read data, train (resuming when possible), install."""
    with warnings.catch_warnings():
        # Deprecation notices from inside the libraries say nothing a user can act on.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)")
        return _run_training(options, console=console, callbacks=callbacks)


def _run_training(options: TrainOptions, *, console: Any, callbacks: Sequence[Any]) -> TrainResult:
    import torch
    from subplug import runtime
    from transformers import Trainer

    from subplug_training.collator import Collator
    from subplug_training.lora import count_parameters
    from subplug_training.progress import RichTrainingProgress

    base = check_options(options)
    device = runtime.resolve_device(options.device)
    run_dir = options.run_dir
    _say(
        console,
        f"[bold]Training {options.name}[/]: recipe {{}}, base {{}}, on {device}; run folder {{}}",
        options.recipe.name,
        base.name or base.path,
        run_dir,
    )
    if options.restart and run_dir.exists() and any(run_dir.iterdir()):
        kept = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(kept)
        _say(console, "Started over; the previous run folder is kept as {}.", kept)

    try:
        results, plan = read_data(options, console)
    except KeyboardInterrupt:
        raise Cancelled("Interrupted while checking the data; nothing was trained.") from None
    if console is not None:
        print_data_report(console, results, plan)
    if not plan.train:
        raise SubplugError(
            "no-training-data",
            "No usable training samples: every row was dropped or held out.",
            "See the dropped rows above (and data-report.json in the run folder).",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / REPORT_FILE, data_report(results, plan))
    _write_json(run_dir / RUN_FILE, run_settings(options, base))

    if device == "cpu" and options.threads:
        torch.set_num_threads(options.threads)
    args = training_arguments(options.recipe, run_dir, device=device, has_eval=bool(plan.test))
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    processor, model = load_model(Path(base.path), options.recipe, dtype=dtype)
    counts = count_parameters(model)
    _say(
        console,
        f"LoRA r={options.recipe.lora.r} on {counts.adapted_modules} modules "
        f"({counts.audio_tower_modules} in the audio tower): {counts.trainable:,} trainable "
        f"of {counts.total:,} parameters ({100 * counts.share:.2f} %)",
    )

    stopper = GracefulStop()
    sources = {result.source.name: result.source for result in results}
    collator = Collator(processor, masking=options.recipe.data.masking, feature_dtype=dtype)
    progress = RichTrainingProgress(console) if console is not None else None
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=SampleDataset(plan.train, sources),
        eval_dataset=SampleDataset(plan.test, sources) if plan.test else None,
        data_collator=collator,
        callbacks=[*([progress] if progress else []), stopper.callback(), *callbacks],
    )
    if progress is not None:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; ours prints lines
    checkpoint = None if options.restart else last_checkpoint(run_dir)
    for broken in _incomplete_checkpoints(run_dir, checkpoint):
        shutil.rmtree(broken, ignore_errors=True)
        _say(console, "Removed {}: it was cut off while being saved.", broken.name)
    if checkpoint is not None:
        _say(console, "Resuming from {} in {}.", checkpoint.name, run_dir)
    try:
        with stopper.on_ctrl_c():
            output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if stopper.requested and trainer.state.global_step < trainer.state.max_steps:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        saved = last_checkpoint(run_dir)
        where = f"the last checkpoint is {saved.name}" if saved else "no checkpoint was saved yet"
        raise Cancelled(
            f"Training interrupted at step {trainer.state.global_step}; {where} ({run_dir})."
        ) from None
    finally:
        if progress is not None:
            progress.close()

    adapter_dir = run_dir / ADAPTER_DIR
    save_adapter(model, adapter_dir, base, options, plan, trainer.state)
    cache_name = None
    if options.install:
        from subplug import cache

        cache.add_model(
            options.name,
            adapter_dir,
            kind="adapter",
            base=base.name,
            force=options.force,
            source=f"training:{run_dir}",
        )
        cache_name = options.name
        _say(console, f"Installed the adapter as [bold]{options.name}[/] in the model cache.")
    return TrainResult(
        run_dir=run_dir,
        adapter_dir=adapter_dir,
        cache_name=cache_name,
        global_step=trainer.state.global_step,
        resumed_from=checkpoint.name if checkpoint else None,
        train_loss=getattr(output, "training_loss", None),
        trainable=counts.trainable,
        total_params=counts.total,
        samples={"train": len(plan.train), "test": len(plan.test)},
    )


class GracefulStop:
    """Ctrl-C during training: the first one lets the current step finish, saves a
    checkpoint there and stops (nothing is lost); a second one stops at once.

    Only a flag is set from the signal handler, so the request cannot be lost wherever
    the main thread happens to be (a KeyboardInterrupt raised inside a finaliser is
    swallowed by Python)."""

    def __init__(self) -> None:
        self.requested = False

    def callback(self) -> Any:
        from transformers import TrainerCallback

        stop = self

        class _StopAfterStep(TrainerCallback):  # type: ignore[misc]
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
                if stop.requested:
                    control.should_save = True
                    control.should_training_stop = True
                return control

        return _StopAfterStep()

    @contextlib.contextmanager
    def on_ctrl_c(self) -> Iterator[None]:
        """Handle SIGINT as above while training (main thread only; a SIGINT set to be
        ignored, as for a job started in the background, stays ignored)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous == signal.SIG_IGN:
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            sys.stderr.write(
                "\nStopping after this step and saving a checkpoint (Ctrl-C again to stop "
                "at once)...\n"
            )
            sys.stderr.flush()

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def save_adapter(
    model: Any, folder: Path, base: Any, options: TrainOptions, plan: SamplePlan, state: Any
) -> Path:
    """Write the adapter (peft layout) and how it was made into ``folder``.

    ``base_model_name_or_path`` names the base as the cache knows it: its Hub repository
    when it was pulled or imported from one, else its cache name."""
    if folder.exists():
        shutil.rmtree(folder)
    with _quiet():
        model.save_pretrained(str(folder))
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    manifest = getattr(base, "manifest", None)
    config["base_model_name_or_path"] = (manifest.repo_id if manifest else None) or base.name
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    _write_json(
        folder / PROVENANCE_FILE,
        {
            "recipe": options.recipe.to_dict(),
            "base": base.name,
            "data": [d.label for d in options.data],
            "samples": {"train": len(plan.train), "test": len(plan.test)},
            "instructions": {str(k): v for k, v in plan.counts("train").items()},
            "global_step": state.global_step,
            "log_history": state.log_history[-20:],
        },
    )
    return folder


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _say(console: Any, text: str, *paths: Any) -> None:
    """Print ``text`` (rich markup) with ``{}`` filled by ``paths`` as plain text."""
    if console is not None:
        from rich.markup import escape

        console.print(text.format(*(escape(str(p)) for p in paths)), highlight=False)
