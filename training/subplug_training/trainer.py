"""One training run: check everything, read the data, train with the transformers
``Trainer`` (in one process or several), resume after an interruption, and install the
adapter into the model cache.

A run in several processes (``torchrun``, ``accelerate launch``; see
:mod:`subplug_training.distributed`) trains one adapter together: the main process checks
the options and the data, writes the run folder (:mod:`subplug_training.run_folder`) and
installs the adapter, while the others wait for it and take its plan; all of them train,
each on its share of every batch, and stop together after the same step when
interrupted. The recipe's effective batch is kept whatever the number of processes
(:mod:`subplug_training.batch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
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

from subplug_training import distributed
from subplug_training.batch import BatchPlan, plan_batch, recipe_batch
from subplug_training.data import DataSpec, Source, load_audio
from subplug_training.distributed import MainProcessFailed, Processes
from subplug_training.instructions import Sample, SamplePlan
from subplug_training.recipe import Recipe
from subplug_training.run_folder import (
    ADAPTER_DIR,
    KEEP_CHOICES,
    PROVENANCE_FILE,
    REPORT_FILE,
    RUN_FILE,
    finished_run,
    incomplete_checkpoints,
    last_checkpoint,
    prune_checkpoints,
    read_json,
    settings_changes,
    write_json,
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


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
    """CPU threads for torch (CPU training only; per process)."""
    workers: int = 4
    """Threads decoding audio while the data is checked."""
    keep_checkpoints: str = "last"
    """After a finished run: ``last`` keeps the last checkpoint and the best one (by
    evaluation loss); ``all`` keeps every checkpoint."""

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
    already_finished: bool = False
    """The run folder held a finished run: nothing was trained this time."""
    kept_checkpoints: tuple[str, ...] = ()
    processes: int = 1
    main_process: bool = True
    """False in the other processes of a multi-process run (they print nothing)."""


@dataclass(frozen=True)
class _Prepared:
    """What the main process hands to the others before training (picklable)."""

    base: str
    """The base model as the cache resolves it (name, or folder)."""
    plan: SamplePlan | None
    checkpoint: str | None
    """Checkpoint folder to resume from."""
    finished: Mapping[str, Any] | None
    """The provenance of a run that had finished already."""
    installed: bool
    """The finished run's adapter is the cache entry ``name`` already."""


# --------------------------------------------------------------------- checking


def check_options(options: TrainOptions, *, installed_here: bool = False) -> Any:
    """Validate names, the base model, the device and the run folder before any data is
    read or model loaded; returns the resolved base (``subplug.cache.ResolvedModel``).

    ``installed_here``: the cache entry ``name`` is this run folder's finished adapter
    (a rerun of a finished command), which is not a name clash."""
    from subplug import cache

    if not options.name:
        raise SubplugError(
            "no-name",
            "Name the adapter to train with --name NAME.",
            "It becomes its model cache name: subplug generate --model NAME. "
            "(--check-data, --dry-run and --print-recipe need no name.)",
        )
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
    if options.keep_checkpoints not in KEEP_CHOICES:
        raise SubplugError("bad-option", f"--keep-checkpoints takes {' or '.join(KEEP_CHOICES)}.")
    if (
        options.install
        and not options.force
        and not installed_here
        and (cache.models_dir() / options.name).exists()
    ):
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
            "--device cuda. For several GPUs start one process per GPU with torchrun "
            "(docs/training.md, 'Several GPUs').",
        )
    if options.threads is not None and options.threads < 1:
        raise SubplugError("bad-threads", "--threads must be at least 1.")
    _check_run_dir(options, base)
    return base


def run_settings(options: TrainOptions, base: Any) -> dict[str, Any]:
    """The settings a run is resumed only with (written to ``run.json``)."""
    return {
        "recipe": options.recipe.to_dict(),
        "data": data_sources(options.data),
        "base": base.name or str(base.path),
        "name": options.name,
    }


def data_sources(specs: Sequence[DataSpec]) -> list[dict[str, str]]:
    """The ``--data`` arguments with absolute paths (``run.json``, adapter metadata)."""
    return [{"kind": d.kind, "path": str(d.path.absolute())} for d in specs]


def _check_run_dir(options: TrainOptions, base: Any) -> None:
    folder = options.run_dir
    run_file = folder / RUN_FILE
    if options.restart or not run_file.is_file():
        return
    previous = read_json(run_file)
    wanted = run_settings(options, base)
    if previous != wanted:
        changes = settings_changes(previous, wanted) if isinstance(previous, dict) else []
        shown = "; ".join(changes[:3]) or "run.json is unreadable"
        if len(changes) > 3:
            shown += f"; and {len(changes) - 3} more"
        raise SubplugError(
            "run-mismatch",
            f"{folder} holds a run started with other settings ({shown}).",
            "Run it with the settings it was started with to resume it, pass --restart to "
            "start over (the old run folder is kept, renamed), or use another --name or "
            "--output.",
        )


def _installed_from(name: str, run_dir: Path) -> bool:
    """Is the cache entry ``name`` the adapter installed from ``run_dir``?"""
    from subplug import cache

    try:
        resolved = cache.resolve_model(name)
    except SubplugError:
        return False
    manifest = resolved.manifest
    return manifest is not None and manifest.source == f"training:{run_dir}"


# ----------------------------------------------------------------------- samples


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


def train_settings(
    recipe: Recipe, *, device: str, has_eval: bool, batch: BatchPlan | None = None
) -> dict[str, Any]:
    """The recipe's ``[train]`` table as this run passes it to ``TrainingArguments``:
    ``bf16 = "auto"`` resolved for ``device``, gradient checkpointing under the name the
    installed transformers uses, no evaluation without held-out samples, the batch split
    over the processes (``batch``), and the data-parallel settings LoRA on Gemma 3n
    needs (every adapted parameter is used in every step, so DDP need not search for
    unused ones: ``ddp_find_unused_parameters = false``)."""
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
    if batch is not None:
        train["per_device_train_batch_size"] = batch.per_device
        train["gradient_accumulation_steps"] = batch.accumulation
    train.setdefault("ddp_find_unused_parameters", False)
    train.setdefault("report_to", [])
    return train


def training_arguments(
    recipe: Recipe,
    run_dir: Path,
    *,
    device: str,
    has_eval: bool,
    batch: BatchPlan | None = None,
) -> Any:
    """``TrainingArguments`` from :func:`train_settings` and subplug's fixed settings
    (output folder, no column removal, our progress display)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(run_dir),
        remove_unused_columns=False,
        disable_tqdm=True,
        use_cpu=device == "cpu",
        label_names=["labels"],
        **train_settings(recipe, device=device, has_eval=has_eval, batch=batch),
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
    """The whole run: check, read data, train (resuming when possible), install.

    In a multi-process run every process calls this; only the main one prints (on
    ``console``) and installs, and only its :class:`TrainResult` has
    ``main_process=True``. The others raise :class:`MainProcessFailed` when the main
    one fails."""
    with warnings.catch_warnings():
        # Deprecation notices from inside the libraries say nothing a user can act on.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)")
        from subplug import runtime

        try:
            device = runtime.resolve_device(options.device)
            processes = distributed.start(
                device, timeout_s=float(options.recipe.train.get("ddp_timeout", 1800))
            )
        except SubplugError as error:
            if distributed.launched_rank() != 0:
                # Every process meets this error the same way; the main one says it.
                raise MainProcessFailed(error.exit_code) from None
            raise
        try:
            return _run(options, device, processes, console, callbacks)
        finally:
            processes.close()


def _run(
    options: TrainOptions,
    device: str,
    processes: Processes,
    console: Any,
    callbacks: Sequence[Any],
) -> TrainResult:
    import torch
    from transformers import Trainer

    from subplug_training.collator import Collator
    from subplug_training.lora import count_parameters
    from subplug_training.progress import training_progress

    if not processes.is_main:
        console = None
        distributed.quiet_replica()
    mine: dict[str, Any] = {}  # the main process's own base and sources
    prepared = processes.share(lambda: _prepare(options, device, processes, console, mine))
    base, sources = mine.get("base"), mine.get("sources")
    if not processes.is_main:
        base, sources = _follow(options, prepared, processes)
    run_dir = options.run_dir
    if prepared.finished is not None:
        done = processes.share(lambda: _finish_finished(options, base, prepared, console))
        return done if processes.is_main else dataclasses.replace(done, main_process=False)
    plan = prepared.plan
    assert plan is not None and sources is not None and base is not None

    if device == "cpu" and options.threads:
        torch.set_num_threads(options.threads)
    recipe = options.recipe
    args = training_arguments(recipe, run_dir, device=device, has_eval=bool(plan.test))
    batch = plan_batch(*recipe_batch(recipe.train), max(1, args.world_size) * max(1, args.n_gpu))
    if batch.adjusted:
        args = training_arguments(
            recipe, run_dir, device=device, has_eval=bool(plan.test), batch=batch
        )
    _say(console, batch.describe())
    if args.n_gpu > 1:
        _say(
            console,
            f"[yellow]note[/] {args.n_gpu} GPUs in one process train with DataParallel; "
            f"one process per GPU is faster: torchrun --nproc_per_node {args.n_gpu} -m "
            "subplug train … (docs/training.md, 'Several GPUs').",
        )
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    processor, model = load_model(Path(base.path), recipe, dtype=dtype)
    counts = count_parameters(model)
    _say(
        console,
        f"LoRA r={recipe.lora.r} on {counts.adapted_modules} modules "
        f"({counts.audio_tower_modules} in the audio tower): {counts.trainable:,} trainable "
        f"of {counts.total:,} parameters ({100 * counts.share:.2f} %)",
    )

    stopper = GracefulStop(processes)
    collator = Collator(processor, masking=recipe.data.masking, feature_dtype=dtype)
    progress = training_progress(console) if console is not None else None
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=SampleDataset(plan.train, sources),
        eval_dataset=SampleDataset(plan.test, sources) if plan.test else None,
        data_collator=collator,
        callbacks=[*([progress] if progress else []), stopper.callback(), *callbacks],
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; ours prints lines
    checkpoint = run_dir / prepared.checkpoint if prepared.checkpoint else None
    try:
        with stopper.on_ctrl_c():
            output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if stopper.stopped and trainer.state.global_step < trainer.state.max_steps:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        if stopper.stopped:
            processes.barrier()  # every process has written its part of the checkpoint
        if not processes.is_main:
            raise MainProcessFailed(130) from None
        saved = last_checkpoint(run_dir)
        where = f"the last checkpoint is {saved.name}" if saved else "no checkpoint was saved yet"
        raise Cancelled(
            f"Training interrupted at step {trainer.state.global_step}; {where} ({run_dir})."
        ) from None
    finally:
        if progress is not None:
            progress.close()

    made = {
        "data_sources": data_sources(options.data),
        "parameters": {"trainable": counts.trainable, "total": counts.total},
        "processes": processes.count,
        "batch": {
            "per_device": batch.per_device,
            "accumulation": batch.accumulation,
            "replicas": batch.replicas,
            "effective": batch.effective,
        },
    }

    def finish() -> TrainResult:
        adapter_dir = run_dir / ADAPTER_DIR
        save_adapter(model, adapter_dir, base, options, plan, trainer.state, made=made)
        cache_name = _install(options, adapter_dir, base, console) if options.install else None
        kept = _prune(options, trainer.state, console)
        return TrainResult(
            run_dir=run_dir,
            adapter_dir=adapter_dir,
            cache_name=cache_name,
            global_step=trainer.state.global_step,
            resumed_from=prepared.checkpoint,
            train_loss=getattr(output, "training_loss", None),
            trainable=counts.trainable,
            total_params=counts.total,
            samples={"train": len(plan.train), "test": len(plan.test)},
            kept_checkpoints=kept,
            processes=processes.count,
        )

    result = processes.share(finish)
    return result if processes.is_main else dataclasses.replace(result, main_process=False)


def _prepare(
    options: TrainOptions,
    device: str,
    processes: Processes,
    console: Any,
    mine: dict[str, Any],
) -> _Prepared:
    """The main process's work before training: check, read the data, write the run
    folder's files, find the checkpoint to resume from."""
    from subplug_training.data_check import (
        data_report,
        print_data_report,
        read_data,
        require_training_data,
    )

    run_dir = options.run_dir
    finished = None if options.restart else finished_run(run_dir)
    installed = bool(finished and options.install and _installed_from(options.name, run_dir))
    base = check_options(options, installed_here=installed)
    mine["base"] = base
    where = device if processes.count == 1 else f"{device}, {processes.describe()}"
    _say(
        console,
        f"[bold]Training {options.name}[/]: recipe {{}}, base {{}}, on {where}; run folder {{}}",
        options.recipe.name,
        base.name or base.path,
        run_dir,
    )
    if options.restart and run_dir.exists() and any(run_dir.iterdir()):
        kept = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(kept)
        _say(console, "Started over; the previous run folder is kept as {}.", kept)
    if finished is not None:
        return _Prepared(base.name or str(base.path), None, None, finished, installed)

    try:
        results, plan = read_data(
            options.data, options.recipe.data, console, workers=options.workers
        )
    except KeyboardInterrupt:
        raise Cancelled("Interrupted while checking the data; nothing was trained.") from None
    if console is not None:
        print_data_report(console, results, plan)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / REPORT_FILE, data_report(results, plan))
    require_training_data(results, plan)
    write_json(run_dir / RUN_FILE, run_settings(options, base))
    mine["sources"] = {result.source.name: result.source for result in results}

    checkpoint = None if options.restart else last_checkpoint(run_dir)
    for broken in incomplete_checkpoints(run_dir, checkpoint):
        shutil.rmtree(broken, ignore_errors=True)
        _say(console, "Removed {}: it was cut off while being saved.", broken.name)
    if checkpoint is not None:
        _say(console, "Resuming from {} in {}.", checkpoint.name, run_dir)
    return _Prepared(
        base.name or str(base.path), plan, checkpoint.name if checkpoint else None, None, False
    )


def _follow(
    options: TrainOptions, prepared: _Prepared, processes: Processes
) -> tuple[Any, dict[str, Source]]:
    """In the other processes: the base model and the sources, opened (not scanned:
    the main process's plan says which rows to use)."""
    from subplug import cache

    from subplug_training.data_check import open_all

    try:
        base = cache.resolve_model(prepared.base)
        if prepared.finished is not None:
            return base, {}
        sources = open_all(options.data, options.recipe.data)
    except SubplugError as error:
        raise SubplugError(
            error.reference,
            f"process {processes.rank} of {processes.count}: {error.message}",
            error.hint,
            exit_code=error.exit_code,
        ) from None
    return base, {source.name: source for source in sources}


def _finish_finished(
    options: TrainOptions, base: Any, prepared: _Prepared, console: Any
) -> TrainResult:
    """A rerun of a finished run: say so, and install its adapter if that is still to do."""
    made = prepared.finished or {}
    run_dir = options.run_dir
    adapter_dir = run_dir / ADAPTER_DIR
    step = int(made.get("global_step", 0))
    _say(
        console,
        f"{options.name} finished training already ({step} steps); its adapter is in {{}}.",
        adapter_dir,
    )
    cache_name = None
    if options.install and prepared.installed and not options.force:
        cache_name = options.name
        _say(
            console,
            f"It is installed as [bold]{options.name}[/]: nothing to do "
            "(--restart trains it again).",
        )
    elif options.install:
        cache_name = _install(options, adapter_dir, base, console)
    else:
        _say(console, "Nothing to do (--restart trains it again).")
    parameters = made.get("parameters", {})
    samples = made.get("samples", {})
    return TrainResult(
        run_dir=run_dir,
        adapter_dir=adapter_dir,
        cache_name=cache_name,
        global_step=step,
        resumed_from=None,
        train_loss=None,
        trainable=int(parameters.get("trainable", 0)),
        total_params=int(parameters.get("total", 0)),
        samples=dict(samples),
        already_finished=True,
        processes=int(made.get("processes", 1)),
    )


def _install(options: TrainOptions, adapter_dir: Path, base: Any, console: Any) -> str:
    from subplug import cache

    cache.add_model(
        options.name,
        adapter_dir,
        kind="adapter",
        base=base.name,
        force=options.force,
        source=f"training:{options.run_dir}",
    )
    _say(console, f"Installed the adapter as [bold]{options.name}[/] in the model cache.")
    return options.name


def _prune(options: TrainOptions, state: Any, console: Any) -> tuple[str, ...]:
    retention = prune_checkpoints(
        options.run_dir,
        options.keep_checkpoints,
        log_history=state.log_history,
        best=getattr(state, "best_model_checkpoint", None),
    )
    _say(console, retention.describe())
    return tuple(name for name, _ in retention.kept)


class GracefulStop:
    """Ctrl-C during training: the first one lets the current step finish, saves a
    checkpoint there and stops (nothing is lost); a second one stops at once.

    Only a flag is set from the signal handler, so the request cannot be lost wherever
    the main thread happens to be (a KeyboardInterrupt raised inside a finaliser is
    swallowed by Python). With several processes (torchrun passes the signal on to each),
    they agree after every step whether any was asked to stop, so all stop after the
    same step and save the same checkpoint."""

    def __init__(self, processes: Processes | None = None) -> None:
        self.processes = processes or Processes()
        self.requested = False
        """This process was asked to stop."""
        self.stopped = False
        """The processes agreed to stop after the current step."""

    def callback(self) -> Any:
        from transformers import TrainerCallback

        stop = self

        class _StopAfterStep(TrainerCallback):  # type: ignore[misc]
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
                if stop.processes.any(stop.requested, args.device):
                    stop.stopped = True
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
            if self.processes.is_main:
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
    model: Any,
    folder: Path,
    base: Any,
    options: TrainOptions,
    plan: SamplePlan,
    state: Any,
    *,
    made: Mapping[str, Any] | None = None,
) -> Path:
    """Write the adapter (peft layout) and how it was made into ``folder``.

    ``base_model_name_or_path`` names the base as the cache knows it: its Hub repository
    when it was pulled or imported from one, else its cache name. ``subplug-training.json``
    is written last: its presence marks a finished run (``run_folder.finished_run``)."""
    if folder.exists():
        shutil.rmtree(folder)
    with _quiet():
        model.save_pretrained(str(folder))
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    manifest = getattr(base, "manifest", None)
    config["base_model_name_or_path"] = (manifest.repo_id if manifest else None) or base.name
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_json(
        folder / PROVENANCE_FILE,
        {
            "recipe": options.recipe.to_dict(),
            "base": base.name,
            "data": [d.label for d in options.data],
            "samples": {"train": len(plan.train), "test": len(plan.test)},
            "instructions": {str(k): v for k, v in plan.counts("train").items()},
            "global_step": state.global_step,
            "log_history": state.log_history[-20:],
            **(made or {}),
        },
    )
    return folder


def _say(console: Any, text: str, *paths: Any) -> None:
    """Print ``text`` (rich markup) with ``{}`` filled by ``paths`` as plain text."""
    if console is not None:
        from rich.markup import escape

        console.print(text.format(*(escape(str(p)) for p in paths)), highlight=False)
